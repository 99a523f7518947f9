//! Fleet queries: which shadows match an expression (`shade list
//! --where`, `GET /things?where=`), how many, per value and with the
//! statistics of a number (`shade count`, `GET /count`), and live counts
//! (`GET /count/stream`).
//!
//! A shadow is judged as one JSON document, the same online and offline:
//! `{"thing","shadow","version","connected","lastSeen","desired","reported","delta"}`
//! ([`doc_of_get`], from its `get/accepted` document). Online, queries run
//! over the retained state of every shadow, which the broker holds in
//! memory anyway ([`Retained`]): no store transaction, so a query of a
//! large fleet never holds up the store thread. Offline (`--data`), over a
//! stopped broker's store, rendered the same way.

use serde_json::{json, Map, Value};
use shade_shared::aws;
use shade_shared::query::{FieldPath, Query, Tally};
use shade_shared::topic::Topic;
use shade_shared::{Policies, Shadow, ShadowId};

use crate::router::Retained;
use crate::shadow::stamp;
use crate::store::{PresenceRecord, ShadowSource, StoreError};

/// A count: which shadows, grouped by what, statistics of what.
#[derive(Debug, Clone)]
pub(crate) struct Count {
    pub filter: Option<Query>,
    pub by: Option<FieldPath>,
    pub stats: Option<FieldPath>,
}

/// Why a query's text was refused, for a 400 that points at the mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {error}")]
pub(crate) struct BadQuery {
    /// `where`, `by` or `stats`.
    pub what: &'static str,
    pub error: String,
}

impl Count {
    /// Parses the three parts; an empty or absent one is left out.
    pub(crate) fn parse(
        filter: Option<&str>,
        by: Option<&str>,
        stats: Option<&str>,
    ) -> Result<Count, BadQuery> {
        Ok(Count {
            filter: parse_filter(filter)?,
            by: present(by)
                .map(|p| FieldPath::parse(p).map_err(|e| bad("by", e)))
                .transpose()?,
            stats: present(stats)
                .map(|p| FieldPath::parse(p).map_err(|e| bad("stats", e)))
                .transpose()?,
        })
    }

    pub(crate) fn tally(&self) -> Tally {
        Tally::new(self.filter.clone(), self.by.clone(), self.stats.clone())
    }
}

/// `s` trimmed, unless it is absent or empty.
fn present(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

fn bad(what: &'static str, error: impl std::fmt::Display) -> BadQuery {
    BadQuery {
        what,
        error: error.to_string(),
    }
}

/// Parses a `where` expression; empty or absent is none.
pub(crate) fn parse_filter(filter: Option<&str>) -> Result<Option<Query>, BadQuery> {
    filter
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|q| Query::parse(q).map_err(|e| bad("where", e)))
        .transpose()
}

/// The document a query judges, from a shadow's `get/accepted` document
/// (or its retained state, the same shape): `state`'s sections and the
/// presence fields lifted to the top, beside the names and the version.
pub(crate) fn doc_of_get(id: &ShadowId, get: Value) -> Value {
    let Value::Object(mut get) = get else {
        return Value::Null;
    };
    let mut doc = Map::new();
    doc.insert("thing".into(), id.thing.as_str().into());
    doc.insert(
        "shadow".into(),
        id.shadow
            .as_ref()
            .map_or(Value::Null, |s| s.as_str().into()),
    );
    for key in ["version", "connected", "lastSeen"] {
        if let Some(v) = get.remove(key) {
            doc.insert(key.into(), v);
        }
    }
    if let Some(Value::Object(state)) = get.remove("state") {
        for (section, value) in state {
            doc.insert(section, value);
        }
    }
    Value::Object(doc)
}

/// The document of a retained state message; `None` for one that is not
/// a shadow's state.
pub(crate) fn doc_of_state(topic: &str, payload: &[u8]) -> Option<(ShadowId, Value)> {
    let Ok(Topic::State { id }) = Topic::parse(topic) else {
        return None;
    };
    // Only what a query can judge is built into values; the rest of the
    // document (metadata, conflicts, the vector: most of its bytes) is
    // skipped as it is read, which halves a fleet scan.
    #[derive(serde::Deserialize)]
    struct Judged {
        state: Option<Map<String, Value>>,
        version: Option<Value>,
        connected: Option<Value>,
        #[serde(rename = "lastSeen")]
        last_seen: Option<Value>,
    }
    let judged: Judged = serde_json::from_slice(payload).ok()?;
    let mut get = Map::new();
    let fields = [
        ("version", judged.version),
        ("connected", judged.connected),
        ("lastSeen", judged.last_seen),
    ];
    for (key, value) in fields {
        if let Some(v) = value {
            get.insert(key.into(), v);
        }
    }
    if let Some(state) = judged.state {
        get.insert("state".into(), Value::Object(state));
    }
    let doc = doc_of_get(&id, Value::Object(get));
    Some((id, doc))
}

