//! Causality: dots, version vectors and the hybrid logical clock.
//!
//! A *dot* names one write: the replica that made it and that replica's
//! counter at the time. A *version vector* says, per replica, the highest
//! counter merged so far. Every replica applies its own writes in counter
//! order and the sync protocol ships everything newer than what the peer
//! has seen, so a vector has no gaps: `covers(dot)` means "this write, or a
//! later one that saw it, is already here".
//!
//! Timestamps come from a hybrid logical clock: wall-clock milliseconds when
//! the wall clock moves forward, plus a logical counter that keeps them
//! strictly increasing when it does not (many writes in one millisecond, a
//! clock stepped back, a peer whose clock runs ahead). They only order
//! concurrent writes under the `lww` policy; causality never depends on them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::name::ReplicaId;

/// One write: `(replica, counter)`, serialized as `[replica, counter]`.
#[derive(Debug, Clone, Eq, PartialOrd, Ord)]
pub struct Dot {
    pub replica: ReplicaId,
    pub counter: u64,
}

crate::wire::tuple_serde!(Dot {
    replica: ReplicaId,
    counter: u64 => CounterWire,
});

/// The highest counter a peer may send (in a dot or a vector). A replica
/// takes its next dot one above the highest counter merged for it, so a
/// peer claiming `u64::MAX` would make that overflow; far above what any
/// replica reaches by writing.
pub const MAX_COUNTER: u64 = u64::MAX / 2;

pub(crate) fn checked_counter<E: serde::de::Error>(c: u64) -> Result<u64, E> {
    if c > MAX_COUNTER {
        Err(E::custom(format_args!(
            "counter {c} is above {MAX_COUNTER}"
        )))
    } else {
        Ok(c)
    }
}

/// A dot's counter through serde, refused above [`MAX_COUNTER`] on the way
/// in. An uninhabited type rather than a `with` module: its functions sit
/// in this module with the check they call, so no child module has to
/// reach back into its parent.
enum CounterWire {}

impl CounterWire {
    fn serialize<S: serde::Serializer>(c: &u64, s: S) -> Result<S::Ok, S::Error> {
        c.serialize(s)
    }

    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        checked_counter(u64::deserialize(d)?)
    }
}

/// Field-wise, counters first: they are cheaper to compare and differ more often.
impl PartialEq for Dot {
    fn eq(&self, other: &Self) -> bool {
        self.counter == other.counter && self.replica == other.replica
    }
}

impl std::hash::Hash for Dot {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.replica.hash(state);
        self.counter.hash(state);
    }
}

impl Dot {
    pub fn new(replica: ReplicaId, counter: u64) -> Self {
        Self { replica, counter }
    }
}

/// Replica -> highest counter merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct VersionVector(BTreeMap<ReplicaId, u64>);

/// As the map it is, with every counter at most [`MAX_COUNTER`].
impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<ReplicaId, u64>::deserialize(d)?;
        for c in map.values() {
            checked_counter::<D::Error>(*c)?;
        }
        Ok(VersionVector(map))
    }
}

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest counter merged from `replica` (0 when none).
    pub fn get(&self, replica: &ReplicaId) -> u64 {
        self.0.get(replica).copied().unwrap_or(0)
    }

    /// `replica`'s entry, with the vector's own copy of the id.
    pub(crate) fn get_key_value(&self, replica: &ReplicaId) -> Option<(&ReplicaId, u64)> {
        self.0.get_key_value(replica).map(|(r, c)| (r, *c))
    }

    /// Has the write `dot` (or a later write of its replica) been merged?
    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(&dot.replica) >= dot.counter
    }

    /// Does this vector cover everything `other` covers?
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(r, c)| self.get(r) >= *c)
    }

    /// Takes the next dot of `replica` and records it as merged.
    pub fn next_dot(&mut self, replica: &ReplicaId) -> Dot {
        let counter = self.get(replica) + 1;
        self.0.insert(replica.clone(), counter);
        Dot::new(replica.clone(), counter)
    }

    /// Records `dot` as merged.
    pub fn add(&mut self, dot: &Dot) {
        let c = self.0.entry(dot.replica.clone()).or_insert(0);
        *c = (*c).max(dot.counter);
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &VersionVector) {
        for (r, c) in &other.0 {
            let mine = self.0.entry(r.clone()).or_insert(0);
            *mine = (*mine).max(*c);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ReplicaId, u64)> {
        self.0.iter().map(|(r, c)| (r, *c))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of replicas named.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Sets the counter of `replica`, as read from a message.
    pub(crate) fn insert(&mut self, replica: ReplicaId, counter: u64) {
        self.0.insert(replica, counter);
    }
}

impl FromIterator<(ReplicaId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (ReplicaId, u64)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (r, c) in iter {
            vv.add(&Dot::new(r, c));
        }
        vv
    }
}

