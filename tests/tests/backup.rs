//! `shade backup` and `shade restore` end to end: a backup taken over MQTT
//! while updates go on is one consistent state, and a broker restored from
//! it serves every shadow and lets in every device with its old secret;
//! agents that were synced with the old broker converge with the restored
//! one without losing what they had not sent yet.
//!
//! Real parts: the `shade` binary with an `[auth]` config on loopback
//! ports picked free, `shade-agent` processes, rumqttc clients, redb on
//! disk.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use shade_tests::agent::{
    report, state, wait_converged, write_agent_config, Agent, AgentSpec, Broker, Dashboard,
};
use shade_tests::{
    aws, password_hash, run_shade, run_shade_as, Connect, Mqtt, Server, START_TIMEOUT,
};

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-pw";
/// Shadows written before the backup.
const SHADOWS: usize = 60;

fn auth_config(dir: &Path) -> String {
    let config = dir.join("broker.toml");
    let text = format!(
        "[auth]\n[[auth.users]]\nname = \"{ADMIN}\"\npassword_hash = {:?}\nrole = \"admin\"\n\
         [[auth.users]]\nname = \"viewer\"\npassword_hash = {:?}\nrole = \"reader\"\n",
        password_hash(ADMIN_PASSWORD),
        password_hash("viewer-pw"),
    );
    std::fs::write(&config, text).expect("write config");
    config.to_str().expect("utf-8").to_owned()
}

async fn admin(port: u16, id: &str) -> Mqtt {
    Mqtt::connect_with(port, id, &Connect::login(ADMIN, ADMIN_PASSWORD))
        .await
        .unwrap_or_else(|e| panic!("the admin cannot connect: {e}"))
}

/// `shade restore BACKUP --data DIR`: (success, stdout, stderr).
fn restore(backup: &Path, dir: &Path) -> (bool, String, String) {
    let utf8 = |p: &Path| p.to_str().expect("utf-8").to_owned();
    run_shade(&["restore", &utf8(backup), "--data", &utf8(dir)], None)
}

/// Updates `thing` and waits for its `accepted`.
async fn update(c: &mut Mqtt, thing: &str, state: Value, token: &str) {
    let reply = c
        .request(
            &aws(thing, "update"),
            &json!({ "state": state, "clientToken": token }),
        )
        .await;
    assert!(reply.topic.ends_with("/accepted"), "{reply}");
}

