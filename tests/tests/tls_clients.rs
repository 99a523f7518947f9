//! The `shade` CLI and `shade-agent` as TLS clients, end to end: a real
//! `shade serve` with `[auth]`, `[tls]` (a server certificate of a test CA
//! made here with rcgen, `client_ca` = that CA) and a `tls` listener on a
//! free loopback port; the real binaries connect with `mqtts://127.0.0.1`,
//! so the server name checked is an IP address (a SAN of the test server
//! certificate).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use shade_tests::agent::{self, Agent, AgentSpec, CliOutput, Deadline, CLI_TIMEOUT};
use shade_tests::pki::TestCa;
use shade_tests::{free_port, password_hash, shade_binary, Server};

const ADMIN_PASSWORD: &str = "admin-over-tls";
/// How long an agent may take to sync a change over TLS: debug builds on
/// two cores, other tests beside.
const SYNC_WITHIN: Duration = Duration::from_secs(30);
/// Between two `shade get` polls (each one is a process and a handshake).
const GET_EVERY: Duration = Duration::from_millis(200);

/// A `shade serve` with authentication and a TLS listener, and the PEM
/// files of its test CA in `dir`.
struct TlsBroker {
    dir: tempfile::TempDir,
    server: Server,
    tls_port: u16,
    ca: TestCa,
    ca_pem: PathBuf,
}

/// Runs `shade ARGS...`, bounded by [`CLI_TIMEOUT`].
async fn shade(args: &[OsString], stdin: Option<&str>) -> CliOutput {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(shade_binary())
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("SHADE_USERNAME")
        .env_remove("SHADE_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn shade");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.expect("write stdin");
    }
    drop(input);
    match tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => CliOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("shade {args:?}: {e}"),
        Err(_) => panic!("shade {args:?} did not exit within {CLI_TIMEOUT:?}"),
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

impl TlsBroker {
    async fn start() -> TlsBroker {
        let dir = tempfile::Builder::new()
            .prefix("shade-tls-")
            .tempdir()
            .expect("tempdir");
        let ca = TestCa::new("shade tls-clients CA");
        let tls = ca.tls_section(dir.path());
        let ca_pem = dir.path().join("ca.pem");
        let tls_port = free_port();
        let config = format!(
            r#"
[listen]
tls = "127.0.0.1:{tls_port}"

{tls}
[auth]

[[auth.users]]
name = "admin"
password_hash = "{admin}"
role = "admin"
"#,
            admin = password_hash(ADMIN_PASSWORD),
        );
        let config_path = dir.path().join("broker.toml");
        std::fs::write(&config_path, config).expect("write the broker config");
        let server = Server::start_with_args(
            &dir.path().join("data"),
            &["--config", path_str(&config_path)],
        );
        TlsBroker {
            dir,
            server,
            tls_port,
            ca,
            ca_pem,
        }
    }

    fn url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.tls_port)
    }

    /// `shade ARGS... --broker mqtts://... --ca CA --username admin --password ...`.
    async fn admin(&self, args: &[&str]) -> CliOutput {
        let mut all = os(args);
        all.extend(os(&[
            "--broker",
            &self.url(),
            "--ca",
            path_str(&self.ca_pem),
            "--username",
            "admin",
            "--password",
            ADMIN_PASSWORD,
        ]));
        shade(&all, None).await
    }

    /// `shade get THING --json` over TLS as the admin, until `check`
    /// holds for the document (a missing shadow counts as not yet).
    async fn wait_get(&self, thing: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Deadline::new(what, SYNC_WITHIN);
        loop {
            let out = self.admin(&["get", thing, "--json"]).await;
            if out.status.success() {
                let doc: Value = serde_json::from_str(&out.stdout)
                    .unwrap_or_else(|e| panic!("shade get --json printed no JSON ({e}): {out:?}"));
                if check(&doc) {
                    return doc;
                }
            } else {
                assert!(
                    out.stderr.contains("no such shadow"),
                    "shade get over mqtts failed: {}\nserver log:\n{}",
                    out.stderr,
                    self.server.log()
                );
            }
            tokio::time::sleep(GET_EVERY).await;
            deadline.tick(&format!("{out:?}")).await;
        }
    }

    fn agent(&self, name: &str, spec: AgentSpec) -> Agent {
        let data = self.dir.path().join(name);
        Agent::start(&data, self.tls_port, spec.broker(&self.url()))
    }
}

