//! [`Server`]: one `shade serve` process on a free loopback port.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, shade_binary, START_TIMEOUT, STOP_TIMEOUT};

/// A running `shade serve`. Dropping it kills the process (SIGKILL) and,
/// when the test is panicking, prints the server's stderr.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Logs of the earlier processes on the same data directory.
    old_logs: Vec<PathBuf>,
    extra_args: Vec<String>,
    /// Serve HTTP on a port picked free ([`Server::start_http`]); else
    /// `--http off`, unless the extra arguments say otherwise (no test
    /// may take the default 127.0.0.1:8080).
    want_http: bool,
    http_port: u16,
}

impl Server {
    /// Starts `shade serve --listen 127.0.0.1:<free port> --data <data_dir>`
    /// and waits (bounded) until it logs that it is ready and answers an MQTT
    /// CONNECT. Its stderr goes to a file beside `data_dir`.
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with_args(data_dir, &[])
    }

    /// [`Server::start`] with more command-line arguments (e.g. `--config`).
    pub fn start_with_args(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_inner(data_dir, extra, false)
    }

    /// [`Server::start_with_args`] with the HTTP API on a free loopback
    /// port too ([`Server::http_port`]).
    pub fn start_http(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_inner(data_dir, extra, true)
    }

    fn start_inner(data_dir: &Path, extra: &[&str], want_http: bool) -> Server {
        let mut server = Server {
            child: None,
            port: 0,
            data_dir: data_dir.to_owned(),
            log_path: PathBuf::new(),
            old_logs: Vec::new(),
            extra_args: extra.iter().map(|s| (*s).to_owned()).collect(),
            want_http,
            http_port: 0,
        };
        server.launch();
        server
    }

    /// The HTTP port of a server started with [`Server::start_http`].
    pub fn http_port(&self) -> u16 {
        assert!(self.want_http, "started without HTTP");
        self.http_port
    }

    /// `http://127.0.0.1:<http port>`.
    pub fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port())
    }

    /// Starts a new process on the same data directory and a new free port,
    /// after the previous one was killed or terminated.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() needs the previous process stopped first"
        );
        self.old_logs.push(self.log_path.clone());
        self.launch();
    }

    fn launch(&mut self) {
        // A port picked free can be taken by someone else before the server
        // binds it; a few attempts make that race harmless.
        let mut last_log = String::new();
        for _ in 0..5 {
            self.port = free_port();
            if self.want_http {
                self.http_port = free_port();
            }
            self.log_path = log_path_for(&self.data_dir, self.port);
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(log) if log.contains("cannot listen") => last_log = log,
                Err(log) => panic!(
                    "shade serve did not start on port {}; its stderr:\n{log}",
                    self.port
                ),
            }
        }
        panic!("shade serve found no free port in 5 attempts; last stderr:\n{last_log}");
    }

    /// Spawns the child and waits until it logs that it is ready and its
    /// port answers MQTT. Returns the log when the process exited before that.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = File::create(&self.log_path).expect("create the server log file");
        let http: Vec<String> = if self.want_http {
            vec!["--http".into(), format!("127.0.0.1:{}", self.http_port)]
        } else if self.extra_args.iter().any(|a| a == "--http") {
            Vec::new()
        } else {
            vec!["--http".into(), "off".into()]
        };
        let child = Command::new(shade_binary())
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data")
            .arg(&self.data_dir)
            .args(&http)
            .args(&self.extra_args)
            // SHADE_E2E_LOG=debug,rumqttd=debug shows each connection's
            // slot in the router, which is what a flake needs.
            .env(
                "RUST_LOG",
                std::env::var("SHADE_E2E_LOG").unwrap_or_else(|_| "info,rumqttd=warn".to_owned()),
            )
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
                return Err(format!("(exited with {status})\n{}", self.log()));
            }
            // Its own log first: the port is picked free, but another
            // process (tests of another checkout run beside these, with
            // the same port range) can take it before this server binds
            // it, and the probe would then be answered by that one.
            if self.log().contains("shade serve is ready") && mqtt_probe(addr, "shade-e2e-probe") {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.log();
                panic!("shade serve was not ready on {addr} within {START_TIMEOUT:?} (SHADE_E2E_LOG must keep shade_broker's info lines); its stderr:\n{log}");
            }
            // Polling a port: there is no message to await.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path.display()))
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `kill -9`: the process gets no chance to finish anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", child.id());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for shade serve") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "shade serve did not exit within {STOP_TIMEOUT:?} of SIGTERM; its stderr:\n{}",
                    self.log()
                );
            }
            // Polling an exit status: there is no message to await.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for path in self.old_logs.iter().chain(std::iter::once(&self.log_path)) {
                let log =
                    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<unreadable: {e}>"));
                eprintln!(
                    "----- shade serve stderr ({}) -----\n{log}\n-----",
                    path.display()
                );
            }
        }
    }
}

/// Does `addr` answer an MQTT 3.1.1 CONNECT with a successful CONNACK?
/// A bare TCP connect would do for readiness, but the broker logs an error
/// for every connection that closes before CONNECT, which clutters the log
/// printed on failure.
/// `id` is the probe's client id (under 128 bytes). Shared by every
/// harness that starts `shade serve`.
pub(crate) fn mqtt_probe(addr: SocketAddr, id: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let id = id.as_bytes();
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
        // Any CONNACK: with authentication on, the probe is refused, but
        // the server is up.
        && connack[..3] == [0x20, 2, 0];
    let _ = stream.write_all(&[0xE0, 0]);
    ok
}

fn log_path_for(data_dir: &Path, port: u16) -> PathBuf {
    let name = data_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("data");
    data_dir.with_file_name(format!("{name}-serve-{port}.log"))
}
