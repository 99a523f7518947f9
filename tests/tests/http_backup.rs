//! `GET /backup` end to end: the body is the file `shade restore` takes,
//! read in several chunks, with every shadow and device secret; only a full
//! admin gets one (a reader, a prefix-limited admin and a device get 403,
//! a stranger 401); and nothing stays waiting on the broker once the body
//! is sent.
//!
//! Real parts: the `shade` binary with an `[auth]` config on loopback
//! ports picked free, a blocking HTTP client, rumqttc, redb on disk.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use shade_tests::{password_hash, run_shade, run_shade_as, Connect, Http, Mqtt, Server};

const ADMIN_PASSWORD: &str = "admin-pw";
/// Shadows written, with enough in each that the backup takes several
/// chunks of the protocol's 64 KiB.
const SHADOWS: usize = 40;
const CHUNK: usize = 64 * 1024;

fn config(dir: &Path) -> String {
    let path = dir.join("broker.toml");
    let user = |name: &str, role: &str, prefix: &str| {
        format!(
            "[[auth.users]]\nname = {name:?}\npassword_hash = {:?}\nrole = {role:?}\nprefix = {prefix:?}\n",
            password_hash(&format!("{name}-pw"))
        )
    };
    let text = format!(
        "[auth]\n{}{}{}",
        user("admin", "admin", ""),
        user("viewer", "reader", ""),
        user("lamps", "admin", "lamp-"),
    );
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8").to_owned()
}

/// Waits (bounded) until the data directory's `backups/` holds no file.
fn wait_no_waiting_backup(data: &Path) -> Vec<String> {
    let dir = data.join("backups");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_backup_is_a_file_shade_restore_takes_and_only_full_admins_get_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let data = dir.path().join("data");
    let server = Server::start_http(&data, &["--config", &config]);
    let http = Http::new(&server.http_base());
    let admin = http.basic("admin", ADMIN_PASSWORD);
    let pad = "x".repeat(2_000);
    for i in 0..SHADOWS {
        let reply = admin.post(
            &format!("/things/lamp-{i:03}/shadow"),
            &json!({"state": {"desired": {"level": i, "pad": pad}}}),
        );
        assert_eq!(
            reply.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    let (ok, secret, err) = run_shade_as(
        server.port(),
        "admin",
        ADMIN_PASSWORD,
        &["device", "add", "pump"],
    );
    assert!(ok, "device add: {err}");
    let secret = secret.trim().to_owned();

    // Who may not: it holds every device's secret hash.
    assert_eq!(http.get("/backup").status, 401);
    for (name, password) in [
        ("viewer", "viewer-pw"),
        ("lamps", "lamps-pw"),
        ("pump", secret.as_str()),
    ] {
        let reply = http.basic(name, password).get("/backup");
        assert_eq!(reply.status, 403, "{name} got a backup");
        assert_eq!(reply.json()["code"], 403, "{name}");
    }

    let reply = admin.get("/backup");
    assert_eq!(
        reply.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        reply.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert!(
        reply.body.len() > 2 * CHUNK,
        "a backup of {} bytes is no test of the chunks",
        reply.body.len()
    );
    let left = wait_no_waiting_backup(&data);
    assert!(
        left.is_empty(),
        "still waiting after the body was sent: {left:?}"
    );

    let file = dir.path().join("over-http.backup");
    std::fs::write(&file, &reply.body).expect("write the backup");
    let restored = dir.path().join("restored");
    let utf8 = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let (ok, said, err) = run_shade(&["restore", &utf8(&file), "--data", &utf8(&restored)], None);
    assert!(ok, "shade restore of the HTTP backup failed: {err}");
    assert!(
        said.contains(&format!("{SHADOWS} shadows, 1 device,")),
        "{said}"
    );
    drop(server);

    let server = Server::start_http(&restored, &["--config", &config]);
    let admin = Http::new(&server.http_base()).basic("admin", ADMIN_PASSWORD);
    for i in [0, 17, SHADOWS - 1] {
        let reply = admin.get(&format!("/things/lamp-{i:03}/shadow"));
        assert_eq!(reply.status, 200, "lamp-{i:03} on the restored broker");
        assert_eq!(reply.json()["state"]["desired"]["level"], i, "lamp-{i:03}");
    }
    Mqtt::connect_with(server.port(), "pump", &Connect::login("pump", &secret))
        .await
        .unwrap_or_else(|e| panic!("pump cannot connect to the restored broker: {e}"));
}
