//! `shade serve`: wires the embedded broker, the service and the store.
//!
//! ```text
//!  clients --MQTT--> front --> rumqttd + gateway --Inbound--> dispatch --Request--> store thread
//!                         ^                                      (bounded)   | commit, then
//!                         +------------------- publisher <--Vec<Outbound>----+ replies
//! ```
//!
//! Shutdown (SIGINT, SIGTERM): stop taking requests, let the store thread
//! commit what it holds, publish those replies, then return. rumqttd has no
//! shutdown of its own; its threads end with the process.
//!
//! HTTP calls ([`crate::http`]) join the same dispatcher as the MQTT
//! requests; their answers come back through the publisher.
//!
//! SIGHUP reads the config users and the TLS files again ([`crate::serve::reload`]).
//!
//! One [`Metrics`] is made here and shared with everything that records
//! (the front, the dispatcher, the store thread, the publisher, HTTP);
//! `GET /metrics` reads it.

pub(crate) mod admission;

pub(crate) mod request;

pub(crate) mod backup;

pub(crate) mod dispatch;

pub(crate) mod writer;

pub(crate) mod reload;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::auth::credentials::Credentials;
use crate::auth::Auth;
use crate::config::Config;
use crate::front::tls::ServerTls;
use crate::front::Transport;
use crate::http::events::Events;
use crate::http::{Api, Call};
use crate::identity::Principals;
use crate::identity::SharedUsers;
use crate::metrics::{Metrics, Readings};
use crate::ops::devices;
use crate::router::{self, BrokerHandle, BrokerSettings, LogSize};
use crate::serve::backup::Backups;
use crate::serve::dispatch::Dispatcher;
use crate::serve::request::Queued;
use crate::serve::writer::{Engine, Published, Writer};
use crate::shadow::Service;
use crate::store::{Store, StoreError};
use shade_shared::ReplicaId;
use tokio_util::sync::CancellationToken;

/// Why `shade serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the MQTT broker: {0}")]
    Broker(#[from] router::EmbeddedError),
    #[error("cannot start the store thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::front::tls::TlsError),
    #[error("{0}")]
    Http(std::io::Error),
}

/// Broker settings from the config, with the device secrets the listeners
/// check logins against and the TLS settings loaded from `config.tls`.
pub(crate) fn broker_settings(
    config: &Config,
    devices: Credentials,
    users: SharedUsers,
    tls: Option<&std::sync::Arc<ServerTls>>,
) -> BrokerSettings {
    let defaults = BrokerSettings::default();
    let mut listeners: Vec<_> = std::iter::once(config.listen.tcp)
        .chain(config.listen.tcp_v5)
        .map(|addr| (addr, Transport::Tcp))
        .collect();
    listeners.extend(config.listen.websocket.map(|addr| (addr, Transport::Ws)));
    if let Some(tls) = tls {
        listeners.extend(
            config
                .listen
                .tls
                .map(|addr| (addr, Transport::Tls(tls.clone()))),
        );
        listeners.extend(
            config
                .listen
                .wss
                .map(|addr| (addr, Transport::Wss(tls.clone()))),
        );
    }
    let auth = Auth::new(
        config.auth.enabled,
        users,
        config.auth.grants.clone(),
        devices,
    );
    BrokerSettings {
        listeners,
        max_connections: config.broker.max_connections,
        max_pending_connections: config.rates.max_pending_connections,
        connect_timeout: config.rates.connect_timeout,
        // Room for the topic and MQTT 5 properties on top of the largest request.
        max_payload: config.limits.max_payload_bytes + 4096,
        auth,
        service_log: LogSize {
            segment_bytes: config.broker.segment_bytes,
            segments: config.broker.segment_count,
        },
        ..defaults
    }
}

/// File descriptors one client connection costs: its socket, and the
/// front's loopback hop to rumqttd (one socket at each end).
const FDS_PER_CONNECTION: u64 = 3;

/// Raises the soft open-file limit to the hard one (as servers do: the
/// soft default is often 1024) and warns when even that cannot hold
/// `max_connections` clients.
fn raise_open_file_limit(max_connections: usize) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            return;
        }
    };
    let needed = FDS_PER_CONNECTION * max_connections as u64 + 256;
    if limit < needed {
        tracing::warn!(
            open_files = limit,
            clients = (limit.saturating_sub(256)) / FDS_PER_CONNECTION,
            max_connections,
            "the open-file limit holds fewer clients than broker.max_connections (each costs {FDS_PER_CONNECTION} descriptors); raise it (ulimit -n, systemd LimitNOFILE)"
        );
    }
}

