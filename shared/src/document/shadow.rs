//! The [`Shadow`]: one replica's state of a shadow, and its stored form.
//!
//! Beside its sections a shadow keeps a dot index, so that
//! [`Shadow::changes_since`] finds what a peer lacks without scanning
//! them. Whatever replaces a register keeps the index in step:
//! `set_register` here, the merge in bulk. The index is not stored but
//! rebuilt on load, so stored documents do not depend on its layout.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::index::DotIndex;
use crate::leaf::{Register, Section};
use crate::path::Path;
use crate::version::{Hlc, VersionVector};

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

    use crate::leaf::Register;
    use crate::path::Path;

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

    /// Number of registers (live or tombstoned) in both sections.
    pub fn leaf_count(&self) -> usize {
        self.desired.len() + self.reported.len()
    }
}
