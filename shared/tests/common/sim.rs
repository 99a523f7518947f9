//! A network simulator running the real sync protocol between replicas.
//!
//! A sender ships `changes_since(the vector it last heard from the
//! receiver)` (or, as an agent catching up does, `changes_since_limited`
//! of it); messages go into a bag, and the network delivers them in any
//! order, duplicates them, drops them, or replays any message ever sent.
//! After every step the invariants of [`Sim::check_invariants`] are checked.
//!
//! Tombstones are collected with a stable vector each replica may soundly
//! use: the pointwise minimum of the vectors it *knows* the other replicas
//! had, where knowing means having merged a whole-state message carrying
//! that vector (directly, or through a replica that had). This is what the
//! broker does (it builds `stable` from the vectors of the `SyncUp`s it
//! merged and ships it with the `SyncDown` computed from that same state);
//! each message here carries its sender's whole row of known vectors, which
//! lets a replica collect at least as early as the broker's scheme would.
//! A chunk cut short by `changes_since_limited` (`Changes::partial`) is
//! merged but, as at the broker, teaches nothing about stability: its
//! vector can cover a delete while a write concurrent with it is still in
//! the chunks to come.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use shade_shared::document::Path;
use shade_shared::merge::stable_vector;
use shade_shared::{Changes, Dot, Leaf, Patch, ReplicaId, Section, Shadow, VersionVector};

use super::{claims, leaves_with_dot, register, replica_ids, Op};

/// Wall time of the first write; replicas add their own clock skew.
const EPOCH_MS: u64 = 1_700_000_000_000;

/// Which replicas talk to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topology {
    /// The broker and one agent.
    Pair,
    /// Two agents, each talking only to the broker.
    Star,
    /// Three replicas, every pair talking.
    Mesh,
}

impl Topology {
    pub(crate) fn replicas(self) -> usize {
        match self {
            Topology::Pair => 2,
            Topology::Star | Topology::Mesh => 3,
        }
    }

    /// Directed links, sender first.
    fn links(self) -> Vec<(usize, usize)> {
        match self {
            Topology::Pair => vec![(0, 1), (1, 0)],
            Topology::Star => vec![(0, 1), (1, 0), (0, 2), (2, 0)],
            Topology::Mesh => vec![(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)],
        }
    }

    /// Where `Op::Send { limit: Some(_) }` sends a chunk, as shade does: an
    /// agent catching up with the broker. Everything an agent holds that it
    /// did not write came from the broker, which is what makes a chunk's
    /// vector cover the causal past of the leaves it carries. (A replica
    /// relaying third parties' writes, as in a mesh, could ship a leaf
    /// without its past; `changes_since_limited` is not meant for that.)
    fn chunks(self, from: usize, to: usize) -> bool {
        self != Topology::Mesh && from != 0 && to == 0
    }
}

/// A sync message in flight.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) changes: Changes,
    /// The sender's row of known vectors (see the module docs).
    known: Vec<VersionVector>,
}

/// One replica and its protocol state.
#[derive(Debug, Clone)]
pub(crate) struct Replica {
    pub(crate) id: ReplicaId,
    pub(crate) shadow: Shadow,
    /// `heard[j]`: the join of the vectors received from replica `j`; what
    /// messages to `j` are computed against.
    heard: Vec<VersionVector>,
    /// `known[j]`: a vector of replica `j` whose whole state has been merged
    /// here (directly or transitively); `known[self]` is our own vector.
    known: Vec<VersionVector>,
    /// Clock skew of this replica's wall clock.
    skew_ms: u64,
}

/// A local write as it happened: its dot, the writer's vector right after
/// it (the write's causal context), the leaves it wrote, and what its
/// patch claimed.
#[derive(Debug, Clone)]
pub(crate) struct WriteRecord {
    pub(crate) dot: Dot,
    pub(crate) ctx: VersionVector,
    pub(crate) leaves: Vec<(Section, Path, Leaf)>,
    /// Paths whose whole subtree the patch replaced (a scalar or `null`
    /// there; the root for a clear): nothing live at or below them that
    /// the write had seen may survive it.
    subtrees: Vec<(Section, Path)>,
    /// Paths where the patch put an object: a live leaf the write had seen
    /// exactly there (a scalar) may not survive it.
    objects: Vec<(Section, Path)>,
}

