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
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    shade_tests::run_paho_script(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        "retained_and_aliases.py",
        &[server.port().to_string(), THINGS.to_string()],
        Duration::from_secs(120),
        || server.log(),
    )
    .await;
}
