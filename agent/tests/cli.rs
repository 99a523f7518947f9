//! The `shade-agent` one-shot commands without a broker: usage errors,
//! `KEY=VALUE` parsing, durable offline writes and `state`.
//!
//! (Living in `agent/tests/` also makes `cargo test --workspace` build the
//! `shade-agent` binary the end-to-end tests in `tests/` run.)

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shade-agent"))
        .args(args)
        .output()
        .expect("run shade-agent")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `shade-agent run` against a loopback port where nothing listens: it
/// creates its replica and serves its socket, but never connects.
fn run_offline(data: &str, thing: &str) -> std::process::Child {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let broker = format!("mqtt://127.0.0.1:{port}");
    Command::new(env!("CARGO_BIN_EXE_shade-agent"))
        .args(["run", "--broker", &broker, "--thing", thing, "--data", data])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start shade-agent run")
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(
        agent(&["report"]).status.code(),
        Some(2),
        "report needs KEY=VALUE"
    );
    assert_eq!(agent(&["frobnicate"]).status.code(), Some(2));
    let help = agent(&["report", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("Example"));
}

#[test]
fn a_bad_assignment_is_one_clear_line_and_exit_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path");
    let out = agent(&["report", "--data", data, "novalue"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("KEY=VALUE"), "{}", stderr(&out));
}

#[test]
fn state_of_a_directory_without_a_replica_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = agent(&["state", "--data", dir.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no replica"), "{}", stderr(&out));
}

/// A replica made by `run` (against a port where nothing listens) takes
/// writes from `report` and `desire`, through the running agent's socket
/// and, once it stopped, straight into the replica; `state --json` shows
/// them as pending, with dotted keys nested and `null` deleting.
#[test]
fn offline_writes_are_durable_and_pending() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("d");
    let data_s = data.to_str().expect("utf-8");
    let mut run = run_offline(data_s, "lamp");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = agent(&[
            "report",
            "--data",
            data_s,
            "light.level=80",
            "name=kitchen lamp",
            "gone=1",
        ]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "report never succeeded: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = run.kill();
    let _ = run.wait();
    let out = agent(&["report", "--data", data_s, "gone=null", "light.on=true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = agent(&["desire", "--data", data_s, "color=\"blue\""]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = agent(&["state", "--data", data_s, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("state --json is JSON");
    assert_eq!(
        doc["state"]["reported"],
        json!({"light": {"level": 80, "on": true}, "name": "kitchen lamp"})
    );
    assert_eq!(doc["state"]["desired"], json!({"color": "blue"}));
    assert_eq!(doc["state"]["delta"], json!({"color": "blue"}));
    assert_eq!(doc["connected"], Value::Bool(false));
    assert!(doc["pending"].as_u64().is_some_and(|n| n >= 4), "{doc}");
}

/// A write that would make the document bigger than the broker accepts is
/// refused on the device at once, instead of waiting forever for a broker
/// that would refuse it.
#[test]
fn a_write_past_the_document_limit_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("d");
    let data_s = data.to_str().expect("utf-8");
    let mut run = run_offline(data_s, "big");
    let big = format!("blob=\"{}\"", "x".repeat(9000));
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = agent(&["report", "--data", data_s, &big]);
        if stderr(&out).contains("max_document_bytes") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = run.kill();
    let _ = run.wait();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("max_document_bytes"),
        "{}",
        stderr(&out)
    );
    let small = agent(&["report", "--data", data_s, "ok=1"]);
    assert!(small.status.success(), "{}", stderr(&small));
}

/// A write nesting deeper than the broker's `max_depth` is refused on the
/// device at once: the broker would drop every `SyncUp` carrying it.
#[test]
fn a_write_past_the_depth_limit_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("d");
    let data_s = data.to_str().expect("utf-8");
    let mut run = run_offline(data_s, "deep");
    // Nine keys: one level past the default of 8.
    let deep = "a.b.c.d.e.f.g.h.i=1";
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = agent(&["report", "--data", data_s, deep]);
        if stderr(&out).contains("max_depth") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = run.kill();
    let _ = run.wait();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nests 9 levels"), "{}", stderr(&out));
    let ok = agent(&["report", "--data", data_s, "a.b.c.d.e.f.g.h=1"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
}
