//! The fast way in for a value: a check that some bytes already hold one
//! canonical value, in one loop without recursion or tokens.
//!
//! Nearly every value a peer sends was written by shade, so it is
//! canonical, and reading it is this check plus a copy. Anything the loop
//! does not accept (an error, or a value in another form) goes through
//! the full walk of [`super::walk`], which says what is wrong or rewrites
//! it; so this only has to be exact about what it accepts, which a
//! property test holds against the walk.

use crate::cbor::{self, valid_utf8};
use crate::limits::MAX_DEPTH_CEILING;

/// The length of the canonical value at the start of `buf`, nested at
/// most `max_depth` levels; `None` for anything else (not an answer about
/// validity: the walk decides). A top-level `null` is the caller's case.
pub(super) fn canonical_len(buf: &[u8], max_depth: usize) -> Option<usize> {
    if max_depth > MAX_DEPTH_CEILING {
        return None;
    }
    // Per open level: the items left in the level above, times two, plus
    // one if that level is a map; a map's items count keys and values, so
    // an item is a key when a map level has an even number left.
    let mut above = [0usize; MAX_DEPTH_CEILING];
    let mut depth = 0;
    let mut left = 1usize;
    let mut in_map = false;
    let mut pos = 0;
    loop {
        if left == 0 {
            if depth == 0 {
                return Some(pos);
            }
            depth -= 1;
            left = above[depth] >> 1;
            in_map = above[depth] & 1 == 1;
            continue;
        }
        let is_key = in_map && left % 2 == 0;
        left -= 1;
        let initial = *buf.get(pos)?;
        pos += 1;
        let major = initial >> 5;
        if is_key && major != cbor::TEXT {
            return None;
        }
        if major == 7 {
            match initial {
                cbor::FALSE | cbor::TRUE | cbor::NULL => {}
                cbor::F64 => {
                    let bits = buf.get(pos..)?.first_chunk::<8>()?;
                    if !f64::from_be_bytes(*bits).is_finite() {
                        return None;
                    }
                    pos += 8;
                }
                _ => return None,
            }
            continue;
        }
        let (arg, width) = shortest_arg(buf.get(pos..)?, initial & 0x1f)?;
        pos += width;
        match major {
            cbor::UNSIGNED => {}
            cbor::NEGATIVE if arg <= i64::MAX as u64 => {}
            cbor::TEXT => {
                let len = usize::try_from(arg).ok()?;
                let text = buf.get(pos..)?.get(..len)?;
                if !valid_utf8(text) {
                    return None;
                }
                pos += len;
            }
            cbor::ARRAY | cbor::MAP => {
                if depth >= max_depth {
                    return None;
                }
                let map = major == cbor::MAP;
                let items = usize::try_from(arg)
                    .ok()?
                    .checked_mul(1 + usize::from(map))?;
                // Each item takes a byte at least.
                if items > buf.len() - pos {
                    return None;
                }
                *above.get_mut(depth)? = left << 1 | usize::from(in_map);
                depth += 1;
                left = items;
                in_map = map;
            }
            _ => return None,
        }
    }
}

/// The argument of a head whose initial byte had `info`, read from
/// `rest` (the bytes after the initial one), and how many of them it
/// took; `None` unless it is in its shortest form.
#[inline]
fn shortest_arg(rest: &[u8], info: u8) -> Option<(u64, usize)> {
    Some(match info {
        0..=23 => (u64::from(info), 0),
        24 => match *rest.first()? {
            n @ 24.. => (u64::from(n), 1),
            _ => return None,
        },
        25 => match u16::from_be_bytes(*rest.first_chunk()?) {
            n @ 0x100.. => (u64::from(n), 2),
            _ => return None,
        },
        26 => match u32::from_be_bytes(*rest.first_chunk()?) {
            n @ 0x1_0000.. => (u64::from(n), 4),
            _ => return None,
        },
        27 => match u64::from_be_bytes(*rest.first_chunk()?) {
            n @ 0x1_0000_0000.. => (n, 8),
            _ => return None,
        },
        _ => return None,
    })
}
