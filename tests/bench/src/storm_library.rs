//! `storm --library`: the storm with the real agent: N `shade_agent::Agent`s
//! (the library `shade-agent run` is built on: its replica in redb, its
//! sync loop, its reconnection and backoff), in this process, each with
//! its own thing, client id and data directory.
//!
//! 1. Every agent reports a value and syncs (setup, not timed; started
//!    1.5 ms apart).
//! 2. The broker is killed (SIGKILL); once every agent saw it go, each
//!    reports a second value offline (a durable local write, as on a
//!    device; all at once), and the broker is down as long as that takes
//!    (`broker_down_s`): the agents' backoff grows with it.
//! 3. The broker is started again on the same port and data. Timed: from
//!    that spawn until every agent's replica has nothing pending, i.e. the
//!    broker acknowledged the offline write. The agents are polled every
//!    20 ms, so times are to that resolution.
//!
//! Each agent also holds its redb file open: about two descriptors per
//! agent in this process, beside the server's three per client.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use shade_agent::config::{AgentConfig, Overrides};
use shade_agent::Agent;

use crate::procs::{Shade, ShadeOptions};
use crate::Metrics;

/// How often the agents' replicas are looked at.
const POLL: Duration = Duration::from_millis(20);

fn patch(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn pending(agent: &Agent) -> usize {
    shade_agent::replica::pending(&agent.state())
}

/// Polls until `done(agent)` holds for every agent (recording when each
/// first did) or `within` passes; the times, in order of the agents.
async fn wait_all(
    agents: &[Agent],
    done: impl Fn(&Agent) -> bool,
    within: Duration,
    what: &str,
) -> Result<Vec<Option<Instant>>> {
    let deadline = Instant::now() + within;
    let mut when: Vec<Option<Instant>> = vec![None; agents.len()];
    loop {
        let now = Instant::now();
        for (a, w) in agents.iter().zip(when.iter_mut()) {
            if w.is_none() && done(a) {
                *w = Some(now);
            }
        }
        let left = when.iter().filter(|w| w.is_none()).count();
        if left == 0 {
            return Ok(when);
        }
        if now > deadline {
            eprintln!(
                "storm: {what}: {left} of {} not within {within:?}",
                agents.len()
            );
            return Ok(when);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One storm of `n` library agents on a fresh `shade serve`.
pub(crate) async fn run(
    bins: &std::path::Path,
    n: usize,
    setup_timeout: Duration,
    timeout: Duration,
) -> Result<Metrics> {
    let opts = ShadeOptions {
        max_connections: n + 1000,
        ..ShadeOptions::default()
    };
    let mut shade = Shade::start(bins, &opts)?;
    let dirs = tempfile::Builder::new()
        .prefix("shade-bench-agents-")
        .tempdir()
        .context("create the agents' temp dir")?;
    let setup_start = Instant::now();
    let mut agents = Vec::with_capacity(n);
    for i in 0..n {
        let o = Overrides {
            broker: Some(format!("mqtt://127.0.0.1:{}", shade.port)),
            thing: Some(format!("lib-{i}")),
            client_id: Some(format!("lib-{i}")),
            data_dir: Some(dirs.path().join(format!("a{i}"))),
            ..Overrides::default()
        };
        let config = AgentConfig::load(None, &o)?;
        let agent = Agent::start(config)?;
        agent.report(patch(json!({"n": i, "phase": 1}))).await?;
        agents.push(agent);
        tokio::time::sleep(Duration::from_micros(1_500)).await;
    }
    let synced = wait_all(&agents, |a| pending(a) == 0, setup_timeout, "setup").await?;
    if synced.iter().any(Option::is_none) {
        shutdown(agents, &mut shade).await;
        bail!("the setup did not finish: not every agent synced");
    }
    let setup = setup_start.elapsed();

    shade.kill();
    let killed = Instant::now();
    let gone = wait_all(
        &agents,
        |a| !a.is_connected(),
        Duration::from_secs(60),
        "kill",
    )
    .await?;
    if gone.iter().any(Option::is_none) {
        shutdown(agents, &mut shade).await;
        bail!("not every agent noticed the kill");
    }
    // All at once, as a fleet's devices would: one after another, the
    // fsyncs would keep the broker down for seconds, and the agents' backoff
    // grows with the time it was down.
    let mut writes = tokio::task::JoinSet::new();
    for (i, a) in agents.iter().enumerate() {
        let a = a.clone();
        writes.spawn(async move { a.report(patch(json!({"n": i, "phase": 2}))).await });
    }
    while let Some(w) = writes.join_next().await {
        w.context("an offline write")??;
    }

    let t0 = Instant::now();
    let down = t0.duration_since(killed);
    shade.spawn_only()?;
    // Who was busy while the fleet came back: the server, or the agents
    // (this process: their merges and fsyncs).
    let meter = crate::procs::CpuMeter::start(shade.pid()?);
    let port = shade.port;
    let listening = {
        let proc = shade.proc_mut()?;
        tokio::task::block_in_place(|| proc.wait_mqtt(port))?
    };
    let converged = wait_all(&agents, |a| pending(a) == 0, timeout, "restart").await?;
    let rss = crate::procs::rss_bytes(shade.pid()?).unwrap_or(0);
    let mut m = Metrics::new();
    meter.finish(&mut m, "");
    let mut times: Vec<u32> = converged
        .iter()
        .flatten()
        .map(|t| u32::try_from(t.duration_since(t0).as_millis()).unwrap_or(u32::MAX))
        .collect();
    times.sort_unstable();
    let all = times.len() == n;
    shutdown(agents, &mut shade).await;

    m.insert("agents".into(), n as f64);
    m.insert("converged".into(), times.len() as f64);
    m.insert("setup_s".into(), setup.as_secs_f64());
    m.insert("restart_to_listening_s".into(), listening.as_secs_f64());
    // The agents' reconnection backoff depends on it.
    m.insert("broker_down_s".into(), down.as_secs_f64());
    let q = |x| crate::client::quantile(&times, x) / 1000.0;
    m.insert("converged_p50_s".into(), q(0.5));
    m.insert("converged_p90_s".into(), q(0.9));
    m.insert("converged_p99_s".into(), q(0.99));
    let last = if all { q(1.0) } else { f64::NAN };
    m.insert("all_converged_s".into(), last);
    m.insert("shade.rss_mib".into(), rss as f64 / 1048576.0);
    Ok(m)
}

/// Stops every agent (at once, each bounded) and the server.
async fn shutdown(agents: Vec<Agent>, shade: &mut Shade) {
    let mut stopping = tokio::task::JoinSet::new();
    for a in agents {
        stopping.spawn(tokio::time::timeout(Duration::from_secs(5), a.shutdown()));
    }
    while stopping.join_next().await.is_some() {}
    shade.kill();
}
