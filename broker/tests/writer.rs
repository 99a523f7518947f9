//! The shadow service and the store's writer, in memory: parsed requests
//! go into [`Writer::commit`] over a real redb (its in-memory backend, or
//! one that fails on demand), and the replies come back as the broker would
//! publish them. No sockets, no processes: what each request does to a
//! document, checked one step at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use shade_broker::embedded::Outbound;
use shade_broker::{Credentials, Principals, Request, Service, Store, Writer};
use shade_shared::aws;
use shade_shared::document::Patch;
use shade_shared::sync::{SyncDown, SyncUp};
use shade_shared::{Limits, Policies, ReplicaId, Section, Shadow, ShadowId, ThingName};

const NOW: u64 = 1_700_000_000_000;

fn writer(store: Store) -> Writer {
    Writer {
        store,
        service: Service {
            node: ReplicaId::broker("test").expect("node name"),
            limits: Limits::default(),
            policies: Policies::default(),
            history_per_shadow: 100,
            subscriptions: None,
            presence: None,
        },
        principals: Principals::default(),
        credentials: Credentials::new(),
    }
}

fn lamp() -> ShadowId {
    ShadowId::classic(ThingName::new("lamp").expect("thing name"))
}

fn update(w: &Writer, body: Value) -> Request {
    let payload = body.to_string();
    Request::Update {
        id: lamp(),
        update: Box::new(
            aws::parse_update(payload.as_bytes(), &w.service.limits).expect("a valid update"),
        ),
        client: "dashboard".into(),
    }
}

fn get() -> Request {
    Request::Get {
        id: lamp(),
        token: Some("g1".into()),
        client: "dashboard".into(),
    }
}

fn delete() -> Request {
    Request::Delete {
        id: lamp(),
        token: None,
        client: "dashboard".into(),
    }
}

/// The one reply on `topic`, as JSON.
fn reply(out: &[Outbound], topic: &str) -> Value {
    let found: Vec<&Outbound> = out.iter().filter(|o| o.topic == topic).collect();
    assert_eq!(found.len(), 1, "one reply on {topic}, got {out:#?}");
    serde_json::from_slice(&found[0].payload).expect("JSON reply")
}

fn topics(out: &[Outbound]) -> Vec<&str> {
    out.iter().map(|o| o.topic.as_str()).collect()
}

#[test]
fn an_update_is_accepted_announced_and_read_back() {
    let w = writer(Store::in_memory().expect("store"));
    let out = w.commit(
        [&update(
            &w,
            json!({"state":{"desired":{"color":"green"}},"clientToken":"t1"}),
        )],
        NOW,
    );
    let accepted = reply(&out, "$aws/things/lamp/shadow/update/accepted");
    assert_eq!(accepted["version"], 1);
    assert_eq!(accepted["clientToken"], "t1");
    assert_eq!(accepted["state"]["desired"]["color"], "green");
    let delta = reply(&out, "$aws/things/lamp/shadow/update/delta");
    assert_eq!(delta["state"], json!({"color":"green"}));
    let documents = reply(&out, "$aws/things/lamp/shadow/update/documents");
    assert_eq!(documents["previous"], Value::Null);
    let state = out
        .iter()
        .find(|o| o.topic == "shade/things/lamp/state")
        .expect("the retained state");
    assert!(state.retain, "the state message is retained");

    let out = w.commit([&get()], NOW + 1);
    let doc = reply(&out, "$aws/things/lamp/shadow/get/accepted");
    assert_eq!(doc["state"]["desired"]["color"], "green");
    assert_eq!(doc["state"]["delta"]["color"], "green");
    assert_eq!(doc["clientToken"], "g1");
    assert_eq!(doc["version"], 1);
}

#[test]
fn get_and_delete_of_a_missing_shadow_are_404() {
    let w = writer(Store::in_memory().expect("store"));
    let out = w.commit([&get(), &delete()], NOW);
    assert_eq!(
        reply(&out, "$aws/things/lamp/shadow/get/rejected")["code"],
        404
    );
    assert_eq!(
        reply(&out, "$aws/things/lamp/shadow/delete/rejected")["code"],
        404
    );
}

