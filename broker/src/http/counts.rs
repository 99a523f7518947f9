//! `GET /count/stream?where=&by=&stats=&prefix=`: a live count, as
//! Server-Sent Events. The first event is the count over the fleet (as
//! `GET /count`); then a new one each time a change moves it.
//!
//! Each change comes from the event feed with the shadow's state before
//! and after it, so the tally moves by removing the old document and
//! adding the new one: the cost per change does not depend on the size
//! of the fleet, which is scanned once, when the stream starts.
//!
//! The first scan runs while changes go on. A change recorded before the
//! scan ended may already be in it; the scan notes a fingerprint of each
//! shadow's state (not its version: a thing's presence changes the state
//! and keeps the version), and such a change is applied only when the
//! scan saw the state it starts from. A stream that falls behind the feed (its reader is slow)
//! misses changes, so it scans once more and goes on.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use futures_util::stream;
use serde_json::Value;
use shade_shared::query::Tally;
use tokio::sync::broadcast;

use super::api::{Api, Conn};
use super::error::ApiError;
use super::events::{keep_alive, sse_response, Event, Events, COMMENT};
use super::fleet::CountQuery;
use super::shadows::query;
use crate::fleet;
use crate::metrics::{OpenStream, Stream};
use prometheus_client::metrics::counter::Counter;

pub(super) fn routes() -> Router<Api> {
    Router::new().route("/count/stream", get(count_stream))
}

async fn count_stream(
    State(api): State<Api>,
    Extension(conn): Extension<Conn>,
    q: Result<Query<CountQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let count = fleet::Count::parse(q.filter.as_deref(), q.by.as_deref(), q.stats.as_deref())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let caller = api.caller(&conn, &headers).await?;
    // The reach of `GET /count`: a user's prefix narrows it; a device
    // counts nothing.
    let mut asked = crate::ops::Query::Count {
        client_token: String::new(),
        prefix: q.prefix,
        filter: None,
        by: None,
        stats: None,
    };
    if !crate::ops::authorize(&caller.principal, &mut asked) {
        return Err(ApiError::forbidden());
    }
    let crate::ops::Query::Count { prefix, .. } = asked else {
        return Err(ApiError::internal("authorize changed the query's kind"));
    };
    let streams = api.metrics.streams();
    let behind = streams.behind(Stream::Count);
    let open = streams.opened(Stream::Count);
    let live = Live::start(api.events.clone(), count, prefix, behind).await;
    Ok(sse_response(body(live, keep_alive(), conn, open)))
}

/// A live tally.
struct Live {
    events: Arc<Events>,
    count: fleet::Count,
    prefix: String,
    tally: Tally,
    rx: broadcast::Receiver<Arc<Event>>,
    /// Until the feed passes `scan_end`: a fingerprint of each shadow's
    /// state as the scan saw it (`None`: absent), by topic.
    seen: HashMap<String, Option<u64>>,
    scan_end: u64,
    last_sent: Value,
    /// The feed passed this stream by: scan again before going on (kept
    /// across a wait that was cut short).
    stale: bool,
    /// Counts each time that happens.
    behind: Counter,
}

/// A hash of a retained state's bytes; `None` for none (an empty payload).
fn fingerprint(payload: &[u8]) -> Option<u64> {
    use std::hash::{BuildHasher, BuildHasherDefault};
    (!payload.is_empty()).then(|| {
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(payload)
    })
}

impl Live {
    async fn start(
        events: Arc<Events>,
        count: fleet::Count,
        prefix: String,
        behind: Counter,
    ) -> Live {
        let (rx, _) = events.subscribe();
        let mut live = Live {
            tally: count.tally(),
            events,
            count,
            prefix,
            rx,
            seen: HashMap::new(),
            scan_end: 0,
            last_sent: Value::Null,
            stale: false,
            behind,
        };
        live.scan().await;
        live
    }

