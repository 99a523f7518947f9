//! Compact serde forms for the structs every sync message repeats per leaf.
//!
//! Derived serde writes a struct as a map with its field names, which in
//! CBOR made up about 60% of a sync message and of its decoding time.
//! [`tuple_serde!`] writes a struct as an array of its fields in order
//! instead (`Dot` becomes `["a:dev-1", 7]`). A reader ignores elements past
//! the ones it knows, so a later version may append fields.

/// Implements `Serialize`/`Deserialize` for a struct as a tuple of its fields.
/// A field may give a `with` module (`serialize`/`deserialize` functions).
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

/// The wire form of [`Changes`](crate::Changes), the bulk of every sync
/// message: `[vv, since, partial, replicas, paths]`.
///
/// Nearly every leaf of a message was written by one of a few replicas,
/// so their ids go once into the `replicas` table and each leaf carries
/// an index into it, which spares encoding, decoding, validating and
/// allocating the same id per leaf. A leaf is one flat array,
/// `[value, replica index, counter, ms, logical]`; a path register is
/// `[section, path, leaves]`, the section 0 (`desired`) or 1 (`reported`).
/// Readers ignore array elements past the ones they know, so later
/// versions may append fields.
pub(crate) mod changes {
    use std::fmt;
    use std::sync::Arc;

    use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
    use serde::ser::{SerializeSeq, SerializeTuple};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::document::{json_value, Leaf, Path, Section};
    use crate::merge::{Changes, PathLeaves};
    use crate::name::ReplicaId;
    use crate::version::{checked_counter, Dot, Timestamp, VersionVector};

    /// The replica table of a message, in order of first use.
    fn replica_table(changes: &Changes) -> Vec<&ReplicaId> {
        let mut table: Vec<&ReplicaId> = Vec::new();
        for pl in &changes.paths {
            for leaf in &pl.leaves {
                if !table.iter().any(|r| **r == leaf.dot.replica) {
                    table.push(&leaf.dot.replica);
                }
            }
        }
        table
    }

