//! A fleet of 100 `shade-agent` processes against one `shade serve`, with
//! offline edits on both sides, converging after the broker comes back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shade_tests::agent::{
    desire, is_converged, report, state, synced_view, write_agent_config, Agent, AgentSpec, Broker,
    Dashboard, Deadline,
};

/// Agents started (or CLI commands run) at once: two cores, debug builds.
const BATCH: usize = 10;
/// Bound for the whole fleet to converge after the broker is back.
const FLEET_CONVERGE: Duration = Duration::from_secs(60);

/// Things with one agent each; one more thing has two agents.
const SOLO: usize = 98;
const SHARED_THING: &str = "fleet-shared";

fn solo_thing(i: usize) -> String {
    format!("fleet-{i:02}")
}

/// The `report` and then `desire` commands for one agent's data directory.
/// One directory's commands run one after the other: two commands writing
/// the same stopped replica at once do not both succeed (see
/// `concurrent_reports_to_a_stopped_agent_all_succeed` in agent_e2e.rs).
#[derive(Debug, Clone)]
struct Edits {
    data: PathBuf,
    report: Vec<String>,
    desire: Vec<String>,
}

impl Edits {
    fn report(data: &std::path::Path, pairs: &[&str]) -> Edits {
        Edits {
            data: data.to_owned(),
            report: pairs.iter().map(|p| (*p).to_owned()).collect(),
            desire: Vec::new(),
        }
    }
}

/// Runs the edits, [`BATCH`] directories at a time; each command must exit 0.
async fn run_edits(edits: Vec<Edits>) {
    for chunk in edits.chunks(BATCH) {
        let mut set = tokio::task::JoinSet::new();
        for e in chunk.iter().cloned() {
            set.spawn(async move {
                for (pairs, is_desire) in [(&e.report, false), (&e.desire, true)] {
                    let pairs: Vec<&str> = pairs.iter().map(String::as_str).collect();
                    match (pairs.is_empty(), is_desire) {
                        (true, _) => {}
                        (false, false) => report(&e.data, &pairs).await,
                        (false, true) => desire(&e.data, &pairs).await,
                    }
                }
            });
        }
        while let Some(done) = set.join_next().await {
            done.expect("a report/desire command failed");
        }
    }
}

/// Starts the stopped agents again, [`BATCH`] at a time, each batch ready
/// (socket answering) before the next starts.
fn restart_stopped(agents: &mut [Agent]) {
    for chunk in agents.chunks_mut(BATCH) {
        let mut started = Vec::new();
        for agent in chunk.iter_mut() {
            if !agent.is_running() {
                agent.restart_nowait();
                started.push(agent);
            }
        }
        for agent in started {
            agent.wait_ready();
        }
    }
}

/// `state --json` of every data directory, [`BATCH`] at a time.
async fn states(dirs: &[PathBuf]) -> Vec<Value> {
    let mut out = Vec::with_capacity(dirs.len());
    for chunk in dirs.chunks(BATCH) {
        let mut set = tokio::task::JoinSet::new();
        for (i, data) in chunk.iter().cloned().enumerate() {
            set.spawn(async move { (i, state(&data).await) });
        }
        let mut got = set.join_all().await;
        got.sort_by_key(|(i, _)| *i);
        out.extend(got.into_iter().map(|(_, s)| s));
    }
    out
}

