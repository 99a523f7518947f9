//! A leaf's path: the object keys leading to it, outermost first.
//!
//! Sections are maps ordered by path, and a merge searches one per
//! incoming leaf, so comparing two paths is the merge's innermost step.
//! Compared key by key, that cost one or two `memcmp` calls each time.
//! A [`Path`] also carries the first sixteen bytes of an order-preserving
//! encoding of its keys, computed once: two paths whose prefixes differ
//! are ordered by one integer comparison, and only paths that share those
//! bytes compare their keys. The order is exactly the keys' lexicographic
//! order, so ranges over a section (a subtree) still work, and lookups by
//! a `&[String]` agree with lookups by a `Path`.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The object keys leading to a leaf. Shared (`Arc`): the same path sits
/// in a section, in the dot index and in sync messages, and cloning it must
/// not allocate. Dereferences to `[String]`; serialized as a list of keys.
#[derive(Clone)]
pub struct Path {
    /// First 16 bytes of [`encode`] of `keys`, big-endian, zero-padded.
    prefix: u128,
    keys: Arc<[String]>,
}

/// Feeds the order-preserving encoding of `keys` to `out` until it returns
/// false: each key's bytes with `0x00` escaped as `0x00 0xff`, then
/// `0x00 0x01`. Byte-wise order of encodings is the keys' order: a key
/// that ends sorts below any longer one through the low `0x01`, and a
/// `0x00` inside a key through the high `0xff`.
fn encode(keys: &[String], mut out: impl FnMut(u8) -> bool) {
    for key in keys {
        for &b in key.as_bytes() {
            if b == 0 {
                if !(out(0) && out(0xff)) {
                    return;
                }
            } else if !out(b) {
                return;
            }
        }
        if !(out(0) && out(1)) {
            return;
        }
    }
}

fn prefix_of(keys: &[String]) -> u128 {
    let mut bytes = [0u8; 16];
    let mut n = 0;
    encode(keys, |b| {
        bytes[n] = b;
        n += 1;
        n < bytes.len()
    });
    u128::from_be_bytes(bytes)
}

impl Path {
    pub fn keys(&self) -> &[String] {
        &self.keys
    }
}

impl From<Arc<[String]>> for Path {
    fn from(keys: Arc<[String]>) -> Self {
        Path {
            prefix: prefix_of(&keys),
            keys,
        }
    }
}

impl From<Vec<String>> for Path {
    fn from(keys: Vec<String>) -> Self {
        Arc::<[String]>::from(keys).into()
    }
}

impl From<&[String]> for Path {
    fn from(keys: &[String]) -> Self {
        Arc::<[String]>::from(keys).into()
    }
}

impl FromIterator<String> for Path {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        iter.into_iter().collect::<Arc<[String]>>().into()
    }
}

impl Deref for Path {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.keys
    }
}

impl Borrow<[String]> for Path {
    fn borrow(&self) -> &[String] {
        &self.keys
    }
}

impl AsRef<[String]> for Path {
    fn as_ref(&self) -> &[String] {
        &self.keys
    }
}

impl PartialEq for Path {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix
            && (Arc::ptr_eq(&self.keys, &other.keys) || self.keys == other.keys)
    }
}

impl Eq for Path {}

impl PartialOrd for Path {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The keys' lexicographic order (as `[String]` compares), decided by the
/// prefixes whenever they differ.
impl Ord for Path {
    fn cmp(&self, other: &Self) -> Ordering {
        match self.prefix.cmp(&other.prefix) {
            Ordering::Equal if Arc::ptr_eq(&self.keys, &other.keys) => Ordering::Equal,
            Ordering::Equal => self.keys.cmp(&other.keys),
            decided => decided,
        }
    }
}

/// As `[String]` hashes, so that `Borrow<[String]>` holds for hash maps too.
impl std::hash::Hash for Path {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.keys.hash(state);
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.keys.fmt(f)
    }
}

impl Serialize for Path {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.keys.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Path {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Arc::<[String]>::deserialize(d).map(Path::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(keys: &[&str]) -> Path {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn paths_order_as_their_keys_do() {
        let cases: Vec<Path> = vec![
            p(&[]),
            p(&[""]),
            p(&["", ""]),
            p(&["\0"]),
            p(&["\0\0"]),
            p(&["\0a"]),
            p(&["a"]),
            p(&["a", ""]),
            p(&["a", "b"]),
            p(&["a\0"]),
            p(&["a\0", "b"]),
            p(&["a\u{1}"]),
            p(&["ab"]),
            p(&["abcdefgh"]),
            p(&["abcdefgh", "a"]),
            p(&["abcdefghi"]),
            p(&["abcdefghijklmno"]),
            p(&["abcdefghijklmno", ""]),
            p(&["abcdefghijklmno", "a"]),
            p(&["abcdefghijklmno\0"]),
            p(&["abcdefghijklmnop"]),
            p(&["abcdefghijklmnop", "x"]),
            p(&["abcdefghijklmnopq"]),
            p(&["abcdefghijklmnopq", "a", "b"]),
            p(&["abcdefghijklmnopq", "a\0", "b"]),
            p(&["abcdefghijklmnopq", "ab"]),
            p(&["group1", "key0"]),
            p(&["group10", "key0"]),
            p(&["group2", "key9"]),
            p(&["é"]),
        ];
        for a in &cases {
            for b in &cases {
                assert_eq!(a.cmp(b), a.keys().cmp(b.keys()), "{a:?} vs {b:?}");
                assert_eq!(a == b, a.keys() == b.keys(), "{a:?} vs {b:?}");
            }
        }
    }
}
