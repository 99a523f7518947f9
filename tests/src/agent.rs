//! Helpers for the `shade-agent` end-to-end tests: real `shade serve` and
//! `shade-agent run` processes, the `shade-agent report/desire/state`
//! command lines, and a rumqttc dashboard speaking the AWS shadow topics.
//!
//! # Layout
//!
//! - [`Broker`]: one `shade serve` child process that can be killed and
//!   started again on the *same* port (the crate's [`crate::Server`] picks a
//!   new port on restart, but a running agent only reconnects to the port it
//!   was given). Killed (SIGKILL) when dropped.
//! - [`Agent`]: one `shade-agent run` child process; ready once its local
//!   socket answers; killed (SIGKILL) when dropped.
//! - [`report`], [`desire`], [`state`], [`agent_cli`]: the one-shot command
//!   lines, each bounded by [`CLI_TIMEOUT`].
//! - [`Dashboard`]: an MQTT 3.1.1 client ([`crate::Mqtt`]) doing AWS `get`
//!   and `update`.
//! - [`Deadline`], [`wait_converged`], [`synced_view`]: polling with a bound.
//!
//! Every process is started with its stderr in a log file; when a test
//! panics, the guards print the logs (the agents' tails) while they unwind.
//!
//! The binaries are found next to the test executable
//! (`target/<profile>/shade` and `shade-agent`). Cargo does not build a
//! dependency's binaries, but `cargo test --workspace` builds a member's
//! binaries when that member has integration tests of its own: both
//! `broker/tests/` and `agent/tests/` exist for that reason too.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{aws, free_port, shade_binary, Mqtt, START_TIMEOUT, STOP_TIMEOUT};

/// Bound of one `shade-agent report/desire/state` run. Generous: debug
/// builds on two cores, with other tests running beside.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the waits poll.
pub const POLL_EVERY: Duration = Duration::from_millis(20);
/// Lines of an agent's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Checks that the `shade` and `shade-agent` binaries are there (see the
/// module docs for why `cargo test --workspace` builds both).
pub fn ensure_binaries_built() {
    for name in ["shade", "shade-agent"] {
        let path = shade_binary().with_file_name(name);
        assert!(
            path.exists(),
            "{} is missing: run `cargo test --workspace` (or `cargo build --workspace`) first",
            path.display()
        );
    }
}

