//! The merge: how leaves from another replica join local state.
//!
//! A replica sends, for every path where it holds a leaf the peer has not
//! seen, that path's whole register, plus its own version vector (its
//! *causal context*). The receiver joins each such path:
//!
//! 1. a remote leaf whose dot the local vector already covers is skipped:
//!    it is here, or something that saw it replaced it (idempotence, and
//!    why a delete never comes back from a stale replica);
//! 2. a local leaf whose dot the sender's vector covers, but which the
//!    sender no longer holds, was written over by the sender: dropped;
//! 3. what remains on both sides was written without knowledge of the
//!    other: concurrent. All of it is kept in the register; the section's
//!    [`Policy`](crate::document::Policy) picks which one is shown and the
//!    rest are the recorded conflicts, until a write that has seen them all
//!    replaces the register.
//!
//! This is the join of a multi-value register under a dotted causal
//! context (Almeida, Shoker, Baquero, "Delta state replicated data types",
//! 2018): commutative, associative and idempotent, so sync messages may be
//! lost, repeated or reordered and replicas still converge once all arrive.
//!
//! A message is computed against the vector the sender last heard from the
//! receiver (`since`); after merging it, the receiver's vector includes the
//! sender's. That is only sound if the receiver has seen all of `since`:
//! otherwise registers the sender left out (because it believed the
//! receiver had them) would be covered by the joined vector yet missing.
//! Such a message is refused as a *gap*.
//!
//! Tombstones are dropped by [`Shadow::collect_tombstones`] once a *stable*
//! vector covers them: the pointwise minimum, over every replica of the
//! shadow, of a vector of that replica *whose changes this replica has
//! already merged* (directly, or through a replica that had: the broker
//! builds `stable` from the vectors of the `SyncUp`s it merged, and an
//! agent applies it after merging the `SyncDown` that carries it). Then no
//! replica can still hold a value the delete has not seen, and every write
//! concurrent with the delete is already here, sharing its register.
//!
//! The minimum of the replicas' *current* vectors is not enough. X deletes
//! `k` while Y writes `k` concurrently; Y merges the delete, holding both.
//! Every current vector now covers the tombstone, but X has not merged Y's
//! write: X drops its lone tombstone, then merges Y's write alone (the
//! tombstone it brings is covered, so skipped), while Y keeps both. No
//! later delta carries `k` again (neither side has a dot the other lacks),
//! so the two render `k` differently for good. The same goes for a vector
//! taken from a message that was not merged, such as one refused as a gap.

use std::cell::Cell;

pub use crate::changes::{Changes, LeafRef, PathLeaves, RegisterRef};

use crate::document::Shadow;
use crate::leaf::{Leaf, Register, Section};
use crate::name::ReplicaId;
use crate::path::Path;
use crate::version::{Dot, VersionVector};

/// What a merge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Paths whose register changed.
    pub changed: Vec<(Section, Path)>,
    /// The message was computed for a peer that had seen more than we have
    /// (`since` is not covered by our vector): nothing was merged, and the
    /// sender should be told our real vector.
    pub gap: bool,
}

impl MergeOutcome {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
    }
}

impl Shadow {
    /// Everything a peer whose vector is `peer` has not seen, with our vector.
    ///
    /// Uses the dot index: cost grows with what is new to the peer, not
    /// with the size of the document.
    pub fn changes_since(&self, peer: &VersionVector) -> Changes {
        let mut wanted: std::collections::BTreeSet<&(Section, Path)> = Default::default();
        for (replica, by_counter) in self.index.replicas() {
            let seen = peer.get(replica);
            for (_, paths) in by_counter.range(seen.saturating_add(1)..) {
                wanted.extend(paths.iter());
            }
        }
        let mut changes = Changes::new(self.vv.clone(), peer.clone(), false);
        for (section, path) in wanted {
            self.push_unseen(&mut changes, *section, path, peer);
        }
        changes
    }

