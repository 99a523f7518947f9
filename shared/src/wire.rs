//! Compact serde forms for the structs every sync message repeats per leaf.
//!
//! Derived serde writes a struct as a map with its field names, which in
//! CBOR made up about 60% of a sync message and of its decoding time.
//! [`tuple_serde!`] writes a struct as an array of its fields in order
//! instead (`Dot` becomes `["a:dev-1", 7]`). A reader ignores elements past
//! the ones it knows, so a later version may append fields.

/// Implements `Serialize`/`Deserialize` for a struct as a tuple of its fields.
/// A field may give a `with` module or type (`serialize`/`deserialize` functions).
macro_rules! tuple_serde {
    ($ty:ident { $($field:ident : $fty:ty $(=> $with:ident)?),+ $(,)? }) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeTuple;
                let mut t = s.serialize_tuple([$(stringify!($field)),+].len())?;
                $( $crate::wire::tuple_serde!(@ser t, &self.$field, $fty $(, $with)?); )+
                t.end()
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "{} as an array", stringify!($ty))
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<$ty, A::Error> {
                        let mut i = 0usize;
                        $(
                            let $field: $fty = $crate::wire::tuple_serde!(@de seq, i, $fty $(, $with)?);
                            i += 1;
                        )+
                        let _ = i;
                        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                        Ok($ty { $($field),+ })
                    }
                }
                d.deserialize_tuple([$(stringify!($field)),+].len(), V)
            }
        }
    };
    (@ser $t:ident, $v:expr, $fty:ty) => { $t.serialize_element($v)? };
    (@ser $t:ident, $v:expr, $fty:ty, $with:ident) => {{
        struct W<'a>(&'a $fty);
        impl serde::Serialize for W<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $with::serialize(self.0, s)
            }
        }
        $t.serialize_element(&W($v))?
    }};
    (@de $seq:ident, $i:ident, $fty:ty) => {
        $seq.next_element::<$fty>()?.ok_or_else(|| serde::de::Error::invalid_length($i, &"more fields"))?
    };
    (@de $seq:ident, $i:ident, $fty:ty, $with:ident) => {{
        struct W($fty);
        impl<'de> serde::Deserialize<'de> for W {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $with::deserialize(d).map(W)
            }
        }
        $seq.next_element::<W>()?.ok_or_else(|| serde::de::Error::invalid_length($i, &"more fields"))?.0
    }};
}

pub(crate) use tuple_serde;
