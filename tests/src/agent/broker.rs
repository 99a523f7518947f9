//! [`Broker`]: a `shade serve` process that keeps its port across
//! restarts, so that a running agent finds it again.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{ensure_binaries_built, read_log, terminate_child, POLL_EVERY};
use crate::server::mqtt_probe;
use crate::{free_port, shade_binary, START_TIMEOUT};

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
            .arg(&self.data_dir)
            // No test takes the default HTTP address.
            .args(["--http", "off"]);
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
            if read_log(&log_path).contains("shade serve is ready")
                && mqtt_probe(addr, "shade-agent-e2e-probe")
            {
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
