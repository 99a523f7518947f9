//! Presence end to end: AWS's lifecycle events on every connect and
//! disconnect, and each thing's `connected` and `lastSeen` in its state
//! (retained state topic, `get/accepted`, `shade get`/`list`, HTTP,
//! `connected = ...` queries), durable, and reset by a restart.

use std::time::Duration;

use serde_json::{json, Value};
use shade_tests::{
    password_hash, run_shade, run_shade_as, temp_data, Connect, Http, Mqtt, Msg, Server,
};

fn shade_json(port: u16, args: &[&str]) -> Value {
    let broker = format!("mqtt://127.0.0.1:{port}");
    let mut all = args.to_vec();
    all.extend(["--broker", &broker]);
    let (ok, out, err) = run_shade(&all, None);
    assert!(ok, "shade {all:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("shade {all:?}: not JSON ({e}): {out}"))
}

async fn event(watcher: &mut Mqtt, kind: &str, client_id: &str) -> Value {
    let topic = format!("$aws/events/presence/{kind}/{client_id}");
    watcher
        .wait_for(&topic, |m: &Msg| m.topic == topic)
        .await
        .json()
}

/// The next retained-state message of `thing` whose `connected` is `want`.
async fn state_with(watcher: &mut Mqtt, thing: &str, want: bool) -> Value {
    let topic = format!("shade/things/{thing}/state");
    watcher
        .wait_for(&format!("{topic} connected={want}"), |m: &Msg| {
            m.topic == topic && m.json()["connected"] == want
        })
        .await
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_and_a_things_presence_follow_its_connections_and_a_restart() {
    let (_tmp, data) = temp_data();
    let mut server = Server::start_http(&data, &[]);
    let port = server.port();
    let mut watcher = Mqtt::connect(port, "presence watcher").await;
    watcher.subscribe("$aws/events/presence/#").await;
    watcher.subscribe("shade/things/+/state").await;

    // A device whose client id is its thing's name makes its shadow.
    let mut lamp = Mqtt::connect(port, "lamp-7").await;
    let connected = event(&mut watcher, "connected", "lamp-7").await;
    for key in [
        "clientId",
        "timestamp",
        "eventType",
        "sessionIdentifier",
        "principalIdentifier",
        "versionNumber",
    ] {
        assert!(connected.get(key).is_some(), "{key} in {connected}");
    }
    assert_eq!(connected["clientId"], "lamp-7");
    assert_eq!(connected["eventType"], "connected");
    lamp.subscribe("$aws/things/lamp-7/shadow/update/+").await;
    let reply = lamp
        .request(
            "$aws/things/lamp-7/shadow/update",
            &json!({"state": {"reported": {"on": true}}, "clientToken": "p1"}),
        )
        .await;
    assert!(reply.topic.ends_with("/accepted"), "{reply}");
    let state = state_with(&mut watcher, "lamp-7", true).await;
    assert!(state["lastSeen"].is_u64(), "{state}");
    assert_eq!(state["version"], 1, "presence does not move the version");

    let got = shade_json(port, &["get", "lamp-7", "--json"]);
    assert_eq!(got["connected"], true, "{got}");
    let count = shade_json(port, &["count", "--where", "connected = true", "--json"]);
    assert_eq!(count["count"], 1, "{count}");
    let http = Http::new(&server.http_base());
    let things = http.get("/things").json();
    assert_eq!(things["results"][0]["connected"], true, "{things}");

    // A clean goodbye, then a connection that is just lost.
    assert!(lamp.disconnect(Duration::from_secs(5)).await);
    let gone = event(&mut watcher, "disconnected", "lamp-7").await;
    assert_eq!(gone["clientInitiatedDisconnect"], true, "{gone}");
    assert_eq!(gone["disconnectReason"], "CLIENT_INITIATED_DISCONNECT");
    assert_eq!(gone["sessionIdentifier"], connected["sessionIdentifier"]);
    assert_eq!(gone["versionNumber"], connected["versionNumber"]);
    let state = state_with(&mut watcher, "lamp-7", false).await;
    assert!(state["lastSeen"].as_u64() >= connected["timestamp"].as_u64());
    let count = shade_json(port, &["count", "--where", "connected = false", "--json"]);
    assert_eq!(count["count"], 1, "{count}");

    let again = Mqtt::connect(port, "lamp-7").await;
    let second = event(&mut watcher, "connected", "lamp-7").await;
    assert!(
        second["versionNumber"].as_u64() > connected["versionNumber"].as_u64(),
        "{second} after {connected}"
    );
    state_with(&mut watcher, "lamp-7", true).await;
    again.drop_socket().await;
    let lost = event(&mut watcher, "disconnected", "lamp-7").await;
    assert_eq!(lost["disconnectReason"], "CONNECTION_LOST", "{lost}");
    assert_eq!(lost["clientInitiatedDisconnect"], false);
    state_with(&mut watcher, "lamp-7", false).await;

    // Connected when the broker dies: disconnected once it is back.
    let _held = Mqtt::connect(port, "lamp-7").await;
    state_with(&mut watcher, "lamp-7", true).await;
    server.kill9();
    server.restart();
    let got = shade_json(server.port(), &["get", "lamp-7", "--json"]);
    assert_eq!(
        got["connected"], false,
        "a restart marks everyone gone: {got}"
    );
    assert!(got["lastSeen"].is_u64(), "{got}");
    let list = shade_json(server.port(), &["list", "--json"]);
    assert_eq!(list[0]["connected"], false, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_of_a_client_id_keeps_the_thing_connected_and_says_duplicate_clientid() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data);
    let port = server.port();
    let mut watcher = Mqtt::connect(port, "takeover watcher").await;
    watcher.subscribe("$aws/events/presence/#").await;
    watcher.subscribe("shade/things/+/state").await;
    let mut first = Mqtt::connect(port, "pump-1").await;
    first.subscribe("$aws/things/pump-1/shadow/update/+").await;
    let reply = first
        .request(
            "$aws/things/pump-1/shadow/update",
            &json!({"state": {"reported": {"rpm": 900}}, "clientToken": "t"}),
        )
        .await;
    assert!(reply.topic.ends_with("/accepted"), "{reply}");
    state_with(&mut watcher, "pump-1", true).await;
    let _second = Mqtt::connect(port, "pump-1").await;
    let old = event(&mut watcher, "disconnected", "pump-1").await;
    assert_eq!(old["disconnectReason"], "DUPLICATE_CLIENTID", "{old}");
    // The thing never went offline: no state says so.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = shade_json(port, &["get", "pump-1", "--json"]);
    assert_eq!(got["connected"], true, "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_a_device_is_its_thing_whatever_its_client_id_and_only_readers_see_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[auth]
[[auth.users]]
name = "admin"
password_hash = "{admin}"
role = "admin"

[[auth.users]]
name = "ops"
password_hash = "{ops}"
role = "reader"
"#,
            admin = password_hash("admin-pw"),
            ops = password_hash("ops-pw"),
        ),
    )
    .expect("write config");
    let data = dir.path().join("data");
    let server = Server::start_with_args(&data, &["--config", config.to_str().expect("utf-8")]);
    let port = server.port();
    let (ok, secret, err) = run_shade_as(port, "admin", "admin-pw", &["device", "add", "t1"]);
    assert!(ok, "device add: {err}");

    let mut reader = Mqtt::connect_with(port, "ops-console", &Connect::login("ops", "ops-pw"))
        .await
        .expect("the reader connects");
    reader.subscribe("$aws/events/presence/#").await;
    reader.subscribe("shade/things/+/state").await;
    let mut device = Mqtt::connect_with(port, "sensor board 4", &Connect::login("t1", &secret))
        .await
        .expect("the device connects");
    let connected = event(&mut reader, "connected", "sensor board 4").await;
    assert_eq!(connected["principalIdentifier"], "d:t1", "{connected}");
    assert!(
        !device.try_subscribe("$aws/events/presence/#").await,
        "a device may not read others' lifecycle events"
    );
    device.subscribe("$aws/things/t1/shadow/update/+").await;
    let reply = device
        .request(
            "$aws/things/t1/shadow/update",
            &json!({"state": {"reported": {"t": 21}}, "clientToken": "a"}),
        )
        .await;
    assert!(reply.topic.ends_with("/accepted"), "{reply}");
    let state = state_with(&mut reader, "t1", true).await;
    assert!(state["lastSeen"].is_u64(), "{state}");
    drop(device);
}
