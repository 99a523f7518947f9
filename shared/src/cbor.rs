//! Minimal sans-IO CBOR (RFC 8949): a bounds-checked reader over a slice
//! and shortest-form writers into a `Vec`.
//!
//! Only what shade's wire formats use: definite lengths, no tags on the
//! hot paths. Every length read from the input is checked against the
//! bytes that remain before anything is sliced or reserved, so a hostile
//! message costs at most one pass over its own bytes.

use std::borrow::Cow;

/// Major types.
pub(crate) const UNSIGNED: u8 = 0;
pub(crate) const NEGATIVE: u8 = 1;
pub(crate) const BYTES: u8 = 2;
pub(crate) const TEXT: u8 = 3;
pub(crate) const ARRAY: u8 = 4;
pub(crate) const MAP: u8 = 5;
pub(crate) const TAG: u8 = 6;
/// Major 7 (floats and simple values) is told apart by its initial byte.
pub(crate) const FALSE: u8 = 0xf4;
pub(crate) const TRUE: u8 = 0xf5;
pub(crate) const NULL: u8 = 0xf6;
pub(crate) const UNDEFINED: u8 = 0xf7;
pub(crate) const F16: u8 = 0xf9;
pub(crate) const F32: u8 = 0xfa;
pub(crate) const F64: u8 = 0xfb;

