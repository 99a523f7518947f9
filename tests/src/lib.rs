//! Helpers for the end-to-end tests: start real `shade serve` processes on
//! free loopback ports and talk to them with real MQTT clients.
//!
//! # Layout
//!
//! - [`server`] ([`Server`]): one `shade serve` child process on a port
//!   picked free, its stderr captured to a file that is printed when the
//!   test panics, killed (SIGKILL) when dropped; [`Server::terminate`]
//!   stops it with SIGTERM.
//! - [`mqtt`] ([`Mqtt`], [`Msg`]): one rumqttc client (MQTT 3.1.1 or 5)
//!   whose event loop runs in a task of its own and forwards what arrives;
//!   every wait is bounded and panics with what was seen when it runs out.
//! - here: timeouts, topic helpers ([`aws`], [`aws_named`]), reply checks
//!   ([`expect_topic`], [`expect_rejected`]), [`free_port`], [`temp_data`].
//! - [`agent`]: helpers of the `shade-agent` tests, built on the above.
//! - [`http`] ([`Http`], [`http::EventStream`]): a blocking HTTP client of
//!   the HTTP API and a reader of its event stream.
//!
//! Why panics rather than `Result`: a panic unwinds through [`Server`]'s
//! `Drop`, which then prints the server log next to the failure.
//!
//! The `shade` binary is found next to the test executable
//! (`target/<profile>/shade`). `shade-broker` is a dependency of this crate
//! and a workspace member, so `cargo test --workspace` builds it first; with
//! `cargo test -p shade-tests` alone, build it with `cargo build -p shade-broker`.

pub mod agent;
pub mod http;
pub mod mqtt;
pub mod pki;
pub mod server;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

pub use http::Http;
pub use mqtt::{Connect, Mqtt, Msg, Publisher};
pub use server::Server;

/// How long one reply may take. Generous: debug builds, two cores, and
/// other compilations running beside the tests.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to listen after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest packet the test clients send or accept.
pub const CLIENT_MAX_PACKET: usize = 1 << 20;

/// `$aws/things/{thing}/shadow/{rest}`.
pub fn aws(thing: &str, rest: &str) -> String {
    format!("$aws/things/{thing}/shadow/{rest}")
}

/// `$aws/things/{thing}/shadow/name/{shadow}/{rest}`.
pub fn aws_named(thing: &str, shadow: &str, rest: &str) -> String {
    format!("$aws/things/{thing}/shadow/name/{shadow}/{rest}")
}

/// A port nobody listened on a moment ago: bind port 0, read it, let go.
///
/// Picked at random below the kernel's ephemeral range (Linux: 32768 and
/// up), not by binding port 0: a server picks its internal rumqttd port
/// that way and every client's outgoing connection gets one, so a port 0
/// handed to a test could be taken by one of those between the test
/// releasing it and its server binding it (seen as a client closed at
/// once: its front had dialled another server).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..1000 {
        // A randomly keyed hasher: a random number without a dependency.
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

/// Runs an online `shade ARGS` against the service on `port`, logged in
/// as `user`: (success, stdout trimmed, stderr).
pub fn run_shade_as(
    port: u16,
    user: &str,
    password: &str,
    args: &[&str],
) -> (bool, String, String) {
    let broker = format!("mqtt://127.0.0.1:{port}");
    let mut all = args.to_vec();
    all.extend([
        "--broker",
        &broker,
        "--username",
        user,
        "--password",
        password,
    ]);
    run_shade(&all, None)
}

