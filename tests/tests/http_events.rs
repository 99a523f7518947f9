//! `GET /events`, the HTTP change stream, end to end: it starts with the
//! current state of every matching shadow, then carries each committed
//! change (from MQTT or HTTP), resumes after `Last-Event-ID`, narrows to
//! the shadows a fleet query matches with `where=`, and a reader that
//! falls behind is closed without holding up anyone else.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shade_tests::http::EventStream;
use shade_tests::{temp_data, Http, Mqtt, Server};

fn start(dir: &std::path::Path, data: &std::path::Path, extra: &str) -> Server {
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!("[limits]\nrequests_per_second_per_thing = 5000\nmax_inflight_per_client = 5000\n{extra}"),
    )
    .expect("write config");
    Server::start_http(data, &["--config", config.to_str().expect("utf-8")])
}

/// Updates `thing`'s reported state over MQTT and waits for `accepted`.
async fn report(mqtt: &mut Mqtt, thing: &str, reported: Value) {
    let reply = mqtt
        .request(
            &format!("$aws/things/{thing}/shadow/update"),
            &json!({"state": {"reported": reported}, "clientToken": "r"}),
        )
        .await;
    assert!(reply.topic.ends_with("/update/accepted"), "{reply}");
}

/// (thing, version) of an event.
fn key(event: &Value) -> (String, u64) {
    (
        event["thing"].as_str().unwrap_or_default().to_owned(),
        event["version"].as_u64().unwrap_or(0),
    )
}

/// Opens the stream on a blocking thread (ureq is blocking).
async fn open(http: &Http, query: &str, last: Option<String>) -> EventStream {
    let http = http.clone();
    let query = query.to_owned();
    tokio::task::spawn_blocking(move || http.events(&query, last.as_deref()))
        .await
        .expect("open the event stream")
}

