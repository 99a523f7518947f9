//! Property tests of the query language: the printed form reads back, the
//! boolean laws hold over random documents, no input makes the parser
//! panic, and a tally kept change by change equals one built afresh.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::field::FieldPath;
use super::parse::{Expr, Op, Query};
use super::sum::ExactSum;
use super::tally::Tally;

/// The paths the random queries and documents share, so comparisons hit.
const PATHS: &[&[&str]] = &[
    &["connected"],
    &["version"],
    &["thing"],
    &["reported", "fw"],
    &["reported", "temp"],
    &["desired", "mode"],
    &["desired", "my key"],
    &["not"],
    &["reported", "x", "y"],
];

fn field(keys: &[&str]) -> FieldPath {
    FieldPath {
        keys: keys.iter().map(|k| k.to_string()).collect(),
    }
}

fn known_path() -> impl Strategy<Value = FieldPath> + Clone {
    proptest::sample::select(PATHS).prop_map(field)
}

/// Any path at all, for the printed form: keys of any characters.
fn any_path() -> impl Strategy<Value = FieldPath> + Clone {
    proptest::collection::vec("\\PC{0,6}", 1..4).prop_map(|keys| FieldPath { keys })
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..4).prop_map(Value::from),
        proptest::sample::select(vec![0.5, 2.0, -1.5, 1e20, -0.0, 3.0]).prop_map(Value::from),
        (-1e6..1e6f64).prop_map(Value::from),
        proptest::num::f64::NORMAL.prop_map(Value::from),
    ]
}

/// Values that collide often: small numbers, a few strings, the keywords.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        proptest::sample::select(vec!["eco", "", "a\"b", "it's", "back\\slash", "日本", "2"])
            .prop_map(Value::from),
    ]
}

/// Any scalar a query can hold.
fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO)
            .prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    proptest::sample::select(vec![Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge])
}

