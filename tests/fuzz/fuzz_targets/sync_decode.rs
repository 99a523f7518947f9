//! See docs/FUZZING.md and `shade_fuzz::sync_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shade_fuzz::sync_decode(data));
