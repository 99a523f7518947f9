//! The `shade_*` Prometheus series that `GET /metrics` serves
//! (`crate::http`; every series, its labels and example queries are in
//! docs/METRICS.md).
//!
//! [`Metrics`] is made once by `shade serve` and shared (`Arc`) with what
//! records: the front and the HTTP accept loop (connections), the
//! dispatcher (requests, its own 400s and 429s, sync messages in), the
//! store thread (commits, replies, conflicts), the publisher (sync
//! messages out) and the HTTP routes (requests by route and status).
//!
//! The hot path stays cheap: every label set that is known in advance
//! (transports, request kinds, reply codes) is resolved into its counter
//! when [`Metrics::new`] runs, so recording is one atomic add, with no
//! lock and no allocation. Only HTTP statuses, an open set, go through a
//! `Family` lookup per request. Values that already live elsewhere (the
//! store queue's depth, the number of shadows) are read when scraped,
//! not kept in step by every request.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use shade_shared::topic::Operation;

mod streams;

pub(crate) use streams::{OpenStream, Stream, Streams};

/// The content type of [`Metrics::encode`]'s text: prometheus-client
/// writes the OpenMetrics 1.0 text format (counters end in `_total`, the
/// text in `# EOF`), which Prometheus scrapes as such.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a client connection came: one of the front's four MQTT listeners,
/// or HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    Tcp,
    Tls,
    Ws,
    Wss,
    Http,
}

impl Link {
    const ALL: [Link; 5] = [Link::Tcp, Link::Tls, Link::Ws, Link::Wss, Link::Http];

    fn label(self) -> &'static str {
        match self {
            Link::Tcp => "tcp",
            Link::Tls => "tls",
            Link::Ws => "ws",
            Link::Wss => "wss",
            Link::Http => "http",
        }
    }
}

/// What a request asks: an AWS operation, a `sync/up`, an ops query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Get,
    Update,
    Delete,
    SyncUp,
    Ops,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Get,
        Kind::Update,
        Kind::Delete,
        Kind::SyncUp,
        Kind::Ops,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::Get => "get",
            Kind::Update => "update",
            Kind::Delete => "delete",
            Kind::SyncUp => "sync_up",
            Kind::Ops => "ops",
        }
    }
}

impl From<Operation> for Kind {
    fn from(op: Operation) -> Kind {
        match op {
            Operation::Get => Kind::Get,
            Operation::Update => Kind::Update,
            Operation::Delete => Kind::Delete,
        }
    }
}

/// The reply codes shade gives: 200 for an accepted request (or an
/// answered query), AWS's rejection codes, and 403 for an ops query
/// outside the caller's things. Each (kind, code) pair has its series
/// from the start, at 0, so a rate over it never starts from a gap.
pub(crate) const CODES: [u16; 9] = [200, 400, 401, 403, 404, 409, 413, 429, 500];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplyLabels {
    kind: &'static str,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    status: u16,
}

/// A value read when the metrics are scraped.
type Reading = Box<dyn Fn() -> i64 + Send + Sync>;

/// What `shade serve` reads at scrape time, set once it has them (the
/// store queue and the retained states exist after the metrics do).
pub(crate) struct Readings {
    /// Requests waiting in the store thread's queue.
    pub queue_depth: Reading,
    /// Shadows that exist (their retained states).
    pub shadows: Reading,
    /// Things with at least one connection (see `crate::presence`).
    pub things_connected: Reading,
}

impl fmt::Debug for Readings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Readings")
    }
}

/// Per transport: its open connections and their connects and disconnects.
#[derive(Debug, Clone, Default)]
struct LinkSeries {
    open: Gauge,
    connects: Counter,
    disconnects: Counter,
}

/// Every series, registered under the `shade_` prefix.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    links: [LinkSeries; 5],
    requests: [Counter; 5],
    /// By kind, then by the index of the code in [`CODES`].
    replies: [[Counter; CODES.len()]; 5],
    /// The family behind `replies`, for a code outside [`CODES`].
    reply_family: Family<ReplyLabels, Counter>,
    rate_limited: [Counter; 5],
    commit_seconds: Histogram,
    batch_size: Histogram,
    commit_failures: Counter,
    queue_depth: Gauge,
    queue_capacity: Gauge,
    shadows: Gauge,
    things_connected: Gauge,
    presence_batches: Counter,
    sync_in: Counter,
    sync_in_bytes: Counter,
    sync_out: Counter,
    sync_out_bytes: Counter,
    conflicts: Counter,
    http: Family<HttpLabels, Counter>,
    streams: Streams,
    readings: OnceLock<Readings>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// The families behind the per-kind counter arrays, registered in
