//! AWS IoT Device Shadow semantics, from the examples in AWS's public
//! documentation ("Device Shadow service documents", "Interacting with
//! shadows"): partial updates, null deletes, `"desired": null`, delta
//! contents, version conflicts and every 400 message.

use serde_json::{json, Value};
use shade_shared::aws::{self, Rejection};
use shade_shared::{Limits, Policies, ReplicaId, Shadow, ShadowId, ThingName};

const NOW: u64 = 1_700_000_000_000;

fn broker() -> ReplicaId {
    ReplicaId::broker("local").expect("valid replica id")
}

fn update(shadow: &mut Shadow, body: Value) -> Result<aws::Applied, Rejection> {
    let req = aws::parse_update(body.to_string().as_bytes(), &Limits::default())?;
    aws::apply_update(shadow, &broker(), &req, NOW, &Limits::default())
}

fn get(shadow: &Shadow) -> Value {
    aws::render_get(shadow, &Policies::default(), None, NOW)
}

fn reject(body: &str) -> Rejection {
    match aws::parse_update(body.as_bytes(), &Limits::default()) {
        Err(r) => r,
        Ok(req) => panic!("{body} was accepted as {req:?}"),
    }
}

#[test]
fn partial_update_changes_only_the_keys_sent() {
    let mut s = Shadow::new();
    update(
        &mut s,
        json!({"state": {"desired": {"color": "red", "power": "on"}}}),
    )
    .expect("accepted");
    update(&mut s, json!({"state": {"desired": {"color": "green"}}})).expect("accepted");
    assert_eq!(
        get(&s)["state"]["desired"],
        json!({"color": "green", "power": "on"})
    );
    assert_eq!(s.version, 2);
}

#[test]
fn null_deletes_a_key_and_a_subtree() {
    let mut s = Shadow::new();
    update(
        &mut s,
        json!({"state": {"reported": {"color": "red", "light": {"a": 1, "b": 2}, "x": 1}}}),
    )
    .expect("accepted");
    update(
        &mut s,
        json!({"state": {"reported": {"color": null, "light": null}}}),
    )
    .expect("accepted");
    assert_eq!(get(&s)["state"]["reported"], json!({"x": 1}));
}

#[test]
fn desired_null_clears_the_section_and_keeps_reported() {
    let mut s = Shadow::new();
    update(
        &mut s,
        json!({"state": {"desired": {"a": 1, "b": {"c": 2}}, "reported": {"a": 0}}}),
    )
    .expect("accepted");
    update(&mut s, json!({"state": {"desired": null}})).expect("accepted");
    let doc = get(&s);
    assert_eq!(doc["state"].get("desired"), None);
    assert_eq!(doc["state"]["reported"], json!({"a": 0}));
    assert_eq!(doc["state"].get("delta"), None);
}

#[test]
fn scalar_over_object_replaces_the_subtree_and_back() {
    let mut s = Shadow::new();
    update(
        &mut s,
        json!({"state": {"desired": {"light": {"level": 3, "on": true}}}}),
    )
    .expect("accepted");
    update(&mut s, json!({"state": {"desired": {"light": "off"}}})).expect("accepted");
    assert_eq!(get(&s)["state"]["desired"], json!({"light": "off"}));
    update(
        &mut s,
        json!({"state": {"desired": {"light": {"level": 1}}}}),
    )
    .expect("accepted");
    assert_eq!(get(&s)["state"]["desired"], json!({"light": {"level": 1}}));
}

#[test]
fn arrays_are_replaced_whole() {
    let mut s = Shadow::new();
    update(&mut s, json!({"state": {"desired": {"list": [1, 2, 3]}}})).expect("accepted");
    update(&mut s, json!({"state": {"desired": {"list": [4]}}})).expect("accepted");
    assert_eq!(get(&s)["state"]["desired"], json!({"list": [4]}));
}

#[test]
fn delta_holds_desired_keys_that_differ_from_reported() {
    let mut s = Shadow::new();
    update(
        &mut s,
        json!({"state": {
            "desired": {"color": "red", "power": "on", "light": {"level": 5, "hue": 1}, "new": [1]},
            "reported": {"color": "red", "power": "off", "light": {"level": 5, "hue": 2}, "extra": true}
        }}),
    )
    .expect("accepted");
    let doc = get(&s);
    assert_eq!(
        doc["state"]["delta"],
        json!({"power": "on", "light": {"hue": 1}, "new": [1]})
    );
    let delta = aws::render_delta(&s, &Policies::default(), Some("tok"), NOW).expect("a delta");
    assert_eq!(delta["state"], doc["state"]["delta"]);
    assert_eq!(
        delta["metadata"],
        json!({"power": {"timestamp": NOW / 1000}, "light": {"hue": {"timestamp": NOW / 1000}}, "new": {"timestamp": NOW / 1000}})
    );
    assert_eq!(delta["version"], json!(1));
    assert_eq!(delta["clientToken"], json!("tok"));
}

