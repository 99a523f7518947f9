//! [`Mqtt`]: a rumqttc client (MQTT 3.1.1 or 5) with bounded, buffering waits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ClientConfig;

use crate::{CLIENT_MAX_PACKET, REPLY_TIMEOUT};

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
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
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
        write!(
            f,
            "{}{} {}",
            self.topic,
            if self.retain { " (retained)" } else { "" },
            shown
        )
    }
}

/// What a client's event loop task reports.
#[derive(Debug)]
enum Event {
    Connected,
    Message(Msg),
    SubAck {
        ok: bool,
    },
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
    /// Queues a DISCONNECT behind whatever is still queued, so publishes
    /// made just before the drop still go out; the event loop task ends when
    /// the connection does. When the queue is full, the task is aborted.
    fn drop(&mut self) {
        let queued = match &self.inner {
            Inner::V4(c) => c.try_disconnect().is_ok(),
            Inner::V5(c) => c.try_disconnect().is_ok(),
        };
        if !queued || self.closed.is_some() {
            self.task.abort();
        }
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
            Inner::V4(c) => c
                .publish(topic, qos1, false, payload)
                .await
                .map_err(|e| e.to_string()),
            Inner::V5(c) => c
                .publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// How a test client connects, beyond its port and id.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// Username and password in the CONNECT.
    pub login: Option<(String, String)>,
    /// TLS with this client configuration (trusted roots, client
    /// certificate); the server name is `localhost`.
    pub tls: Option<Arc<ClientConfig>>,
}

impl Connect {
    pub fn login(username: &str, password: &str) -> Connect {
        Connect {
            login: Some((username.to_owned(), password.to_owned())),
            tls: None,
        }
    }
}

impl Mqtt {
    /// Connects an MQTT 3.1.1 client and waits for its CONNACK.
    pub async fn connect(port: u16, id: &str) -> Mqtt {
        Self::connect_with(port, id, &Connect::default())
            .await
            .unwrap_or_else(|e| panic!("client {id}: {e}"))
    }

    /// Connects an MQTT 3.1.1 client `how` says; `Err` with the reason
    /// when the server refuses it or the connection fails.
    pub async fn connect_with(port: u16, id: &str, how: &Connect) -> Result<Mqtt, String> {
        let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        options.set_max_packet_size(CLIENT_MAX_PACKET, CLIENT_MAX_PACKET);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        if let Some((user, password)) = &how.login {
            options.set_credentials(user, password);
        }
        if let Some(tls) = &how.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
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
                        ok: ack
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
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
        Self::connect_v5_with(port, id, &Connect::default())
            .await
            .unwrap_or_else(|e| panic!("client {id}: {e}"))
    }