/// Expressions over `path` and `value`, a few levels deep.
fn expr<P, V>(path: P, value: V) -> impl Strategy<Value = Expr>
where
    P: Strategy<Value = FieldPath> + Clone + 'static,
    V: Strategy<Value = Value> + 'static,
{
    let leaf = prop_oneof![
        path.clone().prop_map(Expr::Exists),
        (path, op(), value).prop_map(|(path, op, value)| Expr::Compare { path, op, value }),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            proptest::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

fn query() -> impl Strategy<Value = Query> {
    expr(known_path(), value()).prop_map(|expr| Query { expr })
}

/// A document holding some of [`PATHS`], sometimes with a scalar where
/// an object would lead on.
fn document() -> impl Strategy<Value = Value> {
    let values = proptest::collection::vec(proptest::option::of(value()), PATHS.len());
    (values, proptest::option::of(value())).prop_map(|(values, reported)| {
        let mut doc = Map::new();
        if let Some(scalar) = reported {
            doc.insert("reported".to_owned(), scalar);
        }
        for (keys, value) in PATHS.iter().zip(values) {
            if let Some(value) = value {
                insert(&mut doc, keys, value);
            }
        }
        Value::Object(doc)
    })
}

/// Puts `value` at `keys`, making objects on the way; gives up at a
/// non-object.
fn insert(map: &mut Map<String, Value>, keys: &[&str], value: Value) {
    match keys {
        [] => {}
        [last] => {
            map.insert(last.to_string(), value);
        }
        [first, rest @ ..] => {
            let next = map
                .entry(first.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = next {
                insert(inner, rest, value);
            }
        }
    }
}

fn not(e: Expr) -> Expr {
    Expr::Not(Box::new(e))
}

fn holds(expr: Expr, doc: &Value) -> bool {
    Query { expr }.matches(doc)
}

/// Query-shaped text: enough real tokens that some of it parses.
fn query_text() -> impl Strategy<Value = String> {
    let tokens = vec![
        "a",
        "reported.fw",
        "\"k y\"",
        "(",
        ")",
        "not",
        "NOT",
        "and",
        "or",
        "exists",
        "=",
        "==",
        "!=",
        "<",
        ">=",
        "=>",
        "\"x",
        "'y'",
        "\\",
        "1",
        "-2.5e3",
        "01",
        "true",
        "null",
        " ",
        ".",
    ];
    proptest::collection::vec(proptest::sample::select(tokens), 0..24)
        .prop_map(|parts| parts.join(""))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn a_printed_query_parses_back_to_itself(expr in expr(any_path(), any_value())) {
        let q = Query { expr };
        let text = q.to_string();
        prop_assert_eq!(Query::parse(&text), Ok(q), "{}", text);
    }

    #[test]
    fn a_printed_path_parses_back_to_itself(path in any_path()) {
        prop_assert_eq!(FieldPath::parse(&path.to_string()), Ok(path));
    }

    #[test]
    fn double_negation_changes_nothing(q in query(), doc in document()) {
        prop_assert_eq!(holds(not(not(q.expr.clone())), &doc), q.matches(&doc));
    }

    #[test]
    fn de_morgan_holds(a in query(), b in query(), doc in document()) {
        let (a, b) = (a.expr, b.expr);
        prop_assert_eq!(
            holds(not(Expr::And(vec![a.clone(), b.clone()])), &doc),
            holds(Expr::Or(vec![not(a.clone()), not(b.clone())]), &doc)
        );
        prop_assert_eq!(
            holds(not(Expr::Or(vec![a.clone(), b.clone()])), &doc),
            holds(Expr::And(vec![not(a), not(b)]), &doc)
        );
    }

    #[test]
    fn and_and_or_commute(a in query(), b in query(), doc in document()) {
        let (a, b) = (a.expr, b.expr);
        prop_assert_eq!(
            holds(Expr::And(vec![a.clone(), b.clone()]), &doc),
            holds(Expr::And(vec![b.clone(), a.clone()]), &doc)
        );
        prop_assert_eq!(
            holds(Expr::Or(vec![a.clone(), b.clone()]), &doc),
            holds(Expr::Or(vec![b, a]), &doc)
        );
    }

    #[test]
    fn a_comparison_and_its_negation_split_the_documents_that_have_the_path(
        path in known_path(), value in value(), doc in document(),
    ) {
        let eq = Expr::Compare { path: path.clone(), op: Op::Eq, value: value.clone() };
        let ne = Expr::Compare { path: path.clone(), op: Op::Ne, value };
        let present = path.get(&doc).is_some();
        prop_assert_eq!(holds(eq.clone(), &doc) || holds(ne.clone(), &doc), present);
        prop_assert!(!(holds(eq, &doc) && holds(ne, &doc)));
    }

    #[test]
    fn the_parser_never_panics_and_what_it_reads_prints_back(
        text in prop_oneof![query_text(), "\\PC{0,64}"],
    ) {
        if let Ok(q) = Query::parse(&text) {
            prop_assert_eq!(Query::parse(&q.to_string()), Ok(q));
        }
        let _ = FieldPath::parse(&text);
    }

    #[test]
    fn a_tally_kept_through_changes_equals_one_built_afresh(
        filter in proptest::option::of(query()),
        by in proptest::option::of(known_path()),
        stats in proptest::option::of(known_path()),
        docs in proptest::collection::vec(document(), 1..8),
        steps in proptest::collection::vec((any::<bool>(), any::<proptest::sample::Index>()), 0..40),
    ) {
        let mut live = Tally::new(filter.clone(), by.clone(), stats.clone());
        let mut held: Vec<Value> = Vec::new();
        for (add, index) in steps {
            if add || held.is_empty() {
                let doc = index.get(&docs).clone();
                live.add(&doc);
                held.push(doc);
            } else {
                let doc = held.swap_remove(index.index(held.len()));
                live.remove(&doc);
            }
        }
        let mut fresh = Tally::new(filter.clone(), by, stats.clone());
        for doc in &held {
            fresh.add(doc);
        }
        prop_assert_eq!(live.result(), fresh.result());
        prop_assert_eq!(&live, &fresh);

        let matching: Vec<&Value> = held
            .iter()
            .filter(|d| filter.as_ref().is_none_or(|q| q.matches(d)))
            .collect();
        let result = live.result();
        prop_assert_eq!(&result["count"], &json!(matching.len()));
        if let Some(groups) = result.get("by").and_then(Value::as_object) {
            let total: u64 = groups.values().filter_map(Value::as_u64).sum();
            prop_assert_eq!(total, matching.len() as u64);
        }
        if let Some(stats) = &stats {
            let numbers: Vec<f64> = matching.iter().filter_map(|d| stats.get(d)?.as_f64()).collect();
            let min = numbers.iter().copied().reduce(f64::min);
            prop_assert_eq!(&result["stats"]["count"], &json!(numbers.len()));
            prop_assert_eq!(result["stats"]["min"].as_f64(), min);
        }
    }

    #[test]
    fn an_exact_sum_of_integers_is_their_sum(values in proptest::collection::vec(any::<i64>(), 0..50)) {
        let mut sum = ExactSum::default();
        for &v in &values {
            sum.add(v as f64);
        }
        let exact: i128 = values.iter().map(|&v| (v as f64) as i128).sum();
        prop_assert_eq!(sum.value(), exact as f64);
    }

    #[test]
    fn an_exact_sum_forgets_what_is_removed(
        kept in proptest::collection::vec(proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL, 0..10),
        passing in proptest::collection::vec(proptest::num::f64::NORMAL, 0..10),
    ) {
        let mut through = ExactSum::default();
        for &x in passing.iter().chain(&kept) {
            through.add(x);
        }
        for &x in &passing {
            through.remove(x);
        }
        let mut fresh = ExactSum::default();
        for &x in &kept {
            fresh.add(x);
        }
        prop_assert_eq!(&through, &fresh);
        if let [x] = kept[..] {
            prop_assert_eq!(through.value(), x);
        }
    }
}
