//! [`LeafValue`](super::LeafValue) through serde: how stored documents
//! (cbor4ii) and human-readable forms (JSON) carry it.

use std::cell::Cell;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::*;

/// Transcodes the bytes into serde calls, with no `Value` in between. A
/// nested `null` goes out as `none`, not `unit`: cbor4ii writes a unit as
/// an empty array (as the `json_value` adapter of old leaves did).
impl Serialize for LeafValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Node(&Cell::new(Reader::new(self.as_cbor()))).serialize(s)
    }
}

/// The item at a shared reader, which serializing it moves past.
struct Node<'c, 'a>(&'c Cell<Reader<'a>>);

impl Serialize for Node<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut r = self.0.get();
        let t = token(&mut r).map_err(ser::Error::custom)?;
        self.0.set(r);
        match t {
            Token::U64(n) => s.serialize_u64(n),
            Token::I64(v) => s.serialize_i64(v),
            Token::F64(f) => s.serialize_f64(f),
            Token::Str(text) => s.serialize_str(&String::from_utf8_lossy(text)),
            Token::Bool(b) => s.serialize_bool(b),
            Token::Null => s.serialize_none(),
            Token::Array(n) => {
                let mut seq = s.serialize_seq(Some(n))?;
                for _ in 0..n {
                    seq.serialize_element(self)?;
                }
                seq.end()
            }
            Token::Map(n) => {
                let mut map = s.serialize_map(Some(n))?;
                for _ in 0..n {
                    let mut r = self.0.get();
                    let key = r.text().map_err(ser::Error::custom)?;
                    self.0.set(r);
                    map.serialize_key(key)?;
                    map.serialize_value(self)?;
                }
                map.end()
            }
        }
    }
}

/// From any self-describing format, writing canonical CBOR as the
/// deserializer calls back: no `Value` in between, and short values stay
/// on the stack. Depth is bounded by the deserializer's own limit.
impl<'de> Deserialize<'de> for LeafValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Scratch::new();
        d.deserialize_any(Build {
            out: &mut out,
            top: true,
        })?;
        Ok(LeafValue(out.finish()))
    }
}

/// Writes the visited value into `out`; `top` refuses a `null` there.
struct Build<'o> {
    out: &'o mut Scratch,
    top: bool,
}

impl Build<'_> {
    fn nested(&mut self) -> Build<'_> {
        Build {
            out: self.out,
            top: false,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Build<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Writes a map key, which must be text.
struct Key<'o>(&'o mut Scratch);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Key<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a text object key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        cbor::write_text(self.0, v);
        Ok(())
    }
}

/// Writes the head of `count` items at `start` if `hinted` was not it.
fn fix_len(out: &mut Scratch, start: usize, major: u8, hinted: Option<usize>, count: usize) {
    if hinted != Some(count) {
        let old = hinted.map_or(0, |n| cbor::head_len(n as u64));
        let (head, len) = cbor::head_bytes(major, count as u64);
        out.replace(start, old, head.get(..len).unwrap_or_default());
    }
}

impl<'de> Visitor<'de> for Build<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        cbor::write_bool(self.out, v);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        cbor::write_i64(self.out, v);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        cbor::write_u64(self.out, v);
        Ok(())
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<(), E> {
        match (i64::try_from(v), u64::try_from(v)) {
            (Ok(i), _) => self.visit_i64(i),
            (_, Ok(u)) => self.visit_u64(u),
            _ => Err(E::custom("integer out of range")),
        }
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<(), E> {
        match u64::try_from(v) {
            Ok(u) => self.visit_u64(u),
            Err(_) => Err(E::custom("integer out of range")),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if !v.is_finite() {
            return Err(E::custom(NULL_OR_NON_FINITE));
        }
        cbor::write_f64(self.out, v);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        cbor::write_text(self.out, v);
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        if self.top {
            return Err(E::custom(NULL_OR_NON_FINITE));
        }
        cbor::write_null(self.out);
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let start = self.out.len();
        let hinted = seq.size_hint();
        if let Some(n) = hinted {
            cbor::write_array_len(self.out, n);
        }
        let mut count = 0usize;
        while seq.next_element_seed(self.nested())?.is_some() {
            count += 1;
        }
        fix_len(self.out, start, cbor::ARRAY, hinted, count);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.out;
        let start = out.len();
        let hinted = map.size_hint();
        if let Some(n) = hinted {
            cbor::write_map_len(out, n);
        }
        let mut count = 0usize;
        while map.next_key_seed(Key(&mut *out))?.is_some() {
            map.next_value_seed(Build {
                out: &mut *out,
                top: false,
            })?;
            count += 1;
        }
        fix_len(out, start, cbor::MAP, hinted, count);
        Ok(())
    }
}