/// Polls the agent's local state until desired `key` is `want`.
async fn wait_desired(agent: &Agent, key: &str, want: &Value) {
    let deadline = Deadline::new(&format!("desired {key} = {want} at the agent"), SYNC_WITHIN);
    loop {
        let s = agent::state(agent.data()).await;
        if &s["state"]["desired"][key] == want {
            return;
        }
        deadline
            .tick(&format!("{s}\nagent log:\n{}", agent.log()))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_with_a_client_certificate_syncs_both_ways_over_mqtts() {
    let b = TlsBroker::start().await;
    let (cert, key) = b.ca.client("lamp-tls").write_pem(b.dir.path(), "dev");
    let spec = AgentSpec::thing("lamp-tls")
        .arg("--ca", &b.ca_pem)
        .arg("--cert", &cert)
        .arg("--key", &key);
    let agent = b.agent("lamp-tls", spec);
    agent.wait_connected(SYNC_WITHIN).await;

    agent::report(agent.data(), &["temperature=21.5"]).await;
    b.wait_get("lamp-tls", "the agent's report at the broker", |doc| {
        doc["state"]["reported"]["temperature"] == 21.5
    })
    .await;

    let out = b
        .admin(&["update", "lamp-tls", "--desired", r#"{"color":"red"}"#])
        .await;
    assert!(
        out.status.success(),
        "shade update over mqtts: {}",
        out.stderr
    );
    wait_desired(&agent, "color", &Value::from("red")).await;
    assert!(
        agent.log().contains("tls=true"),
        "the agent did not log a TLS connection:\n{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_and_agent_log_in_with_username_and_password_over_mqtts() {
    let b = TlsBroker::start().await;
    // The CLI as the admin, over TLS: update, get, and a device secret.
    let out = b
        .admin(&["update", "panel", "--desired", r#"{"mode":"eco"}"#])
        .await;
    assert!(
        out.status.success(),
        "shade update over mqtts: {}",
        out.stderr
    );
    let out = b.admin(&["get", "panel", "--json"]).await;
    assert!(out.status.success(), "shade get over mqtts: {}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("get --json prints JSON");
    assert_eq!(doc["state"]["desired"]["mode"], "eco", "{doc}");
    let out = b.admin(&["device", "add", "panel"]).await;
    assert!(
        out.status.success(),
        "shade device add over mqtts: {}",
        out.stderr
    );
    let secret = out.stdout.trim().to_owned();

    // An agent with the secret and no client certificate, over TLS.
    let spec = AgentSpec::thing("panel")
        .arg("--ca", &b.ca_pem)
        .arg("--username", "panel")
        .arg("--password", &secret);
    let agent = b.agent("panel", spec);
    agent.wait_connected(SYNC_WITHIN).await;
    wait_desired(&agent, "mode", &Value::from("eco")).await;
    agent::report(agent.data(), &["mode=\"eco\""]).await;
    b.wait_get("panel", "the agent's report at the broker", |doc| {
        doc["state"]["reported"]["mode"] == "eco" && doc["state"].get("delta").is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_did_not_sign_the_server_certificate_fails_with_a_tls_error() {
    let b = TlsBroker::start().await;
    let rogue = TestCa::new("not the broker's CA");
    let rogue_pem = rogue.write_pem(b.dir.path(), "rogue");
    let out = shade(
        &os(&[
            "get",
            "lamp",
            "--broker",
            &b.url(),
            "--ca",
            path_str(&rogue_pem),
            "--username",
            "admin",
            "--password",
            ADMIN_PASSWORD,
        ]),
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "not one line: {line}");
    assert!(
        line.contains("TLS") && line.contains("certificate"),
        "the error does not say TLS and certificate: {line}"
    );

    // The agent does not connect, and says why in its log.
    let (cert, key) = b.ca.client("lamp").write_pem(b.dir.path(), "lamp");
    let spec = AgentSpec::thing("lamp")
        .arg("--ca", &rogue_pem)
        .arg("--cert", &cert)
        .arg("--key", &key);
    let agent = b.agent("lamp", spec);
    let deadline = Deadline::new("the agent to log its TLS failure", SYNC_WITHIN);
    while !agent.log().contains("invalid peer certificate") {
        deadline.tick(&agent.log()).await;
    }
    assert_eq!(agent::state(agent.data()).await["connected"], false);

    // The right CA still works.
    let out = b
        .admin(&["update", "lamp", "--desired", "{\"on\":true}"])
        .await;
    assert!(out.status.success(), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_tls_files_are_named_in_one_line_and_nothing_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing-ca.pem");
    let not_pem = dir.path().join("not-a-cert.pem");
    std::fs::write(&not_pem, "hello\n").expect("write");
    let port = free_port();
    let url = format!("mqtts://127.0.0.1:{port}");

    for (file, flag) in [(&missing, "--ca"), (&not_pem, "--ca")] {
        let out = shade(
            &os(&["get", "lamp", "--broker", &url, flag, path_str(file)]),
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(
            out.stderr.trim().lines().count() == 1 && out.stderr.contains(path_str(file)),
            "{}",
            out.stderr
        );
    }
    // --ca with a plain mqtt:// broker is a usage error too.
    let plain = format!("mqtt://127.0.0.1:{port}");
    let out = shade(
        &os(&[
            "get",
            "lamp",
            "--broker",
            &plain,
            "--ca",
            path_str(&not_pem),
        ]),
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("mqtts://"), "{}", out.stderr);

    // The agent refuses to start, naming the file.
    let key = dir.path().join("missing.key.pem");
    let out = agent::agent_cli(&os(&[
        "run",
        "--broker",
        &url,
        "--thing",
        "lamp",
        "--data",
        path_str(&dir.path().join("agent")),
        "--cert",
        path_str(&not_pem),
        "--key",
        path_str(&key),
    ]))
    .await;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.trim().lines().count() == 1 && out.stderr.contains(path_str(&not_pem)),
        "{}",
        out.stderr
    );
    assert!(
        !dir.path().join("agent").exists(),
        "the agent created its data directory before failing"
    );
}
