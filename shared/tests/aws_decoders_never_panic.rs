//! Arbitrary bytes into the AWS request parsers: an error value or a
//! request, never a panic; and a parsed update always applies or is
//! refused with an AWS code, never a panic.

use proptest::prelude::*;
use shade_shared::aws;
use shade_shared::{Limits, ReplicaId, Shadow};

fn json_like() -> impl Strategy<Value = Vec<u8>> {
    // Mostly JSON-ish text, so the parser gets past the first byte.
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("1".to_owned()),
        Just("-1".to_owned()),
        Just("1e400".to_owned()),
        Just("\"x\"".to_owned()),
        Just("true".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
    ];
    let value = leaf.prop_recursive(10, 64, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(
                (
                    "[a-z]{0,3}|state|desired|reported|version|clientToken",
                    inner
                ),
                0..4
            )
            .prop_map(|kv| {
                let body: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    });
    prop_oneof![
        value.prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..200)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn update_parser_and_apply_never_panic(bytes in json_like(), version in prop::option::of(0u64..3)) {
        let limits = Limits { max_document_bytes: 256, ..Limits::default() };
        let broker = ReplicaId::broker("local").expect("valid");
        if let Ok(mut req) = aws::parse_update(&bytes, &limits) {
            req.version = req.version.or(version);
            let mut s = Shadow::new();
            match aws::apply_update(&mut s, &broker, &req, 1_000, &limits) {
                Ok(_) => prop_assert!(s.exists),
                Err(r) => prop_assert!([409, 413].contains(&r.code), "unexpected {r:?}"),
            }
        }
    }

    #[test]
    fn get_and_delete_parser_never_panics(bytes in json_like()) {
        if let Err(r) = aws::parse_get_or_delete(&bytes, &Limits::default()) {
            prop_assert_eq!(r.code, 400);
        }
    }
}
