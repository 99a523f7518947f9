//! Operator queries AWS has no API for: list, history, conflicts.
//!
//! Online, a client publishes JSON to `shade/ops/request` after subscribing
//! to `shade/ops/reply/<clientToken>`; the store thread answers on that topic
//! from the same transaction view as every other request. Offline, the CLI
//! runs the same [`execute`] over a stopped broker's data, so the two can
//! never disagree:
//!
//! ```text
//! {"op":"list","clientToken":T,"prefix":"lamp","after":null,"limit":500}
//!   -> {"clientToken":T,"ok":true,"result":{"items":[{"thing","shadow","version"}],"next":null|"<key>"}}
//! {"op":"history","clientToken":T,"thing":"t","shadow":null,"limit":20}
//!   -> {"clientToken":T,"ok":true,"result":[HistoryEntry, ...]}      oldest first
//! {"op":"conflicts","clientToken":T,"thing":null|"t"}
//!   -> {"clientToken":T,"ok":true,"result":[{"thing","shadow","section","path","kept","lost"}]}
//! errors -> {"clientToken":T,"ok":false,"error":"..."}
//! ```

pub mod devices;

use serde::Deserialize;
use serde_json::{json, Value};
use shade_shared::{Policies, ShadowId, ShadowName, ThingName};

use crate::identity::Principal;
use crate::store::{ShadowSource, StoreError};

/// Where clients send queries.
pub const REQUEST_TOPIC: &str = "shade/ops/request";
/// Prefix of the reply topics; the clientToken follows.
pub const REPLY_PREFIX: &str = "shade/ops/reply/";
/// Largest page of `list`.
pub const MAX_PAGE: usize = 1000;
/// Most history entries in one answer.
pub const MAX_HISTORY: usize = 10_000;
/// Most conflict records in one answer.
pub const MAX_CONFLICTS: usize = 10_000;

/// A query.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Query {
    List {
        #[serde(rename = "clientToken")]
        client_token: String,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        after: Option<String>,
        #[serde(default)]
        limit: Option<usize>,
    },
    History {
        #[serde(rename = "clientToken")]
        client_token: String,
        thing: String,
        #[serde(default)]
        shadow: Option<String>,
        #[serde(default)]
        limit: Option<usize>,
    },
    Conflicts {
        #[serde(rename = "clientToken")]
        client_token: String,
        #[serde(default)]
        thing: Option<String>,
    },
}

impl Query {
    pub fn client_token(&self) -> &str {
        match self {
            Query::List { client_token, .. }
            | Query::History { client_token, .. }
            | Query::Conflicts { client_token, .. } => client_token,
        }
    }
}

/// The `clientToken` of a JSON request, if it has a string one: what a
/// refusal is addressed by, before (or without) parsing the request.
pub fn client_token_of(payload: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    value.get("clientToken")?.as_str().map(str::to_owned)
}

/// The topic and payload refusing the ops request `payload` from `client`
/// with `error`; `None` when it has no usable clientToken to answer on.
pub fn refusal(client: &str, payload: &[u8], error: &str) -> Option<(String, Value)> {
    let token = client_token_of(payload)?;
    let topic = reply_topic(client, &token)?;
    Some((
        topic,
        json!({"clientToken": token, "ok": false, "error": error}),
    ))
}

/// Whether `principal` may run `query`, narrowing a `list` to the things it
/// may read: a reader limited to `plant1-` asking for every thing gets
/// `plant1-*`. Devices run no queries (the gateway already refuses them).
pub fn authorize(principal: &Principal, query: &mut Query) -> bool {
    let prefix = match principal {
        Principal::Anonymous => return true,
        Principal::Device { .. } => return false,
        Principal::User { prefix, .. } => prefix,
    };
    match query {
        Query::List { prefix: asked, .. } => {
            if asked.starts_with(&**prefix) {
                true
            } else if prefix.starts_with(asked.as_str()) {
                *asked = prefix.to_string();
                true
            } else {
                false
            }
        }
        Query::History { thing, .. } => principal.may_read_thing(thing),
        Query::Conflicts { thing, .. } => thing
            .as_deref()
            .is_none_or(|thing| principal.may_read_thing(thing)),
    }
}

/// Removes from a query's result what `principal` may not read: the
/// conflicts of other things, when no thing was named.
pub fn visible_to(principal: &Principal, query: &Query, mut result: Value) -> Value {
    if let (Query::Conflicts { thing: None, .. }, Value::Array(records)) = (query, &mut result) {
        records.retain(|record| {
            record
                .get("thing")
                .and_then(Value::as_str)
                .is_some_and(|thing| principal.may_read_thing(thing))
        });
    }
    result
}

