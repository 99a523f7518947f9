//! The dashboard (`GET /`) in a real browser: headless Chromium driven by
//! selenium from `tests/python/dashboard_browser.py`, paho-mqtt as the
//! devices, a real `shade serve` with HTTP on.
//!
//! The test without authentication writes its screenshots into
//! `docs/screenshots/`, so every run (CI's included) refreshes the ones
//! the repository shows.
//!
//! Needs python3 with selenium 4 and Debian's chromium and
//! chromium-driver (`.ci/run` installs them); paho-mqtt is installed on
//! demand like the other paho tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use shade_tests::agent::{desire, wait_converged, write_agent_config, Agent, AgentSpec, Dashboard};
use shade_tests::{password_hash, Server, START_TIMEOUT};

/// The whole browser walk: Chromium's start and a debug server.
const WALK_LIMIT: Duration = Duration::from_secs(180);
/// Bound for an agent and the broker to agree after a reconnect.
const CONVERGE: Duration = Duration::from_secs(15);
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Panics with what to install when the browser side is missing, rather
/// than with a Python traceback.
fn assert_browser_installed() {
    let selenium = std::process::Command::new("python3")
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        selenium && Path::new(CHROMEDRIVER).is_file(),
        "the dashboard test needs python3 -m pip install 'selenium>=4.15,<5' and \
         apt-get install chromium chromium-driver (as .ci/run does)"
    );
}

fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
}

async fn run_walk(server: &Server, screenshots: &Path, extra: &[&str]) {
    assert_browser_installed();
    let mut args = vec![
        server.http_port().to_string(),
        server.port().to_string(),
        screenshots.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    shade_tests::run_paho_script(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "dashboard_browser.py",
        &args,
        WALK_LIMIT,
        || server.log(),
    )
    .await;
}

/// A `heater` whose agent changed `color` offline while a dashboard
/// changed it too: one conflict, as in agent_e2e's test of it. The agent
/// is returned running.
async fn heater_with_a_conflict(server: &Server, dir: &Path) -> Agent {
    let config = write_agent_config(dir, "");
    let data = dir.join("heater");
    let mut agent = Agent::start(
        &data,
        server.port(),
        AgentSpec::thing("heater").config(&config),
    );
    agent.wait_connected(START_TIMEOUT).await;
    let mut dash = Dashboard::connect(server.port(), "fleet").await;
    dash.update(
        "heater",
        json!({"desired": {"color": "red", "mode": "normal"}, "reported": {"temperature": 19.5}}),
    )
    .await;
    wait_converged(&mut dash, &data, "heater", CONVERGE).await;
    agent.terminate();
    dash.update("heater", json!({"desired": {"color": "green"}}))
        .await;
    desire(&data, &["color=blue"]).await;
    agent.restart();
    let (_, doc) = wait_converged(&mut dash, &data, "heater", CONVERGE).await;
    assert_eq!(
        doc["conflicts"].as_array().map(Vec::len),
        Some(1),
        "the heater has one conflict: {doc}"
    );
    // Two lamps beside it, one with a delta, for a fleet on the screenshot.
    let lamp = json!({"color": "warm", "level": 60});
    dash.update("lamp-hall", json!({"desired": lamp, "reported": lamp}))
        .await;
    dash.update(
        "lamp-kitchen",
        json!({"desired": {"level": 80}, "reported": {"color": "warm", "level": 40}}),
    )
    .await;
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_thing_an_mqtt_client_updates_and_its_desired_edit_reaches_mqtt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_http(&dir.path().join("data"), &[]);
    let _heater = heater_with_a_conflict(&server, dir.path()).await;
    run_walk(&server, &screenshots_dir(), &["--conflict", "heater"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_login_the_dashboard_lets_an_admin_edit_and_a_reader_only_look() {
    const ADMIN_PASSWORD: &str = "dash-admin-pw";
    const READER_PASSWORD: &str = "dash-reader-pw";
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        r#"
[auth]

[[auth.users]]
name = "admin"
password_hash = "{admin}"
role = "admin"

[[auth.users]]
name = "viewer"
password_hash = "{reader}"
role = "reader"
"#,
        admin = password_hash(ADMIN_PASSWORD),
        reader = password_hash(READER_PASSWORD),
    );
    let path = dir.path().join("broker.toml");
    std::fs::write(&path, config).expect("write config");
    let server = Server::start_http(
        &dir.path().join("data"),
        &["--config", path.to_str().expect("utf-8 path")],
    );
    let screenshots = dir.path().join("screenshots");
    run_walk(
        &server,
        &screenshots,
        &[
            "--auth",
            "admin",
            ADMIN_PASSWORD,
            "--reader",
            "viewer",
            READER_PASSWORD,
        ],
    )
    .await;
}