/// Path of the `shade-agent` binary of this build profile.
pub fn agent_binary() -> PathBuf {
    ensure_binaries_built();
    let shade = shade_binary();
    let bin = shade.with_file_name(format!("shade-agent{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo test --workspace`, or `cargo build -p shade-agent` before `cargo test -p shade-tests`",
        bin.display()
    );
    bin
}

/// Sends SIGTERM to `child` and waits (bounded) for its exit status.
fn terminate_child(child: &mut Child, what: &str) -> ExitStatus {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("run kill -TERM");
    assert!(
        status.success(),
        "kill -TERM {} ({what}) failed",
        child.id()
    );
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {STOP_TIMEOUT:?} of SIGTERM");
        }
        // Polling an exit status: there is no message to await.
        std::thread::sleep(POLL_EVERY);
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Does `addr` answer an MQTT 3.1.1 CONNECT with a successful CONNACK? (A
/// bare TCP connect would make the broker log an error.)
fn mqtt_probe(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let id = b"shade-agent-e2e-probe";
    let mut connect = vec![
        0x10,
        0,
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        0x02,
        0,
        30,
        0,
        id.len() as u8,
    ];
    connect.extend_from_slice(id);
    connect[1] = (connect.len() - 2) as u8;
    let mut connack = [0u8; 4];
    let ok = stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_ok()
        && stream.write_all(&connect).is_ok()
        && stream.read_exact(&mut connack).is_ok()
        && connack == [0x20, 2, 0, 0];
    let _ = stream.write_all(&[0xE0, 0]);
    ok
}

/// A `shade serve` process that keeps its port across restarts.
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
    config: Option<PathBuf>,
    /// One log file per process started, the current one last.
    logs: Vec<PathBuf>,
}

impl Broker {
    /// Starts `shade serve --listen 127.0.0.1:<free port> --data <data_dir>`
    /// and waits until it is ready and answers MQTT.
    pub fn start(data_dir: &Path) -> Broker {
        Self::start_with_config(data_dir, None)
    }

    /// [`Broker::start`] with `--config FILE`.
    pub fn start_with_config(data_dir: &Path, config: Option<&Path>) -> Broker {
        let mut last = String::new();
        // A port picked free can be taken before the broker binds it.
        for _ in 0..5 {
            let mut broker = Self::new(data_dir, free_port(), config);
            match broker.launch_once() {
                Ok(()) => return broker,
                Err(log) if log.contains("cannot listen") => last = log,
                Err(log) => panic!("shade serve did not start; its stderr:\n{log}"),
            }
        }
        panic!("shade serve found no free port in 5 attempts; last stderr:\n{last}");
    }

    /// Starts `shade serve` on exactly `port` (retrying while the port is
    /// still held, within [`START_TIMEOUT`]).
    pub fn start_on(data_dir: &Path, port: u16, config: Option<&Path>) -> Broker {
        let mut broker = Self::new(data_dir, port, config);
        broker.launch_same_port();
        broker
    }

    fn new(data_dir: &Path, port: u16, config: Option<&Path>) -> Broker {
        Broker {
            child: None,
            port,
            data_dir: data_dir.to_owned(),
            config: config.map(Path::to_owned),
            logs: Vec::new(),
        }
    }

    /// Starts a new process on the same data directory and the same port,
    /// after the previous one was killed or terminated.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() needs the previous broker stopped first"
        );
        self.launch_same_port();
    }

    fn launch_same_port(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.launch_once() {
                Ok(()) => return,
                Err(log) if log.contains("cannot listen") && Instant::now() < deadline => {
                    // The old socket may linger a moment after a kill.
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(log) => panic!(
                    "shade serve did not start on port {}; its stderr:\n{log}",
                    self.port
                ),
            }
        }
    }

    /// Spawns the process and waits for "shade serve is ready" and a CONNACK.
    /// Returns the log when the process exited before that.
    fn launch_once(&mut self) -> Result<(), String> {
        let name = self
            .data_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("data")
            .to_owned();
        let log_path = self.data_dir.with_file_name(format!(
            "{name}-serve-{}-{}.log",
            self.port,
            self.logs.len()
        ));
        let log = File::create(&log_path).expect("create the broker log file");
        self.logs.push(log_path.clone());
        ensure_binaries_built();
        let mut command = Command::new(shade_binary());
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data")
            .arg(&self.data_dir);
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        let child = command
            .env("RUST_LOG", "info,rumqttd=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn shade serve");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("(exited with {status})\n{}", read_log(&log_path)));
            }
            if read_log(&log_path).contains("shade serve is ready") && mqtt_probe(addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!(
                    "shade serve was not ready on {addr} within {START_TIMEOUT:?}; its stderr:\n{}",
                    read_log(&log_path)
                );
            }
            // Polling a log file and a port: there is no message to await.
            std::thread::sleep(POLL_EVERY);
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker is running").id()
    }

    /// The current process's stderr so far.
    pub fn log(&self) -> String {
        self.logs.last().map(|p| read_log(p)).unwrap_or_default()
    }

    /// `kill -9`: the broker gets no chance to finish anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the broker is running");
        terminate_child(&mut child, "shade serve")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            for path in &self.logs {
                eprintln!(
                    "----- shade serve stderr ({}) -----\n{}\n-----",
                    path.display(),
                    read_log(path)
                );
            }
        }
    }
}

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

/// What a one-shot `shade-agent` command did.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `shade-agent ARGS...`, bounded by [`CLI_TIMEOUT`] (killed after it).
pub async fn agent_cli(args: &[OsString]) -> CliOutput {
    let child = tokio::process::Command::new(agent_binary())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn shade-agent");
    match tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => CliOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("shade-agent {args:?}: {e}"),
        Err(_) => panic!("shade-agent {args:?} did not exit within {CLI_TIMEOUT:?}"),
    }
}

async fn write(verb: &str, data: &Path, pairs: &[&str]) {
    let mut args: Vec<OsString> = vec![verb.into(), "--data".into(), data.into()];
    args.extend(pairs.iter().map(OsString::from));
    let out = agent_cli(&args).await;
    assert!(
        out.status.success(),
        "shade-agent {verb} {pairs:?} exited with {}: {}",
        out.status,
        out.stderr
    );
}

/// `shade-agent report --data DATA PAIRS...`; asserts exit 0.
pub async fn report(data: &Path, pairs: &[&str]) {
    write("report", data, pairs).await;
}

/// `shade-agent desire --data DATA PAIRS...`; asserts exit 0.
pub async fn desire(data: &Path, pairs: &[&str]) {
    write("desire", data, pairs).await;
}

/// `shade-agent state --data DATA --json`, parsed.
pub async fn state(data: &Path) -> Value {
    let out = agent_cli(&[
        "state".into(),
        "--data".into(),
        data.into(),
        "--json".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "shade-agent state exited with {}: {}",
        out.status,
        out.stderr
    );
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "shade-agent state --json printed no JSON ({e}): {}",
            out.stdout
        )
    })
}

/// A bound for a polling loop: `tick` sleeps [`POLL_EVERY`], or panics
/// with `what` and the caller's last observation once the bound is past.
#[derive(Debug)]
pub struct Deadline {
    what: String,
    start: Instant,
    within: Duration,
}

