//! The retained messages the service publishes (every shadow's
//! `shade/things/.../state`), held by shade instead of rumqttd.
//!
//! rumqttd walks its whole retained store for every new subscription, so a
//! fleet reconnecting (10,000 SUBSCRIBEs over 10,000 retained states) cost
//! O(retained) each. Here the states sit in a map ordered by topic: a
//! device's own `shade/things/t1/state` is one lookup, and a wildcard
//! filter reads only the range under its literal prefix. The gateway
//! writes the matching states after the SUBACK of the subscription that
//! asked for them (see `gateway`); live changes reach subscribers through
//! the router as before, not retained.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{PoisonError, RwLock};

use bytes::Bytes;

use crate::auth::acl::filter_matches;

/// Topic -> payload of every retained service message. Shared by the
/// service's link (which writes it) and every gateway (which reads it).
#[derive(Debug, Default)]
pub struct Retained {
    states: RwLock<BTreeMap<String, Bytes>>,
}

impl Retained {
    pub fn new() -> Retained {
        Retained::default()
    }

    /// Keeps `payload` as the retained message of `topic`; an empty one
    /// clears it, as in MQTT.
    pub fn set(&self, topic: &str, payload: Bytes) {
        let mut states = self.states.write().unwrap_or_else(PoisonError::into_inner);
        if payload.is_empty() {
            states.remove(topic);
        } else {
            states.insert(topic.to_owned(), payload);
        }
    }

    /// The retained message of `topic`, if any.
    pub fn get(&self, topic: &str) -> Option<Bytes> {
        self.states
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .cloned()
    }

    /// How many topics hold a retained message.
    pub fn len(&self) -> usize {
        self.states
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `each` with every retained message whose topic starts with
    /// `prefix`, in topic order.
    pub fn with_prefix(&self, prefix: &str, mut each: impl FnMut(&str, &Bytes)) {
        let states = self.states.read().unwrap_or_else(PoisonError::into_inner);
        let range = states.range::<str, _>((Bound::Included(prefix), Bound::Unbounded));
        for (topic, payload) in range {
            if !topic.starts_with(prefix) {
                break;
            }
            each(topic, payload);
        }
    }

    /// Calls `each` with every retained message whose topic `filter` (as
    /// the client wrote it, `$share` stripped) matches, in topic order.
    pub fn matching(&self, filter: &str, mut each: impl FnMut(&str, &Bytes)) {
        let states = self.states.read().unwrap_or_else(PoisonError::into_inner);
        if !filter.contains(['+', '#']) {
            if let Some(payload) = states.get(filter) {
                each(filter, payload);
            }
            return;
        }
        // Only topics that start with the filter's literal levels can match.
        let literal = filter.find(['+', '#']).map_or(filter, |i| &filter[..i]);
        let range = states.range::<str, _>((Bound::Included(literal), Bound::Unbounded));
        for (topic, payload) in range {
            if !topic.starts_with(literal) {
                break;
            }
            if filter_matches(filter, topic) {
                each(topic, payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(r: &Retained, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        r.matching(filter, |t, _| out.push(t.to_owned()));
        out
    }

    #[test]
    fn filters_find_exactly_the_topics_they_match() {
        let r = Retained::new();
        for t in [
            "shade/things/a/state",
            "shade/things/a/shadows/s1/state",
            "shade/things/b/state",
            "shade/thingsX/c/state",
        ] {
            r.set(t, Bytes::from_static(b"{}"));
        }
        assert_eq!(topics(&r, "shade/things/a/state"), ["shade/things/a/state"]);
        assert_eq!(
            topics(&r, "shade/things/+/state"),
            ["shade/things/a/state", "shade/things/b/state"]
        );
        assert_eq!(topics(&r, "shade/things/#").len(), 3);
        assert_eq!(topics(&r, "#").len(), 4);
        assert_eq!(topics(&r, "shade/things/a/#").len(), 2);
        assert!(topics(&r, "shade/things/zzz/state").is_empty());
        r.set("shade/things/a/state", Bytes::new());
        assert_eq!(topics(&r, "shade/things/+/state"), ["shade/things/b/state"]);
        assert_eq!(r.len(), 3);
    }
}
