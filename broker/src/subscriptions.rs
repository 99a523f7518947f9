//! Who receives what the service publishes: every filter each connection
//! holds on the service's topics, and each connection's outbox. The
//! service's messages (`$aws/things/...` replies and notices,
//! `shade/things/.../state` and `sync/down`) are delivered from here,
//! straight into the front's relay of each subscribed connection, not
//! through rumqttd's router.
//!
//! Why not the router: rumqttd matches every new filter against every topic
//! ever published to it and keeps both forever, checks each publish to a
//! topic nobody subscribed to against every filter, and visits every filter
//! on each disconnect (docs/BENCHMARKS.md, "What bounds it"). A fleet's
//! per-device filters and per-device topics made each of those O(fleet).
//! Here a lookup is a hash probe for exact filters, plus a scan of the
//! thing's own wildcard filters (a device has a few) and of the filters
//! with a wildcard before the thing level (dashboards: few per broker);
//! a connection's end removes only its own filters.
//!
//! Delivery is QoS 0: the service is the publisher and publishes at QoS 0,
//! so MQTT delivers at QoS 0 whatever the subscription asked for. A
//! connection whose outbox is full (a client that stopped reading) loses
//! the message, with a log line; the service never waits for a client.
//! Sessions do not outlive their connection here: a device that comes back
//! reads its shadow again (AWS `get`, or the agent's sync).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::{Bytes, BytesMut};
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{Packet, Protocol, Publish};
use tokio::sync::mpsc;
use tracing::warn;

use crate::auth::acl::filter_matches;
use crate::identity::{DeviceGrants, Principal};
use crate::wire::Version;

/// Encoded PUBLISH packets on their way to one client.
pub(crate) type Outbox = mpsc::Sender<Bytes>;

/// Messages one connection's outbox holds before new ones are dropped.
pub(crate) const OUTBOX: usize = 1024;

/// The filters and outboxes of every connection. Shared by the front (which
/// opens and closes outboxes), the gateways (which add and remove filters)
/// and the service's link (which delivers).
#[derive(Debug)]
pub struct Subscriptions {
    index: RwLock<Index>,
    grants: Arc<DeviceGrants>,
}

#[derive(Debug, Default)]
struct Index {
    /// Filters without wildcards: the topic itself.
    exact: HashMap<String, HashSet<u64>>,
    /// Filters with a wildcard after a literal thing level, by their first
    /// three levels (`$aws/things/t1`, `shade/things/t1`).
    by_thing: HashMap<String, HashMap<String, HashSet<u64>>>,
    /// Filters with a wildcard in their first three levels.
    wide: HashMap<String, HashSet<u64>>,
    conns: HashMap<u64, Conn>,
}

#[derive(Debug)]
struct Conn {
    outbox: Outbox,
    /// Known once the gateway read the CONNECT.
    reader: Option<(Principal, Version)>,
    filters: HashSet<String>,
    /// Whether a full outbox was already logged for this connection.
    warned: bool,
}

/// Where a filter is indexed.
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
    let third = s.match_indices('/').map(|(i, _)| i).nth(2)?;
    Some(&s[..third])
}

/// Whether `filter` (`$share` stripped) can match a topic the service
/// publishes to clients: `$aws/things/...`, `shade/things/...` or AWS's
/// lifecycle events, `$aws/events/presence/...`.
pub(crate) fn reaches_service(filter: &str) -> bool {
    let mut levels = filter.split('/');
    let first = levels.next().unwrap_or("");
    let second = levels.next();
    let things = matches!(second, Some("things" | "+" | "#")) || first == "#";
    match first {
        "$aws" => things || second == Some("events"),
        "shade" | "+" | "#" => things && !filter.starts_with("shade/ops"),
        _ => false,
    }
}

impl Index {
    fn bucket(&mut self, filter: &str) -> &mut HashMap<String, HashSet<u64>> {
        match slot(filter) {
            Slot::Exact => &mut self.exact,
            Slot::Thing(prefix) => self.by_thing.entry(prefix.to_owned()).or_default(),
            Slot::Wide => &mut self.wide,
        }
    }

    fn unlink(&mut self, conn: u64, filter: &str) {
        let bucket = self.bucket(filter);
        if let Some(holders) = bucket.get_mut(filter) {
            holders.remove(&conn);
            if holders.is_empty() {
                bucket.remove(filter);
            }
        }
        if let Slot::Thing(prefix) = slot(filter) {
            if self.by_thing.get(prefix).is_some_and(HashMap::is_empty) {
                self.by_thing.remove(prefix);
            }
        }
    }

