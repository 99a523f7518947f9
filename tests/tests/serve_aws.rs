//! The AWS IoT Device Shadow API of `shade serve`, end to end: a real
//! server process, real MQTT clients (rumqttc 3.1.1 and 5, and paho-mqtt
//! from Python), real redb on disk.

use std::time::Duration;

use serde_json::{json, Value};
use shade_tests::{
    assert_plausible_secs, aws, aws_named, expect_rejected, expect_topic, temp_data, Mqtt, Msg,
    Server, REPLY_TIMEOUT,
};

/// Asserts every leaf of `state` has `{"timestamp": secs}` at the same path in `metadata`.
fn assert_metadata_mirrors(state: &Value, metadata: &Value, what: &str) {
    match state {
        Value::Object(m) => {
            for (k, v) in m {
                assert_metadata_mirrors(v, &metadata[k], &format!("{what}.{k}"));
            }
        }
        _ => assert_plausible_secs(&metadata["timestamp"], &format!("metadata{what}.timestamp")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_update_publishes_accepted_delta_and_documents() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let mut c = Mqtt::connect(server.port(), "aws-update").await;
    c.subscribe(&aws("lamp", "#")).await;

    let desired = json!({"color": "red", "light": {"level": 80}});
    c.publish_json(
        &aws("lamp", "update"),
        &json!({"state": {"desired": desired}, "clientToken": "up-1"}),
    )
    .await;

    let accepted = c
        .on_topic(&aws("lamp", "update/accepted"), "up-1")
        .await
        .json();
    assert_eq!(accepted["state"], json!({"desired": desired}), "{accepted}");
    assert_metadata_mirrors(
        &accepted["state"]["desired"],
        &accepted["metadata"]["desired"],
        ".desired",
    );
    assert_eq!(accepted["version"], 1, "{accepted}");
    assert_plausible_secs(&accepted["timestamp"], "update/accepted timestamp");

    let delta = c
        .on_topic(&aws("lamp", "update/delta"), "up-1")
        .await
        .json();
    assert_eq!(delta["state"], desired, "{delta}");
    assert_metadata_mirrors(&delta["state"], &delta["metadata"], "");
    assert_eq!(delta["version"], 1, "{delta}");
    assert_plausible_secs(&delta["timestamp"], "update/delta timestamp");

    let docs = c
        .on_topic(&aws("lamp", "update/documents"), "up-1")
        .await
        .json();
    assert!(
        docs["previous"].is_null(),
        "a new shadow has no previous document: {docs}"
    );
    assert_eq!(
        docs["current"]["state"],
        json!({"desired": desired}),
        "{docs}"
    );
    assert_metadata_mirrors(
        &docs["current"]["state"]["desired"],
        &docs["current"]["metadata"]["desired"],
        ".desired",
    );
    assert_eq!(docs["current"]["version"], 1, "{docs}");
    assert_plausible_secs(&docs["timestamp"], "update/documents timestamp");

    // A second update: documents show before and after, delta the merged desired.
    c.publish_json(
        &aws("lamp", "update"),
        &json!({"state": {"desired": {"color": "blue"}}, "clientToken": "up-2"}),
    )
    .await;
    let accepted = c
        .on_topic(&aws("lamp", "update/accepted"), "up-2")
        .await
        .json();
    assert_eq!(
        accepted["state"],
        json!({"desired": {"color": "blue"}}),
        "accepted echoes what was sent: {accepted}"
    );
    assert_eq!(accepted["version"], 2, "{accepted}");
    let merged = json!({"color": "blue", "light": {"level": 80}});
    let docs = c
        .on_topic(&aws("lamp", "update/documents"), "up-2")
        .await
        .json();
    assert_eq!(
        docs["previous"]["state"],
        json!({"desired": desired}),
        "{docs}"
    );
    assert_eq!(docs["previous"]["version"], 1, "{docs}");
    assert_eq!(
        docs["current"]["state"],
        json!({"desired": merged}),
        "{docs}"
    );
    assert_eq!(docs["current"]["version"], 2, "{docs}");
    let delta = c
        .on_topic(&aws("lamp", "update/delta"), "up-2")
        .await
        .json();
    assert_eq!(delta["state"], merged, "{delta}");
    assert_eq!(delta["version"], 2, "{delta}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_reported_value_leaves_that_key_out_of_the_next_delta() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let mut c = Mqtt::connect(server.port(), "aws-delta").await;
    // One filter for everything of the thing: replies arrive in the order
    // the service published them, so a later reply proves an earlier absence.
    c.subscribe(&aws("fan", "#")).await;

    let update = |token: &str, state: Value| json!({"state": state, "clientToken": token});
    c.publish_json(
        &aws("fan", "update"),
        &update("d1", json!({"desired": {"a": 1, "b": 2, "c": {"d": 3}}})),
    )
    .await;
    let delta = c.on_topic(&aws("fan", "update/delta"), "d1").await.json();
    assert_eq!(
        delta["state"],
        json!({"a": 1, "b": 2, "c": {"d": 3}}),
        "{delta}"
    );

    c.publish_json(
        &aws("fan", "update"),
        &update("r1", json!({"reported": {"a": 1}})),
    )
    .await;
    let delta = c.on_topic(&aws("fan", "update/delta"), "r1").await.json();
    assert_eq!(
        delta["state"],
        json!({"b": 2, "c": {"d": 3}}),
        "a matches reported, so it is not in the delta: {delta}"
    );
    assert!(
        delta["metadata"].get("a").is_none(),
        "no metadata for a key outside the delta: {delta}"
    );
    assert_eq!(delta["version"], 2, "{delta}");

    // Reported catches up entirely: no delta at all for that change.
    c.publish_json(
        &aws("fan", "update"),
        &update("r2", json!({"reported": {"b": 2, "c": {"d": 3}}})),
    )
    .await;
    c.publish_json(&aws("fan", "get"), &json!({"clientToken": "g1"}))
        .await;
    let seen = c
        .collect_until("get/accepted g1", |m| {
            m.topic == aws("fan", "get/accepted") && m.token().as_deref() == Some("g1")
        })
        .await;
    let r2: Vec<&Msg> = seen
        .iter()
        .filter(|m| m.token().as_deref() == Some("r2"))
        .collect();
    assert!(
        r2.iter().any(|m| m.topic == aws("fan", "update/accepted")),
        "r2 accepted: {seen:?}"
    );
    assert!(
        !r2.iter().any(|m| m.topic == aws("fan", "update/delta")),
        "no delta once reported matches desired: {seen:?}"
    );
    let get = seen.last().expect("the get reply").json();
    assert!(
        get["state"].get("delta").is_none(),
        "no delta in the document: {get}"
    );
    assert_eq!(
        get["state"]["desired"],
        json!({"a": 1, "b": 2, "c": {"d": 3}}),
        "desired is kept: {get}"
    );
    assert_eq!(
        get["state"]["reported"],
        json!({"a": 1, "b": 2, "c": {"d": 3}}),
        "{get}"
    );

    // Reported drifts again: the delta names only the drifted key.
    c.publish_json(
        &aws("fan", "update"),
        &update("r3", json!({"reported": {"c": {"d": 4}}})),
    )
    .await;
    let delta = c.on_topic(&aws("fan", "update/delta"), "r3").await.json();
    assert_eq!(delta["state"], json!({"c": {"d": 3}}), "{delta}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_returns_desired_reported_delta_metadata_version_and_extensions() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let mut c = Mqtt::connect(server.port(), "aws-get").await;
    c.subscribe(&aws("+", "get/+")).await;
    c.subscribe(&aws("+", "update/accepted")).await;

    let desired = json!({"a": 1, "b": {"c": 2}, "list": [1, 2]});
    let reported = json!({"a": 0, "z": true, "list": [1, 2]});
    let reply = c
        .request(
            &aws("meter", "update"),
            &json!({"state": {"desired": desired, "reported": reported}, "clientToken": "u1"}),
        )
        .await;
    assert_eq!(
        expect_topic(&reply, &aws("meter", "update/accepted"))["version"],
        1
    );

    let reply = c
        .request(&aws("meter", "get"), &json!({"clientToken": "g1"}))
        .await;
    let doc = expect_topic(&reply, &aws("meter", "get/accepted"));
    assert_eq!(doc["state"]["desired"], desired, "{doc}");
    assert_eq!(doc["state"]["reported"], reported, "{doc}");
    assert_eq!(
        doc["state"]["delta"],
        json!({"a": 1, "b": {"c": 2}}),
        "arrays that match are not in the delta: {doc}"
    );
    assert_plausible_secs(
        &doc["metadata"]["desired"]["a"]["timestamp"],
        "metadata.desired.a",
    );
    assert_plausible_secs(
        &doc["metadata"]["desired"]["b"]["c"]["timestamp"],
        "metadata.desired.b.c",
    );
    assert_plausible_secs(
        &doc["metadata"]["reported"]["z"]["timestamp"],
        "metadata.reported.z",
    );
    assert_eq!(doc["version"], 1, "{doc}");
    assert_plausible_secs(&doc["timestamp"], "get/accepted timestamp");
    assert_eq!(doc["clientToken"], "g1", "{doc}");
    assert!(
        doc["vv"]["b:local"].as_u64().is_some_and(|n| n >= 1),
        "vv holds the broker replica: {doc}"
    );
    assert_eq!(doc["conflicts"], json!([]), "{doc}");

    // AWS allows an empty get: the reply then carries no clientToken.
    c.publish(&aws("meter", "get"), Vec::new()).await;
    let reply = c
        .wait_for("get/accepted without a token", |m| {
            m.topic == aws("meter", "get/accepted")
        })
        .await;
    let doc = reply.json();
    assert!(doc.get("clientToken").is_none(), "{doc}");
    assert_eq!(doc["version"], 1, "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_with_a_stale_version_is_rejected_with_409_version_conflict() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let mut c = Mqtt::connect(server.port(), "aws-409").await;
    c.subscribe(&aws("valve", "+/+")).await;

    let reply = c
        .request(
            &aws("valve", "update"),
            &json!({"state": {"desired": {"open": false}}, "clientToken": "u1"}),
        )
        .await;
    assert_eq!(
        expect_topic(&reply, &aws("valve", "update/accepted"))["version"],
        1
    );
    let reply = c
        .request(
            &aws("valve", "update"),
            &json!({"state": {"desired": {"open": true}}, "version": 1, "clientToken": "u2"}),
        )
        .await;
    assert_eq!(
        expect_topic(&reply, &aws("valve", "update/accepted"))["version"],
        2,
        "the current version is accepted"
    );

    let reply = c
        .request(
            &aws("valve", "update"),
            &json!({"state": {"desired": {"open": false}}, "version": 1, "clientToken": "u3"}),
        )
        .await;
    assert_eq!(reply.topic, aws("valve", "update/rejected"));
    expect_rejected(&reply, 409, "Version conflict", Some("u3"));
    let reply = c
        .request(
            &aws("valve", "update"),
            &json!({"state": {"desired": {"open": false}}, "version": 7, "clientToken": "u4"}),
        )
        .await;
    expect_rejected(&reply, 409, "Version conflict", Some("u4"));

    let doc = c
        .request(&aws("valve", "get"), &json!({"clientToken": "g"}))
        .await
        .json();
    assert_eq!(
        doc["version"], 2,
        "a rejected update changes nothing: {doc}"
    );
    assert_eq!(doc["state"]["desired"], json!({"open": true}), "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_shadow_answers_404_no_shadow_exists() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let mut c = Mqtt::connect(server.port(), "aws-404").await;
    c.subscribe(&aws("+", "+/+")).await;

    let reply = c
        .request(&aws("ghost", "get"), &json!({"clientToken": "g0"}))
        .await;
    assert_eq!(reply.topic, aws("ghost", "get/rejected"));
    expect_rejected(&reply, 404, "No shadow exists with name: ghost", Some("g0"));

    for (i, token) in ["u1", "u2"].into_iter().enumerate() {
        let reply = c
            .request(
                &aws("door", "update"),
                &json!({"state": {"reported": {"n": i}}, "clientToken": token}),
            )
            .await;
        expect_topic(&reply, &aws("door", "update/accepted"));
    }
    let reply = c
        .request(&aws("door", "delete"), &json!({"clientToken": "del1"}))
        .await;
    let deleted = expect_topic(&reply, &aws("door", "delete/accepted"));
    assert!(
        deleted["version"].as_u64().is_some_and(|v| v >= 2),
        "{deleted}"
    );
    assert_plausible_secs(&deleted["timestamp"], "delete/accepted timestamp");

    let reply = c
        .request(&aws("door", "get"), &json!({"clientToken": "g1"}))
        .await;
    assert_eq!(reply.topic, aws("door", "get/rejected"));
    expect_rejected(&reply, 404, "No shadow exists with name: door", Some("g1"));
    let reply = c
        .request(&aws("door", "delete"), &json!({"clientToken": "del2"}))
        .await;
    assert_eq!(reply.topic, aws("door", "delete/rejected"));
    expect_rejected(
        &reply,
        404,
        "No shadow exists with name: door",
        Some("del2"),
    );

    // The shadow can be created again afterwards, as a new document.
    let reply = c
        .request(
            &aws("door", "update"),
            &json!({"state": {"reported": {"n": 9}}, "clientToken": "u3"}),
        )
        .await;
    expect_topic(&reply, &aws("door", "update/accepted"));
    let docs = c
        .on_topic(&aws("door", "update/documents"), "u3")
        .await
        .json();
    assert!(
        docs["previous"].is_null(),
        "a deleted shadow has no previous document: {docs}"
    );
    let doc = c
        .request(&aws("door", "get"), &json!({"clientToken": "g2"}))
        .await
        .json();
    assert_eq!(
        doc["state"]["reported"],
        json!({"n": 9}),
        "nothing of before the delete comes back: {doc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_shadows_are_independent_of_the_classic_shadow() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let mut c = Mqtt::connect(server.port(), "aws-named").await;
    c.subscribe(&aws("dev", "#")).await;

    let reply = c
        .request(
            &aws("dev", "update"),
            &json!({"state": {"desired": {"x": 1}}, "clientToken": "c1"}),
        )
        .await;
    assert_eq!(
        expect_topic(&reply, &aws("dev", "update/accepted"))["version"],
        1
    );
    let reply = c
        .request(
            &aws_named("dev", "cfg", "update"),
            &json!({"state": {"desired": {"y": 2}}, "clientToken": "n1"}),
        )
        .await;
    assert_eq!(
        expect_topic(&reply, &aws_named("dev", "cfg", "update/accepted"))["version"],
        1,
        "own version"
    );
    let delta = c
        .on_topic(&aws_named("dev", "cfg", "update/delta"), "n1")
        .await
        .json();
    assert_eq!(delta["state"], json!({"y": 2}), "{delta}");
    c.on_topic(&aws_named("dev", "cfg", "update/documents"), "n1")
        .await;

    let classic = c
        .request(&aws("dev", "get"), &json!({"clientToken": "gc"}))
        .await;
    let classic = expect_topic(&classic, &aws("dev", "get/accepted"));
    assert_eq!(classic["state"]["desired"], json!({"x": 1}), "{classic}");
    assert_eq!(classic["version"], 1, "{classic}");
    let named = c
        .request(
            &aws_named("dev", "cfg", "get"),
            &json!({"clientToken": "gn"}),
        )
        .await;
    let named = expect_topic(&named, &aws_named("dev", "cfg", "get/accepted"));
    assert_eq!(named["state"]["desired"], json!({"y": 2}), "{named}");

    let other = c
        .request(
            &aws_named("dev", "fw", "get"),
            &json!({"clientToken": "gf"}),
        )
        .await;
    assert_eq!(other.topic, aws_named("dev", "fw", "get/rejected"));
    expect_rejected(&other, 404, "No shadow exists with name: fw", Some("gf"));

    let reply = c
        .request(
            &aws_named("dev", "cfg", "delete"),
            &json!({"clientToken": "dn"}),
        )
        .await;
    expect_topic(&reply, &aws_named("dev", "cfg", "delete/accepted"));
    let named = c
        .request(
            &aws_named("dev", "cfg", "get"),
            &json!({"clientToken": "gn2"}),
        )
        .await;
    expect_rejected(&named, 404, "No shadow exists with name: cfg", Some("gn2"));
    let classic = c
        .request(&aws("dev", "get"), &json!({"clientToken": "gc2"}))
        .await;
    let classic = expect_topic(&classic, &aws("dev", "get/accepted"));
    assert_eq!(
        classic["state"]["desired"],
        json!({"x": 1}),
        "deleting a named shadow keeps the classic one: {classic}"
    );
    assert_eq!(classic["version"], 1, "{classic}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_token_is_echoed_in_every_reply() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let mut c = Mqtt::connect(server.port(), "aws-token").await;
    c.subscribe(&aws("tok", "#")).await;

    let t = "token-with-64-bytes-".to_owned() + &"x".repeat(44);
    assert_eq!(t.len(), 64);
    c.publish_json(
        &aws("tok", "update"),
        &json!({"state": {"desired": {"a": 1}}, "clientToken": t}),
    )
    .await;
    for reply in ["update/accepted", "update/documents", "update/delta"] {
        let v = c.on_topic(&aws("tok", reply), &t).await.json();
        assert_eq!(v["clientToken"], t.as_str(), "{reply}: {v}");
    }
    let get = c
        .request(&aws("tok", "get"), &json!({"clientToken": "get-1"}))
        .await;
    expect_topic(&get, &aws("tok", "get/accepted"));
    let conflict = c
        .request(
            &aws("tok", "update"),
            &json!({"state": {"desired": {"a": 2}}, "version": 99, "clientToken": "stale-1"}),
        )
        .await;
    expect_rejected(&conflict, 409, "Version conflict", Some("stale-1"));
    let bad = c
        .request(
            &aws("tok", "update"),
            &json!({"state": 5, "clientToken": "bad-1"}),
        )
        .await;
    expect_rejected(&bad, 400, "State node must be an object", Some("bad-1"));
    let delete = c
        .request(&aws("tok", "delete"), &json!({"clientToken": "del-1"}))
        .await;
    expect_topic(&delete, &aws("tok", "delete/accepted"));
    let missing = c
        .request(&aws("tok", "get"), &json!({"clientToken": "get-2"}))
        .await;
    expect_rejected(
        &missing,
        404,
        "No shadow exists with name: tok",
        Some("get-2"),
    );
}

/// The next `rejected` reply on `topic`.
async fn next_rejection(c: &mut Mqtt, topic: &str) -> Msg {
    c.wait_for(&format!("a reply on {topic}"), |m| m.topic == topic)
        .await
}

/// One request of the healthy client, proving the service still serves.
async fn still_serving(good: &mut Mqtt, n: u32) {
    let token = format!("good-{n}");
    let reply = good
        .request(
            &aws("good", "update"),
            &json!({"state": {"reported": {"n": n}}, "clientToken": token}),
        )
        .await;
    let v = expect_topic(&reply, &aws("good", "update/accepted"));
    assert_eq!(v["version"], n + 1, "{v}");
}

fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!({ "k": inner }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_or_413_and_the_service_keeps_serving_others() {
    let (_dir, data) = temp_data();
    let mut server = Server::start(&data);
    let mut good = Mqtt::connect(server.port(), "good-client").await;
    good.subscribe(&aws("good", "#")).await;
    let mut bad = Mqtt::connect(server.port(), "bad-client").await;
    bad.subscribe(&aws("+", "+/rejected")).await;
    bad.subscribe(&aws_named("+", "+", "+/rejected")).await;
    bad.subscribe(&aws("+", "+/accepted")).await;
    let update = aws("victim", "update");
    let rejected = aws("victim", "update/rejected");
    let mut n = 0;

    // Requests that are not JSON objects: no token can be read.
    for payload in [&b"{not json"[..], b"", b"[1,2]", b"\"state\"", b"\xff\xfe"] {
        bad.publish(&update, payload).await;
        let reply = next_rejection(&mut bad, &rejected).await;
        expect_rejected(&reply, 400, "Invalid JSON", None);
        still_serving(&mut good, n).await;
        n += 1;
    }
    let cases = [
        (json!({"clientToken": "m1"}), "Missing required node: state"),
        (
            json!({"state": 5, "clientToken": "m2"}),
            "State node must be an object",
        ),
        (
            json!({"state": {"desired": [1]}, "clientToken": "m3"}),
            "Desired node must be an object",
        ),
        (
            json!({"state": {"reported": "x"}, "clientToken": "m4"}),
            "Reported node must be an object",
        ),
        (
            json!({"state": {"desired": {"a": 1}}, "version": "abc", "clientToken": "m5"}),
            "Invalid version",
        ),
        (
            json!({"state": {"desired": {"a": 1}}, "version": -1, "clientToken": "m6"}),
            "Invalid version",
        ),
        (
            json!({"state": {"desired": nested(9)}, "clientToken": "m7"}),
            "JSON contains too many levels of nesting; maximum is 8",
        ),
    ];
    for (request, message) in cases {
        let token = request["clientToken"].as_str().expect("token").to_owned();
        let reply = bad.request(&update, &request).await;
        assert_eq!(reply.topic, rejected);
        expect_rejected(&reply, 400, message, Some(&token));
        still_serving(&mut good, n).await;
        n += 1;
    }
    // An unreadable clientToken cannot be echoed.
    for token in [json!("x".repeat(65)), json!(5)] {
        bad.publish_json(
            &update,
            &json!({"state": {"desired": {"a": 1}}, "clientToken": token}),
        )
        .await;
        let reply = next_rejection(&mut bad, &rejected).await;
        expect_rejected(&reply, 400, "Invalid clientToken", None);
    }
    // A get that is not JSON.
    bad.publish(&aws("victim", "get"), &b"{bad"[..]).await;
    let reply = next_rejection(&mut bad, &aws("victim", "get/rejected")).await;
    expect_rejected(&reply, 400, "Invalid JSON", None);

    // Eight levels are allowed, nine are not (above).
    let reply = bad
        .request(
            &update,
            &json!({"state": {"desired": nested(8)}, "clientToken": "deep-8"}),
        )
        .await;
    assert_eq!(
        expect_topic(&reply, &aws("victim", "update/accepted"))["version"],
        1
    );

    // Over the 8 KiB document limit.
    let reply = bad
        .request(
            &update,
            &json!({"state": {"desired": {"big": "x".repeat(9 * 1024)}}, "clientToken": "doc-big"}),
        )
        .await;
    expect_rejected(
        &reply,
        413,
        "The payload exceeds the maximum size allowed",
        Some("doc-big"),
    );
    // Over the 128 KiB request limit, within the MQTT packet limit (whether
    // its token is echoed is the test below).
    let request =
        json!({"state": {"desired": {"pad": "x".repeat(130 * 1024)}}, "clientToken": "req-big"});
    bad.publish_json(&update, &request).await;
    let reply = next_rejection(&mut bad, &rejected).await;
    assert_eq!(reply.json()["code"], 413, "{reply}");
    assert_eq!(
        reply.json()["message"],
        "The payload exceeds the maximum size allowed",
        "{reply}"
    );
    still_serving(&mut good, n).await;
    n += 1;

    // Bad names get a 400 on the rejected topic of the request.
    for thing in ["bad.name", &"t".repeat(129), ""] {
        let topic = aws(thing, "update");
        bad.publish_json(
            &topic,
            &json!({"state": {"desired": {"a": 1}}, "clientToken": "name"}),
        )
        .await;
        let reply = next_rejection(&mut bad, &aws(thing, "update/rejected")).await;
        let v = reply.json();
        assert_eq!(v["code"], 400, "{reply}");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.to_lowercase().contains("name")),
            "a clear error: {reply}"
        );
        assert_eq!(v["clientToken"], "name", "the token is echoed: {reply}");
    }
    // The longest thing name is fine.
    let longest = "t".repeat(128);
    let reply = bad
        .request(
            &aws(&longest, "update"),
            &json!({"state": {"desired": {"a": 1}}, "clientToken": "long"}),
        )
        .await;
    expect_topic(&reply, &aws(&longest, "update/accepted"));
    let topic = aws_named("victim", "no!pe", "get");
    bad.publish(&topic, Vec::new()).await;
    let reply = next_rejection(&mut bad, &aws_named("victim", "no!pe", "get/rejected")).await;
    assert_eq!(reply.json()["code"], 400, "{reply}");
    still_serving(&mut good, n).await;
    n += 1;

    // Unknown operations, and replies forged by a client, are refused: the
    // healthy client (subscribed to everything of `good`) never sees them,
    // and the forger's connection is closed (3.1.1 has no other way to
    // refuse a publish; docs/SECURITY.md).
    for (i, topic) in [
        aws("victim", "frobnicate"),
        aws("victim", "update/extra/levels"),
        aws("good", "update/accepted"),
        aws("good", "update/delta"),
        "$aws/things/good".to_owned(),
        "$aws/things".to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut forger = Mqtt::connect(server.port(), &format!("forger-{i}")).await;
        forger
            .publish_json(
                &topic,
                &json!({"state": {"desired": {"forged": true}}, "clientToken": "forged"}),
            )
            .await;
        while forger
            .next_or_closed(Duration::from_secs(20))
            .await
            .is_some()
        {}
    }
    let reply = bad
        .request(
            &aws("victim", "get"),
            &json!({"clientToken": "after-forged"}),
        )
        .await;
    assert!(reply.topic.ends_with("/get/accepted"), "{reply}");
    let log = server.log();
    for topic in [aws("victim", "frobnicate"), aws("good", "update/accepted")] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("topic=\"{topic}\""))),
            "no log line about the dropped publish on {topic}:\n{log}"
        );
    }
    let token = format!("good-{n}");
    good.publish_json(
        &aws("good", "update"),
        &json!({"state": {"reported": {"n": n}}, "clientToken": token}),
    )
    .await;
    let seen = good
        .collect_until("the next accepted", |m| {
            m.topic.ends_with("/accepted") && m.token() == Some(token.clone())
        })
        .await;
    assert!(
        !seen.iter().any(|m| m.token().as_deref() == Some("forged")),
        "forged replies reached a subscriber: {seen:?}"
    );
    n += 1;

    // A packet over the broker's maximum: the server closes that
    // connection (or answers 413); everyone else is served.
    let mut huge = Mqtt::connect(server.port(), "huge-client").await;
    huge.subscribe(&aws("victim", "update/rejected")).await;
    let request =
        json!({"state": {"desired": {"pad": "x".repeat(300 * 1024)}}, "clientToken": "huge"});
    huge.publish_json(&update, &request).await;
    match huge.next_or_closed(REPLY_TIMEOUT).await {
        None => {
            let log = server.log();
            assert!(
                log.lines().any(|l| l.contains("huge-client")),
                "closing the connection leaves a log line:\n{log}"
            );
        }
        Some(reply) => {
            assert_eq!(reply.json()["code"], 413, "either closed or 413: {reply}");
        }
    }
    still_serving(&mut good, n).await;
    assert!(
        server.is_running(),
        "the server survived every malformed request"
    );

    // Nothing of the rejected requests was applied.
    let doc = bad
        .request(&aws("victim", "get"), &json!({"clientToken": "final"}))
        .await;
    let doc = expect_topic(&doc, &aws("victim", "get/accepted"));
    assert_eq!(
        doc["version"], 1,
        "only the eight-level update was applied: {doc}"
    );
    assert_eq!(doc["state"]["desired"], nested(8), "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_over_128_kib_gets_413_with_its_client_token() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let mut c = Mqtt::connect(server.port(), "aws-413").await;
    c.subscribe(&aws("big", "update/rejected")).await;
    // 130 KiB: over the 128 KiB request limit, within the MQTT packet
    // limit, and valid JSON whose clientToken the server can read.
    let request =
        json!({"state": {"desired": {"pad": "x".repeat(130 * 1024)}}, "clientToken": "req-big"});
    c.publish_json(&aws("big", "update"), &request).await;
    let reply = next_rejection(&mut c, &aws("big", "update/rejected")).await;
    // DESIGN.md: "clientToken ... is echoed in every reply to the request".
    expect_rejected(
        &reply,
        413,
        "The payload exceeds the maximum size allowed",
        Some("req-big"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_deletes_a_leaf_and_a_null_section_clears_it() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let mut c = Mqtt::connect(server.port(), "aws-null").await;
    c.subscribe(&aws("nul", "+/+")).await;

    let state = json!({"desired": {"a": 1, "b": {"c": 2, "d": 3}, "e": 4}, "reported": {"a": 1}});
    let reply = c
        .request(
            &aws("nul", "update"),
            &json!({"state": state, "clientToken": "u1"}),
        )
        .await;
    expect_topic(&reply, &aws("nul", "update/accepted"));
    let reply = c
        .request(
            &aws("nul", "update"),
            &json!({"state": {"desired": {"b": {"c": null}, "e": null}}, "clientToken": "u2"}),
        )
        .await;
    let accepted = expect_topic(&reply, &aws("nul", "update/accepted"));
    assert_eq!(
        accepted["state"],
        json!({"desired": {"b": {"c": null}, "e": null}}),
        "echoes the nulls: {accepted}"
    );
    let doc = c
        .request(&aws("nul", "get"), &json!({"clientToken": "g1"}))
        .await
        .json();
    assert_eq!(
        doc["state"]["desired"],
        json!({"a": 1, "b": {"d": 3}}),
        "{doc}"
    );
    assert!(
        doc["metadata"]["desired"].get("e").is_none(),
        "no metadata for a deleted leaf: {doc}"
    );

    let reply = c
        .request(
            &aws("nul", "update"),
            &json!({"state": {"desired": null}, "clientToken": "u3"}),
        )
        .await;
    expect_topic(&reply, &aws("nul", "update/accepted"));
    let doc = c
        .request(&aws("nul", "get"), &json!({"clientToken": "g2"}))
        .await
        .json();
    assert!(
        doc["state"].get("desired").is_none(),
        "desired is cleared: {doc}"
    );
    assert!(doc["state"].get("delta").is_none(), "{doc}");
    assert_eq!(
        doc["state"]["reported"],
        json!({"a": 1}),
        "reported is untouched: {doc}"
    );
    assert_eq!(doc["version"], 3, "{doc}");

    // A cleared leaf can be written again.
    let reply = c
        .request(
            &aws("nul", "update"),
            &json!({"state": {"desired": {"e": 5}}, "clientToken": "u4"}),
        )
        .await;
    expect_topic(&reply, &aws("nul", "update/accepted"));
    let doc = c
        .request(&aws("nul", "get"), &json!({"clientToken": "g3"}))
        .await
        .json();
    assert_eq!(doc["state"]["desired"], json!({"e": 5}), "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_with_empty_or_unusual_client_ids_get_their_replies() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    // An empty id (the broker assigns one), over 3.1.1 and 5, and ids with
    // characters that mean something in topics or escapes.
    let mut clients = [
        Mqtt::connect(server.port(), "").await,
        Mqtt::connect_v5(server.port(), "").await,
        Mqtt::connect(server.port(), "50%:é ünï").await,
        Mqtt::connect(server.port(), "_in").await,
    ];
    for (i, c) in clients.iter_mut().enumerate() {
        c.subscribe(&aws("ids", "update/+")).await;
        let token = format!("id-{i}");
        let reply = c
            .request(
                &aws("ids", "update"),
                &json!({"state": {"reported": {"i": i}}, "clientToken": token}),
            )
            .await;
        expect_topic(&reply, &aws("ids", "update/accepted"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_state_topic_delivers_the_full_document_to_a_late_subscriber() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let mut writer = Mqtt::connect(server.port(), "state-writer").await;
    writer.subscribe(&aws("+", "+/+")).await;
    writer.subscribe(&aws_named("+", "+", "+/+")).await;
    let reply = writer
        .request(
            &aws("house", "update"),
            &json!({"state": {"desired": {"mode": "eco"}, "reported": {"mode": "off", "temp": 19}}, "clientToken": "s1"}),
        )
        .await;
    expect_topic(&reply, &aws("house", "update/accepted"));
    let reply = writer
        .request(
            &aws_named("house", "cfg", "update"),
            &json!({"state": {"reported": {"fw": "1.2"}}, "clientToken": "s2"}),
        )
        .await;
    expect_topic(&reply, &aws_named("house", "cfg", "update/accepted"));
    let get = writer
        .request(&aws("house", "get"), &json!({"clientToken": "g"}))
        .await
        .json();

    let mut late = Mqtt::connect(server.port(), "state-late").await;
    late.subscribe("shade/things/house/state").await;
    let state = late
        .wait_for("the retained state", |m| {
            m.topic == "shade/things/house/state"
        })
        .await;
    assert!(state.retain, "delivered as a retained message: {state}");
    let doc = state.json();
    assert_eq!(
        doc["state"],
        json!({"desired": {"mode": "eco"}, "reported": {"mode": "off", "temp": 19}, "delta": {"mode": "eco"}})
    );
    assert_eq!(doc["metadata"], get["metadata"], "{doc}");
    assert_eq!(doc["version"], 1, "{doc}");
    assert_eq!(doc["vv"], get["vv"], "{doc}");
    assert_eq!(doc["conflicts"], json!([]), "{doc}");
    assert_plausible_secs(&doc["timestamp"], "state timestamp");

    late.subscribe("shade/things/house/shadows/cfg/state").await;
    let named = late
        .wait_for("the named retained state", |m| {
            m.topic == "shade/things/house/shadows/cfg/state"
        })
        .await;
    assert!(named.retain, "{named}");
    assert_eq!(
        named.json()["state"]["reported"],
        json!({"fw": "1.2"}),
        "{named}"
    );

    // A live change reaches the subscriber too.
    let reply = writer
        .request(
            &aws("house", "update"),
            &json!({"state": {"reported": {"mode": "eco"}}, "clientToken": "s3"}),
        )
        .await;
    expect_topic(&reply, &aws("house", "update/accepted"));
    let live = late
        .wait_for("the state of version 2", |m| {
            m.topic == "shade/things/house/state" && m.json()["version"] == 2
        })
        .await
        .json();
    assert!(live["state"].get("delta").is_none(), "{live}");

    // After a delete the retained state is gone: a new dashboard on
    // `shade/things/#` gets the named shadow only, then a later marker.
    let reply = writer
        .request(&aws("house", "delete"), &json!({"clientToken": "del"}))
        .await;
    expect_topic(&reply, &aws("house", "delete/accepted"));
    let mut dashboard = Mqtt::connect(server.port(), "state-dashboard").await;
    dashboard.subscribe("shade/things/#").await;
    let reply = writer
        .request(
            &aws("marker", "update"),
            &json!({"state": {"reported": {"m": 1}}, "clientToken": "mk"}),
        )
        .await;
    expect_topic(&reply, &aws("marker", "update/accepted"));
    let seen = dashboard
        .collect_until("the marker's state", |m| {
            m.topic == "shade/things/marker/state"
        })
        .await;
    assert!(
        seen.iter()
            .any(|m| m.topic == "shade/things/house/shadows/cfg/state" && !m.payload.is_empty()),
        "the named shadow's state is retained: {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|m| m.topic == "shade/things/house/state" && !m.payload.is_empty()),
        "a deleted shadow has no retained state: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_client_gets_the_same_replies() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let mut c = Mqtt::connect_v5(server.port(), "aws-v5").await;
    c.subscribe(&aws("v5thing", "#")).await;

    c.publish_json(
        &aws("v5thing", "update"),
        &json!({"state": {"desired": {"on": true}}, "clientToken": "u1"}),
    )
    .await;
    let accepted = c
        .on_topic(&aws("v5thing", "update/accepted"), "u1")
        .await
        .json();
    assert_eq!(
        accepted["state"],
        json!({"desired": {"on": true}}),
        "{accepted}"
    );
    assert_eq!(accepted["version"], 1, "{accepted}");
    assert_plausible_secs(
        &accepted["metadata"]["desired"]["on"]["timestamp"],
        "metadata",
    );
    let delta = c
        .on_topic(&aws("v5thing", "update/delta"), "u1")
        .await
        .json();
    assert_eq!(delta["state"], json!({"on": true}), "{delta}");
    let docs = c
        .on_topic(&aws("v5thing", "update/documents"), "u1")
        .await
        .json();
    assert_eq!(
        docs["current"]["state"]["desired"],
        json!({"on": true}),
        "{docs}"
    );

    let get = c
        .request(&aws("v5thing", "get"), &json!({"clientToken": "g1"}))
        .await;
    let doc = expect_topic(&get, &aws("v5thing", "get/accepted"));
    assert_eq!(doc["state"]["delta"], json!({"on": true}), "{doc}");
    assert_eq!(doc["version"], 1, "{doc}");

    let stale = c
        .request(
            &aws("v5thing", "update"),
            &json!({"state": {"desired": {"on": false}}, "version": 0, "clientToken": "u2"}),
        )
        .await;
    expect_rejected(&stale, 409, "Version conflict", Some("u2"));
    let bad = c
        .request(&aws("v5thing", "update"), &json!({"clientToken": "u3"}))
        .await;
    expect_rejected(&bad, 400, "Missing required node: state", Some("u3"));

    let del = c
        .request(&aws("v5thing", "delete"), &json!({"clientToken": "d1"}))
        .await;
    expect_topic(&del, &aws("v5thing", "delete/accepted"));
    let gone = c
        .request(&aws("v5thing", "get"), &json!({"clientToken": "g2"}))
        .await;
    expect_rejected(
        &gone,
        404,
        "No shadow exists with name: v5thing",
        Some("g2"),
    );

    // A 3.1.1 subscriber sees what the MQTT 5 client caused.
    let mut v4 = Mqtt::connect(server.port(), "aws-v4-watcher").await;
    v4.subscribe(&aws("v5thing", "update/accepted")).await;
    c.publish_json(
        &aws("v5thing", "update"),
        &json!({"state": {"reported": {"on": false}}, "clientToken": "u4"}),
    )
    .await;
    let seen = v4
        .on_topic(&aws("v5thing", "update/accepted"), "u4")
        .await
        .json();
    assert_eq!(seen["state"], json!({"reported": {"on": false}}), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_python_client_walks_update_get_conflict_delete() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    shade_tests::run_paho_script(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        "aws_flow.py",
        &[server.port().to_string()],
        Duration::from_secs(90),
        || server.log(),
    )
    .await;
}
