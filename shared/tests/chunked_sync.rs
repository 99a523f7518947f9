//! A replica far behind catches up in bounded messages: chunks sent one
//! after another converge to the same state as one full message, and a
//! chunk never claims (in its vector) more than it carries.

use serde_json::json;
use shade_shared::{Patch, ReplicaId, Section, Shadow, VersionVector};

fn patch(v: serde_json::Value) -> Patch {
    Patch::Merge(v.as_object().cloned().expect("object literal"))
}

#[test]
fn chunked_catch_up_converges_to_the_full_state() {
    let device = ReplicaId::agent("d1").expect("valid");
    let broker = ReplicaId::broker("local").expect("valid");
    let mut d = Shadow::new();
    let mut b = Shadow::new();
    b.write(
        &broker,
        Section::Desired,
        &patch(json!({"mode": "eco", "k3": 0})),
        500,
    );
    d.merge(&b.changes_since(&VersionVector::new()));
    for i in 0..1000u64 {
        // 1,000 writes over 100 keys: coalesced to 100 pending registers.
        let key = format!("k{}", i % 100);
        d.write(
            &device,
            Section::Reported,
            &patch(json!({ key: i })),
            1_000 + i,
        );
    }
    d.write(&device, Section::Desired, &patch(json!({"k3": 7})), 5_000);
    let mut rounds = 0;
    loop {
        let chunk = d.changes_since_limited(b.vv(), 30);
        assert!(chunk.len() <= 31, "a chunk holds about max_paths registers");
        if chunk.is_empty() {
            break;
        }
        let outcome = b.merge(&chunk);
        assert!(!outcome.gap);
        rounds += 1;
        assert!(rounds < 20, "catch-up must make progress");
    }
    assert!(
        rounds >= 4,
        "101 registers at 30 a message take at least 4 messages, took {rounds}"
    );
    d.merge(&b.changes_since(d.vv()));
    assert_eq!(b, d);
    assert_eq!(
        b.render(Section::Reported, Default::default()).state["k7"],
        json!(907)
    );
    assert_eq!(
        b.render(Section::Desired, Default::default()).state,
        json!({"mode": "eco", "k3": 7})
    );
}

#[test]
fn a_lost_chunk_makes_the_next_one_a_gap_not_a_hole() {
    let device = ReplicaId::agent("d1").expect("valid");
    let mut d = Shadow::new();
    for i in 0..10u64 {
        d.write(
            &device,
            Section::Reported,
            &patch(json!({ format!("k{i}"): i })),
            1_000 + i,
        );
    }
    let mut b = Shadow::new();
    let first = d.changes_since_limited(b.vv(), 3);
    // The broker never got `first`; the device wrongly assumes it did.
    let mut assumed = b.vv().clone();
    assumed.join(&first.vv);
    let second = d.changes_since_limited(&assumed, 3);
    assert!(
        b.merge(&second).gap,
        "a message computed against unseen state is refused"
    );
    assert!(b
        .render(Section::Reported, Default::default())
        .state
        .as_object()
        .is_some_and(|m| m.is_empty()));
}
