//! Who a connection is ([`Principal`]) and what it may publish, subscribe
//! to and receive. Pure functions of topics and names; the gateway applies
//! them to every packet, the service to `shade/ops` queries.
//!
//! | principal              | publish                                           | receive                                   |
//! |------------------------|---------------------------------------------------|-------------------------------------------|
//! | anonymous (auth off)   | anything the gateway routes                       | everything                                |
//! | admin (prefix `p`)     | every request and client topic for things `p*`    | things `p*`; other topics if `p` is empty |
//! | reader (prefix `p`)    | `get` of things `p*`, `shade/ops/request`         | things `p*`; other topics if `p` is empty |
//! | device `t`             | requests and `sync/up` of `t`; the granted topics | topics of `t`; the granted topics         |
//!
//! A thing's topics are `$aws/things/<t>/...` and `shade/things/<t>/...`.
//! Grants are topic filters from config in which `{thing}` stands for the
//! device's own name (e.g. `devices/{thing}/#`). `shade/ops/reply/...` is
//! private to each principal by construction (the gateway maps it into a
//! namespace per principal), so everyone may subscribe to it.
//!
//! A wildcard filter that spans things its owner may not read (a device's
//! `#`, a reader's `$aws/things/+/shadow/update/accepted`) is granted at
//! QoS 0 and the gateway drops each message the owner may not read:
//! [`Access::Filtered`]. A filter naming a thing it may not read is refused
//! outright with a SUBACK failure.

use shade_shared::topic::OPS_REPLY_PREFIX;

use crate::identity::{DeviceGrants, Principal, Role};

/// How a subscription filter is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everything it can match may be read.
    Full,
    /// Granted at QoS 0; each message is checked with [`Principal::may_read`].
    Filtered,
    /// Refused: SUBACK failure.
    Denied(&'static str),
}

impl Principal {
    /// May this principal publish on `topic` (as the client wrote it)?
    /// The gateway has already refused what nobody may publish (internal
    /// topics, state topics, replies).
    pub fn may_publish(&self, topic: &str, grants: &DeviceGrants) -> Result<(), &'static str> {
        let levels: Vec<&str> = topic.split('/').collect();
        match self {
            Principal::Anonymous => Ok(()),
            Principal::User { role, prefix, .. } => {
                if matches!(levels.as_slice(), ["shade", "ops", "request"]) {
                    return Ok(());
                }
                if let Some((thing, op)) = shadow_request(&levels) {
                    if !thing.starts_with(&**prefix) {
                        return Err("the thing is outside the user's prefix");
                    }
                    return match (role, op) {
                        (Role::Admin, _) | (Role::Reader, Some("get")) => Ok(()),
                        (Role::Reader, _) => Err("a reader may only get"),
                    };
                }
                match role {
                    Role::Admin if prefix.is_empty() => Ok(()),
                    Role::Admin => Err("a prefix-limited admin publishes only to its things"),
                    Role::Reader => Err("a reader may only get and subscribe"),
                }
            }
            Principal::Device { thing } => {
                if let Some((named, _)) = shadow_request(&levels) {
                    return if named == &**thing {
                        Ok(())
                    } else {
                        Err("a device may only use its own thing's topics")
                    };
                }
                if matches!(levels.as_slice(), ["shade", "ops", "request"]) {
                    return Err("devices cannot run operator queries");
                }
                if grants
                    .for_thing(thing)
                    .any(|grant| filter_matches(&grant, topic))
                {
                    Ok(())
                } else {
                    Err("the topic is neither the device's own nor granted to it")
                }
            }
        }
    }

    /// How a subscription to `filter` (as the client wrote it) is granted.
    pub fn subscribe(&self, filter: &str, grants: &DeviceGrants) -> Access {
        if matches!(self, Principal::Anonymous) || filter.starts_with(OPS_REPLY_PREFIX) {
            return Access::Full;
        }
        let inner = filter
            .strip_prefix("$share/")
            .and_then(|rest| rest.split_once('/'))
            .map_or(filter, |(_, inner)| inner);
        let levels: Vec<&str> = inner.split('/').collect();
        if let Some(thing) = thing_level(&levels) {
            if thing != "+" && thing != "#" {
                return if self.may_read_thing(thing) {
                    Access::Full
                } else {
                    Access::Denied("the thing is not readable by this client")
                };
            }
        }
        if !inner.contains(['+', '#']) {
            return if self.may_read(inner, grants) {
                Access::Full
            } else {
                Access::Denied("the topic is not readable by this client")
            };
        }
        match self {
            Principal::User { prefix, .. } if prefix.is_empty() => Access::Full,
            Principal::Device { thing } if grants.for_thing(thing).any(|g| covers(&g, inner)) => {
                Access::Full
            }
            _ if self.readable(grants).iter().any(|r| intersects(r, inner)) => Access::Filtered,
            _ => Access::Denied("the filter matches nothing this client may read"),
        }
    }

    /// Filters covering everything this principal may read (for a user
    /// with a prefix, a superset: the per-message check narrows it).
    fn readable(&self, grants: &DeviceGrants) -> Vec<String> {
        match self {
            Principal::Anonymous => vec!["#".to_owned()],
            Principal::User { prefix, .. } if prefix.is_empty() => vec!["#".to_owned()],
            Principal::User { .. } => {
                vec!["$aws/things/+/#".to_owned(), "shade/things/+/#".to_owned()]
            }
            Principal::Device { thing } => {
                let mut own = vec![
                    format!("$aws/things/{thing}/#"),
                    format!("shade/things/{thing}/#"),
                ];
                own.extend(grants.for_thing(thing));
                own
            }
        }
    }

    /// May this principal receive a message on `topic` (as clients see it)?
    pub fn may_read(&self, topic: &str, grants: &DeviceGrants) -> bool {
        if topic.starts_with(OPS_REPLY_PREFIX) {
            return true;
        }
        let levels: Vec<&str> = topic.split('/').collect();
        match (self, thing_level(&levels)) {
            (Principal::Anonymous, _) => true,
            (_, Some(thing)) => self.may_read_thing(thing),
            (Principal::User { prefix, .. }, None) => prefix.is_empty(),
            (Principal::Device { thing }, None) => {
                grants.for_thing(thing).any(|g| filter_matches(&g, topic))
            }
        }
    }
}