#[test]
fn matching_reported_value_leaves_the_key_out_of_the_delta() {
    let mut s = Shadow::new();
    update(&mut s, json!({"state": {"desired": {"color": "green"}}})).expect("accepted");
    assert!(aws::render_delta(&s, &Policies::default(), None, NOW).is_some());
    update(&mut s, json!({"state": {"reported": {"color": "green"}}})).expect("accepted");
    assert_eq!(aws::render_delta(&s, &Policies::default(), None, NOW), None);
    // Desired is not cleared when reported matches.
    assert_eq!(get(&s)["state"]["desired"], json!({"color": "green"}));
}

#[test]
fn stale_version_is_a_409_and_changes_nothing() {
    let mut s = Shadow::new();
    update(&mut s, json!({"state": {"desired": {"a": 1}}})).expect("accepted");
    update(
        &mut s,
        json!({"state": {"desired": {"a": 2}}, "version": 1}),
    )
    .expect("version 1 is current");
    let err = update(
        &mut s,
        json!({"state": {"desired": {"a": 3}}, "version": 1, "clientToken": "t1"}),
    )
    .expect_err("version 1 is stale");
    assert_eq!(
        (err.code, err.message.as_str(), err.client_token.as_deref()),
        (409, "Version conflict", Some("t1"))
    );
    assert_eq!(get(&s)["state"]["desired"], json!({"a": 2}));
    assert_eq!(s.version, 2);
}