/// A run of the protocol over a topology.
#[derive(Debug, Clone)]
pub(crate) struct Sim {
    pub(crate) replicas: Vec<Replica>,
    topology: Topology,
    links: Vec<(usize, usize)>,
    /// Messages in flight.
    bag: Vec<Msg>,
    /// Every message ever sent, for replays.
    pub(crate) sent: Vec<Msg>,
    /// Milliseconds since [`EPOCH_MS`] on the global clock.
    now_ms: u64,
    pub(crate) writes: Vec<WriteRecord>,
    /// Index of each write in `writes` by its dot.
    by_dot: BTreeMap<Dot, usize>,
    /// Indices of the writes that wrote a leaf at a path, oldest first.
    by_path: BTreeMap<(Section, Path), Vec<usize>>,
    /// Whether `Op::Collect` runs (off, a run is the same run without it).
    pub(crate) collect: bool,
    /// Per replica: the leaves (index of the write, index of the leaf in
    /// it) it covers but does not hold, dropped as replaced or collected.
    /// They must never come back.
    dead: Vec<BTreeSet<(usize, usize)>>,
    /// A chunk arrived since the last full exchange: a replica may cover a
    /// write whose replacement is still to come.
    chunked: bool,
    /// Replicas whose state changed since their invariants were checked.
    dirty: Vec<bool>,
    /// Whether [`Sim::check_invariants`] checks anything (a run compared
    /// with another one that checks them may skip it).
    pub(crate) checks: bool,
}

impl Sim {
    pub(crate) fn new(topology: Topology, skews: [u64; 3], collect: bool) -> Self {
        let n = topology.replicas();
        let replicas = replica_ids(n)
            .into_iter()
            .enumerate()
            .map(|(i, id)| Replica {
                id,
                shadow: Shadow::new(),
                heard: vec![VersionVector::new(); n],
                known: vec![VersionVector::new(); n],
                skew_ms: skews[i],
            })
            .collect();
        Sim {
            replicas,
            topology,
            links: topology.links(),
            bag: Vec::new(),
            sent: Vec::new(),
            now_ms: 0,
            writes: Vec::new(),
            by_dot: BTreeMap::new(),
            by_path: BTreeMap::new(),
            collect,
            dead: vec![BTreeSet::new(); n],
            chunked: false,
            dirty: vec![false; n],
            checks: true,
        }
    }

    /// Runs `ops`, checking the invariants after each step.
    pub(crate) fn run(&mut self, ops: &[Op]) -> Result<(), TestCaseError> {
        for op in ops {
            self.step(op)?;
            self.check_invariants()?;
        }
        Ok(())
    }

