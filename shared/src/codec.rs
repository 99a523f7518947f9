//! The sync messages' CBOR, written and read by hand.
//!
//! Sync messages are the broker's and the agents' hottest path (every
//! local write, every reconnect), and through serde a 100-leaf `SyncUp`
//! cost about 80 µs to encode and decode, mostly in per-item dispatch and
//! allocations. Here a message is one pass over a byte slice into the
//! flat [`Changes`]: path keys are appended to its buffer as their
//! order-preserving encoding and values as their canonical CBOR (see
//! [`crate::path`], [`crate::value`]), the rest as plain numbers, so a
//! message is decoded into a handful of allocations whatever its size.
//!
//! The format is fixed, so that agents and brokers of different builds
//! read each other: a `SyncUp` is the map `{"replica", "changes"}`, a
//! `SyncDown` `{"replica", "version", "changes", "stable"}`, and
//! `changes` is `[vv, since, partial, replicas, paths]`:
//!
//! - `vv`, `since`: maps of replica id to counter;
//! - `replicas`: the table of the ids the leaves name, each once (nearly
//!   every leaf of a message was written by one of a few replicas);
//! - `paths`: `[section, path, leaves]` per register, the section 0
//!   (`desired`) or 1 (`reported`), the path a list of keys, each leaf
//!   `[value, replica index, counter, ms, logical]`, a tombstone's value
//!   `null`.
//!
//! Readers skip array elements and map keys they do not know, so a later
//! version may append fields. Everything read is checked: ids are
//! validated, indexes must be in the table, counters from 1 to
//! [`MAX_COUNTER`](crate::version::MAX_COUNTER) and covered by the
//! message's vector, values well-formed JSON and not objects, paths of at
//! least one key, and a leaf's keys plus its value's levels at most the
//! document depth limit (a 40 kB message can hold a path of 20,000 keys,
//! enough to overflow the stack of whatever renders the document). What
//! no replica writes is refused rather than merged: merged, a hand-made
//! leaf at no key makes its section render wrongly, and one beyond its
//! message's own vector stays "pending" on every agent.

use crate::cbor::{self, CborError, Reader};
use crate::changes::{Changes, LeafEntry, RegisterEntry};
use crate::leaf::Section;
use crate::message::{SyncDown, SyncUp};
use crate::name::ReplicaId;
use crate::path;
use crate::value::LeafValue;
use crate::version::{VersionVector, MAX_COUNTER};

mod write;

pub(crate) use write::{encode_down, encode_up};

/// Nesting of the envelope around values, for skipping unknown fields.
const ENVELOPE_DEPTH: usize = 8;

pub(crate) fn decode_up(bytes: &[u8], max_depth: usize) -> Result<SyncUp, CborError> {
    let mut r = Reader::new(bytes);
    let (mut replica, mut changes) = (None, None);
    for _ in 0..r.map_len()? {
        match r.text()? {
            "replica" => replica = Some(read_replica(&mut r)?),
            "changes" => changes = Some(read_changes(&mut r, max_depth)?),
            _ => r.skip(ENVELOPE_DEPTH + max_depth)?,
        }
    }
    let up = SyncUp {
        replica: replica.ok_or_else(|| err(&r, "missing replica"))?,
        changes: changes.ok_or_else(|| err(&r, "missing changes"))?,
    };
    finish(&r)?;
    Ok(up)
}

pub(crate) fn decode_down(bytes: &[u8], max_depth: usize) -> Result<SyncDown, CborError> {
    let mut r = Reader::new(bytes);
    let (mut replica, mut version, mut changes, mut stable) = (None, None, None, None);
    for _ in 0..r.map_len()? {
        match r.text()? {
            "replica" => replica = Some(read_replica(&mut r)?),
            "version" => version = Some(r.u64()?),
            "changes" => changes = Some(read_changes(&mut r, max_depth)?),
            "stable" => stable = Some(read_vv(&mut r)?),
            _ => r.skip(ENVELOPE_DEPTH + max_depth)?,
        }
    }
    let down = SyncDown {
        replica: replica.ok_or_else(|| err(&r, "missing replica"))?,
        version: version.ok_or_else(|| err(&r, "missing version"))?,
        changes: changes.ok_or_else(|| err(&r, "missing changes"))?,
        stable: stable.ok_or_else(|| err(&r, "missing stable"))?,
    };
    finish(&r)?;
    Ok(down)
}

/// A message is the whole payload.
/// An error at the reader's position.
fn err(r: &Reader<'_>, what: impl std::fmt::Display) -> CborError {
    CborError::new(what.to_string(), r.position())
}

fn finish(r: &Reader<'_>) -> Result<(), CborError> {
    match r.remaining() {
        0 => Ok(()),
        n => Err(err(r, format_args!("{n} trailing bytes after the message"))),
    }
}

