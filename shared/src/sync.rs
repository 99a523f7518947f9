//! The agent's sync protocol: `SyncUp` (agent -> broker) and `SyncDown`
//! (broker -> agent), carried as CBOR on `.../sync/up` and `.../sync/down`.
//!
//! Each side sends the registers the other has not seen, judged by the last
//! vector it heard from it, with its own vector. Messages are idempotent:
//! a lost one costs a resend, a repeated one changes nothing.
//!
//! ```text
//! agent                                   broker
//!   | SyncUp { vv_a, changes since vv_b' }   |   (on connect, and on each local write)
//!   |--------------------------------------->|   merge; commit to redb
//!   |  SyncDown { vv_b, version, changes     |
//!   |            since vv_a, stable }        |   sent after the commit:
//!   |<---------------------------------------|   vv_b covering a dot acknowledges it
//! ```
//!
//! Messages are written and read by hand ([`crate::codec`], where the
//! wire format is described); [`encode`] and [`decode`] serve stored
//! state (documents, the agent's replica) through serde. Both decode with
//! a nesting limit and a trailing-bytes check, so a hostile or corrupt
//! payload is an error value, never a stack overflow.

use serde::{Deserialize, Serialize};

use crate::codec;
pub use crate::message::{SyncDown, SyncUp};

impl SyncUp {
    /// The message as CBOR.
    pub fn to_cbor(&self) -> Vec<u8> {
        codec::encode_up(self)
    }

    /// Reads a message, refusing values nested deeper than `max_value_depth`.
    pub fn from_cbor(bytes: &[u8], max_value_depth: usize) -> Result<Self, SyncError> {
        codec::decode_up(bytes, max_value_depth).map_err(SyncError::from)
    }
}

impl SyncDown {
    /// The message as CBOR.
    pub fn to_cbor(&self) -> Vec<u8> {
        codec::encode_down(self)
    }

    /// Reads a message, refusing values nested deeper than `max_value_depth`.
    pub fn from_cbor(bytes: &[u8], max_value_depth: usize) -> Result<Self, SyncError> {
        codec::decode_down(bytes, max_value_depth).map_err(SyncError::from)
    }
}

/// Why a sync payload could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("invalid CBOR sync message: {0}")]
    Invalid(#[from] crate::cbor::CborError),
    #[error("invalid CBOR sync message: {0}")]
    Decode(String),
    #[error("CBOR sync message nests deeper than {0} levels")]
    TooDeep(usize),
    #[error("{0} trailing bytes after the CBOR sync message")]
    Trailing(usize),
    #[error("could not encode sync message: {0}")]
    Encode(String),
}

/// Nesting the envelope itself needs (message, changes, paths, register,
/// leaf, dot...) on top of the values' own depth.
pub const ENVELOPE_DEPTH: usize = 8;

/// Encodes a sync message as CBOR.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, SyncError> {
    cbor4ii::serde::to_vec(Vec::with_capacity(256), msg)
        .map_err(|e| SyncError::Encode(e.to_string()))
}

/// Decodes a sync message, refusing values nested deeper than
/// `max_value_depth` (the document depth limit) plus the envelope.
pub fn decode<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    max_value_depth: usize,
) -> Result<T, SyncError> {
    let limit = ENVELOPE_DEPTH + max_value_depth;
    let mut de = cbor4ii::serde::Deserializer::new(LimitedReader {
        buf: bytes,
        depth_left: limit,
    });
    let value = T::deserialize(&mut de).map_err(|e| {
        let text = e.to_string();
        if text.to_ascii_lowercase().contains("depth") {
            SyncError::TooDeep(limit)
        } else {
            SyncError::Decode(text)
        }
    })?;
    let rest = de.into_inner().buf.len();
    if rest != 0 {
        return Err(SyncError::Trailing(rest));
    }
    Ok(value)
}

/// A slice reader with a nesting limit of our choosing (cbor4ii's own
/// `SliceReader` fixes it at 256).
struct LimitedReader<'a> {
    buf: &'a [u8],
    depth_left: usize,
}

