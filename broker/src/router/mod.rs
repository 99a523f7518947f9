//! The embedded rumqttd broker: its router, its listeners and the service's
//! in-process link, behind a small tokio-friendly interface.
//!
//! [`start`] returns a [`BrokerHandle`] to publish as the service and a
//! receiver of [`Inbound`] requests, each stamped with its publisher's client
//! id by the [`Gateway`](crate::router::gateway::Gateway).
//!
//! Threads: rumqttd has no shutdown (DESIGN.md), so everything here runs on
//! threads of its own that live until the process exits: the router
//! (`Router::spawn`), one thread per listener with a current-thread tokio
//! runtime (as rumqttd's own `Broker` does), and two threads for the service
//! link, because rumqttd's link blocks on its channels. The service talks to
//! those two through bounded tokio channels, so async code never blocks on
//! rumqttd.
//!
//! Backpressure, inbound: when the service lags and the [`Inbound`] channel
//! is full, the link thread blocks. That is backpressure on the router, not
//! on clients: it stops handing the link more of the `_in/#` log (it
//! unschedules a link with 200 undelivered messages until the link says
//! `ready`), while clients' requests keep being acknowledged and appended to
//! that log, which holds [`BrokerSettings::service_log`] bytes. Only a
//! service that falls further behind than that loses the oldest requests
//! (rumqttd logs a cursor jump), and every request is safe to resend: AWS
//! clients time out and retry, agents resend sync messages. Blocking keeps
//! order and loses nothing in the common case; dropping would lose requests
//! on every burst.
//!
//! Backpressure, outbound: [`BrokerHandle::publish`] waits while its channel
//! is full, and the link thread waits on the router's own bounded channel.

pub mod gateway;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use std::{fmt, io, thread};

use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::protocol::{Packet, Publish};
use rumqttd::{
    ConnectionSettings, LinkType, Notification, Router, RouterConfig, SegmentConfig, Server,
    ServerSettings,
};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::auth::Auth;
use crate::front::{self, FrontShared, Transport};
use gateway::{Gateway, GatewayContext, SERVICE_CLIENT_ID, SERVICE_FILTER};

/// How much of one subscription filter's traffic rumqttd keeps in memory: it
/// appends every message to the log of each filter that matches it, in
/// segments of `segment_bytes`, and drops the oldest segment once there are
/// `segments`. A subscriber further behind than that loses messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSize {
    pub segment_bytes: usize,
    pub segments: usize,
}

impl LogSize {
    fn to_rumqttd(self) -> SegmentConfig {
        SegmentConfig {
            max_segment_size: self.segment_bytes,
            max_segment_count: self.segments,
        }
    }
}

/// What the embedded broker listens on and how it is sized. The defaults
/// suit a small machine: a few tens of MB for ten thousand connections,
/// where rumqttd's sample config allows 1 GB per filter.
#[derive(Clone)]
pub struct BrokerSettings {
    /// Where clients connect, and how: TCP, TLS, WebSocket (subprotocol
    /// `mqtt`, any path) or WebSocket over TLS. Each connection may speak
    /// MQTT 3.1.1 or 5: the gateway reads the level from CONNECT.
    pub listeners: Vec<(SocketAddr, Transport)>,
    /// Client connections; the service's own link comes on top.
    pub max_connections: usize,
    /// Connections still handshaking or waiting for their CONNECT; more
    /// are closed at once (bounds the memory a half-open flood costs).
    pub max_pending_connections: usize,
    /// Largest packet a client may send (topic, properties and payload),
    /// in bytes; a bigger one closes its connection.
    pub max_payload: usize,
    /// How long a new connection has to send CONNECT (at most 65.535 s,
    /// a rumqttd limit).
    pub connect_timeout: Duration,
    /// Who may connect and what each may do. Disabled admits anyone with
    /// full access; the caller decides when that is allowed (DESIGN.md:
    /// loopback only, or `--allow-anonymous`).
    pub auth: Auth,
    /// Log of `_in/#`, the requests waiting for the service: how far the
    /// service may fall behind before the oldest requests are lost.
    pub service_log: LogSize,
    /// Log of every client subscription filter. rumqttd never frees a
    /// filter's log, so this is kept small: memory grows with the number of
    /// distinct filters times this, at most.
    pub client_log: LogSize,
    /// Requests buffered between the link thread and the service.
    pub inbound_capacity: usize,
    /// Service publishes buffered between [`BrokerHandle`] and the link.
    pub outbound_capacity: usize,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            listeners: vec![(SocketAddr::from(([127, 0, 0, 1], 1883)), Transport::Tcp)],
            max_connections: 10_000,
            max_pending_connections: 1024,
            max_payload: 128 * 1024,
            connect_timeout: Duration::from_secs(10),
            auth: Auth::disabled(),
            service_log: LogSize {
                segment_bytes: 1024 * 1024,
                segments: 10,
            },
            client_log: LogSize {
                segment_bytes: 256 * 1024,
                segments: 4,
            },
            inbound_capacity: 1024,
            outbound_capacity: 1024,
        }
    }
}

