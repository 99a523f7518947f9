//! Authentication, authorization, TLS and rate limits of `shade serve`,
//! end to end: the real binary with an `[auth]` config, device secrets made
//! with `shade device add`, config users hashed with `shade hash-password`,
//! a test CA made here with rcgen, and rumqttc clients over TCP and TLS.
//! Every test ends by checking that the service still serves others.

use std::path::{Path, PathBuf};

use std::time::Duration;

use serde_json::json;
use shade_tests::pki::TestCa;
use shade_tests::{free_port, password_hash, run_shade_as as shade_as, Connect, Mqtt, Server};

const ADMIN_PASSWORD: &str = "admin-pw";
const VIEWER_PASSWORD: &str = "viewer-pw";

/// A running `shade serve` with authentication on, TLS on a second port,
/// and two devices (`t1`, `t2`) with secrets.
struct Secured {
    _dir: tempfile::TempDir,
    server: Server,
    tls_port: u16,
    wss_port: u16,
    ca_path: PathBuf,
    ca: TestCa,
    t1_secret: String,
    t2_secret: String,
}

/// `shade device add` online, as the admin: the secret it prints.
fn add_device(port: u16, thing: &str) -> String {
    let (ok, secret, err) = shade_as(port, "admin", ADMIN_PASSWORD, &["device", "add", thing]);
    assert!(ok, "shade device add {thing} failed: {err}");
    secret
}

