//! Generators and helpers for the merge-law property tests; the network
//! simulator is in [`sim`].

mod sim;

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};
use shade_shared::document::{ConflictSide, Path};
use shade_shared::{Dot, Leaf, Patch, Policy, Rendered, ReplicaId, Section, Shadow};

pub(crate) use sim::{Msg, Sim, Topology};

pub(crate) const POLICIES: [Policy; 3] = [Policy::Lww, Policy::BrokerWins, Policy::DeviceWins];

/// `b:local`, `a:d1`, `a:d2`: the broker replica is always index 0.
pub(crate) fn replica_ids(n: usize) -> Vec<ReplicaId> {
    let all = [
        ReplicaId::broker("local").expect("valid broker replica id"),
        ReplicaId::agent("d1").expect("valid agent replica id"),
        ReplicaId::agent("d2").expect("valid agent replica id"),
    ];
    all.into_iter().take(n).collect()
}

// ---------------------------------------------------------------- generators

/// A leaf value: small ints (so equal values get written by different
/// replicas), strings, bools, and arrays (replaced whole, may hold nulls).
fn leaf_value() -> impl Strategy<Value = Value> {
    let item = prop_oneof![
        (0i64..3).prop_map(Value::from),
        Just(Value::Null),
        Just(Value::from("s")),
        Just(serde_json::json!({"k": 1})),
    ];
    prop_oneof![
        4 => (0i64..4).prop_map(Value::from),
        1 => select(vec!["s", "t"]).prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => prop::collection::vec(item, 0..3).prop_map(Value::Array),
    ]
}

/// A value inside a patch: a leaf, `null` (delete), or an object of the
/// nested keys `x`, `y` (at most `depth` more levels).
fn patch_value(depth: u32) -> BoxedStrategy<Value> {
    if depth == 0 {
        return prop_oneof![4 => leaf_value(), 1 => Just(Value::Null)].boxed();
    }
    let object = prop::collection::btree_map(select(vec!["x", "y"]), patch_value(depth - 1), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    prop_oneof![4 => leaf_value(), 2 => Just(Value::Null), 2 => object].boxed()
}

/// A patch over the small key space `a`, `b`, `c` (and `a.x`, `a.y.x`, ...
/// through nested objects), or a clear of the whole section.
pub(crate) fn patch() -> impl Strategy<Value = Patch> {
    let map = prop::collection::btree_map(select(vec!["a", "b", "c"]), patch_value(2), 1..3)
        .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
    prop_oneof![12 => map.prop_map(Patch::Merge), 1 => Just(Patch::Clear)]
}

fn section() -> impl Strategy<Value = Section> {
    prop_oneof![3 => Just(Section::Desired), 1 => Just(Section::Reported)]
}

/// One step of a run. Indices are taken modulo what exists when the step
/// runs (replicas, links, messages in flight, messages ever sent).
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// A local write; the global clock first moves by `advance_ms` (0 makes
    /// equal timestamps, broken by the logical counter and replica id).
    Write {
        replica: usize,
        section: Section,
        patch: Patch,
        advance_ms: u64,
    },
    /// The sender of a link computes a message and puts it in the bag;
    /// with `limit`, a chunk of at most that many registers, as an agent
    /// catching up sends (`changes_since_limited`).
    Send { link: usize, limit: Option<usize> },
    /// A message in flight arrives; with `duplicate` a copy stays in flight.
    Deliver { pick: usize, duplicate: bool },
    /// A message in flight is lost.
    Drop { pick: usize },
    /// Any message ever sent arrives again, however old.
    Replay { pick: usize },
    /// A replica drops the tombstones its known stable vector covers.
    Collect { replica: usize },
    /// A quiet spell: every link delivers its current message once, in
    /// order, nothing lost (so that tombstones get stable within a run).
    Quiet,
}