/// The node name a restore left in the data directory, which wins over
/// the configured one (see `crate::store::backup`).
fn node_of(config: &Config) -> Result<ReplicaId, ServeError> {
    let Some(name) = crate::store::backup::node_of(&config.data_dir)? else {
        return Ok(config.node.clone());
    };
    let node = ReplicaId::broker(&name).map_err(|e| StoreError::Corrupt {
        key: config
            .data_dir
            .join(crate::store::backup::NODE_FILE)
            .display()
            .to_string(),
        reason: e.to_string(),
    })?;
    if node != config.node {
        tracing::info!(%node, configured = %config.node,
            "writing as the node name of the restored data directory, not the configured one");
    }
    Ok(node)
}

/// Runs the service until `shutdown` resolves.
pub async fn serve(
    mut config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let store = Store::open(&config.data_dir)?;
    config.node = node_of(&config)?;
    let backups = Backups::new(store.snapshots(), &config.data_dir, config.node.as_str()).map_err(
        |source| StoreError::Io {
            path: config.data_dir.join("backups"),
            source,
        },
    )?;
    // Device secrets for the listener to verify; the store thread keeps
    // them in step with every committed device-add and device-remove.
    let credentials = devices::load_credentials(&store)?;
    raise_open_file_limit(config.broker.max_connections);
    if !config.auth.enabled && !credentials.is_empty() {
        tracing::warn!(
            devices = credentials.len(),
            "device secrets are stored but authentication is off (no [auth] in config): any client may connect"
        );
    }
    crate::ops::devices::warn_of_shared_names(&config.auth.users, &credentials);
    let tls = config.tls.as_ref().map(ServerTls::load).transpose()?;
    let users = SharedUsers::new(config.auth.users.clone());
    let metrics = Arc::new(Metrics::new());
    let settings = broker_settings(&config, credentials.clone(), users.clone(), tls.as_ref());
    let (broker, mut inbound) = router::start_counted(settings, metrics.clone())?;
    let http_listener = crate::http::bind(&config.http)
        .await
        .map_err(ServeError::Http)?;
    let http_tls = tls.clone().filter(|_| config.http.tls);
    tokio::spawn(crate::serve::reload::on_hangup(
        crate::serve::reload::Reloadable {
            started: config.clone(),
            users: users.clone(),
            credentials: credentials.clone(),
            tls,
        },
    ));
    let writer = Writer {
        store,
        service: Service {
            node: config.node.clone(),
            limits: config.limits,
            policies: config.policies,
            history_per_shadow: config.history_per_shadow,
            subscriptions: Some(broker.subscriptions()),
            presence: Some(broker.presence()),
        },
        principals: Principals {
            enabled: config.auth.enabled,
            users: users.clone(),
        },
        credentials: credentials.clone(),
    };
    let (req_tx, req_rx) = mpsc::channel::<Queued>(config.store.queue);
    let (out_tx, out_rx) = mpsc::channel::<Published>(64);
    let engine = Engine::start(
        writer,
        config.store.max_batch,
        req_rx,
        out_tx,
        metrics.clone(),
    )?;
    // Read when scraped. A weak sender: a strong one held by the metrics
    // would keep the queue open, and the store thread running, after
    // shutdown.
    let queue = req_tx.downgrade();
    let retained = broker.retained();
    let presence = broker.presence();
    metrics.read_at_scrape(
        Readings {
            queue_depth: Box::new(move || {
                queue.upgrade().map_or(0, |q| {
                    i64::try_from(q.max_capacity() - q.capacity()).unwrap_or(i64::MAX)
                })
            }),
            shadows: Box::new(move || i64::try_from(retained.len()).unwrap_or(i64::MAX)),
            things_connected: Box::new(move || {
                i64::try_from(presence.connected_things()).unwrap_or(i64::MAX)
            }),
        },
        config.store.queue,
    );
    let events = std::sync::Arc::new(Events::new(
        shade_client::now_ms(),
        config.http.events_buffer,
        broker.retained(),
    ));
    // The feed records changes only for an HTTP listener to stream.
    let feed = http_listener.is_some().then(|| events.clone());
    let publisher = tokio::spawn(publish_loop(broker.clone(), out_rx, feed, metrics.clone()));
    let presence = tokio::spawn(presence_loop(
        broker.presence(),
        req_tx.clone(),
        metrics.clone(),
    ));
    let (calls_tx, mut calls) = mpsc::channel::<Call>(1024);
    let http_shutdown = CancellationToken::new();
    let http_addr = match http_listener {
        Some(listener) => {
            let addr = listener.local_addr().map_err(ServeError::Http)?;
            let auth = Auth::new(
                config.auth.enabled,
                users.clone(),
                config.auth.grants.clone(),
                credentials.clone(),
            );
            let api = Api::new(
                calls_tx,
                auth,
                events,
                config.limits,
                &config.http,
                metrics.clone(),
            );
            tokio::spawn(crate::http::serve(
                listener,
                api,
                config.http,
                http_tls,
                http_shutdown.clone(),
            ));
            let scheme = if config.http.tls { "https" } else { "http" };
            format!("{scheme}://{addr}")
        }
        None => {
            drop(calls_tx);
            "off".to_owned()
        }
    };
    tracing::info!(
        listen = %config.listen.tcp,
        tcp_v5 = ?config.listen.tcp_v5,
        websocket = ?config.listen.websocket,
        tls = ?config.listen.tls,
        wss = ?config.listen.wss,
        auth = config.auth.enabled,
        data = %config.data_dir.display(),
        node = %config.node,
        devices = credentials.len(),
        http = %http_addr,
        "shade serve is ready"
    );

    let principals = Principals {
        enabled: config.auth.enabled,
        users: users.clone(),
    };
    let mut dispatcher = Dispatcher::new(
        req_tx,
        broker.clone(),
        config.rates,
        config.limits,
        principals,
        metrics,
        Some(Arc::new(backups)),
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            msg = inbound.recv() => match msg {
                Some(msg) => dispatcher.dispatch(msg).await,
                None => break,
            },
            Some(call) = calls.recv() => dispatcher.call(call).await,
        }
    }
    tracing::info!("shutting down: finishing the commits in flight");
    http_shutdown.cancel();
    drop(calls);
    drop(dispatcher);
    // Its sender would keep the store thread waiting for more.
    presence.abort();
    let _ = presence.await;
    let joined = tokio::task::spawn_blocking(move || engine.join()).await;
    if joined.is_err() {
        tracing::error!("the store thread could not be joined");
    }
    // The engine dropped its sender: the publisher drains and ends.
    if tokio::time::timeout(Duration::from_secs(10), publisher)
        .await
        .is_err()
    {
        tracing::warn!("gave up publishing the last replies after 10 s");
    }
    // The replies are now in rumqttd's hands, which has no flush: give its
    // router and connection threads a moment to write them to the sockets,
    // so the last committed requests also get their `accepted`.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tracing::info!("stopped");
    Ok(())
}

