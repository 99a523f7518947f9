//! `shade watch --where EXPR` as an operator runs it: the real binary
//! against a real `shade serve` on a free loopback port, printing the
//! changes of the shadows a fleet query matches. Every wait is bounded;
//! the server and the watcher are killed by their pids when their guards
//! drop.

mod common;

use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use rumqttc::{Event, MqttOptions, Packet};

use common::{lines, shade, wait_for_line, Guard, Server, BOUND, SHADE};

/// The next stdout line, which must end with `tail`.
fn expect_line(out: &Receiver<String>, tail: &str) {
    let line = out
        .recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("no line ending with {tail:?}"));
    assert!(line.ends_with(tail), "want ...{tail:?}, got {line:?}");
}

#[test]
fn watch_where_prints_shadows_as_they_start_change_and_stop_matching() {
    let server = Server::start();
    let url = server.url();
    let report = |thing: &str, temp: i64| {
        let doc = format!(r#"{{"temp":{temp}}}"#);
        server.shade(&["update", thing, "--reported", &doc]).ok();
    };
    // Before the watch: lamp-1 matches (not printed), lamp-2 does not.
    report("lamp-1", 40);
    report("lamp-2", 10);
    let mut child = Command::new(SHADE)
        .args(["watch", "--where", "reported.temp > 30", "--broker", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shade watch --where");
    let out = lines(child.stdout.take().expect("stdout"));
    let err = lines(child.stderr.take().expect("stderr"));
    let _watch = Guard(child);
    wait_for_line(&err, "matching reported.temp > 30", "shade watch --where");

    // lamp-2 going to 20 matches neither before nor after: no line, so
    // the first line is lamp-1's change.
    report("lamp-2", 20);
    report("lamp-1", 45);
    expect_line(&out, "  lamp-1  v2  reported.temp=45");
    report("lamp-2", 35);
    expect_line(
        &out,
        "  lamp-2  v3  matches: connected=false reported.temp=35",
    );

    // Presence is part of what is judged and shown.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut options = MqttOptions::new("lamp-2", "127.0.0.1", server.port);
        options.set_keep_alive(Duration::from_secs(10));
        let (client, mut events) = rumqttc::AsyncClient::new(options, 16);
        loop {
            let event = tokio::time::timeout(BOUND, events.poll()).await;
            if let Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) = event {
                break;
            }
            assert!(
                matches!(event, Ok(Ok(_))),
                "lamp-2 could not connect: {event:?}"
            );
        }
        expect_line(&out, "  lamp-2  v3  connected=true");
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), events.poll()).await;
    });
    expect_line(&out, "  lamp-2  v3  connected=false");

    report("lamp-1", 5);
    expect_line(&out, "  lamp-1  v3  no longer matches");
    server.shade(&["delete", "lamp-2"]).ok();
    expect_line(&out, "  lamp-2  v3  deleted");
    server.shade(&["delete", "lamp-1"]).ok();
    assert!(
        out.recv_timeout(Duration::from_millis(500)).is_err(),
        "a shadow that no longer matched was deleted: no line"
    );
}

#[test]
fn watch_where_refuses_a_bad_expression_with_its_position() {
    let server = Server::start();
    let run = shade(&[
        "watch",
        "--where",
        "reported.temp >",
        "--broker",
        &server.url(),
    ]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("--where: at 15:"), "{run:#?}");
}
