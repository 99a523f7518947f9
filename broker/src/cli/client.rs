//! One MQTT session of the command line, driven step by step.
//!
//! The CLI makes one or a few requests and exits, so it polls rumqttc's
//! event loop itself instead of spawning it: each step (connect, subscribe,
//! wait for a reply) polls until what it waits for arrives or its deadline
//! passes. A request subscribes to its reply topics and waits for the SUBACK
//! before publishing, so the reply cannot race past the subscription, and
//! the reply is matched by the random clientToken the request carried, so a
//! concurrent client's replies on the same topics are skipped.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Packet, Publish, QoS, SubscribeFilter,
    SubscribeReasonCode, TlsError,
};
use serde_json::{Map, Value};
use shade_client::{BrokerUrl, Credentials};
use shade_shared::topic::{Operation, Reply, Topic};
use shade_shared::ShadowId;
use tokio::time::{timeout_at, Instant};

use super::args::{BrokerArgs, CliError};
use crate::ops;

/// Largest packet accepted from the broker: a list page or a full document
/// with metadata is far below this; the limit only bounds a broken peer.
const MAX_INCOMING: usize = 64 << 20;
/// Largest packet sent: an update is bounded by the broker's payload limit.
const MAX_OUTGOING: usize = 16 << 20;
/// Requests waiting in rumqttc's channel; the CLI has at most a few.
const CHANNEL: usize = 16;

/// A random `[A-Za-z0-9]{16}` token for clientTokens, reply topics and the
/// client id. Not secret, only unique: std's `RandomState` is seeded from
/// the OS's randomness once per process, mixed here with the time and pid.
pub fn token() -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut out = String::with_capacity(16);
    for half in 0..2u8 {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u8(half);
        // 62^8 < 2^64: eight characters per 64-bit hash.
        let mut bits = h.finish();
        for _ in 0..8 {
            out.push(char::from(ALPHABET[(bits % 62) as usize]));
            bits /= 62;
        }
    }
    out
}

/// A connected MQTT session.
pub struct Session {
    client: AsyncClient,
    events: EventLoop,
    broker: BrokerUrl,
    timeout: Duration,
    /// Publishes that arrived while waiting for an acknowledgement.
    early: VecDeque<Publish>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

fn reason(e: &ConnectionError) -> String {
    match e {
        ConnectionError::Io(io) => io.to_string(),
        // rumqttc wraps the handshake's error in an I/O error: its text is
        // rustls's ("invalid peer certificate: UnknownIssuer").
        ConnectionError::Tls(TlsError::Io(io)) => {
            let text = io.to_string();
            if text.contains("certificate") {
                format!(
                    "TLS handshake failed: {text} (does --ca hold the CA that signed the \
                     broker's certificate, and does that certificate name the host?)"
                )
            } else {
                format!("TLS handshake failed: {text}")
            }
        }
        ConnectionError::Tls(tls) => format!("TLS: {tls}"),
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection ({code:?})")
        }
        other => other.to_string(),
    }
}

impl Session {
    /// Connects and waits for the CONNACK, for at most `--timeout`; over
    /// TLS for an `mqtts://` broker.
    pub async fn connect(args: &BrokerArgs) -> Result<Session, CliError> {
        let tls = args.tls()?;
        // Either flag sends both, the missing one empty.
        let credentials =
            (args.username.is_some() || args.password.is_some()).then(|| Credentials {
                username: args.username.clone().unwrap_or_default(),
                password: args.password.clone().unwrap_or_default(),
            });
        let mut options = shade_client::mqtt_options(
            format!("shade-cli-{}", token()),
            &args.broker,
            tls,
            credentials,
        );
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(MAX_INCOMING, MAX_OUTGOING);
        let (client, mut events) = AsyncClient::new(options, CHANNEL);
        let deadline = Instant::now() + args.timeout;
        let connect_error = |reason: String| CliError::Connect {
            broker: args.broker.clone(),
            reason,
        };
        loop {
            match timeout_at(deadline, events.poll()).await {
                Err(_) => {
                    return Err(connect_error(format!(
                        "no CONNACK within {} s",
                        args.timeout.as_secs_f64()
                    )))
                }
                Ok(Err(e)) => return Err(connect_error(reason(&e))),
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
                Ok(Ok(_)) => {}
            }
        }
        Ok(Session {
            client,
            events,
            broker: args.broker.clone(),
            timeout: args.timeout,
            early: VecDeque::new(),
        })
    }

    /// The broker this session talks to.
    pub fn broker(&self) -> &BrokerUrl {
        &self.broker
    }