#[test]
fn every_400_message_is_the_one_aws_sends() {
    let cases = [
        ("not json", "Invalid JSON"),
        ("[1,2]", "Invalid JSON"),
        ("{}", "Missing required node: state"),
        (r#"{"state": 5}"#, "State node must be an object"),
        (
            r#"{"state": {"desired": 5}}"#,
            "Desired node must be an object",
        ),
        (
            r#"{"state": {"reported": "x"}}"#,
            "Reported node must be an object",
        ),
        (
            r#"{"state": {"reported": {}}, "version": "1"}"#,
            "Invalid version",
        ),
        (
            r#"{"state": {"reported": {}}, "version": -1}"#,
            "Invalid version",
        ),
        (r#"{"state": {}, "clientToken": 7}"#, "Invalid clientToken"),
        (
            r#"{"state": {}, "clientToken": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
            "Invalid clientToken",
        ),
        (
            r#"{"state": {"desired": {"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":1}}}}}}}}}}}"#,
            "JSON contains too many levels of nesting; maximum is 8",
        ),
    ];
    for (body, message) in cases {
        let r = reject(body);
        assert_eq!((r.code, r.message.as_str()), (400, message), "for {body}");
    }
    // Eight levels are allowed.
    assert!(aws::parse_update(
        br#"{"state": {"desired": {"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":1}}}}}}}}}}"#,
        &Limits::default()
    )
    .is_ok());
}

#[test]
fn rejection_echoes_the_client_token_it_could_read() {
    let r = reject(r#"{"state": 5, "clientToken": "abc"}"#);
    assert_eq!(r.client_token.as_deref(), Some("abc"));
    let v = r.to_json(NOW);
    assert_eq!(
        v,
        json!({"code": 400, "message": "State node must be an object", "timestamp": NOW / 1000, "clientToken": "abc"})
    );
}

#[test]
fn oversized_payload_and_document_are_413() {
    let limits = Limits {
        max_document_bytes: 64,
        ..Limits::default()
    };
    let mut s = Shadow::new();
    let big = json!({"state": {"desired": {"k": "x".repeat(100)}}});
    let req = aws::parse_update(big.to_string().as_bytes(), &limits).expect("parses");
    let err = aws::apply_update(&mut s, &broker(), &req, NOW, &limits).expect_err("too big");
    assert_eq!(err.code, 413);
    assert!(
        !s.exists && s.version == 0,
        "a refused update leaves the shadow as it was"
    );
    let tiny = Limits {
        max_payload_bytes: 10,
        ..Limits::default()
    };
    assert_eq!(reject_with(&big.to_string(), &tiny).code, 413);
}

fn reject_with(body: &str, limits: &Limits) -> Rejection {
    aws::parse_update(body.as_bytes(), limits).expect_err("refused")
}

#[test]
fn update_accepted_echoes_state_with_metadata_and_version() {
    let mut s = Shadow::new();
    let body = json!({"state": {"desired": {"a": {"b": 1}, "c": null}}, "clientToken": "tok"});
    let req = aws::parse_update(body.to_string().as_bytes(), &Limits::default()).expect("parses");
    aws::apply_update(&mut s, &broker(), &req, NOW, &Limits::default()).expect("accepted");
    let v = aws::render_update_accepted(&req, s.version, NOW);
    let t = NOW / 1000;
    assert_eq!(
        v,
        json!({
            "state": {"desired": {"a": {"b": 1}, "c": null}},
            "metadata": {"desired": {"a": {"b": {"timestamp": t}}, "c": {"timestamp": t}}},
            "version": 1, "timestamp": t, "clientToken": "tok"
        })
    );
}

#[test]
fn documents_carry_previous_and_current() {
    let mut s = Shadow::new();
    let first = update(&mut s, json!({"state": {"reported": {"a": 1}}})).expect("accepted");
    let docs = aws::render_documents(&first.previous, &s, &Policies::default(), None, NOW);
    assert_eq!(
        docs["previous"],
        Value::Null,
        "no previous document for a new shadow"
    );
    assert_eq!(docs["current"]["state"], json!({"reported": {"a": 1}}));
    let second = update(&mut s, json!({"state": {"reported": {"a": 2}}})).expect("accepted");
    let docs = aws::render_documents(&second.previous, &s, &Policies::default(), Some("t"), NOW);
    assert_eq!(docs["previous"]["state"], json!({"reported": {"a": 1}}));
    assert_eq!(docs["previous"]["version"], json!(1));
    assert_eq!(docs["current"]["state"], json!({"reported": {"a": 2}}));
    assert_eq!(docs["current"]["version"], json!(2));
    assert_eq!(docs["clientToken"], json!("t"));
}

#[test]
fn delete_makes_the_shadow_absent_but_keeps_its_version_counting() {
    let mut s = Shadow::new();
    update(&mut s, json!({"state": {"desired": {"a": 1}}})).expect("accepted");
    let v = aws::apply_delete(&mut s, &broker(), NOW);
    assert_eq!(v, 1);
    assert!(!s.exists);
    let id = ShadowId::classic(ThingName::new("lamp").expect("valid"));
    assert_eq!(
        Rejection::not_found(&id).message,
        "No shadow exists with name: lamp"
    );
    update(&mut s, json!({"state": {"desired": {"b": 2}}})).expect("accepted");
    assert!(s.exists);
    assert_eq!(s.version, 3, "versions are never reused after a delete");
    assert_eq!(get(&s)["state"]["desired"], json!({"b": 2}));
}

#[test]
fn get_and_delete_accept_an_empty_payload_or_a_token() {
    let l = Limits::default();
    assert_eq!(aws::parse_get_or_delete(b"", &l), Ok(None));
    assert_eq!(
        aws::parse_get_or_delete(br#"{"clientToken":"x"}"#, &l),
        Ok(Some("x".into()))
    );
    assert_eq!(
        aws::parse_get_or_delete(b"{oops", &l).map_err(|r| r.code),
        Err(400)
    );
}

#[test]
fn full_document_carries_vv_and_conflicts_extensions() {
    let mut s = Shadow::new();
    update(&mut s, json!({"state": {"desired": {"a": 1}}})).expect("accepted");
    let doc = get(&s);
    assert_eq!(doc["vv"], json!({"b:local": 1}));
    assert_eq!(doc["conflicts"], json!([]));
    assert_eq!(
        doc["metadata"]["desired"]["a"]["timestamp"],
        json!(NOW / 1000)
    );
}

#[test]
fn notices_rendered_together_equal_each_rendered_alone() {
    let mut s = Shadow::new();
    let first = update(
        &mut s,
        json!({"state": {"desired": {"a": {"b": 1}, "c": [1, null]}}}),
    )
    .expect("accepted");
    let second = update(
        &mut s,
        json!({"state": {"reported": {"a": {"b": 2}, "t": 1}}}),
    )
    .expect("accepted");
    let p = Policies::default();
    for previous in [&first.previous, &second.previous] {
        let n = aws::render_notices(previous, &s, &p, Some("tok"), NOW);
        assert_eq!(
            n.documents,
            Some(aws::render_documents(previous, &s, &p, Some("tok"), NOW))
        );
        assert_eq!(n.delta, aws::render_delta(&s, &p, Some("tok"), NOW));
        assert_eq!(n.state, Some(aws::render_get(&s, &p, None, NOW)));
    }
    let mut deleted = s.clone();
    aws::apply_delete(&mut deleted, &broker(), NOW);
    assert_eq!(aws::render_notices(&s, &deleted, &p, None, NOW).state, None);
}
