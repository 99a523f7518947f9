//! `GET /events?prefix=P&where=EXPR`: Server-Sent Events, one per
//! committed change of a matching shadow's state (`data:` = the
//! `shade/things/T/state` document with `thing` and `shadow` added; a
//! deleted shadow's is `{"thing","shadow","deleted":true}`), after the
//! current state of every matching shadow, or, with `Last-Event-ID`, after
//! the changes the client missed when the feed still holds them
//! ([`super::events`]).
//!
//! With `where=` (a fleet query, as `GET /things?where=`) a stream carries
//! the shadows whose state matches: a change that makes one match brings
//! its state, a change that makes it stop matching brings
//! `{"thing","shadow","unmatched":true}`, and changes of shadows that
//! match neither before nor after are not sent. So a table of the
//! matching shadows stays right from the events alone. Each change comes
//! with the state before it ([`Event::before`]), so judging it needs
//! nothing but the two documents, whatever the size of the fleet.
//!
//! Each stream has its own bounded queue, filled by a small task from the
//! feed. A stream that falls behind by a full queue (a reader slower than
//! the changes) is closed with a log line, connection and all: it never
//! holds up the service or the other streams. A browser's `EventSource`
//! then reconnects and resumes.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use shade_shared::query::Query as Where;
use shade_shared::topic::Topic;
use tokio::sync::{broadcast, mpsc};

use super::api::{Api, Conn};
use super::error::ApiError;
use super::events::{frame, keep_alive, sse_response, Backlog, Event, Events, COMMENT};
use super::shadows::query;
use crate::fleet;
use crate::metrics::Stream;

pub(super) fn routes() -> Router<Api> {
    Router::new().route("/events", get(events))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    prefix: String,
    #[serde(rename = "where")]
    filter: Option<String>,
}

async fn events(
    State(api): State<Api>,
    Extension(conn): Extension<Conn>,
    q: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let filter = fleet::parse_filter(q.filter.as_deref())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let caller = api.caller(&conn, &headers).await?;
    // Only what the caller may read: its own thing for a device, its
    // prefix for a user limited to one.
    let prefix = match &caller.principal {
        crate::identity::Principal::Device { thing } => {
            if !thing.starts_with(q.prefix.as_str()) {
                return Err(ApiError::forbidden());
            }
            thing.to_string()
        }
        crate::identity::Principal::User { prefix: own, .. } => {
            if q.prefix.starts_with(&**own) {
                q.prefix
            } else if own.starts_with(q.prefix.as_str()) {
                own.to_string()
            } else {
                return Err(ApiError::forbidden());
            }
        }
        crate::identity::Principal::Anonymous => q.prefix,
    };
    let pick = Arc::new(Pick {
        // A device's stream is its thing only, not every thing its name
        // starts (lamp-1 must not see lamp-10).
        exact: matches!(caller.principal, crate::identity::Principal::Device { .. }),
        prefix,
        filter,
        events: api.events.clone(),
    });
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let start = api.events.start(&pick.prefix, last_id.as_deref());
    let backlog: Vec<Backlog> = start
        .backlog
        .into_iter()
        .filter(|b| pick.keeps(b))
        .collect();
    tracing::debug!(peer = %conn.peer, backlog = backlog.len(), resumed = start.resumed, "event stream started");
    let (tx, rx) = mpsc::channel(api.events.capacity());
    let behind = api.metrics.streams().behind(Stream::Events);
    tokio::spawn(forward(start.live, tx, pick.clone(), conn, behind));
    // Counted as open for as long as the body lives.
    let open = api.metrics.streams().opened(Stream::Events);
    // A snapshot's states all stand at one point of the feed: only its
    // last carries the id, so a stream cut off halfway through starts the
    // snapshot over rather than resuming past the states it never got.
    let last_current = backlog
        .iter()
        .rposition(|b| matches!(b, Backlog::Current { .. }));
    let backlog = stream::iter(backlog.into_iter().enumerate()).filter_map(move |(i, b)| {
        let frame = match b {
            Backlog::Recent(e) => pick.frame(&e),
            current => current.into_frame(&pick.events, Some(i) == last_current),
        };
        async move { frame }
    });
    // Without `where=` each live event's bytes were rendered once, for
    // every stream; a comment line keeps idle connections (and proxies)
    // from timing out.
    let live = stream::unfold(
        (rx, keep_alive(), open),
        |(mut rx, mut tick, open)| async move {
            tokio::select! {
                frame = rx.recv() => frame.map(|f| (f, (rx, tick, open))),
                _ = tick.tick() => Some((COMMENT, (rx, tick, open))),
            }
        },
    );
    Ok(sse_response(backlog.chain(live)))
}

