//! Bad input on the HTTP listener, at small counts: malformed requests get
//! clear JSON statuses, a slow-loris client is closed after the header
//! timeout, connections beyond `http.max_connections` get 503, and
//! through all of it the HTTP and MQTT services keep serving others.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use shade_tests::{temp_data, Http, Mqtt, Server};

/// Starts a server with HTTP and `http_section` as its `[http]` config.
fn start(dir: &std::path::Path, data: &std::path::Path, http_section: &str) -> Server {
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!("[http]\n{http_section}\n[limits]\nrequests_per_second_per_thing = 1000\n"),
    )
    .expect("write config");
    Server::start_http(data, &["--config", config.to_str().expect("utf-8")])
}

/// An MQTT update still gets its `accepted`.
async fn assert_mqtt_serves(server: &Server, id: &str) {
    let mut mqtt = Mqtt::connect(server.port(), id).await;
    mqtt.subscribe(&format!("$aws/things/{id}/shadow/update/accepted"))
        .await;
    let reply = mqtt
        .request(
            &format!("$aws/things/{id}/shadow/update"),
            &json!({"state": {"reported": {"alive": true}}, "clientToken": "alive"}),
        )
        .await;
    assert!(reply.topic.ends_with("/update/accepted"), "{reply}");
}

/// Reads what the server sends until it closes, within `limit`: the
/// bytes, and whether it closed in time.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => {}
        }
    }
    (got, false)
}

