//! A leaf's value: one JSON value other than `null`, held as its canonical
//! CBOR bytes.
//!
//! Sync messages carry values as CBOR, so keeping them as CBOR makes
//! reading one a validating walk plus a copy of its bytes, inline up to 22
//! of them ([`Bytes`]): no tree of `serde_json::Value`s, no allocation for
//! the short values nearly all leaves hold. Comparing and hashing compare
//! bytes, so every way in writes one canonical form.
//!
//! Canonical form: integers as major 0 (non-negative) or 1 (negative,
//! within `i64`) with the shortest head; every float as an f64 (0xfb);
//! text, arrays and maps with definite, shortest lengths; map keys text,
//! in the order given (`from_json` gives them sorted, as serde_json's map
//! holds them; a peer's CBOR or JSON text keeps its own order, and its
//! duplicate keys). `null` only nested. It is also what cbor4ii's serde
//! writes for the same value, so stored documents keep their bytes.
//!
//! Depth counts like [`crate::limits::depth`]: a scalar is 0, each array
//! or object level adds one; `max_depth` is the most levels allowed.

use std::fmt;

use serde_json::{Map, Value};

use crate::bytes::Bytes;
pub use crate::cbor::CborError;
use crate::cbor::{self, Reader, Sink};

/// The text the old `json_value` adapter refused these with, kept.
const NULL_OR_NON_FINITE: &str = "a leaf value is null or a non-finite number";

/// A JSON value other than a top-level `null`, as canonical CBOR.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LeafValue(Bytes);

impl LeafValue {
    /// The value of `v`; `None` for `null`, which a leaf holds as a delete.
    pub fn from_json(v: &Value) -> Option<LeafValue> {
        if v.is_null() {
            return None;
        }
        let mut out = Scratch::new();
        write_json(&mut out, v);
        Some(LeafValue(out.finish()))
    }

    /// The value as JSON. The bytes were checked when the value was made,
    /// so this cannot fail; were they ever wrong, it gives `null`.
    pub fn to_json(&self) -> Value {
        read_json(&mut Reader::new(self.as_cbor())).unwrap_or(Value::Null)
    }