impl<'de> cbor4ii::core::dec::Read<'de> for LimitedReader<'de> {
    type Error = std::convert::Infallible;

    #[inline]
    fn fill<'b>(
        &'b mut self,
        want: usize,
    ) -> Result<cbor4ii::core::dec::Reference<'de, 'b>, Self::Error> {
        let len = want.min(self.buf.len());
        Ok(cbor4ii::core::dec::Reference::Long(&self.buf[..len]))
    }

    #[inline]
    fn advance(&mut self, n: usize) {
        let len = n.min(self.buf.len());
        self.buf = &self.buf[len..];
    }

    #[inline]
    fn step_in(&mut self) -> bool {
        match self.depth_left.checked_sub(1) {
            Some(left) => {
                self.depth_left = left;
                true
            }
            None => false,
        }
    }

    #[inline]
    fn step_out(&mut self) {
        self.depth_left += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::Changes;
    use crate::document::{Patch, Path, Shadow};
    use crate::leaf::{Leaf, Section};
    use crate::name::ReplicaId;
    use crate::value::LeafValue;
    use crate::version::{Timestamp, VersionVector};

    fn replica(s: &str) -> ReplicaId {
        ReplicaId::new(s).expect("valid replica id")
    }

    /// The `SyncUp` of everything `s` holds, from `sender`: its CBOR must
    /// read back equal. Returns the bytes.
    fn round_trips(s: &Shadow, sender: ReplicaId) -> Vec<u8> {
        let up = SyncUp {
            replica: sender,
            changes: s.changes_since(&VersionVector::new()),
        };
        let bytes = up.to_cbor();
        let back = SyncUp::from_cbor(&bytes, 8).expect("decodes");
        assert_eq!(back, up);
        bytes
    }

    #[test]
    fn sync_up_round_trips_through_cbor() {
        let mut s = Shadow::new();
        let a = replica("a:dev");
        let patch = serde_json::json!({"light": {"on": true, "level": 80}, "tags": ["x", 1, null]});
        let Some(map) = patch.as_object().cloned() else {
            panic!("object literal")
        };
        s.write(&a, Section::Reported, &Patch::Merge(map), 1_700_000_000_000);
        round_trips(&s, a);
    }

    /// Keys holding `\0`, empty keys and paths of more keys than a
    /// one-byte array head holds take the slower ways through the codec.
    #[test]
    fn unusual_paths_round_trip() {
        let mut s = Shadow::new();
        let a = replica("a:dev");
        let long: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
        let mut value = serde_json::json!(1);
        for key in long.iter().rev() {
            value = serde_json::json!({ key.clone(): value });
        }
        for patch in [
            serde_json::json!({"a\u{0}b": {"\u{0}": 1, "": 2}, "c": [null]}),
            value,
        ] {
            let map = patch.as_object().cloned().unwrap_or_default();
            s.write(&a, Section::Reported, &Patch::Merge(map), 1_000);
        }
        let up = SyncUp {
            replica: a,
            changes: s.changes_since(&VersionVector::new()),
        };
        assert_eq!(up.changes.len(), 4);
        let back = SyncUp::from_cbor(&up.to_cbor(), 40).expect("decodes");
        assert_eq!(back, up);
        let keys: Vec<Vec<String>> = back
            .changes
            .registers()
            .map(|r| r.path().keys().map(|k| k.into_owned()).collect())
            .collect();
        assert!(keys.contains(&vec!["a\0b".to_string(), "\0".to_string()]));
        assert!(keys.contains(&vec!["a\0b".to_string(), String::new()]));
        assert!(keys.contains(&long));
    }

    /// A path's keys count towards the depth limit with its value's
    /// levels. A path of 20,000 keys in a 40 kB message once made rendering
    /// the merged document overflow the store thread's stack.
    #[test]
    fn a_path_nesting_deeper_than_the_limit_is_refused() {
        let a = replica("a:dev");
        let up = |keys: usize, value: serde_json::Value| {
            let path = Path::from_keys(std::iter::repeat_n("k", keys));
            let mut vv = VersionVector::new();
            let leaf = Leaf {
                value: LeafValue::from_json(&value),
                dot: vv.next_dot(&a),
                ts: Timestamp::from_ms(5),
            };
            SyncUp {
                replica: a.clone(),
                changes: {
                    let mut changes = Changes::new(vv, VersionVector::new(), false);
                    changes.push(Section::Reported, &path, &[leaf]);
                    changes
                },
            }
            .to_cbor()
        };
        assert!(SyncUp::from_cbor(&up(8, serde_json::json!(1)), 8).is_ok());
        assert!(SyncUp::from_cbor(&up(6, serde_json::json!([[1]])), 8).is_ok());
        for (keys, value) in [
            (9, serde_json::json!(1)),
            (7, serde_json::json!([[1]])),
            (20_000, serde_json::json!(1)),
        ] {
            let err = SyncUp::from_cbor(&up(keys, value), 8).expect_err("too deep");
            assert!(err.to_string().contains("deeper than"), "{err}");
        }
    }

    #[test]
    fn garbage_and_deep_nesting_are_errors() {
        assert!(SyncUp::from_cbor(&[0xff, 0x00, 0x13], 8).is_err());
        assert!(SyncUp::from_cbor(&[], 8).is_err());
        assert!(SyncDown::from_cbor(&[0xa1], 8).is_err());
        let deep = vec![0x81u8; 10_000]; // arrays of one element, nested 10,000 deep
        assert!(matches!(
            decode::<serde_json::Value>(&deep, 8),
            Err(SyncError::TooDeep(_))
        ));
    }

    #[test]
    fn leaves_name_their_replica_through_the_message_table() {
        let (a, b) = (replica("a:dev"), replica("b:local"));
        let mut s = Shadow::new();
        let patch = |v: serde_json::Value| Patch::Merge(v.as_object().cloned().unwrap_or_default());
        s.write(
            &a,
            Section::Reported,
            &patch(serde_json::json!({"x": 1})),
            1_000,
        );
        s.write(
            &b,
            Section::Desired,
            &patch(serde_json::json!({"y": [1, null]})),
            2_000,
        );
        s.write(
            &a,
            Section::Reported,
            &patch(serde_json::json!({"z": "z"})),
            3_000,
        );
        let bytes = round_trips(&s, a);
        // Each id is written once, however many leaves name it.
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(text.matches("a:dev").count(), 3, "sender, vector, table");
        assert_eq!(text.matches("b:local").count(), 2, "vector and table");
    }

    /// `{"replica": "a:d", "changes": ...}` around `changes`.
    fn up_bytes(changes: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0xa2, 0x67];
        bytes.extend_from_slice(b"replica");
        bytes.push(0x63);
        bytes.extend_from_slice(b"a:d");
        bytes.push(0x67);
        bytes.extend_from_slice(b"changes");
        bytes.extend_from_slice(changes);
        bytes
    }

    /// The wire format is fixed: an agent and a broker of different
    /// builds must read each other. These are the bytes of the format
    /// described in `codec`, spelled out.
    #[test]
    fn the_wire_format_is_the_documented_one() {
        // [vv {"a:d": 1}, since {}, partial false, replicas ["a:d"], paths [[
        //   1 (reported), ["k"], [[7, index 0, counter 1, ms 5, logical 0]]]]]
        let mut changes = vec![0x85, 0xa1, 0x63];
        changes.extend_from_slice(b"a:d");
        changes.extend_from_slice(&[0x01, 0xa0, 0xf4, 0x81, 0x63]);
        changes.extend_from_slice(b"a:d");
        changes.extend_from_slice(&[
            0x81, 0x83, 0x01, 0x81, 0x61, b'k', 0x81, 0x85, 0x07, 0x00, 0x01, 0x05, 0x00,
        ]);
        let bytes = up_bytes(&changes);
        let mut s = Shadow::new();
        let patch = serde_json::json!({"k": 7});
        let map = patch.as_object().cloned().unwrap_or_default();
        s.write(&replica("a:d"), Section::Reported, &Patch::Merge(map), 5);
        let up = SyncUp {
            replica: replica("a:d"),
            changes: s.changes_since(&VersionVector::new()),
        };
        assert_eq!(up.to_cbor(), bytes);
        assert_eq!(SyncUp::from_cbor(&bytes, 8).expect("decodes"), up);
    }

    #[test]
    fn a_leaf_naming_a_replica_outside_the_table_is_refused() {
        // [vv {"a:d": 1}, since {}, partial false, replicas ["a:d"], paths [[
        //   1 (reported), ["k"], [[1, index 1, counter 1, ms 5, logical 0]]]]]
        let mut changes = vec![0x85, 0xa1, 0x63];
        changes.extend_from_slice(b"a:d");
        changes.extend_from_slice(&[0x01, 0xa0, 0xf4, 0x81, 0x63]);
        changes.extend_from_slice(b"a:d");
        changes.extend_from_slice(&[
            0x81, 0x83, 0x01, 0x81, 0x61, b'k', 0x81, 0x85, 0x01, 0x01, 0x01, 0x05, 0x00,
        ]);
        let mut bytes = up_bytes(&changes);
        let err = SyncUp::from_cbor(&bytes, 8).expect_err("index 1 of a 1-entry table");
        assert!(err.to_string().contains("not in the table"), "{err}");
        let index_at = bytes.len() - 4;
        bytes[index_at] = 0x00;
        let ok = SyncUp::from_cbor(&bytes, 8).expect("index 0 is fine");
        let leaf = ok.changes.registers().flat_map(|r| r.leaves()).next();
        assert_eq!(leaf.map(|l| l.replica.as_str()), Some("a:d"));
        // What a later version appends is skipped; missing fields are errors.
        let mut longer = bytes.clone();
        longer[0] = 0xa3;
        longer.extend_from_slice(&[0x65, b'e', b'x', b't', b'r', b'a', 0x82, 0x01, 0x02]);
        assert_eq!(SyncUp::from_cbor(&longer, 8).expect("extra key"), ok);
        let mut shorter = bytes.clone();
        shorter[0] = 0xa1;
        shorter.truncate(1 + 8 + 4);
        let err = SyncUp::from_cbor(&shorter, 8).expect_err("no changes");
        assert!(err.to_string().contains("missing changes"), "{err}");
    }

    /// One register of `keys` (each `k`) holding one leaf of replica
    /// `a:d`: `value` (CBOR), `counter`, under the vector {"a:d": `vv`}.
    fn one_leaf(vv: u8, keys: usize, value: &[u8], counter: u8) -> Vec<u8> {
        let mut changes = vec![0x85, 0xa1, 0x63];
        changes.extend_from_slice(b"a:d");
        changes.extend_from_slice(&[vv, 0xa0, 0xf4, 0x81, 0x63]);
        changes.extend_from_slice(b"a:d");
        changes.extend_from_slice(&[0x81, 0x83, 0x01, 0x80 | keys as u8]);
        for _ in 0..keys {
            changes.extend_from_slice(&[0x61, b'k']);
        }
        changes.extend_from_slice(&[0x81, 0x85]);
        changes.extend_from_slice(value);
        changes.extend_from_slice(&[0x00, counter, 0x05, 0x00]);
        up_bytes(&changes)
    }

    /// Leaves no replica writes are refused with a reason, not merged: a
    /// leaf at no key (it hid the section's state and mislabelled its
    /// conflicts), an object as one leaf, a counter of 0, and a leaf the
    /// message's own vector does not cover (merged, it stayed "pending" on
    /// every agent for good).
    #[test]
    fn leaves_no_replica_writes_are_refused() {
        assert!(SyncUp::from_cbor(&one_leaf(1, 1, &[0x05], 1), 8).is_ok());
        for (bytes, why) in [
            (one_leaf(1, 0, &[0x05], 1), "has no keys"),
            (one_leaf(1, 1, &[0xa1, 0x61, b'y', 0x01], 1), "is an object"),
            (one_leaf(1, 1, &[0x05], 0), "counter is 0"),
            (one_leaf(1, 1, &[0x05], 9), "beyond the message's vector"),
            (one_leaf(0, 1, &[0x05], 1), "beyond the message's vector"),
        ] {
            let err = SyncUp::from_cbor(&bytes, 8).expect_err(why);
            assert!(err.to_string().contains(why), "{err} (expected: {why})");
        }
    }

    #[test]
    fn a_message_with_trailing_bytes_is_refused() {
        let mut bytes = up_bytes(&[0x85, 0xa0, 0xa0, 0xf4, 0x80, 0x80]);
        assert!(SyncUp::from_cbor(&bytes, 8).is_ok());
        bytes.push(0);
        let err = SyncUp::from_cbor(&bytes, 8).expect_err("trailing byte");
        assert!(err.to_string().contains("trailing"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&1u32).expect("encodes");
        bytes.push(0);
        assert!(matches!(
            decode::<u32>(&bytes, 8),
            Err(SyncError::Trailing(1))
        ));
    }
}
