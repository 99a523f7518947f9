//! Connection limits of `shade serve`: a flood of half-open connections
//! (TCP connected, no CONNECT) is bounded by `limits.max_pending_connections`
//! and does not stop the service once it is gone.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;
use shade_tests::{Mqtt, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_beyond_the_pending_limit_are_closed_and_the_service_recovers() {
    const PENDING: usize = 32;
    const FLOOD: usize = 200;
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

    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    // The server closes every connection beyond the pending slots at once:
    // reading them ends (EOF or reset) instead of blocking until our timeout.
    let closed = tokio::task::spawn_blocking(move || {
        let closed = flood
            .iter()
            .filter(|stream| {
                let mut stream: &TcpStream = stream;
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
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
    assert!(
        closed >= FLOOD - PENDING,
        "only {closed} of {FLOOD} half-open connections were closed (pending limit {PENDING})"
    );
    assert!(
        closed < FLOOD,
        "every connection was closed: the pending slots admitted none"
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
