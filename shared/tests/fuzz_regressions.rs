//! Replays every saved fuzz input on the stable toolchain, through the very
//! checks the cargo-fuzz targets run (`tests/fuzz/src/checks.rs`, included
//! below): the crashers kept under `tests/fuzz/regressions/<target>/` and
//! the seed corpora under `tests/fuzz/seeds/<target>/`. See docs/FUZZING.md.

use std::path::{Path, PathBuf};

#[path = "../../tests/fuzz/src/checks.rs"]
#[allow(unreachable_pub)]
mod checks;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz")
}

/// Every file under `tests/fuzz/<kind>/<target>/`, sorted; none when the
/// folder does not exist (a target that never crashed has no regressions).
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes =
                std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// Runs `check` on every input, naming the file that fails.
fn replay(kind: &str, target: &str, check: Check) -> usize {
    let all = inputs(kind, target);
    for (path, bytes) in &all {
        let outcome = std::panic::catch_unwind(|| check(bytes));
        assert!(
            outcome.is_ok(),
            "{} fails the {target} checks again",
            path.display()
        );
    }
    all.len()
}

/// What a fuzz target does with one input.
type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 3] = [
    ("aws_update", checks::aws_update),
    ("sync_decode", checks::sync_decode),
    ("topic_parse", checks::topic_parse),
];

#[test]
fn every_saved_fuzz_crasher_is_handled_without_panicking() {
    for (target, check) in TARGETS {
        replay("regressions", target, check);
    }
}

#[test]
fn every_seed_input_passes_the_fuzz_checks() {
    for (target, check) in TARGETS {
        let n = replay("seeds", target, check);
        assert!(n > 0, "no seed inputs for {target}");
    }
}