impl Deadline {
    pub fn new(what: &str, within: Duration) -> Deadline {
        Deadline {
            what: what.to_owned(),
            start: Instant::now(),
            within,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn left(&self) -> Duration {
        self.within.saturating_sub(self.start.elapsed())
    }

    pub async fn tick(&self, last: &str) {
        if self.start.elapsed() > self.within {
            panic!(
                "gave up waiting for {} after {:?}; last seen:\n{last}",
                self.what, self.within
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// An MQTT client using the AWS shadow topics, as a dashboard would.
#[derive(Debug)]
pub struct Dashboard {
    pub mqtt: Mqtt,
    next_token: u64,
}

impl Dashboard {
    /// Connects and subscribes to the replies of `get` and `update` of
    /// every thing.
    pub async fn connect(port: u16, id: &str) -> Dashboard {
        let mut mqtt = Mqtt::connect(port, id).await;
        mqtt.subscribe(&aws("+", "get/+")).await;
        mqtt.subscribe(&aws("+", "update/accepted")).await;
        mqtt.subscribe(&aws("+", "update/rejected")).await;
        Dashboard {
            mqtt,
            next_token: 0,
        }
    }

    fn token(&mut self) -> String {
        self.next_token += 1;
        format!("{}-{}", self.mqtt.id, self.next_token)
    }

    /// `$aws/things/THING/shadow/get`: the document, or `None` on 404.
    pub async fn get(&mut self, thing: &str) -> Option<Value> {
        let token = self.token();
        let reply = self
            .mqtt
            .request(&aws(thing, "get"), &json!({ "clientToken": token }))
            .await;
        let body = reply.json();
        if reply.topic.ends_with("/accepted") {
            Some(body)
        } else {
            assert_eq!(body["code"], 404, "get {thing} was rejected: {reply}");
            None
        }
    }

    /// [`Dashboard::get`] of many things at once: the requests are all
    /// published before the replies are awaited.
    pub async fn get_many(&mut self, things: &[&str]) -> Vec<Option<Value>> {
        let mut tokens = Vec::with_capacity(things.len());
        for thing in things {
            let token = self.token();
            self.mqtt
                .publish_json(&aws(thing, "get"), &json!({ "clientToken": token }))
                .await;
            tokens.push(token);
        }
        let mut docs = Vec::with_capacity(things.len());
        for (thing, token) in things.iter().zip(&tokens) {
            let reply = self.mqtt.reply(token).await;
            let body = reply.json();
            if reply.topic.ends_with("/accepted") {
                docs.push(Some(body));
            } else {
                assert_eq!(body["code"], 404, "get {thing} was rejected: {reply}");
                docs.push(None);
            }
        }
        docs
    }

    /// `$aws/things/THING/shadow/update` with `{"state": state}`; asserts it
    /// is accepted and returns the reply.
    pub async fn update(&mut self, thing: &str, state: Value) -> Value {
        let token = self.token();
        let reply = self
            .mqtt
            .request(
                &aws(thing, "update"),
                &json!({ "state": state, "clientToken": token }),
            )
            .await;
        assert!(
            reply.topic.ends_with("/accepted"),
            "update of {thing} was not accepted: {reply}"
        );
        reply.json()
    }
}

/// The part of a document two converged replicas must agree on
/// (DESIGN: desired, reported and conflicts; delta follows from them).
pub fn synced_view(doc: &Value) -> Value {
    json!({
        "desired": doc["state"]["desired"],
        "reported": doc["state"]["reported"],
        "delta": doc["state"]["delta"],
        "conflicts": doc["conflicts"],
    })
}

/// Is the agent on `data` converged with the broker's `broker_doc`:
/// connected, nothing pending, and the same synced view?
pub fn is_converged(agent_state: &Value, broker_doc: Option<&Value>) -> bool {
    agent_state["connected"] == true
        && agent_state["pending"] == 0
        && broker_doc.is_some_and(|b| synced_view(b) == synced_view(agent_state))
}

/// Polls the agent (`state --json`) and the broker (`get`) until they
/// agree (see [`is_converged`]); returns both.
pub async fn wait_converged(
    dash: &mut Dashboard,
    data: &Path,
    thing: &str,
    within: Duration,
) -> (Value, Value) {
    let deadline = Deadline::new(
        &format!("convergence of {thing} (agent on {})", data.display()),
        within,
    );
    loop {
        let agent = state(data).await;
        let broker = dash.get(thing).await;
        if is_converged(&agent, broker.as_ref()) {
            return (agent, broker.expect("converged means the broker has it"));
        }
        let broker = broker.map_or_else(|| "(no shadow)".to_owned(), |b| b.to_string());
        deadline
            .tick(&format!("agent:  {agent}\nbroker: {broker}"))
            .await;
    }
}

/// Waits for a message on `shade/things/THING/state` whose document
/// satisfies `matches` (the retained one counts); bounded by `within`.
pub async fn wait_state_message(
    mqtt: &mut Mqtt,
    thing: &str,
    within: Duration,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    let topic = format!("shade/things/{thing}/state");
    let what = format!("{topic} message matching the test's condition");
    let msg = mqtt
        .wait_for_within(&what, within, |m| {
            m.topic == topic
                && serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| matches(&v))
        })
        .await;
    msg.json()
}
