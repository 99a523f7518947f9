//! What the benches measure: the `SyncUp` of the CBOR benches, and the
//! documents of the merge benches (`docs`). Each bench uses a part.
#![allow(dead_code)]

pub(crate) mod docs;

use serde_json::{json, Map, Value};
use shade_shared::{Patch, ReplicaId, Section, Shadow, SyncUp, VersionVector};

/// An agent's first `SyncUp`: `writes` writes of ten reported leaves each,
/// of every JSON kind, including arrays holding `null`.
pub(crate) fn sync_up(writes: usize) -> SyncUp {
    let agent = ReplicaId::new("a:dev-1").expect("valid replica id");
    let mut doc = Shadow::new();
    for w in 0..writes {
        let mut root = Map::new();
        for k in 0..10 {
            let i = w * 10 + k;
            let value = match i % 5 {
                0 => json!(i),
                1 => json!(f64::from(i as u32) / 3.0),
                2 => json!(format!("mode-{i}")),
                3 => json!(i % 2 == 0),
                _ => json!([i, null, "x", {"k": null, "n": [null]}]),
            };
            root.insert(format!("key{k}"), value);
        }
        let patch = Patch::Merge(Map::from_iter([(format!("group{w}"), Value::Object(root))]));
        doc.write(
            &agent,
            Section::Reported,
            &patch,
            1_700_000_000_000 + w as u64,
        );
    }
    let changes = doc.changes_since(&VersionVector::new());
    assert_eq!(changes.len(), writes * 10);
    SyncUp {
        replica: agent,
        changes,
    }
}
