//! Benchmarks of shade's CBOR. Sync messages have their own codec
//! (`SyncUp::to_cbor` / `from_cbor`); stored documents go through serde
//! and cbor4ii, measured against minicbor-serde on the same document to
//! keep the choice of crate honest.
//!
//! `cargo bench -p shade-shared --bench cbor`. Target: encode + decode of a
//! 100-leaf `SyncUp` (an agent catching up) in at most 10 µs. A 10-leaf one
//! (one local write, the common message) is measured alongside.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Map, Value};
use shade_shared::sync::{decode, encode};
use shade_shared::{Patch, ReplicaId, Section, Shadow, SyncUp};

mod common;
use common::sync_up;

/// The document depth limit the broker applies by default.
const MAX_DEPTH: usize = 8;

/// A stored document: the broker's 1,000-leaf shadow, as redb holds it.
fn stored_shadow() -> Shadow {
    let mut doc = Shadow::new();
    let broker = ReplicaId::new("b:local").expect("valid replica id");
    for w in 0..100 {
        let mut root = Map::new();
        for k in 0..10 {
            root.insert(format!("key{k}"), json!(w * 10 + k));
        }
        let patch = Patch::Merge(Map::from_iter([(format!("group{w}"), Value::Object(root))]));
        doc.write(
            &broker,
            Section::Desired,
            &patch,
            1_700_000_000_000 + w as u64,
        );
    }
    doc
}

/// Sync messages: shade's own codec (`SyncUp::to_cbor` / `from_cbor`).
fn sync_messages(c: &mut Criterion) {
    for (name, writes) in [("sync_up_100", 10), ("sync_up_10", 1)] {
        let msg = sync_up(writes);
        let bytes = msg.to_cbor();
        assert_eq!(SyncUp::from_cbor(&bytes, MAX_DEPTH).expect("decodes"), msg);
        eprintln!("{name}: {} bytes", bytes.len());
        let mut group = c.benchmark_group(name);
        group.bench_function("encode_decode", |b| {
            b.iter(|| SyncUp::from_cbor(&black_box(&msg).to_cbor(), MAX_DEPTH).expect("decodes"))
        });
        group.bench_function("encode", |b| b.iter(|| black_box(&msg).to_cbor()));
        group.bench_function("decode", |b| {
            b.iter(|| SyncUp::from_cbor(black_box(&bytes), MAX_DEPTH).expect("decodes"))
        });
        group.finish();
    }
}

/// Stored documents go through serde: cbor4ii (ours) against
/// minicbor-serde, to keep the choice of crate honest.
fn stored_documents(c: &mut Criterion) {
    let doc = stored_shadow();
    let ours = encode(&doc).expect("cbor4ii encodes a shadow");
    let theirs = minicbor_serde::to_vec(&doc).expect("minicbor-serde encodes a shadow");
    // Same wire format: each crate reads the other's bytes.
    let cross: Shadow = decode(&theirs, MAX_DEPTH).expect("cbor4ii reads minicbor-serde");
    assert_eq!(cross, doc);
    let back: Shadow = minicbor_serde::from_slice(&ours).expect("minicbor-serde reads cbor4ii");
    assert_eq!(back, doc);
    let mut group = c.benchmark_group("shadow_1000");
    group.bench_function("cbor4ii/encode_decode", |b| {
        b.iter(|| {
            let bytes = encode(black_box(&doc)).expect("encodes");
            decode::<Shadow>(&bytes, MAX_DEPTH).expect("decodes")
        })
    });
    group.bench_function("minicbor_serde/encode_decode", |b| {
        b.iter(|| {
            let bytes = minicbor_serde::to_vec(black_box(&doc)).expect("encodes");
            minicbor_serde::from_slice::<Shadow>(&bytes).expect("decodes")
        })
    });
    group.finish();
}

criterion_group!(benches, sync_messages, stored_documents);
criterion_main!(benches);
