//! The 100-leaf `SyncUp` of the `cbor` bench, timed as the fastest of many
//! batches rather than criterion's mean: on a shared VM whose speed
//! drifts by half between minutes (and sometimes halves for seconds), the
//! minimum says what the code costs when nothing else runs, and compares
//! two builds run back to back.
//!
//! `cargo bench -p shade-shared --bench sync_min`: 400 rounds, each one
//! batch of 100 messages of every measurement in turn (about 2 s), so that
//! a slow spell of the machine falls on all of them alike.
//!
//! Besides encode, decode and the two together, it times decode plus the
//! merge of the message into an empty shadow: where the work of building
//! document leaves happens is a choice of the codec (docs/BENCHMARKS.md,
//! "The flat message"), and this is what a receiver pays in all. And the
//! `model` bench's merge of 100 leaves into a 1,000-leaf document, 25
//! copies per round.

use std::hint::black_box;
use std::time::Instant;

use shade_shared::{Shadow, SyncUp};

mod common;

const MAX_DEPTH: usize = 8;
const ROUNDS: u32 = 400;
const PER_BATCH: u32 = 100;

/// Seconds per call of one batch of `f`.
fn batch(f: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..PER_BATCH {
        f();
    }
    start.elapsed().as_secs_f64() / f64::from(PER_BATCH)
}

fn main() {
    let msg = common::sync_up(10);
    let bytes = msg.to_cbor();
    let decode = |b: &[u8]| SyncUp::from_cbor(b, MAX_DEPTH).expect("the bench's message decodes");
    assert_eq!(decode(&bytes), msg);
    let mut encode = || {
        black_box(black_box(&msg).to_cbor());
    };
    let mut decode_only = || {
        black_box(decode(black_box(&bytes)));
    };
    let mut both = || {
        black_box(decode(&black_box(&msg).to_cbor()));
    };
    let mut decode_merge = || {
        let up = decode(black_box(&bytes));
        let mut shadow = Shadow::new();
        black_box(shadow.merge(&up.changes));
        black_box(shadow);
    };
    let mut runs: [(&str, &mut dyn FnMut(), f64); 4] = [
        ("encode", &mut encode, f64::MAX),
        ("decode", &mut decode_only, f64::MAX),
        ("encode + decode", &mut both, f64::MAX),
        (
            "decode + merge into an empty shadow",
            &mut decode_merge,
            f64::MAX,
        ),
    ];
    // The `model` bench's merge: 100 changed leaves into a 1,000-leaf
    // document, each batch into fresh copies made and dropped outside the
    // timing.
    let (doc, changes) = common::docs::merge_setup();
    let mut merge_best = f64::MAX;
    for _ in 0..ROUNDS {
        for (_, f, best) in runs.iter_mut() {
            *best = best.min(batch(*f));
        }
        let mut copies: Vec<Shadow> = (0..PER_BATCH / 4).map(|_| doc.clone()).collect();
        let start = Instant::now();
        for copy in &mut copies {
            black_box(copy.merge(black_box(&changes)));
        }
        let per_call = start.elapsed().as_secs_f64() / copies.len() as f64;
        merge_best = merge_best.min(per_call);
    }
    let mut results: Vec<String> = runs
        .iter()
        .map(|(name, _, best)| format!("{name} {:.2} µs", best * 1e6))
        .collect();
    results.push(format!(
        "merge of 100 leaves into 1,000 {:.2} µs",
        merge_best * 1e6
    ));
    println!(
        "sync_up_100 ({} bytes), fastest of {ROUNDS} batches: {}",
        bytes.len(),
        results.join(", ")
    );
}
