//! Connection limits of `shade serve`: a flood of half-open connections
//! (TCP connected, no CONNECT) is bounded by `limits.max_pending_connections`
//! and `limits.connect_timeout_ms`, and does not stop the service once it
//! is gone.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use shade_tests::{Mqtt, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_beyond_the_pending_slots_wait_are_closed_with_a_reason_and_the_service_recovers(
) {
    const PENDING: usize = 32;
    const FLOOD: usize = 200;
    const TIMEOUT_MS: u64 = 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_pending_connections = {PENDING}\nconnect_timeout_ms = {TIMEOUT_MS}\n"
        ),
    )
    .expect("write config");
    let server = Server::start_with_args(
        &dir.path().join("data"),
        &["--config", config.to_str().expect("utf-8")],
    );
    let port = server.port();

    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    // Every half-open connection is closed by the server: those holding a
    // slot when their connect timeout ends, the others after waiting that
    // long for a slot. Reading them ends (EOF or reset) well before our
    // deadline of five timeouts.
    let deadline = Instant::now() + Duration::from_millis(5 * TIMEOUT_MS);
    let closed = tokio::task::spawn_blocking(move || {
        let closed = flood
            .iter()
            .filter(|stream| {
                let mut stream: &TcpStream = stream;
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
                let mut byte = [0u8; 1];
                match stream.read(&mut byte) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                }
            })
            .count();
        drop(flood);
        closed
    })
    .await
    .expect("reader");
    assert_eq!(
        closed, FLOOD,
        "half-open connections left open past their timeout"
    );
    // The slots bounded the handshakes: most connections never got one,
    // and each of those closes says why.
    let log = server.log();
    let waited = log
        .matches("no handshake slot freed within the connect timeout")
        .count();
    assert!(
        waited >= FLOOD - 2 * PENDING,
        "only {waited} of {FLOOD} connections waited for a slot (pending limit {PENDING}):\n{log}"
    );
    assert!(
        log.contains("no CONNECT within the connect timeout"),
        "no connection held a slot until its timeout:\n{log}"
    );

    // Our half-open sockets are gone; their slots come back and the
    // service answers a real client.
    let mut client = Mqtt::connect(port, "after-the-flood").await;
    client.subscribe("$aws/things/t1/shadow/update/+").await;
    let reply = client
        .request(
            "$aws/things/t1/shadow/update",
            &json!({"state": {"desired": {"on": true}}, "clientToken": "ok"}),
        )
        .await;
    assert!(reply.topic.ends_with("/accepted"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_real_clients_larger_than_the_pending_slots_is_admitted_in_turn() {
    const PENDING: usize = 8;
    const CLIENTS: usize = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!("[limits]\nmax_pending_connections = {PENDING}\n"),
    )
    .expect("write config");
    let server = Server::start_with_args(
        &dir.path().join("data"),
        &["--config", config.to_str().expect("utf-8")],
    );
    let port = server.port();
    // All at once, 25 times the handshake slots: each waits its turn
    // instead of being closed, and each then gets its own delta.
    let clients = (0..CLIENTS).map(|i| {
        tokio::spawn(async move {
            let mut c = Mqtt::connect(port, &format!("burst-{i}")).await;
            c.subscribe(&format!("$aws/things/burst-{i}/shadow/update/delta"))
                .await;
            c
        })
    });
    let mut connected = Vec::new();
    for c in clients.collect::<Vec<_>>() {
        connected.push(c.await.expect("client task"));
    }
    assert_eq!(connected.len(), CLIENTS);
    let writer = Mqtt::connect(port, "burst-writer").await;
    for i in [0, CLIENTS / 2, CLIENTS - 1] {
        writer
            .publish_json(
                &format!("$aws/things/burst-{i}/shadow/update"),
                &json!({"state": {"desired": {"n": i}}}),
            )
            .await;
        let delta = connected[i]
            .wait_for("its delta", |m| m.topic.ends_with("/update/delta"))
            .await
            .json();
        assert_eq!(delta["state"]["n"], i, "{delta}");
    }
    let log = server.log();
    assert!(
        !log.contains("closing a connection"),
        "a client of the burst was closed:\n{log}"
    );
}
