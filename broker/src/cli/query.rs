//! shade's native request topic, for what the AWS API cannot ask: listing
//! shadows, reading their history and their open conflicts.
//!
//! ```text
//! client: SUBSCRIBE shade/ops/reply/<token>          token: [A-Za-z0-9]{16}
//! client: PUBLISH   shade/ops/request
//!   {"op":"list","clientToken":T,"prefix":"lamp","after":null|"<key>","limit":500}
//!   {"op":"history","clientToken":T,"thing":"t","shadow":null|"n","limit":20}
//!   {"op":"conflicts","clientToken":T,"thing":null|"t"}
//! broker: PUBLISH   shade/ops/reply/<token>
//!   {"clientToken":T,"ok":true,"result":{"items":[ListItem..],"next":null|"<key>"}}   list
//!   {"clientToken":T,"ok":true,"result":[HistoryEntry..]}                            history, oldest first
//!   {"clientToken":T,"ok":true,"result":[ConflictRecord..]}                          conflicts
//!   {"clientToken":T,"ok":false,"error":"No shadow exists with name: t"}
//! ```
//!
//! `list` pages through shadows in storage-key order (`thing`, or
//! `thing/shadow`); `prefix` matches the start of that key, `after` is the
//! last key of the previous page. The offline reads of `--data` build the
//! same items with the functions below, so both print the same JSON; the
//! broker side can use them too.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use shade_shared::document::ConflictSide;
use shade_shared::{Policies, Section, Shadow, ShadowId};

use crate::store::StoredShadow;

/// Where requests go.
pub const REQUEST_TOPIC: &str = "shade/ops/request";

/// Where the answer to the request carrying clientToken `token` goes.
pub fn reply_topic(token: &str) -> String {
    format!("shade/ops/reply/{token}")
}

/// Shadows per `list` page: the CLI holds one page at a time.
pub const LIST_PAGE: usize = 500;

/// One row of `shade list`: `{"thing","shadow","version"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListItem {
    pub thing: String,
    /// `null` for the classic shadow.
    pub shadow: Option<String>,
    pub version: u64,
}

/// The `result` of a `list` request.
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

/// The row of a stored shadow, or `None` when it was deleted (its record
/// lives on to keep its version).
pub fn list_item(id: &ShadowId, stored: &StoredShadow) -> Option<ListItem> {
    stored.shadow.exists.then(|| ListItem {
        thing: id.thing.to_string(),
        shadow: id.shadow.as_ref().map(ToString::to_string),
        version: stored.shadow.version,
    })
}

/// The open conflicts of a shadow under `policies`, desired first.
pub fn conflict_records(id: &ShadowId, shadow: &Shadow, policies: &Policies) -> Vec<ConflictRecord> {
    if !shadow.exists {
        return Vec::new();
    }
    Section::ALL
        .into_iter()
        .flat_map(|section| shadow.render(section, policies.of(section)).conflicts)
        .map(|c| ConflictRecord {
            thing: id.thing.to_string(),
            shadow: id.shadow.as_ref().map(ToString::to_string),
            section: c.section,
            path: c.path,
            kept: c.kept,
            lost: c.lost,
        })
        .collect()
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The body of a `list` request (without its clientToken).
pub fn list_request(prefix: &str, after: Option<&str>, limit: usize) -> Map<String, Value> {
    object(json!({ "op": "list", "prefix": prefix, "after": after, "limit": limit }))
}

/// The body of a `history` request (without its clientToken).
pub fn history_request(id: &ShadowId, limit: usize) -> Map<String, Value> {
    let shadow = id.shadow.as_ref().map(|s| s.as_str());
    object(json!({ "op": "history", "thing": id.thing.as_str(), "shadow": shadow, "limit": limit }))
}

/// The body of a `conflicts` request (without its clientToken).
pub fn conflicts_request(thing: Option<&str>) -> Map<String, Value> {
    object(json!({ "op": "conflicts", "thing": thing }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shade_shared::{Patch, Policy, ReplicaId, ShadowName, ThingName, VersionVector};

    fn patch(v: Value) -> Patch {
        Patch::Merge(v.as_object().cloned().unwrap_or_default())
    }

    /// A broker and a device write `color` concurrently and merge.
    fn conflicted() -> Shadow {
        let broker = ReplicaId::broker("local").expect("valid");
        let device = ReplicaId::agent("lamp-1").expect("valid");
        let mut b = Shadow::new();
        b.write(&broker, Section::Desired, &patch(json!({"color": "red"})), 1_000);
        let mut d = Shadow::new();
        d.merge(&b.changes_since(&VersionVector::new()));
        b.write(&broker, Section::Desired, &patch(json!({"color": "green"})), 2_000);
        d.write(&device, Section::Desired, &patch(json!({"color": "blue"})), 3_000);
        b.merge(&d.changes_since(b.vv()));
        b
    }

    fn id(thing: &str, shadow: Option<&str>) -> ShadowId {
        let thing = ThingName::new(thing).expect("valid");
        match shadow {
            Some(s) => ShadowId::named(thing, ShadowName::new(s).expect("valid")),
            None => ShadowId::classic(thing),
        }
    }

    #[test]
    fn conflict_records_carry_thing_shadow_and_both_sides() {
        let records = conflict_records(&id("lamp-1", Some("cfg")), &conflicted(), &Policies::default());
        assert_eq!(records.len(), 1);
        let v = serde_json::to_value(&records[0]).expect("serializes");
        assert_eq!(
            v,
            json!({
                "thing": "lamp-1", "shadow": "cfg", "section": "desired", "path": "color",
                "kept": {"value": "blue", "replica": "a:lamp-1", "ts": 3000},
                "lost": {"value": "green", "replica": "b:local", "ts": 2000},
            })
        );
        let back: ConflictRecord = serde_json::from_value(v).expect("deserializes");
        assert_eq!(back, records[0]);
    }

    #[test]
    fn the_section_policy_decides_which_side_is_kept() {
        let broker_wins = Policies { desired: Policy::BrokerWins, reported: Policy::Lww };
        let records = conflict_records(&id("lamp-1", None), &conflicted(), &broker_wins);
        assert_eq!(records[0].kept.value, json!("green"));
        assert_eq!(records[0].shadow, None);
    }

    #[test]
    fn deleted_shadows_are_not_listed() {
        let mut stored = StoredShadow { shadow: conflicted(), ..StoredShadow::default() };
        stored.shadow.version = 4;
        let item = list_item(&id("lamp-1", None), &stored).expect("listed");
        assert_eq!(serde_json::to_value(item).expect("json"), json!({"thing": "lamp-1", "shadow": null, "version": 4}));
        stored.shadow.exists = false;
        assert_eq!(list_item(&id("lamp-1", None), &stored), None);
    }

    #[test]
    fn requests_follow_the_wire_shape() {
        assert_eq!(
            Value::Object(list_request("lamp", None, 500)),
            json!({"op": "list", "prefix": "lamp", "after": null, "limit": 500})
        );
        assert_eq!(
            Value::Object(history_request(&id("t", Some("n")), 20)),
            json!({"op": "history", "thing": "t", "shadow": "n", "limit": 20})
        );
        assert_eq!(Value::Object(conflicts_request(None)), json!({"op": "conflicts", "thing": null}));
        assert_eq!(reply_topic("abc"), "shade/ops/reply/abc");
    }
}
