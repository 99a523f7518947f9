//! Helpers for the end-to-end tests: start real `shade serve` processes on
//! free loopback ports and talk to them with real MQTT clients.
//!
//! # Layout
//!
//! - [`Server`]: one `shade serve` child process on a port picked free, its
//!   stderr captured to a file that is printed when the test panics, killed
//!   (SIGKILL) when dropped. [`Server::terminate`] stops it with SIGTERM.
//! - [`Mqtt`]: one rumqttc client (MQTT 3.1.1 or 5) whose event loop runs in
//!   a task of its own and forwards what arrives; every wait is bounded and
//!   panics with what was seen instead when it runs out.
//! - topic and payload helpers: [`aws`], [`aws_named`], [`Msg`].
//!
//! Why panics rather than `Result`: a panic unwinds through [`Server`]'s
//! `Drop`, which then prints the server log next to the failure.
//!
//! The `shade` binary is found next to the test executable
//! (`target/<profile>/shade`). `shade-broker` is a dependency of this crate
//! and a workspace member, so `cargo test --workspace` builds it first; with
//! `cargo test -p shade-tests` alone, build it with `cargo build -p shade-broker`.

pub mod agent;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
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
}

impl Server {
    /// Starts `shade serve --listen 127.0.0.1:<free port> --data <data_dir>`
    /// and waits until it accepts TCP connections. Its stderr goes to a file
    /// beside `data_dir`.
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with_args(data_dir, &[])
    }

    /// [`Server::start`] with more command-line arguments (e.g. `--config`).
    pub fn start_with_args(data_dir: &Path, extra: &[&str]) -> Server {
        let mut server = Server {
            child: None,
            port: 0,
            data_dir: data_dir.to_owned(),
            log_path: PathBuf::new(),
            old_logs: Vec::new(),
            extra_args: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        server.launch();
        server
    }

    /// Starts a new process on the same data directory and a new free port,
    /// after the previous one was killed or terminated.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart() needs the previous process stopped first");
        self.old_logs.push(self.log_path.clone());
        self.launch();
    }

    fn launch(&mut self) {
        // A port picked free can be taken by someone else before the server
        // binds it; a few attempts make that race harmless.
        let mut last_log = String::new();
        for _ in 0..5 {
            self.port = free_port();
            self.log_path = log_path_for(&self.data_dir, self.port);
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(log) if log.contains("cannot listen") => last_log = log,
                Err(log) => panic!("shade serve did not start on port {}; its stderr:\n{log}", self.port),
            }
        }
        panic!("shade serve found no free port in 5 attempts; last stderr:\n{last_log}");
    }

    /// Spawns the child and waits until its port accepts connections.
    /// Returns the log when the process exited before that.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = File::create(&self.log_path).expect("create the server log file");
        let child = Command::new(shade_binary())
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data")
            .arg(&self.data_dir)
            .args(&self.extra_args)
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
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("(exited with {status})\n{}", self.log()));
            }
            if mqtt_probe(addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.log();
                panic!("shade serve did not listen on {addr} within {START_TIMEOUT:?}; its stderr:\n{log}");
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
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path.display()))
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
                panic!("shade serve did not exit within {STOP_TIMEOUT:?} of SIGTERM; its stderr:\n{}", self.log());
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
                let log = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<unreadable: {e}>"));
                eprintln!("----- shade serve stderr ({}) -----\n{log}\n-----", path.display());
            }
        }
    }
}

/// Does `addr` answer an MQTT 3.1.1 CONNECT with a successful CONNACK?
/// A bare TCP connect would do for readiness, but the broker logs an error
/// for every connection that closes before CONNECT, which clutters the log
/// printed on failure.
fn mqtt_probe(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let id = b"shade-e2e-probe";
    let mut connect = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, id.len() as u8];
    connect.extend_from_slice(id);
    connect[1] = (connect.len() - 2) as u8;
    let mut connack = [0u8; 4];
    let ok = stream.set_read_timeout(Some(Duration::from_secs(2))).is_ok()
        && stream.write_all(&connect).is_ok()
        && stream.read_exact(&mut connack).is_ok()
        && connack == [0x20, 2, 0, 0];
    let _ = stream.write_all(&[0xE0, 0]);
    ok
}

