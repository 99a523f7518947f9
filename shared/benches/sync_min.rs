//! The 100-leaf `SyncUp` of the `cbor` bench, timed as the fastest of many
//! batches rather than criterion's mean: on a shared VM whose speed
//! drifts by half between minutes, the minimum says what the code costs
//! when nothing else runs, and compares two builds run back to back.
//!
//! `cargo bench -p shade-shared --bench sync_min`: 200 batches of 200
//! messages each for encode, decode, and encode + decode (about 5 s).
//!
//! It also times what any decoder of this model pays before it reads a
//! byte: building the 100 registers of the message from parts already
//! parsed, and dropping them (see docs/BENCHMARKS.md, "The floor").

use std::hint::black_box;
use std::time::Instant;

use shade_shared::merge::PathLeaves;
use shade_shared::SyncUp;

mod common;

const MAX_DEPTH: usize = 8;
const BATCHES: u32 = 200;
const PER_BATCH: u32 = 200;

/// The fastest batch's time per call, in microseconds.
fn min_micros(mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..BATCHES {
        let start = Instant::now();
        for _ in 0..PER_BATCH {
            f();
        }
        best = best.min(start.elapsed().as_secs_f64() / f64::from(PER_BATCH));
    }
    best * 1e6
}

fn main() {
    let msg = common::sync_up(10);
    let bytes = msg.to_cbor();
    let decode = |b: &[u8]| SyncUp::from_cbor(b, MAX_DEPTH).expect("the bench's message decodes");
    assert_eq!(decode(&bytes), msg);
    let encode = min_micros(|| {
        black_box(black_box(&msg).to_cbor());
    });
    let decode_only = min_micros(|| {
        black_box(decode(black_box(&bytes)));
    });
    let both = min_micros(|| {
        black_box(decode(&black_box(&msg).to_cbor()));
    });
    let (build, ids) = floor(&msg);
    println!(
        "sync_up_100 ({} bytes), fastest of {BATCHES} batches of {PER_BATCH}: \
         encode {encode:.2} µs, decode {decode_only:.2} µs, encode + decode {both:.2} µs",
        bytes.len()
    );
    println!(
        "floor: building and dropping its {} registers from parsed parts {build:.2} µs, \
         of which cloning and dropping their replica ids {ids:.2} µs",
        msg.changes.paths.len()
    );
}

/// The decoded message's own cost: its registers built the way the
/// decoder builds them (pushed, then a leaf pushed into each) from parts
/// already parsed, and dropped; and the replica-id clones alone (an
/// atomic increment and decrement each).
fn floor(msg: &SyncUp) -> (f64, f64) {
    let parts: Vec<_> = msg
        .changes
        .paths
        .iter()
        .flat_map(|p| {
            p.leaves
                .iter()
                .map(|l| (p.section, p.path.clone(), l.clone()))
        })
        .collect();
    let build = min_micros(|| {
        let mut paths = Vec::with_capacity(parts.len());
        for (section, path, leaf) in black_box(&parts) {
            paths.push(PathLeaves {
                section: *section,
                path: path.clone(),
                leaves: Default::default(),
            });
            if let Some(last) = paths.last_mut() {
                last.leaves.push(leaf.clone());
            }
        }
        black_box(paths);
    });
    let ids = min_micros(|| {
        let ids: Vec<_> = black_box(&parts)
            .iter()
            .map(|(_, _, leaf)| leaf.dot.replica.clone())
            .collect();
        black_box(ids);
    });
    (build, ids)
}
