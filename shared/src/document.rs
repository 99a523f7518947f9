//! The shadow document: two sections of leaves, each leaf with its dot,
//! timestamp and tombstone.
//!
//! A section is stored flat, as a map from a leaf's path (the object keys
//! leading to it) to a *register*: the leaves at that path that no replica
//! has yet written over with knowledge of the others. Usually a register
//! holds one leaf; two or more mean concurrent writes, shown as conflicts.
//! A deleted value stays as a tombstone leaf (value `None`) so that a stale
//! replica cannot bring it back, until every replica has seen the delete.
//!
//! Writes and renders live here; the merge of remote leaves, the choice of
//! what to send a peer, and tombstone collection live in [`crate::merge`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::index::DotIndex;
use crate::leaf::{Leaf, Register, Section};
use crate::name::ReplicaId;
use crate::value::LeafValue;
use crate::version::{Dot, Hlc, Timestamp, VersionVector};

pub use crate::path::Path;

/// Which write wins among concurrent ones, per section (config `policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Higher timestamp wins; equal timestamps are broken by replica id.
    #[default]
    Lww,
    /// A write of a broker replica beats one of an agent; else `lww`.
    BrokerWins,
    /// A write of an agent beats one of a broker; else `lww`.
    DeviceWins,
}

impl std::str::FromStr for Policy {
    type Err = String;

    /// The names config files use: `lww`, `broker-wins`, `device-wins`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lww" => Ok(Policy::Lww),
            "broker-wins" => Ok(Policy::BrokerWins),
            "device-wins" => Ok(Policy::DeviceWins),
            other => Err(format!(
                "{other:?} is not one of lww, broker-wins, device-wins"
            )),
        }
    }
}

impl Policy {
    /// The sort key under this policy: the greatest key wins.
    fn key(self, leaf: &Leaf) -> (bool, Timestamp, &ReplicaId, u64) {
        let class = match self {
            Policy::Lww => false,
            Policy::BrokerWins => leaf.dot.replica.is_broker(),
            Policy::DeviceWins => !leaf.dot.replica.is_broker(),
        };
        (class, leaf.ts, &leaf.dot.replica, leaf.dot.counter)
    }

    /// The index of the winning leaf of a non-empty register.
    pub fn winner(self, register: &[Leaf]) -> usize {
        let mut best = 0;
        for (i, leaf) in register.iter().enumerate().skip(1) {
            if self.key(leaf) > self.key(&register[best]) {
                best = i;
            }
        }
        best
    }
}

/// Merge policy of each section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    pub desired: Policy,
    pub reported: Policy,
}

impl Policies {
    pub fn of(&self, section: Section) -> Policy {
        match section {
            Section::Desired => self.desired,
            Section::Reported => self.reported,
        }
    }
}

/// One side of a conflict: a value (`null` for a delete), who wrote it, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictSide {
    pub value: Value,
    pub replica: ReplicaId,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
}

impl ConflictSide {
    fn of(leaf: &Leaf) -> Self {
        Self {
            value: leaf.json(),
            replica: leaf.dot.replica.clone(),
            ts: leaf.ts.ms,
        }
    }
}

/// Two concurrent writes to one path and which one the policy kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub section: Section,
    pub path: String,
    pub kept: ConflictSide,
    pub lost: ConflictSide,
}

/// The state of one shadow as one replica holds it.
///
/// Everything in here but `version` and `exists` is merged state; two
/// replicas that have exchanged all their changes hold equal `desired`,
/// `reported` and therefore equal renders and conflicts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "ShadowData", into = "ShadowData")]
pub struct Shadow {
    pub(crate) desired: BTreeMap<Path, Register>,
    pub(crate) reported: BTreeMap<Path, Register>,
    /// Every write merged here, per replica.
    pub(crate) vv: VersionVector,
    pub(crate) clock: Hlc,
    /// AWS `version`: raised by the broker for every accepted change.
    pub version: u64,
    /// False until the first write, and again after an AWS delete (the
    /// broker answers 404 then), while the record and its version live on.
    pub exists: bool,
    /// Replica -> counter -> paths holding a leaf with that dot. Lets
    /// [`Shadow::changes_since`] find what a peer lacks without a full scan.
    pub(crate) index: DotIndex,
}

