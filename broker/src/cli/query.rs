//! The CLI's side of the native query topic (see [`crate::ops`]): the
//! request bodies it sends, the answers it reads, and [`Reader`], which asks
//! either a running broker over MQTT or a stopped broker's data through the
//! very [`crate::ops::execute`] the broker answers with, so `list`, `history`
//! and `conflicts` print the same JSON online and offline.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use shade_shared::document::ConflictSide;
use shade_shared::{Section, ShadowId};

use super::args::{CliError, Offline, Source};
use super::client::Session;
use crate::ops::{self, Query};

/// Shadows per `list` page: the CLI holds one page at a time.
pub const LIST_PAGE: usize = 500;

/// One row of `shade list`: `{"thing","shadow","version"}`, and
/// `"connected"` and `"lastSeen"` once the thing was seen connecting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListItem {
    pub thing: String,
    /// `null` for the classic shadow.
    pub shadow: Option<String>,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    #[serde(rename = "lastSeen", default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
}

/// The `result` of a `list` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    pub items: Vec<ListItem>,
    /// The key to pass as `after` for the next page; `null` on the last.
    pub next: Option<String>,
}

/// One open conflict of one shadow, as `shade conflicts` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictRecord {
    pub thing: String,
    pub shadow: Option<String>,
    pub section: Section,
    /// Dotted path of the leaf inside the section.
    pub path: String,
    pub kept: ConflictSide,
    pub lost: ConflictSide,
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The body of a `list` query (without its clientToken); `filter` is a
/// fleet query (`--where`).
pub fn list_request(
    prefix: &str,
    filter: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Map<String, Value> {
    object(
        json!({ "op": "list", "prefix": prefix, "where": filter, "after": after, "limit": limit }),
    )
}

/// The body of a `count` query (without its clientToken).
pub fn count_request(
    prefix: &str,
    filter: Option<&str>,
    by: Option<&str>,
    stats: Option<&str>,
) -> Map<String, Value> {
    object(json!({ "op": "count", "prefix": prefix, "where": filter, "by": by, "stats": stats }))
}

/// The body of a `history` query (without its clientToken).
pub fn history_request(id: &ShadowId, limit: usize) -> Map<String, Value> {
    let shadow = id.shadow.as_ref().map(|s| s.as_str());
    object(json!({ "op": "history", "thing": id.thing.as_str(), "shadow": shadow, "limit": limit }))
}

/// The body of a `conflicts` query (without its clientToken).
pub fn conflicts_request(thing: Option<&str>) -> Map<String, Value> {
    object(json!({ "op": "conflicts", "thing": thing }))
}

/// Where `list`, `history` and `conflicts` send their queries.
#[derive(Debug)]
pub enum Reader {
    /// Boxed: a session is large, and there is one per run.
    Online(Box<Session>),
    Offline(Offline),
}

impl Reader {
    /// Opens `--data`, or connects to `--broker`.
    pub async fn open(source: &Source) -> Result<Reader, CliError> {
        match source.offline()? {
            Some(offline) => Ok(Reader::Offline(offline)),
            None => Ok(Reader::Online(Box::new(
                Session::connect(&source.online).await?,
            ))),
        }
    }

    /// Runs one query: its `result`, or its `error` as [`CliError::Refused`].
    pub async fn query(&mut self, mut body: Map<String, Value>) -> Result<Value, CliError> {
        match self {
            Reader::Online(session) => session.ops(body).await,
            Reader::Offline(offline) => {
                body.insert("clientToken".into(), Value::String("offline".into()));
                let query: Query = serde_json::from_value(Value::Object(body))
                    .map_err(|e| CliError::Refused(format!("cannot build the query: {e}")))?;
                ops::execute(&offline.store, &query, &offline.policies).map_err(CliError::Refused)
            }
        }
    }

    /// Reads a query's `result` as `T`.
    pub fn decode<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        result: Value,
    ) -> Result<T, CliError> {
        serde_json::from_value(result).map_err(|e| match self {
            Reader::Online(session) => session.bad_reply(format!("{what}: {e}")),
            Reader::Offline(_) => {
                CliError::Refused(format!("{what} in the data is unreadable: {e}"))
            }
        })
    }

    pub async fn close(self) {
        if let Reader::Online(session) = self {
            session.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shade_shared::{ShadowName, ThingName};

    #[test]
    fn requests_follow_the_wire_shape_and_parse_as_queries() {
        let id = ShadowId::named(
            ThingName::new("t").expect("valid"),
            ShadowName::new("n").expect("valid"),
        );
        let requests = [
            list_request("lamp", None, None, LIST_PAGE),
            history_request(&id, 20),
            conflicts_request(None),
        ];
        assert_eq!(
            Value::Object(requests[0].clone()),
            json!({"op": "list", "prefix": "lamp", "where": null, "after": null, "limit": 500})
        );
        assert_eq!(
            Value::Object(requests[1].clone()),
            json!({"op": "history", "thing": "t", "shadow": "n", "limit": 20})
        );
        assert_eq!(
            Value::Object(requests[2].clone()),
            json!({"op": "conflicts", "thing": null})
        );
        for mut body in requests {
            body.insert("clientToken".into(), json!("abc"));
            let query: Result<Query, _> = serde_json::from_value(Value::Object(body));
            assert!(query.is_ok(), "{query:?}");
        }
    }

    #[test]
    fn conflict_records_read_the_documented_shape() {
        let v = json!({
            "thing": "lamp-1", "shadow": "cfg", "section": "desired", "path": "color",
            "kept": {"value": "blue", "replica": "a:lamp-1", "ts": 3000},
            "lost": {"value": "green", "replica": "b:local", "ts": 2000},
        });
        let r: ConflictRecord = serde_json::from_value(v.clone()).expect("reads");
        assert_eq!(
            (r.section, r.kept.ts, r.lost.replica.as_str()),
            (Section::Desired, 3000, "b:local")
        );
        assert_eq!(serde_json::to_value(&r).expect("writes"), v);
    }
}