    pub(crate) fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let n = self.replicas.len();
        match op {
            Op::Write {
                replica,
                section,
                patch,
                advance_ms,
            } => {
                self.now_ms += advance_ms;
                self.write(replica % n, *section, patch);
            }
            Op::Send { link, limit } => {
                let (from, to) = self.links[link % self.links.len()];
                let limit = limit.filter(|_| self.topology.chunks(from, to));
                let msg = self.message(from, to, false, limit);
                self.bag.push(msg.clone());
                self.sent.push(msg);
            }
            Op::Deliver { pick, duplicate } => {
                if !self.bag.is_empty() {
                    let i = pick % self.bag.len();
                    let msg = if *duplicate {
                        self.bag[i].clone()
                    } else {
                        self.bag.swap_remove(i)
                    };
                    self.deliver(&msg)?;
                }
            }
            Op::Drop { pick } => {
                if !self.bag.is_empty() {
                    let i = pick % self.bag.len();
                    self.bag.swap_remove(i);
                }
            }
            Op::Replay { pick } => {
                if !self.sent.is_empty() {
                    let msg = self.sent[pick % self.sent.len()].clone();
                    self.deliver(&msg)?;
                }
            }
            Op::Collect { replica } => {
                if self.collect {
                    self.collect_at(replica % n);
                }
            }
            Op::Quiet => {
                for (from, to) in self.links.clone() {
                    let msg = self.message(from, to, false, None);
                    self.deliver(&msg)?;
                }
            }
        }
        Ok(())
    }

    /// A local write of replica `i` at its own wall time; returns its dot.
    pub(crate) fn write(&mut self, i: usize, section: Section, patch: &Patch) -> Option<Dot> {
        let r = &mut self.replicas[i];
        let now = EPOCH_MS + self.now_ms + r.skew_ms;
        let dot = r.shadow.write(&r.id, section, patch, now)?;
        self.dirty[i] = true;
        let leaves = leaves_with_dot(&r.shadow, &dot);
        r.known[i] = r.shadow.vv().clone();
        let (mut subtrees, mut objects) = (Vec::new(), Vec::new());
        match patch {
            Patch::Clear => subtrees.push((section, Path::from(Vec::new()))),
            Patch::Merge(map) => claims(section, &mut Vec::new(), map, &mut subtrees, &mut objects),
        }
        let index = self.writes.len();
        self.by_dot.insert(dot.clone(), index);
        for (s, p, _) in &leaves {
            self.by_path.entry((*s, p.clone())).or_default().push(index);
        }
        self.writes.push(WriteRecord {
            dot: dot.clone(),
            ctx: r.shadow.vv().clone(),
            leaves,
            subtrees,
            objects,
        });
        Some(dot)
    }

    /// The message `from` sends `to` now: everything since the vector it
    /// last heard from `to` (at most `limit` registers), or with `full` its
    /// whole state.
    pub(crate) fn message(&self, from: usize, to: usize, full: bool, limit: Option<usize>) -> Msg {
        let r = &self.replicas[from];
        let since = if full {
            VersionVector::new()
        } else {
            r.heard[to].clone()
        };
        let changes = match limit {
            Some(limit) => r.shadow.changes_since_limited(&since, limit),
            None => r.shadow.changes_since(&since),
        };
        Msg {
            from,
            to,
            changes,
            known: r.known.clone(),
        }
    }

    /// Merges `msg` at its receiver and updates what it heard and knows.
    pub(crate) fn deliver(&mut self, msg: &Msg) -> Result<(), TestCaseError> {
        self.dirty[msg.to] = true;
        // A message's vector is the causal context of its leaves: it covers
        // every one of them (a receiver refuses a message where it does not).
        for register in msg.changes.registers() {
            for leaf in register.leaves() {
                prop_assert!(
                    leaf.counter > 0 && leaf.seen_by(&msg.changes.vv),
                    "a message carries {:?} beyond its vector {:?}",
                    leaf.dot(),
                    msg.changes.vv
                );
            }
        }
        let r = &mut self.replicas[msg.to];
        let outcome = r.shadow.merge(&msg.changes);
        // Messages are computed against vectors the receiver really had.
        prop_assert!(
            !outcome.gap,
            "a gap on a message computed against a past vector"
        );
        r.heard[msg.from].join(&msg.changes.vv);
        if !msg.changes.partial {
            r.known[msg.from].join(&msg.changes.vv);
            for (mine, theirs) in r.known.iter_mut().zip(&msg.known) {
                mine.join(theirs);
            }
        } else {
            self.chunked = true;
        }
        r.known[msg.to] = r.shadow.vv().clone();
        Ok(())
    }

    /// The stable vector replica `i` may use: the minimum of what it knows.
    pub(crate) fn known_stable(&self, i: usize) -> VersionVector {
        stable_vector(&self.replicas[i].known)
    }

    pub(crate) fn collect_at(&mut self, i: usize) -> usize {
        let stable = self.known_stable(i);
        self.dirty[i] = true;
        self.replicas[i].shadow.collect_tombstones(&stable)
    }

    /// Every message in flight arrives, in the order they are in the bag.
    pub(crate) fn drain(&mut self) -> Result<(), TestCaseError> {
        for msg in std::mem::take(&mut self.bag) {
            self.deliver(&msg)?;
            self.check_invariants()?;
        }
        Ok(())
    }

    /// Every link delivers its current whole message, twice around, with
    /// nothing lost: enough for every replica to see every write in all
    /// topologies. Afterwards the strict invariants hold again.
    pub(crate) fn full_exchange(&mut self, full: bool) -> Result<(), TestCaseError> {
        for _ in 0..2 {
            for (from, to) in self.links.clone() {
                let msg = self.message(from, to, full, None);
                self.deliver(&msg)?;
                self.check_invariants()?;
            }
        }
        self.chunked = false;
        self.dirty.fill(true);
        self.check_invariants()
    }

    pub(crate) fn topology(&self) -> Topology {
        self.topology
    }

    pub(crate) fn shadow(&self, i: usize) -> &Shadow {
        &self.replicas[i].shadow
    }

    pub(crate) fn write_of(&self, dot: &Dot) -> Option<&WriteRecord> {
        self.by_dot.get(dot).map(|&i| &self.writes[i])
    }

    /// Had the writer of `later` seen `earlier` (and is it another write)?
    pub(crate) fn saw(&self, later: &Dot, earlier: &Dot) -> bool {
        later != earlier && self.write_of(later).is_some_and(|w| w.ctx.covers(earlier))
    }

    /// The invariants of every reachable state, at every replica whose
    /// state changed since they were last checked:
    ///
    /// 1. a register holds concurrent leaves only: none whose writer had
    ///    seen another of them;
    /// 2. a leaf a replica held and then dropped never comes back there, so
    ///    neither does a deleted or overwritten value, whatever stale
    ///    messages arrive;
    /// 3. nothing is lost: each leaf of each write a replica's vector covers
    ///    is held there, or *accounted for*: replaced by a write that had
    ///    seen it whose leaf there is itself held or accounted for (or,
    ///    with collection, it was a tombstone). After a chunk, a replacement
    ///    not covered yet is still to come and counts as accounted for;
    /// 4. except after a chunk, a replica that covers a write holds nothing
    ///    else that write had seen at the paths it wrote, nothing live it
    ///    had seen at or below a path where it wrote a scalar or `null`, or
    ///    where it wrote an object.
    pub(crate) fn check_invariants(&mut self) -> Result<(), TestCaseError> {
        for i in 0..self.replicas.len() {
            if !std::mem::take(&mut self.dirty[i]) || !self.checks {
                continue;
            }
            let r = &self.replicas[i];
            self.check_concurrent_registers(r)?;
            self.check_accounted(r)?;
            if !self.chunked {
                self.check_claims(r)?;
            }
            let dead = &mut self.dead[i];
            for (wi, w) in self.writes.iter().enumerate() {
                let covered = r.shadow.vv().covers(&w.dot);
                for (li, (section, path, _)) in w.leaves.iter().enumerate() {
                    let held = holds(&r.shadow, *section, path, &w.dot);
                    prop_assert!(
                        !(held && dead.contains(&(wi, li))),
                        "{} got back {:?} at {:?} {:?}, which it had dropped",
                        r.id.as_str(),
                        w.dot,
                        section,
                        path
                    );
                    // Everything a replica covers but does not hold is dead there.
                    if covered && !held {
                        dead.insert((wi, li));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_concurrent_registers(&self, r: &Replica) -> Result<(), TestCaseError> {
        for s in Section::ALL {
            for (path, reg) in r.shadow.section(s) {
                for a in reg {
                    for b in reg {
                        prop_assert!(
                            !self.saw(&a.dot, &b.dot),
                            "{} holds at {:?} {:?} both {:?} and {:?}, which had seen it",
                            r.id.as_str(),
                            s,
                            path,
                            b,
                            a
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn check_accounted(&self, r: &Replica) -> Result<(), TestCaseError> {
        let vv = r.shadow.vv();
        for ((section, path), writes) in &self.by_path {
            // Newest first: a replacement is decided before what it replaced.
            let mut accounted: BTreeMap<usize, bool> = BTreeMap::new();
            for &w in writes.iter().rev() {
                let write = &self.writes[w];
                let ok = if holds(&r.shadow, *section, path, &write.dot) {
                    true
                } else if !vv.covers(&write.dot) {
                    self.chunked
                } else {
                    let tombstone = write
                        .leaves
                        .iter()
                        .any(|(s, p, l)| s == section && p == path && l.is_tombstone());
                    (self.collect && tombstone)
                        || writes.iter().any(|&u| {
                            u > w
                                && self.writes[u].ctx.covers(&write.dot)
                                && accounted.get(&u).copied().unwrap_or(false)
                        })
                };
                accounted.insert(w, ok);
                prop_assert!(
                    ok || !vv.covers(&write.dot),
                    "{} covers {:?} but lost its leaf at {:?} {:?} to a concurrent write: {:?}",
                    r.id.as_str(),
                    write.dot,
                    section,
                    path,
                    register(&r.shadow, *section, path)
                );
            }
        }
        Ok(())
    }

    fn check_claims(&self, r: &Replica) -> Result<(), TestCaseError> {
        for w in &self.writes {
            if !r.shadow.vv().covers(&w.dot) {
                continue;
            }
            let seen = |l: &Leaf| l.dot != w.dot && w.ctx.covers(&l.dot);
            for (section, path, _) in &w.leaves {
                let stale = register(&r.shadow, *section, path).iter().find(|l| seen(l));
                prop_assert!(
                    stale.is_none(),
                    "{} holds {:?} at {:?} {:?}, which write {:?} had replaced",
                    r.id.as_str(),
                    stale,
                    section,
                    path,
                    w.dot
                );
            }
            let seen_live = |l: &Leaf| !l.is_tombstone() && seen(l);
            for (section, top) in &w.subtrees {
                for (path, reg) in r.shadow.section(*section).range(top.clone()..) {
                    if !path.starts_with(top) {
                        break;
                    }
                    let stale = reg.iter().find(|l| seen_live(l));
                    prop_assert!(
                        stale.is_none(),
                        "{} holds {:?} at {:?} {:?} below {:?}, which write {:?} had replaced",
                        r.id.as_str(),
                        stale,
                        section,
                        path,
                        top,
                        w.dot
                    );
                }
            }
            for (section, path) in &w.objects {
                let stale = register(&r.shadow, *section, path)
                    .iter()
                    .find(|l| seen_live(l));
                prop_assert!(
                    stale.is_none(),
                    "{} holds {:?} at {:?} {:?}, where write {:?} put an object",
                    r.id.as_str(),
                    stale,
                    section,
                    path,
                    w.dot
                );
            }
        }
        Ok(())
    }
}

/// Does `shadow` hold a leaf with `dot` at `path`?
fn holds(shadow: &Shadow, section: Section, path: &Path, dot: &Dot) -> bool {
    register(shadow, section, path)
        .iter()
        .any(|l| &l.dot == dot)
}
