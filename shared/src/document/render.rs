//! A section as JSON: the state a client sees, AWS metadata, the conflicts
//! behind it, and AWS's delta between two such states.
//!
//! A render depends only on the registers and the policy, never on which
//! replica renders or in what order it merged, so every replica that holds
//! the same state shows the same JSON and reports the same conflicts.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::policy::Policy;
use super::shadow::Shadow;
use crate::leaf::{Leaf, Section};
use crate::name::ReplicaId;
use crate::path::Path;

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

/// A section rendered as JSON, with AWS metadata and conflicts.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub state: Value,
    pub metadata: Value,
    pub conflicts: Vec<Conflict>,
}

impl Shadow {
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
