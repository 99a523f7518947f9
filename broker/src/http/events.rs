//! The change feed behind `GET /events`: every state message the service
//! publishes (`shade/things/T/state`, one per committed change of a
//! shadow) becomes an [`Event`], numbered in publish order.
//!
//! The publisher records each batch here before it goes out
//! ([`Events::record`]), so an HTTP caller that got its answer finds its
//! change in the feed. Recent events stay in a ring of
//! `http.events_buffer`, from which a stream that reconnects with
//! `Last-Event-ID` resumes; a stream that asks for more than the ring
//! holds (or comes from before a restart: ids carry the start time) starts
//! over from the current state of every shadow. Live events reach each
//! stream through a broadcast channel of the same size: memory is shared,
//! and bounded whatever the streams do.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use shade_shared::topic::Topic;
use shade_shared::ShadowId;
use tokio::sync::broadcast;

use crate::router::{Outbound, Retained};

/// One change of a shadow's state.
#[derive(Debug)]
pub(crate) struct Event {
    /// Position in the feed.
    pub seq: u64,
    pub thing: String,
    /// The shadow, and its state message before and after the change
    /// (empty: it did not exist): what a live count needs to move its
    /// tally without looking at the rest of the fleet.
    pub id: ShadowId,
    pub before: bytes::Bytes,
    pub after: bytes::Bytes,
    /// `id: ..\ndata: ..\n\n`, rendered once for every stream. The data
    /// is the state document with `thing` and `shadow` first, or
    /// `{"thing","shadow","deleted":true}`.
    pub frame: bytes::Bytes,
}

/// How often an idle stream gets a comment line, so idle connections
/// (and proxies) do not time out.
pub(crate) const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// The keep-alive timer of a stream: first tick one period from now.
pub(crate) fn keep_alive() -> tokio::time::Interval {
    tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE)
}

/// The comment line a keep-alive tick sends.
pub(crate) const COMMENT: bytes::Bytes = bytes::Bytes::from_static(b":\n\n");

/// A Server-Sent Events response of `body`'s frames.
pub(crate) fn sse_response<S>(body: S) -> axum::response::Response
where
    S: futures_util::Stream<Item = bytes::Bytes> + Send + 'static,
{
    use axum::http::header;
    use axum::response::IntoResponse;
    use futures_util::StreamExt;
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(body.map(Ok::<_, std::convert::Infallible>)),
    )
        .into_response()
}

/// An event's bytes on the wire; `id` left out when `None`.
pub(crate) fn frame(id: Option<&str>, data: &str) -> bytes::Bytes {
    // The data is compact JSON: one line.
    match id {
        Some(id) => format!("id: {id}\ndata: {data}\n\n").into(),
        None => format!("data: {data}\n\n").into(),
    }
}

/// The feed.
#[derive(Debug)]
pub(crate) struct Events {
    /// When this process started (ms): the first part of every event id.
    epoch: u64,
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<Event>>,
    /// The retained states, for a stream's first snapshot.
    retained: Arc<Retained>,
    capacity: usize,
}

#[derive(Debug)]
struct Ring {
    /// The next event's seq; the first is 1, so "after 0" is everything.
    next: u64,
    recent: VecDeque<Arc<Event>>,
}

impl Default for Ring {
    fn default() -> Ring {
        Ring {
            next: 1,
            recent: VecDeque::new(),
        }
    }
}

/// One event of a stream's backlog.
#[derive(Debug)]
pub(crate) enum Backlog {
    /// A recent change, from the ring.
    Recent(Arc<Event>),
    /// A shadow's current state, rendered only when the stream gets to it:
    /// a snapshot of a large fleet holds the retained payloads (shared),
    /// not a copy of each.
    Current {
        seq: u64,
        id: ShadowId,
        payload: bytes::Bytes,
    },
}

impl Backlog {
    pub(crate) fn thing(&self) -> &str {
        match self {
            Backlog::Recent(e) => &e.thing,
            Backlog::Current { id, .. } => id.thing.as_str(),
        }
    }

    /// The event's bytes, with its id when `id` (a snapshot's states
    /// carry one only on the last); `None` for a state that is not a JSON
    /// object.
    pub(crate) fn into_frame(self, events: &Events, id: bool) -> Option<bytes::Bytes> {
        match self {
            Backlog::Recent(e) => Some(e.frame.clone()),
            Backlog::Current {
                seq,
                id: shadow,
                payload,
            } => {
                let data = event_data(&shadow, &payload)?;
                Some(frame(id.then(|| events.id_of(seq)).as_deref(), &data))
            }
        }
    }
}

