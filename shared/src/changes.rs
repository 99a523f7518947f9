//! [`Changes`]: the registers one replica ships to another, laid out flat.
//!
//! A sync message is decoded once, merged once and dropped, and nearly all
//! its registers hold one leaf. Built as the document's own types (a
//! `Path`, a `SmallVec` register of leaves each holding an `Arc` replica
//! id), decoding it cost more in building and dropping those than in
//! parsing: the `Arc` alone was an atomic increment and decrement per leaf,
//! and every inline path and value was written in narrow pieces and moved
//! in wide ones (docs/BENCHMARKS.md, "The floor"). The merge then cloned
//! each leaf it took into the document anyway.
//!
//! So a message holds what its wire form holds (see `codec`): a table of
//! the replica ids its leaves name, each once, and columns of plain
//! numbers, with the paths' encodings and the values' canonical CBOR
//! appended to two byte buffers. A leaf names its replica by its index in
//! the table, as automerge's changes name actors. Decoding pushes numbers
//! and copies bytes; the merge builds a document leaf only for what it
//! takes, from the table's id and the bytes.

use std::fmt;

use crate::leaf::{Leaf, Register, Section};
use crate::name::ReplicaId;
use crate::path::Path;
use crate::value::LeafValue;
use crate::version::{Dot, Timestamp, VersionVector};

/// What one replica ships to another: every register holding a leaf the
/// peer lacks, and the sender's vector.
#[derive(Clone, Default)]
pub struct Changes {
    /// The sender's vector: the causal context of the registers.
    pub vv: VersionVector,
    /// The peer vector these changes were computed against. A receiver
    /// that has not seen all of it would miss registers the sender left out,
    /// so [`Shadow::merge`](crate::Shadow::merge) refuses such a message
    /// (see [`MergeOutcome::gap`](crate::MergeOutcome::gap)). This matters
    /// where messages are broadcast (`sync/down` reaches every agent of a
    /// shadow) or a replica lost its state.
    pub since: VersionVector,
    /// Cut short by [`Shadow::changes_since_limited`](crate::Shadow::changes_since_limited):
    /// `vv` covers only what this message carries, and more is to come.
    /// Such a vector must not count towards a stable vector (see
    /// [`crate::merge`]).
    pub partial: bool,
    /// The ids the leaves name, each once, in order of first use.
    pub(crate) replicas: Vec<ReplicaId>,
    pub(crate) registers: Vec<RegisterEntry>,
    pub(crate) leaves: Vec<LeafEntry>,
    /// The registers' path encodings, one after the other.
    pub(crate) path_bytes: Vec<u8>,
    /// The leaves' values as canonical CBOR, one after the other; a
    /// tombstone adds nothing (no CBOR value is empty).
    pub(crate) value_bytes: Vec<u8>,
}

/// One register: where its path encoding and its leaves end (each starts
/// where the previous register's end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RegisterEntry {
    pub(crate) path_end: usize,
    pub(crate) leaves_end: usize,
    pub(crate) section: Section,
}

/// One leaf: where its value ends (it starts where the previous leaf's
/// ends; equal for a tombstone), its dot and its timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeafEntry {
    pub(crate) value_end: usize,
    pub(crate) counter: u64,
    pub(crate) ms: u64,
    /// Index into [`Changes::replicas`].
    pub(crate) replica: u32,
    pub(crate) logical: u32,
}

/// The register of one path, as owned document types.
#[derive(Debug, Clone, PartialEq)]
pub struct PathLeaves {
    pub section: Section,
    pub path: Path,
    pub leaves: Register,
}

impl Changes {
    /// No registers yet, with the sender's vector and the peer's.
    pub fn new(vv: VersionVector, since: VersionVector, partial: bool) -> Changes {
        Changes {
            vv,
            since,
            partial,
            ..Changes::default()
        }
    }

    /// Appends the register `leaves` at `section`/`path`.
    pub fn push(&mut self, section: Section, path: &Path, leaves: &[Leaf]) {
        self.path_bytes.extend_from_slice(path.encoded());
        for leaf in leaves {
            if let Some(value) = &leaf.value {
                self.value_bytes.extend_from_slice(value.as_cbor());
            }
            let replica = self.intern(&leaf.dot.replica);
            self.leaves.push(LeafEntry {
                value_end: self.value_bytes.len(),
                counter: leaf.dot.counter,
                ms: leaf.ts.ms,
                replica,
                logical: leaf.ts.logical,
            });
        }
        self.registers.push(RegisterEntry {
            path_end: self.path_bytes.len(),
            leaves_end: self.leaves.len(),
            section,
        });
    }

