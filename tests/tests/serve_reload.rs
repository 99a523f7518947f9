//! What SIGHUP changes in a running `shade serve`, end to end:
//!
//! - revoking device certificates: with `[tls] crl` a client certificate
//!   the CRL names is refused, and SIGHUP reads the CRL again, so an
//!   operator revokes a device without a restart;
//! - the config users: SIGHUP reads `[[auth.users]]` again, so an operator
//!   adds or removes a person without a restart, and a removed person's
//!   open connection is closed.
//!
//! A file that does not load leaves the previous settings in force.
//!
//! Real parts: the `shade` binary on loopback ports picked free, a test CA,
//! its certificates and CRLs made here with rcgen, rumqttc clients over
//! TLS, and the `shade` CLI as the operator.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use shade_tests::mqtt::{Connect, Mqtt};
use shade_tests::pki::{Issued, TestCa};
use shade_tests::server::Server;
use shade_tests::{aws, free_port, password_hash, run_shade_as};

/// A config with a `tls` listener whose client certificates are checked
/// against `ca.pem` and the CRL at `crl`.
fn write_config(dir: &Path, ca: &TestCa, tls_port: u16, crl: &Path) -> std::path::PathBuf {
    let tls = ca.tls_section(dir);
    let config = format!(
        r#"
[listen]
tls = "127.0.0.1:{tls_port}"

{tls}crl = {crl:?}

[auth]
"#
    );
    let path = dir.join("broker.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// A server whose `tls` listener checks client certificates of `ca`
/// against a CRL file holding `crl_pem`: (server, TLS port, CRL path,
/// config path).
fn start_with_crl(
    dir: &Path,
    ca: &TestCa,
    crl_pem: &str,
) -> (Server, u16, std::path::PathBuf, std::path::PathBuf) {
    let crl = dir.join("revoked.pem");
    std::fs::write(&crl, crl_pem).expect("write CRL");
    let tls_port = free_port();
    let config = write_config(dir, ca, tls_port, &crl);
    let server = Server::start_with_args(
        &dir.join("data"),
        &["--config", config.to_str().expect("utf-8")],
    );
    (server, tls_port, crl, config)
}

fn hangup(server: &Server) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP failed");
}

/// Connects a device by its certificate alone over TLS.
async fn connect(ca: &TestCa, port: u16, cert: &Issued, id: &str) -> Result<Mqtt, String> {
    let how = Connect {
        login: None,
        tls: Some(ca.client_config(Some(cert))),
    };
    Mqtt::connect_with(port, id, &how).await
}

/// The device updates its own shadow and gets `accepted`.
async fn assert_serves(ca: &TestCa, port: u16, cert: &Issued, thing: &str) {
    let mut client = connect(ca, port, cert, &format!("{thing}-ok"))
        .await
        .unwrap_or_else(|e| panic!("{thing}, not revoked, cannot connect: {e}"));
    client.subscribe(&aws(thing, "update/+")).await;
    let reply = client
        .request(
            &aws(thing, "update"),
            &json!({"state": {"reported": {"up": true}}, "clientToken": thing}),
        )
        .await;
    assert!(reply.topic.ends_with("/accepted"), "{reply}");
}

/// Waits (bounded) until the server's log holds `line` `count` times.
fn wait_for_log(server: &Server, line: &str, count: usize) {
    let start = Instant::now();
    while server.log().matches(line).count() < count {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {line:?} in the log after 10 s:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_and_sighup_revokes_more_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("shade test CA");
    let lamp = ca.client_with_serial("lamp", 101);
    let fan = ca.client_with_serial("fan", 102);
    let door = ca.client_with_serial("door", 103);
    let (server, tls_port, crl, config) = start_with_crl(dir.path(), &ca, &ca.crl_pem(1, &[101]));

    // The CRL names the lamp's certificate: refused at the handshake.
    assert!(
        connect(&ca, tls_port, &lamp, "lamp-1").await.is_err(),
        "a revoked certificate was accepted"
    );
    assert_serves(&ca, tls_port, &fan, "fan").await;

    // The operator revokes the fan too and signals the server.
    std::fs::write(&crl, ca.crl_pem(2, &[101, 102])).expect("write CRL");
    hangup(&server);
    wait_for_log(&server, "TLS files reloaded", 1);
    assert!(
        connect(&ca, tls_port, &fan, "fan-2").await.is_err(),
        "a certificate revoked by a reloaded CRL was accepted"
    );
    assert!(connect(&ca, tls_port, &lamp, "lamp-2").await.is_err());
    assert_serves(&ca, tls_port, &door, "door").await;

    // A broken CRL (a half-written file) is not loaded: the previous one
    // stays in force, and the listener keeps serving.
    std::fs::write(&crl, "-----BEGIN X509 CRL-----\nnot base64\n").expect("write CRL");
    hangup(&server);
    wait_for_log(&server, "TLS files not reloaded", 1);
    assert!(
        connect(&ca, tls_port, &fan, "fan-3").await.is_err(),
        "a broken CRL let a revoked certificate back in"
    );
    assert_serves(&ca, tls_port, &door, "door").await;

    // A typo in the config file does not hold up a revocation.
    std::fs::write(&config, "[listen\n").expect("write config");
    std::fs::write(&crl, ca.crl_pem(3, &[101, 102, 103])).expect("write CRL");
    hangup(&server);
    wait_for_log(&server, "TLS files reloaded", 2);
    assert!(
        server.log().contains("config not reloaded"),
        "{}",
        server.log()
    );
    assert!(
        connect(&ca, tls_port, &door, "door-2").await.is_err(),
        "a broken config file held up a revocation"
    );
}

#[test]
fn a_crl_that_cannot_be_used_stops_the_start_naming_the_file_and_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("shade test CA");
    let other = TestCa::new("another CA");
    let garbage = "-----BEGIN X509 CRL-----\nMIIBabc\n-----END X509 CRL-----\n".to_owned();
    for (name, content, why) in [
        ("missing-crl.pem", None, "certificate revocation list"),
        (
            "garbage-crl.pem",
            Some(garbage),
            "certificate revocation list",
        ),
        // Another CA's CRL would refuse every device certificate.
        (
            "other-ca-crl.pem",
            Some(other.crl_pem(1, &[])),
            "not by the client CA",
        ),
    ] {
        let crl = dir.path().join(name);
        if let Some(content) = content {
            std::fs::write(&crl, content).expect("write CRL");
        }
        let config = write_config(dir.path(), &ca, free_port(), &crl);
        let log = dir.path().join(format!("{name}.log"));
        let mut child = Command::new(shade_tests::shade_binary())
            .args(["serve", "--config", config.to_str().expect("utf-8")])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--http", "off"])
            .arg("--data")
            .arg(dir.path().join("data"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("run shade serve");
        // Bounded: a server that starts anyway is killed, and fails the test.
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            status.is_some_and(|s| !s.success()),
            "shade serve started with {name}: {stderr}"
        );
        assert!(
            stderr.contains(name) && stderr.contains(why),
            "{name}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_crls_of_the_ca_in_one_file_the_newer_applies_in_either_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("shade test CA");
    let fan = ca.client_with_serial("fan", 102);
    let door = ca.client_with_serial("door", 103);
    let (older, newer) = (ca.crl_pem(1, &[101]), ca.crl_pem(2, &[101, 102]));
    // Appended, as an operator might: the newer CRL after the older one.
    let (server, tls_port, crl, _) = start_with_crl(dir.path(), &ca, &format!("{older}{newer}"));
    assert!(
        connect(&ca, tls_port, &fan, "fan-1").await.is_err(),
        "the older CRL, first in the file, let in what the newer revokes"
    );
    assert_serves(&ca, tls_port, &door, "door").await;
    std::fs::write(&crl, format!("{newer}{older}")).expect("write CRL");
    hangup(&server);
    wait_for_log(&server, "TLS files reloaded", 1);
    assert!(connect(&ca, tls_port, &fan, "fan-2").await.is_err());
    assert_serves(&ca, tls_port, &door, "door").await;
}

/// A config with authentication on and these `(name, password)` admins.
fn users_config(path: &Path, admins: &[(&str, &str)]) {
    let mut text = String::from("[auth]\n");
    for (name, password) in admins {
        text.push_str(&format!(
            "[[auth.users]]\nname = {name:?}\npassword_hash = {:?}\nrole = \"admin\"\n",
            password_hash(password)
        ));
    }
    std::fs::write(path, text).expect("write config");
}

/// `shade list` online as `user`: whether the service let it in.
fn lists_as(server: &Server, user: &str, password: &str) -> (bool, String) {
    let (ok, _, err) = run_shade_as(server.port(), user, password, &["list"]);
    (ok, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_users_closes_removed_ones_and_a_broken_config_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("broker.toml");
    users_config(&config, &[("ops", "ops-pw")]);
    let server = Server::start_with_args(
        &dir.path().join("data"),
        &["--config", config.to_str().expect("utf-8")],
    );
    let (ok, err) = lists_as(&server, "ops", "ops-pw");
    assert!(ok, "ops, a config user, cannot list: {err}");
    assert!(
        !lists_as(&server, "ana", "ana-pw").0,
        "an unknown user got in"
    );
    let login = Connect::login("ops", "ops-pw");
    let mut ops = Mqtt::connect_with(server.port(), "ops-open", &login)
        .await
        .expect("ops connects");

    // The operator replaces ops by ana in the file and signals the server.
    users_config(&config, &[("ana", "ana-pw")]);
    hangup(&server);
    wait_for_log(&server, "config users reloaded", 1);
    assert!(
        ops.next_or_closed(Duration::from_secs(10)).await.is_none(),
        "ops's open connection outlived its removal"
    );
    let (ok, err) = lists_as(&server, "ana", "ana-pw");
    assert!(ok, "ana, added by the reload, cannot list: {err}");
    assert!(
        !lists_as(&server, "ops", "ops-pw").0,
        "ops, removed by the reload, still got in"
    );

    // A config that does not parse changes nothing.
    std::fs::write(&config, "[auth\n").expect("write config");
    hangup(&server);
    wait_for_log(&server, "config not reloaded", 1);
    let (ok, err) = lists_as(&server, "ana", "ana-pw");
    assert!(ok, "a broken config locked ana out: {err}");
    assert!(!lists_as(&server, "ops", "ops-pw").0);
}