/// Why some CBOR could not be read: what was wrong, and at which byte.
///
/// Boxed: every read returns a `Result`, and a one-word error keeps those
/// in registers; errors are rare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} at byte {}", .0.what, .0.at)]
pub struct CborError(Box<ErrorAt>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct ErrorAt {
    what: Cow<'static, str>,
    at: usize,
}

impl CborError {
    #[cold]
    pub(crate) fn new(what: impl Into<Cow<'static, str>>, at: usize) -> Self {
        Self(Box::new(ErrorAt {
            what: what.into(),
            at,
        }))
    }

    /// Nesting past `max_depth` levels, at byte `at`.
    #[cold]
    pub(crate) fn too_deep(max_depth: usize, at: usize) -> Self {
        Self::new(format!("nesting deeper than {max_depth}"), at)
    }

    /// What was wrong, without the offset.
    pub fn message(&self) -> &str {
        &self.0.what
    }

    /// Offset of the offending item (or of the missing bytes) in the input.
    pub fn offset(&self) -> usize {
        self.0.at
    }
}

/// A cursor over one CBOR buffer. `Copy`, so a caller can look ahead by
/// reading from a copy, or share one through a `Cell`. A failed `head`,
/// `take` or typed read consumes nothing; after a failed `skip` the
/// position is unspecified (the message is broken anyway).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn eof(&self) -> CborError {
        CborError::new("unexpected end of input", self.pos)
    }

    /// The next byte, not consumed: for major 7 it tells the float width.
    #[inline]
    pub(crate) fn peek_byte(&self) -> Result<u8, CborError> {
        self.buf.get(self.pos).copied().ok_or_else(|| self.eof())
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CborError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let bytes = *rest.first_chunk::<N>().ok_or_else(|| self.eof())?;
        self.pos += N;
        Ok(bytes)
    }

    /// The next `len` bytes, after checking that there are that many.
    #[inline(always)]
    pub(crate) fn take(&mut self, len: u64) -> Result<&'a [u8], CborError> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= self.remaining())
            .ok_or_else(|| self.eof())?;
        let bytes = self
            .buf
            .get(self.pos..self.pos + len)
            .ok_or_else(|| self.eof())?;
        self.pos += len;
        Ok(bytes)
    }

    /// The major type and argument of the next item. For major 7 the
    /// argument is the simple value or the raw bits of the float.
    #[inline]
    pub(crate) fn head(&mut self) -> Result<(u8, u64), CborError> {
        let mut r = *self;
        let [initial] = r.array::<1>()?;
        let arg = match initial & 0x1f {
            info @ 0..=23 => u64::from(info),
            24 => u64::from(u8::from_be_bytes(r.array()?)),
            25 => u64::from(u16::from_be_bytes(r.array()?)),
            26 => u64::from(u32::from_be_bytes(r.array()?)),
            27 => u64::from_be_bytes(r.array()?),
            28..=30 => return Err(CborError::new("reserved additional information", self.pos)),
            _ => {
                return Err(CborError::new(
                    "indefinite lengths are not supported",
                    self.pos,
                ))
            }
        };
        *self = r;
        Ok((initial >> 5, arg))
    }

    /// A head of the `want` major type, else `expected`. Heads whose
    /// argument fits the initial byte (short lengths, small numbers: most
    /// of a sync message) take the first branch.
    #[inline(always)]
    fn head_of(&mut self, want: u8, expected: &'static str) -> Result<u64, CborError> {
        if let Some(&initial) = self.buf.get(self.pos) {
            if initial >> 5 == want && initial & 0x1f < 24 {
                self.pos += 1;
                return Ok(u64::from(initial & 0x1f));
            }
        }
        self.head_of_long(want, expected)
    }

    #[inline(never)]
    fn head_of_long(&mut self, want: u8, expected: &'static str) -> Result<u64, CborError> {
        let at = self.pos;
        match self.head()? {
            (major, arg) if major == want => Ok(arg),
            _ => {
                self.pos = at;
                Err(CborError::new(expected, at))
            }
        }
    }

    #[inline(always)]
    pub(crate) fn u64(&mut self) -> Result<u64, CborError> {
        self.head_of(UNSIGNED, "expected an unsigned integer")
    }

    /// An array's length: at most the bytes left, as each item takes one.
    #[inline(always)]
    pub(crate) fn array_len(&mut self) -> Result<usize, CborError> {
        let at = self.pos;
        let n = self.head_of(ARRAY, "expected an array")?;
        self.fits(n, 1, at)
    }

    /// A map's entry count: at most half the bytes left.
    #[inline]
    pub(crate) fn map_len(&mut self) -> Result<usize, CborError> {
        let at = self.pos;
        let n = self.head_of(MAP, "expected a map")?;
        self.fits(n, 2, at)
    }

    /// `n` items of at least `min` bytes each fit in what is left: checked
    /// so that a caller may reserve `n` slots without trusting the input.
    #[inline]
    pub(crate) fn fits(&self, n: u64, min: u64, at: usize) -> Result<usize, CborError> {
        n.checked_mul(min)
            .filter(|&bytes| bytes <= self.remaining() as u64)
            .and_then(|_| usize::try_from(n).ok())
            .ok_or_else(|| CborError::new("length exceeds the input", at))
    }

    pub(crate) fn text(&mut self) -> Result<&'a str, CborError> {
        let mut r = *self;
        let len = r.head_of(TEXT, "expected a text string")?;
        let text = std::str::from_utf8(r.take(len)?)
            .map_err(|_| CborError::new("text is not UTF-8", self.pos))?;
        *self = r;
        Ok(text)
    }

    /// A text item's bytes, checked to be UTF-8 (ASCII, the usual case,
    /// by a cheaper test), for callers that only copy them.
    #[inline]
    pub(crate) fn text_bytes(&mut self) -> Result<&'a [u8], CborError> {
        let mut r = *self;
        let len = r.head_of(TEXT, "expected a text string")?;
        let bytes = r.take(len)?;
        if !valid_utf8(bytes) {
            return Err(CborError::new("text is not UTF-8", self.pos));
        }
        *self = r;
        Ok(bytes)
    }

    pub(crate) fn bool(&mut self) -> Result<bool, CborError> {
        match self.peek_byte()? {
            FALSE => {
                self.pos += 1;
                Ok(false)
            }
            TRUE => {
                self.pos += 1;
                Ok(true)
            }
            _ => Err(CborError::new("expected a boolean", self.pos)),
        }
    }

    /// Whether the next item is `null` (not consumed); false at the end.
    pub(crate) fn peek_null(&self) -> bool {
        self.buf.get(self.pos) == Some(&NULL)
    }

    pub(crate) fn null(&mut self) -> Result<(), CborError> {
        if self.peek_null() {
            self.pos += 1;
            Ok(())
        } else {
            Err(CborError::new("expected null", self.pos))
        }
    }

    /// Skips one well-formed item of any type. Arrays, maps and tags each
    /// count as a level, at most `max_depth` of them: the recursion is
    /// bounded by it, not by the input. Text is not checked for UTF-8.
    pub(crate) fn skip(&mut self, max_depth: usize) -> Result<(), CborError> {
        let at = self.pos;
        let (major, arg) = self.head()?;
        let items = match major {
            BYTES | TEXT => {
                self.take(arg)?;
                return Ok(());
            }
            ARRAY => self.fits(arg, 1, at)?,
            MAP => self.fits(arg, 2, at)?.saturating_mul(2),
            TAG => 1,
            _ => return Ok(()),
        };
        let Some(left) = max_depth.checked_sub(1) else {
            return Err(CborError::too_deep(max_depth, at));
        };
        for _ in 0..items {
            self.skip(left)?;
        }
        Ok(())
    }
}

