//! The HTTP API end to end: AWS's shadow REST API walked with python's
//! urllib beside a paho MQTT client, HTTP Basic with MQTT's principals
//! (401, 403), HTTPS with the `[tls]` certificate, and the listener's
//! address rules.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use shade_tests::pki::TestCa;
use shade_tests::{free_port, password_hash, run_shade_as, temp_data, Http, Mqtt, Server};

const ADMIN_PASSWORD: &str = "admin-pw";
const READER_PASSWORD: &str = "reader-pw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_rest_api_over_urllib_and_an_mqtt_client_see_each_others_changes() {
    let (_dir, data) = temp_data();
    let server = Server::start_http(&data, &[]);
    shade_tests::run_paho_script(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "http_rest.py",
        &[server.http_port().to_string(), server.port().to_string()],
        Duration::from_secs(120),
        || server.log(),
    )
    .await;
}

fn write_auth_config(dir: &Path) -> std::path::PathBuf {
    let config = format!(
        r#"
[auth]
[[auth.users]]
name = "admin"
password_hash = "{admin}"
role = "admin"

[[auth.users]]
name = "reader"
password_hash = "{reader}"
role = "reader"
prefix = "t1"
"#,
        admin = password_hash(ADMIN_PASSWORD),
        reader = password_hash(READER_PASSWORD),
    );
    let path = dir.join("broker.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_basic_takes_mqtts_principals_401_without_credentials_and_403_beyond_their_things() {
    let (dir, data) = temp_data();
    let config = write_auth_config(dir.path());
    let server = Server::start_http(&data, &["--config", config.to_str().expect("utf-8")]);
    let (ok, t1_secret, err) = run_shade_as(
        server.port(),
        "admin",
        ADMIN_PASSWORD,
        &["device", "add", "t1"],
    );
    assert!(ok, "shade device add t1: {err}");
    let base = Http::new(&server.http_base());
    let admin = base.basic("admin", ADMIN_PASSWORD);
    let reader = base.basic("reader", READER_PASSWORD);
    let device = base.basic("t1", &t1_secret);
    let update = json!({"state": {"desired": {"on": true}}});

    tokio::task::spawn_blocking(move || {
        // No credentials: 401 with Basic's challenge; the page's own
        // requests get no challenge (it shows its form instead).
        let r = base.get("/things/t1/shadow");
        assert_eq!(r.status, 401, "{:?}", r.json());
        assert_eq!(r.json()["code"], 401);
        assert!(
            r.challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Basic")),
            "{r:?}"
        );
        let page = base
            .with_header("x-shade-page", "1")
            .get("/things/t1/shadow");
        assert_eq!(page.status, 401);
        assert_eq!(page.challenge, None);
        assert_eq!(base.basic("admin", "wrong").get("/things").status, 401);
        assert_eq!(base.basic("nobody", "x").get("/things").status, 401);
        assert_eq!(
            base.basic("t1", "not-its-secret")
                .get("/things/t1/shadow")
                .status,
            401
        );

        // An admin reads and writes every thing.
        for thing in ["t1", "t2"] {
            let r = admin.post(&format!("/things/{thing}/shadow"), &update);
            assert_eq!(r.status, 200, "admin POST {thing}: {:?}", r.json());
        }
        assert_eq!(admin.get("/whoami").json()["role"], "admin");

        // A reader limited to t1 reads t1, nothing else, and writes nothing.
        assert_eq!(reader.get("/things/t1/shadow").status, 200);
        let r = reader.post("/things/t1/shadow", &update);
        assert_eq!((r.status, r.json()["code"].clone()), (403, json!(403)));
        assert_eq!(reader.delete("/things/t1/shadow").status, 403);
        assert_eq!(reader.get("/things/t2/shadow").status, 403);
        assert_eq!(reader.get("/things/t2/history").status, 403);
        let listed = reader.get("/things").json();
        let things: Vec<_> = listed["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["thing"].clone())
            .collect();
        assert_eq!(
            things,
            vec![json!("t1")],
            "the reader's list is its prefix: {listed}"
        );
        assert_eq!(reader.get("/whoami").json()["role"], "reader");

        // A device: its own thing only, and no fleet queries.
        let r = device.post(
            "/things/t1/shadow",
            &json!({"state": {"reported": {"on": true}}}),
        );
        assert_eq!(r.status, 200, "{:?}", r.json());
        assert_eq!(device.get("/things/t1/shadow").status, 200);
        assert_eq!(device.get("/things/t2/shadow").status, 403);
        assert_eq!(device.post("/things/t2/shadow", &update).status, 403);
        assert_eq!(device.get("/things").status, 403);
        assert_eq!(device.get("/whoami").json()["role"], "device");
    })
    .await
    .expect("the HTTP checks");

    // The MQTT side saw the device's report.
    let mut mqtt = Mqtt::connect_with(
        server.port(),
        "http-auth-check",
        &shade_tests::Connect::login("admin", ADMIN_PASSWORD),
    )
    .await
    .expect("admin connects over MQTT");
    mqtt.subscribe("$aws/things/t1/shadow/get/+").await;
    let doc = mqtt
        .request("$aws/things/t1/shadow/get", &json!({"clientToken": "g"}))
        .await
        .json();
    assert_eq!(doc["state"]["reported"], json!({"on": true}), "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_api_with_the_tls_certificate_when_http_tls_is_on() {
    let (dir, data) = temp_data();
    let ca = TestCa::new("shade http test CA");
    let (cert, key) = ca.server().write_pem(dir.path(), "server");
    let ca_pem = ca.write_pem(dir.path(), "ca");
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!("[tls]\ncert = {cert:?}\nkey = {key:?}\n\n[http]\ntls = true\n"),
    )
    .expect("write config");
    let server = Server::start_http(&data, &["--config", config.to_str().expect("utf-8")]);
    assert!(
        server
            .log()
            .contains(&format!("http=https://127.0.0.1:{}", server.http_port())),
        "the ready line names the HTTPS address:\n{}",
        server.log()
    );
    let port = server.http_port();
    let pem = std::fs::read(&ca_pem).expect("read the CA");
    tokio::task::spawn_blocking(move || {
        let https = Http::https(port, &pem);
        let r = https.post(
            "/things/secure/shadow",
            &json!({"state": {"reported": {"ok": 1}}}),
        );
        assert_eq!(r.status, 200, "{:?}", r.json());
        assert_eq!(
            https.get("/things/secure/shadow").json()["state"]["reported"]["ok"],
            1
        );
        // Plain HTTP on the HTTPS port gets no answer.
        let plain = Http::new(&format!("http://127.0.0.1:{port}"));
        assert!(plain.try_request("GET", "/things", None).is_err());
    })
    .await
    .expect("the HTTPS checks");
}

/// Runs `shade serve` with `args` and waits (bounded) for it to exit.
fn serve_exits(data: &Path, args: &[&str]) -> (bool, String) {
    let log = data.with_extension("log");
    let mut child = Command::new(shade_tests::shade_binary())
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data")
        .arg(data)
        .args(args)
        .stderr(std::fs::File::create(&log).expect("log file"))
        .stdout(Stdio::null())
        .spawn()
        .expect("run shade serve");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (
                status.success(),
                std::fs::read_to_string(&log).unwrap_or_default(),
            );
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "shade serve {args:?} kept running:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_http_address_that_is_taken_or_open_without_auth_stops_shade_serve_with_the_reason() {
    let (_dir, data) = temp_data();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (ok, log) = serve_exits(&data, &["--http", &addr]);
    assert!(!ok, "{log}");
    assert!(
        log.contains(&format!("cannot listen for HTTP on {addr}")),
        "{log}"
    );

    let (ok, log) = serve_exits(&data, &["--http", "0.0.0.0:0"]);
    assert!(!ok, "{log}");
    assert!(
        log.contains("0.0.0.0:0 is reachable from other machines"),
        "{log}"
    );

    let (ok, log) = serve_exits(&data, &["--http", "nowhere"]);
    assert!(!ok, "{log}");
    assert!(log.contains("--http"), "{log}");
}