/// A request (method, path, body) and the status and message part it gets.
type Case = (
    &'static str,
    &'static str,
    Option<&'static [u8]>,
    u16,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_requests_get_clear_json_statuses_and_both_apis_keep_serving() {
    let (dir, data) = temp_data();
    let server = start(dir.path(), &data, "");
    let http = Http::new(&server.http_base());
    let checks = tokio::task::spawn_blocking(move || {
        let cases: Vec<Case> = vec![
            (
                "POST",
                "/things/lamp/shadow",
                Some(b"{\"state\":"),
                400,
                "Invalid JSON",
            ),
            ("POST", "/things/lamp/shadow", Some(b"[1,2]"), 400, ""),
            ("POST", "/things/lamp/shadow", Some(b""), 400, ""),
            (
                "POST",
                "/things/lamp/shadow",
                Some(b"{\"state\":{\"other\":{}}}"),
                400,
                "other",
            ),
            (
                "POST",
                "/things/lamp/shadow",
                Some(&[0xff, 0xfe, 0x00]),
                400,
                "",
            ),
            ("GET", "/things/bad+name/shadow", None, 400, "thing name"),
            (
                "GET",
                "/things/lamp/shadow?name=bad%2Fname",
                None,
                400,
                "shadow name",
            ),
            ("GET", "/things/lamp/shadow?name=", None, 400, "shadow name"),
            ("GET", "/things/lamp/shadow?color=red", None, 400, "color"),
            ("GET", "/things?pageSize=lots", None, 400, "pageSize"),
            ("GET", "/things?pageSize=0", None, 400, "pageSize"),
            (
                "GET",
                "/things?where=reported.fw%3C",
                None,
                400,
                "where: at 12",
            ),
            ("GET", "/things/lamp/history?limit=-1", None, 400, "limit"),
            (
                "GET",
                "/things/lamp/shadow/extra",
                None,
                404,
                "No such path",
            ),
            (
                "GET",
                "/api/things/shadow/Unknown/lamp",
                None,
                404,
                "No such path",
            ),
            ("PATCH", "/things/lamp/shadow", Some(b"{}"), 405, "Method"),
            ("GET", "/things/lamp/history", None, 404, "No shadow"),
        ];
        for (method, path, body, status, message) in cases {
            let r = http.request(method, path, body.map(<[u8]>::to_vec));
            let doc = r.json();
            assert_eq!(r.status, status, "{method} {path}: {doc}");
            assert_eq!(doc["code"], status, "{method} {path}: {doc}");
            let text = doc["message"].as_str().unwrap_or_default();
            assert!(text.contains(message), "{method} {path}: {doc}");
        }
        // A body over the request limit (128 KiB) is 413 whatever it holds.
        let big = vec![b' '; 200_000];
        let r = http.post_raw("/things/lamp/shadow", &big);
        assert_eq!((r.status, r.json()["code"].clone()), (413, json!(413)));
        // And after all that, a good request is served.
        let r = http.post(
            "/things/lamp/shadow",
            &json!({"state": {"desired": {"on": 1}}}),
        );
        assert_eq!(r.status, 200, "{:?}", r.json());
    });
    checks.await.expect("the HTTP checks");
    assert_mqtt_serves(&server, "after-bad-http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_client_is_closed_after_the_header_timeout_while_others_are_served() {
    let (dir, data) = temp_data();
    let server = start(dir.path(), &data, "header_timeout_ms = 700");
    let addr = format!("127.0.0.1:{}", server.http_port());
    let http = Http::new(&server.http_base());
    let checks = tokio::task::spawn_blocking(move || {
        // Headers a byte at a time, never finished.
        let mut loris = TcpStream::connect(&addr).expect("connect");
        loris
            .write_all(b"GET /things HTTP/1.1\r\nHost: x\r\n")
            .expect("write");
        let trickle = std::thread::spawn({
            let mut loris = loris.try_clone().expect("clone");
            move || {
                for _ in 0..40 {
                    std::thread::sleep(Duration::from_millis(100));
                    if loris.write_all(b"X").is_err() {
                        return;
                    }
                }
            }
        });
        // Meanwhile, another client is served.
        assert_eq!(http.get("/things").status, 200);
        let (_, closed) = read_until_closed(&mut loris, Duration::from_secs(6));
        assert!(closed, "the slow client was not closed within 6 s");
        trickle.join().expect("the trickling thread");

        // A client that sends its headers but not its body gets 408.
        let mut slow_body = TcpStream::connect(&addr).expect("connect");
        slow_body
            .write_all(
                b"POST /things/lamp/shadow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"st",
            )
            .expect("write");
        let (got, closed) = read_until_closed(&mut slow_body, Duration::from_secs(6));
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(closed, "closed after the 408: {text}");
        assert_eq!(http.get("/things").status, 200);
    });
    checks.await.expect("the slow-client checks");
    assert_mqtt_serves(&server, "after-loris").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_http_max_connections_get_503_and_are_served_again_once_others_close() {
    let (dir, data) = temp_data();
    let server = start(
        dir.path(),
        &data,
        "max_connections = 20\nheader_timeout_ms = 60000",
    );
    let addr = format!("127.0.0.1:{}", server.http_port());
    let http = Http::new(&server.http_base());
    let checks = tokio::task::spawn_blocking(move || {
        // 20 idle connections take every slot (their requests never come).
        let idle: Vec<TcpStream> = (0..20)
            .map(|_| TcpStream::connect(&addr).expect("connect"))
            .collect();
        // The server counts a connection once it accepted it: wait until
        // the 21st is refused, bounded.
        let start = Instant::now();
        let refused = loop {
            let mut extra = TcpStream::connect(&addr).expect("connect");
            extra
                .write_all(b"GET /things HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            let (got, _) = read_until_closed(&mut extra, Duration::from_secs(5));
            let text = String::from_utf8_lossy(&got).into_owned();
            if text.starts_with("HTTP/1.1 503") || start.elapsed() > Duration::from_secs(20) {
                break text;
            }
        };
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(
            refused.contains(r#"{"code":503,"message":"Too many connections"}"#),
            "{refused}"
        );
        drop(idle);
        // Once they close, new clients are served again.
        let start = Instant::now();
        loop {
            match http.try_request("GET", "/things", None) {
                Ok(r) if r.status == 200 => break,
                other => assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "not served again after the idle connections closed: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    checks.await.expect("the connection-limit checks");
    assert!(
        server
            .log()
            .contains("refusing HTTP connections beyond http.max_connections"),
        "{}",
        server.log()
    );
    assert_mqtt_serves(&server, "after-limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_beyond_a_things_rate_get_429_and_other_things_are_served() {
    let (dir, data) = temp_data();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "[limits]\nrequests_per_second_per_thing = 3\n").expect("write config");
    let server = Server::start_http(&data, &["--config", config.to_str().expect("utf-8")]);
    let http = Http::new(&server.http_base());
    let checks = tokio::task::spawn_blocking(move || {
        let update = json!({"state": {"desired": {"n": 1}}});
        let statuses: Vec<u16> = (0..10)
            .map(|_| http.post("/things/busy/shadow", &update).status)
            .collect();
        assert!(statuses.contains(&200), "{statuses:?}");
        let limited = http.post("/things/busy/shadow", &update);
        assert_eq!(
            limited.status,
            429,
            "after {statuses:?}: {:?}",
            limited.json()
        );
        assert_eq!(limited.json()["code"], 429);
        // MQTT and HTTP share the bucket of a thing; another thing has its own.
        assert_eq!(http.post("/things/calm/shadow", &update).status, 200);
    });
    checks.await.expect("the rate checks");
    assert_mqtt_serves(&server, "after-429").await;
}
