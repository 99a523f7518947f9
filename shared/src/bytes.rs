//! Short immutable byte strings, kept inline.
//!
//! Paths and leaf values are stored as bytes (a path's order-preserving
//! encoding, a value's canonical CBOR). Nearly all of them are short (a
//! path like `light.level` is 14 bytes, a number or a word under 10), so
//! they live inside the 24-byte value itself: decoding a sync message,
//! merging it and cloning leaves for a peer then allocate nothing for
//! them. Longer ones share one allocation, so a clone never copies.

use std::cmp::Ordering;
use std::ops::Deref;
use std::sync::Arc;

/// Bytes up to this long are stored inline.
pub(crate) const INLINE: usize = 22;

/// Immutable bytes: inline up to 22, else one shared allocation.
#[derive(Clone)]
pub(crate) enum Bytes {
    Inline { len: u8, buf: [u8; INLINE] },
    Shared(Arc<[u8]>),
}

impl Bytes {
    pub(crate) fn new(bytes: &[u8]) -> Self {
        if bytes.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..bytes.len()].copy_from_slice(bytes);
            Bytes::Inline {
                len: bytes.len() as u8,
                buf,
            }
        } else {
            Bytes::Shared(bytes.into())
        }
    }

    /// The first `len` bytes of `window`, which may go on past them. With
    /// 24 bytes in the window (a message being read usually has them) a
    /// short string is copied as whole words and masked, not by a
    /// `memcpy` of `len` bytes: the bytes a `memcpy` stores one piece at a
    /// time cannot be forwarded to the wider loads that move the result
    /// right after, and that wait was most of a sync message's decoding.
    #[inline(always)]
    pub(crate) fn from_window(window: &[u8], len: usize) -> Self {
        match window.first_chunk::<24>() {
            Some(w) if len <= INLINE => {
                let (lo, hi) = masked_words(w, len);
                Self::from_le_words(lo, hi, len)
            }
            _ => Self::new(window.get(..len).unwrap_or(window)),
        }
    }

    /// Inline bytes from the 24 bytes of two little-endian words (the last
    /// two dropped), `len` of them kept. `len` must be at most 22 and the
    /// bytes past it zero.
    #[inline(always)]
    pub(crate) fn from_le_words(lo: u128, hi: u64, len: usize) -> Self {
        debug_assert!(len <= INLINE);
        let mut buf = [0u8; INLINE];
        let (head, tail) = buf.split_at_mut(16);
        head.copy_from_slice(&lo.to_le_bytes());
        tail.copy_from_slice(&hi.to_le_bytes()[..INLINE - 16]);
        Bytes::Inline {
            len: len.min(INLINE) as u8,
            buf,
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Inline { len, buf } => &buf[..usize::from(*len).min(INLINE)],
            Bytes::Shared(b) => b,
        }
    }
}

/// The 24 bytes of `w` as two little-endian words, bytes past `len`
/// cleared (little-endian, so the low ones stay).
#[inline(always)]
pub(crate) fn masked_words(w: &[u8; 24], len: usize) -> (u128, u64) {
    let lo = u128::from_le_bytes(*w.first_chunk().unwrap_or(&[0; 16]));
    let hi = u64::from_le_bytes(*w.last_chunk().unwrap_or(&[0; 8]));
    let keep_lo = u128::MAX
        .checked_shr(8 * (16 - len.min(16)) as u32)
        .unwrap_or(0);
    let keep_hi = u64::MAX
        .checked_shr(8 * (24 - len.clamp(16, 24)) as u32)
        .unwrap_or(0);
    (lo & keep_lo, hi & keep_hi)
}

impl Default for Bytes {
    fn default() -> Self {
        Bytes::new(&[])
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Bytes {}

impl PartialOrd for Bytes {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bytes {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::hash::Hash for Bytes {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_from_a_window_are_the_bytes_of_the_slice() {
        let window: Vec<u8> = (1..=40).collect();
        for len in 0..=30 {
            for end in [len, 23, 24, 40] {
                if end < len {
                    continue;
                }
                let b = Bytes::from_window(&window[..end], len);
                assert_eq!(b, Bytes::new(&window[..len]), "len {len}, window {end}");
                assert_eq!(b.as_slice(), &window[..len]);
                if let Bytes::Inline { buf, .. } = b {
                    assert!(
                        buf[len.min(INLINE)..].iter().all(|&x| x == 0),
                        "tail cleared"
                    );
                }
            }
        }
    }

    #[test]
    fn short_and_long_bytes_read_back_and_order_as_slices() {
        assert_eq!(std::mem::size_of::<Bytes>(), 24);
        assert_eq!(std::mem::size_of::<Option<Bytes>>(), 24);
        let samples: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![1; INLINE],
            vec![1; INLINE + 1],
            vec![2; 100],
            b"abc".to_vec(),
            b"ab\0".to_vec(),
            b"ab\0\0c".to_vec(),
            b"ab\0\x01".to_vec(),
            vec![0xff; INLINE],
            [vec![0xff; INLINE - 1], vec![0]].concat(),
        ];
        for a in &samples {
            let ba = Bytes::new(a);
            assert_eq!(&*ba, a.as_slice());
            assert!(matches!(ba, Bytes::Inline { .. }) == (a.len() <= INLINE));
            for b in &samples {
                let bb = Bytes::new(b);
                assert_eq!(ba.cmp(&bb), a.cmp(b));
                assert_eq!(ba == bb, a == b);
            }
        }
    }
}