    /// Every connection holding a filter that matches `topic`.
    fn holders(&self, topic: &str) -> HashSet<u64> {
        let mut out: HashSet<u64> = self.exact.get(topic).cloned().unwrap_or_default();
        let thing = prefix3(topic).and_then(|p| self.by_thing.get(p));
        for (filter, conns) in thing.into_iter().flatten().chain(&self.wide) {
            if filter_matches(filter, topic) {
                out.extend(conns);
            }
        }
        out
    }
}

impl Subscriptions {
    pub fn new(grants: Arc<DeviceGrants>) -> Subscriptions {
        Subscriptions {
            index: RwLock::new(Index::default()),
            grants,
        }
    }

    /// Opens the outbox of connection `conn` (the front, before it hands
    /// the connection to rumqttd).
    pub(crate) fn open(&self, conn: u64, outbox: Outbox) {
        let entry = Conn {
            outbox,
            reader: None,
            filters: HashSet::new(),
            warned: false,
        };
        self.write().conns.insert(conn, entry);
    }

    /// Who reads connection `conn`, and in which protocol (the gateway,
    /// after its CONNECT). Until then nothing is delivered to it.
    pub(crate) fn identify(&self, conn: u64, principal: Principal, version: Version) {
        if let Some(c) = self.write().conns.get_mut(&conn) {
            c.reader = Some((principal, version));
        }
    }

    /// The connection ended: its outbox and every filter it held go.
    pub(crate) fn close(&self, conn: u64) {
        let mut index = self.write();
        if let Some(c) = index.conns.remove(&conn) {
            for filter in &c.filters {
                index.unlink(conn, filter);
            }
        }
    }

    /// Connection `conn` holds `filter` (as the client wrote it, `$share`
    /// stripped). Unknown connections are ignored: they have ended.
    pub(crate) fn add(&self, conn: u64, filter: &str) {
        let mut index = self.write();
        let Some(c) = index.conns.get_mut(&conn) else {
            return;
        };
        if c.filters.insert(filter.to_owned()) {
            index
                .bucket(filter)
                .entry(filter.to_owned())
                .or_default()
                .insert(conn);
        }
    }

    /// Connection `conn` no longer holds `filter`.
    pub(crate) fn remove(&self, conn: u64, filter: &str) {
        let mut index = self.write();
        if index
            .conns
            .get_mut(&conn)
            .is_some_and(|c| c.filters.remove(filter))
        {
            index.unlink(conn, filter);
        }
    }

    /// Whether any held filter matches `topic` (as clients see it).
    pub fn wants(&self, topic: &str) -> bool {
        let index = self.read();
        if index.exact.get(topic).is_some_and(|h| !h.is_empty()) {
            return true;
        }
        let thing = prefix3(topic).and_then(|p| index.by_thing.get(p));
        thing
            .into_iter()
            .flat_map(HashMap::keys)
            .chain(index.wide.keys())
            .any(|filter| filter_matches(filter, topic))
    }

