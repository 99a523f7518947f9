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
//! {"op":"list",...,"where":"reported.fw < 2"}   (a fleet query: see crate::fleet)
//! {"op":"count","clientToken":T,"prefix":"","where":E,"by":P,"stats":P}
//!   -> {"clientToken":T,"ok":true,"result":{"count":N,"by":{..},"stats":{..}}}
//! {"op":"conflicts","clientToken":T,"thing":null|"t"}
//!   -> {"clientToken":T,"ok":true,"result":[{"thing","shadow","section","path","kept","lost"}]}
//! errors -> {"clientToken":T,"ok":false,"error":"..."}
//! ```

pub(crate) mod devices;

use serde::Deserialize;
use serde_json::{json, Value};
use shade_shared::{Policies, ShadowId, ShadowName, ThingName};

use crate::fleet;
use crate::identity::{Principal, Principals};
use crate::router::Outbound;
use crate::router::Retained;
use crate::shadow::Handled;
use crate::store::{ShadowSource, StoreError, Tables};
use devices::DeviceQuery;

pub(crate) use shade_shared::topic::{
    OPS_REPLY_PREFIX as REPLY_PREFIX, OPS_REQUEST as REQUEST_TOPIC,
};
/// Largest page of `list`.
pub(crate) const MAX_PAGE: usize = 1000;
/// Most history entries in one answer.
pub(crate) const MAX_HISTORY: usize = 10_000;
/// Most conflict records in one answer.
pub(crate) const MAX_CONFLICTS: usize = 10_000;

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
        /// A fleet query (`crate::fleet`): only the shadows it matches.
        #[serde(default, rename = "where")]
        filter: Option<String>,
    },
    /// How many shadows match, per value of `by`, with the statistics
    /// of `stats` (`crate::fleet`).
    Count {
        #[serde(rename = "clientToken")]
        client_token: String,
        #[serde(default)]
        prefix: String,
        #[serde(default, rename = "where")]
        filter: Option<String>,
        #[serde(default)]
        by: Option<String>,
        #[serde(default)]
        stats: Option<String>,
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
            | Query::Count { client_token, .. }
            | Query::History { client_token, .. }
            | Query::Conflicts { client_token, .. } => client_token,
        }
    }
}

/// A request on `shade/ops/request`, parsed before it is queued for the
/// store thread.
#[derive(Debug, Clone, PartialEq)]
pub enum OpsRequest {
    Query(Query),
    Devices(DeviceQuery),
}

impl OpsRequest {
    /// Parses a request: a device query when its `op` starts with
    /// `device-`, else a query; the error says why neither fits.
    pub fn parse(payload: &[u8]) -> Result<OpsRequest, serde_json::Error> {
        #[derive(Deserialize)]
        struct Op {
            op: String,
        }
        let device =
            serde_json::from_slice::<Op>(payload).is_ok_and(|o| o.op.starts_with("device-"));
        if device {
            serde_json::from_slice(payload).map(OpsRequest::Devices)
        } else {
            serde_json::from_slice(payload).map(OpsRequest::Query)
        }
    }

    pub fn client_token(&self) -> &str {
        match self {
            OpsRequest::Query(q) => q.client_token(),
            OpsRequest::Devices(q) => q.client_token(),
        }
    }
}

/// Handles an ops request of `client` (its stamped id) inside the write
/// transaction `t`: checks that its principal may make it, runs it and
/// collects the reply. Device queries are for full admins only.
pub(crate) fn handle(
    t: &mut Tables<'_>,
    request: &OpsRequest,
    client: &str,
    principals: &Principals,
    policies: &Policies,
    now: u64,
    h: &mut Handled,
) -> Result<(), StoreError> {
    let principal = principals.of(client);
    let query = match request {
        OpsRequest::Devices(query) => {
            if principal.as_ref().is_some_and(Principal::is_full_admin) {
                let users = principals.users.current();
                return devices::handle(t, query, client, &users, now, h);
            }
            tracing::warn!(
                client,
                "refusing a device query from a client that is not a full admin"
            );
            refuse(request, client, h);
            return Ok(());
        }
        OpsRequest::Query(query) => query,
    };
    let Some(topic) = reply_topic(client, query.client_token()) else {
        tracing::warn!(
            client,
            "dropping a shade/ops/request whose clientToken cannot be a topic level"
        );
        return Ok(());
    };
    let mut query = query.clone();
    let Some(principal) = principal.filter(|p| authorize(p, &mut query)) else {
        tracing::warn!(
            client,
            ?query,
            "refusing an ops query outside the client's things"
        );
        refuse(request, client, h);
        return Ok(());
    };
    let result = execute(t, &query, policies).map(|value| visible_to(&principal, &query, value));
    h.code = Some(match &result {
        Ok(_) => 200,
        // As the HTTP API answers the same errors (`crate::http`).
        Err(e) if e.starts_with("No shadow exists") => 404,
        Err(_) => 400,
    });
    h.out
        .push(Outbound::json(topic, &reply(&query, result)).into());
    Ok(())
}