#[test]
fn delete_clears_the_retained_state_and_the_version_goes_on() {
    let w = writer(Store::in_memory().expect("store"));
    w.commit(
        [&update(&w, json!({"state":{"reported":{"on":true}}}))],
        NOW,
    );
    let out = w.commit([&delete()], NOW + 1);
    // As on AWS: the version of the document that was deleted.
    assert_eq!(
        reply(&out, "$aws/things/lamp/shadow/delete/accepted")["version"],
        1
    );
    let state = out
        .iter()
        .find(|o| o.topic == "shade/things/lamp/state")
        .expect("a state message");
    assert!(state.retain && state.payload.is_empty(), "{state:?}");
    let out = w.commit([&get()], NOW + 2);
    assert_eq!(
        reply(&out, "$aws/things/lamp/shadow/get/rejected")["code"],
        404
    );
    let out = w.commit(
        [&update(&w, json!({"state":{"reported":{"on":false}}}))],
        NOW + 3,
    );
    let version = reply(&out, "$aws/things/lamp/shadow/update/accepted")["version"].clone();
    assert!(
        version.as_u64().is_some_and(|v| v > 1),
        "a version is never reused, also across a delete: {version}"
    );
}

#[test]
fn an_update_naming_an_old_version_is_409_and_changes_nothing() {
    let w = writer(Store::in_memory().expect("store"));
    w.commit([&update(&w, json!({"state":{"desired":{"a":1}}}))], NOW);
    let out = w.commit(
        [&update(
            &w,
            json!({"state":{"desired":{"a":2}},"version":7,"clientToken":"old"}),
        )],
        NOW + 1,
    );
    let rejected = reply(&out, "$aws/things/lamp/shadow/update/rejected");
    assert_eq!(rejected["code"], 409);
    assert_eq!(rejected["clientToken"], "old");
    assert_eq!(topics(&out).len(), 1, "a 409 announces nothing: {out:?}");
    let doc = reply(
        &w.commit([&get()], NOW + 2),
        "$aws/things/lamp/shadow/get/accepted",
    );
    assert_eq!(doc["state"]["desired"]["a"], 1);
    assert_eq!(doc["version"], 1);
}

#[test]
fn an_update_that_would_grow_the_document_past_the_limit_is_413() {
    let w = writer(Store::in_memory().expect("store"));
    let big = "x".repeat(5000);
    w.commit([&update(&w, json!({"state":{"desired":{"a":big}}}))], NOW);
    // Each part fits; the merged document does not.
    let out = w.commit(
        [&update(&w, json!({"state":{"reported":{"b":big}}}))],
        NOW + 1,
    );
    assert_eq!(
        reply(&out, "$aws/things/lamp/shadow/update/rejected")["code"],
        413
    );
    let doc = reply(
        &w.commit([&get()], NOW + 2),
        "$aws/things/lamp/shadow/get/accepted",
    );
    assert_eq!(doc["state"]["reported"], Value::Null, "{doc}");
}

#[test]
fn a_sync_up_is_merged_acknowledged_and_pushed_to_nobody_else() {
    let w = writer(Store::in_memory().expect("store"));
    let agent = ReplicaId::agent("lamp-agent").expect("replica");
    let mut local = Shadow::default();
    let patch = json!({"temperature": 21.5});
    let Value::Object(map) = patch else {
        unreachable!("an object literal")
    };
    let dot = local
        .write(&agent, Section::Reported, &Patch::Merge(map), NOW)
        .expect("a dot");
    let up = SyncUp {
        replica: agent.clone(),
        changes: local.changes_since(&Default::default()),
    };
    let request = Request::SyncUp {
        id: lamp(),
        up: Box::new(up),
        client: "lamp-agent".into(),
    };
    let out = w.commit([&request], NOW);
    let down: Vec<&Outbound> = out
        .iter()
        .filter(|o| o.topic == "shade/things/lamp/sync/down")
        .collect();
    assert_eq!(down.len(), 1, "one answer to the agent: {out:#?}");
    let down = SyncDown::from_cbor(&down[0].payload, 64).expect("a sync/down");
    assert!(
        down.changes.vv.get(&agent) >= dot.counter,
        "the broker's vector acknowledges the agent's write"
    );
    assert_eq!(down.version, 1);
    let doc = reply(
        &w.commit([&get()], NOW + 1),
        "$aws/things/lamp/shadow/get/accepted",
    );
    assert_eq!(doc["state"]["reported"]["temperature"], 21.5);

    // The same message again changes nothing: merges are idempotent.
    let out = w.commit([&request], NOW + 2);
    assert!(
        !topics(&out).contains(&"shade/things/lamp/state"),
        "a repeated sync/up announces nothing: {out:?}"
    );
}