/// Threads a count over the retained states is split over: reading each
/// shadow's JSON is what a count costs (docs/BENCHMARKS.md, "Fleet
/// queries"), and the parts need nothing of each other.
const SCAN_THREADS: usize = 2;

/// Counts the shadows whose things start with `prefix` (the caller's
/// reach, as `crate::ops` narrowed it), over the retained states: each of
/// [`SCAN_THREADS`] threads reads every n-th state into its own tally,
/// and the tallies are merged.
pub(crate) fn count(retained: &Retained, prefix: &str, count: &Count) -> Value {
    let prefix = format!("shade/things/{prefix}");
    let part = |which: usize| {
        let mut tally = count.tally();
        let mut i = 0usize;
        retained.with_prefix(&prefix, |topic, payload| {
            i += 1;
            if i % SCAN_THREADS == which {
                if let Some((_, doc)) = doc_of_state(topic, payload) {
                    tally.add(&doc);
                }
            }
        });
        tally
    };
    let part = &part;
    let mut tally = std::thread::scope(|scope| {
        let others: Vec<_> = (1..SCAN_THREADS)
            .map(|which| scope.spawn(move || part(which)))
            .collect();
        let mut tally = part(0);
        for other in others {
            match other.join() {
                Ok(t) => tally.merge(t),
                // A part that panicked would undercount: count it here.
                Err(_) => return None,
            }
        }
        Some(tally)
    });
    if tally.is_none() {
        tally = Some(part_all(retained, &prefix, count));
    }
    tally.map_or(Value::Null, |t| t.result())
}

/// A count on one thread.
fn part_all(retained: &Retained, prefix: &str, count: &Count) -> Tally {
    let mut tally = count.tally();
    retained.with_prefix(prefix, |topic, payload| {
        if let Some((_, doc)) = doc_of_state(topic, payload) {
            tally.add(&doc);
        }
    });
    tally
}

/// A page of the shadows whose things start with `prefix` and that match
/// `filter`, after the one `after` names (a retained topic, as `next`
/// gives it): `{"items":[{"thing","shadow","version"}],"next":..}` as the
/// ops `list`.
pub(crate) fn list(
    retained: &Retained,
    filter: &Query,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Value {
    let mut items = Vec::new();
    let mut next = None;
    let mut last: Option<String> = None;
    retained.with_prefix(&format!("shade/things/{prefix}"), |topic, payload| {
        if next.is_some() || after.is_some_and(|a| topic <= a) {
            return;
        }
        let Some((_, doc)) = doc_of_state(topic, payload) else {
            return;
        };
        if !filter.matches(&doc) {
            return;
        }
        if items.len() == limit {
            next = last.take();
            return;
        }
        items.push(list_item(&doc));
        last = Some(topic.to_owned());
    });
    json!({"items": items, "next": next})
}

/// A `list` item of a shadow's document: `{"thing","shadow","version"}`,
/// and `"connected"` and `"lastSeen"` once its thing was seen (a thing
/// that never connected keeps DESIGN.md's row).
pub(crate) fn list_item(doc: &Value) -> Value {
    let mut item = json!({
        "thing": doc["thing"],
        "shadow": doc["shadow"],
        "version": doc["version"],
    });
    if let (Some(seen), Value::Object(m)) = (doc.get("lastSeen"), &mut item) {
        let connected = doc.get("connected").cloned().unwrap_or(Value::Bool(false));
        m.insert("connected".into(), connected);
        m.insert("lastSeen".into(), seen.clone());
    }
    item
}

/// The document of a stored shadow, with its thing's presence as
/// recorded, as online.
pub(crate) fn doc_of_stored(
    id: &ShadowId,
    shadow: &Shadow,
    presence: Option<&PresenceRecord>,
    policies: &Policies,
) -> Value {
    let mut get = aws::render_get(shadow, policies, None, 0);
    stamp(&mut get, presence);
    doc_of_get(id, get)
}

/// [`count`] over a stopped broker's store.
pub(crate) fn count_stored(
    source: &dyn ShadowSource,
    policies: &Policies,
    prefix: &str,
    count: &Count,
) -> Result<Value, StoreError> {
    let mut tally = count.tally();
    source.scan(prefix, None, &mut |_, id, stored| {
        if stored.shadow.exists {
            let presence = source.presence(id.thing.as_str()).ok().flatten();
            tally.add(&doc_of_stored(
                &id,
                &stored.shadow,
                presence.as_ref(),
                policies,
            ));
        }
        true
    })?;
    Ok(tally.result())
}
