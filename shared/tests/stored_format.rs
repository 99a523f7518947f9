//! Documents stored and messages sent by earlier builds still read, unchanged.
//!
//! `data/shadow-v0.cbor` was written by commit da9ad74 (leaves held as
//! `serde_json::Value`, paths as lists of `String`s) from a shadow with
//! nested values, `null`s inside arrays, a key holding `\0`, a negative
//! number, a float, a tombstone, a conflict and a key and value longer
//! than the 22 bytes kept inline. Encoding it again must give the same
//! bytes: the stored form did not change when values became CBOR.

use serde_json::json;
use shade_shared::sync::{decode, encode};
use shade_shared::{Limits, Policy, Section, Shadow, SyncDown, SyncUp, VersionVector};

const STORED: &[u8] = include_bytes!("data/shadow-v0.cbor");

#[test]
fn a_shadow_stored_by_an_earlier_build_loads_and_encodes_to_the_same_bytes() {
    let shadow: Shadow = decode(STORED, Limits::default().max_depth).expect("the fixture loads");
    assert_eq!(shadow.version, 7);
    let desired = shadow.render(Section::Desired, Policy::Lww);
    assert_eq!(
        desired.state,
        json!({"color": "blue", "deep": {"a\u{0}b": {"c": -3}},
               "list": [1, null, "x", {"k": null, "n": [1.5]}]})
    );
    assert_eq!(desired.conflicts.len(), 1, "color: green against blue");
    assert_eq!(desired.conflicts[0].lost.value, json!("green"));
    assert_eq!(
        shadow.render(Section::Reported, Policy::Lww).state,
        json!({"long key that is well over twenty-two bytes": "and a value over twenty-two bytes too",
               "temp": 21.25})
    );
    assert_eq!(encode(&shadow).expect("encodes"), STORED);
    // And it still syncs: a fresh replica gets all of it.
    let mut fresh = Shadow::new();
    fresh.merge(&shadow.changes_since(&VersionVector::new()));
    assert_eq!(fresh, shadow);
}

/// Sync messages written by the serde encoder of commit da9ad74 (the same
/// shadow's changes as a `SyncUp` from the agent and a `SyncDown` from the
/// broker): the hand-written codec reads them and writes the same bytes,
/// so agents and brokers of both builds understand each other.
#[test]
fn sync_messages_of_an_earlier_build_read_and_write_the_same_bytes() {
    let depth = Limits::default().max_depth;
    let up_bytes: &[u8] = include_bytes!("data/sync-up-v2.cbor");
    let up = SyncUp::from_cbor(up_bytes, depth).expect("the SyncUp reads");
    assert_eq!(up.replica.as_str(), "a:lamp-1");
    assert!(!up.changes.is_empty());
    assert_eq!(up.to_cbor(), up_bytes);
    let down_bytes: &[u8] = include_bytes!("data/sync-down-v2.cbor");
    let down = SyncDown::from_cbor(down_bytes, depth).expect("the SyncDown reads");
    assert_eq!((down.replica.as_str(), down.version), ("b:local", 7));
    assert_eq!(down.to_cbor(), down_bytes);
    // What they carry merges: the agent's changes into a fresh broker.
    let mut broker = Shadow::new();
    assert!(!broker.merge(&up.changes).gap);
    assert!(broker.render(Section::Reported, Policy::Lww).state["temp"] == json!(21.25));
}