/// Runs `shade ARGS` to its end, with `stdin` as its input when given:
/// (success, stdout trimmed, stderr).
pub fn run_shade(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(shade_binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shade");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("shade exits");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The argon2 hash `shade hash-password` makes of `password`.
pub fn password_hash(password: &str) -> String {
    let (ok, hash, err) = run_shade(&["hash-password"], Some(&format!("{password}\n")));
    assert!(ok, "shade hash-password failed: {err}");
    hash
}

/// Path of the `shade` binary of this build profile.
pub fn shade_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    // target/<profile>/deps/<test> -> target/<profile>/shade
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let bin = profile_dir.join(format!("shade{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo test --workspace`, or `cargo build -p shade-broker` before `cargo test -p shade-tests`",
        bin.display()
    );
    bin
}

/// Asserts `msg` is on `topic`, its JSON payload is returned.
#[track_caller]
pub fn expect_topic(msg: &Msg, topic: &str) -> Value {
    assert_eq!(msg.topic, topic, "unexpected reply: {msg}");
    msg.json()
}

/// Asserts a `rejected` reply with `code` and `message` (and `token`).
#[track_caller]
pub fn expect_rejected(msg: &Msg, code: u64, message: &str, token: Option<&str>) {
    assert!(
        msg.topic.ends_with("/rejected"),
        "expected a rejection {code} {message:?}, got {msg}"
    );
    let v = msg.json();
    assert_eq!(v["code"], code, "code of {msg}");
    assert_eq!(v["message"], message, "message of {msg}");
    assert!(v["timestamp"].is_u64(), "timestamp of {msg}");
    match token {
        Some(t) => assert_eq!(v["clientToken"], t, "clientToken of {msg}"),
        None => assert!(
            v.get("clientToken").is_none(),
            "no clientToken expected in {msg}"
        ),
    }
}

/// Seconds since the Unix epoch, to check that timestamps are plausible.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Asserts `v` is a timestamp in seconds within a day of now: not a timing
/// assertion, a check that the unit is seconds and the clock is the wall clock.
#[track_caller]
pub fn assert_plausible_secs(v: &Value, what: &str) {
    let ts = v
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: {v} is not a timestamp in seconds"));
    let now = now_secs();
    assert!(
        ts.abs_diff(now) < 86_400,
        "{what}: {ts} is not seconds near now ({now})"
    );
}

/// A fresh temporary directory and the data directory inside it.
pub fn temp_data() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("shade-e2e-")
        .tempdir()
        .expect("create a temp dir");
    let data = dir.path().join("data");
    (dir, data)
}

/// Makes paho-mqtt importable: `None` when python3 has it already, else
/// installs it from PyPI into `tmp/pydeps` (pass the test's
/// `CARGO_TARGET_TMPDIR`, so `cargo test` works on a fresh machine) and
/// returns that folder for `PYTHONPATH`.
pub async fn paho_path(tmp: &std::path::Path) -> Option<std::path::PathBuf> {
    let has_paho = |path: Option<&std::path::Path>| {
        let mut cmd = tokio::process::Command::new("python3");
        if let Some(p) = path {
            cmd.env("PYTHONPATH", p);
        }
        cmd.args(["-c", "import paho.mqtt.client"])
            .kill_on_drop(true)
            .output()
    };
    let out = tokio::time::timeout(Duration::from_secs(30), has_paho(None))
        .await
        .expect("python3 answers within 30 s")
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): the paho-mqtt test needs Python 3"));
    if out.status.success() {
        return None;
    }
    let dir = tmp.join("pydeps");
    let ok = tokio::time::timeout(Duration::from_secs(30), has_paho(Some(&dir)))
        .await
        .is_ok_and(|r| r.is_ok_and(|o| o.status.success()));
    if !ok {
        let install = tokio::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&dir)
            .arg("paho-mqtt>=2,<3")
            .kill_on_drop(true)
            .output();
        let install = tokio::time::timeout(Duration::from_secs(180), install)
            .await
            .expect("pip install paho-mqtt finished within 180 s")
            .expect("run python3 -m pip");
        assert!(
            install.status.success(),
            "paho-mqtt is not installed and `pip install paho-mqtt` failed: {}",
            String::from_utf8_lossy(&install.stderr)
        );
    }
    Some(dir)
}

/// Runs `tests/python/<script>` with `args` under python3 with paho-mqtt
/// importable (see [`paho_path`]; `tmp` is the test's
/// `CARGO_TARGET_TMPDIR`), killed if it takes more than `limit`. Panics
/// with its output, and `server_log`, unless it exits 0.
pub async fn run_paho_script(
    tmp: &std::path::Path,
    script: &str,
    args: &[String],
    limit: Duration,
    server_log: impl Fn() -> String,
) {
    let pythonpath = paho_path(tmp).await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let mut run = tokio::process::Command::new("python3");
    if let Some(p) = &pythonpath {
        run.env("PYTHONPATH", p);
    }
    let run = run.arg(&path).args(args).kill_on_drop(true).output();
    let out = tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {limit:?}"))
        .unwrap_or_else(|e| panic!("cannot run python3 {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed ({}):\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server_log()
    );
}
