//! Writing sync messages (the format is in the parent module's docs).
//!
//! Into a buffer sized beforehand, by position: each piece is a store of
//! a fixed size (a head's 9 bytes, a short value's 22) after one bounds
//! check, of which only the piece's own length counts; the next piece
//! overwrites the rest. No `Vec` growth checks or `memcpy` calls per byte
//! string, and the bytes are stored once, from registers. If the size
//! guess is ever short the message is written again into a larger
//! buffer, so a wrong guess costs time, never bytes.

use crate::cbor::{self, Sink, ARRAY, TEXT, UNSIGNED};
use crate::document::Section;
use crate::merge::Changes;
use crate::name::ReplicaId;
use crate::path::{Path, WordKeys};
use crate::sync::{SyncDown, SyncUp};
use crate::version::VersionVector;

pub(crate) fn encode_up(up: &SyncUp) -> Vec<u8> {
    let table = replica_table(&up.changes);
    let bound = 32 + text_bound(&up.replica) + changes_bound(&up.changes, &table);
    write_all(bound, |w| {
        cbor::write_map_len(w, 2);
        cbor::write_text(w, "replica");
        cbor::write_text(w, up.replica.as_str());
        cbor::write_text(w, "changes");
        write_changes(w, &up.changes, &table);
    })
}

pub(crate) fn encode_down(down: &SyncDown) -> Vec<u8> {
    let table = replica_table(&down.changes);
    let bound = 64
        + text_bound(&down.replica)
        + changes_bound(&down.changes, &table)
        + vv_bound(&down.stable);
    write_all(bound, |w| {
        cbor::write_map_len(w, 4);
        cbor::write_text(w, "replica");
        cbor::write_text(w, down.replica.as_str());
        cbor::write_text(w, "version");
        cbor::write_u64(w, down.version);
        cbor::write_text(w, "changes");
        write_changes(w, &down.changes, &table);
        cbor::write_text(w, "stable");
        write_vv(w, &down.stable);
    })
}

/// Runs `write` into a buffer of `bound` bytes, doubled (from 64 at
/// least, so a zero guess grows too) until it fits.
fn write_all(mut bound: usize, write: impl Fn(&mut Writer)) -> Vec<u8> {
    loop {
        let mut w = Writer::new(bound);
        write(&mut w);
        match w.finish() {
            Some(bytes) => return bytes,
            None => bound = bound.saturating_mul(2).max(64),
        }
    }
}

/// A buffer of zeros written by position; `overflow` once a piece did
/// not fit (the rest is then garbage, and [`Writer::finish`] says so).
struct Writer {
    buf: Vec<u8>,
    pos: usize,
    overflow: bool,
}

/// Room a fixed-size store may take past the end of what is written.
const SLACK: usize = 32;

impl Writer {
    fn new(bound: usize) -> Self {
        Writer {
            buf: vec![0; bound + SLACK],
            pos: 0,
            overflow: false,
        }
    }

    /// Stores all `N` bytes, of which the first `len` count.
    #[inline(always)]
    fn put_fixed<const N: usize>(&mut self, bytes: &[u8; N], len: usize) {
        match self.buf.get_mut(self.pos..self.pos + N) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.pos += len.min(N);
            }
            None => self.overflow = true,
        }
    }

    #[inline(always)]
    fn head(&mut self, major: u8, n: u64) {
        if n < 24 {
            self.put_fixed(&[major << 5 | n as u8], 1);
        } else {
            let (bytes, len) = cbor::head_bytes(major, n);
            self.put_fixed(&bytes, len);
        }
    }

    fn finish(mut self) -> Option<Vec<u8>> {
        if self.overflow {
            return None;
        }
        self.buf.truncate(self.pos);
        Some(self.buf)
    }
}

impl Sink for Writer {
    fn put(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.pos..self.pos + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.pos += bytes.len();
            }
            None => self.overflow = true,
        }
    }

    #[inline(always)]
    fn put_byte(&mut self, byte: u8) {
        self.put_fixed(&[byte], 1);
    }
}

/// At most what a text item of `id` takes.
fn text_bound(id: &ReplicaId) -> usize {
    9 + id.as_str().len()
}

fn vv_bound(vv: &VersionVector) -> usize {
    9 + vv.iter().map(|(r, _)| text_bound(r) + 9).sum::<usize>()
}

/// At most what `changes` take: a register's path as CBOR is at most its
/// encoding plus a 9-byte head per key (a key takes two bytes of the
/// encoding at least), a leaf at most five 9-byte heads and its value.
fn changes_bound(changes: &Changes, table: &[&ReplicaId]) -> usize {
    let registers: usize = changes
        .paths
        .iter()
        .map(|pl| {
            let path = pl.path.encoded().len();
            let leaves: usize = pl.leaves.iter().map(|l| 45 + value_len(l)).sum();
            27 + path + 9 * path.div_ceil(2) + leaves
        })
        .sum();
    let table: usize = 9 + table.iter().map(|r| text_bound(r)).sum::<usize>();
    32 + vv_bound(&changes.vv) + vv_bound(&changes.since) + table + registers
}

