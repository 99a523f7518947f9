//! Benchmarks of the merge model: what one sync message costs the broker.
//!
//! `cargo bench -p shade-shared --bench model`. Targets (see DESIGN.md):
//! `merge_100_into_1000` at most 20 µs, `changes_since_10_new_of_10000` at
//! most 50 µs.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use shade_shared::{Section, Shadow};

mod common;
use common::docs::{merge_setup, patch, replica, write_leaves, NOW_MS};

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
