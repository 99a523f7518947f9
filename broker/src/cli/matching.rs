//! `shade watch --where EXPR`: the changes of the shadows a fleet query
//! matches, as `GET /events?where=` carries them.
//!
//! It reads the retained state topics (`shade/things/T/state`, the named
//! shadows' too), which carry presence beside desired and reported, so a
//! query on `connected` works. The states retained when the watch starts
//! say which shadows match now and are not printed; after that each state
//! is judged against the one before it: a shadow that starts matching is
//! printed whole (`matches: ...`), one that still matches with what
//! changed, one that stops with `no longer matches`, a matching one that
//! is deleted with `deleted`. Only the matching shadows' states are kept.

use std::collections::HashMap;

use serde_json::{Map, Value};
use shade_shared::query::Query;
use shade_shared::topic::Topic;
use shade_shared::ShadowId;

use super::args::CliError;
use super::output::diff_words;

/// The filters of the state topics of `thing` (`+`: every thing).
pub fn filters(thing: &str) -> Vec<String> {
    vec![
        format!("shade/things/{thing}/state"),
        format!("shade/things/{thing}/shadows/+/state"),
    ]
}

/// What a state message means for the watch.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// It matches now and did not before: every key it holds.
    Enters {
        id: ShadowId,
        version: u64,
        words: String,
    },
    /// It matched before and still does: what changed (never empty).
    Changes {
        id: ShadowId,
        version: u64,
        words: String,
    },
    /// It matched before and no longer does.
    Leaves { id: ShadowId, version: u64 },
    /// It matched and was deleted; the version it had.
    Deleted { id: ShadowId, version: u64 },
}

/// The query and the shadows that match it, by topic: their version and
/// what is printed of them.
#[derive(Debug)]
pub struct Matching {
    query: Query,
    matched: HashMap<String, (u64, Value)>,
}

impl Matching {
    /// Parses `text`; a bad expression is a usage error with its position.
    pub fn parse(text: &str) -> Result<Matching, CliError> {
        match crate::fleet::parse_filter(Some(text)) {
            Ok(Some(query)) => Ok(Matching {
                query,
                matched: HashMap::new(),
            }),
            Ok(None) => Err(CliError::Usage("--where needs an expression".into())),
            Err(e) => Err(CliError::Usage(format!("--{e}"))),
        }
    }

    /// Judges one state message; `retained`: sent on subscribing (the
    /// states as the watch starts), which are recorded, not reported.
    pub fn on_state(&mut self, topic: &str, payload: &[u8], retained: bool) -> Option<Change> {
        let Ok(Topic::State { id }) = topic.parse() else {
            return None;
        };
        // An empty payload is a deleted shadow: it matches nothing.
        let doc = crate::fleet::doc_of_state(topic, payload).map(|(_, doc)| doc);
        let version = doc.as_ref().and_then(|d| d.get("version")?.as_u64());
        let Some(doc) = doc.filter(|doc| self.query.matches(doc)) else {
            let (was, _) = self.matched.remove(topic)?;
            return match (retained, version) {
                (true, _) => None,
                (false, None) => Some(Change::Deleted { id, version: was }),
                (false, Some(version)) => Some(Change::Leaves { id, version }),
            };
        };
        let version = version.unwrap_or(0);
        let shown = shown(&doc);
        let before = self
            .matched
            .insert(topic.to_owned(), (version, shown.clone()));
        if retained {
            return None;
        }
        match before {
            None => Some(Change::Enters {
                id,
                version,
                words: diff_words(&Value::Object(Map::new()), &shown),
            }),
            Some((_, before)) => {
                let words = diff_words(&before, &shown);
                (!words.is_empty()).then_some(Change::Changes { id, version, words })
            }
        }
    }
}

/// What a line shows of a shadow: desired, reported and whether it is
/// connected (not the delta, which follows from the two, nor the times).
fn shown(doc: &Value) -> Value {
    let mut out = Map::new();
    for key in ["desired", "reported", "connected"] {
        if let Some(v) = doc.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(version: u64, reported: Value, connected: bool) -> Vec<u8> {
        json!({"state": {"reported": reported}, "version": version, "connected": connected})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_shadow_enters_changes_leaves_and_is_deleted() {
        let mut m = Matching::parse("reported.temp > 30").expect("parses");
        let topic = "shade/things/lamp/state";
        let id = ShadowId::classic("lamp".parse().expect("a thing name"));
        // Retained at the start: recorded, not printed.
        assert_eq!(
            m.on_state(topic, &state(1, json!({"temp": 40}), false), true),
            None
        );
        assert_eq!(
            m.on_state(topic, &state(2, json!({"temp": 41}), false), false),
            Some(Change::Changes {
                id: id.clone(),
                version: 2,
                words: "reported.temp=41".into()
            })
        );
        // Presence moves a matching shadow too; a state with nothing shown changed is not a line.
        assert_eq!(
            m.on_state(topic, &state(2, json!({"temp": 41}), true), false),
            Some(Change::Changes {
                id: id.clone(),
                version: 2,
                words: "connected=true".into()
            })
        );
        assert_eq!(
            m.on_state(topic, &state(2, json!({"temp": 41}), true), false),
            None
        );
        assert_eq!(
            m.on_state(topic, &state(3, json!({"temp": 5}), true), false),
            Some(Change::Leaves {
                id: id.clone(),
                version: 3
            })
        );
        assert_eq!(
            m.on_state(topic, &state(4, json!({"temp": 6}), true), false),
            None
        );
        assert_eq!(
            m.on_state(topic, &state(5, json!({"temp": 50}), true), false),
            Some(Change::Enters {
                id: id.clone(),
                version: 5,
                words: "connected=true reported.temp=50".into()
            })
        );
        assert_eq!(
            m.on_state(topic, b"", false),
            Some(Change::Deleted { id, version: 5 })
        );
        assert_eq!(m.on_state(topic, b"", false), None);
    }

    #[test]
    fn a_bad_expression_is_a_usage_error_with_its_position() {
        let err = Matching::parse("reported.temp >").expect_err("refused");
        assert!(
            matches!(&err, CliError::Usage(m) if m.starts_with("--where: at 15")),
            "{err}"
        );
    }
}
