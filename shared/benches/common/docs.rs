//! The documents of the merge benches (`model`, and `sync_min`'s
//! fastest-batch timing of the same merge).

use serde_json::{json, Map, Value};
use shade_shared::{Changes, Patch, ReplicaId, Section, Shadow};

pub(crate) const NOW_MS: u64 = 1_700_000_000_000;

pub(crate) fn replica(id: &str) -> ReplicaId {
    ReplicaId::new(id).expect("benchmark replica ids are valid")
}

/// A leaf value of the kind devices report: numbers, strings, flags, a short array.
pub(crate) fn value(i: usize, round: usize) -> Value {
    match i % 4 {
        0 => json!(i * 10 + round),
        1 => json!(format!("mode-{}", (i + round) % 7)),
        2 => json!((i + round) % 2 == 0),
        _ => json!([i, round, null]),
    }
}

/// A patch setting leaves `first..first + count` as `group{i / 10}.key{i % 10}`:
/// two levels, ten leaves per object.
pub(crate) fn patch(first: usize, count: usize, round: usize) -> Patch {
    let mut root = Map::new();
    for i in first..first + count {
        let group = root
            .entry(format!("group{}", i / 10))
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(group) = group {
            group.insert(format!("key{}", i % 10), value(i, round));
        }
    }
    Patch::Merge(root)
}

/// Writes `leaves` leaves as writes of `per_write` leaves each.
pub(crate) fn write_leaves(
    doc: &mut Shadow,
    by: &ReplicaId,
    section: Section,
    leaves: usize,
    per_write: usize,
) {
    for (n, first) in (0..leaves).step_by(per_write).enumerate() {
        let at = NOW_MS + n as u64;
        doc.write(by, section, &patch(first, per_write, 0), at);
    }
}

/// The broker holds 1,000 leaves: 900 reported by the agent, 100 desired by
/// itself, and the agent has seen them all. The agent then rewrites 100 of
/// its reported leaves in one write. Returns the broker's document and
/// the agent's message to it.
pub(crate) fn merge_setup() -> (Shadow, Changes) {
    let (agent, broker) = (replica("a:dev-1"), replica("b:local"));
    let mut a = Shadow::new();
    write_leaves(&mut a, &agent, Section::Reported, 900, 100);
    let mut b = Shadow::new();
    b.merge(&a.changes_since(b.vv()));
    b.write(&broker, Section::Desired, &patch(0, 100, 1), NOW_MS + 100);
    a.merge(&b.changes_since(a.vv()));
    assert_eq!(b.leaf_count(), 1_000);
    a.write(&agent, Section::Reported, &patch(300, 100, 2), NOW_MS + 200);
    let changes = a.changes_since(b.vv());
    assert_eq!(changes.len(), 100);
    (b, changes)
}