impl fmt::Debug for BrokerSettings {
    /// `Auth`'s own `Debug` names users but never prints their hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("listeners", &self.listeners)
            .field("max_connections", &self.max_connections)
            .field("max_pending_connections", &self.max_pending_connections)
            .field("max_payload", &self.max_payload)
            .field("connect_timeout", &self.connect_timeout)
            .field("auth", &self.auth)
            .field("service_log", &self.service_log)
            .field("client_log", &self.client_log)
            .field("inbound_capacity", &self.inbound_capacity)
            .field("outbound_capacity", &self.outbound_capacity)
            .finish()
    }
}

/// rumqttd's outgoing inflight window is a constant (100) in 0.20; this is
/// the matching number of packets read from one socket per batch.
const READ_BATCH: usize = 100;
/// QoS 0 messages handed to one connection per router pass. rumqttd also
/// truncates the retained messages a new QoS 0 subscription receives to
/// this count, and every shadow's state is a retained message, so it is
/// sized for a large fleet: a dashboard subscribing to `shade/things/#`
/// must see every shadow. The messages are reference-counted slices of
/// the router's log, so a large pass costs pointers, not copies.
const MAX_OUTGOING_PER_PASS: u64 = 200_000;
/// Above this, rumqttd's router preallocates too much (and, far above,
/// overflows a capacity computation).
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;
/// The largest remaining length MQTT can encode.
const MQTT_MAX_PACKET: usize = 268_435_455;

/// Everything that can go wrong starting or using the embedded broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    #[error("invalid broker setting: {0}")]
    Setting(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot start a broker thread: {0}")]
    Thread(#[source] io::Error),
    #[error("no OS randomness for the listener secret: {0}")]
    Random(String),
    /// rumqttd's `LinkError` carries router internals that are neither
    /// `Sync` nor useful to print, so only its message is kept.
    #[error("the service link to the router failed: {0}")]
    Link(String),
    #[error("the service cannot publish on {0:?}: clients could never receive it")]
    Topic(String),
    #[error("the broker's service link has stopped")]
    Closed,
}

/// A message a client published on a topic the service handles, with the
/// publisher's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The publisher's MQTT client id (rumqttd's `rumqtt-<uuid>` when the
    /// client sent an empty one).
    pub client_id: String,
    /// The topic as the client wrote it, e.g. `$aws/things/t1/shadow/update`
    /// or `shade/things/t1/sync/up`.
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Publishes as the service. Cheap to clone; every clone feeds one link.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    outbound: mpsc::Sender<Outbound>,
}

/// A message the service publishes. [`BrokerHandle::send`] takes it with
/// its topic as clients see it; on the link's channel the topic is the
/// router's (see [`gateway`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Kept for later subscribers; an empty retained payload clears it.
    pub retain: bool,
}