fn log_path_for(data_dir: &Path, port: u16) -> PathBuf {
    let name = data_dir.file_name().and_then(|n| n.to_str()).unwrap_or("data");
    data_dir.with_file_name(format!("{name}-serve-{port}.log"))
}

/// One message a client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    /// The payload as JSON; panics (naming the topic) when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("payload on {} is not JSON ({e}): {}", self.topic, String::from_utf8_lossy(&self.payload)))
    }

    /// The `clientToken` of a JSON payload, if any.
    pub fn token(&self) -> Option<String> {
        let v: Value = serde_json::from_slice(&self.payload).ok()?;
        v.get("clientToken")?.as_str().map(str::to_owned)
    }
}

impl std::fmt::Display for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = String::from_utf8_lossy(&self.payload);
        let shown: String = text.chars().take(400).collect();
        write!(f, "{}{} {}", self.topic, if self.retain { " (retained)" } else { "" }, shown)
    }
}

/// What a client's event loop task reports.
#[derive(Debug)]
enum Event {
    Connected,
    Message(Msg),
    SubAck { ok: bool },
    /// The connection failed; the task has ended and the client is dead.
    Closed(String),
}

#[derive(Debug, Clone)]
enum Inner {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// An MQTT client with a bounded, buffering receive side.
#[derive(Debug)]
pub struct Mqtt {
    pub id: String,
    inner: Inner,
    events: mpsc::UnboundedReceiver<Event>,
    /// Messages received but not yet taken by a wait.
    pending: VecDeque<Msg>,
    closed: Option<String>,
    task: JoinHandle<()>,
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A cheap handle to publish from another task.
#[derive(Debug, Clone)]
pub struct Publisher(Inner);

impl Publisher {
    /// QoS 1 publish; `Err` once the client's connection is gone.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        let qos1 = rumqttc::QoS::AtLeastOnce;
        match &self.0 {
            Inner::V4(c) => c.publish(topic, qos1, false, payload).await.map_err(|e| e.to_string()),
            Inner::V5(c) => {
                c.publish(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, payload).await.map_err(|e| e.to_string())
            }
        }
    }
}

impl Mqtt {
    /// Connects an MQTT 3.1.1 client and waits for its CONNACK.
    pub async fn connect(port: u16, id: &str) -> Mqtt {
        let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        options.set_max_packet_size(CLIENT_MAX_PACKET, CLIENT_MAX_PACKET);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            use rumqttc::{Event as E, Packet};
            loop {
                let event = match eventloop.poll().await {
                    Ok(E::Incoming(Packet::ConnAck(_))) => Event::Connected,
                    Ok(E::Incoming(Packet::Publish(p))) => Event::Message(Msg {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    }),
                    Ok(E::Incoming(Packet::SubAck(ack))) => Event::SubAck {
                        ok: ack.return_codes.iter().all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
                    },
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Event::Closed(e.to_string()));
                        return;
                    }
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        Self::connected(id, Inner::V4(client), rx, task).await
    }