    /// Queues `payload` on `topic` for every connection that holds a
    /// matching filter and may read it; returns how many got it.
    pub(crate) fn deliver(&self, topic: &str, payload: &Bytes) -> usize {
        let mut full = Vec::new();
        let mut delivered = 0;
        {
            let index = self.read();
            // Encoded once per protocol version, on first use.
            let mut encoded: [Option<Option<Bytes>>; 2] = [None, None];
            for conn in index.holders(topic) {
                let Some(c) = index.conns.get(&conn) else {
                    continue;
                };
                let Some((principal, version)) = &c.reader else {
                    continue;
                };
                if !principal.may_read(topic, &self.grants) {
                    continue;
                }
                let slot = &mut encoded[usize::from(*version == Version::V5)];
                let Some(packet) = slot.get_or_insert_with(|| encode(topic, payload, *version))
                else {
                    continue;
                };
                let packet: &Bytes = packet;
                match c.outbox.try_send(packet.clone()) {
                    Ok(()) => delivered += 1,
                    Err(mpsc::error::TrySendError::Full(_)) if !c.warned => full.push(conn),
                    Err(_) => {}
                }
            }
        }
        if !full.is_empty() {
            let mut index = self.write();
            for conn in full {
                if let Some(c) = index.conns.get_mut(&conn) {
                    c.warned = true;
                }
                warn!(
                    connection = conn,
                    topic,
                    "a client is not reading: its outbox is full, so messages to it are dropped"
                );
            }
        }
        delivered
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A QoS 0 PUBLISH of `payload` on `topic`, encoded for `version`; `None`
/// if the codec refuses it (a topic too long, which the service never
/// produces).
fn encode(topic: &str, payload: &Bytes, version: Version) -> Option<Bytes> {
    let publish = Publish::new(
        Bytes::copy_from_slice(topic.as_bytes()),
        payload.clone(),
        false,
    );
    let mut out = BytesMut::new();
    let written = match version {
        Version::V4 => V4.write(Packet::Publish(publish, None), &mut out),
        Version::V5 => V5.write(Packet::Publish(publish, None), &mut out),
    };
    written.ok().map(|_| out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected(s: &Subscriptions, conn: u64) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(4);
        s.open(conn, tx);
        s.identify(conn, Principal::Anonymous, Version::V4);
        rx
    }

    fn subs() -> Subscriptions {
        Subscriptions::new(Arc::new(DeviceGrants::default()))
    }

    #[test]
    fn exact_thing_and_wide_filters_are_found_and_removed() {
        let s = subs();
        let mut rx = connected(&s, 1);
        let delta = "$aws/things/t1/shadow/update/delta";
        assert!(!s.wants(delta));
        for filter in [
            delta,
            "$aws/things/t1/shadow/#",
            "$aws/things/+/shadow/update/delta",
            "$aws/things/t1/shadow/update/+",
        ] {
            s.add(1, filter);
            assert!(s.wants(delta), "{filter}");
            assert!(!s.wants("$aws/things/t2/shadow/get/accepted"), "{filter}");
            assert_eq!(s.deliver(delta, &Bytes::from_static(b"{}")), 1, "{filter}");
            assert!(rx.try_recv().is_ok(), "{filter}");
            s.remove(1, filter);
            assert!(!s.wants(delta), "{filter}");
            assert_eq!(s.deliver(delta, &Bytes::new()), 0, "{filter}");
        }
    }

    #[test]
    fn a_connection_gets_one_copy_and_its_end_removes_its_filters() {
        let s = subs();
        let mut one = connected(&s, 1);
        let _two = connected(&s, 2);
        s.add(1, "shade/things/#");
        s.add(1, "shade/things/+/state");
        s.add(2, "shade/things/t1/state");
        assert_eq!(s.deliver("shade/things/t1/state", &Bytes::new()), 2);
        assert!(one.try_recv().is_ok());
        assert!(one.try_recv().is_err(), "two matching filters, one copy");
        s.close(2);
        assert_eq!(s.deliver("shade/things/t1/state", &Bytes::new()), 1);
        s.close(1);
        assert!(!s.wants("shade/things/t1/state"));
        // Filters of a connection that has ended are not kept.
        s.add(1, "shade/things/#");
        assert!(!s.wants("shade/things/t1/state"));
    }

    #[test]
    fn nothing_reaches_a_connection_before_its_connect_or_past_a_full_outbox() {
        let s = subs();
        let (tx, mut rx) = mpsc::channel(2);
        s.open(7, tx);
        s.add(7, "shade/things/t1/state");
        assert_eq!(s.deliver("shade/things/t1/state", &Bytes::new()), 0);
        s.identify(7, Principal::Anonymous, Version::V5);
        for _ in 0..5 {
            s.deliver("shade/things/t1/state", &Bytes::from_static(b"x"));
        }
        let mut got = 0;
        while rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, 2, "the outbox holds what it can; the rest is dropped");
    }

    #[test]
    fn service_topics_are_told_from_client_topics() {
        for f in [
            "$aws/things/t1/shadow/update/delta",
            "$aws/things/#",
            "$aws/events/presence/connected/+",
            "$aws/events/#",
            "shade/things/t1/state",
            "shade/#",
            "+/things/t1/state",
            "#",
        ] {
            assert!(reaches_service(f), "{f}");
        }
        for f in ["shade/ops/reply/x", "plain/topic", "$SYS/#", "$aws/rules/x"] {
            assert!(!reaches_service(f), "{f}");
        }
    }
}