/// The stored form of a shadow: the index is rebuilt on load.
#[derive(Serialize, Deserialize)]
struct ShadowData {
    #[serde(with = "section_entries")]
    desired: BTreeMap<Path, Register>,
    #[serde(with = "section_entries")]
    reported: BTreeMap<Path, Register>,
    vv: VersionVector,
    clock: Hlc,
    version: u64,
    exists: bool,
}

/// A section through serde. Binary formats (CBOR, as stored and synced)
/// keep the map keyed by path; human-readable ones get a list of
/// `[path, register]` pairs, because JSON map keys must be strings and a
/// path is a list of keys (joining them with `.` would be ambiguous).
mod section_entries {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Path, Register};

    pub(super) fn serialize<S: Serializer>(
        section: &BTreeMap<Path, Register>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_seq(section.iter())
        } else {
            section.serialize(s)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Path, Register>, D::Error> {
        if d.is_human_readable() {
            Ok(Vec::<(Path, Register)>::deserialize(d)?
                .into_iter()
                .collect())
        } else {
            BTreeMap::deserialize(d)
        }
    }
}

impl From<ShadowData> for Shadow {
    fn from(d: ShadowData) -> Self {
        let mut s = Shadow {
            desired: d.desired,
            reported: d.reported,
            vv: d.vv,
            clock: d.clock,
            version: d.version,
            exists: d.exists,
            index: DotIndex::default(),
        };
        let (d, r) = (&s.desired, &s.reported);
        s.index
            .rebuild([(Section::Desired, d), (Section::Reported, r)]);
        s
    }
}

impl From<Shadow> for ShadowData {
    fn from(s: Shadow) -> Self {
        ShadowData {
            desired: s.desired,
            reported: s.reported,
            vv: s.vv,
            clock: s.clock,
            version: s.version,
            exists: s.exists,
        }
    }
}

/// Equality of merged state (what the convergence laws talk about), plus `exists`.
impl PartialEq for Shadow {
    fn eq(&self, other: &Self) -> bool {
        self.desired == other.desired && self.reported == other.reported && self.vv == other.vv
    }
}

/// A section's patch: merge keys into it, or clear it (`"desired": null`).
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    Merge(Map<String, Value>),
    Clear,
}

/// A section rendered as JSON, with AWS metadata and conflicts.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub state: Value,
    pub metadata: Value,
    pub conflicts: Vec<Conflict>,
}

impl Shadow {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn vv(&self) -> &VersionVector {
        &self.vv
    }

    pub fn clock(&self) -> Hlc {
        self.clock
    }

    pub fn section(&self, section: Section) -> &BTreeMap<Path, Register> {
        match section {
            Section::Desired => &self.desired,
            Section::Reported => &self.reported,
        }
    }

    pub(crate) fn section_mut(&mut self, section: Section) -> &mut BTreeMap<Path, Register> {
        match section {
            Section::Desired => &mut self.desired,
            Section::Reported => &mut self.reported,
        }
    }

    /// Replaces the register at `path`, keeping the dot index in step.
    pub(crate) fn set_register(&mut self, section: Section, path: &Path, register: Register) {
        let old = if register.is_empty() {
            self.section_mut(section).remove(path)
        } else {
            for leaf in &register {
                self.index.add(&leaf.dot, section, path);
            }
            match self.section_mut(section).get_mut(path) {
                Some(slot) => Some(std::mem::replace(slot, register)),
                None => {
                    self.section_mut(section).insert(path.clone(), register);
                    None
                }
            }
        };
        if let Some(old) = old {
            self.index.note_stale(old.len());
            if self.index.wants_rebuild() {
                let (d, r) = (&self.desired, &self.reported);
                self.index
                    .rebuild([(Section::Desired, d), (Section::Reported, r)]);
            }
        }
    }