    /// Like [`Shadow::changes_since`], but stops after about `max_paths`
    /// registers, so a replica that was offline for long can catch up in
    /// messages of bounded size. The returned `vv` then covers only what
    /// the message is complete for (dots in counter order per replica), so
    /// the receiver will ask for, and the sender send, the rest next time.
    /// A single write's paths are never split.
    ///
    /// A chunk is sound to merge only when `peer` covers everything this
    /// replica holds that it did not write itself (an agent catching up
    /// with its broker, its only source). Otherwise a leaf can arrive
    /// without the causal past the vector claims, and the receiver keep the
    /// older leaf it replaced beside it for good.
    ///
    /// A chunk cut short has a `vv` this replica never had: it covers the
    /// deletes merged here while leaving out local writes made before them.
    /// It must not feed a stable vector ([`Shadow::collect_tombstones`]):
    /// the receiver could drop a tombstone whose concurrent write is still
    /// in the chunks to come, and the replicas then diverge for good.
    pub fn changes_since_limited(&self, peer: &VersionVector, max_paths: usize) -> Changes {
        let mut wanted: std::collections::BTreeSet<&(Section, Path)> = Default::default();
        let mut context = peer.clone();
        let mut complete = true;
        'replicas: for (replica, by_counter) in self.index.replicas() {
            let seen = peer.get(replica);
            for (&counter, paths) in by_counter.range(seen.saturating_add(1)..) {
                if wanted.len() >= max_paths.max(1) {
                    complete = false;
                    break 'replicas;
                }
                // Only paths still holding this very dot: the chunk must be
                // complete for every dot its vector claims, and no more.
                let holds = |(section, path): &&(Section, Path)| {
                    self.section(*section).get(path).is_some_and(|reg| {
                        reg.iter()
                            .any(|l| l.dot.counter == counter && l.dot.replica == *replica)
                    })
                };
                wanted.extend(paths.iter().filter(holds));
                context.add(&Dot::new(replica.clone(), counter));
            }
            context.add(&Dot::new(replica.clone(), self.vv.get(replica)));
        }
        let vv = if complete { self.vv.clone() } else { context };
        let mut changes = Changes::new(vv, peer.clone(), !complete);
        for (section, path) in wanted {
            if let Some(leaves) = self.section(*section).get(path) {
                changes.push(*section, path, leaves);
            }
        }
        changes
    }

    /// Adds the register at `path` if it holds a leaf `peer` has not seen
    /// (the index may name paths whose leaf was since written over).
    fn push_unseen(
        &self,
        changes: &mut Changes,
        section: Section,
        path: &Path,
        peer: &VersionVector,
    ) {
        if let Some(leaves) = self.section(section).get(path) {
            if leaves.iter().any(|l| !peer.covers(&l.dot)) {
                changes.push(section, path, leaves);
            }
        }
    }

    /// Joins `remote` into this replica. See the module docs for the rules.
    pub fn merge(&mut self, remote: &Changes) -> MergeOutcome {
        if !self.vv.dominates(&remote.since) {
            return MergeOutcome {
                changed: Vec::new(),
                gap: true,
            };
        }
        let mut outcome = MergeOutcome {
            changed: Vec::with_capacity(remote.len()),
            gap: false,
        };
        // Index entries of the leaves taken, added at the end: a message's
        // leaves mostly share a few dots, so they go in one search per dot.
        // Each names its path by its place in `changed`.
        let mut taken: Vec<(&ReplicaId, u64, Section, usize)> = Vec::with_capacity(remote.len());
        // What we have seen of each replica the message names, looked up
        // once rather than per leaf (our vector changes only at the end).
        let seen: Vec<u64> = remote.replicas.iter().map(|r| self.vv.get(r)).collect();
        let context = Context {
            remote_vv: &remote.vv,
            seen: &seen,
            last: Cell::new(None),
        };
        for register in remote.registers() {
            for leaf in register.leaves() {
                self.clock.observe(leaf.ts);
            }
            self.join_path(register, &context, &mut taken, &mut outcome.changed);
        }
        self.index.add_all(taken, &outcome.changed);
        if self.index.wants_rebuild() {
            let (d, r) = (&self.desired, &self.reported);
            self.index
                .rebuild([(Section::Desired, d), (Section::Reported, r)]);
        }
        self.vv.join(&remote.vv);
        outcome
    }

    /// Joins one remote register into ours; if ours changed, pushes its
    /// path to `changed`, and the remote leaves it took to `taken` for the
    /// dot index.
    ///
    /// The path is built once from the message and searched by reference:
    /// a register that exists here (the usual case once a replica has
    /// synced) is replaced in place, and only a new one costs a copy of
    /// the path and a second search.
    fn join_path<'m>(
        &mut self,
        remote: RegisterRef<'m>,
        context: &Context<'_>,
        taken: &mut Vec<(&'m ReplicaId, u64, Section, usize)>,
        changed: &mut Vec<(Section, Path)>,
    ) {
        let section = remote.section();
        let map = match section {
            Section::Desired => &mut self.desired,
            Section::Reported => &mut self.reported,
        };
        let path = remote.path();
        let remote = remote.leaves();
        let mut ours = map.get_mut(&path);
        let local: &[Leaf] = ours.as_deref().map_or(&[], |reg| reg.as_slice());
        // A dot names one write, so leaves are matched by dot.
        let keep =
            |l: &Leaf| !context.remote_covers(&l.dot) || remote.clone().any(|r| r.has_dot(&l.dot));
        let take = |r: LeafRef<'_>| !context.seen(r) && !local.iter().any(|l| r.has_dot(&l.dot));
        // Most registers of a message are new here or unchanged: decide
        // before allocating anything.
        if local.iter().all(keep) && !remote.clone().any(take) {
            return;
        }
        // Grown as needed: a register of one leaf, the usual result, stays inline.
        let mut joined = Register::new();
        joined.extend(local.iter().filter(|l| keep(l)).cloned());
        let dropped = local.len() - joined.len();
        for r in remote {
            if take(r) && !joined.iter().any(|l| r.has_dot(&l.dot)) {
                joined.push(r.to_leaf());
                taken.push((r.replica, r.counter, section, changed.len()));
            }
        }
        joined.sort_by(|a, b| a.dot.cmp(&b.dot));
        if joined.iter().any(|l| !l.is_tombstone()) {
            self.exists = true;
        }
        // Kept leaves keep their index entries; dropped ones' go stale.
        self.index.note_stale(dropped);
        match ours.take() {
            Some(reg) if !joined.is_empty() => *reg = joined,
            Some(_) => {
                map.remove(&path);
            }
            None => {
                if !joined.is_empty() {
                    map.insert(path.clone(), joined);
                }
            }
        }
        changed.push((section, path));
    }

    /// Drops registers that hold a single tombstone every replica has seen.
    /// `stable` must be the pointwise minimum, over all replicas of this
    /// shadow, of a vector of each whose changes are already merged here
    /// (see the module docs: their current vectors are not safe). Returns
    /// how many were dropped.
    pub fn collect_tombstones(&mut self, stable: &VersionVector) -> usize {
        let mut dropped = 0;
        for section in Section::ALL {
            let dead: Vec<Path> = self
                .section(section)
                .iter()
                .filter(|(_, reg)| {
                    reg.len() == 1 && reg[0].is_tombstone() && stable.covers(&reg[0].dot)
                })
                .map(|(p, _)| p.clone())
                .collect();
            for path in dead {
                self.set_register(section, &path, Register::new());
                dropped += 1;
            }
        }
        dropped
    }
}