/// What a new stream starts with.
#[derive(Debug)]
pub(crate) struct Start {
    /// Sent first, in order.
    pub backlog: Vec<Backlog>,
    /// Then every later event.
    pub live: broadcast::Receiver<Arc<Event>>,
    /// Whether the backlog resumes from the client's last event (else it
    /// is a snapshot of every matching shadow).
    pub resumed: bool,
}

/// `{"thing":..,"shadow":..,` spliced before the rest of a state
/// document's object: no parse, one copy.
fn event_data(id: &ShadowId, payload: &[u8]) -> Option<String> {
    let mut head = serde_json::Map::new();
    head.insert("thing".into(), id.thing.as_str().into());
    head.insert(
        "shadow".into(),
        id.shadow
            .as_ref()
            .map_or(serde_json::Value::Null, |s| s.as_str().into()),
    );
    let head = serde_json::Value::Object(head).to_string();
    let head = head.strip_suffix('}')?;
    if payload.is_empty() {
        return Some(format!("{head},\"deleted\":true}}"));
    }
    let body = std::str::from_utf8(payload).ok()?;
    let rest = body.trim_start().strip_prefix('{')?;
    if rest.trim_start().starts_with('}') {
        return Some(format!("{head}{rest}"));
    }
    Some(format!("{head},{rest}"))
}

