//! `catchup`: one real `shade-agent` process with L pending leaves (written
//! while it was stopped) reconnects; timed from its start until a
//! `sync/down` whose vector covers its last write.
//!
//! The broker's config raises `limits.max_document_bytes` (and the request
//! size) so that a document of 100,000 leaves is not refused; the agent's
//! raises `max_pending_leaves`. The agent sends at most 2,000 registers per
//! `SyncUp` and the next chunk after each acknowledging `SyncDown`, so L
//! leaves take L / 2,000 round trips. The leaves are written with
//! `shade-agent report`, 2,000 keys per call (one write, one dot, each).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rumqttc::{Event, Packet};
use shade_shared::sync::SyncDown;
use shade_shared::ReplicaId;

use crate::client::{connect, options};
use crate::procs::{agent_cli, agent_run, Shade, ShadeOptions};
use crate::Metrics;

const THING: &str = "catchup";
const CLIENT_ID: &str = "catchup-agent";
/// Keys per `shade-agent report` call: one write of this many leaves.
const KEYS_PER_WRITE: usize = 2_000;
const CLI_TIMEOUT: Duration = Duration::from_secs(300);

/// Parameters of one catch-up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub(crate) leaves: usize,
    pub(crate) timeout: f64,
}

fn state(bins: &Path, data: &Path) -> Result<serde_json::Value> {
    let out = agent_cli(
        bins,
        &[
            "state".into(),
            "--data".into(),
            data.display().to_string(),
            "--json".into(),
        ],
        CLI_TIMEOUT,
    )?;
    serde_json::from_str(&out).context("shade-agent state --json is not JSON")
}

/// Polls `shade-agent state` until `ok` holds (bounded).
fn wait_state(
    bins: &Path,
    data: &Path,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = state(bins, data) {
            if ok(&s) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the agent did not get {what} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One catch-up of `p.leaves` on a fresh broker and agent.
pub(crate) async fn run(bins: &Path, p: Params) -> Result<Metrics> {
    let opts = ShadeOptions {
        max_document_bytes: 256 * 1024 * 1024,
        max_payload_bytes: 64 * 1024 * 1024,
        ..ShadeOptions::default()
    };
    let mut shade = Shade::start(bins, &opts)?;
    let data = shade.dir.path().join("agent-data");
    let config = shade.dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "broker = \"mqtt://127.0.0.1:{}\"\nclient_id = \"{CLIENT_ID}\"\nthing = \"{THING}\"\ndata_dir = \"{}\"\nmax_pending_leaves = {}\nmax_document_bytes = {}\n",
            shade.port,
            data.display(),
            p.leaves.max(1000) * 2,
            opts.max_document_bytes
        ),
    )
    .context("write agent.toml")?;
    let data_arg = data.display().to_string();

    // First run: the agent syncs once, so the timed run is a reconnect.
    let log = |n: usize| shade.dir.path().join(format!("agent-{n}.log"));
    let mut agent = agent_run(bins, &config, log(1))?;
    tokio::task::block_in_place(|| -> Result<()> {
        wait_state(bins, &data, "connected", |s| s["connected"] == true)?;
        agent_cli(
            bins,
            &[
                "report".into(),
                "--data".into(),
                data_arg.clone(),
                "warm=1".into(),
            ],
            CLI_TIMEOUT,
        )?;
        wait_state(bins, &data, "its first write acknowledged", |s| {
            s["pending"] == 0
        })?;
        agent.terminate(Duration::from_secs(30))
    })?;

    // Offline: L leaves pending.
    let write_start = Instant::now();
    tokio::task::block_in_place(|| -> Result<()> {
        let mut k = 0;
        while k < p.leaves {
            let end = (k + KEYS_PER_WRITE).min(p.leaves);
            let mut args = vec!["report".to_owned(), "--data".to_owned(), data_arg.clone()];
            args.extend((k..end).map(|j| format!("k{j:06}={j}")));
            agent_cli(bins, &args, CLI_TIMEOUT)?;
            k = end;
        }
        Ok(())
    })?;
    let write_s = write_start.elapsed().as_secs_f64();
    let before = tokio::task::block_in_place(|| state(bins, &data))?;
    let me = ReplicaId::agent(CLIENT_ID)?;
    let target = before["vv"][me.as_str()]
        .as_u64()
        .context("no vector entry of the agent in its state")?;
    let pending = before["pending"].as_u64().unwrap_or(0);

    // An observer of the shadow's sync/down (the agent's replies).
    let down_topic = format!("shade/things/{THING}/sync/down");
    let (_observer, mut el) = connect(
        options("catchup-observer", shade.port, 16),
        16,
        std::slice::from_ref(&down_topic),
    )
    .await?;

    let t0 = Instant::now();
    let _agent = agent_run(bins, &config, log(2))?;
    let within = Duration::from_secs_f64(p.timeout);
    let mut downs = 0u64;
    let result = tokio::time::timeout(within, async {
        loop {
            if let Event::Incoming(Packet::Publish(msg)) = el.poll().await.context("observer")? {
                if msg.topic != down_topic {
                    continue;
                }
                downs += 1;
                let down = SyncDown::from_cbor(&msg.payload, 64)?;
                if down.changes.vv.get(&me) >= target {
                    return anyhow::Ok(t0.elapsed());
                }
            }
        }
    })
    .await;
    let rss = crate::procs::rss_bytes(shade.pid()?).unwrap_or(0);
    let disk = std::fs::metadata(shade.data_dir().join("shade.redb")).map_or(0, |m| m.len());
    shade.kill();
    let took = match result {
        Ok(r) => r?,
        Err(_) => bail!("not converged within {within:?} ({downs} sync/down seen)"),
    };
    let mut m = Metrics::new();
    m.insert("leaves".into(), p.leaves as f64);
    m.insert("pending_before".into(), pending as f64);
    m.insert("offline_writes_s".into(), write_s);
    m.insert("converged_s".into(), took.as_secs_f64());
    m.insert("leaves_per_s".into(), p.leaves as f64 / took.as_secs_f64());
    m.insert("sync_downs".into(), downs as f64);
    m.insert("shade.rss_mib".into(), rss as f64 / 1048576.0);
    m.insert("shade.disk_mib".into(), disk as f64 / 1048576.0);
    Ok(m)
}
