//! [`Agent`]: a `shade-agent run` process started from an [`AgentSpec`],
//! ready once its local socket answers.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{agent_binary, read_log, state, tail, terminate_child, Deadline};
use super::{LOG_TAIL_LINES, POLL_EVERY};
use crate::START_TIMEOUT;

/// How to start one `shade-agent run`.
#[derive(Debug, Clone, Default)]
pub struct AgentSpec {
    pub thing: String,
    pub shadow: Option<String>,
    pub client_id: Option<String>,
    /// `--on-desired CMD`.
    pub on_desired: Option<String>,
    /// `--config FILE` (see [`write_agent_config`]).
    pub config: Option<PathBuf>,
    /// `--broker URL` instead of `mqtt://127.0.0.1:<port>` (an `mqtts://`
    /// listener, say).
    pub broker: Option<String>,
    /// More arguments of `run` (`--ca FILE`, `--cert FILE`, ...).
    pub args: Vec<OsString>,
}

impl AgentSpec {
    pub fn thing(thing: &str) -> AgentSpec {
        AgentSpec {
            thing: thing.to_owned(),
            ..AgentSpec::default()
        }
    }

    pub fn client_id(mut self, id: &str) -> AgentSpec {
        self.client_id = Some(id.to_owned());
        self
    }

    pub fn on_desired(mut self, cmd: &str) -> AgentSpec {
        self.on_desired = Some(cmd.to_owned());
        self
    }

    pub fn config(mut self, path: &Path) -> AgentSpec {
        self.config = Some(path.to_owned());
        self
    }

    /// Connects to `url` rather than to `mqtt://127.0.0.1:<port>`.
    pub fn broker(mut self, url: &str) -> AgentSpec {
        self.broker = Some(url.to_owned());
        self
    }

    /// Passes `flag VALUE` to `shade-agent run`.
    pub fn arg(mut self, flag: &str, value: impl Into<OsString>) -> AgentSpec {
        self.args.push(flag.into());
        self.args.push(value.into());
        self
    }
}

/// Writes an agent config file into `dir` that keeps reconnects quick
/// (backoff from 100 ms up to 1 s instead of 30 s), plus `extra` TOML lines.
pub fn write_agent_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("agent-e2e.toml");
    let text = format!("reconnect_min_ms = 100\nreconnect_max_ms = 1000\n{extra}\n");
    std::fs::write(&path, text).expect("write the agent config");
    path
}

/// A `shade-agent run` process.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    data: PathBuf,
    port: u16,
    spec: AgentSpec,
    logs: Vec<PathBuf>,
    /// Print the log tails when the test panics (a fleet test may prefer
    /// to print only the agents that failed).
    pub show_log_on_panic: bool,
}

impl Agent {
    /// Starts `shade-agent run --broker mqtt://127.0.0.1:<port> --data <data> ...`
    /// and waits until its local socket answers (the replica is open). The
    /// broker need not be up.
    pub fn start(data: &Path, port: u16, spec: AgentSpec) -> Agent {
        let mut agent = Self::spawn(data, port, spec);
        agent.wait_ready();
        agent
    }

    /// Starts the process without waiting (see [`Agent::wait_ready`]), so
    /// that many can start at once.
    pub fn spawn(data: &Path, port: u16, spec: AgentSpec) -> Agent {
        let mut agent = Agent {
            child: None,
            data: data.to_owned(),
            port,
            spec,
            logs: Vec::new(),
            show_log_on_panic: true,
        };
        agent.launch();
        agent
    }

    /// Starts the agent again on the same data directory and settings,
    /// after it was killed or terminated.
    pub fn restart(&mut self) {
        self.restart_nowait();
        self.wait_ready();
    }

    /// [`Agent::restart`] without waiting (see [`Agent::wait_ready`]).
    pub fn restart_nowait(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() needs the previous agent stopped first"
        );
        self.launch();
    }

    fn launch(&mut self) {
        let name = self
            .data
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("agent")
            .to_owned();
        let log_path = self
            .data
            .with_file_name(format!("{name}-agent-{}.log", self.logs.len()));
        let log = File::create(&log_path).expect("create the agent log file");
        self.logs.push(log_path);
        let mut args: Vec<OsString> = vec![
            "run".into(),
            "--broker".into(),
            self.spec
                .broker
                .clone()
                .unwrap_or_else(|| format!("mqtt://127.0.0.1:{}", self.port))
                .into(),
            "--thing".into(),
            self.spec.thing.clone().into(),
            "--data".into(),
            self.data.clone().into(),
        ];
        let optional = [
            ("--shadow", self.spec.shadow.clone().map(OsString::from)),
            (
                "--client-id",
                self.spec.client_id.clone().map(OsString::from),
            ),
            (
                "--on-desired",
                self.spec.on_desired.clone().map(OsString::from),
            ),
            ("--config", self.spec.config.clone().map(OsString::from)),
        ];
        for (flag, value) in optional {
            if let Some(value) = value {
                args.push(flag.into());
                args.push(value);
            }
        }
        args.extend(self.spec.args.iter().cloned());
        let child = Command::new(agent_binary())
            .args(&args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn shade-agent run");
        self.child = Some(child);
    }

    /// Waits until the agent's local socket accepts a connection.
    pub fn wait_ready(&mut self) {
        let socket = self.data.join("agent.sock");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "shade-agent run exited with {status} before it was ready; its stderr:\n{}",
                    self.log()
                );
            }
            if UnixStream::connect(&socket).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "shade-agent run did not open {} within {START_TIMEOUT:?}; its stderr:\n{}",
                    socket.display(),
                    self.log()
                );
            }
            // Polling a socket file: there is no message to await.
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// Polls `state --json` until the agent says it is connected.
    pub async fn wait_connected(&self, within: Duration) {
        let deadline = Deadline::new(&format!("agent of {} connected", self.spec.thing), within);
        loop {
            let s = state(&self.data).await;
            if s["connected"] == true {
                return;
            }
            deadline
                .tick(&format!(
                    "last state: {s}\nagent stderr:\n{}",
                    tail(&self.log(), LOG_TAIL_LINES)
                ))
                .await;
        }
    }

    /// How many times the current process logged a connect to the broker.
    pub fn connects_logged(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(" connected broker="))
            .count()
    }

    pub fn data(&self) -> &Path {
        &self.data
    }

    pub fn thing(&self) -> &str {
        &self.spec.thing
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the agent is running").id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The current process's stderr so far.
    pub fn log(&self) -> String {
        self.logs.last().map(|p| read_log(p)).unwrap_or_default()
    }

    /// Resident memory (`VmRSS` of /proc/<pid>/status), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// `kill -9`: no clean disconnect, nothing flushed but what was durable.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; asserts a clean exit (bounded).
    pub fn terminate(&mut self) {
        let mut child = self.child.take().expect("the agent is running");
        let status = terminate_child(&mut child, "shade-agent run");
        assert!(
            status.success(),
            "shade-agent run exited with {status} on SIGTERM; its stderr:\n{}",
            self.log()
        );
    }

    /// Prints every log of this agent (the tails), for a failure message.
    pub fn print_logs(&self) {
        for path in &self.logs {
            eprintln!(
                "----- shade-agent stderr ({}), last lines -----\n{}\n-----",
                path.display(),
                tail(&read_log(path), LOG_TAIL_LINES)
            );
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() && self.show_log_on_panic {
            self.print_logs();
        }
    }
}
