//! Tests of [`LeafValue`](super::LeafValue): canonical form, the serde
//! paths the store uses, and refusals.

use super::*;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The adapter old leaves (`Option<Value>`) were stored through.
mod json_value {
    use serde::ser::{SerializeMap, SerializeSeq};
    use serde::{Serialize, Serializer};
    use serde_json::Value;

    pub(super) struct Json<'a>(pub(super) &'a Value);

    impl Serialize for Json<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                Value::Null => s.serialize_none(),
                Value::Array(items) => {
                    let mut seq = s.serialize_seq(Some(items.len()))?;
                    for item in items {
                        seq.serialize_element(&Json(item))?;
                    }
                    seq.end()
                }
                Value::Object(map) => {
                    let mut m = s.serialize_map(Some(map.len()))?;
                    for (k, v) in map {
                        m.serialize_entry(k, &Json(v))?;
                    }
                    m.end()
                }
                other => other.serialize(s),
            }
        }
    }

    pub(super) fn serialize<S: Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&Json(v)),
            None => s.serialize_none(),
        }
    }
}

#[derive(Serialize)]
struct OldLeaf {
    #[serde(with = "json_value")]
    value: Option<Value>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct NewLeaf {
    value: Option<LeafValue>,
}

fn cbor<T: Serialize>(v: &T) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), v).expect("cbor4ii encodes")
}

fn leaf(v: Value) -> LeafValue {
    LeafValue::from_json(&v).expect("not null")
}

fn read(bytes: &[u8], max_depth: usize) -> Result<LeafValue, String> {
    LeafValue::from_cbor(bytes, max_depth).map_err(|e| e.to_string())
}

