//! Taking a credential away closes the connections it let in, end to end:
//! `shade device remove` and `shade device add --replace` cut off a device
//! that is connected with the old secret (the README: "the old one stops
//! working"), and leave every other connection alone.
//!
//! Real parts: the `shade` binary with an `[auth]` config on a loopback
//! port picked free, device secrets made with `shade device add`, rumqttc
//! clients, and the `shade` CLI as the operator.

use std::time::Duration;

use serde_json::json;
use shade_tests::{aws, password_hash, run_shade, Connect, Mqtt, Server};

const ADMIN_PASSWORD: &str = "admin-pw";

struct Secured {
    _dir: tempfile::TempDir,
    server: Server,
}

fn start() -> Secured {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("broker.toml");
    let text = format!(
        "[auth]\n[[auth.users]]\nname = \"admin\"\npassword_hash = {:?}\nrole = \"admin\"\n",
        password_hash(ADMIN_PASSWORD)
    );
    std::fs::write(&config, text).expect("write config");
    let server = Server::start_with_args(
        &dir.path().join("data"),
        &["--config", config.to_str().expect("utf-8")],
    );
    Secured { _dir: dir, server }
}

impl Secured {
    /// `shade device ARGS` online as the admin: (success, stdout, stderr).
    fn try_device(&self, args: &[&str]) -> (bool, String, String) {
        let broker = format!("mqtt://127.0.0.1:{}", self.server.port());
        let mut all = vec!["device"];
        all.extend_from_slice(args);
        all.extend(["--broker", &broker, "--username", "admin", "--password"]);
        all.push(ADMIN_PASSWORD);
        run_shade(&all, None)
    }

    /// `shade device ARGS` online as the admin; its stdout.
    fn device(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.try_device(args);
        assert!(ok, "shade device {args:?} failed: {err}");
        out
    }

    async fn connect(&self, thing: &str, secret: &str, id: &str) -> Result<Mqtt, String> {
        Mqtt::connect_with(self.server.port(), id, &Connect::login(thing, secret)).await
    }

    /// A connected device whose update of its own shadow is accepted.
    async fn working(&self, thing: &str, secret: &str, id: &str) -> Mqtt {
        let mut client = self
            .connect(thing, secret, id)
            .await
            .unwrap_or_else(|e| panic!("{thing} cannot connect: {e}"));
        client.subscribe(&aws(thing, "update/+")).await;
        let reply = client
            .request(
                &aws(thing, "update"),
                &json!({"state": {"reported": {"id": id}}, "clientToken": id}),
            )
            .await;
        assert!(reply.topic.ends_with("/accepted"), "{reply}");
        client
    }
}

/// The connection is closed within a few seconds (the notices of its own
/// earlier update may arrive first; `next_or_closed` panics when nothing
/// at all happens).
async fn assert_closed(client: &mut Mqtt, what: &str) {
    for _ in 0..10 {
        match client.next_or_closed(Duration::from_secs(10)).await {
            None => return,
            Some(m) if m.topic.ends_with("/documents") || m.topic.ends_with("/accepted") => {}
            Some(m) => panic!("{what}: still open, got {m}"),
        }
    }
    panic!("{what}: still open after 10 messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_device_closes_its_open_connections_and_no_one_elses() {
    let s = start();
    let lamp_secret = s.device(&["add", "lamp"]);
    let fan_secret = s.device(&["add", "fan"]);
    let mut lamp_a = s.working("lamp", &lamp_secret, "lamp-a").await;
    let mut lamp_b = s.working("lamp", &lamp_secret, "lamp-b").await;
    let mut fan = s.working("fan", &fan_secret, "fan-1").await;

    s.device(&["remove", "lamp"]);
    assert_closed(&mut lamp_a, "lamp-a after device remove").await;
    assert_closed(&mut lamp_b, "lamp-b after device remove").await;
    assert!(
        s.connect("lamp", &lamp_secret, "lamp-c").await.is_err(),
        "a removed device logged in again"
    );
    // The fan was not touched: its connection still works.
    let reply = fan
        .request(
            &aws("fan", "update"),
            &json!({"state": {"reported": {"still": true}}, "clientToken": "f2"}),
        )
        .await;
    assert!(reply.topic.ends_with("/accepted"), "{reply}");
    assert!(
        s.server
            .log()
            .contains("closing the connections its old secret let in"),
        "{}",
        s.server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_secret_closes_the_connection_of_the_old_one_and_the_new_one_works() {
    let s = start();
    let old = s.device(&["add", "door"]);
    let mut door = s.working("door", &old, "door-old").await;
    let new = s.device(&["add", "door", "--replace"]);
    assert_ne!(old, new);
    assert_closed(&mut door, "the old secret's connection after --replace").await;
    assert!(
        s.connect("door", &old, "door-again").await.is_err(),
        "the old secret still logs in"
    );
    s.working("door", &new, "door-new").await;
}

#[test]
fn a_device_cannot_take_the_name_of_a_config_user() {
    let s = start();
    // `admin` is a config user: its password is checked first, so a device
    // of that name could never log in with a secret.
    let (ok, _, err) = s.try_device(&["add", "admin"]);
    assert!(!ok, "shade device add admin succeeded");
    assert!(err.contains("config user"), "{err}");
}