    /// [`Mqtt::connect_with`] for MQTT 5.
    pub async fn connect_v5_with(port: u16, id: &str, how: &Connect) -> Result<Mqtt, String> {
        use rumqttc::v5::mqttbytes::v5::Packet;
        let mut options = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
        options.set_max_packet_size(Some(u32::try_from(CLIENT_MAX_PACKET).unwrap_or(u32::MAX)));
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_start(true);
        if let Some((user, password)) = &how.login {
            options.set_credentials(user, password);
        }
        if let Some(tls) = &how.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
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
                        ok: ack.return_codes.iter().all(|c| {
                            matches!(
                                c,
                                rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                            )
                        }),
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

    async fn connected(
        id: &str,
        inner: Inner,
        events: mpsc::UnboundedReceiver<Event>,
        task: JoinHandle<()>,
    ) -> Result<Mqtt, String> {
        let mut client = Mqtt {
            id: id.to_owned(),
            inner,
            events,
            pending: VecDeque::new(),
            closed: None,
            task,
        };
        match client.next_event(REPLY_TIMEOUT).await {
            Some(Event::Connected) => Ok(client),
            Some(Event::Closed(reason)) => Err(reason),
            other => Err(format!("expected CONNACK, got {other:?}")),
        }
    }

    /// Ends the connection the way a crashed device or a lost network
    /// does: the socket closes without a DISCONNECT. Returns once the
    /// client's event loop (and with it the socket) is gone.
    pub async fn drop_socket(mut self) {
        self.task.abort();
        // Aborted (or already ended): either way the socket is closed.
        let _ = (&mut self.task).await;
    }

    /// Sends DISCONNECT and waits, at most `within`, for the connection to
    /// end (the server closes it on reading a DISCONNECT); returns whether
    /// it ended in time.
    pub async fn disconnect(mut self, within: Duration) -> bool {
        let sent = match &self.inner {
            Inner::V4(c) => c.disconnect().await.is_ok(),
            Inner::V5(c) => c.disconnect().await.is_ok(),
        };
        sent && tokio::time::timeout(within, &mut self.task).await.is_ok()
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
        if !self.try_subscribe(filter).await {
            panic!(
                "client {}: subscribe {filter}: the SUBACK refused it",
                self.id
            );
        }
    }

    /// Subscribes at QoS 1 and returns whether the SUBACK granted it.
    pub async fn try_subscribe(&mut self, filter: &str) -> bool {
        self.try_subscribe_qos(filter, rumqttc::QoS::AtLeastOnce)
            .await
    }

    /// Subscribes at `qos` and waits for the SUBACK; panics when refused.
    pub async fn subscribe_qos(&mut self, filter: &str, qos: rumqttc::QoS) {
        if !self.try_subscribe_qos(filter, qos).await {
            panic!(
                "client {}: subscribe {filter} at {qos:?}: the SUBACK refused it",
                self.id
            );
        }
    }

    /// Subscribes at `qos` and returns whether the SUBACK granted it.
    pub async fn try_subscribe_qos(&mut self, filter: &str, qos: rumqttc::QoS) -> bool {
        let result = match &self.inner {
            Inner::V4(c) => c.subscribe(filter, qos).await.map_err(|e| e.to_string()),
            Inner::V5(c) => {
                use rumqttc::v5::mqttbytes::QoS as Q5;
                let qos = match qos {
                    rumqttc::QoS::AtMostOnce => Q5::AtMostOnce,
                    rumqttc::QoS::AtLeastOnce => Q5::AtLeastOnce,
                    rumqttc::QoS::ExactlyOnce => Q5::ExactlyOnce,
                };
                c.subscribe(filter, qos).await.map_err(|e| e.to_string())
            }
        };
        if let Err(e) = result {
            panic!("client {}: subscribe {filter}: {e}", self.id);
        }
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(Event::SubAck { ok }) => return ok,
                Some(Event::Message(m)) => self.pending.push_back(m),
                Some(Event::Connected) => {}
                other => panic!(
                    "client {}: subscribe {filter}: expected a SUBACK, got {other:?}",
                    self.id
                ),
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
    pub async fn wait_for_within(
        &mut self,
        what: &str,
        within: Duration,
        matches: impl Fn(&Msg) -> bool,
    ) -> Msg {
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
                    panic!(
                        "client {}: connection closed ({why}) while waiting for {what}; got:\n{}",
                        self.id,
                        self.seen()
                    )
                }
                None => panic!(
                    "client {}: no {what} within {within:?}; got:\n{}",
                    self.id,
                    self.seen()
                ),
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
                Some(Event::Closed(why)) => panic!(
                    "client {}: connection closed ({why}) while waiting for {what}",
                    self.id
                ),
                None => {
                    let got: Vec<String> = out.iter().map(ToString::to_string).collect();
                    panic!(
                        "client {}: no {what} within {REPLY_TIMEOUT:?}; got:\n{}",
                        self.id,
                        got.join("\n")
                    );
                }
            }
        }
    }

    /// The next message within `within`; `None` when nothing came or the
    /// connection closed ([`Mqtt::closed`] tells which). Never panics, so
    /// a caller counting many messages can say how many it got.
    pub async fn next_within(&mut self, within: Duration) -> Option<Msg> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        let deadline = tokio::time::Instant::now() + within;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await? {
                Event::Message(m) => return Some(m),
                Event::Connected | Event::SubAck { .. } | Event::Closed(_) => {}
            }
        }
        None
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
                None => panic!(
                    "client {}: neither a message nor a closed connection within {within:?}",
                    self.id
                ),
            }
        }
    }

    /// The reply (`.../accepted` or `.../rejected`) carrying `token`.
    pub async fn reply(&mut self, token: &str) -> Msg {
        self.wait_for(&format!("a reply with clientToken {token:?}"), |m| {
            (m.topic.ends_with("/accepted") || m.topic.ends_with("/rejected"))
                && m.token().as_deref() == Some(token)
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
