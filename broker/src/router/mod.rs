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

mod error;

mod retained;

pub(crate) mod gateway;

mod settings;

mod link;

pub use crate::subscriptions::Subscriptions;
pub use error::EmbeddedError;
pub(crate) use link::json_bytes;
pub use link::{BrokerHandle, Inbound, Outbound};
pub use retained::Retained;
pub use settings::{BrokerSettings, LogSize};

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::thread;

use rumqttd::local::LinkBuilder;
use rumqttd::{LinkType, Router, Server};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::front::{self, FrontShared, Transport};
use crate::metrics::Metrics;
use crate::presence::Presence;
use gateway::{Gateway, GatewayContext, SERVICE_CLIENT_ID, SERVICE_FILTER};
use settings::server_settings;

/// Starts the router, the listeners and the service link, each on its own
/// thread. Call once per process: nothing here can be stopped.
///
/// Listeners bind on their threads, so one may accept its first connection
/// a moment after this returns; clients retry anyway. The addresses are
/// checked here first so that a port in use is reported, not just logged.
pub fn start(
    settings: BrokerSettings,
) -> Result<(BrokerHandle, mpsc::Receiver<Inbound>), EmbeddedError> {
    start_counted(settings, Arc::default())
}

/// [`start`], with the front counting its connections in `metrics`.
pub(crate) fn start_counted(
    settings: BrokerSettings,
    metrics: Arc<Metrics>,
) -> Result<(BrokerHandle, mpsc::Receiver<Inbound>), EmbeddedError> {
    settings.validate()?;
    let mut bound = Vec::new();
    for (addr, transport) in &settings.listeners {
        let listener = listen(*addr).map_err(|source| EmbeddedError::Bind {
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

    let internal: Vec<Arc<AtomicU16>> = (0..INTERNAL_LISTENERS)
        .map(|_| Arc::new(AtomicU16::new(0)))
        .collect();
    let secret: Arc<str> = gateway::random_hex()
        .map_err(|e| EmbeddedError::Random(e.to_string()))?
        .into();
    let subscriptions = Arc::new(Subscriptions::new(settings.auth.grants.clone()));
    let retained = Arc::new(Retained::new());
    let salt = gateway::random_hex().map_err(|e| EmbeddedError::Random(e.to_string()))?;
    let presence = Arc::new(Presence::new(
        subscriptions.clone(),
        salt.chars().take(16).collect(),
        shade_client::now_ms(),
    ));
    let gateway = Gateway::new(Arc::new(GatewayContext {
        secret: secret.clone(),
        auth: settings.auth.clone(),
        subscriptions: subscriptions.clone(),
        retained: retained.clone(),
    }));
    for (i, port) in internal.iter().enumerate() {
        let (router_tx, gateway) = (router_tx.clone(), gateway.clone());
        let connections = settings.connection_settings();
        let listener = Internal {
            name: format!("shade-internal-{i}"),
            port: port.clone(),
            server: Box::new(move |name, addr| {
                Server::new(
                    server_settings(name, addr, &connections),
                    router_tx.clone(),
                    gateway.clone(),
                )
            }),
        };
        listener.spawn()?;
    }
    let shared = Arc::new(FrontShared {
        internal,
        secret,
        auth: settings.auth.clone(),
        connections: Arc::new(tokio::sync::Semaphore::new(settings.max_connections)),
        pending: Arc::new(tokio::sync::Semaphore::new(
            settings.max_pending_connections,
        )),
        dialing: Arc::new(tokio::sync::Semaphore::new(front::INTERNAL_IN_FLIGHT)),
        subscriptions: subscriptions.clone(),
        next_conn: std::sync::atomic::AtomicU64::new(1),
        connect_timeout: settings.connect_timeout,
        max_connect_bytes: settings.max_payload,
        metrics,
        presence: presence.clone(),
    });
    spawn_front(bound, shared)?;

    let (handle, inbound) = link::spawn(
        link_tx,
        link_rx,
        settings.inbound_capacity,
        settings.outbound_capacity,
        subscriptions,
        retained,
        presence,
    )?;

    info!(listeners = ?settings.listeners, auth = settings.auth.enabled, "embedded MQTT broker started");
    Ok((handle, inbound))
}

/// rumqttd's internal listeners, each on a thread of its own. One accepts
/// at most about 1,000 connections a second: rumqttd sleeps after every
/// accept (`next_connection_delay_ms`; a zero sleep still waits for the
/// next 1 ms timer tick), and serves all of its connections' sockets on
/// that same thread. The front spreads connections over these.
const INTERNAL_LISTENERS: usize = 4;

/// Connections the kernel holds for a listener before the front accepts
/// them (capped by `net.core.somaxconn`). The std default of 128 overflows
/// when a fleet reconnects at once: the kernel then drops SYNs and each
/// client waits out a 1 s retransmission, or more.
const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking listener on `addr` with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std does: a restarted broker can bind while old connections of
    // the previous process linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Attempts at binding an internal listener to a free port.
const BIND_ATTEMPTS: usize = 20;

/// One of rumqttd's internal listeners, on a loopback port only the front
/// dials. rumqttd binds it itself, so a port is picked free and released
/// first, and another process can take it in between (parallel test runs
/// do): the listener then tries another port, and publishes the one it
/// got in `port` (0 until then), which the front reads on every dial.
struct Internal {
    name: String,
    port: Arc<AtomicU16>,
    /// rumqttd's server for a listener name and address.
    server: Box<dyn Fn(String, SocketAddr) -> Server<Gateway> + Send>,
}

impl Internal {
    fn spawn(self) -> Result<(), EmbeddedError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(EmbeddedError::Thread)?;
        thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || runtime.block_on(self.run()))
            .map_err(EmbeddedError::Thread)?;
        Ok(())
    }

    async fn run(self) {
        let name = &self.name;
        for attempt in 1..=BIND_ATTEMPTS {
            let picked = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr());
            let addr = match picked {
                Ok(addr) => addr,
                Err(e) => {
                    warn!(listener = %name, error = %e, "cannot pick a loopback port");
                    continue;
                }
            };
            self.port.store(addr.port(), Ordering::Release);
            let mut server = (self.server)(name.clone(), addr);
            // `start` only returns on failing to bind.
            if let Err(e) = server.start(LinkType::Remote).await {
                warn!(listener = %name, %addr, attempt, error = %e, "internal listener could not bind; trying another port");
            }
        }
        // Every client goes through these listeners: without one the
        // service would run and close a share of connections at once, so
        // the process ends loudly instead.
        error!(listener = %name, "internal MQTT listener could not start; exiting");
        eprintln!("shade serve: the internal MQTT listener {name} could not start; exiting");
        std::process::exit(1);
    }
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