/// The shortest head for `major` and `n`, and how many of its bytes count.
#[inline]
pub(crate) fn head_bytes(major: u8, n: u64) -> ([u8; 9], usize) {
    let m = major << 5;
    let mut b = [0u8; 9];
    if n < 24 {
        b[0] = m | n as u8;
        (b, 1)
    } else if let Ok(x) = u8::try_from(n) {
        b[0] = m | 24;
        b[1] = x;
        (b, 2)
    } else if let Ok(x) = u16::try_from(n) {
        b[0] = m | 25;
        b[1..3].copy_from_slice(&x.to_be_bytes());
        (b, 3)
    } else if let Ok(x) = u32::try_from(n) {
        b[0] = m | 26;
        b[1..5].copy_from_slice(&x.to_be_bytes());
        (b, 5)
    } else {
        b[0] = m | 27;
        b[1..9].copy_from_slice(&n.to_be_bytes());
        (b, 9)
    }
}

/// Bytes of the shortest head for `n`.
#[inline]
pub(crate) fn head_len(n: u64) -> usize {
    match n {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// An `i64` as its major type (0 or 1) and argument.
#[inline]
pub(crate) fn int_head(v: i64) -> (u8, u64) {
    match u64::try_from(v) {
        Ok(n) => (UNSIGNED, n),
        // -1 - v, which for a negative v is !v: in 0..=i64::MAX.
        Err(_) => (NEGATIVE, (!v).unsigned_abs()),
    }
}

/// A float as CBOR always takes it here: 0xfb and the 8 bytes. Never
/// shortened, so that a value has one encoding whatever wrote it
/// (cbor4ii's serde writes f64 the same way).
#[inline]
pub(crate) fn f64_bytes(v: f64) -> [u8; 9] {
    let mut b = [F64, 0, 0, 0, 0, 0, 0, 0, 0];
    b[1..].copy_from_slice(&v.to_bits().to_be_bytes());
    b
}

/// Where the writers put bytes: a `Vec`, or a caller's own buffer (leaf
/// values build theirs on the stack while they fit inline).
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);

    /// One byte: most heads (short lengths, small numbers) are one.
    #[inline]
    fn put_byte(&mut self, byte: u8) {
        self.put(&[byte]);
    }

    /// The first `len` bytes of a head from [`head_bytes`].
    #[inline]
    fn put_head(&mut self, head: &[u8; 9], len: usize) {
        self.put(head.get(..len).unwrap_or_default());
    }
}

/// Appends the first `len` bytes of `src` (which has them) to `out`: as
/// one fixed 16-byte copy cut to length when `src` has 16 bytes and `len`
/// is at most 16, since a `memcpy` call for a few bytes costs more than
/// the copy; else as they are.
#[inline(always)]
pub(crate) fn append_short(out: &mut Vec<u8>, src: &[u8], len: usize) {
    match src.first_chunk::<16>() {
        Some(window) if len <= 16 => {
            let start = out.len();
            out.extend_from_slice(window);
            out.truncate(start + len);
        }
        _ => out.extend_from_slice(src.get(..len).unwrap_or(src)),
    }
}

/// UTF-8, with short ASCII (keys, words) spared the full validation.
#[inline]
pub(crate) fn valid_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    #[inline]
    fn put_byte(&mut self, byte: u8) {
        self.push(byte);
    }

    /// All nine bytes, cut to length: a fixed copy, not a `memcpy` call.
    #[inline]
    fn put_head(&mut self, head: &[u8; 9], len: usize) {
        let start = self.len();
        self.extend_from_slice(head);
        self.truncate(start + len);
    }
}

#[inline]
pub(crate) fn write_head(out: &mut impl Sink, major: u8, n: u64) {
    if n < 24 {
        out.put_byte(major << 5 | n as u8);
        return;
    }
    let (b, len) = head_bytes(major, n);
    out.put_head(&b, len);
}

#[inline]
pub(crate) fn write_u64(out: &mut impl Sink, n: u64) {
    write_head(out, UNSIGNED, n);
}

#[inline]
pub(crate) fn write_i64(out: &mut impl Sink, v: i64) {
    let (major, n) = int_head(v);
    write_head(out, major, n);
}

#[inline]
pub(crate) fn write_f64(out: &mut impl Sink, v: f64) {
    out.put(&f64_bytes(v));
}

#[inline]
pub(crate) fn write_text(out: &mut impl Sink, s: &str) {
    write_head(out, TEXT, s.len() as u64);
    out.put(s.as_bytes());
}

#[inline]
pub(crate) fn write_bool(out: &mut impl Sink, b: bool) {
    out.put_byte(if b { TRUE } else { FALSE });
}

#[inline]
pub(crate) fn write_null(out: &mut impl Sink) {
    out.put_byte(NULL);
}

#[inline]
pub(crate) fn write_array_len(out: &mut impl Sink, n: usize) {
    write_head(out, ARRAY, n as u64);
}

