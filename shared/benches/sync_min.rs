//! The 100-leaf `SyncUp` of the `cbor` bench, timed as the fastest of many
//! batches rather than criterion's mean: on a shared VM whose speed
//! drifts by half between minutes, the minimum says what the code costs
//! when nothing else runs, and compares two builds run back to back.
//!
//! `cargo bench -p shade-shared --bench sync_min`: 200 batches of 200
//! messages each for encode, decode, and encode + decode (about 5 s).
//!
//! It also times decode plus the merge of the message into an empty
//! shadow, since where the work of building document leaves happens is a
//! choice of the codec (see docs/BENCHMARKS.md, "The flat message").

use std::hint::black_box;
use std::time::Instant;

use shade_shared::{Shadow, SyncUp};

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
    // Decoding is only half of what a receiver does: the merge builds the
    // document's leaves from the message. Timed together, so that a codec
    // change that only moves work into the merge shows here.
    let decode_merge = min_micros(|| {
        let up = decode(black_box(&bytes));
        let mut shadow = Shadow::new();
        black_box(shadow.merge(&up.changes));
        black_box(shadow);
    });
    println!(
        "sync_up_100 ({} bytes), fastest of {BATCHES} batches of {PER_BATCH}: \
         encode {encode:.2} µs, decode {decode_only:.2} µs, encode + decode {both:.2} µs, \
         decode + merge into an empty shadow {decode_merge:.2} µs",
        bytes.len()
    );
}
