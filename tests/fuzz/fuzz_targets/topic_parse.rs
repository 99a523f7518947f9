//! See docs/FUZZING.md and `shade_fuzz::topic_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shade_fuzz::topic_parse(data));