fn read_replica(r: &mut Reader<'_>) -> Result<ReplicaId, CborError> {
    let text = r.text()?;
    ReplicaId::new(text).map_err(|e| err(r, e))
}

fn read_counter(r: &mut Reader<'_>) -> Result<u64, CborError> {
    let counter = r.u64()?;
    if counter > MAX_COUNTER {
        return Err(err(
            r,
            format_args!("counter {counter} is above {MAX_COUNTER}"),
        ));
    }
    Ok(counter)
}

fn read_vv(r: &mut Reader<'_>) -> Result<VersionVector, CborError> {
    let n = r.map_len()?;
    let mut vv = VersionVector::new();
    for _ in 0..n {
        let replica = read_replica(r)?;
        vv.insert(replica, read_counter(r)?);
    }
    Ok(vv)
}

/// An array's length, which must be at least `min`.
#[inline]
fn array_of(r: &mut Reader<'_>, min: usize, what: &str) -> Result<usize, CborError> {
    let n = r.array_len()?;
    if n < min {
        return Err(too_short(r, n, min, what));
    }
    Ok(n)
}

#[cold]
fn too_short(r: &Reader<'_>, n: usize, min: usize, what: &str) -> CborError {
    err(r, format_args!("{what} has {n} elements, not {min}"))
}

/// Skips the `n - known` elements a later version may have appended.
fn skip_extra(r: &mut Reader<'_>, n: usize, known: usize, depth: usize) -> Result<(), CborError> {
    for _ in known..n {
        r.skip(depth)?;
    }
    Ok(())
}

fn read_changes(r: &mut Reader<'_>, max_depth: usize) -> Result<Changes, CborError> {
    let depth = ENVELOPE_DEPTH + max_depth;
    let n = array_of(r, 5, "changes")?;
    let vv = read_vv(r)?;
    let since = read_vv(r)?;
    let partial = r.bool()?;
    let mut changes = Changes::new(vv, since, partial);
    let table_len = r.array_len()?;
    for _ in 0..table_len {
        changes.replicas.push(read_replica(r)?);
    }
    let count = r.array_len()?;
    // Sized for the usual message: one leaf per register, short paths
    // and values (what the encoder's capacity assumes too).
    changes.registers.reserve_exact(count);
    changes.leaves.reserve(count);
    changes.path_bytes.reserve(count * 16);
    changes.value_bytes.reserve(count * 8);
    for _ in 0..count {
        read_register(r, &mut changes, max_depth)?;
    }
    skip_extra(r, n, 5, depth)?;
    check_covered(r, &changes)?;
    Ok(changes)
}

/// Every leaf's write must be covered by the message's vector, its causal
/// context (which is how every replica writes its messages). A leaf
/// beyond it would be merged yet left out of the receiver's vector, so
/// every later message would offer it again: an agent would count it as
/// pending for good.
fn check_covered(r: &Reader<'_>, changes: &Changes) -> Result<(), CborError> {
    let seen: Vec<u64> = changes
        .replicas
        .iter()
        .map(|id| changes.vv.get(id))
        .collect();
    for leaf in &changes.leaves {
        let covered = seen.get(leaf.replica as usize).copied().unwrap_or(0);
        if leaf.counter > covered {
            let id = changes
                .replicas
                .get(leaf.replica as usize)
                .map_or("?", ReplicaId::as_str);
            return Err(err(
                r,
                format_args!(
                    "the leaf ({id}, {}) is beyond the message's vector, which has {covered} for {id}",
                    leaf.counter
                ),
            ));
        }
    }
    Ok(())
}

/// Reads one register `[section, path, leaves]` into `changes`.
#[inline(always)]
fn read_register(
    r: &mut Reader<'_>,
    changes: &mut Changes,
    max_depth: usize,
) -> Result<(), CborError> {
    let depth = ENVELOPE_DEPTH + max_depth;
    let n = array_of(r, 3, "a path register")?;
    let section = match r.u64()? {
        0 => Section::Desired,
        1 => Section::Reported,
        other => return Err(err(r, format_args!("section {other} is not 0 or 1"))),
    };
    // A path's keys are levels of the document as much as its value's
    // are: together they may not nest deeper than the limit, which is
    // also what bounds the stack of rendering and dropping the document.
    let keys = r.array_len()?;
    if keys == 0 {
        // Sections are objects: every leaf sits under at least one key.
        return Err(err(r, "a leaf's path has no keys"));
    }
    let Some(value_depth) = max_depth.checked_sub(keys) else {
        return Err(err(
            r,
            format_args!("a path of {keys} keys nests deeper than {max_depth} levels"),
        ));
    };
    for _ in 0..keys {
        if !push_plain_key(r, &mut changes.path_bytes) {
            path::push_key_bytes(&mut changes.path_bytes, r.text_bytes()?);
        }
    }
    let count = r.array_len()?;
    for _ in 0..count {
        read_leaf(r, changes, value_depth)?;
    }
    changes.registers.push(RegisterEntry {
        path_end: changes.path_bytes.len(),
        leaves_end: changes.leaves.len(),
        section,
    });
    skip_extra(r, n, 3, depth)
}