/// A hybrid logical clock reading: wall milliseconds, then a logical counter.
///
/// Serialized as `[ms, logical]`; shown to users as `ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub ms: u64,
    pub logical: u32,
}

crate::wire::tuple_serde!(Timestamp {
    ms: u64,
    logical: u32,
});

impl Timestamp {
    pub fn from_ms(ms: u64) -> Self {
        Self { ms, logical: 0 }
    }

    /// Whole seconds, as AWS puts in `timestamp` and `metadata`.
    pub fn secs(&self) -> u64 {
        self.ms / 1000
    }
}

/// The clock of one replica. It never reads the time itself: the caller
/// passes the wall clock in, which keeps this crate deterministic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hlc {
    last: Timestamp,
}

impl Hlc {
    /// A reading for a local write at wall time `now_ms`, strictly later
    /// than every reading and every observed timestamp so far.
    pub fn tick(&mut self, now_ms: u64) -> Timestamp {
        self.last = if now_ms > self.last.ms {
            Timestamp::from_ms(now_ms)
        } else {
            Timestamp {
                ms: self.last.ms,
                logical: self.last.logical.saturating_add(1),
            }
        };
        self.last
    }

    /// Takes a remote timestamp into account, so later local writes order after it.
    pub fn observe(&mut self, remote: Timestamp) {
        if remote > self.last {
            self.last = remote;
        }
    }

    pub fn last(&self) -> Timestamp {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ReplicaId {
        ReplicaId::new(s).expect("valid replica id")
    }

    #[test]
    fn a_dot_counter_above_the_maximum_is_refused_through_serde() {
        let at_max = serde_json::json!(["a:x", MAX_COUNTER]);
        let dot: Dot = serde_json::from_value(at_max).expect("the maximum is allowed");
        assert_eq!(dot, Dot::new(r("a:x"), MAX_COUNTER));
        let text = serde_json::to_string(&dot).expect("encodes");
        assert_eq!(text, format!("[\"a:x\",{MAX_COUNTER}]"));
        let above = serde_json::json!(["a:x", MAX_COUNTER + 1]);
        let err = serde_json::from_value::<Dot>(above).expect_err("above the maximum");
        assert!(err.to_string().contains("is above"), "{err}");
    }

    #[test]
    fn vector_covers_what_it_merged() {
        let mut vv = VersionVector::new();
        let d1 = vv.next_dot(&r("a:x"));
        let d2 = vv.next_dot(&r("a:x"));
        assert_eq!(d2.counter, 2);
        assert!(vv.covers(&d1) && vv.covers(&d2));
        assert!(!vv.covers(&Dot::new(r("a:x"), 3)));
        assert!(!vv.covers(&Dot::new(r("b:local"), 1)));
        let mut other = VersionVector::new();
        other.add(&Dot::new(r("b:local"), 4));
        assert!(!vv.dominates(&other));
        vv.join(&other);
        assert!(vv.dominates(&other));
        assert_eq!(vv.get(&r("b:local")), 4);
    }

    #[test]
    fn clock_is_strictly_monotonic_even_when_wall_time_goes_back() {
        let mut c = Hlc::default();
        let t1 = c.tick(1000);
        let t2 = c.tick(1000);
        let t3 = c.tick(900);
        assert!(t1 < t2 && t2 < t3);
        c.observe(Timestamp::from_ms(5000));
        assert!(c.tick(1001) > Timestamp::from_ms(5000));
        assert_eq!(c.tick(6000), Timestamp::from_ms(6000));
    }
}
