//! See docs/FUZZING.md and `shade_fuzz::aws_update`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shade_fuzz::aws_update(data));