    /// The index of `replica` in the table, added if new. Nearly every
    /// leaf of a message names one of a few replicas, most often the last
    /// one, so a linear search is short; comparing two ids is a pointer
    /// test when they share an allocation, else a short string compare.
    fn intern(&mut self, replica: &ReplicaId) -> u32 {
        let found = match self.replicas.last() {
            Some(last) if last == replica => Some(self.replicas.len() - 1),
            _ => self.replicas.iter().position(|r| r == replica),
        };
        let index = found.unwrap_or_else(|| {
            self.replicas.push(replica.clone());
            self.replicas.len() - 1
        });
        // A table longer than u32::MAX would need more leaves than memory holds.
        u32::try_from(index).unwrap_or(u32::MAX)
    }

    /// How many registers.
    pub fn len(&self) -> usize {
        self.registers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.registers.is_empty()
    }

    /// The registers, in order.
    pub fn registers(&self) -> impl ExactSizeIterator<Item = RegisterRef<'_>> + '_ {
        (0..self.registers.len()).map(move |i| RegisterRef { changes: self, i })
    }
}

/// One register of a [`Changes`].
#[derive(Clone, Copy)]
pub struct RegisterRef<'a> {
    changes: &'a Changes,
    i: usize,
}

impl<'a> RegisterRef<'a> {
    fn entry(self) -> RegisterEntry {
        self.changes.registers[self.i]
    }

    /// Where the previous register ends.
    fn start(self) -> (usize, usize) {
        match self.i.checked_sub(1) {
            Some(prev) => {
                let e = self.changes.registers[prev];
                (e.path_end, e.leaves_end)
            }
            None => (0, 0),
        }
    }

    pub fn section(self) -> Section {
        self.entry().section
    }

    pub(crate) fn path_encoded(self) -> &'a [u8] {
        let start = self.start().0;
        &self.changes.path_bytes[start..self.entry().path_end]
    }

    pub fn path(self) -> Path {
        let start = self.start().0;
        let len = self.entry().path_end - start;
        Path::from_window(&self.changes.path_bytes[start..], len)
    }

    /// The register's leaves.
    pub fn leaves(self) -> impl ExactSizeIterator<Item = LeafRef<'a>> + Clone + 'a {
        let changes = self.changes;
        let start = self.start().1;
        (start..self.entry().leaves_end).map(move |j| LeafRef::new(changes, j))
    }

    /// The register as document types.
    pub fn to_owned(self) -> PathLeaves {
        PathLeaves {
            section: self.section(),
            path: self.path(),
            leaves: self.leaves().map(LeafRef::to_leaf).collect(),
        }
    }
}

/// One leaf of a [`Changes`].
#[derive(Clone, Copy)]
pub struct LeafRef<'a> {
    /// Canonical CBOR; empty for a tombstone.
    value: &'a [u8],
    /// `value` and the rest of the buffer after it, to copy short values
    /// from as whole words.
    window: &'a [u8],
    pub replica: &'a ReplicaId,
    /// `replica`'s index in the message's table.
    pub(crate) index: u32,
    pub counter: u64,
    pub ts: Timestamp,
}

impl<'a> LeafRef<'a> {
    fn new(changes: &'a Changes, j: usize) -> Self {
        let e = changes.leaves[j];
        let start = match j.checked_sub(1) {
            Some(prev) => changes.leaves[prev].value_end,
            None => 0,
        };
        LeafRef {
            value: &changes.value_bytes[start..e.value_end],
            window: &changes.value_bytes[start..],
            // Indexes are checked when a message is read, and `push` adds
            // what it names.
            replica: &changes.replicas[e.replica as usize],
            index: e.replica,
            counter: e.counter,
            ts: Timestamp {
                ms: e.ms,
                logical: e.logical,
            },
        }
    }

    pub fn is_tombstone(self) -> bool {
        self.value.is_empty()
    }

    /// The value's canonical CBOR, `None` for a tombstone.
    pub fn value_cbor(self) -> Option<&'a [u8]> {
        (!self.value.is_empty()).then_some(self.value)
    }

    /// Whether this leaf's dot is `dot`.
    pub fn has_dot(self, dot: &Dot) -> bool {
        self.counter == dot.counter && *self.replica == dot.replica
    }

    /// Whether `vv` has seen this leaf's write.
    pub fn seen_by(self, vv: &VersionVector) -> bool {
        vv.get(self.replica) >= self.counter
    }

    pub fn dot(self) -> Dot {
        Dot::new(self.replica.clone(), self.counter)
    }

    /// The leaf as the document holds it.
    pub fn to_leaf(self) -> Leaf {
        Leaf {
            value: (!self.value.is_empty())
                .then(|| LeafValue::from_canonical_window(self.window, self.value.len())),
            dot: self.dot(),
            ts: self.ts,
        }
    }
}

