//! Connections coming and going at the front: one client's clean
//! disconnect must never close another client's connection, and no client
//! id, whatever it holds, may stop the broker from taking connections.
//!
//! rumqttd 0.20 frees a connection's slot when it reads DISCONNECT, and
//! then, when the socket closes, sends the router a second disconnect for
//! the same slot number, which by then may belong to a client that just
//! connected (`rumqttd::server::broker`, "some other connection might be
//! using this connection ID"). Seen in CI as a test client closed before
//! its first SUBACK, right after the readiness probe disconnected.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use shade_tests::{temp_data, Server};

/// An MQTT 3.1.1 CONNECT with a clean session and `id`.
fn connect_packet(id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// Connects `id` and reads its CONNACK; `Err` says what went wrong.
fn connect(port: u16, id: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("{id}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.write_all(&connect_packet(id))
        .map_err(|e| format!("{id}: CONNECT: {e}"))?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack)
        .map_err(|e| format!("{id}: CONNACK: {e}"))?;
    if connack != [0x20, 2, 0, 0] {
        return Err(format!("{id}: CONNACK {connack:?}"));
    }
    Ok(s)
}

/// Subscribes to `filter` at QoS 0 and reads the SUBACK's return code.
fn suback_code(s: &mut TcpStream, id: &str, filter: &str) -> Result<u8, String> {
    let mut body = vec![0, 1];
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(0);
    let mut packet = vec![0x82, body.len() as u8];
    packet.extend(body);
    s.write_all(&packet)
        .map_err(|e| format!("{id}: SUBSCRIBE: {e}"))?;
    let mut suback = [0u8; 5];
    s.read_exact(&mut suback)
        .map_err(|e| format!("{id}: no SUBACK, the connection ended: {e}"))?;
    if suback[..4] != [0x90, 3, 0, 1] {
        return Err(format!("{id}: SUBACK {suback:?}"));
    }
    Ok(suback[4])
}

/// Subscribes to `filter` and checks it was granted.
fn subscribe(s: &mut TcpStream, id: &str, filter: &str) -> Result<(), String> {
    match suback_code(s, id, filter)? {
        0 => Ok(()),
        code => Err(format!("{id}: {filter:?} not granted: {code:#x}")),
    }
}

const THREADS: usize = 8;
const PAIRS: usize = 150;

/// `PAIRS` times: a client connects and disconnects cleanly, then another
/// connects and subscribes twice. The errors, one per pair that failed.
fn pairs(port: u16, thread: usize) -> Vec<String> {
    let mut failures = Vec::new();
    for i in 0..PAIRS {
        let result = (|| {
            let leaver = format!("leaver-{thread}-{i}");
            let mut a = connect(port, &leaver)?;
            // DISCONNECT, then close at once, as most clients do.
            a.write_all(&[0xe0, 0])
                .map_err(|e| format!("{leaver}: DISCONNECT: {e}"))?;
            drop(a);
            let stayer = format!("stayer-{thread}-{i}");
            let mut b = connect(port, &stayer)?;
            subscribe(&mut b, &stayer, "$aws/things/t/shadow/update/accepted")?;
            // Still open a moment later (the stray disconnect comes late).
            std::thread::sleep(Duration::from_millis(2));
            subscribe(&mut b, &stayer, "$aws/things/t/shadow/get/accepted")?;
            let _ = b.write_all(&[0xe0, 0]);
            Ok::<(), String>(())
        })();
        if let Err(e) = result {
            failures.push(e);
        }
    }
    failures
}

#[test]
fn a_clean_disconnect_never_closes_a_client_that_just_connected() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let port = server.port();
    // Pairs of clients on several threads at once, so that one client's
    // DISCONNECT and another's CONNECT meet in the router as they do when
    // a fleet reconnects.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| scope.spawn(move || pairs(port, t)))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|_| vec!["a worker panicked".into()])
            })
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} fresh connections were closed: {:?}\n{}",
        failures.len(),
        THREADS * PAIRS,
        &failures[..failures.len().min(5)],
        server.log()
    );
}