fn write_config(dir: &Path, ca: &TestCa, tls_port: u16, wss_port: u16) -> PathBuf {
    let tls = ca.tls_section(dir);
    let config = format!(
        r#"
[listen]
tls = "127.0.0.1:{tls_port}"
wss = "127.0.0.1:{wss_port}"

{tls}
[auth]
device_topics = ["devices/{{thing}}/#"]

[[auth.users]]
name = "admin"
password_hash = "{admin}"
role = "admin"

[[auth.users]]
name = "viewer"
password_hash = "{viewer}"
role = "reader"
prefix = "t1"

[limits]
requests_per_second_per_thing = 20
"#,
        admin = password_hash(ADMIN_PASSWORD),
        viewer = password_hash(VIEWER_PASSWORD),
    );
    let path = dir.join("broker.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

fn start() -> Secured {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let ca = TestCa::new("shade test CA");
    let tls_port = free_port();
    let wss_port = free_port();
    let config = write_config(dir.path(), &ca, tls_port, wss_port);
    let ca_path = dir.path().join("ca.pem");
    let server = Server::start_with_args(&data, &["--config", config.to_str().expect("utf-8")]);
    let t1_secret = add_device(server.port(), "t1");
    let t2_secret = add_device(server.port(), "t2");
    Secured {
        _dir: dir,
        server,
        tls_port,
        wss_port,
        ca_path,
        ca,
        t1_secret,
        t2_secret,
    }
}

impl Secured {
    fn port(&self) -> u16 {
        self.server.port()
    }

    async fn device(&self, thing: &str, id: &str) -> Mqtt {
        let secret = if thing == "t1" {
            &self.t1_secret
        } else {
            &self.t2_secret
        };
        Mqtt::connect_with(self.port(), id, &Connect::login(thing, secret))
            .await
            .unwrap_or_else(|e| panic!("device {thing} cannot connect: {e}"))
    }

    async fn admin(&self, id: &str) -> Mqtt {
        Mqtt::connect_with(self.port(), id, &Connect::login("admin", ADMIN_PASSWORD))
            .await
            .unwrap_or_else(|e| panic!("admin cannot connect: {e}"))
    }

    /// The service answers a get from a fresh admin connection.
    async fn assert_still_serving(&self) {
        let mut admin = self.admin("still-serving").await;
        admin.subscribe("$aws/things/t2/shadow/get/+").await;
        let reply = admin
            .request(
                "$aws/things/t2/shadow/get",
                &json!({"clientToken": "alive"}),
            )
            .await;
        // t2 may have no shadow in this test: a 404 is an answer too.
        assert!(
            reply.topic.ends_with("/accepted") || reply.json()["code"] == 404,
            "{reply}"
        );
    }
}

async fn update(client: &mut Mqtt, thing: &str, desired: serde_json::Value, token: &str) -> u64 {
    client
        .subscribe(&format!("$aws/things/{thing}/shadow/update/+"))
        .await;
    let reply = client
        .request(
            &format!("$aws/things/{thing}/shadow/update"),
            &json!({"state": {"desired": desired}, "clientToken": token}),
        )
        .await;
    assert!(reply.topic.ends_with("/accepted"), "{reply}");
    reply.json()["version"].as_u64().expect("version")
}

/// Publishes as `client` and expects the 3.1.1 refusal: a closed connection.
async fn assert_refused_publish(mut client: Mqtt, topic: &str) {
    client
        .publish(topic, b"{\"state\":{\"desired\":{\"x\":1}}}".to_vec())
        .await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while client
            .next_or_closed(Duration::from_secs(10))
            .await
            .is_some()
        {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "a publish on {topic} did not close the connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_can_neither_read_nor_write_another_things_shadow_over_any_topic() {
    let s = start();
    let mut admin = s.admin("admin-1").await;
    admin.subscribe("$aws/things/+/shadow/get/+").await;
    let t2_version = update(&mut admin, "t2", json!({"secret": "of t2"}), "a1").await;

    let mut t1 = s.device("t1", "t1-dev").await;
    for filter in [
        "shade/things/t2/state",
        "$aws/things/t2/shadow/get/accepted",
        "$aws/things/t2/shadow/#",
        "shade/things/t2/#",
        "devices/t2/#",
    ] {
        assert!(!t1.try_subscribe(filter).await, "t1 was granted {filter}");
    }
    // Wildcards are granted but filtered: t1 sees its own topics only.
    t1.subscribe("#").await;
    t1.subscribe("$aws/things/+/shadow/#").await;
    t1.subscribe("shade/things/+/state").await;

    // t2 changes its own shadow; t1 changes its own; only t1's reaches t1.
    let mut t2 = s.device("t2", "t2-dev").await;
    update(&mut t2, "t2", json!({"mode": "t2 only"}), "b1").await;
    t2.publish("devices/t2/telemetry", b"t2 data".to_vec())
        .await;
    update(&mut t1, "t1", json!({"mode": "mine"}), "c1").await;
    t1.publish("devices/t1/telemetry", b"t1 data".to_vec())
        .await;
    let mut seen = t1
        .collect_until("t1's own telemetry", |m| m.topic == "devices/t1/telemetry")
        .await;
    if !seen.iter().any(|m| m.topic == "shade/things/t1/state") {
        // The state comes from the service, the telemetry through the
        // router: either may arrive first. Waiting is bounded.
        seen.extend(
            t1.collect_until("t1's own state", |m| m.topic == "shade/things/t1/state")
                .await,
        );
    }
    for msg in &seen {
        assert!(
            !msg.topic.contains("t2") && !String::from_utf8_lossy(&msg.payload).contains("t2"),
            "t1 received {msg}"
        );
    }
    assert!(
        seen.iter().any(|m| m.topic == "shade/things/t1/state"),
        "the filtered wildcard still delivers t1's own state"
    );

    // Every way of writing t2 closes t1's connection and changes nothing.
    for topic in [
        "$aws/things/t2/shadow/update",
        "$aws/things/t2/shadow/delete",
        "$aws/things/t2/shadow/name/cfg/update",
        "shade/things/t2/sync/up",
        "devices/t2/telemetry",
        "shade/ops/request",
        "shade/things/t1/state",
    ] {
        let client = s.device("t1", "t1-evil").await;
        assert_refused_publish(client, topic).await;
    }
    let reply = admin
        .request("$aws/things/t2/shadow/get", &json!({"clientToken": "a2"}))
        .await;
    assert_eq!(
        reply.json()["version"].as_u64(),
        Some(t2_version + 1),
        "{reply}"
    );
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_an_unknown_user_and_no_credentials_are_refused() {
    let s = start();
    for (id, how) in [
        ("wrong", Connect::login("t1", "not-the-secret")),
        ("swapped", Connect::login("t1", &s.t2_secret)),
        ("unknown", Connect::login("nobody", "x")),
        ("admin-wrong", Connect::login("admin", "guess")),
        ("anonymous", Connect::default()),
    ] {
        let refused = Mqtt::connect_with(s.port(), id, &how).await;
        assert!(refused.is_err(), "{id} was admitted");
    }
    // A removed device is refused from then on; the admin removes it online.
    let (ok, _, err) = shade_as(
        s.port(),
        "admin",
        ADMIN_PASSWORD,
        &["device", "remove", "t2"],
    );
    assert!(ok, "shade device remove failed: {err}");
    let refused =
        Mqtt::connect_with(s.port(), "t2-gone", &Connect::login("t2", &s.t2_secret)).await;
    assert!(refused.is_err(), "a removed device was admitted");
    // A reader cannot manage devices.
    let (ok, _, err) = shade_as(
        s.port(),
        "viewer",
        VIEWER_PASSWORD,
        &["device", "add", "t3"],
    );
    assert!(!ok, "a reader added a device");
    assert!(err.contains("not authorized"), "{err}");
    s.device("t1", "t1-ok").await;
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_gets_and_subscribes_but_cannot_update_and_an_admin_can() {
    let s = start();
    let mut admin = s.admin("admin-2").await;
    admin.subscribe("$aws/things/+/shadow/get/+").await;
    let version = update(&mut admin, "t1", json!({"colour": "red"}), "a1").await;
    update(&mut admin, "t2", json!({"colour": "blue"}), "a2").await;

    let login = Connect::login("viewer", VIEWER_PASSWORD);
    let mut viewer = Mqtt::connect_with(s.port(), "viewer-1", &login)
        .await
        .expect("the reader connects");
    viewer.subscribe("$aws/things/t1/shadow/get/+").await;
    let got = viewer
        .request("$aws/things/t1/shadow/get", &json!({"clientToken": "v1"}))
        .await;
    assert_eq!(got.json()["state"]["desired"]["colour"], "red", "{got}");
    assert!(!viewer.try_subscribe("shade/things/t2/state").await);
    viewer.subscribe("shade/things/#").await;
    let state = viewer
        .wait_for("t1's retained state", |m| {
            m.topic == "shade/things/t1/state"
        })
        .await;
    assert!(state.retain);

    // The CLI as the reader: list shows only its prefix.
    let (ok, out, err) = shade_as(s.port(), "viewer", VIEWER_PASSWORD, &["list", "--json"]);
    assert!(ok, "shade list as the reader failed: {err}");
    let things: Vec<String> = serde_json::from_str::<serde_json::Value>(&out)
        .expect("json")
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|i| i["thing"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(things, vec!["t1".to_owned()], "{out}");
    // Nothing of t2 arrived through the wildcard meanwhile.
    while let Some(msg) = tokio::time::timeout(
        Duration::from_millis(300),
        viewer.next_or_closed(Duration::from_secs(1)),
    )
    .await
    .ok()
    .flatten()
    {
        assert!(!msg.topic.contains("t2"), "the reader received {msg}");
    }

    assert_refused_publish(viewer, "$aws/things/t1/shadow/update").await;
    let reply = admin
        .request("$aws/things/t1/shadow/get", &json!({"clientToken": "a3"}))
        .await;
    assert_eq!(reply.json()["version"].as_u64(), Some(version), "{reply}");
    // The admin can, through the CLI too.
    let (ok, _, err) = shade_as(
        s.port(),
        "admin",
        ADMIN_PASSWORD,
        &["update", "t1", "--desired", r#"{"colour":"green"}"#],
    );
    assert!(ok, "shade update as the admin failed: {err}");
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_test_ca_works_and_an_untrusted_client_certificate_is_refused() {
    let s = start();
    // A device authenticated by its certificate alone (CN = thing name).
    let cert = s.ca.client("t-cert");
    let how = Connect {
        login: None,
        tls: Some(s.ca.client_config(Some(&cert))),
    };
    let mut by_cert = Mqtt::connect_with(s.tls_port, "t-cert-dev", &how)
        .await
        .expect("a device with a certificate of the CA connects over TLS");
    update(&mut by_cert, "t-cert", json!({"via": "certificate"}), "c1").await;
    assert_refused_publish(by_cert, "$aws/things/t1/shadow/update").await;

    // Client certificates are optional: a device with a secret over TLS.
    let how = Connect {
        login: Some(("t1".to_owned(), s.t1_secret.clone())),
        tls: Some(s.ca.client_config(None)),
    };
    let mut t1 = Mqtt::connect_with(s.tls_port, "t1-tls", &how)
        .await
        .expect("a device with a secret connects over TLS");
    update(&mut t1, "t1", json!({"via": "tls"}), "c2").await;

    // A certificate from another CA: the handshake fails.
    let rogue = TestCa::new("rogue CA");
    let forged = rogue.client("t1");
    let how = Connect {
        login: None,
        tls: Some(s.ca.client_config(Some(&forged))),
    };
    let refused = Mqtt::connect_with(s.tls_port, "rogue", &how).await;
    assert!(
        refused.is_err(),
        "a certificate of an untrusted CA was accepted"
    );
    // A client that does not trust the server's CA refuses the server.
    let how = Connect {
        login: Some(("t1".to_owned(), s.t1_secret.clone())),
        tls: Some(rogue.client_config(None)),
    };
    assert!(Mqtt::connect_with(s.tls_port, "distrustful", &how)
        .await
        .is_err());
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_rate_of_a_thing_get_429_and_other_things_are_served() {
    let s = start();
    let mut admin = s.admin("admin-rate").await;
    update(&mut admin, "t1", json!({"n": 0}), "r0").await;
    admin.subscribe("$aws/things/t1/shadow/get/+").await;
    // The update took one of the thing's 20 tokens; a second refills them,
    // so the burst meets a full bucket however fast the replies came.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    const BURST: usize = 60;
    for i in 0..BURST {
        admin
            .publish_json(
                "$aws/things/t1/shadow/get",
                &json!({"clientToken": format!("g{i}")}),
            )
            .await;
    }
    let mut accepted = 0;
    let mut throttled = 0;
    for i in 0..BURST {
        let reply = admin.reply(&format!("g{i}")).await;
        if reply.topic.ends_with("/accepted") {
            accepted += 1;
        } else {
            assert_eq!(reply.json()["code"], 429, "{reply}");
            assert_eq!(reply.json()["message"], "Too Many Requests", "{reply}");
            throttled += 1;
        }
    }
    assert!(
        throttled > 0,
        "no 429 in a burst of {BURST} gets on one thing"
    );
    assert!(accepted >= 20, "only {accepted} of the burst were served");
    // Another thing, and the same thing a second later, are served.
    let mut t2 = s.device("t2", "t2-rate").await;
    update(&mut t2, "t2", json!({"fine": true}), "t2-1").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = admin
        .request(
            "$aws/things/t1/shadow/get",
            &json!({"clientToken": "later"}),
        )
        .await;
    assert!(reply.topic.ends_with("/accepted"), "{reply}");
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paho_device_over_websocket_tls_is_authenticated_and_confined_to_its_thing() {
    let s = start();
    let args = [
        s.wss_port.to_string(),
        s.ca_path.display().to_string(),
        "t1".to_owned(),
        s.t1_secret.clone(),
        "t2".to_owned(),
    ];
    shade_tests::run_paho_script(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "wss_auth.py",
        &args,
        Duration::from_secs(90),
        || s.server.log(),
    )
    .await;
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt5_device_gets_puback_not_authorized_and_keeps_its_connection() {
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let s = start();
    let mut options = MqttOptions::new("t1-v5", "127.0.0.1", s.port());
    options.set_credentials("t1", &s.t1_secret);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    // Two QoS 1 publishes in order: another thing's update, then our own.
    client
        .publish(
            "$aws/things/t2/shadow/update",
            QoS::AtLeastOnce,
            false,
            "{}",
        )
        .await
        .expect("queue");
    client
        .publish(
            "$aws/things/t1/shadow/update",
            QoS::AtLeastOnce,
            false,
            r#"{"state":{"reported":{"v":5}}}"#,
        )
        .await
        .expect("queue");
    let reasons = tokio::time::timeout(Duration::from_secs(20), async {
        let mut reasons = Vec::new();
        while reasons.len() < 2 {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(ack))) => reasons.push(ack.reason),
                Ok(_) => {}
                Err(e) => panic!("the connection failed: {e}"),
            }
        }
        reasons
    })
    .await
    .expect("two PUBACKs within 20 s");
    assert_eq!(
        reasons,
        vec![PubAckReason::NotAuthorized, PubAckReason::Success]
    );
    s.assert_still_serving().await;
}