    fn live(register: &[Leaf]) -> bool {
        register.iter().any(|l| !l.is_tombstone())
    }

    /// Writes `patch` into `section` as a local write of `replica` at wall
    /// time `now_ms`. One write takes one dot, shared by every leaf it
    /// touches. `null` deletes a leaf or subtree; a scalar written over an
    /// object replaces the whole subtree, and the reverse. Returns the dot,
    /// or `None` when the patch touched nothing (an empty object).
    pub fn write(
        &mut self,
        replica: &ReplicaId,
        section: Section,
        patch: &Patch,
        now_ms: u64,
    ) -> Option<Dot> {
        let mut ops: Vec<(Path, Option<LeafValue>)> = Vec::new();
        match patch {
            Patch::Clear => self.delete_ops(section, &Path::root(), &mut ops),
            Patch::Merge(map) => self.patch_ops(section, &Path::root(), map, &mut ops),
        }
        if ops.is_empty() {
            return None;
        }
        let dot = self.vv.next_dot(replica);
        let ts = self.clock.tick(now_ms);
        for (path, value) in ops {
            let leaf = Leaf {
                value,
                dot: dot.clone(),
                ts,
            };
            self.set_register(section, &path, smallvec::smallvec![leaf]);
        }
        self.exists = true;
        Some(dot)
    }

    /// Tombstones for every live leaf at or below `prefix`.
    fn delete_ops(
        &self,
        section: Section,
        prefix: &Path,
        ops: &mut Vec<(Path, Option<LeafValue>)>,
    ) {
        for (path, reg) in self.section(section).range(prefix..) {
            if !path.starts_with(prefix) {
                break;
            }
            if Self::live(reg) {
                ops.push((path.clone(), None));
            }
        }
    }

    fn patch_ops(
        &self,
        section: Section,
        prefix: &Path,
        map: &Map<String, Value>,
        ops: &mut Vec<(Path, Option<LeafValue>)>,
    ) {
        for (key, value) in map {
            let path = prefix.child(key);
            match value {
                Value::Null => self.delete_ops(section, &path, ops),
                Value::Object(inner) => {
                    // An object replaces a scalar that stood at its place.
                    if self
                        .section(section)
                        .get(&path)
                        .is_some_and(|r| Self::live(r))
                    {
                        ops.push((path.clone(), None));
                    }
                    self.patch_ops(section, &path, inner, ops);
                }
                scalar => {
                    // A scalar replaces the subtree below it; its own entry comes first.
                    let mut below = Vec::new();
                    self.delete_ops(section, &path, &mut below);
                    ops.push((path.clone(), LeafValue::from_json(scalar)));
                    ops.extend(below.into_iter().filter(|(p, _)| *p != path));
                }
            }
        }
    }

    /// Renders `section` under `policy`: the JSON state, AWS metadata
    /// (`{"timestamp": secs}` per leaf) and the open conflicts.
    ///
    /// A leaf and a leaf below it can both be live after concurrent writes
    /// (one device set `a` to 5 while another set `a.b`): the newer side
    /// is shown and the other is reported as a conflict, the same way on
    /// every replica.
    pub fn render(&self, section: Section, policy: Policy) -> Rendered {
        let mut conflicts = Vec::new();
        let mut winners: Vec<(&Path, &Leaf)> = Vec::new();
        for (path, reg) in self.section(section) {
            if reg.is_empty() {
                continue;
            }
            let w = policy.winner(reg);
            for (i, lost) in reg.iter().enumerate() {
                if i != w {
                    conflicts.push(Conflict {
                        section,
                        path: path.to_string(),
                        kept: ConflictSide::of(&reg[w]),
                        lost: ConflictSide::of(lost),
                    });
                }
            }
            if !reg[w].is_tombstone() {
                winners.push((path, &reg[w]));
            }
        }
        let shown = resolve_overlaps(&winners, policy, section, &mut conflicts);
        let mut state = Map::new();
        let mut metadata = Map::new();
        for (path, leaf) in shown {
            insert_at(&mut state, path, leaf.json());
            insert_at(
                &mut metadata,
                path,
                serde_json::json!({ "timestamp": leaf.ts.secs() }),
            );
        }
        Rendered {
            state: Value::Object(state),
            metadata: Value::Object(metadata),
            conflicts,
        }
    }

