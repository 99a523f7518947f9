//! The `shade` command line as an operator runs it: the real binary against
//! a real `shade serve` on a free loopback port with a temporary data
//! directory. Every wait is bounded; every server and watcher is killed by
//! its pid when its guard drops.
//!
//! `list`, `history` and `conflicts` online use the native
//! `shade/ops/request` topic; their tests fail with a timeout against a
//! server that does not answer it yet.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use shade_shared::sync::SyncUp;
use shade_shared::{Patch, ReplicaId, Section, Shadow, VersionVector};

use common::{
    dead_broker, lines, shade, signal, wait_bounded, wait_for_line, Guard, Server, BOUND, SHADE,
};

/// Checks a local ISO 8601 time such as `2026-11-26T12:03:04+01:00`.
fn is_local_iso_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 25
        && b[4] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && matches!(b[19], b'+' | b'-')
        && b[22] == b':'
        && s.chars().filter(char::is_ascii_digit).count() == 18
}

/// Runs `f` on a runtime of its own, for the tests that speak MQTT themselves.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async { tokio::time::timeout(BOUND, f).await.expect("bounded") })
}

/// Connects as `client_id` and waits for the CONNACK.
async fn mqtt(port: u16, client_id: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = AsyncClient::new(options, 1024);
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = events.poll().await.expect("connect") {
            return (client, events);
        }
    }
}