/// Publishes `payload` at QoS 0 to `topic`.
fn publish(s: &mut TcpStream, id: &str, topic: &str, payload: &[u8]) -> Result<(), String> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(payload);
    let mut packet = vec![0x30, body.len() as u8];
    packet.extend(body);
    s.write_all(&packet)
        .map_err(|e| format!("{id}: PUBLISH: {e}"))
}

/// Reads one PUBLISH and returns its topic.
fn read_publish_topic(s: &mut TcpStream, id: &str) -> Result<String, String> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head)
        .map_err(|e| format!("{id}: no PUBLISH: {e}"))?;
    let mut len = usize::from(head[1] & 0x7f);
    if head[1] & 0x80 != 0 {
        let mut next = [0u8; 1];
        s.read_exact(&mut next).map_err(|e| e.to_string())?;
        len += usize::from(next[0]) << 7;
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(|e| e.to_string())?;
    if head[0] >> 4 != 3 || body.len() < 2 {
        return Err(format!("{id}: not a PUBLISH: {head:?}"));
    }
    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    String::from_utf8(body.get(2..2 + topic_len).unwrap_or_default().to_vec())
        .map_err(|e| e.to_string())
}

#[test]
fn client_ids_with_topic_characters_connect_twice_and_everyone_else_still_connects() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let port = server.port();
    // rumqttd's router refuses ids holding `/ + # $`, and used to be left
    // unable to take any connection after the second CONNECT of one.
    for id in ["a/b", "$x", "c+d", "e#f", "100%/real"] {
        for attempt in 0..2 {
            let mut client = connect(port, id)
                .unwrap_or_else(|e| panic!("{id} (CONNECT {attempt}): {e}\n{}", server.log()));
            // It is served: a get of its thing is answered.
            subscribe(&mut client, id, "$aws/things/t/shadow/get/+")
                .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
            publish(&mut client, id, "$aws/things/t/shadow/get", b"{}")
                .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
            let topic = read_publish_topic(&mut client, id)
                .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
            assert!(
                topic.starts_with("$aws/things/t/shadow/get/"),
                "{id}: {topic}"
            );
            let _ = client.write_all(&[0xe0, 0]);
        }
    }
    let mut other = connect(port, "plain")
        .unwrap_or_else(|e| panic!("a plain client after them: {e}\n{}", server.log()));
    subscribe(&mut other, "plain", "$aws/things/t/shadow/update/accepted")
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert!(
        !server.log().contains("panicked"),
        "rumqttd panicked:\n{}",
        server.log()
    );
}

#[test]
fn a_malformed_topic_filter_gets_a_suback_failure_and_the_connection_goes_on() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let mut client = connect(server.port(), "typo").expect("connects");
    for bad in ["a/#/b", "+a", "x#"] {
        let code = suback_code(&mut client, "typo", bad).expect("a SUBACK");
        assert_eq!(code, 0x80, "{bad:?} was granted");
    }
    subscribe(&mut client, "typo", "$aws/things/t/shadow/get/+").expect("a valid filter");
    publish(&mut client, "typo", "$aws/things/t/shadow/get", b"{}").expect("publish");
    let topic = read_publish_topic(&mut client, "typo").expect("a reply");
    assert!(topic.starts_with("$aws/things/t/shadow/get/"), "{topic}");
}

#[test]
fn without_auth_a_client_id_holding_a_bar_gets_its_ops_replies() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let mut client = connect(server.port(), "a|b").expect("connects");
    subscribe(&mut client, "a|b", "shade/ops/reply/tok1").expect("subscribes");
    publish(
        &mut client,
        "a|b",
        "shade/ops/request",
        br#"{"op":"list","clientToken":"tok1"}"#,
    )
    .expect("publish");
    let topic = read_publish_topic(&mut client, "a|b")
        .unwrap_or_else(|e| panic!("no reply: {e}\n{}", server.log()));
    assert_eq!(topic, "shade/ops/reply/tok1");
}