    /// A deadline `--timeout` from now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    fn timeout_error(&self, waiting_for: &str) -> CliError {
        CliError::Timeout {
            broker: self.broker.clone(),
            secs: format!("{}", self.timeout.as_secs_f64()),
            waiting_for: waiting_for.to_owned(),
        }
    }

    fn lost(&self, reason: String) -> CliError {
        CliError::Lost {
            broker: self.broker.clone(),
            reason,
        }
    }

    /// The next incoming packet, until `deadline` (`None`: no deadline).
    async fn incoming(
        &mut self,
        deadline: Option<Instant>,
        waiting_for: &str,
    ) -> Result<Packet, CliError> {
        loop {
            let event = match deadline {
                Some(deadline) => match timeout_at(deadline, self.events.poll()).await {
                    Ok(event) => event,
                    Err(_) => return Err(self.timeout_error(waiting_for)),
                },
                None => self.events.poll().await,
            };
            match event {
                Ok(Event::Incoming(packet)) => return Ok(packet),
                Ok(Event::Outgoing(_)) => {}
                Err(e) => return Err(self.lost(reason(&e))),
            }
        }
    }

    /// Subscribes to `filters` and waits for the SUBACK; a refused filter is an error.
    pub async fn subscribe(&mut self, filters: &[String]) -> Result<(), CliError> {
        let request = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        self.client
            .subscribe_many(request)
            .await
            .map_err(|e| self.lost(e.to_string()))?;
        let deadline = self.deadline();
        loop {
            match self
                .incoming(Some(deadline), "the subscription to be acknowledged")
                .await?
            {
                Packet::SubAck(ack) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        return Err(CliError::Refused(format!(
                            "subscribing to {} was refused",
                            filters.join(", ")
                        )));
                    }
                    return Ok(());
                }
                Packet::Publish(p) => self.early.push_back(p),
                _ => {}
            }
        }
    }

    /// Publishes `payload` to `topic` (QoS 1).
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), CliError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| self.lost(e.to_string()))
    }

    /// The next message on a subscribed topic, until `deadline` (`None`: wait forever).
    pub async fn next_publish(
        &mut self,
        deadline: Option<Instant>,
        waiting_for: &str,
    ) -> Result<Publish, CliError> {
        if let Some(p) = self.early.pop_front() {
            return Ok(p);
        }
        loop {
            if let Packet::Publish(p) = self.incoming(deadline, waiting_for).await? {
                return Ok(p);
            }
        }
    }

    /// Waits on `topics` for a JSON message whose clientToken is `token`.
    async fn reply(
        &mut self,
        topics: &[String],
        token: &str,
        waiting_for: &str,
    ) -> Result<(String, Value), CliError> {
        let deadline = self.deadline();
        loop {
            let p = self.next_publish(Some(deadline), waiting_for).await?;
            if !topics.contains(&p.topic) {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(&p.payload) else {
                continue;
            };
            if v.get("clientToken").and_then(Value::as_str) == Some(token) {
                return Ok((p.topic, v));
            }
        }
    }

    /// An AWS shadow request: subscribes to `accepted` and `rejected`,
    /// publishes `body` with a fresh clientToken, and returns the accepted
    /// document or the rejection as [`CliError::Rejected`].
    pub async fn aws(
        &mut self,
        id: &ShadowId,
        op: Operation,
        mut body: Map<String, Value>,
    ) -> Result<Value, CliError> {
        let token = token();
        body.insert("clientToken".into(), Value::String(token.clone()));
        let accepted = Topic::aws_reply(id, op, Reply::Accepted);
        let rejected = Topic::aws_reply(id, op, Reply::Rejected);
        let topics = [accepted, rejected.clone()];
        self.subscribe(&topics).await?;
        self.publish(
            &Topic::aws_request(id, op),
            Value::Object(body).to_string().into_bytes(),
        )
        .await?;
        let (topic, reply) = self
            .reply(&topics, &token, &format!("the answer to {op} {id}"))
            .await?;
        if topic == rejected {
            return Err(CliError::Rejected {
                id: id.clone(),
                code: reply
                    .get("code")
                    .and_then(Value::as_u64)
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(0),
                message: reply
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            });
        }
        Ok(reply)
    }

    /// A query on `shade/ops/request` (see [`crate::ops`]): returns its
    /// `result`, or the `error` as [`CliError::Refused`].
    pub async fn ops(&mut self, mut body: Map<String, Value>) -> Result<Value, CliError> {
        let token = token();
        let what = body
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("request")
            .to_owned();
        body.insert("clientToken".into(), Value::String(token.clone()));
        let reply_topic = format!("{}{token}", ops::REPLY_PREFIX);
        let topics = [reply_topic.clone()];
        self.subscribe(&topics).await?;
        self.publish(
            ops::REQUEST_TOPIC,
            Value::Object(body).to_string().into_bytes(),
        )
        .await?;
        let waiting_for = format!(
            "the answer to {what} on {} (does this broker answer it?)",
            ops::REQUEST_TOPIC
        );
        let (_, mut reply) = self.reply(&topics, &token, &waiting_for).await?;
        // Best effort: the session ends soon anyway.
        let _ = self.client.try_unsubscribe(reply_topic);
        match reply.get("ok") {
            Some(Value::Bool(true)) => Ok(reply
                .get_mut("result")
                .map(Value::take)
                .unwrap_or(Value::Null)),
            Some(Value::Bool(false)) => {
                let error = reply
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given");
                Err(CliError::Refused(
                    if error.starts_with("No shadow exists") {
                        error.to_owned()
                    } else {
                        format!("{} refused the {what} query: {error}", self.broker)
                    },
                ))
            }
            _ => Err(self.bad_reply(format!("the answer to {what} has no \"ok\""))),
        }
    }

    /// A [`CliError::BadReply`] naming this broker.
    pub fn bad_reply(&self, reason: impl Into<String>) -> CliError {
        CliError::BadReply {
            broker: self.broker.clone(),
            reason: reason.into(),
        }
    }

    /// Sends DISCONNECT and lets the event loop write it, for at most a second.
    pub async fn close(mut self) {
        if self.client.try_disconnect().is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while let Ok(Ok(event)) = timeout_at(deadline, self.events.poll()).await {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_sixteen_alphanumerics_and_differ() {
        let a = token();
        let b = token();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }
}