/// The agent `a:lamp-1` writes desired.color = "blue" without having seen
/// the broker's writes, and sends it up: a conflict with the broker's color.
fn agent_writes_concurrently(port: u16, thing: &str) {
    let device = ReplicaId::agent(thing).expect("replica id");
    let mut replica = Shadow::new();
    let patch = Patch::Merge(
        json!({"color": "blue"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    // Later than the broker's write, so it wins under lww.
    let later = shade_broker::cli::now_ms() + 60_000;
    replica.write(&device, Section::Desired, &patch, later);
    let up = SyncUp {
        replica: device,
        changes: replica.changes_since(&VersionVector::new()),
    };
    let payload = up.to_cbor();
    block_on(async {
        let (client, mut events) = mqtt(port, thing).await;
        client
            .subscribe(format!("shade/things/{thing}/sync/down"), QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        loop {
            match events.poll().await.expect("poll") {
                Event::Incoming(Packet::SubAck(_)) => break,
                _ => continue,
            }
        }
        client
            .publish(
                format!("shade/things/{thing}/sync/up"),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .expect("publish");
        // The broker answers with sync/down once the merge is committed.
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("poll") {
                if p.topic.ends_with("/sync/down") {
                    return;
                }
            }
        }
    });
}

#[test]
fn update_get_and_delete_round_trip_through_the_broker() {
    let server = Server::start();
    let run = server
        .shade(&[
            "update",
            "lamp-1",
            "--desired",
            r#"{"color":"red","light":{"level":80}}"#,
        ])
        .ok();
    assert_eq!(run.stdout.trim(), "lamp-1 version 1");
    let run = server
        .shade(&["update", "lamp-1", "--reported", r#"{"color":"blue"}"#])
        .ok();
    assert_eq!(run.stdout.trim(), "lamp-1 version 2");

    let doc = server.shade(&["get", "lamp-1", "--json"]).ok().json();
    assert_eq!(
        doc["state"]["desired"],
        json!({"color": "red", "light": {"level": 80}})
    );
    assert_eq!(doc["state"]["reported"], json!({"color": "blue"}));
    assert_eq!(
        doc["state"]["delta"],
        json!({"color": "red", "light": {"level": 80}})
    );
    assert_eq!(doc["version"], 2);
    assert!(
        doc["metadata"]["desired"]["light"]["level"]["timestamp"].is_u64(),
        "{doc}"
    );
    assert!(doc["timestamp"].is_u64());
    assert_eq!(doc["vv"], json!({"b:local": 2}));
    assert_eq!(doc["conflicts"], json!([]));
    assert!(
        doc.get("clientToken").is_none(),
        "the CLI's token is its own business: {doc}"
    );

    let human = server.shade(&["get", "lamp-1"]).ok().stdout;
    let first = human.lines().next().expect("a title line");
    assert!(first.starts_with("lamp-1  version 2  updated "), "{human}");
    assert!(
        is_local_iso_time(first.rsplit(' ').next().expect("time")),
        "{human}"
    );
    for part in [
        "desired:",
        "reported:",
        "delta:",
        "\"level\": 80",
        "\"color\": \"blue\"",
    ] {
        assert!(human.contains(part), "{part:?} missing from:\n{human}");
    }
    assert!(!human.contains('\x1b'), "no colour on a pipe:\n{human}");

    let run = server
        .shade(&[
            "update",
            "lamp-1",
            "--shadow",
            "cfg",
            "--reported",
            r#"{"fw":"1.2"}"#,
        ])
        .ok();
    assert_eq!(run.stdout.trim(), "lamp-1/cfg version 1");
    let cfg = server
        .shade(&["get", "lamp-1", "--shadow", "cfg", "--json"])
        .ok()
        .json();
    assert_eq!(cfg["state"]["reported"], json!({"fw": "1.2"}));

    let run = server.shade(&["delete", "lamp-1", "--shadow", "cfg"]).ok();
    assert_eq!(run.stdout.trim(), "lamp-1/cfg deleted at version 1");
    server
        .shade(&["get", "lamp-1", "--shadow", "cfg"])
        .fails_with("no such shadow");
    server
        .shade(&["delete", "lamp-1", "--shadow", "cfg"])
        .fails_with("no such shadow");
    // The classic shadow is untouched.
    assert_eq!(
        server.shade(&["get", "lamp-1", "--json"]).ok().json()["version"],
        2
    );
}

/// Clients that connect, ask and disconnect cleanly leave no ERROR in the
/// service's log (rumqttd logs two for each clean disconnect; `shade`
/// drops exactly those), while a real error still shows.
#[test]
fn clients_coming_and_going_leave_no_error_in_the_service_log() {
    let server = Server::start();
    server
        .shade(&["update", "lamp-1", "--desired", r#"{"on":true}"#])
        .ok();
    for _ in 0..3 {
        server.shade(&["get", "lamp-1"]).ok();
    }
    server.shade(&["list"]).ok();
    // The service logged each client's CONNECT: the log was being read.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines = loop {
        let lines = server.log.lines();
        let disconnects = lines.iter().filter(|l| l.contains("Disconnecting")).count();
        if disconnects >= 5 || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        lines.iter().filter(|l| l.contains("Disconnecting")).count() >= 5,
        "the log shows no disconnects: {lines:#?}"
    );
    let errors: Vec<&String> = lines.iter().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "errors in the log: {errors:#?}");
}

#[test]
fn null_deletes_a_key_and_an_expected_version_guards_the_update() {
    let server = Server::start();
    server
        .shade(&["update", "t1", "--desired", r#"{"a":1,"b":2}"#])
        .ok();
    server
        .shade(&["update", "t1", "--desired", r#"{"b":null}"#])
        .ok();
    let doc = server.shade(&["get", "t1", "--json"]).ok().json();
    assert_eq!(doc["state"]["desired"], json!({"a": 1}));

    server
        .shade(&[
            "update",
            "t1",
            "--desired",
            r#"{"a":3}"#,
            "--expect-version",
            "1",
        ])
        .fails_with("version conflict");
    let run = server
        .shade(&[
            "update",
            "t1",
            "--desired",
            r#"{"a":3}"#,
            "--expect-version",
            "2",
        ])
        .ok();
    assert_eq!(run.stdout.trim(), "t1 version 3");
}

#[test]
fn a_missing_shadow_is_one_line_and_exit_1() {
    let server = Server::start();
    let run = server.shade(&["get", "ghost"]);
    run.fails_with("no such shadow: ghost");
    assert_eq!(run.stdout, "");
    server
        .shade(&["delete", "ghost"])
        .fails_with("no such shadow");
}

#[test]
fn an_unreachable_broker_is_named_in_one_line() {
    let url = dead_broker();
    let expected = format!("cannot connect to {url}");
    shade(&["get", "lamp-1", "--broker", &url]).fails_with(&expected);
    shade(&["update", "lamp-1", "--desired", "{}", "--broker", &url]).fails_with(&expected);
    shade(&["delete", "lamp-1", "--broker", &url]).fails_with(&expected);
    shade(&["list", "--broker", &url]).fails_with(&expected);
    shade(&["history", "lamp-1", "--broker", &url]).fails_with(&expected);
    shade(&["conflicts", "--broker", &url]).fails_with(&expected);
    shade(&["watch", "--broker", &url]).fails_with(&expected);
}

#[test]
fn invalid_json_arguments_fail_before_connecting() {
    // Nothing listens there: the argument must be refused first.
    let url = dead_broker();
    shade(&["update", "t", "--desired", "{color: red}", "--broker", &url])
        .fails_with("invalid JSON argument");
    shade(&["update", "t", "--reported", "[1,2]", "--broker", &url])
        .fails_with("invalid JSON argument");
    shade(&["update", "t", "--desired", "42", "--broker", &url])
        .fails_with("must be a JSON object or null");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["get"][..],
        &["get", "bad/name"],
        &["get", "t", "--shadow", "no spaces"],
        &["update", "t"],
        &["update", "t", "--desired", "{}", "--reported", "{}"],
        &["get", "t", "--broker", "ftp://host:21"],
        &["history", "t", "--limit", "0"],
        &["list", "--data", "d", "--broker", "mqtt://127.0.0.1:1883"],
        &["list", "--config", "broker.toml"],
        &["frobnicate"],
    ] {
        let run = shade(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:#?}");
        assert!(!run.stderr.contains("panicked"), "{args:?}: {run:#?}");
    }
}

#[test]
fn every_command_has_help_with_an_example() {
    for command in [
        "get",
        "list",
        "update",
        "delete",
        "watch",
        "history",
        "conflicts",
    ] {
        let run = shade(&[command, "--help"]).ok();
        assert!(
            run.stdout.contains("Examples:"),
            "{command} --help:\n{}",
            run.stdout
        );
        assert!(
            run.stdout.contains(&format!("shade {command}")),
            "{command} --help:\n{}",
            run.stdout
        );
    }
}

#[test]
fn a_running_brokers_data_is_refused_in_one_line() {
    let server = Server::start();
    server
        .shade(&["update", "t1", "--desired", "{\"a\":1}"])
        .ok();
    let data = server.data();
    for args in [
        &["get", "t1", "--data", data][..],
        &["list", "--data", data],
        &["history", "t1", "--data", data],
        &["conflicts", "--data", data],
    ] {
        shade(args).fails_with("is in use by a running shade serve; use --broker instead");
    }
}

#[test]
fn a_stopped_brokers_data_reads_like_the_broker_answers() {
    let mut server = Server::start();
    server
        .shade(&["update", "lamp-1", "--desired", r#"{"color":"red"}"#])
        .ok();
    server
        .shade(&[
            "update",
            "lamp-1",
            "--reported",
            r#"{"color":"red","mode":"eco"}"#,
        ])
        .ok();
    server
        .shade(&[
            "update",
            "lamp-1",
            "--shadow",
            "cfg",
            "--desired",
            r#"{"fw":"1.2"}"#,
        ])
        .ok();
    server
        .shade(&["update", "lamp-2", "--desired", r#"{"on":true}"#])
        .ok();
    server.shade(&["delete", "lamp-2"]).ok();
    server
        .shade(&["update", "other", "--reported", r#"{"x":[1,2]}"#])
        .ok();
    let online = server.shade(&["get", "lamp-1", "--json"]).ok().json();
    server.stop();
    let data = server.data();

    let mut offline = shade(&["get", "lamp-1", "--json", "--data", data])
        .ok()
        .json();
    offline["timestamp"] = online["timestamp"].clone();
    assert_eq!(offline, online, "get --json offline and online");
    let human = shade(&["get", "lamp-1", "--data", data]).ok().stdout;
    assert!(human.starts_with("lamp-1  version 2"), "{human}");
    shade(&["get", "lamp-2", "--data", data]).fails_with("no such shadow");

    let list = shade(&["list", "--json", "--data", data]).ok().json();
    assert_eq!(
        list,
        json!([
            {"thing": "lamp-1", "shadow": null, "version": 2},
            {"thing": "lamp-1", "shadow": "cfg", "version": 1},
            {"thing": "other", "shadow": null, "version": 1},
        ]),
        "deleted shadows are not listed"
    );
    let lamps = shade(&["list", "--prefix", "lamp", "--json", "--data", data])
        .ok()
        .json();
    assert_eq!(lamps.as_array().map(Vec::len), Some(2), "{lamps}");
    let none = shade(&["list", "--prefix", "zzz", "--json", "--data", data])
        .ok()
        .json();
    assert_eq!(none, json!([]));
    let table = shade(&["list", "--data", data]).ok().stdout;
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert_eq!(
        rows[0].split_whitespace().collect::<Vec<_>>(),
        ["THING", "SHADOW", "VERSION"]
    );
    assert_eq!(
        rows[2].split_whitespace().collect::<Vec<_>>(),
        ["lamp-1", "cfg", "1"]
    );
    let column = rows[0].find("VERSION").expect("header");
    assert!(
        rows.iter().all(|r| r.len() > column),
        "aligned columns:\n{table}"
    );
    assert_eq!(rows[1].find('2'), Some(column), "aligned columns:\n{table}");

    let history = shade(&["history", "lamp-1", "--json", "--data", data])
        .ok()
        .json();
    let entries = history.as_array().expect("an array");
    assert_eq!(entries.len(), 2, "{history}");
    assert_eq!(entries[0]["version"], 1);
    assert_eq!(entries[0]["kind"], "update");
    assert_eq!(entries[0]["change"], json!({"desired": {"color": "red"}}));
    assert_eq!(entries[0]["replica"], "b:local");
    assert!(
        entries[0]["author"].as_str().is_some_and(|a| !a.is_empty()),
        "{history}"
    );
    assert!(entries[0]["time"].is_u64());
    assert_eq!(
        entries[1]["change"],
        json!({"reported": {"color": "red", "mode": "eco"}})
    );
    let last = shade(&[
        "history", "lamp-1", "--limit", "1", "--json", "--data", data,
    ])
    .ok()
    .json();
    assert_eq!(last, json!([entries[1]]), "--limit keeps the newest");
    let deleted = shade(&["history", "lamp-2", "--json", "--data", data])
        .ok()
        .json();
    assert_eq!(
        deleted[1]["kind"], "delete",
        "a deleted shadow keeps its history: {deleted}"
    );
    let table = shade(&["history", "lamp-1", "--data", data]).ok().stdout;
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[0].starts_with("TIME"), "{table}");
    assert!(
        is_local_iso_time(rows[1].split_whitespace().next().expect("time")),
        "{table}"
    );
    assert!(
        rows[2].ends_with(r#"reported.color="red" reported.mode="eco""#),
        "{table}"
    );
    shade(&["history", "ghost", "--data", data]).fails_with("no such shadow");

    let conflicts = shade(&["conflicts", "--json", "--data", data]).ok().json();
    assert_eq!(conflicts, json!([]));

    let missing = Path::new(data).join("nope");
    shade(&["list", "--data", missing.to_str().expect("utf-8")]).fails_with("no shade data at");
}

#[test]
fn a_crashed_brokers_data_asks_for_a_repair_in_one_line() {
    let mut server = Server::start();
    server
        .shade(&["update", "t1", "--desired", r#"{"a":1}"#])
        .ok();
    // SIGKILL: redb is left marked as open, which only a writer can repair.
    drop(server.guard.take());
    shade(&["get", "t1", "--data", server.data()]).fails_with("was not closed cleanly");
}

#[test]
fn credentials_go_in_the_connect() {
    let server = Server::start();
    server
        .shade(&[
            "update",
            "t1",
            "--desired",
            "{}",
            "--username",
            "operator",
            "--password",
            "secret",
        ])
        .ok();
    let url = server.url();
    let mut child = Command::new(SHADE)
        .args(["get", "t1", "--json", "--broker", &url])
        .env("SHADE_USERNAME", "operator")
        .env("SHADE_PASSWORD", "secret")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shade get");
    let status = wait_bounded(
        &mut child,
        "shade get with credentials from the environment",
    );
    assert!(status.success(), "{status}");
}

#[test]
fn watch_prints_one_line_per_change_by_another_client() {
    let server = Server::start();
    let url = server.url();
    let mut child = Command::new(SHADE)
        .args(["watch", "--broker", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shade watch");
    let out = lines(child.stdout.take().expect("stdout"));
    let err = lines(child.stderr.take().expect("stderr"));
    let mut watch = Guard(child);
    wait_for_line(&err, "watching", "shade watch");

    server
        .shade(&["update", "lamp-1", "--desired", r#"{"color":"red"}"#])
        .ok();
    let line = out.recv_timeout(BOUND).expect("a line for the update");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(is_local_iso_time(words[0]), "{line}");
    assert_eq!(
        words[1..],
        ["lamp-1", "v1", r#"desired.color="red""#],
        "{line}"
    );

    server
        .shade(&[
            "update",
            "lamp-1",
            "--shadow",
            "cfg",
            "--reported",
            r#"{"a":1}"#,
        ])
        .ok();
    let line = out
        .recv_timeout(BOUND)
        .expect("a line for the named shadow");
    assert!(line.ends_with("  lamp-1/cfg  v1  reported.a=1"), "{line}");

    server
        .shade(&[
            "update",
            "lamp-1",
            "--desired",
            r#"{"color":null,"on":true}"#,
        ])
        .ok();
    let line = out
        .recv_timeout(BOUND)
        .expect("a line for the second update");
    assert!(
        line.ends_with(r#"  lamp-1  v2  desired.color=null desired.on=true"#),
        "{line}"
    );

    server.shade(&["delete", "lamp-1"]).ok();
    let line = out.recv_timeout(BOUND).expect("a line for the delete");
    assert!(line.ends_with("  lamp-1  v2  deleted"), "{line}");

    // Ctrl-C ends it cleanly.
    signal(watch.0.id(), "INT");
    let status = wait_bounded(&mut watch.0, "shade watch after SIGINT");
    assert!(status.success(), "shade watch exited with {status}");
    assert!(
        out.recv_timeout(Duration::from_millis(200)).is_err(),
        "nothing else on stdout"
    );
}

#[test]
fn watch_thing_sees_only_that_thing() {
    let server = Server::start();
    let url = server.url();
    let mut child = Command::new(SHADE)
        .args(["watch", "lamp-2", "--broker", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shade watch");
    let out = lines(child.stdout.take().expect("stdout"));
    let err = lines(child.stderr.take().expect("stderr"));
    let _watch = Guard(child);
    wait_for_line(&err, "watching", "shade watch lamp-2");
    server
        .shade(&["update", "lamp-1", "--desired", r#"{"x":1}"#])
        .ok();
    server
        .shade(&["update", "lamp-2", "--desired", r#"{"x":2}"#])
        .ok();
    let line = out.recv_timeout(BOUND).expect("a line");
    assert!(line.ends_with("  lamp-2  v1  desired.x=2"), "{line}");
}

// ---- online list, history and conflicts: the native shade/ops/request topic ----

#[test]
fn online_list_history_and_conflicts_print_what_the_offline_reads_print() {
    let mut server = Server::start();
    server
        .shade(&[
            "update",
            "lamp-1",
            "--desired",
            r#"{"color":"red","level":1}"#,
        ])
        .ok();
    server
        .shade(&[
            "update",
            "lamp-1",
            "--shadow",
            "cfg",
            "--reported",
            r#"{"fw":"1.2"}"#,
        ])
        .ok();
    server
        .shade(&["update", "lamp-2", "--desired", r#"{"on":true}"#])
        .ok();
    server
        .shade(&["update", "other", "--desired", r#"{"on":false}"#])
        .ok();
    server.shade(&["delete", "other"]).ok();
    agent_writes_concurrently(server.port, "lamp-1");
    let t = ["--timeout", "5"];

    let mut list = server
        .shade(&[&["list", "--json"][..], &t[..]].concat())
        .ok()
        .json();
    // lamp-1 connected (the agent's client id is its thing's name), so its
    // rows carry its presence; lamp-2 never did.
    for row in list.as_array_mut().into_iter().flatten() {
        let seen = row["thing"] == "lamp-1";
        let row = row.as_object_mut().expect("an object");
        assert_eq!(
            row.remove("lastSeen").is_some_and(|v| v.is_u64()),
            seen,
            "{row:?}"
        );
        assert_eq!(
            row.remove("connected").is_some_and(|v| v.is_boolean()),
            seen
        );
    }
    assert_eq!(
        list,
        json!([
            {"thing": "lamp-1", "shadow": null, "version": 2},
            {"thing": "lamp-1", "shadow": "cfg", "version": 1},
            {"thing": "lamp-2", "shadow": null, "version": 1},
        ])
    );
    let prefixed = server
        .shade(&[&["list", "--prefix", "lamp-1", "--json"][..], &t[..]].concat())
        .ok()
        .json();
    assert_eq!(prefixed.as_array().map(Vec::len), Some(2), "{prefixed}");
    let table = server.shade(&[&["list"][..], &t[..]].concat()).ok().stdout;
    assert_eq!(table.lines().count(), 4, "{table}");

    let history = server
        .shade(&[&["history", "lamp-1", "--json"][..], &t[..]].concat())
        .ok()
        .json();
    let entries = history.as_array().expect("an array");
    assert_eq!(entries.len(), 2, "{history}");
    assert_eq!(entries[0]["kind"], "update");
    assert_eq!(entries[1]["kind"], "sync");
    assert_eq!(entries[1]["replica"], "a:lamp-1");
    let newest = server
        .shade(&[&["history", "lamp-1", "--limit", "1", "--json"][..], &t[..]].concat())
        .ok()
        .json();
    assert_eq!(newest, json!([entries[1]]));
    server
        .shade(&[&["history", "ghost"][..], &t[..]].concat())
        .fails_with("no such shadow");

    let conflicts = server
        .shade(&[&["conflicts", "--json"][..], &t[..]].concat())
        .ok()
        .json();
    assert_eq!(conflicts.as_array().map(Vec::len), Some(1), "{conflicts}");
    let c = &conflicts[0];
    assert_eq!(
        (&c["thing"], &c["shadow"], &c["section"], &c["path"]),
        (
            &json!("lamp-1"),
            &Value::Null,
            &json!("desired"),
            &json!("color")
        )
    );
    assert_eq!(
        (&c["kept"]["value"], &c["kept"]["replica"]),
        (&json!("blue"), &json!("a:lamp-1"))
    );
    assert_eq!(
        (&c["lost"]["value"], &c["lost"]["replica"]),
        (&json!("red"), &json!("b:local"))
    );
    let only_lamp_2 = server
        .shade(&[&["conflicts", "lamp-2", "--json"][..], &t[..]].concat())
        .ok()
        .json();
    assert_eq!(only_lamp_2, json!([]));
    let table = server
        .shade(&[&["conflicts"][..], &t[..]].concat())
        .ok()
        .stdout;
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .map(|r| r.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(row.len(), 9, "{table}");
    assert_eq!(
        row[..5],
        ["lamp-1", "-", "desired.color", "\"blue\"", "a:lamp-1"],
        "{table}"
    );
    assert_eq!(row[6..8], ["\"red\"", "b:local"], "{table}");
    let human = server.shade(&["get", "lamp-1"]).ok().stdout;
    assert!(
        human.contains("conflicts:") && human.contains(r#"desired.color  kept "blue""#),
        "{human}"
    );

    server.stop();
    let data = server.data();
    // Offline, lamp-1 keeps its presence as last recorded.
    let mut offline = shade(&["list", "--json", "--data", data]).ok().json();
    for row in offline.as_array_mut().into_iter().flatten() {
        if let Some(row) = row.as_object_mut() {
            let seen = row.remove("lastSeen").is_some();
            assert_eq!(seen, row["thing"] == "lamp-1", "{row:?}");
            row.remove("connected");
        }
    }
    assert_eq!(offline, list);
    assert_eq!(
        shade(&["history", "lamp-1", "--json", "--data", data])
            .ok()
            .json(),
        history
    );
    assert_eq!(
        shade(&["conflicts", "--json", "--data", data]).ok().json(),
        conflicts
    );
}

#[test]
fn online_list_walks_every_page() {
    const SHADOWS: usize = 1_201;
    let mut server = Server::start();
    let port = server.port;
    // Many shadows, fast: one client, QoS 1, counted by their accepted replies.
    block_on(async move {
        let (client, mut events) = mqtt(port, "bulk-writer").await;
        client
            .subscribe("$aws/things/+/shadow/update/accepted", QoS::AtMostOnce)
            .await
            .expect("subscribe");
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("poll") {
                break;
            }
        }
        let writer = client.clone();
        // The service answers 429 beyond `max_inflight_per_client` (1000)
        // requests of one client waiting for the store; a bulk writer keeps
        // under it, as a well-behaved provisioning script would.
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = acked.clone();
        tokio::spawn(async move {
            for i in 0..SHADOWS {
                while i - seen.load(std::sync::atomic::Ordering::Relaxed) >= 500 {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                let topic = format!("$aws/things/bulk-{i:05}/shadow/update");
                let body = json!({"state": {"reported": {"i": i}}}).to_string();
                writer
                    .publish(topic, QoS::AtLeastOnce, false, body)
                    .await
                    .expect("publish");
            }
        });
        let mut accepted = 0;
        while accepted < SHADOWS {
            if let Event::Incoming(Packet::Publish(_)) = events.poll().await.expect("poll") {
                accepted += 1;
                acked.store(accepted, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let check = |list: Value| {
        let items = list.as_array().expect("an array");
        assert_eq!(items.len(), SHADOWS);
        assert!(
            items
                .windows(2)
                .all(|w| w[0]["thing"].as_str() < w[1]["thing"].as_str()),
            "key order, no repeats"
        );
        assert_eq!(
            items[SHADOWS - 1],
            json!({"thing": format!("bulk-{:05}", SHADOWS - 1), "shadow": null, "version": 1})
        );
    };
    check(
        server
            .shade(&["list", "--json", "--timeout", "5"])
            .ok()
            .json(),
    );
    server.stop();
    check(
        shade(&["list", "--json", "--data", server.data()])
            .ok()
            .json(),
    );
    let table = shade(&["list", "--data", server.data()]).ok().stdout;
    assert_eq!(table.lines().count(), SHADOWS + 1);
}
