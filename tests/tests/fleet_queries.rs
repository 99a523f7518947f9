//! Fleet queries end to end: `shade count` and `shade list --where`
//! online (over MQTT), over HTTP (`/count`, `/things?where=`) and offline
//! (`--data` of the stopped broker) give the same answers; a bad
//! expression is refused with its position; a live count
//! (`/count/stream`) moves with each change.

use std::time::Duration;

use serde_json::{json, Value};
use shade_tests::{run_shade, temp_data, Http, Mqtt, Server};

const WHERE: &str = r#"reported.fw < 2.0 and (desired.mode = "eco" or not exists(reported.temp))"#;

/// 30 shadows over MQTT: fw 1.0 or 2.0, mode eco/on/off, temp on some.
async fn make_fleet(server: &Server) {
    let mut mqtt = Mqtt::connect(server.port(), "fleet-maker").await;
    mqtt.subscribe("$aws/things/+/shadow/update/accepted").await;
    for i in 0..30u64 {
        let mode = ["eco", "on", "off"][(i % 3) as usize];
        let mut reported = json!({"fw": if i % 2 == 0 { 1.0 } else { 2.0 }});
        if i % 5 != 0 {
            reported["temp"] = json!(20 + i);
        }
        let reply = mqtt
            .request(
                &format!("$aws/things/dev-{i:02}/shadow/update"),
                &json!({"state": {"desired": {"mode": mode}, "reported": reported}, "clientToken": "f"}),
            )
            .await;
        assert!(reply.topic.ends_with("/accepted"), "{reply}");
    }
}

/// What the fleet above must give, computed here from the same rules.
fn expected() -> (Vec<String>, Value) {
    let mut things = Vec::new();
    let mut temps = Vec::new();
    for i in 0..30u64 {
        let eco = i % 3 == 0;
        let fw1 = i % 2 == 0;
        let has_temp = i % 5 != 0;
        if fw1 && (eco || !has_temp) {
            things.push(format!("dev-{i:02}"));
            if has_temp {
                temps.push(20 + i);
            }
        }
    }
    let (min, max) = (temps.iter().min().copied(), temps.iter().max().copied());
    let sum: u64 = temps.iter().sum();
    let stats = json!({"count": temps.len(), "min": min, "max": max, "sum": sum});
    (things, stats)
}

fn shade_json(args: &[&str]) -> Value {
    let (ok, out, err) = run_shade(args, None);
    assert!(ok, "shade {args:?} failed: {err}");
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("shade {args:?} printed no JSON ({e}): {out}"))
}

