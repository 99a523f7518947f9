//! Replays the `gateway_packets` fuzz target's seeds (and any saved
//! crashers) on the stable toolchain, through the target's own code
//! (`tests/fuzz/src/gateway.rs`, included below): one client connection's
//! bytes through the gateway with and without authentication and the
//! front's preamble, the router's answers written back. See
//! docs/FUZZING.md.

use std::path::{Path, PathBuf};

#[path = "../../tests/fuzz/src/gateway.rs"]
#[allow(unreachable_pub, dead_code)]
mod gateway;

/// Every file of `tests/fuzz/<kind>/gateway_packets/`, sorted.
fn inputs(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fuzz")
        .join(kind)
        .join("gateway_packets");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.retain(|p| p.is_file());
    paths.sort();
    paths
}

#[test]
fn every_gateway_seed_and_crasher_goes_through_the_gateway_without_a_panic() {
    let seeds = inputs("seeds");
    assert!(seeds.len() >= 5, "the gateway seeds are missing: {seeds:?}");
    for path in seeds.iter().chain(&inputs("regressions")) {
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| gateway::gateway_packets(&bytes));
        let Ok(read) = outcome else {
            panic!("{} panics the gateway", path.display());
        };
        // A seed is a whole session: the gateway reads at least its
        // CONNECT, unless the seed is one of the refusals.
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let refused = match name {
            // Sent raw, as a process dialling the internal port would.
            "raw_without_preamble.bin" => true,
            // A reader's will on an update topic: readers may not publish.
            "v5_reader_empty_id_with_will.bin" => true,
            _ => false,
        };
        if seeds.contains(path) {
            match refused {
                true => assert_eq!(read, 0, "{name}: should be refused"),
                false => assert!(read >= 1, "{name}: no packet read"),
            }
        }
    }
}