impl Outbound {
    /// A message of `value` serialized as JSON, not retained.
    pub fn json(topic: String, value: &serde_json::Value) -> Outbound {
        Outbound {
            topic,
            payload: value.to_string().into_bytes(),
            retain: false,
        }
    }
}

impl BrokerHandle {
    /// Publishes `payload` on `topic` as clients see it
    /// (`$aws/things/t1/shadow/update/accepted`, `shade/things/t1/state`).
    /// Each subscriber gets it at the QoS it subscribed with: the link itself
    /// is in-process and cannot lose a message, so it publishes at QoS 0.
    /// `retain` keeps it for later subscribers (in memory only: rumqttd
    /// forgets retained messages on restart); an empty retained payload
    /// clears the topic. Returns once the link has queued the message; waits
    /// while that queue is full.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), EmbeddedError> {
        self.send(Outbound {
            topic: topic.to_owned(),
            payload,
            retain,
        })
        .await
    }

    /// Publishes `message`, as [`BrokerHandle::publish`].
    pub async fn send(&self, mut message: Outbound) -> Result<(), EmbeddedError> {
        message.topic = gateway::service_topic(&message.topic)
            .ok_or_else(|| EmbeddedError::Topic(message.topic.clone()))?;
        self.outbound
            .send(message)
            .await
            .map_err(|_| EmbeddedError::Closed)
    }
}

/// Starts the router, the listeners and the service link, each on its own
/// thread. Call once per process: nothing here can be stopped.
///
/// Listeners bind on their threads, so one may accept its first connection
/// a moment after this returns; clients retry anyway. The addresses are
/// checked here first so that a port in use is reported, not just logged.
pub fn start(
    settings: BrokerSettings,
) -> Result<(BrokerHandle, mpsc::Receiver<Inbound>), EmbeddedError> {
    settings.validate()?;
    let mut bound = Vec::new();
    for (addr, transport) in &settings.listeners {
        let listener = TcpListener::bind(addr).map_err(|source| EmbeddedError::Bind {
            addr: *addr,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| EmbeddedError::Bind {
                addr: *addr,
                source,
            })?;
        bound.push((listener, transport.clone()));
    }

    let router_tx = Router::new(0, settings.router_config()).spawn();

    // The link subscribes before any listener exists; the router handles its
    // channel in order, so no client request can arrive before `_in/#` has a
    // subscriber (a message no filter matches is discarded).
    let (mut link_tx, link_rx, _connack) = LinkBuilder::new(SERVICE_CLIENT_ID, router_tx.clone())
        .build()
        .map_err(|e| EmbeddedError::Link(e.to_string()))?;
    link_tx
        .subscribe(SERVICE_FILTER)
        .map_err(|e| EmbeddedError::Link(e.to_string()))?;

    // rumqttd listens on a loopback port of its own that only the front
    // dials. rumqttd binds it itself, so the port is picked free here and
    // released: another process could take it in between, a small window
    // at start only; then the listener's bind fails and the process exits
    // (see `spawn_listener`) rather than run with every connection closed.
    let internal = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|source| EmbeddedError::Bind {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            source,
        })?;
    let secret: Arc<str> = gateway::random_hex()
        .map_err(|e| EmbeddedError::Random(e.to_string()))?
        .into();
    let gateway = Gateway::new(Arc::new(GatewayContext {
        secret: secret.clone(),
        auth: settings.auth.clone(),
    }));
    let server = Server::new(
        server_settings(
            "shade-internal".to_owned(),
            internal,
            &settings.connection_settings(),
        ),
        router_tx.clone(),
        gateway,
    );
    spawn_listener(server, LinkType::Remote, "shade-internal".to_owned())?;
    let shared = Arc::new(FrontShared {
        internal,
        secret,
        auth: settings.auth.clone(),
        connections: Arc::new(tokio::sync::Semaphore::new(settings.max_connections)),
        pending: Arc::new(tokio::sync::Semaphore::new(
            settings.max_pending_connections,
        )),
        connect_timeout: settings.connect_timeout,
        max_connect_bytes: settings.max_payload,
    });
    spawn_front(bound, shared)?;

    let (inbound_tx, inbound_rx) = mpsc::channel(settings.inbound_capacity);
    let (outbound_tx, outbound_rx) = mpsc::channel(settings.outbound_capacity);
    thread::Builder::new()
        .name("shade-link-rx".to_owned())
        .spawn(move || receive_loop(link_rx, &inbound_tx))
        .map_err(EmbeddedError::Thread)?;
    // `LinkTx::send` is an `async fn` that blocks on the router's channel, so
    // it gets a runtime of its own on a thread of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(EmbeddedError::Thread)?;
    thread::Builder::new()
        .name("shade-link-tx".to_owned())
        .spawn(move || runtime.block_on(send_loop(link_tx, outbound_rx)))
        .map_err(EmbeddedError::Thread)?;

    info!(listeners = ?settings.listeners, auth = settings.auth.enabled, "embedded MQTT broker started");
    Ok((
        BrokerHandle {
            outbound: outbound_tx,
        },
        inbound_rx,
    ))
}