    /// The canonical CBOR bytes.
    pub fn as_cbor(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// Reads exactly one value from `bytes`, nested at most `max_depth`
    /// levels, with nothing after it.
    pub fn from_cbor(bytes: &[u8], max_depth: usize) -> Result<LeafValue, CborError> {
        let mut r = Reader::new(bytes);
        let value = Self::read(&mut r, max_depth)?;
        match r.remaining() {
            0 => Ok(value),
            _ => Err(CborError::new(
                "trailing bytes after the value",
                r.position(),
            )),
        }
    }

    /// A value from bytes known to hold one canonical value (a
    /// [`LeafValue::as_cbor`], or what [`LeafValue::read_into`] appended).
    pub(crate) fn from_canonical(bytes: &[u8]) -> LeafValue {
        LeafValue(Bytes::new(bytes))
    }

    /// [`LeafValue::from_canonical`] of the first `len` bytes of `window`,
    /// which may go on past them (see `Bytes::from_window`).
    #[inline(always)]
    pub(crate) fn from_canonical_window(window: &[u8], len: usize) -> LeafValue {
        LeafValue(Bytes::from_window(window, len))
    }

    /// Reads one value at `r` as [`LeafValue::read`] does, appending its
    /// canonical CBOR to `out` instead of building a value.
    #[inline(always)]
    pub(crate) fn read_into(
        r: &mut Reader<'_>,
        max_depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), CborError> {
        let rest = r.rest();
        if let Some(len) = short_scalar_len(rest) {
            r.take(len as u64)?;
            cbor::append_short(out, rest, len);
            return Ok(());
        }
        Self::read_other_into(r, max_depth, out)
    }

    #[inline(never)]
    fn read_other_into(
        r: &mut Reader<'_>,
        max_depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), CborError> {
        let start = r.position();
        if r.peek_null() {
            return Err(CborError::new("a leaf value is null", start));
        }
        if let Some(len) = scan::canonical_len(r.rest(), max_depth) {
            out.extend_from_slice(r.take(len as u64)?);
            return Ok(());
        }
        let mut scratch = Scratch::new();
        walk(r, max_depth, max_depth, &mut scratch)?;
        out.extend_from_slice(scratch.as_slice());
        Ok(())
    }

    /// Reads one value at `r`, nested at most `max_depth` levels. Input
    /// that is already canonical (all that shade writes) is validated in
    /// one pass and its bytes copied as they are; any other (an f16, a
    /// long head) is then rewritten, still on the stack while it fits.
    ///
    /// The short scalars most leaves hold are read inline, so that a
    /// decoder builds them in registers rather than through a returned
    /// copy in memory; everything else is a call.
    #[inline(always)]
    pub(crate) fn read(r: &mut Reader<'_>, max_depth: usize) -> Result<LeafValue, CborError> {
        match Self::read_short_scalar(r) {
            Some(value) => Ok(value),
            None => Self::read_other(r, max_depth),
        }
    }

    #[inline(never)]
    fn read_other(r: &mut Reader<'_>, max_depth: usize) -> Result<LeafValue, CborError> {
        let start = r.position();
        if r.peek_null() {
            return Err(CborError::new("a leaf value is null", start));
        }
        let rest = r.rest();
        if let Some(len) = scan::canonical_len(rest, max_depth) {
            r.take(len as u64)?;
            return Ok(LeafValue(Bytes::from_window(rest, len)));
        }
        // Not canonical, or not a value: the walk rewrites it or says why.
        let mut out = Scratch::new();
        walk(r, max_depth, max_depth, &mut out)?;
        debug_assert!(r.position() > start);
        Ok(LeafValue(out.finish()))
    }

    /// The scalars most leaves hold, when already canonical: a number or
    /// length in the initial byte, `true`/`false`, a finite f64. `None`
    /// (nothing consumed) sends anything else through the full walk.
    #[inline(always)]
    fn read_short_scalar(r: &mut Reader<'_>) -> Option<LeafValue> {
        let window = r.rest();
        let len = short_scalar_len(window)?;
        r.take(len as u64).ok()?;
        Some(LeafValue(Bytes::from_window(window, len)))
    }
}

/// The length of the short canonical scalar at the start of `rest` (see
/// [`LeafValue::read`]), `None` for anything else.
#[inline(always)]
fn short_scalar_len(rest: &[u8]) -> Option<usize> {
    let initial = *rest.first()?;
    let len = match (initial >> 5, initial & 0x1f) {
        (cbor::UNSIGNED | cbor::NEGATIVE, info) if info < 24 => 1,
        (cbor::UNSIGNED | cbor::NEGATIVE, 24) => 2,
        (cbor::UNSIGNED | cbor::NEGATIVE, 25) => 3,
        (cbor::UNSIGNED | cbor::NEGATIVE, 26) => 5,
        (cbor::TEXT, info) if info < 24 => 1 + usize::from(info),
        _ if initial == cbor::TRUE || initial == cbor::FALSE => 1,
        _ if initial == cbor::F64 => 9,
        _ => return None,
    };
    let bytes = rest.get(..len)?;
    // Shortest heads only: a longer one than its number needs is not
    // canonical (the full walk rewrites it).
    let ok = match bytes {
        [cbor::F64, bits @ ..] => {
            <[u8; 8]>::try_from(bits).is_ok_and(|b| f64::from_be_bytes(b).is_finite())
        }
        [head, n] if head & 0x1f == 24 => *n >= 24,
        [head, n @ ..] if head & 0x1f == 25 => n[0] != 0,
        [head, n @ ..] if head & 0x1f == 26 => n[0] != 0 || n[1] != 0,
        [head, text @ ..] if head >> 5 == cbor::TEXT => cbor::valid_utf8(text),
        _ => true,
    };
    ok.then_some(len)
}

/// One CBOR item as JSON sees it; arrays and maps by their lengths.
#[derive(Clone, Copy)]
enum Token<'a> {
    U64(u64),
    I64(i64),
    F64(f64),
    /// Checked UTF-8 (kept as bytes: most uses only copy them).
    Str(&'a [u8]),
    Bool(bool),
    Null,
    Array(usize),
    Map(usize),
}

/// Reads one token, refusing what JSON cannot hold. Lengths are checked
/// against the input, so a caller may loop over or reserve them.
fn token<'a>(r: &mut Reader<'a>) -> Result<Token<'a>, CborError> {
    let at = r.position();
    let initial = r.peek_byte()?;
    let (major, arg) = r.head()?;
    let refuse = |what: &'static str| Err(CborError::new(what, at));
    let finite = |f: f64| match f.is_finite() {
        true => Ok(Token::F64(f)),
        false => Err(CborError::new("non-finite float", at)),
    };
    match major {
        cbor::UNSIGNED => Ok(Token::U64(arg)),
        // -1 - arg, which must fit an i64 like serde_json's numbers.
        cbor::NEGATIVE => match i64::try_from(arg) {
            Ok(n) => Ok(Token::I64(-1 - n)),
            Err(_) => refuse("integer out of range"),
        },
        cbor::TEXT => match r.take(arg)? {
            s if cbor::valid_utf8(s) => Ok(Token::Str(s)),
            _ => refuse("text is not UTF-8"),
        },
        cbor::ARRAY => Ok(Token::Array(r.fits(arg, 1, at)?)),
        cbor::MAP => Ok(Token::Map(r.fits(arg, 2, at)?)),
        cbor::BYTES => refuse("byte strings are not JSON values"),
        cbor::TAG => refuse("tags are not supported"),
        _ => match initial {
            cbor::FALSE => Ok(Token::Bool(false)),
            cbor::TRUE => Ok(Token::Bool(true)),
            cbor::NULL => Ok(Token::Null),
            // The head read 2 or 4 bytes for these: the casts are exact.
            cbor::F16 => finite(f16_to_f64(arg as u16)),
            cbor::F32 => finite(f64::from(f32::from_bits(arg as u32))),
            cbor::F64 => finite(f64::from_bits(arg)),
            cbor::UNDEFINED => refuse("undefined is not a JSON value"),
            _ => refuse("unsupported simple value"),
        },
    }
}

