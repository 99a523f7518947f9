//! What the end-to-end tests of the `shade` binary share: a real
//! `shade serve` on a free loopback port over a temporary data directory,
//! killed by its pid when its guard drops, and bounded runs of the `shade`
//! command line.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) const SHADE: &str = env!("CARGO_BIN_EXE_shade");
/// The longest any one step may take.
pub(crate) const BOUND: Duration = Duration::from_secs(30);

/// A free loopback port, picked at random below the kernel's ephemeral
/// range (as `shade_tests::free_port`, which says why).
pub(crate) fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..1000 {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = 20_000 + (random % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000-31999 after 1000 tries");
}

/// Lines a child writes to one of its pipes, read on a thread of their own.
pub(crate) fn lines(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`, returning the lines seen.
pub(crate) fn wait_for_line(rx: &Receiver<String>, needle: &str, what: &str) -> Vec<String> {
    let deadline = Instant::now() + BOUND;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!("{what}: no line with {needle:?} within {BOUND:?}; saw {seen:#?}"),
        }
    }
}

/// Waits for `child` to exit, killing it (and failing) past the bound.
pub(crate) fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {BOUND:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` (`TERM`, `INT`) to the process `pid`.
pub(crate) fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A child process killed by its pid when dropped.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `shade serve` on a free port over `data`, and waits until it is
/// ready and listening.
fn spawn_serve(data: &Path) -> (Guard, u16, Log) {
    let port = free_port();
    let mut child = Command::new(SHADE)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shade serve");
    let log = lines(child.stderr.take().expect("stderr"));
    let guard = Guard(child);
    let mut kept = wait_for_line(&log, "ready", "shade serve");
    // Keep draining the log so the server never blocks on a full pipe,
    // and keep its lines for tests that read them.
    let lines = Log::default();
    lines.0.lock().map(|mut l| l.append(&mut kept)).ok();
    let sink = lines.clone();
    thread::spawn(move || {
        for line in log.iter() {
            if let Ok(mut l) = sink.0.lock() {
                l.push(line);
            }
        }
    });
    // Listeners bind on their own threads, a moment after `ready`.
    let deadline = Instant::now() + BOUND;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "shade serve is not listening on {port}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    (guard, port, lines)
}

/// The stderr lines of one `shade serve`, as they arrive.
#[derive(Debug, Clone, Default)]
pub(crate) struct Log(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Log {
    pub(crate) fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// A running `shade serve`.
pub(crate) struct Server {
    pub(crate) guard: Option<Guard>,
    pub(crate) port: u16,
    pub(crate) data: PathBuf,
    pub(crate) log: Log,
    _dir: tempfile::TempDir,
}

impl Server {
    pub(crate) fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("shade-data");
        let (guard, port, log) = spawn_serve(&data);
        Server {
            guard: Some(guard),
            port,
            data,
            log,
            _dir: dir,
        }
    }

    /// Starts `shade serve` again on the same data (on a new port), after
    /// [`Server::stop`].
    pub(crate) fn restart(&mut self) {
        assert!(self.guard.is_none(), "stop the server before restarting it");
        let (guard, port, log) = spawn_serve(&self.data);
        self.guard = Some(guard);
        self.port = port;
        self.log = log;
    }

    pub(crate) fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub(crate) fn data(&self) -> &str {
        self.data.to_str().expect("utf-8 temp path")
    }

    /// Runs `shade ARGS --broker URL`.
    pub(crate) fn shade(&self, args: &[&str]) -> Run {
        let url = self.url();
        let mut all = args.to_vec();
        all.extend(["--broker", &url]);
        shade(&all)
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub(crate) fn stop(&mut self) {
        let mut guard = self.guard.take().expect("running");
        signal(guard.0.id(), "TERM");
        let status = wait_bounded(&mut guard.0, "shade serve after SIGTERM");
        assert!(status.success(), "shade serve exited with {status}");
    }
}

/// What one `shade` run printed, and how it ended.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "expected success: {self:#?}");
        self
    }

    /// Fails with exit 1 and one stderr line containing `needle`.
    pub(crate) fn fails_with(&self, needle: &str) {
        assert_eq!(self.code, Some(1), "expected exit 1: {self:#?}");
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "expected one stderr line: {self:#?}"
        );
        assert!(self.stderr.starts_with("shade: "), "{self:#?}");
        assert!(
            self.stderr.contains(needle),
            "expected {needle:?} in stderr: {self:#?}"
        );
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs the `shade` binary with `args`, bounded.
pub(crate) fn shade(args: &[&str]) -> Run {
    shade_with_stdin(args, None)
}

/// Runs the `shade` binary with `args` and `stdin` (none: /dev/null), bounded.
pub(crate) fn shade_with_stdin(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(SHADE)
        .args(args)
        .env_remove("SHADE_USERNAME")
        .env_remove("SHADE_PASSWORD")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shade");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("write stdin");
        // Dropping the pipe closes it: the command sees the end of its input.
    }
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr")));
    let status = wait_bounded(&mut child, &format!("shade {args:?}"));
    Run {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// A port nothing listens on.
pub(crate) fn dead_broker() -> String {
    format!("mqtt://127.0.0.1:{}", free_port())
}