/// Answers an ops request its sender may not make: `not authorized`.
fn refuse(request: &OpsRequest, client: &str, h: &mut Handled) {
    let token = request.client_token();
    if let Some(topic) = reply_topic(client, token) {
        let reply = json!({"clientToken": token, "ok": false, "error": "not authorized"});
        h.code = Some(403);
        h.out.push(Outbound::json(topic, &reply).into());
    }
}

/// The `clientToken` of a JSON request, if it has a string one: what a
/// refusal is addressed by, before (or without) parsing the request.
pub(crate) fn client_token_of(payload: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    value.get("clientToken")?.as_str().map(str::to_owned)
}

/// The topic and payload refusing the ops request `payload` from `client`
/// with `error`; `None` when it has no usable clientToken to answer on.
pub(crate) fn refusal(client: &str, payload: &[u8], error: &str) -> Option<(String, Value)> {
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
pub(crate) fn authorize(principal: &Principal, query: &mut Query) -> bool {
    let prefix = match principal {
        Principal::Anonymous => return true,
        Principal::Device { .. } => return false,
        Principal::User { prefix, .. } => prefix,
    };
    match query {
        Query::List { prefix: asked, .. } | Query::Count { prefix: asked, .. } => {
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
pub(crate) fn visible_to(principal: &Principal, query: &Query, mut result: Value) -> Value {
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
pub(crate) fn reply_topic(client: &str, token: &str) -> Option<String> {
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
pub(crate) fn execute(
    source: &dyn ShadowSource,
    query: &Query,
    policies: &Policies,
) -> Result<Value, String> {
    let store = |e: StoreError| e.to_string();
    match query {
        Query::Count {
            prefix,
            filter,
            by,
            stats,
            ..
        } => {
            let count = count_of(filter, by, stats)?;
            fleet::count_stored(source, policies, prefix, &count).map_err(store)
        }
        Query::List {
            prefix,
            after,
            limit,
            filter,
            ..
        } => {
            let filter = fleet::parse_filter(filter.as_deref()).map_err(|e| e.to_string())?;
            let limit = limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
            let mut items = Vec::new();
            let mut last: Option<String> = None;
            let mut next = None;
            source
                .scan(prefix, after.as_deref(), &mut |key, id, stored| {
                    if !stored.shadow.exists {
                        return true;
                    }
                    let presence = source.presence(id.thing.as_str()).ok().flatten();
                    let doc =
                        fleet::doc_of_stored(&id, &stored.shadow, presence.as_ref(), policies);
                    if filter.as_ref().is_some_and(|q| !q.matches(&doc)) {
                        return true;
                    }
                    if items.len() == limit {
                        // More follow: the next page starts after the last key shown.
                        next = last.take();
                        return false;
                    }
                    items.push(fleet::list_item(&doc));
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

/// A `count` query's parts, parsed (the error names the part and where).
fn count_of(
    filter: &Option<String>,
    by: &Option<String>,
    stats: &Option<String>,
) -> Result<fleet::Count, String> {
    fleet::Count::parse(filter.as_deref(), by.as_deref(), stats.as_deref())
        .map_err(|e| e.to_string())
}

/// Whether `query` is a fleet query: a `count`, or a `list` with a
/// `where`. Online, those run over the retained states
/// ([`execute_retained`]), off the store thread.
pub(crate) fn is_fleet_query(query: &Query) -> bool {
    matches!(
        query,
        Query::Count { .. }
            | Query::List {
                filter: Some(_),
                ..
            }
    )
}

/// Runs a fleet query over the retained states (what online `count` and
/// `list --where` read); any other query is an error.
pub(crate) fn execute_retained(retained: &Retained, query: &Query) -> Result<Value, String> {
    match query {
        Query::Count {
            prefix,
            filter,
            by,
            stats,
            ..
        } => {
            let count = count_of(filter, by, stats)?;
            Ok(fleet::count(retained, prefix, &count))
        }
        Query::List {
            prefix,
            after,
            limit,
            filter,
            ..
        } => {
            let Some(filter) = fleet::parse_filter(filter.as_deref()).map_err(|e| e.to_string())?
            else {
                return Err("a list without where runs on the store".into());
            };
            let limit = limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
            Ok(fleet::list(
                retained,
                &filter,
                prefix,
                after.as_deref(),
                limit,
            ))
        }
        _ => Err("not a fleet query".into()),
    }
}

/// The reply payload for `query`.
pub(crate) fn reply(query: &Query, result: Result<Value, String>) -> Value {
    match result {
        Ok(result) => json!({ "clientToken": query.client_token(), "ok": true, "result": result }),
        Err(error) => json!({ "clientToken": query.client_token(), "ok": false, "error": error }),
    }
}