/// An in-memory redb backend whose writes fail while `failing` is set.
#[derive(Debug)]
struct Flaky {
    inner: redb::backends::InMemoryBackend,
    failing: Arc<AtomicBool>,
}

impl Flaky {
    fn check(&self) -> std::io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(std::io::Error::other("injected write failure"))
        } else {
            Ok(())
        }
    }
}

impl redb::StorageBackend for Flaky {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

#[test]
fn a_failed_commit_answers_every_change_of_the_batch_with_a_500() {
    let failing = Arc::new(AtomicBool::new(false));
    let store = Store::with_backend(Flaky {
        inner: redb::backends::InMemoryBackend::new(),
        failing: failing.clone(),
    })
    .expect("store");
    let w = writer(store);
    failing.store(true, Ordering::SeqCst);
    let first = update(&w, json!({"state":{"desired":{"a":1}},"clientToken":"one"}));
    let second = update(&w, json!({"state":{"desired":{"b":2}},"clientToken":"two"}));
    let out = w.commit([&first, &second], NOW);
    let rejected: Vec<Value> = out
        .iter()
        .map(|o| {
            assert_eq!(
                o.topic, "$aws/things/lamp/shadow/update/rejected",
                "{out:?}"
            );
            serde_json::from_slice(&o.payload).expect("JSON")
        })
        .collect();
    assert_eq!(rejected.len(), 2, "one 500 per update: {rejected:?}");
    for (reply, token) in rejected.iter().zip(["one", "two"]) {
        assert_eq!(reply["code"], 500);
        assert_eq!(reply["clientToken"], token);
    }
    assert!(
        !out.iter().any(|o| o.topic.ends_with("/accepted")),
        "nothing is accepted that was not committed"
    );
}

#[test]
fn device_changes_reach_the_credentials_only_after_their_commit() {
    let w = writer(Store::in_memory().expect("store"));
    let hash = shade_broker::hash_device_secret("s3cret").expect("hash");
    let body = json!({"op":"device-add","clientToken":"d1","thing":"lamp","hash":hash});
    let request = Request::Ops {
        request: shade_broker::OpsRequest::parse(body.to_string().as_bytes())
            .expect("a device query"),
        client: "operator".into(),
    };
    assert!(!w.credentials.has_device("lamp"));
    let out = w.commit([&request], NOW);
    assert!(
        w.credentials.has_device("lamp"),
        "the device may log in after the commit"
    );
    assert!(w.credentials.verify_device("lamp", "s3cret"));
    assert_eq!(out.len(), 1, "{out:?}");
    let answer: Value = serde_json::from_slice(&out[0].payload).expect("JSON");
    assert_eq!(answer["ok"], true, "{answer}");
}

/// The versions in the shadow's history, oldest first.
fn history_versions(w: &Writer) -> Vec<u64> {
    let mut v: Vec<u64> = w
        .store
        .history(&lamp(), 1000)
        .expect("history")
        .iter()
        .map(|e| e.version)
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn history_keeps_the_newest_entries_and_a_lowered_bound_drops_the_rest() {
    let mut w = writer(Store::in_memory().expect("store"));
    w.service.history_per_shadow = 3;
    for i in 0..5 {
        w.commit([&update(&w, json!({"state":{"desired":{"n":i}}}))], NOW + i);
    }
    assert_eq!(history_versions(&w), vec![3, 4, 5]);
    // One append removes one entry by key; a lowered bound leaves older
    // ones behind it, which the sweep must still remove.
    w.service.history_per_shadow = 1;
    w.commit([&update(&w, json!({"state":{"desired":{"n":9}}}))], NOW + 9);
    assert_eq!(history_versions(&w), vec![6]);
}