/// What a merge looks up for every register, kept for the whole message.
struct Context<'a> {
    /// The sender's vector.
    remote_vv: &'a VersionVector,
    /// Our counter for each replica of the message's table.
    seen: &'a [u64],
    /// The last replica looked up in `remote_vv`, and its counter: the
    /// leaves of a document were mostly written by one or two replicas.
    last: Cell<Option<(&'a ReplicaId, u64)>>,
}

impl Context<'_> {
    /// Have we seen the write of this message leaf?
    fn seen(&self, leaf: LeafRef<'_>) -> bool {
        let ours = self.seen.get(leaf.index as usize).copied();
        ours.unwrap_or(0) >= leaf.counter
    }

    /// Had the sender seen the write of this leaf of ours?
    fn remote_covers(&self, dot: &Dot) -> bool {
        let counter = match self.last.get() {
            Some((replica, counter)) if *replica == dot.replica => counter,
            _ => {
                let found = self.remote_vv.get_key_value(&dot.replica);
                if found.is_some() {
                    self.last.set(found);
                }
                found.map_or(0, |(_, counter)| counter)
            }
        };
        counter >= dot.counter
    }
}

/// Pointwise minimum of vectors: what every one of them has seen.
pub fn stable_vector<'a>(vectors: impl IntoIterator<Item = &'a VersionVector>) -> VersionVector {
    let mut iter = vectors.into_iter();
    let Some(first) = iter.next() else {
        return VersionVector::new();
    };
    let mut stable = first.clone();
    for vv in iter {
        stable = stable
            .iter()
            .map(|(r, c)| (r.clone(), c.min(vv.get(r))))
            .filter(|(_, c)| *c > 0)
            .collect();
    }
    stable
}
