//! The dot index: which paths got a leaf with a given dot.
//!
//! [`Shadow::changes_since`](crate::Shadow::changes_since) must find what a
//! peer lacks without scanning the whole document, so every leaf set into
//! a register is also recorded here under its dot. Entries are only ever
//! appended: when a register is written over, its old entries stay behind
//! as *stale* ones, and readers check a candidate path against its register
//! (which they do anyway). Removing them eagerly cost three quarters of a
//! merge; instead, once stale entries outnumber live leaves, the index is
//! rebuilt from the registers, which keeps it within twice its live size.

use std::collections::BTreeMap;

use crate::leaf::{Register, Section};
use crate::name::ReplicaId;
use crate::path::Path;
use crate::version::Dot;

/// Counter -> paths that got a leaf with that dot (some stale).
pub(crate) type ByCounter = BTreeMap<u64, Vec<(Section, Path)>>;

/// Replica -> [`ByCounter`].
#[derive(Debug, Clone, Default)]
pub(crate) struct DotIndex {
    by_replica: BTreeMap<ReplicaId, ByCounter>,
    entries: usize,
    stale: usize,
}

/// Rebuild once stale entries exceed the live ones by this much.
const SLACK: usize = 1024;

impl DotIndex {
    pub(crate) fn add(&mut self, dot: &Dot, section: Section, path: &Path) {
        let by_counter = match self.by_replica.get_mut(&dot.replica) {
            Some(b) => b,
            None => self.by_replica.entry(dot.replica.clone()).or_default(),
        };
        by_counter
            .entry(dot.counter)
            .or_default()
            .push((section, path.clone()));
        self.entries += 1;
    }

    /// Adds entries `(replica, counter, section, i)`, the path being
    /// `paths[i].1`, one search per run of equal dots.
    pub(crate) fn add_all(
        &mut self,
        entries: Vec<(&ReplicaId, u64, Section, usize)>,
        paths: &[(Section, Path)],
    ) {
        let mut rest = entries.as_slice();
        while let Some(((replica, counter, _, _), _)) = rest.split_first() {
            let run = rest
                .iter()
                .take_while(|(r, c, _, _)| c == counter && r == replica)
                .count();
            let by_counter = match self.by_replica.get_mut(*replica) {
                Some(b) => b,
                None => self.by_replica.entry((*replica).clone()).or_default(),
            };
            let at = by_counter.entry(*counter).or_default();
            at.reserve(run);
            at.extend(rest[..run].iter().filter_map(|&(_, _, section, i)| {
                paths.get(i).map(|(_, path)| (section, path.clone()))
            }));
            self.entries += run;
            rest = &rest[run..];
        }
    }

    /// `n` entries no longer match their register.
    pub(crate) fn note_stale(&mut self, n: usize) {
        self.stale += n;
    }

    /// Whether [`DotIndex::rebuild`] is due.
    pub(crate) fn wants_rebuild(&self) -> bool {
        self.stale > self.entries.saturating_sub(self.stale) + SLACK
    }

    /// Rebuilds from the registers of both sections.
    pub(crate) fn rebuild<'a>(
        &mut self,
        sections: impl IntoIterator<Item = (Section, &'a BTreeMap<Path, Register>)>,
    ) {
        *self = DotIndex::default();
        for (section, map) in sections {
            for (path, register) in map {
                for leaf in register {
                    self.add(&leaf.dot, section, path);
                }
            }
        }
    }

    /// For each replica, its counters and their paths, in order.
    pub(crate) fn replicas(&self) -> impl Iterator<Item = (&ReplicaId, &ByCounter)> {
        self.by_replica.iter()
    }
}
