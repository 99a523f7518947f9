//! The retained `shade/things/.../state` messages, which shade holds and
//! delivers itself after a SUBACK, and requests sent by MQTT 5 topic alias
//! (stamped by the gateway, not by rumqttd's alias table). Driven by
//! paho-mqtt, a third-party client (`tests/python/retained_and_aliases.py`).

use std::time::Duration;

use shade_tests::{temp_data, Server};

/// Shadows the late subscriber must get, all of them.
const THINGS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_subscribers_get_every_state_retained_and_aliased_requests_are_answered() {
    let pythonpath =
        shade_tests::paho_path(std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))).await;
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/retained_and_aliases.py");
    let mut run = tokio::process::Command::new("python3");
    if let Some(path) = &pythonpath {
        run.env("PYTHONPATH", path);
    }
    let run = run
        .arg(&script)
        .arg(server.port().to_string())
        .arg(THINGS.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("retained_and_aliases.py finished within 120 s")
        .expect("run python3 retained_and_aliases.py");
    assert!(
        out.status.success(),
        "retained_and_aliases.py failed ({}):\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}