impl DeviceGrants {
    fn for_thing<'a>(&'a self, thing: &'a str) -> impl Iterator<Item = String> + 'a {
        self.filters
            .iter()
            .map(move |f| f.replace("{thing}", thing))
    }
}

/// The thing of a shadow topic or filter: `$aws/things/<t>/...` or
/// `shade/things/<t>/...`.
fn thing_level<'a>(levels: &[&'a str]) -> Option<&'a str> {
    match levels {
        ["$aws" | "shade", "things", thing, ..] => Some(thing),
        _ => None,
    }
}

/// `(thing, Some(op))` for an AWS request, `(thing, None)` for `sync/up`.
fn shadow_request<'a>(levels: &[&'a str]) -> Option<(&'a str, Option<&'a str>)> {
    match levels {
        ["$aws", "things", thing, "shadow", op]
        | ["$aws", "things", thing, "shadow", "name", _, op] => Some((thing, Some(op))),
        ["shade", "things", thing, "sync", "up"]
        | ["shade", "things", thing, "shadows", _, "sync", "up"] => Some((thing, None)),
        _ => None,
    }
}

/// MQTT matching of a topic name against a filter.
pub(crate) fn filter_matches(filter: &str, topic: &str) -> bool {
    // MQTT 4.7.2: a filter starting with a wildcard (`#` or `+`) matches no
    // topic starting with `$`.
    if topic.starts_with('$') && filter.starts_with(['#', '+']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (l, Some(t)) if l == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// Is there a topic both filters match?
fn intersects(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('/'), b.split('/'));
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) | (None, None) => return true,
            (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
            _ => return false,
        }
    }
}

