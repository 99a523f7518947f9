//! Who can receive what: every filter a client holds, as the gateway sees
//! its SUBSCRIBE, UNSUBSCRIBE and the end of its connection, so that the
//! service publishes nothing no subscriber can receive.
//!
//! rumqttd checks each publish to a topic nobody subscribed to against
//! every filter ever created and caches no empty answer (docs/BENCHMARKS.md,
//! "What bounds it"); most of shade's notices (`update/documents`,
//! `accepted` for clients that do not listen, `sync/down` for agents that
//! are offline) went that way. Asking here first costs a hash lookup for
//! the exact filters, a scan of the thing's own wildcard filters (a device
//! has a few), and a scan of the filters with a wildcard before the thing
//! level (dashboards: few per broker).
//!
//! The answer may say yes when nobody can read the message (a filter the
//! ACL narrows, a `+` that MQTT would not let match a `$` topic); it never
//! says no to a topic some subscriber's filter matches. A filter is counted
//! once per connection holding it; a persistent session's filters stay
//! counted while it is offline, as rumqttd keeps its subscriptions.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::auth::acl::filter_matches;

/// The filters of every connection, counted. Shared by all gateways and
/// the service's link.
#[derive(Debug, Default)]
pub struct Subscriptions {
    index: RwLock<Index>,
    /// Filters of persistent sessions whose connection is gone, by the
    /// client id inside the broker; still counted in `index`.
    parked: Mutex<HashMap<String, HashSet<String>>>,
}

#[derive(Debug, Default)]
struct Index {
    /// Filters without wildcards: the topic itself.
    exact: HashMap<String, usize>,
    /// Filters with a wildcard after a literal thing level, by their first
    /// three levels (`$aws/things/t1`, `shade/things/t1`).
    by_thing: HashMap<String, HashMap<String, usize>>,
    /// Filters with a wildcard in their first three levels.
    wide: HashMap<String, usize>,
}

/// Where a filter is counted.
enum Slot<'a> {
    Exact,
    Thing(&'a str),
    Wide,
}

fn slot(filter: &str) -> Slot<'_> {
    if !filter.contains(['+', '#']) {
        return Slot::Exact;
    }
    match prefix3(filter) {
        Some(prefix) if !prefix.contains(['+', '#']) => Slot::Thing(prefix),
        _ => Slot::Wide,
    }
}

/// The first three levels of a topic or filter, if it has more.
fn prefix3(s: &str) -> Option<&str> {
    let mut slashes = s.match_indices('/').map(|(i, _)| i);
    let third = slashes.nth(2)?;
    Some(&s[..third])
}

/// The filter a subscription matches topics with: `$share/group/` is only
/// how the messages are spread.
pub(crate) fn effective(filter: &str) -> &str {
    match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or("", |(_, inner)| inner),
        None => filter,
    }
}

fn bump(map: &mut HashMap<String, usize>, key: &str) {
    *map.entry(key.to_owned()).or_default() += 1;
}

fn drop_one(map: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Subscriptions {
    pub fn new() -> Subscriptions {
        Subscriptions::default()
    }

    /// Counts one more holder of `filter` (as the client wrote it).
    pub fn add(&self, filter: &str) {
        let filter = effective(filter);
        let mut index = self.write();
        match slot(filter) {
            Slot::Exact => bump(&mut index.exact, filter),
            Slot::Thing(prefix) => {
                bump(index.by_thing.entry(prefix.to_owned()).or_default(), filter)
            }
            Slot::Wide => bump(&mut index.wide, filter),
        }
    }

    /// Counts one holder of `filter` less.
    pub fn remove(&self, filter: &str) {
        let filter = effective(filter);
        let mut index = self.write();
        match slot(filter) {
            Slot::Exact => drop_one(&mut index.exact, filter),
            Slot::Thing(prefix) => {
                if let Some(filters) = index.by_thing.get_mut(prefix) {
                    drop_one(filters, filter);
                    if filters.is_empty() {
                        index.by_thing.remove(prefix);
                    }
                }
            }
            Slot::Wide => drop_one(&mut index.wide, filter),
        }
    }

    /// Whether any held filter matches `topic` (as clients see it).
    pub fn wants(&self, topic: &str) -> bool {
        let index = self.read();
        if index.exact.contains_key(topic) {
            return true;
        }
        let thing = prefix3(topic).and_then(|p| index.by_thing.get(p));
        thing
            .into_iter()
            .flat_map(HashMap::keys)
            .chain(index.wide.keys())
            .any(|filter| filter_matches(filter, topic))
    }

    /// Keeps the filters of a persistent session whose connection ended,
    /// still counted, until [`Subscriptions::resume`] or
    /// [`Subscriptions::forget`] for the same client id.
    pub fn park(&self, client_id: &str, filters: HashSet<String>) {
        let old = self.lock_parked().insert(client_id.to_owned(), filters);
        // A session parked twice (rumqttd replaced a connection): the
        // older set is no longer held.
        old.into_iter().flatten().for_each(|f| self.remove(&f));
    }

    /// The filters a persistent session held, for its new connection.
    pub fn resume(&self, client_id: &str) -> HashSet<String> {
        self.lock_parked().remove(client_id).unwrap_or_default()
    }

    /// Drops a session's parked filters: it reconnected with a clean
    /// session, which discards its subscriptions.
    pub fn forget(&self, client_id: &str) {
        for filter in self.resume(client_id) {
            self.remove(&filter);
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_parked(&self) -> MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_thing_and_wide_filters_are_found_and_removed() {
        let s = Subscriptions::new();
        let delta = "$aws/things/t1/shadow/update/delta";
        assert!(!s.wants(delta));
        for filter in [
            delta,
            "$aws/things/t1/shadow/#",
            "$aws/things/+/shadow/update/delta",
            "$share/g/$aws/things/t1/shadow/update/+",
        ] {
            s.add(filter);
            assert!(s.wants(delta), "{filter}");
            assert!(!s.wants("$aws/things/t2/shadow/get/accepted"), "{filter}");
            s.remove(filter);
            assert!(!s.wants(delta), "{filter}");
        }
    }

    #[test]
    fn a_filter_held_twice_needs_two_removals() {
        let s = Subscriptions::new();
        s.add("shade/things/#");
        s.add("shade/things/#");
        s.remove("shade/things/#");
        assert!(s.wants("shade/things/t1/state"));
        s.remove("shade/things/#");
        assert!(!s.wants("shade/things/t1/state"));
        // Removing what is not held is harmless.
        s.remove("shade/things/#");
        assert!(!s.wants("shade/things/t1/state"));
    }

    #[test]
    fn parked_sessions_stay_counted_until_forgotten() {
        let s = Subscriptions::new();
        s.add("shade/things/t1/sync/down");
        s.park(
            "c1",
            HashSet::from(["shade/things/t1/sync/down".to_owned()]),
        );
        assert!(s.wants("shade/things/t1/sync/down"));
        let resumed = s.resume("c1");
        assert_eq!(resumed.len(), 1);
        s.park("c1", resumed);
        s.forget("c1");
        assert!(!s.wants("shade/things/t1/sync/down"));
    }
}