fn things_of(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|i| i["thing"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn check_stats(count: &Value, stats: &Value, what: &str) {
    for key in ["count", "min", "max", "sum"] {
        assert_eq!(
            count["stats"][key], stats[key],
            "{what}: stats.{key} in {count}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_and_list_where_agree_online_over_http_and_offline() {
    let (_dir, data) = temp_data();
    let mut server = Server::start_http(&data, &[]);
    make_fleet(&server).await;
    let (things, stats) = expected();
    let broker = format!("mqtt://127.0.0.1:{}", server.port());
    let http = Http::new(&server.http_base());

    let online = shade_json(&[
        "count",
        "--broker",
        &broker,
        "--where",
        WHERE,
        "--by",
        "desired.mode",
        "--stats",
        "reported.temp",
        "--json",
    ]);
    assert_eq!(online["count"], things.len(), "{online}");
    check_stats(&online, &stats, "online");
    let by_total: u64 = online["by"]
        .as_object()
        .expect("by")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(by_total, things.len() as u64, "the groups add up: {online}");
    let listed = shade_json(&["list", "--broker", &broker, "--where", WHERE, "--json"]);
    assert_eq!(things_of(&listed), things);

    let (over_http, listed_http) = tokio::task::spawn_blocking(move || {
        let q = |s: &str| {
            s.replace(' ', "%20")
                .replace('"', "%22")
                .replace('<', "%3C")
                .replace('(', "%28")
                .replace(')', "%29")
                .replace('=', "%3D")
        };
        let count = http.get(&format!(
            "/count?where={}&by=desired.mode&stats=reported.temp",
            q(WHERE)
        ));
        assert_eq!(count.status, 200, "{:?}", count.json());
        let list = http.get(&format!("/things?where={}", q(WHERE)));
        assert_eq!(list.status, 200, "{:?}", list.json());
        (count.json(), list.json()["results"].clone())
    })
    .await
    .expect("HTTP");
    assert_eq!(over_http, online, "HTTP and MQTT counts agree");
    assert_eq!(things_of(&listed_http), things);

    // Offline, over the stopped broker's data: the same answers.
    server.terminate();
    let data = data.to_str().expect("utf-8");
    let offline = shade_json(&[
        "count",
        "--data",
        data,
        "--where",
        WHERE,
        "--by",
        "desired.mode",
        "--stats",
        "reported.temp",
        "--json",
    ]);
    assert_eq!(offline, online, "offline and online counts agree");
    let listed = shade_json(&["list", "--data", data, "--where", WHERE, "--json"]);
    assert_eq!(things_of(&listed), things);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_fleet_expression_is_refused_with_its_position() {
    let (_dir, data) = temp_data();
    let server = Server::start_http(&data, &[]);
    let broker = format!("mqtt://127.0.0.1:{}", server.port());
    let (ok, _, err) = run_shade(
        &["count", "--broker", &broker, "--where", "reported.fw <"],
        None,
    );
    assert!(!ok);
    assert!(err.contains("at 13"), "{err}");
    let (ok, _, err) = run_shade(
        &["list", "--broker", &broker, "--where", "desired.mode = eco"],
        None,
    );
    assert!(!ok);
    assert!(err.contains("at 15"), "{err}");
    let http = Http::new(&server.http_base());
    tokio::task::spawn_blocking(move || {
        for path in [
            "/count?where=(a%20%3D%201",
            "/things?where=a%20%3D%3D%3D%201",
            "/count?by=a..b",
            "/count/stream?stats=%22",
        ] {
            let r = http.get(path);
            let doc = r.json();
            assert_eq!(r.status, 400, "{path}: {doc}");
            assert!(
                doc["message"].as_str().unwrap_or_default().contains("at "),
                "{path}: {doc}"
            );
        }
    })
    .await
    .expect("HTTP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_count_moves_with_each_change() {
    let (_dir, data) = temp_data();
    let server = Server::start_http(&data, &[]);
    make_fleet(&server).await;
    let base = server.http_base();
    let stream = tokio::task::spawn_blocking(move || {
        Http::new(&base).count_stream("?where=reported.fw%20%3C%202&by=desired.mode")
    })
    .await
    .expect("open");
    let (stream, first) = next(stream).await;
    // fw 1.0 on the even ones: 15, by mode.
    assert_eq!(first["count"], 15, "{first}");
    let mut mqtt = Mqtt::connect(server.port(), "fleet-changer").await;
    mqtt.subscribe("$aws/things/+/shadow/update/accepted").await;
    mqtt.subscribe("$aws/things/+/shadow/delete/accepted").await;
    // dev-01 (fw 2.0, mode on) drops to fw 1.0: one more, under "on".
    let r = mqtt
        .request(
            "$aws/things/dev-01/shadow/update",
            &json!({"state": {"reported": {"fw": 1.0}}, "clientToken": "c1"}),
        )
        .await;
    assert!(r.topic.ends_with("/accepted"), "{r}");
    let (stream, second) = next(stream).await;
    assert_eq!(second["count"], 16, "{second}");
    assert_eq!(
        second["by"]["\"on\""],
        first["by"]["\"on\""].as_u64().unwrap_or(0) + 1,
        "{second}"
    );
    // A change that does not move the count sends nothing; the next one
    // that does (deleting dev-00, counted under "eco") is what comes.
    let r = mqtt
        .request(
            "$aws/things/dev-02/shadow/update",
            &json!({"state": {"reported": {"note": "x"}}, "clientToken": "c2"}),
        )
        .await;
    assert!(r.topic.ends_with("/accepted"), "{r}");
    let r = mqtt
        .request(
            "$aws/things/dev-00/shadow/delete",
            &json!({"clientToken": "c3"}),
        )
        .await;
    assert!(r.topic.ends_with("/accepted"), "{r}");
    let (_stream, third) = next(stream).await;
    assert_eq!(third["count"], 15, "{third}");
    assert_eq!(
        third["by"]["\"eco\""],
        first["by"]["\"eco\""].as_u64().unwrap_or(0) - 1,
        "{third}"
    );
}

async fn next(
    mut stream: shade_tests::http::EventStream,
) -> (shade_tests::http::EventStream, Value) {
    let got = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let e = stream.expect_event("a count");
            (stream, e.data)
        }),
    )
    .await
    .expect("a count within 30 s")
    .expect("read");
    got
}