/// IEEE half precision, widened exactly.
fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 == 0 { 1.0 } else { -1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let mant = f64::from(h & 0x3ff);
    sign * match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (mant + 1024.0) * 2f64.powi(exp - 25),
    }
}

/// Bytes the canonical form of a token takes (of an array or map: its head).
#[cfg(test)]
fn canonical_len(t: Token<'_>) -> usize {
    match t {
        Token::U64(n) => cbor::head_len(n),
        Token::I64(v) => cbor::head_len(cbor::int_head(v).1),
        Token::F64(_) => 9,
        Token::Str(s) => cbor::head_len(s.len() as u64) + s.len(),
        Token::Bool(_) | Token::Null => 1,
        Token::Array(n) | Token::Map(n) => cbor::head_len(n as u64),
    }
}

fn write_token(out: &mut impl Sink, t: Token<'_>) {
    match t {
        Token::U64(n) => cbor::write_u64(out, n),
        Token::I64(v) => cbor::write_i64(out, v),
        Token::F64(f) => cbor::write_f64(out, f),
        Token::Str(s) => {
            cbor::write_head(out, cbor::TEXT, s.len() as u64);
            out.put(s);
        }
        Token::Bool(b) => cbor::write_bool(out, b),
        Token::Null => cbor::write_null(out),
        Token::Array(n) => cbor::write_array_len(out, n),
        Token::Map(n) => cbor::write_map_len(out, n),
    }
}