#[inline]
pub(crate) fn write_map_len(out: &mut impl Sink, n: usize) {
    write_head(out, MAP, n as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_shortest_and_read_back() {
        let edges = [
            0,
            23,
            24,
            255,
            256,
            65_535,
            65_536,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ];
        for n in edges {
            for major in [UNSIGNED, NEGATIVE, TEXT, ARRAY, MAP] {
                let mut out = vec![];
                write_head(&mut out, major, n);
                assert_eq!(out.len(), head_len(n), "{n}");
                let mut r = Reader::new(&out);
                assert_eq!(r.head(), Ok((major, n)));
                assert_eq!(r.remaining(), 0);
            }
        }
        let mut out = vec![];
        write_i64(&mut out, i64::MIN);
        write_i64(&mut out, -1);
        write_i64(&mut out, 7);
        write_f64(&mut out, 1.5);
        let mut r = Reader::new(&out);
        assert_eq!(r.head(), Ok((NEGATIVE, i64::MAX as u64)));
        assert_eq!(r.head(), Ok((NEGATIVE, 0)));
        assert_eq!(r.u64(), Ok(7));
        assert_eq!(r.peek_byte(), Ok(F64));
        assert_eq!(r.head(), Ok((7, 1.5f64.to_bits())));
        assert!(r.head().is_err());
    }

    #[test]
    fn conveniences_check_types_and_lengths() {
        let mut out = vec![];
        write_array_len(&mut out, 2);
        write_text(&mut out, "hé");
        write_map_len(&mut out, 1);
        write_bool(&mut out, true);
        write_null(&mut out);
        let mut r = Reader::new(&out);
        assert!(r.map_len().is_err(), "an array is not a map");
        assert_eq!(r.position(), 0, "a failed read consumes nothing");
        assert_eq!(r.array_len(), Ok(2));
        assert_eq!(r.text(), Ok("hé"));
        let mut r = Reader::new(&out[5..7]);
        assert_eq!(
            r.map_len().map_err(|e| e.message().to_owned()),
            Err("length exceeds the input".into())
        );
        let mut r = Reader::new(&out[6..]);
        assert_eq!(r.bool(), Ok(true));
        assert!(r.peek_null());
        assert_eq!(r.null(), Ok(()));
        assert!(!r.peek_null());
        assert!(r.null().is_err());
        for bytes in [&[0x19, 0x01][..], &[0x62, 0xff, 0xfe], &[0x63, b'a']] {
            let mut r = Reader::new(bytes);
            assert!(r.text().is_err());
            assert_eq!(r.position(), 0, "{bytes:x?}");
        }
    }

    #[test]
    fn malformed_input_is_an_error_with_its_offset() {
        let err = |bytes: &[u8]| {
            let mut r = Reader::new(bytes);
            r.skip(4).expect_err("malformed").to_string()
        };
        assert_eq!(err(&[]), "unexpected end of input at byte 0");
        assert_eq!(err(&[0x19, 0x01]), "unexpected end of input at byte 1");
        assert_eq!(err(&[0x1c]), "reserved additional information at byte 0");
        assert_eq!(
            err(&[0x81, 0x9f]),
            "indefinite lengths are not supported at byte 1"
        );
        assert_eq!(
            err(&[0x7f]),
            "indefinite lengths are not supported at byte 0"
        );
        // A length far past the input is refused before any slicing.
        assert_eq!(
            err(&[0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            "unexpected end of input at byte 9"
        );
        assert_eq!(
            err(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            "length exceeds the input at byte 0"
        );
        assert_eq!(
            err(&[0x81, 0x81, 0x81, 0x81, 0x81, 0x00]),
            "nesting deeper than 0 at byte 4"
        );
        assert_eq!(
            err(&[0xc6, 0xc6, 0xc6, 0xc6, 0xc6, 0x00]),
            "nesting deeper than 0 at byte 4"
        );
        let mut r = Reader::new(&[0x62, 0xff, 0xfe]);
        assert_eq!(
            r.text().map_err(|e| e.to_string()),
            Err("text is not UTF-8 at byte 0".into())
        );
        let deep = vec![0x81u8; 10_000];
        assert!(Reader::new(&deep).skip(64).is_err());
    }

    #[test]
    fn skip_passes_over_every_kind_of_item() {
        // [1, -1, h'00', "a", {"k": [true, null]}, 1(0), 1.5 as f16, f32, f64]
        let bytes = [
            0x89, 0x01, 0x20, 0x41, 0x00, 0x61, b'a', 0xa1, 0x61, b'k', 0x82, 0xf5, 0xf6, 0xc1,
            0x00, 0xf9, 0x3e, 0x00, 0xfa, 0x3f, 0xc0, 0, 0, 0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0,
            0x05,
        ];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.skip(3), Ok(()));
        assert_eq!(r.position(), bytes.len() - 1);
        assert_eq!(r.u64(), Ok(5));
        assert!(Reader::new(&bytes).skip(2).is_err(), "3 levels deep");
    }
}