    /// Desired and reported as JSON, the size the document limit counts.
    pub fn state_size(&self) -> usize {
        let d = self.render(Section::Desired, Policy::Lww).state;
        let r = self.render(Section::Reported, Policy::Lww).state;
        serde_json::to_vec(&serde_json::json!({ "desired": d, "reported": r }))
            .map(|v| v.len())
            .unwrap_or(usize::MAX)
    }

    /// Number of registers (live or tombstoned) in both sections.
    pub fn leaf_count(&self) -> usize {
        self.desired.len() + self.reported.len()
    }
}

/// Among live winners sorted by path, hides one side wherever a leaf and
/// leaves below it are both live: the side holding the newest write stays.
fn resolve_overlaps<'a>(
    winners: &[(&'a Path, &'a Leaf)],
    policy: Policy,
    section: Section,
    conflicts: &mut Vec<Conflict>,
) -> Vec<(&'a Path, &'a Leaf)> {
    let mut hidden = vec![false; winners.len()];
    for i in 0..winners.len() {
        if hidden[i] {
            continue;
        }
        let (top, top_leaf) = winners[i];
        let below: Vec<usize> = (i + 1..winners.len())
            .take_while(|&j| winners[j].0.starts_with(top))
            .filter(|&j| !hidden[j])
            .collect();
        if below.is_empty() {
            continue;
        }
        let newest_below = below
            .iter()
            .map(|&j| winners[j].1)
            .max_by(|a, b| policy.key(a).cmp(&policy.key(b)));
        let Some(newest_below) = newest_below else {
            continue;
        };
        if policy.key(top_leaf) > policy.key(newest_below) {
            for &j in &below {
                hidden[j] = true;
                conflicts.push(Conflict {
                    section,
                    path: winners[j].0.to_string(),
                    kept: ConflictSide::of(top_leaf),
                    lost: ConflictSide::of(winners[j].1),
                });
            }
        } else {
            hidden[i] = true;
            conflicts.push(Conflict {
                section,
                path: top.to_string(),
                kept: ConflictSide::of(newest_below),
                lost: ConflictSide::of(top_leaf),
            });
        }
    }
    winners
        .iter()
        .zip(hidden)
        .filter(|(_, h)| !h)
        .map(|(w, _)| *w)
        .collect()
}

/// Sets `value` at `path` inside `root`, making objects on the way (and
/// replacing a non-object that stands where one is needed).
pub fn insert_at(root: &mut Map<String, Value>, path: &Path, value: Value) {
    let mut keys = path.keys().peekable();
    let mut node = root;
    while let Some(key) = keys.next() {
        if keys.peek().is_none() {
            node.insert(key.into_owned(), value);
            return;
        }
        let entry = node
            .entry(key.into_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        node = next;
    }
}

/// AWS's delta: the parts of `desired` that differ from `reported` at the
/// same path, including desired keys with no reported value. `None` when
/// there is no difference.
pub fn delta(desired: &Value, reported: &Value) -> Option<Value> {
    match (desired, reported) {
        (Value::Object(d), Value::Object(r)) => {
            let mut out = Map::new();
            for (k, dv) in d {
                match r.get(k) {
                    Some(rv) => {
                        if let Some(sub) = delta(dv, rv) {
                            out.insert(k.clone(), sub);
                        }
                    }
                    None => {
                        out.insert(k.clone(), dv.clone());
                    }
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        (d, r) if d == r => None,
        (d, _) => Some(d.clone()),
    }
}
