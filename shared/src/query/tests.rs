//! Unit tests of the query language: each piece of syntax, the meaning of
//! comparisons, every refusal with its position, and tallies.

use serde_json::{json, Value};

use super::parse::{Expr, Op};
use super::*;

fn parse(text: &str) -> Query {
    Query::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

/// The error `text` gives, as (position, message).
fn error(text: &str) -> (usize, String) {
    match Query::parse(text) {
        Ok(q) => panic!("{text:?} should not parse, got {q}"),
        Err(e) => (e.position, e.message),
    }
}

fn path(text: &str) -> FieldPath {
    FieldPath::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

fn doc() -> Value {
    json!({
        "thing": "lamp-1",
        "shadow": null,
        "version": 3,
        "connected": true,
        "lastSeen": 1_796_319_975_000_u64,
        "desired": {"mode": "eco", "light": {"level": 2}, "my key": "x", "nothing": null},
        "reported": {"fw": 1.9, "temp": 21.5, "tags": ["a"], "name": "Zed"},
        "delta": {},
    })
}

fn matches(text: &str) -> bool {
    parse(text).matches(&doc())
}

#[test]
fn every_operator_compares_as_its_name_says() {
    for (text, expected) in [
        ("version = 3", true),
        ("version == 3", true),
        ("version != 3", false),
        ("version < 4", true),
        ("version < 3", false),
        ("version <= 3", true),
        ("version > 2", true),
        ("version > 3", false),
        ("version >= 3", true),
        ("version >= 3.5", false),
    ] {
        assert_eq!(matches(text), expected, "{text}");
    }
}

#[test]
fn values_are_json_numbers_quoted_strings_and_keywords() {
    for (text, value) in [
        ("x = 2", json!(2)),
        ("x = -2", json!(-2)),
        ("x = 2.5", json!(2.5)),
        ("x = -0.5e-3", json!(-0.0005)),
        ("x = 1E+2", json!(100.0)),
        ("x = \"eco\"", json!("eco")),
        ("x = 'eco'", json!("eco")),
        (r#"x = "say \"hi\"""#, json!("say \"hi\"")),
        (r"x = 'it\'s'", json!("it's")),
        (r#"x = "a\\b""#, json!("a\\b")),
        (r#"x = 'mixed "quotes"'"#, json!("mixed \"quotes\"")),
        ("x = \"\"", json!("")),
        ("x = true", json!(true)),
        ("x = FALSE", json!(false)),
        ("x = Null", json!(null)),
    ] {
        let Expr::Compare { value: got, .. } = parse(text).expr else {
            panic!("{text} is not a comparison");
        };
        assert_eq!(got, value, "{text}");
    }
}

#[test]
fn paths_are_dotted_keys_bare_or_quoted() {
    assert_eq!(path("reported.fw").keys(), ["reported", "fw"]);
    assert_eq!(path("a_b:c$d-e.0").keys(), ["a_b:c$d-e", "0"]);
    assert_eq!(path(r#"desired."my key""#).keys(), ["desired", "my key"]);
    assert_eq!(
        path("desired.'my key'.x").keys(),
        ["desired", "my key", "x"]
    );
    assert_eq!(path(r#""".x"#).keys(), ["", "x"]);
    assert_eq!(
        path("  not  ").keys(),
        ["not"],
        "a path alone may be a keyword"
    );
    assert!(matches(r#"desired."my key" = "x""#));
    assert!(matches("desired.light.level = 2"));
    assert!(matches("thing = \"lamp-1\""));
}

#[test]
fn a_path_looks_up_object_keys_and_never_array_items() {
    let d = doc();
    assert_eq!(path("desired.light.level").get(&d), Some(&json!(2)));
    assert_eq!(path("desired.nothing").get(&d), Some(&Value::Null));
    assert_eq!(path("desired.absent").get(&d), None);
    assert_eq!(path("thing.x").get(&d), None, "a string has no keys");
    assert_eq!(
        path("reported.tags.0").get(&d),
        None,
        "arrays are not walked"
    );
}

#[test]
fn and_binds_tighter_than_or_and_not_tighter_than_and() {
    assert_eq!(parse("a=1 or b=1 and c=1"), parse("a=1 or (b=1 and c=1)"));
    assert_ne!(parse("a=1 or b=1 and c=1"), parse("(a=1 or b=1) and c=1"));
    assert_eq!(parse("not a=1 and b=1"), parse("(not a=1) and b=1"));
    let d = json!({"a": 1, "b": 0, "c": 0});
    assert!(parse("a=1 or b=1 and c=1").matches(&d));
    assert!(!parse("(a=1 or b=1) and c=1").matches(&d));
    assert!(parse("not not a = 1").matches(&d));
}

#[test]
fn keywords_are_read_in_any_case() {
    assert_eq!(
        parse("NOT a=1 AND b=1 Or EXISTS(c)"),
        parse("not a=1 and b=1 or exists(c)")
    );
    assert_eq!(parse("x = TRUE"), parse("x = true"));
}

#[test]
fn whitespace_may_go_anywhere_between_tokens_and_nowhere_is_needed() {
    let spaced = parse(" ( \t version\n>=\r\n3 )  and\texists ( desired.mode ) ");
    assert_eq!(spaced, parse("(version>=3)and exists(desired.mode)"));
    assert_eq!(parse("x=\"a\"or(y=1)"), parse("x = \"a\" or y = 1"));
}

#[test]
fn display_prints_a_canonical_form_that_reads_back() {
    for (text, canonical) in [
        ("A==1", "A = 1"),
        ("NOT (a=1)", "not a = 1"),
        ("(a=1 or b=1) and c='x'", "(a = 1 or b = 1) and c = \"x\""),
        ("a=1 or (b=1 or c=1)", "a = 1 or (b = 1 or c = 1)"),
        ("a=1 and (b=1 and c=1)", "a = 1 and (b = 1 and c = 1)"),
        ("not (a=1 and b=1)", "not (a = 1 and b = 1)"),
        ("x = 'it\\'s \"q\" \\\\'", r#"x = "it's \"q\" \\""#),
        ("\"not\".\"a b\".and = 2.50", r#""not"."a b".and = 2.5"#),
        ("exists( \"\" )", r#"exists("")"#),
        ("x = 1e3", "x = 1000.0"),
        ("x = -0", "x = 0"),
        ("x=null", "x = null"),
    ] {
        let q = parse(text);
        assert_eq!(q.to_string(), canonical, "{text}");
        assert_eq!(parse(canonical), q, "{canonical}");
    }
}

#[test]
fn a_printed_float_reads_back_bit_for_bit() {
    // serde_json's default reader gives 3.7181131988936394e-273 for this.
    let q = parse("x = 3.71811319889364e-273");
    let Expr::Compare { value, .. } = &q.expr else {
        panic!("not a comparison")
    };
    assert_eq!(value.as_f64(), Some(3.71811319889364e-273));
    assert_eq!(parse(&q.to_string()), q);
}

#[test]
fn a_missing_path_makes_every_comparison_false() {
    for op in ["=", "!=", "<", "<=", ">", ">="] {
        for value in ["1", "\"eco\"", "null", "true"] {
            let text = format!("desired.absent {op} {value}");
            assert!(!matches(&text), "{text}");
            assert!(matches(&format!("not {text}")), "not {text}");
        }
    }
    assert!(!matches("thing.x = 1"), "through a non-object");
    assert!(!matches("desired.mode != \"eco\""));
    assert!(matches("desired.mode != \"off\""));
}

#[test]
fn exists_is_true_for_a_null_value_and_false_for_a_missing_key() {
    assert!(matches("exists(desired.nothing)"));
    assert!(matches("exists(shadow)"));
    assert!(matches("shadow = null"));
    assert!(!matches("shadow != null"));
    assert!(!matches("exists(desired.absent)"));
    assert!(matches("exists(delta)"), "an empty object exists");
}

#[test]
fn numbers_compare_by_value_and_types_never_equal() {
    assert!(matches("version = 3.0"));
    assert!(matches("reported.fw < 2"));
    assert!(matches("lastSeen > 1e12"));
    assert!(!matches("version = \"3\""));
    assert!(matches("version != \"3\""));
    assert!(!matches("version < \"4\""), "order across types is false");
    assert!(!matches("version >= \"4\""));
    assert!(!matches("connected > false"), "booleans have no order");
    assert!(!matches("connected >= true"));
    assert!(!matches("shadow <= null"), "null has no order");
    assert!(!matches("desired.light = 2"), "an object equals no scalar");
    assert!(matches("desired.light != 2"));
    assert!(!matches("reported.tags < 1"));
}

#[test]
fn strings_order_by_their_bytes() {
    assert!(matches("reported.name < \"a\""), "upper case sorts first");
    assert!(matches("reported.name > \"Z\""));
    assert!(matches(
        "reported.name >= \"Zed\" and reported.name <= \"Zed\""
    ));
    let d = json!({"s": "é"});
    assert!(parse("s > \"z\"").matches(&d), "UTF-8 bytes, not letters");
}

#[test]
fn every_refusal_names_its_position() {
    for (text, position, message) in [
        ("", 0, "empty query"),
        ("   ", 0, "empty query"),
        ("a =", 3, "expected a value after \"=\", found the end"),
        (
            "a = 1 and",
            9,
            "expected a path, \"(\", \"not\" or \"exists\", found the end",
        ),
        ("a = 1 and not", 13, "found the end"),
        (
            "reported.fw",
            11,
            "expected an operator (=, !=, <, <=, >, >=) after reported.fw, found the end",
        ),
        (
            "a 1",
            2,
            "expected an operator (=, !=, <, <=, >, >=) after a, found \"1\"",
        ),
        ("a => 1", 2, "unknown operator \"=>\""),
        ("a <> 1", 2, "unknown operator \"<>\""),
        ("a ~ 1", 2, "unknown operator \"~\""),
        ("a = = 1", 4, "expected a value after \"=\", found \"=\""),
        ("a = \"abc", 4, "unterminated string: no closing \""),
        ("a = 'abc\\'", 4, "unterminated string: no closing '"),
        ("\"abc = 1", 0, "unterminated string"),
        ("a = \"x\\n\"", 6, "unknown escape \"\\n\""),
        ("a = 01", 4, "bad number \"01\""),
        ("a = 1.", 4, "bad number \"1.\""),
        ("a = 1e", 4, "bad number \"1e\""),
        ("a = -", 4, "bad number \"-\""),
        ("a = 2.0x", 4, "bad number \"2.0x\""),
        ("a = 1and b = 1", 4, "bad number \"1and\""),
        ("a = 1e400", 4, "out of range"),
        (
            "a = eco",
            4,
            "expected a value after \"=\", found \"eco\" (text needs quotes)",
        ),
        (
            "(a = 1",
            6,
            "unbalanced parentheses: expected \")\" to close the \"(\" at 0, found the end",
        ),
        ("((a = 1) or b = 2", 17, "to close the \"(\" at 0"),
        (
            "a = 1)",
            5,
            "unbalanced parentheses: this \")\" closes no \"(\"",
        ),
        (
            "a = 1 b = 2",
            6,
            "expected \"and\", \"or\" or the end, found \"b\"",
        ),
        ("a = 1 andx = 2", 6, "found \"andx\""),
        (
            "and = 1",
            0,
            "expected a path, \"(\", \"not\" or \"exists\", found \"and\"",
        ),
        ("() ", 1, "found \")\""),
        ("exists a", 7, "expected \"(\" after exists, found \"a\""),
        ("exists()", 7, "expected a path, found \")\""),
        (
            "exists(a = 1)",
            9,
            "expected \")\" after the path in exists(, found \"=\"",
        ),
        (
            "reported. = 1",
            9,
            "expected a key after \".\", found \" \"",
        ),
        (
            "reported..fw = 1",
            9,
            "expected a key after \".\", found \".\"",
        ),
        (".fw = 1", 0, "found \".\""),
        ("\"é€\" = 1 x", 9, "found \"x\""),
    ] {
        let (at, got) = error(text);
        assert!(got.contains(message), "{text:?}: {got:?} lacks {message:?}");
        assert_eq!(at, position, "{text:?}: {got}");
    }
}

#[test]
fn an_error_displays_its_position_first() {
    let err = Query::parse("reported.fw < ").expect_err("no value");
    assert_eq!(
        err.to_string(),
        "at 14: expected a value after \"<\", found the end"
    );
}

#[test]
fn a_query_over_the_byte_limit_is_refused() {
    let long = format!("thing = \"{}\"", "x".repeat(MAX_QUERY_BYTES));
    let (at, message) = error(&long);
    assert_eq!(at, 0);
    assert!(message.contains("more than the 4096 allowed"), "{message}");
    let fits = format!("thing = \"{}\"", "x".repeat(MAX_QUERY_BYTES - 10));
    assert!(Query::parse(&fits).is_ok());
}

#[test]
fn nesting_is_refused_past_the_limit_without_overflowing_the_stack() {
    let deep = |n: usize| format!("{}a = 1{}", "(".repeat(n), ")".repeat(n));
    assert!(Query::parse(&deep(MAX_NESTING)).is_ok());
    assert_eq!(error(&deep(MAX_NESTING + 1)).0, MAX_NESTING);
    assert_eq!(error(&"(".repeat(4000)).0, MAX_NESTING);
    let nots = |n: usize| format!("{}a = 1", "not ".repeat(n));
    assert!(parse(&nots(MAX_NESTING)).matches(&json!({"a": 1})));
    assert_eq!(error(&nots(MAX_NESTING + 1)).0, 4 * MAX_NESTING);
    let mixed = format!("{}a = 1", "not (".repeat(MAX_NESTING / 2 + 1));
    assert_eq!(error(&mixed).0, 5 * (MAX_NESTING / 2));
}

#[test]
fn a_long_chain_is_one_node_and_evaluates_flat() {
    let chain = vec!["a = 1"; 400].join(" and ");
    assert!(chain.len() <= MAX_QUERY_BYTES);
    let q = parse(&chain);
    let Expr::And(items) = &q.expr else {
        panic!("not a chain")
    };
    assert_eq!(items.len(), 400);
    assert!(q.matches(&json!({"a": 1})));
    assert_eq!(parse(&q.to_string()), q);
}

#[test]
fn a_comparison_keeps_its_operator() {
    let Expr::Compare { op, .. } = parse("a != 1").expr else {
        panic!("not a comparison")
    };
    assert_eq!(op, Op::Ne);
}

#[test]
fn field_paths_refuse_empty_and_trailing_input() {
    for (text, position, message) in [
        ("", 0, "empty path"),
        ("  ", 0, "empty path"),
        (
            "reported.fw x",
            12,
            "expected the end of the path, found \"x\"",
        ),
        ("reported.", 9, "expected a key after \".\", found the end"),
        ("=", 0, "expected a path, found \"=\""),
        ("'open", 0, "unterminated string"),
    ] {
        let err = FieldPath::parse(text).expect_err(text);
        assert!(err.message.contains(message), "{text:?}: {err}");
        assert_eq!(err.position, position, "{text:?}: {err}");
    }
}

#[test]
fn field_paths_print_keys_bare_unless_they_need_quotes() {
    for (text, shown) in [
        ("reported.fw", "reported.fw"),
        ("desired.'my key'", "desired.\"my key\""),
        ("not.and", "\"not\".and"),
        ("EXISTS", "\"EXISTS\""),
        ("a.\"\".'q\"'", r#"a."".'q\"'"#),
        ("'é'", "\"é\""),
    ] {
        let p = path(text);
        let shown = shown.replace('\'', "\"");
        assert_eq!(p.to_string(), shown, "{text}");
        assert_eq!(path(&shown), p, "{shown}");
    }
}