impl BrokerSettings {
    fn listeners(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.listeners.iter().map(|(addr, _)| *addr)
    }

    /// Rejects what rumqttd would panic on, or silently misbehave with.
    fn validate(&self) -> Result<(), EmbeddedError> {
        let bad = |what: String| Err(EmbeddedError::Setting(what));
        if self.listeners().next().is_none() {
            return bad("no listener: give at least one TCP or WebSocket address".to_owned());
        }
        let mut seen = HashSet::new();
        for addr in self.listeners() {
            if addr.port() == 0 {
                return bad(format!("{addr}: port 0 would bind a port nobody can learn"));
            }
            if !seen.insert(addr) {
                return bad(format!("{addr} is given twice"));
            }
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            return bad(format!(
                "max_connections must be 1..={MAX_CONNECTIONS_LIMIT}"
            ));
        }
        if !(1..=MQTT_MAX_PACKET).contains(&self.max_payload) {
            return bad(format!("max_payload must be 1..={MQTT_MAX_PACKET} bytes"));
        }
        if u16::try_from(self.connect_timeout.as_millis()).map_or(true, |ms| ms == 0) {
            return bad("connect_timeout must be 1 ms..=65.535 s".to_owned());
        }
        for (name, log) in [
            ("service_log", self.service_log),
            ("client_log", self.client_log),
        ] {
            // rumqttd panics below 1 KiB or without a segment.
            if log.segment_bytes < 1024 || log.segments == 0 {
                return bad(format!(
                    "{name} needs segments of at least 1024 bytes, and at least one"
                ));
            }
        }
        if self.max_pending_connections == 0 {
            return bad("max_pending_connections must be at least 1".to_owned());
        }
        if self.inbound_capacity == 0 || self.outbound_capacity == 0 {
            return bad("channel capacities must be at least 1".to_owned());
        }
        Ok(())
    }

    fn router_config(&self) -> RouterConfig {
        RouterConfig {
            // The service link, and room for connections the front has
            // closed while rumqttd has not yet noticed.
            max_connections: self.max_connections + 1 + self.max_pending_connections,
            max_outgoing_packet_count: MAX_OUTGOING_PER_PASS,
            max_segment_size: self.client_log.segment_bytes,
            max_segment_count: self.client_log.segments,
            custom_segment: Some(HashMap::from([(
                SERVICE_FILTER.to_owned(),
                self.service_log.to_rumqttd(),
            )])),
            ..RouterConfig::default()
        }
    }

    fn connection_settings(&self) -> ConnectionSettings {
        ConnectionSettings {
            // Fits: `validate` checked it.
            connection_timeout_ms: u16::try_from(self.connect_timeout.as_millis())
                .unwrap_or(u16::MAX),
            max_payload_size: self.max_payload,
            max_inflight_count: READ_BATCH,
            // The front authenticates; the gateway checks its preamble.
            auth: None,
            external_auth: None,
            // Only matters for a topic no filter matches, which rumqttd 0.20
            // discards either way (`DataLog::matches` never returns `None`).
            dynamic_filters: false,
        }
    }
}