/// What a walk does with each token: check it, or write it canonically.
trait Walker {
    fn token(&mut self, t: Token<'_>, input_len: usize);
}

/// Whether every token so far was already in canonical form: the oracle
/// the fast check ([`scan`]) is tested against.
#[cfg(test)]
struct Canonical(bool);

#[cfg(test)]
impl Walker for Canonical {
    #[inline]
    fn token(&mut self, t: Token<'_>, input_len: usize) {
        self.0 &= input_len == canonical_len(t);
    }
}

impl Walker for Scratch {
    #[inline]
    fn token(&mut self, t: Token<'_>, _: usize) {
        write_token(self, t);
    }
}

/// Walks one value; recursion is bounded by `depth_left`, not the input.
fn walk(
    r: &mut Reader<'_>,
    depth_left: usize,
    max_depth: usize,
    w: &mut impl Walker,
) -> Result<(), CborError> {
    let at = r.position();
    let t = token(r)?;
    w.token(t, r.position() - at);
    let (n, is_map) = match t {
        Token::Array(n) => (n, false),
        Token::Map(n) => (n, true),
        _ => return Ok(()),
    };
    let Some(left) = depth_left.checked_sub(1) else {
        return Err(CborError::too_deep(max_depth, at));
    };
    for _ in 0..n {
        if is_map {
            let key_at = r.position();
            if r.peek_byte()? >> 5 != cbor::TEXT {
                return Err(CborError::new("object keys must be text", key_at));
            }
            let key = token(r)?;
            w.token(key, r.position() - key_at);
        }
        walk(r, left, max_depth, w)?;
    }
    Ok(())
}

fn write_json(out: &mut Scratch, v: &Value) {
    match v {
        Value::Null => cbor::write_null(out),
        Value::Bool(b) => cbor::write_bool(out, *b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => cbor::write_u64(out, u),
            (None, Some(i)) => cbor::write_i64(out, i),
            // serde_json holds only finite floats; 0 stands in for the
            // impossible rest so the bytes stay valid.
            (None, None) => {
                let f = n.as_f64().filter(|f| f.is_finite()).unwrap_or_default();
                cbor::write_f64(out, f);
            }
        },
        Value::String(s) => cbor::write_text(out, s),
        Value::Array(items) => {
            cbor::write_array_len(out, items.len());
            items.iter().for_each(|item| write_json(out, item));
        }
        Value::Object(map) => {
            cbor::write_map_len(out, map.len());
            for (k, v) in map {
                cbor::write_text(out, k);
                write_json(out, v);
            }
        }
    }
}

fn read_json(r: &mut Reader<'_>) -> Result<Value, CborError> {
    Ok(match token(r)? {
        Token::U64(n) => Value::from(n),
        Token::I64(v) => Value::from(v),
        Token::F64(f) => Value::from(f),
        Token::Str(s) => Value::from(String::from_utf8_lossy(s)),
        Token::Bool(b) => Value::Bool(b),
        Token::Null => Value::Null,
        Token::Array(n) => Value::Array((0..n).map(|_| read_json(r)).collect::<Result<_, _>>()?),
        Token::Map(n) => {
            let mut map = Map::new();
            for _ in 0..n {
                let key = r.text()?.to_owned();
                map.insert(key, read_json(r)?);
            }
            Value::Object(map)
        }
    })
}

/// Canonical bytes being built: on the stack while they fit a [`Bytes`]
/// inline, so that making a short value allocates nothing.
struct Scratch {
    stack: [u8; STACK],
    len: usize,
    heap: Vec<u8>,
}

/// `Bytes`' inline capacity.
const STACK: usize = 22;

impl Scratch {
    fn new() -> Self {
        Self {
            stack: [0; STACK],
            len: 0,
            heap: Vec::new(),
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self.heap.is_empty() {
            true => self.stack.get(..self.len).unwrap_or_default(),
            false => &self.heap,
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Puts `head` where `old` bytes were at `start`: the head of an array
    /// or map whose length a deserializer did not tell in advance.
    fn replace(&mut self, start: usize, old: usize, head: &[u8]) {
        let bytes = self.as_slice();
        let mut next = Scratch::new();
        next.put(bytes.get(..start).unwrap_or_default());
        next.put(head);
        next.put(bytes.get(start.saturating_add(old)..).unwrap_or_default());
        *self = next;
    }

    fn finish(self) -> Bytes {
        Bytes::new(self.as_slice())
    }
}

impl Sink for Scratch {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        if self.heap.is_empty() {
            let end = self.len + bytes.len();
            if let Some(dst) = self.stack.get_mut(self.len..end) {
                dst.copy_from_slice(bytes);
                self.len = end;
                return;
            }
            self.heap.reserve(end.max(64));
            self.heap
                .extend_from_slice(self.stack.get(..self.len).unwrap_or_default());
        }
        self.heap.extend_from_slice(bytes);
    }
}

/// The value as compact JSON text.
impl fmt::Display for LeafValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Cannot fail on valid bytes; `null` like `to_json` if it did.
        match serde_json::to_string(self) {
            Ok(text) => f.write_str(&text),
            Err(_) => f.write_str("null"),
        }
    }
}

impl fmt::Debug for LeafValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeafValue({self})")
    }
}

mod scan;
mod serde_impls;
#[cfg(test)]
mod tests;