/// The `state` and `version` of `thing`'s shadow, or `None` (a 404).
async fn get(c: &mut Mqtt, thing: &str) -> Option<Value> {
    let token = format!("get-{thing}");
    let reply = c
        .request(&aws(thing, "get"), &json!({ "clientToken": token }))
        .await;
    let doc = reply.json();
    if reply.topic.ends_with("/rejected") {
        assert_eq!(doc["code"], 404, "{doc}");
        return None;
    }
    Some(json!({ "state": doc["state"], "version": doc["version"] }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_shadow_and_device_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = auth_config(dir.path());
    let server = Server::start_with_args(&dir.path().join("data"), &["--config", &config]);
    let port = server.port();
    let mut c = admin(port, "backup-writer").await;
    c.subscribe("$aws/things/+/shadow/#").await;
    for i in 0..SHADOWS {
        let thing = format!("lamp-{i:03}");
        update(
            &mut c,
            &thing,
            json!({"desired": {"level": i}}),
            &format!("u{i}"),
        )
        .await;
    }
    let mut secrets = Vec::new();
    for thing in ["pump-1", "pump-2"] {
        let (ok, out, err) = run_shade_as(port, ADMIN, ADMIN_PASSWORD, &["device", "add", thing]);
        assert!(ok, "device add {thing}: {err}");
        secrets.push((thing, out));
    }

    // Load: `first-N` then `second-N`, one after the other (new things,
    // under the per-thing rate), so every committed state holds as many
    // of each, or one `first` more.
    let load_port = port;
    let load = tokio::spawn(async move {
        let mut c = admin(load_port, "backup-load").await;
        c.subscribe("$aws/things/+/shadow/update/+").await;
        for n in 0..100_000u64 {
            for side in ["first", "second"] {
                let thing = format!("{side}-{n:05}");
                update(&mut c, &thing, json!({"reported": {"n": n}}), &thing).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = dir.path().join("under-load.backup");
    let out_arg = out.to_str().expect("utf-8").to_owned();
    let (ok, said, err) = tokio::task::spawn_blocking(move || {
        run_shade_as(load_port, ADMIN, ADMIN_PASSWORD, &["backup", &out_arg])
    })
    .await
    .expect("the backup ran");
    assert!(ok, "shade backup failed: {err}");
    assert!(said.contains("2 devices"), "{said}");
    let backed_up: usize = said
        .strip_prefix("backed up ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of shadows in {said:?}"));
    assert!(!load.is_finished(), "the load ended before the backup did");
    load.abort();

    // A reader may not take one: it holds every device's secret hash.
    let refused = dir.path().join("reader.backup");
    let (ok, _, err) = run_shade_as(
        port,
        "viewer",
        "viewer-pw",
        &["backup", refused.to_str().expect("utf-8")],
    );
    assert!(!ok && err.contains("not authorized"), "{err}");
    assert!(!refused.exists());

    // What the old broker holds now, for the shadows written before.
    let mut before = Vec::new();
    for i in 0..SHADOWS {
        before.push(get(&mut c, &format!("lamp-{i:03}")).await);
    }
    drop(c);

    let restored = dir.path().join("restored");
    let (ok, said, err) = restore(&out, &restored);
    assert!(ok, "shade restore failed: {err}");
    assert!(said.contains("b:restored-"), "{said}");
    // Not into a directory that holds anything.
    let (ok, _, err) = restore(&out, &restored);
    assert!(!ok && err.contains("not empty"), "{err}");

    let server2 = Server::start_with_args(&restored, &["--config", &config]);
    let mut c = admin(server2.port(), "backup-reader").await;
    c.subscribe("$aws/things/+/shadow/#").await;
    for (i, old) in before.iter().enumerate() {
        let thing = format!("lamp-{i:03}");
        assert_eq!(&get(&mut c, &thing).await, old, "{thing} after the restore");
    }
    let count = |prefix: &str| -> usize {
        let (ok, out, err) = run_shade_as(
            server2.port(),
            ADMIN,
            ADMIN_PASSWORD,
            &["count", "--prefix", prefix, "--json"],
        );
        assert!(ok, "{err}");
        let v: Value = serde_json::from_str(&out).expect("count JSON");
        v["count"].as_u64().expect("a count") as usize
    };
    let (f, s) = (count("first-"), count("second-"));
    assert!(f > 0, "the backup holds none of the load");
    assert!(
        s == f || s + 1 == f,
        "not one committed state: first {f}, second {s}"
    );
    assert_eq!(backed_up, SHADOWS + f + s);

    for (thing, secret) in &secrets {
        let mut device = Mqtt::connect_with(server2.port(), thing, &Connect::login(thing, secret))
            .await
            .unwrap_or_else(|e| panic!("{thing} cannot connect to the restored broker: {e}"));
        device.subscribe(&aws(thing, "update/+")).await;
        update(&mut device, thing, json!({"reported": {"up": true}}), "dev").await;
    }
    let wrong =
        Mqtt::connect_with(server2.port(), "pump-1", &Connect::login("pump-1", "wrong")).await;
    assert!(wrong.is_err(), "a wrong secret let pump-1 in");

    // The restored broker writes under its new name.
    update(
        &mut c,
        "lamp-000",
        json!({"desired": {"level": 99}}),
        "after",
    )
    .await;
    let (ok, history, err) = run_shade_as(
        server2.port(),
        ADMIN,
        ADMIN_PASSWORD,
        &["history", "lamp-000", "--json"],
    );
    assert!(ok, "{err}");
    let history: Value = serde_json::from_str(&history).expect("history JSON");
    let replicas: Vec<&str> = history
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|e| e["replica"].as_str())
        .collect();
    assert_eq!(replicas.len(), 2, "{history}");
    assert_eq!(replicas[0], "b:local");
    assert!(replicas[1].starts_with("b:restored-"), "{history}");

    // A stopped broker's data backs up too, and holds the same shadows.
    let mut server2 = server2;
    drop(c);
    server2.terminate();
    let offline = dir.path().join("offline.backup");
    let (ok, said, err) = run_shade(
        &[
            "backup",
            "--data",
            restored.to_str().expect("utf-8"),
            offline.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(ok, "offline backup failed: {err}");
    let shadows = backed_up + 2;
    assert!(said.contains(&format!("{shadows} shadows")), "{said}");
}

/// An agent synced with the old broker, whose later writes (and a
/// dashboard's) the backup never saw, and which changed more while both
/// were down: with the restored broker it converges, loses nothing, and
/// takes the restored broker's new writes (which a broker under its old
/// node name would make with dots the agent holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_synced_with_the_old_broker_converge_with_the_restored_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_agent_config(dir.path(), "");
    let mut broker = Broker::start(&dir.path().join("old"));
    let port = broker.port();
    let data = dir.path().join("agent");
    let mut agent = Agent::start(&data, port, AgentSpec::thing("kiosk").config(&config));
    agent.wait_connected(START_TIMEOUT).await;
    report(&data, &["a=1"]).await;
    let mut dash = Dashboard::connect(port, "dash-old").await;
    wait_converged(&mut dash, &data, "kiosk", Duration::from_secs(15)).await;

    let backup = dir.path().join("kiosk.backup");
    let broker_url = broker.url();
    let (ok, _, err) = run_shade(
        &[
            "backup",
            "--broker",
            &broker_url,
            backup.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(ok, "shade backup failed: {err}");

    // After the backup: the agent reports b, a dashboard desires mode.
    report(&data, &["b=2"]).await;
    dash.update("kiosk", json!({"desired": {"mode": "eco"}}))
        .await;
    wait_converged(&mut dash, &data, "kiosk", Duration::from_secs(15)).await;
    drop(dash);

    // Both go down; the agent changes more while it is offline.
    agent.terminate();
    broker.terminate();
    report(&data, &["c=3"]).await;
    assert!(state(&data).await["pending"].as_u64() > Some(0));

    let restored = dir.path().join("restored");
    let (ok, _, err) = restore(&backup, &restored);
    assert!(ok, "shade restore failed: {err}");
    let _broker = Broker::start_on(&restored, port, None);
    // The restored broker writes before the agent is back: under the old
    // node name this write would take the dot of `mode`, which the agent
    // holds, and each side would skip the other's value as seen.
    let mut dash = Dashboard::connect(port, "dash-restored").await;
    dash.update("kiosk", json!({"desired": {"fan": "on"}}))
        .await;
    agent.restart();
    agent.wait_connected(START_TIMEOUT).await;

    let (agent_state, doc) =
        wait_converged(&mut dash, &data, "kiosk", Duration::from_secs(15)).await;
    assert_eq!(
        doc["state"]["reported"],
        json!({"a": 1, "b": 2, "c": 3}),
        "{doc}"
    );
    assert_eq!(
        doc["state"]["desired"],
        json!({"mode": "eco", "fan": "on"}),
        "{doc}"
    );
    assert_eq!(
        agent_state["state"]["desired"],
        json!({"mode": "eco", "fan": "on"}),
        "{agent_state}"
    );
    assert_eq!(agent_state["pending"], 0, "{agent_state}");
}

/// `shade export` of one installation and `shade import` into another:
/// every shadow's desired and reported, named shadows too, and every
/// device with its secret; an import twice changes nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_moves_shadows_and_device_secrets_to_another_installation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = auth_config(dir.path());
    let mut old = Server::start_with_args(&dir.path().join("old"), &["--config", &config]);
    let new = Server::start_with_args(&dir.path().join("new"), &["--config", &config]);
    let mut c = admin(old.port(), "export-writer").await;
    c.subscribe("$aws/things/+/shadow/#").await;
    update(
        &mut c,
        "lamp",
        json!({"desired": {"on": true}, "reported": {"on": false}}),
        "a",
    )
    .await;
    update(&mut c, "pump", json!({"reported": {"rpm": 1200}}), "b").await;
    let named = "$aws/things/lamp/shadow/name/config/update";
    let reply = c
        .request(
            named,
            &json!({"state": {"desired": {"fw": "2.1"}}, "clientToken": "n"}),
        )
        .await;
    assert!(reply.topic.ends_with("/accepted"), "{reply}");
    let (ok, secret, err) = run_shade_as(
        old.port(),
        ADMIN,
        ADMIN_PASSWORD,
        &["device", "add", "pump"],
    );
    assert!(ok, "{err}");
    drop(c);

    let file = dir.path().join("fleet.json");
    let file_arg = file.to_str().expect("utf-8");
    let (ok, said, err) = run_shade_as(
        old.port(),
        ADMIN,
        ADMIN_PASSWORD,
        &["export", "--json", file_arg],
    );
    assert!(ok, "shade export failed: {err}");
    assert_eq!(
        said,
        format!("exported 3 shadows and 1 device to {file_arg}")
    );
    let exported: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the export")).expect("JSON");

    // The stopped installation exports the same shadows offline.
    old.terminate();
    let (ok, offline, err) = run_shade(
        &["export", "--data", old.data_dir().to_str().expect("utf-8")],
        None,
    );
    assert!(ok, "offline export failed: {err}");
    let offline: Value = serde_json::from_str(&offline).expect("JSON on stdout");
    assert_eq!(offline["shadows"], exported["shadows"]);
    assert_eq!(offline["devices"], exported["devices"]);

    for round in [
        "imported 3 shadows and 1 device",
        "imported 3 shadows and 0 devices (1 device there already kept its secret)",
    ] {
        let (ok, said, err) =
            run_shade_as(new.port(), ADMIN, ADMIN_PASSWORD, &["import", file_arg]);
        assert!(ok, "shade import failed: {err}");
        assert_eq!(said, round);
    }
    let mut c = admin(new.port(), "export-reader").await;
    c.subscribe("$aws/things/+/shadow/#").await;
    let lamp = get(&mut c, "lamp").await.expect("lamp imported");
    assert_eq!(
        lamp["state"],
        json!({"desired": {"on": true}, "reported": {"on": false}, "delta": {"on": true}})
    );
    assert_eq!(
        get(&mut c, "pump").await.expect("pump imported")["state"]["reported"],
        json!({"rpm": 1200})
    );
    let reply = c
        .request(
            "$aws/things/lamp/shadow/name/config/get",
            &json!({"clientToken": "g"}),
        )
        .await;
    assert_eq!(
        reply.json()["state"]["desired"],
        json!({"fw": "2.1"}),
        "{reply}"
    );
    let mut device = Mqtt::connect_with(new.port(), "pump", &Connect::login("pump", &secret))
        .await
        .unwrap_or_else(|e| panic!("pump cannot connect to the new installation: {e}"));
    device.subscribe(&aws("pump", "update/+")).await;
    update(
        &mut device,
        "pump",
        json!({"reported": {"rpm": 0}}),
        "moved",
    )
    .await;
}