    impl Serialize for Changes {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let table = replica_table(self);
            let mut t = s.serialize_tuple(5)?;
            t.serialize_element(&self.vv)?;
            t.serialize_element(&self.since)?;
            t.serialize_element(&self.partial)?;
            t.serialize_element(&table)?;
            t.serialize_element(&PathsOut {
                paths: &self.paths,
                table: &table,
            })?;
            t.end()
        }
    }

    struct PathsOut<'a> {
        paths: &'a [PathLeaves],
        table: &'a [&'a ReplicaId],
    }

    impl Serialize for PathsOut<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.paths.len()))?;
            for pl in self.paths {
                seq.serialize_element(&PathOut {
                    pl,
                    table: self.table,
                })?;
            }
            seq.end()
        }
    }

    struct PathOut<'a> {
        pl: &'a PathLeaves,
        table: &'a [&'a ReplicaId],
    }

    impl Serialize for PathOut<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut t = s.serialize_tuple(3)?;
            t.serialize_element(&section_number(self.pl.section))?;
            t.serialize_element(&*self.pl.path)?;
            t.serialize_element(&LeavesOut {
                leaves: &self.pl.leaves,
                table: self.table,
            })?;
            t.end()
        }
    }

    struct LeavesOut<'a> {
        leaves: &'a [Leaf],
        table: &'a [&'a ReplicaId],
    }

    impl Serialize for LeavesOut<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.leaves.len()))?;
            for leaf in self.leaves {
                let replica = self
                    .table
                    .iter()
                    .position(|r| **r == leaf.dot.replica)
                    .unwrap_or(0);
                seq.serialize_element(&LeafOut { leaf, replica })?;
            }
            seq.end()
        }
    }

    /// A section on the wire: 0 for `desired`, 1 for `reported`.
    fn section_number(section: Section) -> u8 {
        match section {
            Section::Desired => 0,
            Section::Reported => 1,
        }
    }

    fn section_of<E: serde::de::Error>(n: u8) -> Result<Section, E> {
        match n {
            0 => Ok(Section::Desired),
            1 => Ok(Section::Reported),
            other => Err(E::custom(format_args!("section {other} is not 0 or 1"))),
        }
    }

    struct LeafOut<'a> {
        leaf: &'a Leaf,
        replica: usize,
    }

    impl Serialize for LeafOut<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            struct Value<'a>(&'a Option<serde_json::Value>);
            impl Serialize for Value<'_> {
                fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    json_value::serialize(self.0, s)
                }
            }
            let mut t = s.serialize_tuple(5)?;
            t.serialize_element(&Value(&self.leaf.value))?;
            t.serialize_element(&self.replica)?;
            t.serialize_element(&self.leaf.dot.counter)?;
            t.serialize_element(&self.leaf.ts.ms)?;
            t.serialize_element(&self.leaf.ts.logical)?;
            t.end()
        }
    }

    /// Skips the elements of an array past the ones this version knows.
    fn skip_rest<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<(), A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn next<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
        seq: &mut A,
        what: &'static str,
    ) -> Result<T, A::Error> {
        seq.next_element()?
            .ok_or_else(|| A::Error::custom(format_args!("missing {what}")))
    }

    fn next_seed<'de, A: SeqAccess<'de>, T: DeserializeSeed<'de>>(
        seq: &mut A,
        seed: T,
        what: &'static str,
    ) -> Result<T::Value, A::Error> {
        seq.next_element_seed(seed)?
            .ok_or_else(|| A::Error::custom(format_args!("missing {what}")))
    }

    impl<'de> Deserialize<'de> for Changes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Changes;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("changes as [vv, since, partial, replicas, paths]")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Changes, A::Error> {
                    let vv: VersionVector = next(&mut seq, "vv")?;
                    let since: VersionVector = next(&mut seq, "since")?;
                    let partial: bool = next(&mut seq, "partial")?;
                    let table: Vec<ReplicaId> = next(&mut seq, "replicas")?;
                    let paths = next_seed(&mut seq, Many(PathSeed(&table)), "paths")?;
                    skip_rest(&mut seq)?;
                    Ok(Changes {
                        vv,
                        since,
                        paths,
                        partial,
                    })
                }
            }
            d.deserialize_tuple(5, V)
        }
    }

    /// An array of what `T` reads.
    struct Many<T>(T);

    impl<'de, T: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for Many<T> {
        type Value = Vec<T::Value>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de, T: DeserializeSeed<'de> + Copy> Visitor<'de> for Many<T> {
        type Value = Vec<T::Value>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            // The hint comes from the sender: bounded, not trusted.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(v) = seq.next_element_seed(self.0)? {
                out.push(v);
            }
            Ok(out)
        }
    }

    #[derive(Clone, Copy)]
    struct PathSeed<'t>(&'t [ReplicaId]);

    impl<'de> DeserializeSeed<'de> for PathSeed<'_> {
        type Value = PathLeaves;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<PathLeaves, D::Error> {
            d.deserialize_tuple(3, self)
        }
    }

    impl<'de> Visitor<'de> for PathSeed<'_> {
        type Value = PathLeaves;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a path register as [section, path, leaves]")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PathLeaves, A::Error> {
            let section = section_of(next(&mut seq, "section")?)?;
            let path = next_seed(&mut seq, PathKeys, "path")?;
            let leaves = next_seed(&mut seq, Many(LeafSeed(self.0)), "leaves")?;
            skip_rest(&mut seq)?;
            Ok(PathLeaves {
                section,
                path,
                leaves,
            })
        }
    }

    /// A path's keys, read straight into one shared allocation when short.
    struct PathKeys;

    /// Paths up to this many keys skip the intermediate `Vec`.
    const SHORT_PATH: usize = 8;

    impl<'de> DeserializeSeed<'de> for PathKeys {
        type Value = Path;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Path, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for PathKeys {
        type Value = Path;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a path as an array of keys")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Path, A::Error> {
            let mut short: [String; SHORT_PATH] = Default::default();
            let mut n = 0;
            while n < SHORT_PATH {
                match seq.next_element::<String>()? {
                    Some(key) => short[n] = key,
                    None => {
                        return Ok(Path::from(
                            short.into_iter().take(n).collect::<Arc<[String]>>(),
                        ))
                    }
                }
                n += 1;
            }
            let mut long: Vec<String> = short.into();
            while let Some(key) = seq.next_element::<String>()? {
                long.push(key);
            }
            Ok(Path::from(long))
        }
    }

    #[derive(Clone, Copy)]
    struct LeafSeed<'t>(&'t [ReplicaId]);

    impl<'de> DeserializeSeed<'de> for LeafSeed<'_> {
        type Value = Leaf;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Leaf, D::Error> {
            d.deserialize_tuple(5, self)
        }
    }

    impl<'de> Visitor<'de> for LeafSeed<'_> {
        type Value = Leaf;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a leaf as [value, replica index, counter, ms, logical]")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Leaf, A::Error> {
            struct Value(Option<serde_json::Value>);
            impl<'de> Deserialize<'de> for Value {
                fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    json_value::deserialize(d).map(Value)
                }
            }
            let value = next::<_, Value>(&mut seq, "leaf value")?.0;
            let index: usize = next(&mut seq, "replica index")?;
            let replica = self.0.get(index).cloned().ok_or_else(|| {
                A::Error::custom(format_args!("replica index {index} is not in the table"))
            })?;
            let counter = checked_counter(next(&mut seq, "counter")?)?;
            let ms: u64 = next(&mut seq, "timestamp")?;
            let logical: u32 = next(&mut seq, "logical time")?;
            skip_rest(&mut seq)?;
            Ok(Leaf {
                value,
                dot: Dot::new(replica, counter),
                ts: Timestamp { ms, logical },
            })
        }
    }
}
