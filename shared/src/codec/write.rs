//! Writing sync messages (the format is in the parent module's docs).
//!
//! Plain appends to a `Vec` sized beforehand. Writing by position into a
//! zeroed buffer, heads and short values as fixed-size stores, is no
//! faster on the 100-leaf bench and slower on a busy machine
//! (docs/BENCHMARKS.md): zeroing the buffer costs what the fixed stores
//! save.

use crate::cbor;
use crate::changes::Changes;
use crate::leaf::Section;
use crate::message::{SyncDown, SyncUp};
use crate::path::Keys;
use crate::version::VersionVector;

// Out of line (one call per message) so that profiles name it.
#[inline(never)]
pub(crate) fn encode_up(up: &SyncUp) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity(&up.changes));
    cbor::write_map_len(&mut out, 2);
    cbor::write_text(&mut out, "replica");
    cbor::write_text(&mut out, up.replica.as_str());
    cbor::write_text(&mut out, "changes");
    write_changes(&mut out, &up.changes);
    out
}

pub(crate) fn encode_down(down: &SyncDown) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity(&down.changes));
    cbor::write_map_len(&mut out, 4);
    cbor::write_text(&mut out, "replica");
    cbor::write_text(&mut out, down.replica.as_str());
    cbor::write_text(&mut out, "version");
    cbor::write_u64(&mut out, down.version);
    cbor::write_text(&mut out, "changes");
    write_changes(&mut out, &down.changes);
    cbor::write_text(&mut out, "stable");
    write_vv(&mut out, &down.stable);
    out
}

/// Enough for the whole message but its two vectors: every path's
/// encoding takes at least the bytes its keys do on the wire, and a leaf
/// at most 41 besides its value.
fn capacity(changes: &Changes) -> usize {
    128 + changes.path_bytes.len()
        + changes.value_bytes.len()
        + changes.registers.len() * 12
        + changes.leaves.len() * 41
}

fn write_vv(out: &mut Vec<u8>, vv: &VersionVector) {
    cbor::write_map_len(out, vv.len());
    for (replica, counter) in vv.iter() {
        cbor::write_text(out, replica.as_str());
        cbor::write_u64(out, counter);
    }
}

fn write_changes(out: &mut Vec<u8>, changes: &Changes) {
    cbor::write_array_len(out, 5);
    write_vv(out, &changes.vv);
    write_vv(out, &changes.since);
    cbor::write_bool(out, changes.partial);
    cbor::write_array_len(out, changes.replicas.len());
    for replica in &changes.replicas {
        cbor::write_text(out, replica.as_str());
    }
    cbor::write_array_len(out, changes.registers.len());
    let (mut path_start, mut leaves_start, mut value_start) = (0, 0, 0);
    for register in &changes.registers {
        cbor::write_array_len(out, 3);
        cbor::write_u64(out, section_number(register.section));
        let tail = changes.path_bytes.get(path_start..).unwrap_or_default();
        write_path(out, tail, register.path_end.saturating_sub(path_start));
        path_start = register.path_end;
        let leaves = changes.leaves.get(leaves_start..register.leaves_end);
        let leaves = leaves.unwrap_or_default();
        leaves_start = register.leaves_end;
        cbor::write_array_len(out, leaves.len());
        for leaf in leaves {
            cbor::write_array_len(out, 5);
            match leaf.value_end.checked_sub(value_start) {
                Some(len) if len > 0 => {
                    let rest = changes.value_bytes.get(value_start..);
                    cbor::append_short(out, rest.unwrap_or_default(), len);
                }
                _ => cbor::write_null(out),
            }
            value_start = leaf.value_end;
            cbor::write_u64(out, u64::from(leaf.replica));
            cbor::write_u64(out, leaf.counter);
            cbor::write_u64(out, leaf.ms);
            cbor::write_u64(out, u64::from(leaf.logical));
        }
    }
}

/// A path as its list of keys, copied from its encoding in one pass: a
/// placeholder array head is patched with the count once the keys are
/// written. Paths with a key holding `\0` or with 24 keys or more (a
/// longer head) are written again key by key.
///
/// `tail` holds the encoding (its first `len` bytes) and whatever follows
/// it in the message's buffer, so that keys are copied as fixed windows.
fn write_path(out: &mut Vec<u8>, tail: &[u8], len: usize) {
    let encoded = tail.get(..len).unwrap_or(tail);
    let head_at = out.len();
    out.push(0);
    let mut count = 0u8;
    let mut at = 0;
    while at < encoded.len() && count < 24 {
        let rest = &encoded[at..];
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if rest.get(end + 1) != Some(&1) {
            count = 24; // an escaped 0x00: not a key's end
            break;
        }
        cbor::write_head(out, cbor::TEXT, end as u64);
        cbor::append_short(out, &tail[at..], end);
        at += end + 2;
        count += 1;
    }
    if count < 24 {
        if let Some(head) = out.get_mut(head_at) {
            *head = 0x80 | count;
        }
        return;
    }
    out.truncate(head_at);
    let mut count = Keys::of(encoded);
    let mut n = 0;
    while count.next_bytes().is_some() {
        n += 1;
    }
    cbor::write_array_len(out, n);
    let mut keys = Keys::of(encoded);
    while let Some(key) = keys.next_bytes() {
        cbor::write_head(out, cbor::TEXT, key.len() as u64);
        out.extend_from_slice(&key);
    }
}

fn section_number(section: Section) -> u64 {
    match section {
        Section::Desired => 0,
        Section::Reported => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::Path;
    use proptest::prelude::*;

    /// A path written key by key: the plain reference.
    fn reference(keys: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        cbor::write_array_len(&mut out, keys.len());
        for key in keys {
            cbor::write_text(&mut out, key);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whichever way a path is written (copied from its encoding, or
        /// key by key after an escaped key or past 23 keys), the bytes are
        /// those of its keys.
        #[test]
        fn paths_are_written_as_their_keys(
            keys in prop::collection::vec("[a-z\0é]{0,17}", 0..30),
            after in prop::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut out = Vec::new();
            let mut tail = Path::from_keys(&keys).encoded().to_vec();
            let len = tail.len();
            tail.extend_from_slice(&after);
            write_path(&mut out, &tail, len);
            prop_assert_eq!(out, reference(&keys));
        }
    }
}
