//! Many concurrent AWS clients against a few shadows: every update is
//! acknowledged exactly once, versions are handed out in order without
//! gaps or reuse, and the final documents hold every client's last write.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{json, Value};
use shade_tests::{aws, expect_topic, temp_data, Mqtt, Server};

const CLIENTS: usize = 50;
const UPDATES_PER_CLIENT: usize = 20;
const SHADOWS: usize = 5;
/// The whole test, including starting the server and 51 clients.
const BUDGET: Duration = Duration::from_secs(60);

fn thing(client: usize) -> String {
    format!("load-{}", client % SHADOWS)
}

fn token(client: usize, seq: usize) -> String {
    format!("c{client}-{seq}")
}

/// The version each of this client's updates was accepted with, in order.
async fn run_client(port: u16, client: usize) -> Vec<u64> {
    let thing = thing(client);
    let mut c = Mqtt::connect(port, &format!("load-client-{client}")).await;
    c.subscribe(&aws(&thing, "update/accepted")).await;
    c.subscribe(&aws(&thing, "update/rejected")).await;
    // All twenty pipelined: MQTT keeps one client's QoS 1 messages in order.
    for seq in 0..UPDATES_PER_CLIENT {
        let request = json!({"state": {"reported": {format!("c{client}"): seq}}, "clientToken": token(client, seq)});
        c.publish_json(&aws(&thing, "update"), &request).await;
    }
    let mut versions = Vec::new();
    for seq in 0..UPDATES_PER_CLIENT {
        let reply = c.reply(&token(client, seq)).await;
        let v = expect_topic(&reply, &aws(&thing, "update/accepted"));
        versions.push(
            v["version"]
                .as_u64()
                .unwrap_or_else(|| panic!("no version in {reply}")),
        );
    }
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_updates_from_fifty_clients_are_each_accepted_once_in_version_order() {
    let (dir, data) = temp_data();
    // 200 updates per shadow within seconds: far above AWS's 20 requests
    // per second per thing, which this test is not about (serve_auth.rs
    // checks the 429), so the limit is lifted.
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        "[limits]\nrequests_per_second_per_thing = 100000\n",
    )
    .expect("write config");
    let server = Server::start_with_args(&data, &["--config", config.to_str().expect("utf-8")]);
    let port = server.port();
    tokio::time::timeout(BUDGET, async move {
        let mut observer = Mqtt::connect(port, "load-observer").await;
        observer.subscribe(&aws("+", "update/accepted")).await;
        observer.subscribe(&aws("+", "update/rejected")).await;

        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| tokio::spawn(run_client(port, i)))
            .collect();
        let mut own_versions = Vec::new();
        for (i, handle) in clients.into_iter().enumerate() {
            let versions = handle
                .await
                .unwrap_or_else(|e| panic!("client {i} failed: {e}"));
            assert!(
                versions.windows(2).all(|w| w[0] < w[1]),
                "client {i}'s updates got versions out of order: {versions:?}"
            );
            own_versions.push(versions);
        }

        // The observer sees every acceptance, in publication order.
        let total = CLIENTS * UPDATES_PER_CLIENT;
        let mut per_shadow: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut times_accepted: HashMap<String, usize> = HashMap::new();
        let mut observe = |msg: &shade_tests::Msg| {
            assert!(
                msg.topic.ends_with("/update/accepted"),
                "no update may be rejected: {msg}"
            );
            let v = msg.json();
            let thing = msg
                .topic
                .split('/')
                .nth(2)
                .expect("a thing level")
                .to_owned();
            per_shadow
                .entry(thing)
                .or_default()
                .push(v["version"].as_u64().expect("version"));
            *times_accepted
                .entry(msg.token().expect("a clientToken"))
                .or_default() += 1;
        };
        for _ in 0..total {
            let msg = observer.wait_for("an update reply", |_| true).await;
            observe(&msg);
        }
        // Any duplicate would come before a later marker on the same filter.
        // The checker stays connected until the markers are seen: dropping
        // a client ends its event loop, and with it any publish still queued.
        let mut finals = BTreeMap::new();
        let mut checker = Mqtt::connect(port, "load-checker").await;
        checker.subscribe(&aws("+", "get/+")).await;
        for s in 0..SHADOWS {
            let thing = format!("load-{s}");
            let get_token = format!("final-{s}");
            let doc = checker
                .request(&aws(&thing, "get"), &json!({"clientToken": get_token}))
                .await;
            finals.insert(
                thing.clone(),
                expect_topic(&doc, &aws(&thing, "get/accepted")),
            );
            checker
                .publish_json(
                    &aws(&thing, "update"),
                    &json!({"state": {"reported": {}}, "clientToken": format!("marker-{s}")}),
                )
                .await;
        }
        let mut markers = 0;
        while markers < SHADOWS {
            let msg = observer.wait_for("the markers", |_| true).await;
            if msg.token().is_some_and(|t| t.starts_with("marker-")) {
                markers += 1;
            } else {
                observe(&msg);
            }
        }
        drop(checker);

        for client in 0..CLIENTS {
            for seq in 0..UPDATES_PER_CLIENT {
                let t = token(client, seq);
                assert_eq!(
                    times_accepted.get(&t).copied().unwrap_or(0),
                    1,
                    "{t} accepted once"
                );
            }
        }
        assert_eq!(
            times_accepted.len(),
            total,
            "only the updates sent were accepted"
        );

        let per_shadow_updates = (CLIENTS / SHADOWS * UPDATES_PER_CLIENT) as u64;
        for (thing, versions) in &per_shadow {
            assert!(
                versions.windows(2).all(|w| w[0] < w[1]),
                "{thing}: accepted versions not strictly increasing: {versions:?}"
            );
            assert_eq!(versions.len() as u64, per_shadow_updates, "{thing}");
            assert_eq!(versions.first(), Some(&1), "{thing}: {versions:?}");
            let doc = &finals[thing];
            assert_eq!(
                versions.last().copied(),
                doc["version"].as_u64(),
                "{thing}: the last accepted version is the document's: {doc}"
            );
        }
        assert_eq!(per_shadow.len(), SHADOWS);

        // Each client's own replies agree with what the observer saw.
        for (client, versions) in own_versions.iter().enumerate() {
            assert!(
                versions
                    .iter()
                    .all(|v| per_shadow[&thing(client)].contains(v)),
                "client {client}: {versions:?}"
            );
        }

        // The merge of everything: every client's key holds its last value.
        for (thing, doc) in &finals {
            let reported = &doc["state"]["reported"];
            let expected: serde_json::Map<String, Value> = (0..CLIENTS)
                .filter(|c| &self::thing(*c) == thing)
                .map(|c| (format!("c{c}"), json!(UPDATES_PER_CLIENT - 1)))
                .collect();
            assert_eq!(reported, &Value::Object(expected), "{thing}: {doc}");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the load test did not finish within {BUDGET:?}"));
    drop(server);
}