/// Appends the encoding of the key at `r` to `out` if it is short and
/// plain (a text of at most 16 bytes of ASCII without `\0`, with 16 bytes
/// of message after its head: most keys), checked and copied as one
/// 16-byte word rather than byte by byte; else false, with nothing read or
/// appended.
#[inline(always)]
fn push_plain_key(r: &mut Reader<'_>, out: &mut Vec<u8>) -> bool {
    // Bytes whose high bit, or whose subtraction of 1 from each byte,
    // shows a non-ASCII or a zero byte (exact once no byte is above 0x7f).
    const LOW: u128 = u128::MAX / 0xff;
    const HIGH: u128 = LOW << 7;
    let Some((&head, tail)) = r.rest().split_first() else {
        return false;
    };
    let len = usize::from(head & 0x1f);
    let Some(window) = tail.first_chunk::<16>() else {
        return false;
    };
    if head >> 5 != cbor::TEXT || len > 16 {
        return false;
    }
    let word = u128::from_le_bytes(*window);
    // The key's bytes (little-endian: the low ones); the rest set to 1
    // for the zero test.
    let keep = u128::MAX.checked_shr(128 - 8 * len as u32).unwrap_or(0);
    let key = word & keep | LOW & !keep;
    if key & HIGH != 0 || key.wrapping_sub(LOW) & HIGH != 0 {
        return false;
    }
    if r.take(1 + len as u64).is_err() {
        return false;
    }
    cbor::append_short(out, window, len);
    out.extend_from_slice(&[0, 1]);
    true
}

/// Reads one leaf `[value, replica index, counter, ms, logical]` into
/// `changes`.
#[inline(always)]
fn read_leaf(r: &mut Reader<'_>, changes: &mut Changes, max_depth: usize) -> Result<(), CborError> {
    let n = array_of(r, 5, "a leaf")?;
    if r.peek_null() {
        r.null()?;
    } else if r.peek_byte()? >> 5 == cbor::MAP {
        // An object is a level of paths, never one leaf's value: taken
        // whole, a later update of one of its keys would drop the others.
        return Err(err(r, "a leaf's value is an object"));
    } else {
        LeafValue::read_into(r, max_depth, &mut changes.value_bytes)?;
    }
    let index = r.u64()?;
    let replica = u32::try_from(index)
        .ok()
        .filter(|&i| (i as usize) < changes.replicas.len())
        .ok_or_else(|| err(r, format_args!("replica index {index} is not in the table")))?;
    let counter = read_counter(r)?;
    if counter == 0 {
        return Err(err(r, "a leaf's counter is 0, which names no write"));
    }
    let ms = r.u64()?;
    let logical = r.u64()?;
    let logical = u32::try_from(logical).map_err(|_| {
        err(
            r,
            format_args!("logical time {logical} is above {}", u32::MAX),
        )
    })?;
    skip_extra(r, n, 5, ENVELOPE_DEPTH + max_depth)?;
    changes.leaves.push(LeafEntry {
        value_end: changes.value_bytes.len(),
        counter,
        ms,
        replica,
        logical,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A key read the fast way is encoded as `push_key` encodes it, and
        /// only plain keys of up to 16 bytes with 16 bytes after their
        /// head are read that way; otherwise nothing is read or appended.
        #[test]
        fn plain_keys_read_the_fast_way_are_encoded_as_keys(
            key in "[a-z\0é~]{0,20}",
            after in prop::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut message = Vec::new();
            cbor::write_text(&mut message, &key);
            let head = message.len() - key.len();
            message.extend_from_slice(&after);
            let mut r = Reader::new(&message);
            let mut out = vec![7u8];
            let fast = push_plain_key(&mut r, &mut out);
            let plain = key.bytes().all(|b| (1..0x80).contains(&b));
            let expected = plain && head == 1 && key.len() <= 16 && message.len() >= 17;
            prop_assert_eq!(fast, expected);
            if fast {
                let mut reference = vec![7u8];
                path::push_key(&mut reference, &key);
                prop_assert_eq!(out, reference);
                prop_assert_eq!(r.position(), head + key.len());
            } else {
                prop_assert_eq!(out, vec![7u8]);
                prop_assert_eq!(r.position(), 0);
            }
        }
    }
}