/// What one stream carries: the things of `prefix` (or exactly that
/// thing), and with a filter only the shadows whose state matches it.
struct Pick {
    prefix: String,
    exact: bool,
    filter: Option<Where>,
    events: Arc<Events>,
}

impl Pick {
    fn wanted(&self, thing: &str) -> bool {
        if self.exact {
            thing == self.prefix
        } else {
            thing.starts_with(self.prefix.as_str())
        }
    }

    /// Whether the state message `payload` of `id` matches the filter.
    fn matches(&self, filter: &Where, id: &shade_shared::ShadowId, payload: &[u8]) -> bool {
        !payload.is_empty()
            && fleet::doc_of_state(&Topic::state(id), payload)
                .is_some_and(|(_, doc)| filter.matches(&doc))
    }

    /// Whether a backlog entry may go out: a recent change is judged when
    /// it is sent ([`Pick::frame`]), a current state here.
    fn keeps(&self, b: &Backlog) -> bool {
        if !self.wanted(b.thing()) {
            return false;
        }
        match (b, &self.filter) {
            (Backlog::Current { id, payload, .. }, Some(filter)) => {
                self.matches(filter, id, payload)
            }
            _ => true,
        }
    }

    /// The bytes a change is sent as on this stream, or `None`: its state
    /// when it matches (or no filter is set), `unmatched` when it matched
    /// before the change and no longer does, and the deletion when a
    /// matching shadow was deleted.
    fn frame(&self, e: &Event) -> Option<Bytes> {
        if !self.wanted(&e.thing) {
            return None;
        }
        let Some(filter) = &self.filter else {
            return Some(e.frame.clone());
        };
        if self.matches(filter, &e.id, &e.after) {
            return Some(e.frame.clone());
        }
        if !self.matches(filter, &e.id, &e.before) {
            return None;
        }
        if e.after.is_empty() {
            return Some(e.frame.clone());
        }
        let data = serde_json::json!({
            "thing": e.id.thing.as_str(),
            "shadow": e.id.shadow.as_ref().map(|s| s.as_str()),
            "unmatched": true,
        });
        Some(frame(Some(&self.events.id_of(e.seq)), &data.to_string()))
    }
}

/// Moves the frames of the live events a stream picks into its queue,
/// until the stream ends; closes the stream's connection when the queue is full or the
/// feed passed it by.
async fn forward(
    mut live: broadcast::Receiver<Arc<Event>>,
    queue: mpsc::Sender<Bytes>,
    pick: Arc<Pick>,
    conn: Conn,
    behind: prometheus_client::metrics::counter::Counter,
) {
    loop {
        let event = tokio::select! {
            () = queue.closed() => return,
            () = conn.close.cancelled() => return,
            event = live.recv() => event,
        };
        match event {
            Ok(event) => {
                let Some(frame) = pick.frame(&event) else {
                    continue;
                };
                if queue.try_send(frame).is_err() {
                    tracing::warn!(peer = %conn.peer, "closing an event stream that fell behind (its reader is slower than the changes)");
                    behind.inc();
                    conn.close.cancel();
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(peer = %conn.peer, missed, "closing an event stream that fell behind the feed");
                behind.inc();
                conn.close.cancel();
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