/// [`Metrics::new`] and resolved there into one counter per label set.
fn by_kind(family: &Family<KindLabel, Counter>) -> [Counter; 5] {
    Kind::ALL.map(|k| family.get_or_create_owned(&KindLabel { kind: k.label() }))
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("shade");
        let open = Family::<TransportLabel, Gauge>::default();
        let connects = Family::<TransportLabel, Counter>::default();
        let disconnects = Family::<TransportLabel, Counter>::default();
        let links = Link::ALL.map(|l| {
            let label = TransportLabel {
                transport: l.label(),
            };
            LinkSeries {
                open: open.get_or_create_owned(&label),
                connects: connects.get_or_create_owned(&label),
                disconnects: disconnects.get_or_create_owned(&label),
            }
        });
        registry.register(
            "connections_open",
            "Client connections open now, by transport",
            open,
        );
        registry.register(
            "connects",
            "Client connections established (MQTT: CONNACK sent; HTTP: accepted), by transport",
            connects,
        );
        registry.register(
            "disconnects",
            "Established client connections that ended, by transport",
            disconnects,
        );

        let requests = Family::<KindLabel, Counter>::default();
        let rate_limited = Family::<KindLabel, Counter>::default();
        let reply_family = Family::<ReplyLabels, Counter>::default();
        let replies = Kind::ALL.map(|k| {
            CODES.map(|code| {
                reply_family.get_or_create_owned(&ReplyLabels {
                    kind: k.label(),
                    code,
                })
            })
        });
        let (requests_by_kind, limited_by_kind) = (by_kind(&requests), by_kind(&rate_limited));
        registry.register(
            "requests",
            "Requests received (MQTT and HTTP), by kind",
            requests,
        );
        registry.register(
            "replies",
            "Replies produced, by request kind and code (200 accepted, else the rejection's code)",
            reply_family.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a rate or in-flight limit (answered 429, or a sync/up dropped), by kind",
            rate_limited,
        );

        // 100 µs to 1 s in a 1-2.5-5 series: a commit is an fsync, from
        // tens of microseconds (tmpfs) to hundreds of milliseconds (a
        // busy disk).
        let commit_seconds = Histogram::new([
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        ]);
        registry.register_with_unit(
            "store_commit",
            "Time the store thread spent on one batch: its requests and the commit (fsync)",
            Unit::Seconds,
            commit_seconds.clone(),
        );
        // 1 to 1024 requests: the default `store.max_batch` is 1024.
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "store_batch_size",
            "Requests sharing one write transaction",
            batch_size.clone(),
        );
        let commit_failures = Counter::default();
        registry.register(
            "store_commit_failures",
            "Write transactions that failed to commit (their requests answered 500)",
            commit_failures.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "store_queue_depth",
            "Requests waiting in the store thread's queue",
            queue_depth.clone(),
        );
        let queue_capacity = Gauge::default();
        registry.register(
            "store_queue_capacity",
            "Size of the store thread's queue (store.queue); full, the service stops reading requests",
            queue_capacity.clone(),
        );
        let shadows = Gauge::default();
        registry.register("shadows", "Shadows that exist", shadows.clone());
        let things_connected = Gauge::default();
        registry.register(
            "things_connected",
            "Things with at least one connection (a device, or a client id that is a thing's name)",
            things_connected.clone(),
        );
        let presence_batches = Counter::default();
        registry.register(
            "presence_batches",
            "Batches of connects and disconnects handed to the store thread to record presence",
            presence_batches.clone(),
        );

        let [sync_in, sync_in_bytes, sync_out, sync_out_bytes, conflicts] =
            std::array::from_fn(|_| Counter::default());
        registry.register(
            "sync_up_messages",
            "sync/up messages received from agents",
            sync_in.clone(),
        );
        registry.register_with_unit(
            "sync_up",
            "Payload bytes of the sync/up messages received",
            Unit::Bytes,
            sync_in_bytes.clone(),
        );
        registry.register(
            "sync_down_messages",
            "sync/down messages published to agents",
            sync_out.clone(),
        );
        registry.register_with_unit(
            "sync_down",
            "Payload bytes of the sync/down messages published",
            Unit::Bytes,
            sync_out_bytes.clone(),
        );
        registry.register(
            "conflicts",
            "Conflict records that merges of agents' changes added (concurrent writes to one key)",
            conflicts.clone(),
        );
        let http = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route class and status",
            http.clone(),
        );
        let streams = Streams::register(&mut registry);
        Metrics {
            registry,
            links,
            requests: requests_by_kind,
            replies,
            reply_family,
            rate_limited: limited_by_kind,
            commit_seconds,
            batch_size,
            commit_failures,
            queue_depth,
            queue_capacity,
            shadows,
            things_connected,
            presence_batches,
            sync_in,
            sync_in_bytes,
            sync_out,
            sync_out_bytes,
            conflicts,
            http,
            streams,
            readings: OnceLock::new(),
        }
    }

    /// Sets what is read at scrape time, and the store queue's size. The
    /// first call wins: `shade serve` makes one.
    pub(crate) fn read_at_scrape(&self, readings: Readings, queue_capacity: usize) {
        self.queue_capacity
            .set(i64::try_from(queue_capacity).unwrap_or(i64::MAX));
        let _ = self.readings.set(readings);
    }

    /// Counts an established connection; the guard counts its end.
    pub(crate) fn connected(&self, link: Link) -> Connected {
        let series = &self.links[link as usize];
        series.connects.inc();
        series.open.inc();
        Connected {
            open: series.open.clone(),
            disconnects: series.disconnects.clone(),
        }
    }

    pub(crate) fn request(&self, kind: Kind) {
        self.requests[kind as usize].inc();
    }

    /// A reply of `code` to a request of `kind`.
    pub(crate) fn reply(&self, kind: Kind, code: u16) {
        match CODES.iter().position(|&c| c == code) {
            Some(i) => {
                self.replies[kind as usize][i].inc();
            }
            None => {
                self.reply_family
                    .get_or_create(&ReplyLabels {
                        kind: kind.label(),
                        code,
                    })
                    .inc();
            }
        }
    }

    pub(crate) fn rate_limited(&self, kind: Kind) {
        self.rate_limited[kind as usize].inc();
    }

    /// One batch of `requests` through the store thread in `took`.
    pub(crate) fn commit(&self, took: Duration, requests: usize, failed: bool) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.batch_size.observe(requests as f64);
        if failed {
            self.commit_failures.inc();
        }
    }

    /// One batch of presence changes sent to the store thread: a request
    /// of the service's own, counted in the store's batch sizes.
    pub(crate) fn presence_batch(&self) {
        self.presence_batches.inc();
    }

    pub(crate) fn sync_up(&self, bytes: usize) {
        self.sync_in.inc();
        self.sync_in_bytes.inc_by(bytes as u64);
    }

    pub(crate) fn sync_down(&self, bytes: usize) {
        self.sync_out.inc();
        self.sync_out_bytes.inc_by(bytes as u64);
    }

    pub(crate) fn conflicts(&self, added: u64) {
        if added > 0 {
            self.conflicts.inc_by(added);
        }
    }

    /// An HTTP request on a route of class `route`, answered `status`.
    pub(crate) fn http(&self, route: &'static str, status: u16) {
        self.http.get_or_create(&HttpLabels { route, status }).inc();
    }

    /// The HTTP streams' series.
    pub(crate) fn streams(&self) -> &Streams {
        &self.streams
    }

    /// Every series in the text format of [`CONTENT_TYPE`], after reading
    /// the values that are read at scrape time.
    pub(crate) fn encode(&self) -> Result<String, fmt::Error> {
        if let Some(r) = self.readings.get() {
            self.queue_depth.set((r.queue_depth)());
            self.shadows.set((r.shadows)());
            self.things_connected.set((r.things_connected)());
        }
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// An open connection, counted by [`Metrics::connected`]: dropping it
/// counts the disconnect, however the connection ended.
#[derive(Debug)]
pub(crate) struct Connected {
    open: Gauge,
    disconnects: Counter,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.open.dec();
        self.disconnects.inc();
    }
}

#[cfg(test)]
mod tests;