    /// Tallies every retained state from scratch, on the blocking pool.
    async fn scan(&mut self) {
        let events = self.events.clone();
        let prefix = self.prefix.clone();
        let mut tally = self.count.tally();
        let scanned = tokio::task::spawn_blocking(move || {
            let mut seen = HashMap::new();
            events
                .retained()
                .with_prefix(&format!("shade/things/{prefix}"), |topic, payload| {
                    if let Some((_, doc)) = fleet::doc_of_state(topic, payload) {
                        seen.insert(topic.to_owned(), fingerprint(payload));
                        tally.add(&doc);
                    }
                });
            (tally, seen, events.next_seq())
        })
        .await;
        if let Ok((tally, seen, end)) = scanned {
            self.tally = tally;
            self.seen = seen;
            self.scan_end = end;
        }
    }

    /// The current result as an event's bytes.
    fn frame(&self) -> Bytes {
        super::events::frame(None, &self.tally.result().to_string())
    }

    /// Moves the tally by one change of the feed.
    fn apply(&mut self, event: &Event) {
        if !event.thing.starts_with(self.prefix.as_str()) {
            return;
        }
        let topic = shade_shared::topic::Topic::state(&event.id);
        if event.seq < self.scan_end {
            // The scan may already hold this change.
            let seen = self.seen.get(&topic).copied().flatten();
            let after = fingerprint(&event.after);
            if seen == after || seen != fingerprint(&event.before) {
                return;
            }
            self.seen.insert(topic.clone(), after);
        } else if !self.seen.is_empty() {
            self.seen = HashMap::new();
        }
        if let Some((_, doc)) = fleet::doc_of_state(&topic, &event.before) {
            self.tally.remove(&doc);
        }
        if let Some((_, doc)) = fleet::doc_of_state(&topic, &event.after) {
            self.tally.add(&doc);
        }
    }

    /// Waits for the next change that moves the result (taking in every
    /// change already waiting), and returns the new result's bytes.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.stale {
                self.scan().await;
                self.stale = false;
                if let Some(frame) = self.changed() {
                    return Some(frame);
                }
            }
            let first = self.rx.recv().await;
            let mut lagged = false;
            match first {
                Ok(event) => self.apply(&event),
                Err(broadcast::error::RecvError::Lagged(_)) => lagged = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
            loop {
                match self.rx.try_recv() {
                    Ok(event) => self.apply(&event),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
                    Err(_) => break,
                }
            }
            if lagged {
                tracing::info!(prefix = %self.prefix, "a live count fell behind the feed; counting again");
                self.behind.inc();
                self.rx = self.rx.resubscribe();
                self.stale = true;
                continue;
            }
            if let Some(frame) = self.changed() {
                return Some(frame);
            }
        }
    }

    /// The result's bytes if it differs from the last one sent.
    fn changed(&mut self) -> Option<Bytes> {
        let result = self.tally.result();
        if result == self.last_sent {
            return None;
        }
        self.last_sent = result;
        Some(self.frame())
    }
}

/// The stream's body: the first count, then each new one, with comment
/// lines while nothing changes, until the connection closes.
fn body(
    mut live: Live,
    tick: tokio::time::Interval,
    conn: Conn,
    open: OpenStream,
) -> impl futures_util::Stream<Item = Bytes> + Send {
    use futures_util::StreamExt;
    live.last_sent = live.tally.result();
    let first = live.frame();
    // `open` lives in the state: the stream counts as open until the
    // body is dropped.
    let rest = stream::unfold(
        (live, tick, conn, open),
        |(mut live, mut tick, conn, open)| async move {
            tokio::select! {
                () = conn.close.cancelled() => None,
                next = live.next() => next.map(|b| (b, (live, tick, conn, open))),
                _ = tick.tick() => Some((COMMENT, (live, tick, conn, open))),
            }
        },
    );
    stream::once(async move { first }).chain(rest)
}