/// Does `grant` match every topic `filter` can match?
fn covers(grant: &str, filter: &str) -> bool {
    let mut filter_levels = filter.split('/');
    for level in grant.split('/') {
        match (level, filter_levels.next()) {
            ("#", _) => return true,
            ("+", Some(f)) if f != "#" => {}
            (g, Some(f)) if g == f && f != "+" && f != "#" => {}
            _ => return false,
        }
    }
    filter_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{UserEntry, Users};

    fn device(t: &str) -> Principal {
        Principal::Device { thing: t.into() }
    }

    fn user(role: Role, prefix: &str) -> Principal {
        Principal::User {
            name: "u".into(),
            role,
            prefix: prefix.into(),
        }
    }

    fn grants() -> DeviceGrants {
        DeviceGrants {
            filters: vec!["devices/{thing}/#".to_owned()],
        }
    }

    #[test]
    fn a_device_publishes_only_its_own_requests_and_grants() {
        let d = device("t1");
        let g = grants();
        assert!(d.may_publish("$aws/things/t1/shadow/update", &g).is_ok());
        assert!(d
            .may_publish("$aws/things/t1/shadow/name/cfg/get", &g)
            .is_ok());
        assert!(d.may_publish("shade/things/t1/sync/up", &g).is_ok());
        assert!(d.may_publish("devices/t1/telemetry", &g).is_ok());
        assert!(d.may_publish("$aws/things/t2/shadow/update", &g).is_err());
        assert!(d.may_publish("shade/things/t2/sync/up", &g).is_err());
        assert!(d.may_publish("devices/t2/telemetry", &g).is_err());
        assert!(d.may_publish("shade/ops/request", &g).is_err());
        assert!(d.may_publish("other", &g).is_err());
    }

    #[test]
    fn a_reader_gets_but_never_writes() {
        let r = user(Role::Reader, "plant1-");
        let g = DeviceGrants::default();
        assert!(r.may_publish("$aws/things/plant1-a/shadow/get", &g).is_ok());
        assert!(r
            .may_publish("$aws/things/plant1-a/shadow/update", &g)
            .is_err());
        assert!(r
            .may_publish("$aws/things/plant1-a/shadow/delete", &g)
            .is_err());
        assert!(r
            .may_publish("$aws/things/plant2-a/shadow/get", &g)
            .is_err());
        assert!(r.may_publish("chat", &g).is_err());
        let a = user(Role::Admin, "");
        assert!(a.may_publish("$aws/things/x/shadow/update", &g).is_ok());
        assert!(a.may_publish("chat", &g).is_ok());
    }

    #[test]
    fn wildcards_spanning_other_things_are_filtered_and_named_ones_denied() {
        let d = device("t1");
        let g = grants();
        assert_eq!(d.subscribe("#", &g), Access::Filtered);
        assert_eq!(
            d.subscribe("$aws/things/+/shadow/update/accepted", &g),
            Access::Filtered
        );
        assert_eq!(d.subscribe("$aws/things/t1/shadow/#", &g), Access::Full);
        assert!(matches!(
            d.subscribe("$aws/things/t2/shadow/#", &g),
            Access::Denied(_)
        ));
        assert!(matches!(
            d.subscribe("shade/things/t2/state", &g),
            Access::Denied(_)
        ));
        assert_eq!(d.subscribe("devices/t1/#", &g), Access::Full);
        assert_eq!(d.subscribe("devices/+/x", &g), Access::Filtered);
        assert!(matches!(d.subscribe("devices/t2/#", &g), Access::Denied(_)));
        assert!(matches!(d.subscribe("other/+", &g), Access::Denied(_)));
        assert!(matches!(d.subscribe("chat", &g), Access::Denied(_)));
        assert_eq!(d.subscribe("shade/ops/reply/abc", &g), Access::Full);
        assert!(d.may_read("$aws/things/t1/shadow/update/delta", &g));
        assert!(!d.may_read("$aws/things/t2/shadow/update/delta", &g));
        assert!(!d.may_read("shade/things/t2/state", &g));
        assert!(d.may_read("devices/t1/x", &g));
        assert!(!d.may_read("devices/t2/x", &g));
        let r = user(Role::Reader, "");
        assert_eq!(r.subscribe("#", &g), Access::Full);
        let r = user(Role::Reader, "p-");
        assert_eq!(r.subscribe("shade/things/#", &g), Access::Filtered);
        assert!(r.may_read("shade/things/p-1/state", &g));
        assert!(!r.may_read("shade/things/q-1/state", &g));
    }

    #[test]
    fn tags_round_trip() {
        let mut users = Users::new();
        users.insert(
            "ops".into(),
            UserEntry {
                password_hash: String::new(),
                role: Role::Reader,
                prefix: "p".into(),
            },
        );
        for p in [
            Principal::Anonymous,
            device("t1"),
            Principal::User {
                name: "ops".into(),
                role: Role::Reader,
                prefix: "p".into(),
            },
        ] {
            assert_eq!(Principal::from_tag(&p.tag(), &users), Some(p));
        }
        assert_eq!(Principal::from_tag("u:nobody", &users), None);
    }

    #[test]
    fn filter_matching_follows_mqtt() {
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(filter_matches("a/#", "a"));
        assert!(filter_matches("a/#", "a/b/c"));
        assert!(!filter_matches("a/+", "a/b/c"));
        assert!(!filter_matches("#", "$aws/x"));
        assert!(!filter_matches(
            "+/things/t/shadow/update/delta",
            "$aws/things/t/shadow/update/delta"
        ));
        assert!(!filter_matches("+/#", "$aws/x"));
        assert!(filter_matches("$aws/#", "$aws/x"));
        assert!(covers("devices/t1/#", "devices/t1/+/x"));
        assert!(!covers("devices/t1/+", "devices/t1/#"));
        assert!(!covers("devices/t1/x", "devices/+/x"));
        assert!(intersects("devices/+/x", "devices/t1/#"));
        assert!(intersects("a/#", "a"));
        assert!(!intersects("devices/t2/#", "devices/t1/#"));
        assert!(!intersects("a/b", "a/b/c"));
    }
}