fn arb_json() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        prop_oneof![Just(0.5), Just(-0.0), Just(1e300), Just(3.0)].prop_map(Value::from),
        "(\\PC|\0){0,12}".prop_map(Value::String),
    ];
    scalar.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zé\0]{0,4}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn json_values_round_trip_every_way(v in arb_json()) {
        let Some(lv) = LeafValue::from_json(&v) else {
            prop_assert!(v.is_null());
            return Ok(());
        };
        prop_assert_eq!(lv.to_json(), v.clone());
        prop_assert_eq!(lv.to_string(), v.to_string());
        let depth = crate::limits::depth(&v);
        let mut r = Reader::new(lv.as_cbor());
        prop_assert_eq!(LeafValue::read(&mut r, depth), Ok(lv.clone()));
        prop_assert_eq!(r.remaining(), 0);
        if depth > 0 {
            prop_assert!(read(lv.as_cbor(), depth - 1).is_err());
        }
        // Stored documents: same bytes as the old adapter, and back.
        let old = cbor(&OldLeaf { value: Some(v.clone()) });
        let new = NewLeaf { value: Some(lv.clone()) };
        prop_assert_eq!(&cbor(&new), &old);
        prop_assert_eq!(cbor4ii::serde::from_slice::<NewLeaf>(&old).ok(), Some(new));
        prop_assert_eq!(cbor(&lv), lv.as_cbor().to_vec(), "cbor4ii writes the canonical form");
        prop_assert_eq!(cbor4ii::serde::from_slice::<LeafValue>(lv.as_cbor()).ok(), Some(lv.clone()));
        // And through serde_json, as a value and as text.
        prop_assert_eq!(serde_json::to_value(&lv).ok(), Some(v.clone()));
        prop_assert_eq!(serde_json::from_value::<LeafValue>(v.clone()).ok(), Some(lv.clone()));
        // (serde_json's text parser may round a float's last digit: the
        // same way for a `Value` and a `LeafValue`.)
        let text = v.to_string();
        let parsed = serde_json::from_str::<Value>(&text).ok().and_then(|v| LeafValue::from_json(&v));
        prop_assert_eq!(serde_json::from_str::<LeafValue>(&text).ok(), parsed);
        // Every strict prefix is incomplete.
        for end in 0..lv.as_cbor().len() {
            prop_assert!(read(&lv.as_cbor()[..end], 64).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..48)) {
        if let Ok(lv) = LeafValue::read(&mut Reader::new(&bytes), 8) {
            // Whatever is accepted is canonical: it reads back as itself.
            prop_assert_eq!(read(lv.as_cbor(), 8), Ok(lv.clone()));
            prop_assert_ne!(lv.to_json(), Value::Null);
        }
    }

    #[test]
    fn mutated_encodings_never_panic(v in arb_json(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        if let Some(lv) = LeafValue::from_json(&v) {
            let mut bytes = lv.as_cbor().to_vec();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let _ = read(&bytes, 8);
            let _ = cbor4ii::serde::from_slice::<LeafValue>(&bytes);
        }
    }
}

#[test]
fn short_floats_widen_to_the_same_value() {
    let f64_bytes = leaf(json!(1.5));
    assert_eq!(f64_bytes.as_cbor(), [0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
    assert_eq!(read(&[0xf9, 0x3e, 0x00], 0), Ok(f64_bytes.clone()));
    assert_eq!(read(&[0xfa, 0x3f, 0xc0, 0, 0], 0), Ok(f64_bytes));
    assert_eq!(read(&[0x81, 0xf9, 0x3e, 0x00], 1), Ok(leaf(json!([1.5]))));
    assert_eq!(
        read(&[0xf9, 0x00, 0x01], 0),
        Ok(leaf(json!(2f64.powi(-24))))
    );
    assert_eq!(
        read(&[0xf9, 0x84, 0x00], 0),
        Ok(leaf(json!(-2f64.powi(-14))))
    );
    assert_eq!(read(&[0xf9, 0x7b, 0xff], 0), Ok(leaf(json!(65504.0))));
    // Long heads are shortened too.
    assert_eq!(read(&[0x18, 0x05], 0), Ok(leaf(json!(5))));
    assert_eq!(
        read(&[0x98, 0x01, 0x78, 0x01, b'a'], 1),
        Ok(leaf(json!(["a"])))
    );
    assert_eq!(
        read(&[0xb9, 0x00, 0x01, 0x61, b'k', 0x3a, 0, 0, 0, 0], 1),
        Ok(leaf(json!({"k": -1})))
    );
}

#[test]
fn what_json_cannot_hold_is_refused() {
    for nan in [
        &[0xf9, 0x7e, 0x00][..],
        &[0xf9, 0x7c, 0x00],
        &[0xfa, 0xff, 0x80, 0, 0],
        &[0x81, 0xfb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0],
    ] {
        assert!(read(nan, 1).expect_err("non-finite").contains("non-finite"));
    }
    assert!(read(&[0xf6], 0)
        .expect_err("top-level null")
        .contains("null"));
    assert_eq!(read(&[0x82, 0xf6, 0xf6], 1), Ok(leaf(json!([null, null]))));
    let refused = [
        (&[0xc1, 0x00][..], "tags are not supported at byte 0"),
        (&[0x41, 0x00], "byte strings are not JSON values at byte 0"),
        (&[0xf7], "undefined is not a JSON value at byte 0"),
        (&[0xf0], "unsupported simple value at byte 0"),
        (
            &[0x9f, 0xff],
            "indefinite lengths are not supported at byte 0",
        ),
        (
            &[0x81, 0x7f, 0xff],
            "indefinite lengths are not supported at byte 1",
        ),
        (
            &[0xbf, 0xff],
            "indefinite lengths are not supported at byte 0",
        ),
        (&[0xa1, 0x01, 0x02], "object keys must be text at byte 1"),
        (&[0x62, 0xc3, 0x28], "text is not UTF-8 at byte 0"),
        (
            &[0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0],
            "integer out of range at byte 0",
        ),
        (&[0x01, 0x01], "trailing bytes after the value at byte 1"),
        (&[], "unexpected end of input at byte 0"),
    ];
    for (bytes, want) in refused {
        assert_eq!(read(bytes, 4), Err(want.to_owned()), "{bytes:x?}");
    }
    assert_eq!(
        read(&[0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0),
        Ok(leaf(json!(i64::MIN)))
    );
}

#[test]
fn depth_is_bounded() {
    // [[[...[1]...]]]: `levels` arrays around a scalar.
    let nested = |levels: usize| [vec![0x81; levels], vec![0x01]].concat();
    assert_eq!(read(&nested(8), 8), Ok(leaf(json!([[[[[[[[1]]]]]]]]))));
    assert_eq!(
        read(&nested(9), 8),
        Err("nesting deeper than 8 at byte 8".to_owned())
    );
    assert_eq!(read(&[0x01], 0), Ok(leaf(json!(1))));
    assert!(read(&[0x80], 0).is_err(), "an empty array is one level");
    let deep = vec![0x81u8; 10_000];
    assert!(read(&deep, 8).is_err());
    assert!(cbor4ii::serde::from_slice::<LeafValue>(&deep).is_err());
    let text = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(serde_json::from_str::<LeafValue>(&text).is_err());
}

#[test]
fn serde_refuses_null_non_finite_and_bytes() {
    let err = serde_json::from_str::<LeafValue>("null").expect_err("null");
    assert!(
        err.to_string().contains("null or a non-finite number"),
        "{err}"
    );
    assert_eq!(
        serde_json::from_str::<LeafValue>("[null, {\"a\": null}]").ok(),
        Some(leaf(json!([null, {"a": null}])))
    );
    // Keys stay in the order given: equal JSON, different bytes.
    let unsorted = serde_json::from_str::<LeafValue>(r#"{"b":1,"a":2}"#).expect("an object");
    assert_eq!(unsorted.to_json(), json!({"a": 2, "b": 1}));
    assert_ne!(unsorted, leaf(json!({"a": 2, "b": 1})));
    for bad in [f64::NAN, f64::INFINITY] {
        let err =
            cbor4ii::serde::from_slice::<(LeafValue,)>(&cbor(&(bad,))).expect_err("non-finite");
        assert!(err.to_string().contains("non-finite"), "{err}");
    }
    assert_eq!(
        cbor4ii::serde::from_slice::<NewLeaf>(&cbor(&NewLeaf { value: None })).ok(),
        Some(NewLeaf { value: None })
    );
    assert!(cbor4ii::serde::from_slice::<LeafValue>(&[0x41, 0x00]).is_err());
    assert!(cbor4ii::serde::from_slice::<LeafValue>(&[0xa1, 0x01, 0x02]).is_err());
    let min = cbor4ii::serde::from_slice::<LeafValue>(&[
        0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]);
    assert_eq!(min.ok(), Some(leaf(json!(i64::MIN))));
    assert!(cbor4ii::serde::from_slice::<LeafValue>(&[0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0]).is_err());
}

#[test]
fn small_shows_as_json() {
    assert_eq!(std::mem::size_of::<Option<LeafValue>>(), 24);
    assert_eq!(LeafValue::from_json(&Value::Null), None);
    let v = leaf(json!(42));
    assert_eq!(format!("{v:?}"), "LeafValue(42)");
    assert_eq!(
        leaf(json!({"a": [1, "x", null]})).to_string(),
        r#"{"a":[1,"x",null]}"#
    );
    assert_eq!(v.as_cbor(), [0x18, 42]);
    assert!(matches!(
        leaf(json!("twenty-one characters")).0,
        Bytes::Inline { .. }
    ));
    assert!(matches!(
        leaf(json!("twenty-two characters!")).0,
        Bytes::Shared(_)
    ));
}

/// CBOR items as a peer might write them: any head width, f16/f32/f64
/// floats, keys of any type, the odd tag, byte string or simple value.
fn arb_cbor() -> impl Strategy<Value = Vec<u8>> {
    // A head with its argument in one of the widths that can hold it.
    fn head(major: u8, n: u64, width: u8) -> Vec<u8> {
        let m = major << 5;
        match width % 5 {
            0 if n < 24 => vec![m | n as u8],
            0 | 1 if n <= 0xff => vec![m | 24, n as u8],
            0..=2 if n <= 0xffff => [vec![m | 25], (n as u16).to_be_bytes().to_vec()].concat(),
            0..=3 if n <= 0xffff_ffff => [vec![m | 26], (n as u32).to_be_bytes().to_vec()].concat(),
            _ => [vec![m | 27], n.to_be_bytes().to_vec()].concat(),
        }
    }
    let small = prop_oneof![0..30u64, Just(255), Just(256), Just(65_536), any::<u64>()];
    let scalar = prop_oneof![
        (0..2u8, small.clone(), any::<u8>()).prop_map(|(m, n, w)| head(m, n, w)),
        ("(\\PC|\0){0,30}", any::<u8>()).prop_map(|(s, w)| [
            head(3, s.len() as u64, w),
            s.into_bytes()
        ]
        .concat()),
        prop::collection::vec(any::<u8>(), 0..3).prop_map(|b| [vec![0x60 | 2], b].concat()),
        prop_oneof![
            Just(vec![0xf4]),
            Just(vec![0xf5]),
            Just(vec![0xf6]),
            Just(vec![0xf7]),
            Just(vec![0xf9, 0x3e, 0x00]),
            Just(vec![0xfa, 0x3f, 0xc0, 0, 0]),
            Just(vec![0x41, 0x00]),
            Just(vec![0xc1, 0x00]),
            Just(vec![0x7f, 0xff]),
            any::<f64>().prop_map(|f| [vec![0xfb], f.to_be_bytes().to_vec()].concat()),
        ],
    ];
    scalar.prop_recursive(5, 64, 6, |inner| {
        (
            prop::collection::vec(inner, 0..6),
            any::<bool>(),
            any::<u8>(),
            0..3usize,
        )
            .prop_map(|(items, map, w, off)| {
                // A map takes the items pairwise; a wrong count now and
                // then makes it short or long.
                let n = if map { items.len() / 2 } else { items.len() } as u64;
                let n = if off == 2 { n + 1 } else { n };
                [head(if map { 5 } else { 4 }, n, w), items.concat()].concat()
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The fast check accepts exactly what the full walk finds well-formed
    /// and canonical, and reads as far: where it says yes, a peer's bytes
    /// are kept as they are, so it must never keep a form the walk would
    /// rewrite (two replicas would hold one value as different bytes).
    #[test]
    fn fast_check_accepts_exactly_canonical_values(
        bytes in prop_oneof![arb_cbor(), prop::collection::vec(any::<u8>(), 0..24)],
        max_depth in 0..6usize,
    ) {
        let mut r = Reader::new(&bytes);
        let mut check = Canonical(true);
        let walked = walk(&mut r, max_depth, max_depth, &mut check);
        let oracle = match walked {
            Ok(()) if check.0 => Some(r.position()),
            _ => None,
        };
        prop_assert_eq!(scan::canonical_len(&bytes, max_depth), oracle);
    }
}