    /// Connects an MQTT 5 client and waits for its CONNACK.
    pub async fn connect_v5(port: u16, id: &str) -> Mqtt {
        use rumqttc::v5::mqttbytes::v5::Packet;
        let mut options = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
        options.set_max_packet_size(Some(u32::try_from(CLIENT_MAX_PACKET).unwrap_or(u32::MAX)));
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_start(true);
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            use rumqttc::v5::Event as E;
            loop {
                let event = match eventloop.poll().await {
                    Ok(E::Incoming(Packet::ConnAck(_))) => Event::Connected,
                    Ok(E::Incoming(Packet::Publish(p))) => Event::Message(Msg {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    }),
                    Ok(E::Incoming(Packet::SubAck(ack))) => Event::SubAck {
                        ok: ack
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_))),
                    },
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Event::Closed(e.to_string()));
                        return;
                    }
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        Self::connected(id, Inner::V5(client), rx, task).await
    }

    async fn connected(id: &str, inner: Inner, events: mpsc::UnboundedReceiver<Event>, task: JoinHandle<()>) -> Mqtt {
        let mut client = Mqtt { id: id.to_owned(), inner, events, pending: VecDeque::new(), closed: None, task };
        match client.next_event(REPLY_TIMEOUT).await {
            Some(Event::Connected) => client,
            other => panic!("client {id}: expected CONNACK, got {other:?}"),
        }
    }

    /// A handle to publish from another task.
    pub fn publisher(&self) -> Publisher {
        Publisher(self.inner.clone())
    }

    /// Why the connection closed, once it has.
    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    async fn next_event(&mut self, within: Duration) -> Option<Event> {
        match tokio::time::timeout(within, self.events.recv()).await {
            Ok(Some(Event::Closed(why))) => {
                self.closed = Some(why.clone());
                Some(Event::Closed(why))
            }
            Ok(event) => event,
            Err(_) => None,
        }
    }

    /// Subscribes at QoS 1 and waits for the SUBACK (messages that arrive
    /// meanwhile are kept for later waits).
    pub async fn subscribe(&mut self, filter: &str) {
        let result = match &self.inner {
            Inner::V4(c) => c.subscribe(filter, rumqttc::QoS::AtLeastOnce).await.map_err(|e| e.to_string()),
            Inner::V5(c) => {
                c.subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce).await.map_err(|e| e.to_string())
            }
        };
        if let Err(e) = result {
            panic!("client {}: subscribe {filter}: {e}", self.id);
        }
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(Event::SubAck { ok: true }) => return,
                Some(Event::Message(m)) => self.pending.push_back(m),
                Some(Event::Connected) => {}
                other => panic!("client {}: subscribe {filter}: expected a successful SUBACK, got {other:?}", self.id),
            }
        }
    }

    /// QoS 1 publish of raw bytes; panics when the client is gone.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        if let Err(e) = self.publisher().publish(topic, payload.into()).await {
            panic!("client {}: publish on {topic}: {e}", self.id);
        }
    }

    /// QoS 1 publish of a JSON value.
    pub async fn publish_json(&self, topic: &str, value: &Value) {
        self.publish(topic, value.to_string().into_bytes()).await;
    }

    /// Waits (bounded) for the first message, received or still to come,
    /// that `matches`; the others stay for later waits. Panics on timeout
    /// or on a closed connection, listing what did arrive.
    pub async fn wait_for(&mut self, what: &str, matches: impl Fn(&Msg) -> bool) -> Msg {
        self.wait_for_within(what, REPLY_TIMEOUT, matches).await
    }

    /// [`Mqtt::wait_for`] with its own bound.
    pub async fn wait_for_within(&mut self, what: &str, within: Duration, matches: impl Fn(&Msg) -> bool) -> Msg {
        if let Some(i) = self.pending.iter().position(&matches) {
            return self.pending.remove(i).expect("index from position");
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(Event::Message(m)) if matches(&m) => return m,
                Some(Event::Message(m)) => self.pending.push_back(m),
                Some(Event::Connected | Event::SubAck { .. }) => {}
                Some(Event::Closed(why)) => {
                    panic!("client {}: connection closed ({why}) while waiting for {what}; got:\n{}", self.id, self.seen())
                }
                None => panic!("client {}: no {what} within {within:?}; got:\n{}", self.id, self.seen()),
            }
        }
    }

    /// Every message up to and including the first that `matches`, in
    /// arrival order (including those kept from earlier waits).
    pub async fn collect_until(&mut self, what: &str, matches: impl Fn(&Msg) -> bool) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.pending.pop_front() {
            let done = matches(&m);
            out.push(m);
            if done {
                return out;
            }
        }
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(Event::Message(m)) => {
                    let done = matches(&m);
                    out.push(m);
                    if done {
                        return out;
                    }
                }
                Some(Event::Connected | Event::SubAck { .. }) => {}
                Some(Event::Closed(why)) => panic!("client {}: connection closed ({why}) while waiting for {what}", self.id),
                None => {
                    let got: Vec<String> = out.iter().map(ToString::to_string).collect();
                    panic!("client {}: no {what} within {REPLY_TIMEOUT:?}; got:\n{}", self.id, got.join("\n"));
                }
            }
        }
    }

    /// The next message, or `None` when the connection closed; panics when
    /// nothing happens within `within`.
    pub async fn next_or_closed(&mut self, within: Duration) -> Option<Msg> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        if self.closed.is_some() {
            return None;
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(Event::Message(m)) => return Some(m),
                Some(Event::Connected | Event::SubAck { .. }) => {}
                Some(Event::Closed(_)) => return None,
                None => panic!("client {}: neither a message nor a closed connection within {within:?}", self.id),
            }
        }
    }

    /// The reply (`.../accepted` or `.../rejected`) carrying `token`.
    pub async fn reply(&mut self, token: &str) -> Msg {
        self.wait_for(&format!("a reply with clientToken {token:?}"), |m| {
            (m.topic.ends_with("/accepted") || m.topic.ends_with("/rejected")) && m.token().as_deref() == Some(token)
        })
        .await
    }

    /// The message on exactly `topic` carrying `token`.
    pub async fn on_topic(&mut self, topic: &str, token: &str) -> Msg {
        self.wait_for(&format!("{topic} with clientToken {token:?}"), |m| {
            m.topic == topic && m.token().as_deref() == Some(token)
        })
        .await
    }

    /// Sends `request` to `topic` and returns the accepted/rejected reply,
    /// matched by the request's `clientToken` (which it must carry).
    pub async fn request(&mut self, topic: &str, request: &Value) -> Msg {
        let token = request
            .get("clientToken")
            .and_then(Value::as_str)
            .expect("the request carries a clientToken")
            .to_owned();
        self.publish_json(topic, request).await;
        self.reply(&token).await
    }

    /// The messages kept so far, one per line, for failure messages.
    fn seen(&self) -> String {
        let lines: Vec<String> = self.pending.iter().map(ToString::to_string).collect();
        if lines.is_empty() {
            "(nothing)".to_owned()
        } else {
            lines.join("\n")
        }
    }
}