/// The next `n` events of `stream`, read on a blocking thread.
async fn next_events(
    stream: EventStream,
    n: usize,
) -> (EventStream, Vec<shade_tests::http::Event>) {
    tokio::task::spawn_blocking(move || {
        let mut stream = stream;
        let events = (0..n)
            .map(|i| stream.expect_event(&format!("event {i} of {n}")))
            .collect();
        (stream, events)
    })
    .await
    .expect("read events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_starts_with_the_matching_states_then_carries_each_change_and_resumes() {
    let (dir, data) = temp_data();
    let server = start(dir.path(), &data, "");
    let http = Http::new(&server.http_base());
    let mut mqtt = Mqtt::connect(server.port(), "events-writer").await;
    mqtt.subscribe("$aws/things/+/shadow/update/accepted").await;
    report(&mut mqtt, "a1", json!({"n": 1})).await;
    report(&mut mqtt, "a2", json!({"n": 1})).await;
    report(&mut mqtt, "b1", json!({"n": 1})).await;

    // The snapshot: a1 and a2, not b1, each with its whole state document.
    let stream = open(&http, "?prefix=a", None).await;
    let (stream, snapshot) = next_events(stream, 2).await;
    let mut seen: Vec<_> = snapshot.iter().map(|e| key(&e.data)).collect();
    seen.sort();
    assert_eq!(seen, vec![("a1".into(), 1), ("a2".into(), 1)]);
    assert_eq!(
        snapshot[0].data["state"]["reported"]["n"], 1,
        "{:?}",
        snapshot[0]
    );
    assert_eq!(snapshot[0].data["shadow"], Value::Null);

    // Live: b1's change is not for this stream; a1's over MQTT and a2's
    // over HTTP are, in commit order.
    report(&mut mqtt, "b1", json!({"n": 2})).await;
    report(&mut mqtt, "a1", json!({"n": 2})).await;
    let post = http.clone();
    tokio::task::spawn_blocking(move || {
        let r = post.post(
            "/things/a2/shadow?name=cfg",
            &json!({"state": {"desired": {"n": 2}}}),
        );
        assert_eq!(r.status, 200, "{:?}", r.json());
    })
    .await
    .expect("POST");
    let (stream, live) = next_events(stream, 2).await;
    assert_eq!(key(&live[0].data), ("a1".into(), 2), "{:?}", live[0]);
    assert_eq!(live[0].data["state"]["reported"]["n"], 2);
    assert_eq!(key(&live[1].data), ("a2".into(), 1), "{:?}", live[1]);
    assert_eq!(live[1].data["shadow"], "cfg");
    let last_id = live[1].id.clone().expect("events carry ids");
    drop(stream);

    // Missed while away: two changes of a1 and a delete of a2's named
    // shadow. Resuming gets exactly those, not a new snapshot.
    report(&mut mqtt, "a1", json!({"n": 3})).await;
    report(&mut mqtt, "a1", json!({"n": 4})).await;
    let del = http.clone();
    tokio::task::spawn_blocking(move || {
        assert_eq!(del.delete("/things/a2/shadow?name=cfg").status, 200)
    })
    .await
    .expect("DELETE");
    let resumed = open(&http, "?prefix=a", Some(last_id)).await;
    let (_resumed, missed) = next_events(resumed, 3).await;
    assert_eq!(key(&missed[0].data), ("a1".into(), 3));
    assert_eq!(key(&missed[1].data), ("a1".into(), 4));
    assert_eq!(missed[2].data["thing"], "a2");
    assert_eq!(missed[2].data["shadow"], "cfg");
    assert_eq!(missed[2].data["deleted"], true, "{:?}", missed[2]);

    // An id from another run of the service starts over from the states.
    let over = open(&http, "?prefix=a", Some("1-5".into())).await;
    let (_over, again) = next_events(over, 2).await;
    let mut seen: Vec<_> = again.iter().map(|e| key(&e.data)).collect();
    seen.sort();
    assert_eq!(seen, vec![("a1".into(), 4), ("a2".into(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_reader_that_falls_behind_is_closed_and_other_readers_and_mqtt_keep_going() {
    let (dir, data) = temp_data();
    let server = start(dir.path(), &data, "[http]\nevents_buffer = 8\n");
    let http_port = server.http_port();
    // A reader that never reads, with a small receive buffer, so the
    // server's socket fills at once.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], http_port).into();
    socket.connect(&addr.into()).expect("connect");
    let mut stuck: std::net::TcpStream = socket.into();
    std::io::Write::write_all(&mut stuck, b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write the request");
    // A reader that keeps up, reading as the changes come.
    let http = Http::new(&server.http_base());
    let reader = open(&http, "", None).await;
    let changes = 600;
    let reading = tokio::spawn(next_events(reader, changes));

    // Changes with large documents, faster than the stuck reader reads.
    let mut mqtt = Mqtt::connect(server.port(), "events-flood").await;
    mqtt.subscribe("$aws/things/+/shadow/update/accepted").await;
    let filler = "x".repeat(6000);
    let started = Instant::now();
    for i in 0..changes {
        let thing = format!("f{}", i % 20);
        report(&mut mqtt, &thing, json!({"i": i, "filler": filler})).await;
    }
    // The reader that keeps up got every change, in order.
    let (_reader, events) = reading.await.expect("the reader");
    let is: Vec<u64> = events
        .iter()
        .map(|e| e.data["state"]["reported"]["i"].as_u64().expect("i"))
        .collect();
    assert_eq!(is, (0..changes as u64).collect::<Vec<_>>());

    // The stuck one was closed, with a log line.
    let deadline = started + Duration::from_secs(60);
    while !server
        .log()
        .contains("closing an event stream that fell behind")
    {
        assert!(
            Instant::now() < deadline,
            "no slow reader was closed:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed = tokio::task::spawn_blocking(move || {
        stuck
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut sink = vec![0u8; 1 << 16];
        loop {
            match std::io::Read::read(&mut stuck, &mut sink) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    })
    .await
    .expect("drain the stuck reader");
    assert!(closed, "the stuck reader's connection stayed open");
    report(&mut mqtt, "f0", json!({"after": true})).await;

    // Operators see it: one events stream fell behind, and the one that
    // keeps up is the only one still open.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let scrape = http.clone();
        let text = tokio::task::spawn_blocking(move || scrape.get("/metrics"))
            .await
            .expect("GET /metrics");
        let text = String::from_utf8_lossy(&text.body).into_owned();
        let behind = sample(&text, r#"shade_http_streams_behind_total{stream="events"}"#);
        let open = sample(&text, r#"shade_http_streams_open{stream="events"}"#);
        if behind == Some(1.0) && open == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "behind {behind:?}, open {open:?} (want 1 and 1):\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(_reader);
}

/// The value of one series in a `/metrics` text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_where_carries_the_shadows_that_match_and_says_when_one_stops() {
    let (dir, data) = temp_data();
    let server = start(dir.path(), &data, "");
    let http = Http::new(&server.http_base());
    let mut mqtt = Mqtt::connect(server.port(), "where-writer").await;
    mqtt.subscribe("$aws/things/+/shadow/update/accepted").await;
    report(&mut mqtt, "hot1", json!({"temp": 40})).await;
    report(&mut mqtt, "cold1", json!({"temp": 10})).await;
    report(&mut mqtt, "hot2", json!({"temp": 50})).await;

    // The snapshot holds the matching shadows only.
    let query = "?where=reported.temp%20%3E%2030";
    let stream = open(&http, query, None).await;
    let (stream, snapshot) = next_events(stream, 2).await;
    let mut seen: Vec<_> = snapshot.iter().map(|e| key(&e.data)).collect();
    seen.sort();
    assert_eq!(seen, vec![("hot1".into(), 1), ("hot2".into(), 1)]);

    // cold1 going to 20 matches neither before nor after: not sent. Then
    // cold1 starts matching, hot1 stops, hot2 changes and is deleted.
    report(&mut mqtt, "cold1", json!({"temp": 20})).await;
    report(&mut mqtt, "cold1", json!({"temp": 35})).await;
    report(&mut mqtt, "hot1", json!({"temp": 5})).await;
    report(&mut mqtt, "hot2", json!({"temp": 60})).await;
    let del = http.clone();
    tokio::task::spawn_blocking(move || assert_eq!(del.delete("/things/hot2/shadow").status, 200))
        .await
        .expect("DELETE");
    let (stream, live) = next_events(stream, 4).await;
    assert_eq!(key(&live[0].data), ("cold1".into(), 3), "{:?}", live[0]);
    assert_eq!(live[0].data["state"]["reported"]["temp"], 35);
    assert_eq!(
        live[1].data,
        json!({"thing": "hot1", "shadow": null, "unmatched": true})
    );
    assert_eq!(key(&live[2].data), ("hot2".into(), 2), "{:?}", live[2]);
    assert_eq!(live[3].data["thing"], "hot2");
    assert_eq!(live[3].data["deleted"], true, "{:?}", live[3]);
    assert!(live.iter().all(|e| e.id.is_some()), "{live:?}");
    drop(stream);

    // Resuming after cold1's event replays the rest, judged the same way.
    let resumed = open(&http, query, live[0].id.clone()).await;
    let (_resumed, again) = next_events(resumed, 3).await;
    let again: Vec<_> = again.into_iter().map(|e| e.data).collect();
    let live: Vec<_> = live.into_iter().skip(1).map(|e| e.data).collect();
    assert_eq!(again, live);

    // Presence is part of the state: a thing's connection makes it match
    // `connected = true`, its leaving stops it.
    report(&mut mqtt, "lamp", json!({"on": true})).await;
    let online = open(&http, "?where=connected%20%3D%20true&prefix=lamp", None).await;
    let device = Mqtt::connect(server.port(), "lamp").await;
    let (online, came) = next_events(online, 1).await;
    assert_eq!(came[0].data["thing"], "lamp");
    assert_eq!(came[0].data["connected"], true, "{:?}", came[0]);
    assert!(device.disconnect(Duration::from_secs(5)).await);
    let (_online, left) = next_events(online, 1).await;
    assert_eq!(
        left[0].data,
        json!({"thing": "lamp", "shadow": null, "unmatched": true})
    );

    // A bad expression is a 400 that says where.
    let bad = http.clone();
    let r = tokio::task::spawn_blocking(move || bad.get("/events?where=reported.temp%20%3E"))
        .await
        .expect("GET");
    assert_eq!(r.status, 400);
    let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.starts_with("where: at 15:"), "{message}");
}