/// How long the presence changes of a burst of connects gather before
/// they go to the store thread together.
const PRESENCE_GATHER: Duration = Duration::from_millis(20);

/// Hands each batch of presence changes to the store thread (see
/// `crate::presence`), until aborted at shutdown.
async fn presence_loop(
    presence: Arc<crate::presence::Presence>,
    requests: mpsc::Sender<Queued>,
    metrics: Arc<Metrics>,
) {
    // The service's own requests are not held to a client's budget.
    let budget = crate::serve::admission::InFlight::new(usize::MAX);
    loop {
        presence.wait().await;
        tokio::time::sleep(PRESENCE_GATHER).await;
        let things = presence.take();
        for chunk in things.chunks(1024) {
            let Some(slot) = budget.acquire("presence") else {
                continue;
            };
            let queued = Queued {
                request: crate::serve::request::Request::Presence {
                    things: chunk.to_vec(),
                },
                _slot: slot,
                answer: None,
            };
            // Counted before the store can see it, so that a scrape never
            // shows a presence batch in the store's sizes but not here.
            metrics.presence_batch();
            if requests.send(queued).await.is_err() {
                return;
            }
        }
    }
}

/// Publishes each rendered batch, records its state changes in the HTTP
/// event feed, then hands the HTTP callers their answers.
async fn publish_loop(
    broker: BrokerHandle,
    mut out: mpsc::Receiver<Published>,
    events: Option<std::sync::Arc<Events>>,
    metrics: Arc<Metrics>,
) {
    while let Some(batch) = out.recv().await {
        for m in batch
            .messages
            .iter()
            .filter(|m| m.topic.ends_with("/sync/down"))
        {
            metrics.sync_down(m.payload.len());
        }
        if let Some(events) = &events {
            events.record(&batch.messages);
        }
        for (topic, e) in broker.send_batch(batch.messages).await {
            tracing::warn!(%topic, error = %e, "publish failed");
        }
        for (to, answer) in batch.answers {
            // A caller that went away no longer needs it.
            let _ = to.send(answer);
        }
    }
}