/// The topic to answer `client` (its stamped id) on, if `token` can be a
/// topic level. Clients see `shade/ops/reply/<token>`; inside the broker it
/// is in the namespace of the client's principal, so nobody else sees it.
pub fn reply_topic(client: &str, token: &str) -> Option<String> {
    let ok = !token.is_empty()
        && token.len() <= 64
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then(|| crate::router::gateway::reply_topic(client, token))
}

fn shadow_id(thing: &str, shadow: Option<&str>) -> Result<ShadowId, String> {
    let thing = ThingName::new(thing).map_err(|e| e.to_string())?;
    match shadow {
        None => Ok(ShadowId::classic(thing)),
        Some(s) => Ok(ShadowId::named(
            thing,
            ShadowName::new(s).map_err(|e| e.to_string())?,
        )),
    }
}

fn shadow_json(id: &ShadowId) -> Value {
    id.shadow
        .as_ref()
        .map_or(Value::Null, |s| Value::String(s.to_string()))
}

/// Runs `query` over `source`: the `result` value, or an error message.
pub fn execute(
    source: &dyn ShadowSource,
    query: &Query,
    policies: &Policies,
) -> Result<Value, String> {
    let store = |e: StoreError| e.to_string();
    match query {
        Query::List {
            prefix,
            after,
            limit,
            ..
        } => {
            let limit = limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
            let mut items = Vec::new();
            let mut last: Option<String> = None;
            let mut next = None;
            source
                .scan(prefix, after.as_deref(), &mut |key, id, stored| {
                    if !stored.shadow.exists {
                        return true;
                    }
                    if items.len() == limit {
                        // More follow: the next page starts after the last key shown.
                        next = last.take();
                        return false;
                    }
                    items.push(json!({
                        "thing": id.thing.as_str(),
                        "shadow": shadow_json(&id),
                        "version": stored.shadow.version,
                    }));
                    last = Some(key.to_owned());
                    true
                })
                .map_err(store)?;
            Ok(json!({ "items": items, "next": next }))
        }
        Query::History {
            thing,
            shadow,
            limit,
            ..
        } => {
            let id = shadow_id(thing, shadow.as_deref())?;
            if source.get(&id).map_err(store)?.is_none() {
                return Err(format!("No shadow exists with name: {}", id.display_name()));
            }
            let entries = source
                .history(&id, limit.unwrap_or(20).clamp(1, MAX_HISTORY))
                .map_err(store)?;
            serde_json::to_value(entries).map_err(|e| e.to_string())
        }
        Query::Conflicts { thing, .. } => {
            let mut out = Vec::new();
            let mut visit = |id: ShadowId, stored: crate::store::StoredShadow| {
                let view = shade_shared::aws::View::of(&stored.shadow, policies);
                for c in view
                    .desired
                    .conflicts
                    .iter()
                    .chain(view.reported.conflicts.iter())
                {
                    if out.len() < MAX_CONFLICTS {
                        let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
                        if let Value::Object(m) = &mut v {
                            m.insert("thing".into(), Value::String(id.thing.to_string()));
                            m.insert("shadow".into(), shadow_json(&id));
                        }
                        out.push(v);
                    }
                }
            };
            match thing {
                None => source
                    .scan("", None, &mut |_, id, stored| {
                        visit(id, stored);
                        true
                    })
                    .map_err(store)?,
                Some(t) => {
                    let thing = ThingName::new(t.as_str()).map_err(|e| e.to_string())?;
                    // The classic shadow's key is the thing; named ones follow as `thing/name`.
                    let exact = thing.to_string();
                    let named = format!("{thing}/");
                    source
                        .scan(&exact, None, &mut |key, id, stored| {
                            if key == exact || key.starts_with(&named) {
                                visit(id, stored);
                            }
                            key == exact
                                || key.starts_with(&named)
                                || named.starts_with(key)
                                || key < named.as_str()
                        })
                        .map_err(store)?;
                }
            }
            Ok(Value::Array(out))
        }
    }
}

/// The reply payload for `query`.
pub fn reply(query: &Query, result: Result<Value, String>) -> Value {
    match result {
        Ok(result) => json!({ "clientToken": query.client_token(), "ok": true, "result": result }),
        Err(error) => json!({ "clientToken": query.client_token(), "ok": false, "error": error }),
    }
}
