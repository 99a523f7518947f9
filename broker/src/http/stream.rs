//! `GET /events?prefix=P`: Server-Sent Events, one per committed change of
//! a matching shadow's state (`data:` = the `shade/things/T/state`
//! document with `thing` and `shadow` added; a deleted shadow's is
//! `{"thing","shadow","deleted":true}`), after the current state of every
//! matching shadow, or, with `Last-Event-ID`, after the changes the client
//! missed when the feed still holds them ([`super::events`]).
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
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::api::{Api, Conn};
use super::error::ApiError;
use super::events::{keep_alive, sse_response, Backlog, Event, COMMENT};
use super::shadows::query;

pub(super) fn routes() -> Router<Api> {
    Router::new().route("/events", get(events))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    prefix: String,
}

async fn events(
    State(api): State<Api>,
    Extension(conn): Extension<Conn>,
    q: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(q)?;
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
    // A device's stream is its thing only, not every thing its name
    // starts (lamp-1 must not see lamp-10).
    let exact = matches!(caller.principal, crate::identity::Principal::Device { .. });
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let start = api.events.start(&prefix, last_id.as_deref());
    let backlog: Vec<Backlog> = start
        .backlog
        .into_iter()
        .filter(|b| wanted(b.thing(), &prefix, exact))
        .collect();
    let keep = move |e: &Event| wanted(&e.thing, &prefix, exact);
    tracing::debug!(peer = %conn.peer, backlog = backlog.len(), resumed = start.resumed, "event stream started");
    let (tx, rx) = mpsc::channel(api.events.capacity());
    tokio::spawn(forward(start.live, tx, keep, conn));
    let events = api.events.clone();
    // A snapshot's states all stand at one point of the feed: only its
    // last carries the id, so a stream cut off halfway through starts the
    // snapshot over rather than resuming past the states it never got.
    let last_current = backlog
        .iter()
        .rposition(|b| matches!(b, Backlog::Current { .. }));
    let backlog = stream::iter(backlog.into_iter().enumerate()).filter_map(move |(i, b)| {
        let with_id = Some(i) == last_current;
        let frame = b.into_frame(&events, with_id);
        async move { frame }
    });
    // Each live event's bytes were rendered once, for every stream; a
    // comment line keeps idle connections (and proxies) from timing out.
    let live = stream::unfold((rx, keep_alive()), |(mut rx, mut tick)| async move {
        tokio::select! {
            event = rx.recv() => event.map(|e| (e.frame.clone(), (rx, tick))),
            _ = tick.tick() => Some((COMMENT, (rx, tick))),
        }
    });
    Ok(sse_response(backlog.chain(live)))
}

/// Whether a stream of `prefix` (or exactly that thing) carries `thing`.
fn wanted(thing: &str, prefix: &str, exact: bool) -> bool {
    if exact {
        thing == prefix
    } else {
        thing.starts_with(prefix)
    }
}

/// Moves the live events a stream wants into its queue, until the stream
/// ends; closes the stream's connection when the queue is full or the
/// feed passed it by.
async fn forward(
    mut live: broadcast::Receiver<Arc<Event>>,
    queue: mpsc::Sender<Arc<Event>>,
    keep: impl Fn(&Event) -> bool + Send + 'static,
    conn: Conn,
) {
    loop {
        let event = tokio::select! {
            () = queue.closed() => return,
            () = conn.close.cancelled() => return,
            event = live.recv() => event,
        };
        match event {
            Ok(event) if keep(&event) => {
                if queue.try_send(event).is_err() {
                    tracing::warn!(peer = %conn.peer, "closing an event stream that fell behind (its reader is slower than the changes)");
                    conn.close.cancel();
                    return;
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(peer = %conn.peer, missed, "closing an event stream that fell behind the feed");
                conn.close.cancel();
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