impl PartialEq for LeafRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
            && self.counter == other.counter
            && self.ts == other.ts
            && self.replica == other.replica
    }
}

/// Equal when they carry the same registers and vectors, however their
/// tables are ordered.
impl PartialEq for Changes {
    fn eq(&self, other: &Self) -> bool {
        self.vv == other.vv
            && self.since == other.since
            && self.partial == other.partial
            && self.len() == other.len()
            && self.registers().zip(other.registers()).all(|(a, b)| {
                a.section() == b.section()
                    && a.path_encoded() == b.path_encoded()
                    && a.leaves().eq(b.leaves())
            })
    }
}

impl fmt::Debug for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Changes")
            .field("vv", &self.vv)
            .field("since", &self.since)
            .field("partial", &self.partial)
            .field("registers", &self.registers().collect::<Vec<_>>())
            .finish()
    }
}

impl fmt::Debug for RegisterRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}: ", self.section(), self.path())?;
        f.debug_list().entries(self.leaves()).finish()
    }
}

impl fmt::Debug for LeafRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf")
            .field("value", &self.value_cbor().map(LeafValue::from_canonical))
            .field("dot", &self.dot())
            .field("ts", &self.ts)
            .finish()
    }
}

impl FromIterator<PathLeaves> for Changes {
    /// Registers only; set the vectors after.
    fn from_iter<I: IntoIterator<Item = PathLeaves>>(iter: I) -> Self {
        let mut changes = Changes::default();
        for pl in iter {
            changes.push(pl.section, &pl.path, &pl.leaves);
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Patch;
    use crate::Shadow;

    fn replica(id: &str) -> ReplicaId {
        ReplicaId::new(id).expect("valid replica id")
    }

    /// A shadow where two replicas wrote, one of them a delete, and a
    /// register holds two concurrent leaves.
    fn shadow() -> Shadow {
        let patch = |v: serde_json::Value| Patch::Merge(v.as_object().cloned().unwrap_or_default());
        let (a, b) = (replica("a:dev"), replica("b:local"));
        let mut x = Shadow::new();
        x.write(
            &a,
            Section::Reported,
            &patch(serde_json::json!({"t": 1, "gone": 2})),
            10,
        );
        let mut y = Shadow::new();
        y.write(
            &b,
            Section::Reported,
            &patch(serde_json::json!({"t": "b", "n": {"k": [1, null]}})),
            20,
        );
        x.write(
            &a,
            Section::Reported,
            &patch(serde_json::json!({"gone": null})),
            30,
        );
        x.merge(&y.changes_since(&VersionVector::new()));
        x
    }

    /// Every register pushed comes back out as it went in: paths, values,
    /// tombstones, dots and timestamps, with concurrent leaves in order.
    #[test]
    fn registers_come_back_as_pushed() {
        let doc = shadow();
        let mut expected = Vec::new();
        let mut changes = Changes::new(doc.vv().clone(), VersionVector::new(), false);
        for section in Section::ALL {
            for (path, leaves) in doc.section(section) {
                changes.push(section, path, leaves);
                expected.push(PathLeaves {
                    section,
                    path: path.clone(),
                    leaves: leaves.clone(),
                });
            }
        }
        let back: Vec<PathLeaves> = changes.registers().map(RegisterRef::to_owned).collect();
        assert_eq!(back, expected);
        assert!(
            back.iter().any(|pl| pl.leaves.len() == 2),
            "a concurrent register"
        );
        assert!(
            back.iter().any(|pl| pl.leaves[0].is_tombstone()),
            "a tombstone"
        );
        assert_eq!(changes.replicas.len(), 2, "each replica once in the table");
        assert_eq!(
            changes,
            expected.into_iter().collect::<Changes>().with_vv(doc.vv())
        );
    }

    /// Equality is about the registers, not the layout: the same leaves
    /// with the table in another order are equal; another counter is not.
    #[test]
    fn equality_ignores_the_order_of_the_table() {
        let doc = shadow();
        let changes = doc.changes_since(&VersionVector::new());
        let mut swapped = changes.clone();
        swapped.replicas.reverse();
        for leaf in &mut swapped.leaves {
            leaf.replica = 1 - leaf.replica;
        }
        assert_ne!(changes.replicas, swapped.replicas);
        assert_eq!(changes, swapped);
        let mut other = changes.clone();
        if let Some(leaf) = other.leaves.last_mut() {
            leaf.counter += 1;
        }
        assert_ne!(changes, other);
    }

    impl Changes {
        fn with_vv(mut self, vv: &VersionVector) -> Changes {
            self.vv = vv.clone();
            self
        }
    }
}
