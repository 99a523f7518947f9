//! A leaf's path: the object keys leading to it, outermost first.
//!
//! Sections are maps ordered by path and a merge searches one per incoming
//! leaf, so comparing two paths is the merge's innermost step, and reading
//! one is a large part of decoding a sync message. A [`Path`] is therefore
//! stored as one short byte string, an order-preserving encoding of its
//! keys, kept inline (see [`crate::bytes`]): comparing two paths is one
//! `memcmp`, and making one allocates nothing for paths up to 22 bytes.
//!
//! The encoding: each key's bytes with `0x00` escaped as `0x00 0xff`, then
//! `0x00 0x01`. Byte-wise order of encodings is the keys' lexicographic
//! order (a key that ends sorts below any longer one through the low
//! `0x01`, a `0x00` inside a key through the high `0xff`), and a path's
//! encoding starts with its ancestor's: a subtree is a range of the map.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bytes::Bytes;

/// The object keys leading to a leaf, as their order-preserving encoding.
/// Serialized as a list of keys.
#[derive(Clone, Default)]
pub struct Path {
    /// The first 16 bytes of the encoding, big-endian, zero-padded: most
    /// comparisons are decided by these two words.
    prefix: [u64; 2],
    bytes: Bytes,
}

/// Appends the encoding of one key to `out`.
pub(crate) fn push_key(out: &mut Vec<u8>, key: &str) {
    push_key_bytes(out, key.as_bytes());
}

/// [`push_key`] of a key's bytes, which must be UTF-8. One pass: keys are
/// short, and a `memchr` plus a `memcpy` call cost more than the loop.
pub(crate) fn push_key_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 1]);
}

impl PartialOrd for Path {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The order of the encodings, bytewise, decided by the prefixes when
/// they differ: zero-padded big-endian words order as the bytes do,
/// because an encoding never ends in `0x00` (so a path whose bytes run out
/// sorts below every longer one, as a slice does). This is the innermost
/// step of every merge's map search.
impl Ord for Path {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        if self.prefix[0] != other.prefix[0] {
            return self.prefix[0].cmp(&other.prefix[0]);
        }
        if self.prefix[1] != other.prefix[1] {
            return self.prefix[1].cmp(&other.prefix[1]);
        }
        self.bytes.as_slice().cmp(other.bytes.as_slice())
    }
}

impl PartialEq for Path {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix && self.bytes == other.bytes
    }
}

impl Eq for Path {}

impl std::hash::Hash for Path {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl Path {
    /// The empty path: the section itself.
    pub fn root() -> Path {
        Path::default()
    }

    /// The path of `keys`, outermost first.
    pub fn from_keys<K: AsRef<str>>(keys: impl IntoIterator<Item = K>) -> Path {
        let mut buf = Vec::with_capacity(32);
        for key in keys {
            push_key(&mut buf, key.as_ref());
        }
        Path::from_encoded(&buf)
    }

    /// The path whose encoding is the first `len` bytes of `window`
    /// (which may go on past them): with 24 bytes in the window, built
    /// from whole-word loads rather than copies of `len` bytes.
    #[inline(always)]
    pub(crate) fn from_window(window: &[u8], len: usize) -> Path {
        match window.first_chunk::<24>() {
            Some(w) if len <= crate::bytes::INLINE => {
                let (lo, hi) = crate::bytes::masked_words(w, len);
                // The prefix is the first 16 bytes big-endian: the two
                // halves of the little-endian word, byte-swapped.
                Path {
                    prefix: [(lo as u64).swap_bytes(), ((lo >> 64) as u64).swap_bytes()],
                    bytes: Bytes::from_le_words(lo, hi, len),
                }
            }
            _ => Path::from_encoded(window.get(..len).unwrap_or(window)),
        }
    }

    /// A path from bytes [`push_key`] wrote.
    pub(crate) fn from_encoded(bytes: &[u8]) -> Path {
        let mut head = [0u8; 16];
        let n = bytes.len().min(16);
        head[..n].copy_from_slice(&bytes[..n]);
        let [hi, lo] = [&head[..8], &head[8..]].map(|half| {
            let mut word = [0u8; 8];
            word.copy_from_slice(half);
            u64::from_be_bytes(word)
        });
        Path {
            prefix: [hi, lo],
            bytes: Bytes::new(bytes),
        }
    }

    /// This path with `key` appended.
    pub fn child(&self, key: &str) -> Path {
        let mut buf = Vec::with_capacity(self.bytes.len() + key.len() + 2);
        buf.extend_from_slice(&self.bytes);
        push_key(&mut buf, key);
        Path::from_encoded(&buf)
    }

    /// The keys, outermost first.
    pub fn keys(&self) -> Keys<'_> {
        Keys::of(&self.bytes)
    }

    /// The number of keys: every `0x00` ends a key or escapes one, and
    /// `0xff`, which UTF-8 never holds, marks the escapes.
    pub fn len(&self) -> usize {
        let zeros = self.bytes.iter().filter(|&&b| b == 0).count();
        zeros - self.bytes.iter().filter(|&&b| b == 0xff).count()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The encoding (see the module docs).
    pub(crate) fn encoded(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether `ancestor` is this path or a path above it.
    pub fn starts_with(&self, ancestor: &Path) -> bool {
        self.bytes.starts_with(&ancestor.bytes)
    }
}

/// The keys of a [`Path`]; a key holding `\0` is unescaped into a `String`.
#[derive(Debug, Clone)]
pub struct Keys<'a> {
    rest: &'a [u8],
    /// Some key holds a `\0` (escaped `0x00 0xff`); else each `0x00` ends one.
    escaped: bool,
}

impl<'a> Keys<'a> {
    /// The keys of a path's encoding.
    pub(crate) fn of(encoded: &'a [u8]) -> Self {
        Keys {
            rest: encoded,
            escaped: encoded.contains(&0xff),
        }
    }

