//! Local writes: a [`Patch`] of JSON turned into leaves under one dot.
//!
//! A patch is applied as AWS applies one (`null` deletes, objects merge,
//! a scalar replaces whatever stood there), but as leaves: each path it
//! touches gets a one-leaf register, and replaced values become
//! tombstones rather than vanishing, so that the write also overrides
//! them on replicas that still hold them.

use serde_json::{Map, Value};

use super::shadow::Shadow;
use crate::leaf::{Leaf, Section};
use crate::name::ReplicaId;
use crate::path::Path;
use crate::value::LeafValue;
use crate::version::Dot;

/// A section's patch: merge keys into it, or clear it (`"desired": null`).
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    Merge(Map<String, Value>),
    Clear,
}

/// Does this register hold a value, not only tombstones?
fn live(register: &[Leaf]) -> bool {
    register.iter().any(|l| !l.is_tombstone())
}

impl Shadow {
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
            if live(reg) {
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
                    if self.section(section).get(&path).is_some_and(|r| live(r)) {
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
}