fn server_settings(
    name: String,
    listen: SocketAddr,
    connections: &ConnectionSettings,
) -> ServerSettings {
    ServerSettings {
        name,
        listen,
        tls: None,
        // Only the front connects here, and it bounds how many connections
        // are pending; a delay would only slow reconnect storms down.
        next_connection_delay_ms: 0,
        connections: connections.clone(),
    }
}

fn spawn_listener(
    mut server: Server<Gateway>,
    link_type: LinkType,
    name: String,
) -> Result<(), EmbeddedError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(EmbeddedError::Thread)?;
    thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            runtime.block_on(async move {
                // `start` only returns on failing to bind. Every client goes
                // through this listener: without it the service would run
                // and close every connection at once, so the process ends
                // loudly instead (a supervisor restarts it on a new port).
                if let Err(e) = server.start(link_type).await {
                    error!(listener = name, error = %e, "MQTT listener stopped; exiting");
                    eprintln!(
                        "shade serve: the internal MQTT listener could not start ({e}); exiting"
                    );
                    std::process::exit(1);
                }
            });
        })
        .map_err(EmbeddedError::Thread)?;
    Ok(())
}

/// Runs the front's accept loops on a runtime of their own (two worker
/// threads: TLS handshakes and copying must not starve each other).
fn spawn_front(
    listeners: Vec<(TcpListener, Transport)>,
    shared: Arc<FrontShared>,
) -> Result<(), EmbeddedError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("shade-front")
        .enable_all()
        .build()
        .map_err(EmbeddedError::Thread)?;
    thread::Builder::new()
        .name("shade-front".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for (listener, transport) in listeners {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            tasks.spawn(front::accept_loop(listener, transport, shared.clone()));
                        }
                        Err(e) => error!(error = %e, "cannot listen"),
                    }
                }
                while tasks.join_next().await.is_some() {}
            });
        })
        .map_err(EmbeddedError::Thread)?;
    Ok(())
}

/// Hands stamped requests from the router to the service until either side
/// goes away. Runs on a plain thread: both channels are blocking ones here.
fn receive_loop(mut link_rx: LinkRx, inbound: &mpsc::Sender<Inbound>) {
    loop {
        let notification = match link_rx.recv() {
            Ok(Some(notification)) => notification,
            Ok(None) => continue,
            Err(e) => {
                error!(error = %e, "the service link to the router closed");
                return;
            }
        };
        match notification {
            Notification::Forward(forward) => {
                let topic = String::from_utf8_lossy(&forward.publish.topic);
                let Some((client_id, topic)) = gateway::parse_inbound(&topic) else {
                    warn!(%topic, "ignoring a message on the service link that the gateway did not stamp");
                    continue;
                };
                let message = Inbound {
                    client_id,
                    topic: topic.to_owned(),
                    payload: forward.publish.payload.to_vec(),
                };
                // Blocks while the service lags: see the module docs.
                if inbound.blocking_send(message).is_err() {
                    info!("the service stopped receiving; closing its link");
                    return;
                }
            }
            // The router parks a link whose buffer filled until it says it is
            // ready again; without this the service stops receiving after
            // about 200 messages.
            Notification::Unschedule => {
                if let Err(e) = link_rx.ready() {
                    error!(error = %e, "the service link to the router closed");
                    return;
                }
            }
            Notification::Disconnect(..) => {
                error!("the router disconnected the service link");
                return;
            }
            // Acks of the link's own subscription.
            _ => {}
        }
    }
}

async fn send_loop(mut link_tx: LinkTx, mut outbound: mpsc::Receiver<Outbound>) {
    while let Some(message) = outbound.recv().await {
        let publish = Publish::new(message.topic.into_bytes(), message.payload, message.retain);
        if let Err(e) = link_tx.send(Packet::Publish(publish, None)).await {
            error!(error = %e, "the service link to the router closed");
            return;
        }
    }
}
