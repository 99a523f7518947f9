//! Writing sync messages (the format is in the parent module's docs).
//!
//! Plain appends to a `Vec` sized beforehand. A writer by position into a
//! zeroed buffer, storing heads and short values as fixed-size pieces,
//! was tried (session 5, docs/BENCHMARKS.md): it ran no faster on the
//! 100-leaf bench, and slower while the machine was busy, as zeroing the
//! buffer costs what the fixed stores save.

use crate::cbor;
use crate::document::Section;
use crate::merge::Changes;
use crate::name::ReplicaId;
use crate::path::Path;
use crate::sync::{SyncDown, SyncUp};
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

/// A guess that spares most reallocations: a leaf with a short path and
/// value takes about 36 bytes.
fn capacity(changes: &Changes) -> usize {
    128 + changes.paths.len() * 40
}

/// The replica table of a message, in order of first use.
fn replica_table(changes: &Changes) -> Vec<&ReplicaId> {
    let mut table: Vec<&ReplicaId> = Vec::new();
    for pl in &changes.paths {
        for leaf in &pl.leaves {
            if !table.iter().any(|r| **r == leaf.dot.replica) {
                table.push(&leaf.dot.replica);
            }
        }
    }
    table
}

fn write_vv(out: &mut Vec<u8>, vv: &VersionVector) {
    cbor::write_map_len(out, vv.len());
    for (replica, counter) in vv.iter() {
        cbor::write_text(out, replica.as_str());
        cbor::write_u64(out, counter);
    }
}

fn write_changes(out: &mut Vec<u8>, changes: &Changes) {
    let table = replica_table(changes);
    cbor::write_array_len(out, 5);
    write_vv(out, &changes.vv);
    write_vv(out, &changes.since);
    cbor::write_bool(out, changes.partial);
    cbor::write_array_len(out, table.len());
    for replica in &table {
        cbor::write_text(out, replica.as_str());
    }
    cbor::write_array_len(out, changes.paths.len());
    // Nearly every leaf of a message has the previous one's replica.
    let mut last = (table.first().copied(), 0u64);
    for pl in &changes.paths {
        cbor::write_array_len(out, 3);
        cbor::write_u64(out, section_number(pl.section));
        write_path(out, &pl.path);
        cbor::write_array_len(out, pl.leaves.len());
        for leaf in &pl.leaves {
            if last.0 != Some(&leaf.dot.replica) {
                let index = table.iter().position(|r| **r == leaf.dot.replica);
                last = (Some(&leaf.dot.replica), index.unwrap_or(0) as u64);
            }
            cbor::write_array_len(out, 5);
            match &leaf.value {
                Some(value) => out.extend_from_slice(value.as_cbor()),
                None => cbor::write_null(out),
            }
            cbor::write_u64(out, last.1);
            cbor::write_u64(out, leaf.dot.counter);
            cbor::write_u64(out, leaf.ts.ms);
            cbor::write_u64(out, u64::from(leaf.ts.logical));
        }
    }
}

/// A path as its list of keys, copied from its encoding in one pass: a
/// placeholder array head is patched with the count once the keys are
/// written. Paths with a key holding `\0` or with 24 keys or more (a
/// longer head) are written again key by key.
fn write_path(out: &mut Vec<u8>, path: &Path) {
    let head_at = out.len();
    out.push(0);
    let mut count = 0u8;
    let mut rest = path.encoded();
    while !rest.is_empty() && count < 24 {
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if rest.get(end + 1) != Some(&1) {
            count = 24; // an escaped 0x00: not a key's end
            break;
        }
        cbor::write_head(out, cbor::TEXT, end as u64);
        out.extend_from_slice(&rest[..end]);
        rest = rest.get(end + 2..).unwrap_or_default();
        count += 1;
    }
    if count < 24 {
        if let Some(head) = out.get_mut(head_at) {
            *head = 0x80 | count;
        }
        return;
    }
    out.truncate(head_at);
    cbor::write_array_len(out, path.len());
    let mut keys = path.keys();
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
        ) {
            let mut out = Vec::new();
            write_path(&mut out, &Path::from_keys(&keys));
            prop_assert_eq!(out, reference(&keys));
        }
    }
}