/// Polls every agent against the broker until all are converged.
async fn wait_fleet_converged(
    dash: &mut Dashboard,
    agents: &[Agent],
    within: Duration,
) -> Vec<(Value, Value)> {
    let deadline = Deadline::new("convergence of the whole fleet", within);
    let mut done: Vec<Option<(Value, Value)>> = vec![None; agents.len()];
    loop {
        let waiting: Vec<usize> = (0..agents.len()).filter(|&i| done[i].is_none()).collect();
        let dirs: Vec<PathBuf> = waiting
            .iter()
            .map(|&i| agents[i].data().to_owned())
            .collect();
        let things: Vec<&str> = waiting.iter().map(|&i| agents[i].thing()).collect();
        let agent_states = states(&dirs).await;
        let broker_docs = dash.get_many(&things).await;
        let mut last = String::new();
        for ((&i, s), b) in waiting.iter().zip(agent_states).zip(broker_docs) {
            if is_converged(&s, b.as_ref()) {
                done[i] = Some((s, b.expect("converged")));
            } else if last.is_empty() {
                let b = b.map_or_else(|| "(no shadow)".to_owned(), |b| b.to_string());
                last = format!(
                    "{} ({}):\n  agent:  {s}\n  broker: {b}",
                    agents[i].thing(),
                    agents[i].data().display()
                );
            }
        }
        let left = done.iter().filter(|d| d.is_none()).count();
        if left == 0 {
            return done.into_iter().flatten().collect();
        }
        if deadline.left().is_zero() {
            for (i, agent) in agents.iter().enumerate() {
                if done[i].is_none() {
                    agent.print_logs();
                }
            }
        }
        deadline
            .tick(&format!("{left} agents not converged; first: {last}"))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_agents_with_offline_edits_all_converge() {
    let t0 = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("shade-agent-fleet-")
        .tempdir()
        .expect("create a temp dir");
    let config = write_agent_config(dir.path(), "");
    let mut broker = Broker::start(&dir.path().join("broker"));
    let agents_dir = dir.path().join("agents");
    std::fs::create_dir_all(&agents_dir).expect("create the agents dir");

    let specs: Vec<(PathBuf, AgentSpec)> = (0..SOLO)
        .map(|i| AgentSpec::thing(&solo_thing(i)).config(&config))
        .map(|spec| (agents_dir.join(&spec.thing), spec))
        .chain(["a", "b"].map(|s| {
            let spec = AgentSpec::thing(SHARED_THING)
                .client_id(&format!("{SHARED_THING}-{s}"))
                .config(&config);
            (agents_dir.join(format!("{SHARED_THING}-{s}")), spec)
        }))
        .collect();
    let mut agents: Vec<Agent> = Vec::new();
    for chunk in specs.chunks(BATCH) {
        let mut batch: Vec<Agent> = chunk
            .iter()
            .map(|(data, spec)| Agent::spawn(data, broker.port(), spec.clone()))
            .collect();
        for agent in &mut batch {
            // 100 log tails on a failure are unreadable: the waits print the laggards'.
            agent.show_log_on_panic = false;
            agent.wait_ready();
        }
        agents.extend(batch);
    }
    let deadline = Deadline::new("every agent connected once", Duration::from_secs(60));
    loop {
        let waiting = agents.iter().filter(|a| a.connects_logged() == 0).count();
        if waiting == 0 {
            break;
        }
        deadline
            .tick(&format!("{waiting} agents not connected yet"))
            .await;
    }
    let started = t0.elapsed();

    // Every agent reports once online, so every thing exists on the broker.
    // (The second agent of the shared thing uses its own key: the same key
    // from both would be a conflict, even with equal values.)
    let boot = agents.iter().enumerate().map(|(i, a)| {
        Edits::report(
            a.data(),
            &[if i == SOLO + 1 { "boot_b=1" } else { "boot=1" }],
        )
    });
    run_edits(boot.collect()).await;
    let mut dash = Dashboard::connect(broker.port(), "dash-fleet").await;
    wait_fleet_converged(&mut dash, &agents, FLEET_CONVERGE).await;
    drop(dash);
    let baseline = t0.elapsed();

    // The broker dies. Half of the agents stop too and are edited straight
    // in their replicas; the others are edited through the running agent.
    broker.kill9();
    for agent in agents.iter_mut().step_by(2) {
        agent.terminate();
    }
    let mut offline: Vec<Edits> = Vec::new();
    for (i, agent) in agents.iter().enumerate().take(SOLO) {
        let mut edits = Edits::report(
            agent.data(),
            &[&format!("offline={i}"), &format!("name=agent-{i}")],
        );
        if i % 5 == 0 {
            edits.desire.push("mode=eco".to_owned());
        }
        offline.push(edits);
    }
    offline.push(Edits::report(
        agents[SOLO].data(),
        &["shared=a", "only_a=1"],
    ));
    offline.push(Edits::report(
        agents[SOLO + 1].data(),
        &["shared=b", "only_b=1"],
    ));
    run_edits(offline).await;

    // The broker comes back on the same port; a dashboard edits desired of
    // every fourteenth thing at once. Those agents are among the stopped
    // ones, so the edits are surely concurrent with the devices' offline
    // edits (a conflict where the device desired `mode` too); a running
    // agent might sync first and make the dashboard's edit a plain overwrite.
    broker.restart();
    let back = Instant::now();
    let mut dash = Dashboard::connect(broker.port(), "dash-fleet-2").await;
    for i in (0..SOLO).step_by(14) {
        dash.update(
            &solo_thing(i),
            json!({"desired": {"mode": "boost", "level": i}}),
        )
        .await;
    }
    restart_stopped(&mut agents);
    let results = wait_fleet_converged(&mut dash, &agents, FLEET_CONVERGE).await;
    let converged = back.elapsed();

    for (i, (agent_state, broker_doc)) in results.iter().enumerate().take(SOLO) {
        let thing = solo_thing(i);
        assert_eq!(
            broker_doc["state"]["reported"],
            json!({"boot": 1, "offline": i, "name": format!("agent-{i}")}),
            "{thing}: {broker_doc}"
        );
        let want_desired = match (i % 5 == 0, i % 14 == 0) {
            (false, false) => Value::Null,
            (true, false) => json!({"mode": "eco"}),
            (false, true) => json!({"mode": "boost", "level": i}),
            // Concurrent: lww keeps one mode; the other is the one conflict.
            (true, true) => {
                let mode = &broker_doc["state"]["desired"]["mode"];
                assert!(mode == "eco" || mode == "boost", "{thing}: {broker_doc}");
                assert_eq!(
                    broker_doc["conflicts"].as_array().map(Vec::len),
                    Some(1),
                    "{thing}: {broker_doc}"
                );
                json!({"mode": mode, "level": i})
            }
        };
        assert_eq!(
            broker_doc["state"]["desired"], want_desired,
            "{thing}: {broker_doc}"
        );
        if !(i % 5 == 0 && i % 14 == 0) {
            assert_eq!(broker_doc["conflicts"], json!([]), "{thing}: {broker_doc}");
        }
        assert_eq!(synced_view(agent_state), synced_view(broker_doc), "{thing}");
    }
    for (agent_state, broker_doc) in &results[SOLO..] {
        let reported = &broker_doc["state"]["reported"];
        for key in ["boot", "boot_b", "only_a", "only_b"] {
            assert_eq!(reported[key], 1, "{key}: {broker_doc}");
        }
        assert!(
            reported["shared"] == "a" || reported["shared"] == "b",
            "{broker_doc}"
        );
        let conflicts = broker_doc["conflicts"].as_array().expect("conflicts list");
        assert_eq!(
            conflicts.len(),
            1,
            "the two agents' concurrent `shared` is one conflict: {broker_doc}"
        );
        assert_eq!(
            (
                conflicts[0]["section"].as_str(),
                conflicts[0]["path"].as_str()
            ),
            (Some("reported"), Some("shared"))
        );
        assert_eq!(synced_view(agent_state), synced_view(broker_doc));
    }

    // A measurement, not an assertion: resident memory of the idle fleet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut rss: Vec<u64> = agents.iter().map(Agent::rss_kib).collect();
    rss.sort_unstable();
    eprintln!(
        "measurement: idle connected agents VmRSS KiB min {} median {} max {} (n = {})",
        rss[0],
        rss[rss.len() / 2],
        rss[rss.len() - 1],
        rss.len()
    );
    eprintln!(
        "fleet timings: all 100 connected {started:?}; baseline converged {baseline:?}; \
         converged {converged:?} after the broker came back; total {:?}",
        t0.elapsed()
    );
}
