//! `gateway_packets`: arbitrary bytes as one client connection through the
//! broker's `Gateway`; the work is `shade_fuzz::gateway::gateway_packets`
//! (`src/gateway.rs`). See docs/FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shade_fuzz::gateway::gateway_packets(data);
});
