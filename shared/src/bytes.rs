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
const INLINE: usize = 22;

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

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Inline { len, buf } => &buf[..usize::from(*len).min(INLINE)],
            Bytes::Shared(b) => b,
        }
    }
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