    /// The next key's bytes, unescaped (valid UTF-8: they came from a `&str`).
    pub(crate) fn next_bytes(&mut self) -> Option<Cow<'a, [u8]>> {
        if self.rest.is_empty() {
            return None;
        }
        if !self.escaped {
            let end = self
                .rest
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(self.rest.len());
            let (key, rest) = self.rest.split_at(end);
            self.rest = rest.get(2..).unwrap_or(&[]);
            return Some(Cow::Borrowed(key));
        }
        // Every 0x00 starts a pair: 0x00 0x01 ends the key, 0x00 0xff is a 0x00.
        let mut end = 0;
        let mut escaped = false;
        loop {
            match self.rest[end..].iter().position(|&b| b == 0) {
                Some(at) if self.rest.get(end + at + 1) == Some(&0xff) => {
                    escaped = true;
                    end += at + 2;
                }
                Some(at) => {
                    end += at;
                    break;
                }
                None => {
                    end = self.rest.len();
                    break;
                }
            }
        }
        let raw = &self.rest[..end];
        self.rest = self.rest.get(end + 2..).unwrap_or(&[]);
        if !escaped {
            return Some(Cow::Borrowed(raw));
        }
        let mut key = Vec::with_capacity(raw.len());
        let mut iter = raw.iter();
        while let Some(&b) = iter.next() {
            key.push(b);
            if b == 0 {
                iter.next();
            }
        }
        Some(Cow::Owned(key))
    }
}

impl<'a> Iterator for Keys<'a> {
    type Item = Cow<'a, str>;

    fn next(&mut self) -> Option<Cow<'a, str>> {
        Some(match self.next_bytes()? {
            Cow::Borrowed(raw) => String::from_utf8_lossy(raw),
            Cow::Owned(key) => Cow::Owned(String::from_utf8_lossy(&key).into_owned()),
        })
    }
}

impl From<Vec<String>> for Path {
    fn from(keys: Vec<String>) -> Self {
        Path::from_keys(keys)
    }
}

impl From<&[String]> for Path {
    fn from(keys: &[String]) -> Self {
        Path::from_keys(keys)
    }
}

impl<K: AsRef<str>> FromIterator<K> for Path {
    fn from_iter<I: IntoIterator<Item = K>>(iter: I) -> Self {
        Path::from_keys(iter)
    }
}

/// `a.b.c`, for people and conflict records.
impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.keys().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(&key)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys()).finish()
    }
}

impl Serialize for Path {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for key in self.keys() {
            seq.serialize_element(&*key)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Path {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Path;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path as an array of keys")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Path, A::Error> {
                let mut buf = Vec::with_capacity(32);
                while let Some(key) = seq.next_element::<Cow<'de, str>>()? {
                    push_key(&mut buf, &key);
                }
                Ok(Path::from_encoded(&buf))
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn paths_order_as_their_keys_do_and_give_them_back() {
        let cases: Vec<Vec<String>> = [
            &[][..],
            &[""],
            &["", ""],
            &["\0"],
            &["\0\0"],
            &["\0a"],
            &["a"],
            &["a", ""],
            &["a", "b"],
            &["a\0"],
            &["a\0", "b"],
            &["a\u{1}"],
            &["ab"],
            &["abcdefgh"],
            &["abcdefgh", "a"],
            &["abcdefghijklmnopq", "a", "b"],
            &["abcdefghijklmnopq", "a\0", "b"],
            &["abcdefghijklmnopq", "ab"],
            &["group1", "key0"],
            &["group10", "key0"],
            &["group2", "key9"],
            &["é"],
        ]
        .iter()
        .map(|k| keys(k))
        .collect();
        for a in &cases {
            let pa = Path::from_keys(a);
            let back: Vec<String> = pa.keys().map(Cow::into_owned).collect();
            assert_eq!(&back, a);
            assert_eq!(pa.len(), a.len(), "{a:?}");
            for b in &cases {
                let pb = Path::from_keys(b);
                assert_eq!(pa.cmp(&pb), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(pa == pb, a == b, "{a:?} vs {b:?}");
                assert_eq!(pa.starts_with(&pb), a.starts_with(b), "{a:?} vs {b:?}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// A path built from a window of a buffer (whole-word loads, the
        /// bytes after it masked off) is the path of its encoding, prefix
        /// words included, whatever follows it in the buffer.
        #[test]
        fn paths_from_a_window_equal_paths_from_their_encoding(
            keys in proptest::collection::vec("[a-z\0é]{0,12}", 0..5),
            after in proptest::collection::vec(proptest::num::u8::ANY, 0..30),
        ) {
            let expected = Path::from_keys(&keys);
            let mut window = expected.encoded().to_vec();
            window.extend_from_slice(&after);
            let path = Path::from_window(&window, expected.encoded().len());
            proptest::prop_assert_eq!(path.prefix, expected.prefix);
            proptest::prop_assert_eq!(path.encoded(), expected.encoded());
            proptest::prop_assert_eq!(&path, &expected);
        }
    }

    #[test]
    fn paths_serialize_as_lists_of_keys() {
        let p = Path::from_keys(["a", "b\0c"]);
        assert_eq!(p.to_string(), "a.b\0c");
        let json = serde_json::to_value(&p).expect("serializes");
        assert_eq!(json, serde_json::json!(["a", "b\0c"]));
        let back: Path = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, p);
        assert_eq!(p.child("d"), Path::from_keys(["a", "b\0c", "d"]));
    }
}
