//! Benchmarks of the merge model: what one sync message costs the broker.
//!
//! `cargo bench -p shade-shared --bench model`. Targets (see DESIGN.md):
//! `merge_100_into_1000` at most 20 µs, `changes_since_10_new_of_10000` at
//! most 50 µs.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::{json, Map, Value};
use shade_shared::{Changes, Patch, ReplicaId, Section, Shadow};

const NOW_MS: u64 = 1_700_000_000_000;

fn replica(id: &str) -> ReplicaId {
    ReplicaId::new(id).expect("benchmark replica ids are valid")
}

/// A leaf value of the kind devices report: numbers, strings, flags, a short array.
fn value(i: usize, round: usize) -> Value {
    match i % 4 {
        0 => json!(i * 10 + round),
        1 => json!(format!("mode-{}", (i + round) % 7)),
        2 => json!((i + round) % 2 == 0),
        _ => json!([i, round, null]),
    }
}

/// A patch setting leaves `first..first + count` as `group{i / 10}.key{i % 10}`:
/// two levels, ten leaves per object.
fn patch(first: usize, count: usize, round: usize) -> Patch {
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
fn write_leaves(
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
fn merge_setup() -> (Shadow, Changes) {
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

fn merge_100_into_1000(c: &mut Criterion) {
    let (broker_doc, changes) = merge_setup();
    let mut check = broker_doc.clone();
    assert_eq!(check.merge(&changes).changed.len(), 100);
    c.bench_function("merge_100_into_1000", |b| {
        b.iter_batched(
            || broker_doc.clone(),
            |mut doc| {
                let outcome = doc.merge(black_box(&changes));
                // Returned, so that dropping the document is not timed.
                (doc, outcome)
            },
            BatchSize::LargeInput,
        )
    });
}

/// A 10,000-leaf document written by the broker and an agent; the peer has
/// seen all of it but the broker's last 10 single-leaf writes.
fn changes_since_setup() -> (Shadow, shade_shared::VersionVector) {
    let (agent, broker) = (replica("a:dev-1"), replica("b:local"));
    let mut a = Shadow::new();
    write_leaves(&mut a, &agent, Section::Reported, 5_000, 100);
    let mut b = Shadow::new();
    write_leaves(&mut b, &broker, Section::Desired, 5_000, 100);
    b.merge(&a.changes_since(b.vv()));
    let peer = b.vv().clone();
    for i in 0..10 {
        let at = NOW_MS + 1_000 + i as u64;
        b.write(&broker, Section::Desired, &patch(i * 37, 1, 3), at);
    }
    assert_eq!(b.leaf_count(), 10_000);
    (b, peer)
}

fn changes_since_10_new_of_10000(c: &mut Criterion) {
    let (doc, peer) = changes_since_setup();
    assert_eq!(doc.changes_since(&peer).len(), 10);
    c.bench_function("changes_since_10_new_of_10000", |b| {
        b.iter(|| doc.changes_since(black_box(&peer)))
    });
}

criterion_group!(benches, merge_100_into_1000, changes_since_10_new_of_10000);
criterion_main!(benches);
