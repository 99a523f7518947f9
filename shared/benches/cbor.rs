//! Benchmarks of the sync messages' CBOR: our codec (cbor4ii, through
//! `shade_shared::sync::{encode, decode}`) against minicbor-serde on the
//! same `SyncUp`, to keep the choice of crate honest.
//!
//! `cargo bench -p shade-shared --bench cbor`. Target: encode + decode of a
//! 100-leaf `SyncUp` (an agent catching up) in at most 10 µs. A 10-leaf one
//! (one local write, the common message) is measured alongside.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Map, Value};
use shade_shared::sync::{decode, encode};
use shade_shared::{Patch, ReplicaId, Section, Shadow, SyncUp, VersionVector};

/// The document depth limit the broker applies by default.
const MAX_DEPTH: usize = 8;

/// An agent's first `SyncUp`: `writes` writes of ten reported leaves each,
/// of every JSON kind, including arrays holding `null`.
fn sync_up(writes: usize) -> SyncUp {
    let agent = ReplicaId::new("a:dev-1").expect("valid replica id");
    let mut doc = Shadow::new();
    for w in 0..writes {
        let mut root = Map::new();
        for k in 0..10 {
            let i = w * 10 + k;
            let value = match i % 5 {
                0 => json!(i),
                1 => json!(f64::from(i as u32) / 3.0),
                2 => json!(format!("mode-{i}")),
                3 => json!(i % 2 == 0),
                _ => json!([i, null, "x", {"k": null, "n": [null]}]),
            };
            root.insert(format!("key{k}"), value);
        }
        let patch = Patch::Merge(Map::from_iter([(format!("group{w}"), Value::Object(root))]));
        doc.write(
            &agent,
            Section::Reported,
            &patch,
            1_700_000_000_000 + w as u64,
        );
    }
    let changes = doc.changes_since(&VersionVector::new());
    assert_eq!(changes.paths.len(), writes * 10);
    SyncUp {
        replica: agent,
        changes,
    }
}

fn minicbor_encode(msg: &SyncUp) -> Vec<u8> {
    minicbor_serde::to_vec(msg).expect("minicbor-serde encodes a SyncUp")
}

fn minicbor_decode(bytes: &[u8]) -> SyncUp {
    minicbor_serde::from_slice(bytes).expect("minicbor-serde decodes a SyncUp")
}

/// Both crates must give back exactly what went in, `null`s in arrays included.
fn check_round_trips(msg: &SyncUp) {
    let ours = encode(msg).expect("cbor4ii encodes a SyncUp");
    let back: SyncUp = decode(&ours, MAX_DEPTH).expect("cbor4ii decodes a SyncUp");
    assert_eq!(&back, msg, "cbor4ii round trip");
    let theirs = minicbor_encode(msg);
    assert_eq!(&minicbor_decode(&theirs), msg, "minicbor-serde round trip");
    // Each crate must also read the other's bytes: same wire format.
    let cross: SyncUp = decode(&theirs, MAX_DEPTH).expect("cbor4ii reads minicbor-serde");
    assert_eq!(&cross, msg, "cbor4ii reading minicbor-serde's bytes");
    assert_eq!(
        &minicbor_decode(&ours),
        msg,
        "minicbor-serde reading cbor4ii's bytes"
    );
    eprintln!(
        "SyncUp of {} leaves: cbor4ii {} bytes, minicbor-serde {} bytes, identical: {}",
        msg.changes.paths.len(),
        ours.len(),
        theirs.len(),
        ours == theirs
    );
}

fn cbor(c: &mut Criterion) {
    let msg = sync_up(10);
    check_round_trips(&msg);
    let bytes = encode(&msg).expect("cbor4ii encodes a SyncUp");

    let mut group = c.benchmark_group("sync_up_100");
    group.bench_function("cbor4ii/encode_decode", |b| {
        b.iter(|| {
            let bytes = encode(black_box(&msg)).expect("encodes");
            decode::<SyncUp>(&bytes, MAX_DEPTH).expect("decodes")
        })
    });
    group.bench_function("cbor4ii/encode", |b| {
        b.iter(|| encode(black_box(&msg)).expect("encodes"))
    });
    group.bench_function("cbor4ii/decode", |b| {
        b.iter(|| decode::<SyncUp>(black_box(&bytes), MAX_DEPTH).expect("decodes"))
    });
    group.bench_function("minicbor_serde/encode_decode", |b| {
        b.iter(|| minicbor_decode(&minicbor_encode(black_box(&msg))))
    });
    group.bench_function("minicbor_serde/encode", |b| {
        b.iter(|| minicbor_encode(black_box(&msg)))
    });
    group.bench_function("minicbor_serde/decode", |b| {
        b.iter(|| minicbor_decode(black_box(&bytes)))
    });
    group.finish();

    let small = sync_up(1);
    check_round_trips(&small);
    let mut group = c.benchmark_group("sync_up_10");
    group.bench_function("cbor4ii/encode_decode", |b| {
        b.iter(|| {
            let bytes = encode(black_box(&small)).expect("encodes");
            decode::<SyncUp>(&bytes, MAX_DEPTH).expect("decodes")
        })
    });
    group.bench_function("minicbor_serde/encode_decode", |b| {
        b.iter(|| minicbor_decode(&minicbor_encode(black_box(&small))))
    });
    group.finish();
}

criterion_group!(benches, cbor);
criterion_main!(benches);
