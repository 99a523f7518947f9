//! `shade-agent` end to end: real `shade serve` and `shade-agent run`
//! processes, the `report`/`desire`/`state` command lines, rumqttc clients
//! as dashboards, redb on disk on both sides.
//!
//! The "within a second" bounds are the issue's; each is measured from the
//! event it follows (the `report` command's exit, the dashboard's publish),
//! with fine polling. Everything else is bounded generously for debug
//! builds on two busy cores.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shade_tests::agent::{
    agent_cli, desire, report, state, synced_view, wait_converged, wait_state_message,
    write_agent_config, Agent, AgentSpec, Broker, Dashboard, Deadline,
};
use shade_tests::{Mqtt, START_TIMEOUT};

/// The bound for a change to cross between agent and broker.
const ONE_SECOND: Duration = Duration::from_secs(1);
/// Bound for convergence after a reconnect (the test configs cap the
/// reconnect backoff at 1 s).
const CONVERGE: Duration = Duration::from_secs(15);

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shade-agent-e2e-")
        .tempdir()
        .expect("create a temp dir")
}

/// Polls `state --json` until `connected` is `want`.
async fn wait_connection(data: &std::path::Path, want: bool) {
    let deadline = Deadline::new(&format!("agent connected == {want}"), START_TIMEOUT);
    loop {
        let s = state(data).await;
        if s["connected"] == want {
            return;
        }
        deadline.tick(&s.to_string()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_reaches_the_broker_within_a_second() {
    let dir = temp_dir();
    let broker = Broker::start(&dir.path().join("broker"));
    let data = dir.path().join("agent");
    let agent = Agent::start(&data, broker.port(), AgentSpec::thing("lamp-1"));
    agent.wait_connected(START_TIMEOUT).await;

    // A measurement, not an assertion: resident memory of a connected agent
    // left idle for a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!(
        "measurement: idle connected shade-agent VmRSS = {} KiB",
        agent.rss_kib()
    );

    let mut dash = Mqtt::connect(broker.port(), "dash-report").await;
    dash.subscribe("shade/things/lamp-1/state").await;

    let started = Instant::now();
    report(&data, &["temperature=21.5", "light.on=true"]).await;
    let exited = Instant::now();
    let want = json!({"temperature": 21.5, "light": {"on": true}});
    let doc = wait_state_message(&mut dash, "lamp-1", ONE_SECOND, |d| {
        d["state"]["reported"] == want
    })
    .await;
    eprintln!(
        "report -> broker state message: {:?} after `report` exited ({:?} after it started)",
        exited.elapsed(),
        started.elapsed()
    );
    assert_eq!(doc["state"]["reported"], want, "{doc}");

    // The AWS view agrees, and so does the agent once acknowledged.
    let mut dash = Dashboard::connect(broker.port(), "dash-report-get").await;
    let (agent_state, broker_doc) = wait_converged(&mut dash, &data, "lamp-1", CONVERGE).await;
    assert_eq!(broker_doc["state"]["reported"], want, "{broker_doc}");
    assert_eq!(agent_state["pending"], 0, "{agent_state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_change_reaches_agent_and_hook_within_a_second() {
    let dir = temp_dir();
    let broker = Broker::start(&dir.path().join("broker"));
    // The hook keeps each stdin it got (one line each) and reports the delta
    // back, as a device that applied every setting would.
    let stdin_log = dir.path().join("hook-stdin.log");
    let hook = dir.path().join("hook.sh");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\ninput=$(cat)\nprintf '%s\\n' \"$input\" >> '{}'\nprintf '%s\\n' \"$input\"\n", stdin_log.display()),
    )
    .expect("write the hook");
    let data = dir.path().join("agent");
    let spec = AgentSpec::thing("thermostat").on_desired(&format!("sh '{}'", hook.display()));
    let agent = Agent::start(&data, broker.port(), spec);
    agent.wait_connected(START_TIMEOUT).await;
    // Let the agent's first sync make it a known peer of the shadow.
    report(&data, &["online=true"]).await;
    let mut dash = Dashboard::connect(broker.port(), "dash-desired").await;
    wait_converged(&mut dash, &data, "thermostat", CONVERGE).await;
    let mut watcher = Mqtt::connect(broker.port(), "dash-desired-watch").await;
    watcher.subscribe("shade/things/thermostat/state").await;

    let desired = json!({"target": 21, "mode": "heat"});
    let published = Instant::now();
    dash.update("thermostat", json!({"desired": desired})).await;

    // The hook ran with the delta on stdin.
    let deadline = Deadline::new("on-desired hook run with the delta on stdin", ONE_SECOND);
    let hook_input = loop {
        let text = std::fs::read_to_string(&stdin_log).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| *v == desired);
        if let Some(v) = found {
            break v;
        }
        deadline.tick(&format!("hook stdin log: {text:?}")).await;
    };
    let hook_ran = Instant::now();
    eprintln!(
        "dashboard update -> hook ran with the delta: {:?}",
        hook_ran.duration_since(published)
    );
    assert_eq!(hook_input, desired);

    // What the hook printed is reported: the broker's reported holds it and
    // the delta is gone.
    let doc = wait_state_message(&mut watcher, "thermostat", ONE_SECOND, |d| {
        d["state"]["reported"]["target"] == 21 && d["state"]["reported"]["mode"] == "heat"
    })
    .await;
    eprintln!(
        "hook ran -> its report on the broker: {:?}",
        hook_ran.elapsed()
    );
    assert_eq!(
        doc["state"]["reported"],
        json!({"online": true, "target": 21, "mode": "heat"}),
        "{doc}"
    );
    assert!(
        doc["state"].get("delta").is_none_or(Value::is_null),
        "the delta is empty once reported: {doc}"
    );

    let (agent_state, broker_doc) = wait_converged(&mut dash, &data, "thermostat", CONVERGE).await;
    assert_eq!(agent_state["state"]["desired"], desired, "{agent_state}");
    assert!(
        broker_doc["state"].get("delta").is_none_or(Value::is_null),
        "{broker_doc}"
    );
    let runs = std::fs::read_to_string(&stdin_log).unwrap_or_default();
    assert!(
        runs.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v == desired)),
        "the hook only ever saw the delta: {runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_kill9_and_restart_while_agent_reports_converges() {
    let dir = temp_dir();
    let config = write_agent_config(dir.path(), "");
    let mut broker = Broker::start(&dir.path().join("broker"));
    let data = dir.path().join("agent");
    let agent = Agent::start(
        &data,
        broker.port(),
        AgentSpec::thing("meter").config(&config),
    );
    agent.wait_connected(START_TIMEOUT).await;

    // Reports 0..10 with the broker up, 10..20 with it dead, 20..30 after it
    // came back on the same port. Each exits 0: it is durable locally.
    for i in 0..30 {
        if i == 10 {
            // Right after a report exited: its sync/up is in flight.
            broker.kill9();
        }
        if i == 20 {
            broker.restart();
        }
        let counter = format!("counter={i}");
        let slot = format!("slot{}={i}", i % 4);
        report(&data, &[counter.as_str(), slot.as_str()]).await;
    }

    let mut dash = Dashboard::connect(broker.port(), "dash-kill9").await;
    let (agent_state, broker_doc) = wait_converged(&mut dash, &data, "meter", CONVERGE).await;
    let want = json!({"counter": 29, "slot0": 28, "slot1": 29, "slot2": 26, "slot3": 27});
    assert_eq!(broker_doc["state"]["reported"], want, "{broker_doc}");
    assert_eq!(synced_view(&agent_state), synced_view(&broker_doc));
    assert_eq!(agent_state["pending"], 0, "{agent_state}");
    assert_eq!(
        broker_doc["conflicts"],
        json!([]),
        "one writer makes no conflicts: {broker_doc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_concurrent_edits_merge_with_one_conflict_on_both_sides() {
    let dir = temp_dir();
    let config = write_agent_config(dir.path(), "");
    let broker = Broker::start(&dir.path().join("broker"));
    let data = dir.path().join("agent");
    let mut agent = Agent::start(
        &data,
        broker.port(),
        AgentSpec::thing("heater").config(&config),
    );
    agent.wait_connected(START_TIMEOUT).await;
    report(&data, &["online=true"]).await;
    let mut dash = Dashboard::connect(broker.port(), "dash-offline").await;
    dash.update(
        "heater",
        json!({"desired": {"color": "red", "level": 1, "mode": "normal"}}),
    )
    .await;
    // Both sides start from the same document.
    let (agent_state, _) = wait_converged(&mut dash, &data, "heater", CONVERGE).await;
    assert_eq!(
        agent_state["state"]["desired"],
        json!({"color": "red", "level": 1, "mode": "normal"})
    );
    agent.terminate();

    // Concurrent edits: the dashboard changes color and level, the device
    // (no agent running: straight into its replica) color and mode, later.
    dash.update("heater", json!({"desired": {"color": "green", "level": 5}}))
        .await;
    desire(&data, &["color=blue", "mode=eco"]).await;
    let offline = state(&data).await;
    assert_eq!(
        offline["pending"], 2,
        "two device registers wait for the broker: {offline}"
    );

    agent.restart();
    let (agent_state, broker_doc) = wait_converged(&mut dash, &data, "heater", CONVERGE).await;
    // Both non-conflicting edits survive; color goes to the later write (lww).
    let want = json!({"color": "blue", "level": 5, "mode": "eco"});
    assert_eq!(broker_doc["state"]["desired"], want, "{broker_doc}");
    assert_eq!(agent_state["state"]["desired"], want, "{agent_state}");
    for (side, doc) in [("broker", &broker_doc), ("agent", &agent_state)] {
        let conflicts = doc["conflicts"]
            .as_array()
            .unwrap_or_else(|| panic!("{side}: no conflicts list: {doc}"));
        assert_eq!(conflicts.len(), 1, "{side}: exactly one conflict: {doc}");
        let c = &conflicts[0];
        assert_eq!(
            (c["section"].as_str(), c["path"].as_str()),
            (Some("desired"), Some("color")),
            "{side}: {c}"
        );
        assert_eq!(c["kept"]["value"], "blue", "{side}: {c}");
        assert_eq!(c["lost"]["value"], "green", "{side}: {c}");
        assert!(
            c["kept"]["replica"]
                .as_str()
                .is_some_and(|r| r.starts_with("a:")),
            "{side}: {c}"
        );
        assert!(
            c["lost"]["replica"]
                .as_str()
                .is_some_and(|r| r.starts_with("b:")),
            "{side}: {c}"
        );
        assert!(
            c["kept"]["ts"].as_u64() > c["lost"]["ts"].as_u64(),
            "{side}: lww keeps the later write: {c}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_kill9_right_after_report_still_delivers() {
    let dir = temp_dir();
    let config = write_agent_config(dir.path(), "");
    let mut broker = Broker::start(&dir.path().join("broker"));
    let data = dir.path().join("agent");
    let mut agent = Agent::start(
        &data,
        broker.port(),
        AgentSpec::thing("pump").config(&config),
    );
    agent.wait_connected(START_TIMEOUT).await;
    report(&data, &["rpm=100"]).await;
    let mut dash = Dashboard::connect(broker.port(), "dash-agent-kill9").await;
    wait_converged(&mut dash, &data, "pump", CONVERGE).await;
    drop(dash);

    // The broker is gone, so the report cannot be sent; the agent dies
    // right after acknowledging it.
    broker.kill9();
    wait_connection(&data, false).await;
    report(&data, &["rpm=2500", "alarm=true"]).await;
    agent.kill9();
    // `state` reads the file the killed agent left (which redb must
    // repair first) and shows the acknowledged report as pending.
    let left = state(&data).await;
    assert_eq!(
        left["state"]["reported"],
        json!({"rpm": 2500, "alarm": true}),
        "{left}"
    );
    assert_ne!(left["pending"], 0, "{left}");
    // Piped into a reader that is gone (`| head`): no panic, exit 0.
    let mut child = tokio::process::Command::new(shade_tests::agent::agent_binary())
        .arg("state")
        .arg("--data")
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn shade-agent state");
    drop(child.stdout.take());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("shade-agent state exits")
        .expect("its output");
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    broker.restart();
    agent.restart();
    let mut dash = Dashboard::connect(broker.port(), "dash-agent-kill9-2").await;
    let (agent_state, broker_doc) = wait_converged(&mut dash, &data, "pump", CONVERGE).await;
    assert_eq!(
        broker_doc["state"]["reported"],
        json!({"rpm": 2500, "alarm": true}),
        "{broker_doc}"
    );
    assert_eq!(agent_state["pending"], 0, "{agent_state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_kill9_right_after_report_while_connected_still_delivers() {
    let dir = temp_dir();
    let config = write_agent_config(dir.path(), "");
    let broker = Broker::start(&dir.path().join("broker"));
    let data = dir.path().join("agent");
    let mut agent = Agent::start(
        &data,
        broker.port(),
        AgentSpec::thing("valve").config(&config),
    );
    agent.wait_connected(START_TIMEOUT).await;
    // The sync/up may or may not have left: either way nothing is lost.
    report(&data, &["open=true"]).await;
    agent.kill9();
    agent.restart();
    let mut dash = Dashboard::connect(broker.port(), "dash-valve").await;
    let (_, broker_doc) = wait_converged(&mut dash, &data, "valve", CONVERGE).await;
    assert_eq!(
        broker_doc["state"]["reported"],
        json!({"open": true}),
        "{broker_doc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_pending_leaves_converge_after_reconnect() {
    let dir = temp_dir();
    // 1,000 leaves are more than AWS's 8 KiB document: raise the limit.
    let broker_config = dir.path().join("broker.toml");
    std::fs::write(&broker_config, "[limits]\nmax_document_bytes = 1048576\n")
        .expect("write the broker config");
    let config = write_agent_config(dir.path(), "max_document_bytes = 1048576\n");
    let mut broker = Broker::start_with_config(&dir.path().join("broker"), Some(&broker_config));
    let data = dir.path().join("agent");
    let agent = Agent::start(
        &data,
        broker.port(),
        AgentSpec::thing("logger").config(&config),
    );
    agent.wait_connected(START_TIMEOUT).await;
    broker.terminate();
    wait_connection(&data, false).await;

    // Ten writes of a hundred keys each, while the broker is down.
    for w in 0..10 {
        let pairs: Vec<String> = (0..100)
            .map(|j| format!("k{:04}={}", w * 100 + j, w * 100 + j))
            .collect();
        let pairs: Vec<&str> = pairs.iter().map(String::as_str).collect();
        report(&data, &pairs).await;
    }
    let offline = state(&data).await;
    assert_eq!(
        offline["pending"], 1000,
        "pending registers: {}",
        offline["pending"]
    );

    broker.restart();
    let restarted = Instant::now();
    let deadline = Deadline::new("1,000 pending leaves acknowledged", Duration::from_secs(60));
    let mut reconnected = None;
    loop {
        let s = state(&data).await;
        if reconnected.is_none() && s["connected"] == true {
            reconnected = Some(Instant::now());
        }
        if s["pending"] == 0 {
            break;
        }
        deadline
            .tick(&format!(
                "pending {} connected {}",
                s["pending"], s["connected"]
            ))
            .await;
    }
    let acknowledged = Instant::now();
    let mut dash = Dashboard::connect(broker.port(), "dash-thousand").await;
    let (_, broker_doc) = wait_converged(&mut dash, &data, "logger", Duration::from_secs(60)).await;
    let reconnected = reconnected.unwrap_or(acknowledged);
    eprintln!(
        "measurement: 1,000 pending leaves: agent reconnected {:?} after the broker was ready; all acknowledged {:?} after \
         the reconnect was seen ({:?} after the broker was ready); resolution ~ one `state` call",
        reconnected.duration_since(restarted),
        acknowledged.duration_since(reconnected),
        acknowledged.duration_since(restarted),
    );
    let reported = broker_doc["state"]["reported"]
        .as_object()
        .map_or(0, serde_json::Map::len);
    assert_eq!(reported, 1000, "the broker holds every leaf");
    assert_eq!(broker_doc["state"]["reported"]["k0999"], 999);
}

/// `report` asks for `run` to have been started once; that must suffice
/// even when the agent never wrote or heard anything. (Found failing:
/// `Replica::open` persists nothing for a new replica, so the redb file has
/// no state row until the first change and `report` says "no replica".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_after_a_run_that_never_synced_is_accepted() {
    let dir = temp_dir();
    // Nobody listens on this port: the agent never hears from a broker.
    let dead_port = shade_tests::free_port();
    let data = dir.path().join("agent");
    let mut agent = Agent::start(&data, dead_port, AgentSpec::thing("fresh"));
    agent.terminate();
    // `run` has been started once, as `report` asks; the replica must exist.
    let args: Vec<std::ffi::OsString> = vec![
        "report".into(),
        "--data".into(),
        data.clone().into(),
        "x=1".into(),
    ];
    let out = agent_cli(&args).await;
    assert!(
        out.status.success(),
        "report after `run` was stopped exited with {}: {}",
        out.status,
        out.stderr
    );
    assert_eq!(state(&data).await["state"]["reported"], json!({"x": 1}));
}

/// `report` works "whether or not `run` is running", also when two scripts
/// report at once. (Found failing: each opens the redb file directly, the
/// losers get `DatabaseAlreadyOpen`, mapped to "in use by a running
/// shade-agent that does not answer on its socket", exit 1.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_to_a_stopped_agent_all_succeed() {
    let dir = temp_dir();
    let dead_port = shade_tests::free_port();
    let data = dir.path().join("agent");
    let mut agent = Agent::start(&data, dead_port, AgentSpec::thing("busy"));
    report(&data, &["first=0"]).await;
    agent.terminate();

    // Six scripts report at once with no agent running.
    let mut set = tokio::task::JoinSet::new();
    for i in 1..=6 {
        let args: Vec<std::ffi::OsString> = vec![
            "report".into(),
            "--data".into(),
            data.clone().into(),
            format!("k{i}={i}").into(),
        ];
        set.spawn(async move { (i, agent_cli(&args).await) });
    }
    let mut failed = Vec::new();
    for (i, out) in set.join_all().await {
        if !out.status.success() {
            failed.push(format!("k{i}: {} {}", out.status, out.stderr.trim()));
        }
    }
    assert!(
        failed.is_empty(),
        "concurrent reports failed:\n{}",
        failed.join("\n")
    );
    let reported = state(&data).await["state"]["reported"].clone();
    assert_eq!(
        reported,
        json!({"first": 0, "k1": 1, "k2": 2, "k3": 3, "k4": 4, "k5": 5, "k6": 6})
    );
}

/// A device whose data directory was wiped comes back under the same
/// (default) client id, so the same replica id, counting its dots from 1
/// again. (Found failing: the broker's vector already covers those dots, so
/// it skips the new writes as seen and its reply acknowledges them: the
/// agent shows `pending: 0` for a report the broker never took, and never
/// receives the broker's older values either.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_with_a_wiped_data_dir_resyncs_instead_of_losing_reports() {
    let dir = temp_dir();
    let config = write_agent_config(dir.path(), "");
    let broker = Broker::start(&dir.path().join("broker"));
    let data = dir.path().join("agent");
    let mut agent = Agent::start(
        &data,
        broker.port(),
        AgentSpec::thing("kiosk").config(&config),
    );
    agent.wait_connected(START_TIMEOUT).await;
    report(&data, &["a=1", "b=2"]).await;
    let mut dash = Dashboard::connect(broker.port(), "dash-wiped").await;
    wait_converged(&mut dash, &data, "kiosk", CONVERGE).await;

    // A factory reset (or a container without a volume): same thing, same
    // default client id, empty data directory.
    agent.terminate();
    std::fs::remove_dir_all(&data).expect("wipe the agent's data");
    agent.restart();
    agent.wait_connected(START_TIMEOUT).await;
    report(&data, &["c=3"]).await;

    // Once the agent counts c=3 as acknowledged, the broker must hold it.
    let deadline = Deadline::new("c=3 acknowledged (pending 0)", CONVERGE);
    loop {
        let s = state(&data).await;
        if s["pending"] == 0 {
            break;
        }
        deadline.tick(&s.to_string()).await;
    }
    let deadline = Deadline::new("the acknowledged c=3 on the broker", Duration::from_secs(5));
    loop {
        let doc = dash.get("kiosk").await.unwrap_or(Value::Null);
        if doc["state"]["reported"]["c"] == 3 {
            break;
        }
        deadline
            .tick(&format!(
                "the agent has c=3 acknowledged (pending 0); the broker holds {doc}"
            ))
            .await;
    }
    let (agent_state, broker_doc) = wait_converged(&mut dash, &data, "kiosk", CONVERGE).await;
    assert_eq!(
        broker_doc["state"]["reported"],
        json!({"a": 1, "b": 2, "c": 3}),
        "{broker_doc}"
    );
    assert_eq!(
        agent_state["state"]["reported"],
        json!({"a": 1, "b": 2, "c": 3}),
        "{agent_state}"
    );
}

/// A broker that lost its database (restored empty) learns the agent's
/// state again. (Found failing: the agent's `broker_vv` still covers its old
/// writes, so it sends only the new one, computed against a vector the broker
/// no longer has; the broker refuses it as a gap and answers with its empty
/// vector, which the agent joins without noticing the regression: pending
/// stays 1 and the broker stays empty, forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restored_empty_is_refilled_by_the_connected_agent() {
    let dir = temp_dir();
    let config = write_agent_config(dir.path(), "");
    let broker_data = dir.path().join("broker");
    let mut broker = Broker::start(&broker_data);
    let data = dir.path().join("agent");
    let agent = Agent::start(
        &data,
        broker.port(),
        AgentSpec::thing("archive").config(&config),
    );
    agent.wait_connected(START_TIMEOUT).await;
    report(&data, &["a=1", "b=2"]).await;
    let mut dash = Dashboard::connect(broker.port(), "dash-restore").await;
    wait_converged(&mut dash, &data, "archive", CONVERGE).await;
    drop(dash);

    // The broker loses its database (restored from nothing) and comes back.
    broker.terminate();
    std::fs::remove_dir_all(&broker_data).expect("wipe the broker's data");
    broker.restart();
    report(&data, &["c=3"]).await;

    let mut dash = Dashboard::connect(broker.port(), "dash-restore-2").await;
    let (_, broker_doc) = wait_converged(&mut dash, &data, "archive", CONVERGE).await;
    assert_eq!(
        broker_doc["state"]["reported"],
        json!({"a": 1, "b": 2, "c": 3}),
        "{broker_doc}"
    );
}