/// Asserts `msg` is on `topic`, its JSON payload is returned.
pub fn expect_topic(msg: &Msg, topic: &str) -> Value {
    assert_eq!(msg.topic, topic, "unexpected reply: {msg}");
    msg.json()
}

/// Asserts a `rejected` reply with `code` and `message` (and `token`).
pub fn expect_rejected(msg: &Msg, code: u64, message: &str, token: Option<&str>) {
    assert!(msg.topic.ends_with("/rejected"), "expected a rejection {code} {message:?}, got {msg}");
    let v = msg.json();
    assert_eq!(v["code"], code, "code of {msg}");
    assert_eq!(v["message"], message, "message of {msg}");
    assert!(v["timestamp"].is_u64(), "timestamp of {msg}");
    match token {
        Some(t) => assert_eq!(v["clientToken"], t, "clientToken of {msg}"),
        None => assert!(v.get("clientToken").is_none(), "no clientToken expected in {msg}"),
    }
}

/// Seconds since the Unix epoch, to check that timestamps are plausible.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Asserts `v` is a timestamp in seconds within a day of now: not a timing
/// assertion, a check that the unit is seconds and the clock is the wall clock.
pub fn assert_plausible_secs(v: &Value, what: &str) {
    let ts = v.as_u64().unwrap_or_else(|| panic!("{what}: {v} is not a timestamp in seconds"));
    let now = now_secs();
    assert!(ts.abs_diff(now) < 86_400, "{what}: {ts} is not seconds near now ({now})");
}

/// A fresh temporary directory and the data directory inside it.
pub fn temp_data() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("shade-e2e-").tempdir().expect("create a temp dir");
    let data = dir.path().join("data");
    (dir, data)
}