/// Steps of a run; `collect` adds tombstone collection at random points,
/// and syncs more often so that tombstones become stable within a run.
pub(crate) fn ops(len: std::ops::Range<usize>, collect: bool) -> impl Strategy<Value = Vec<Op>> {
    let (writes, syncs, collects) = if collect { (6, 6, 3) } else { (6, 6, 0) };
    let write = (0..3usize, section(), patch(), 0..3u64).prop_map(
        |(replica, section, patch, advance_ms)| Op::Write {
            replica,
            section,
            patch,
            advance_ms,
        },
    );
    let op = prop_oneof![
        writes => write,
        syncs => (any::<usize>(), prop::option::weighted(0.3, 1..3usize))
            .prop_map(|(link, limit)| Op::Send { link, limit }),
        syncs => (any::<usize>(), prop::bool::weighted(0.25))
            .prop_map(|(pick, duplicate)| Op::Deliver { pick, duplicate }),
        1 => any::<usize>().prop_map(|pick| Op::Drop { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Replay { pick }),
        collects => (0..3usize).prop_map(|replica| Op::Collect { replica }),
        (collects / 3) => Just(Op::Quiet),
    ];
    prop::collection::vec(op, len)
}

/// The subtree and object claims of a merge patch (see `sim::WriteRecord`).
fn claims(
    section: Section,
    prefix: &mut Vec<String>,
    map: &Map<String, Value>,
    subtrees: &mut Vec<(Section, Path)>,
    objects: &mut Vec<(Section, Path)>,
) {
    for (key, value) in map {
        prefix.push(key.clone());
        match value {
            Value::Object(inner) => {
                objects.push((section, Path::from(prefix.as_slice())));
                claims(section, prefix, inner, subtrees, objects);
            }
            _ => subtrees.push((section, Path::from(prefix.as_slice()))),
        }
        prefix.pop();
    }
}

/// The leaves of `section` at `path` (empty when there is no register).
pub(crate) fn register<'a>(shadow: &'a Shadow, section: Section, path: &Path) -> &'a [Leaf] {
    shadow
        .section(section)
        .get(path)
        .map(|r| r.as_slice())
        .unwrap_or(&[])
}

fn leaves_with_dot(shadow: &Shadow, dot: &Dot) -> Vec<(Section, Path, Leaf)> {
    let mut out = Vec::new();
    for s in Section::ALL {
        for (p, reg) in shadow.section(s) {
            for l in reg.iter().filter(|l| &l.dot == dot) {
                out.push((s, p.clone(), l.clone()));
            }
        }
    }
    out
}

/// Every section rendered under every policy.
pub(crate) fn renders(shadow: &Shadow) -> BTreeMap<(Section, usize), Rendered> {
    let mut out = BTreeMap::new();
    for s in Section::ALL {
        for (i, p) in POLICIES.iter().enumerate() {
            out.insert((s, i), shadow.render(s, *p));
        }
    }
    out
}

/// Asserts two shadows hold the same merged state and render the same.
pub(crate) fn assert_same(a: &Shadow, b: &Shadow, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(a, b, "{}: merged state differs", what);
    for s in Section::ALL {
        for p in POLICIES {
            prop_assert_eq!(
                a.render(s, p),
                b.render(s, p),
                "{}: render of {:?} under {:?} differs",
                what,
                s,
                p
            );
        }
    }
    Ok(())
}

/// The value rendered at `path` in a rendered state, if any.
pub(crate) fn value_at<'a>(state: &'a Value, path: &Path) -> Option<&'a Value> {
    path.keys()
        .try_fold(state, |node, key| node.get(key.as_ref()))
}

/// Does `rendered` report `leaf` at `path` as a conflict's losing side?
pub(crate) fn lost_in_conflict(rendered: &Rendered, path: &Path, leaf: &Leaf) -> bool {
    let side = ConflictSide {
        value: leaf.json(),
        replica: leaf.dot.replica.clone(),
        ts: leaf.ts.ms,
    };
    let path = path.to_string();
    rendered
        .conflicts
        .iter()
        .any(|c| c.path == path && c.lost == side)
}

/// `{"a": {"x": null}}` for the path `a.x`: a patch deleting `path`.
pub(crate) fn delete_patch(path: &[String]) -> Patch {
    let mut value = Value::Null;
    for key in path.iter().rev() {
        let mut m = Map::new();
        m.insert(key.clone(), value);
        value = Value::Object(m);
    }
    match value {
        Value::Object(m) => Patch::Merge(m),
        _ => Patch::Clear,
    }
}