fn value_len(leaf: &crate::document::Leaf) -> usize {
    leaf.value.as_ref().map_or(1, |v| v.as_cbor().len())
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

fn write_vv(w: &mut Writer, vv: &VersionVector) {
    cbor::write_map_len(w, vv.len());
    for (replica, counter) in vv.iter() {
        cbor::write_text(w, replica.as_str());
        cbor::write_u64(w, counter);
    }
}

fn write_changes(w: &mut Writer, changes: &Changes, table: &[&ReplicaId]) {
    cbor::write_array_len(w, 5);
    write_vv(w, &changes.vv);
    write_vv(w, &changes.since);
    cbor::write_bool(w, changes.partial);
    cbor::write_array_len(w, table.len());
    for replica in table {
        cbor::write_text(w, replica.as_str());
    }
    cbor::write_array_len(w, changes.paths.len());
    // Nearly every leaf of a message has the previous one's replica.
    let mut last = (table.first().copied(), 0u64);
    for pl in &changes.paths {
        w.put_fixed(&[ARRAY << 5 | 3, section_number(pl.section)], 2);
        write_path(w, &pl.path);
        w.head(ARRAY, pl.leaves.len() as u64);
        for leaf in &pl.leaves {
            if last.0 != Some(&leaf.dot.replica) {
                let index = table.iter().position(|r| **r == leaf.dot.replica);
                last = (Some(&leaf.dot.replica), index.unwrap_or(0) as u64);
            }
            w.put_byte(ARRAY << 5 | 5);
            match leaf.value.as_ref().map(|v| v.inline_cbor()) {
                Some(Some((buf, len))) => w.put_fixed(buf, len),
                Some(None) => w.put(leaf.value.as_ref().map_or(&[], |v| v.as_cbor())),
                None => w.put_byte(cbor::NULL),
            }
            w.head(UNSIGNED, last.1);
            w.head(UNSIGNED, leaf.dot.counter);
            w.head(UNSIGNED, leaf.ts.ms);
            w.head(UNSIGNED, u64::from(leaf.ts.logical));
        }
    }
}

/// A path as its list of keys. An inline path's keys are cut from its
/// words and stored 16 bytes at a time, the array head patched with the
/// count at the end; any other path (or one of those with a long or
/// escaped key) is written again key by key.
fn write_path(w: &mut Writer, path: &Path) {
    let start = w.pos;
    if let Some(mut keys) = WordKeys::of(path) {
        w.put_byte(0);
        let mut count = 0u8;
        loop {
            match keys.next() {
                None => {
                    if let Some(head) = w.buf.get_mut(start) {
                        *head = ARRAY << 5 | count;
                    }
                    return;
                }
                Some(Some((word, len))) if count < 23 => {
                    w.put_fixed(&[TEXT << 5 | len as u8], 1);
                    w.put_fixed(&word.to_be_bytes(), len);
                    count += 1;
                }
                Some(_) => break,
            }
        }
        w.pos = start;
    }
    cbor::write_array_len(w, path.len());
    let mut keys = path.keys();
    while let Some(key) = keys.next_bytes() {
        cbor::write_head(w, TEXT, key.len() as u64);
        w.put(&key);
    }
}

fn section_number(section: Section) -> u8 {
    match section {
        Section::Desired => 0,
        Section::Reported => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A path written key by key into a `Vec`: the plain reference.
    fn reference(keys: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        cbor::write_array_len(&mut out, keys.len());
        for key in keys {
            cbor::write_text(&mut out, key);
        }
        out
    }

    fn written(path: &Path, bound: usize) -> Vec<u8> {
        write_all(bound, |w| write_path(w, path))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whichever way a path is written (cut from its words, or key by
        /// key after a long or escaped key), and however short the first
        /// buffer, the bytes are those of its keys.
        #[test]
        fn paths_are_written_as_their_keys(
            keys in prop::collection::vec("[a-z\0é]{0,17}", 0..30),
            bound in 0..64usize,
        ) {
            let path = Path::from_keys(&keys);
            prop_assert_eq!(written(&path, bound), reference(&keys));
            prop_assert_eq!(written(&path, 4096), reference(&keys));
        }
    }

    #[test]
    fn a_short_buffer_is_written_again_larger() {
        let keys: Vec<String> = ["group1", "key0"].map(String::from).to_vec();
        let path = Path::from_keys(&keys);
        // 0 bytes of room (plus the slack): the first try overflows.
        let mut w = Writer::new(0);
        for _ in 0..3 {
            write_path(&mut w, &path);
        }
        assert!(w.finish().is_none());
        assert_eq!(written(&path, 0), reference(&keys));
    }
}