impl Events {
    pub(crate) fn new(epoch: u64, capacity: usize, retained: Arc<Retained>) -> Events {
        let capacity = capacity.max(1);
        let (live, _) = broadcast::channel(capacity);
        Events {
            epoch,
            ring: Mutex::new(Ring::default()),
            live,
            retained,
            capacity,
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the state messages of a batch the service is about to
    /// publish.
    pub(crate) fn record(&self, batch: &[Outbound]) {
        let mut ring = None;
        // A batch can change one shadow twice: its second change starts
        // from its first, not from what is still retained.
        let mut changed: std::collections::HashMap<&str, bytes::Bytes> = Default::default();
        for m in batch {
            if !(m.retain && m.topic.starts_with("shade/things/") && m.topic.ends_with("/state")) {
                continue;
            }
            let Ok(Topic::State { id }) = Topic::parse(&m.topic) else {
                continue;
            };
            let Some(data) = event_data(&id, &m.payload) else {
                tracing::warn!(topic = %m.topic, "a state message that is not a JSON object; not in the event feed");
                continue;
            };
            let after = bytes::Bytes::copy_from_slice(&m.payload);
            let before = changed
                .insert(&m.topic, after.clone())
                .or_else(|| self.retained.get(&m.topic))
                .unwrap_or_default();
            let ring = ring.get_or_insert_with(|| self.ring());
            let event = Arc::new(Event {
                seq: ring.next,
                thing: id.thing.as_str().to_owned(),
                id,
                before,
                after,
                frame: frame(Some(&self.id_of(ring.next)), &data),
            });
            ring.next += 1;
            if ring.recent.len() == self.capacity {
                ring.recent.pop_front();
            }
            ring.recent.push_back(event.clone());
            // No receivers is fine: nobody is streaming.
            let _ = self.live.send(event);
        }
    }

    /// A subscription to the live events, and the seq the next one will
    /// have.
    pub(crate) fn subscribe(&self) -> (broadcast::Receiver<Arc<Event>>, u64) {
        let ring = self.ring();
        (self.live.subscribe(), ring.next)
    }

    /// The seq the next event will have.
    pub(crate) fn next_seq(&self) -> u64 {
        self.ring().next
    }

    /// The retained states, for a live count's first tally.
    pub(crate) fn retained(&self) -> &Retained {
        &self.retained
    }

    /// How many events the ring and each stream's queue hold.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The id of an event: `<epoch>-<seq>`.
    pub(crate) fn id_of(&self, seq: u64) -> String {
        format!("{}-{seq}", self.epoch)
    }

    /// Starts a stream of the things whose names start with `prefix`,
    /// after the event `last_id` when the ring still holds what followed
    /// it.
    pub(crate) fn start(&self, prefix: &str, last_id: Option<&str>) -> Start {
        let ring = self.ring();
        // Subscribed under the ring's lock: nothing falls between the
        // backlog and the live events.
        let live = self.live.subscribe();
        let resume_after = last_id
            .and_then(|id| id.split_once('-'))
            .filter(|(epoch, _)| epoch.parse() == Ok(self.epoch))
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
            .filter(|&seq| seq < ring.next)
            .filter(|&seq| ring.recent.front().is_none_or(|first| first.seq <= seq + 1));
        if let Some(after) = resume_after {
            let backlog = ring
                .recent
                .iter()
                .filter(|e| e.seq > after && e.thing.starts_with(prefix))
                .map(|e| Backlog::Recent(e.clone()))
                .collect();
            return Start {
                backlog,
                live,
                resumed: true,
            };
        }
        // A snapshot: each matching shadow's current state, with the id
        // of the last event before it (so a resume from it replays what
        // followed).
        let at = ring.next.saturating_sub(1);
        drop(ring);
        let mut backlog = Vec::new();
        self.retained
            .with_prefix(&format!("shade/things/{prefix}"), |topic, payload| {
                if let Ok(Topic::State { id }) = Topic::parse(topic) {
                    backlog.push(Backlog::Current {
                        seq: at,
                        id,
                        payload: payload.clone(),
                    });
                }
            });
        Start {
            backlog,
            live,
            resumed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shade_shared::ThingName;

    fn state(thing: &str, version: u64) -> Outbound {
        Outbound {
            topic: format!("shade/things/{thing}/state"),
            payload: format!("{{\"state\":{{}},\"version\":{version}}}").into_bytes(),
            retain: true,
        }
    }

    #[test]
    fn event_data_puts_the_thing_and_shadow_before_the_state_document() {
        let id = ShadowId::classic(ThingName::new("lamp").expect("name"));
        let data = event_data(&id, br#"{"state":{"desired":{"on":true}},"version":3}"#);
        let v: serde_json::Value = serde_json::from_str(&data.expect("data")).expect("json");
        assert_eq!(v["thing"], "lamp");
        assert_eq!(v["shadow"], serde_json::Value::Null);
        assert_eq!(v["version"], 3);
        assert_eq!(v["state"]["desired"]["on"], true);
        let deleted: serde_json::Value =
            serde_json::from_str(&event_data(&id, b"").expect("data")).expect("json");
        assert_eq!(deleted["deleted"], true);
        assert!(event_data(&id, b"[1]").is_none());
    }

    #[test]
    fn a_stream_resumes_from_the_ring_and_starts_over_when_it_fell_out() {
        let retained = Arc::new(Retained::new());
        retained.set(
            "shade/things/a1/state",
            bytes::Bytes::from_static(b"{\"version\":9}"),
        );
        let events = Events::new(7, 3, retained);
        let batch: Vec<Outbound> = (1..=5).map(|v| state("a1", v)).collect();
        events.record(&batch);
        // Seq 1..=5 were recorded; the ring holds 3, 4, 5.
        let resumed = events.start("a", Some("7-3"));
        assert!(resumed.resumed);
        assert_eq!(
            resumed
                .backlog
                .iter()
                .filter_map(|b| match b {
                    Backlog::Recent(e) => Some(e.seq),
                    Backlog::Current { .. } => None,
                })
                .collect::<Vec<_>>(),
            vec![4, 5]
        );
        let all = events.start("a", Some("7-2"));
        assert_eq!(all.backlog.len(), 3);
        // Seq 2 is gone: a snapshot.
        let over = events.start("a", Some("7-1"));
        assert!(!over.resumed);
        let over: Vec<_> = over
            .backlog
            .into_iter()
            .filter_map(|b| b.into_frame(&events, true))
            .collect();
        assert_eq!(over.len(), 1);
        let text = String::from_utf8_lossy(&over[0]);
        assert!(text.starts_with("id: 7-5\ndata: {"), "{text}");
        assert!(text.contains("\"version\":9"), "{text}");
        // Another process's id, or another prefix.
        assert!(!events.start("a", Some("8-3")).resumed);
        assert!(events.start("b", Some("7-3")).backlog.is_empty());
        // A snapshot before any change resumes from the first.
        let fresh = Events::new(7, 3, Arc::new(Retained::new()));
        let snapshot = fresh.start("", None);
        assert!(snapshot.backlog.is_empty());
        fresh.record(&[state("a1", 1)]);
        assert_eq!(fresh.start("", Some(&fresh.id_of(0))).backlog.len(), 1);
    }
}
