//! `storm`: N agents' sync sessions come back after a broker restart.
//!
//! The agents are simulated in this process, one rumqttc connection each,
//! speaking the real sync protocol with `shade_shared`'s `Shadow`, `SyncUp`
//! and `SyncDown` (10,000 `shade-agent` processes would not fit beside the
//! server on two cores). Each keeps what the real agent keeps for this: its
//! replica and the broker's last vector. It reconnects as `shade-agent`
//! does: clean session, subscribe to `sync/down`, then a `SyncUp` with its
//! vector and every change the broker has not acknowledged, and the same
//! backoff with jitter (`shade_agent::backoff`, 200 ms doubling to
//! 30 s) between failed attempts.
//!
//! 1. Every agent writes `reported` and syncs (setup, not timed: connects
//!    are staggered at the pace rumqttd admits them).
//! 2. The broker is killed (SIGKILL); each agent, on losing it, writes
//!    `reported` again offline.
//! 3. The broker is started again on the same port and data. Timed: from
//!    that spawn until every agent received a `SyncDown` whose vector
//!    covers its offline write.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::SeedableRng;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::json;
use shade_shared::sync::{SyncDown, SyncUp};
use shade_shared::{Patch, ReplicaId, Section, Shadow, ShadowId, ThingName, Topic, VersionVector};
use tokio::sync::watch;

use crate::client::{new_client, options};
use crate::procs::{Shade, ShadeOptions};
use crate::Metrics;

/// Parameters of one storm.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub(crate) agents: usize,
    /// Bound of the (untimed) setup.
    pub(crate) setup_timeout: f64,
    /// Bound of the timed reconnection.
    pub(crate) timeout: f64,
}

#[derive(Debug)]
struct Shared {
    /// 1: setup; 2: the broker was killed.
    phase: AtomicU8,
    synced: AtomicUsize,
    offline: AtomicUsize,
    /// Failed connection attempts (refused, timed out, dropped), after the
    /// kill.
    failures: AtomicUsize,
    /// When each agent converged after the restart.
    converged: Mutex<Vec<Instant>>,
}

/// A simulated agent's replica: the part of `shade-agent`'s state that the
/// sync protocol needs.
struct Agent {
    me: ReplicaId,
    shadow: Shadow,
    broker_vv: VersionVector,
    /// The counter of this agent's last write: converged once the broker's
    /// vector covers it.
    last_write: u64,
}

impl Agent {
    fn write(&mut self, value: serde_json::Value) {
        let Some(map) = value.as_object().cloned() else {
            return;
        };
        let now = crate::now_ms();
        if let Some(dot) = self
            .shadow
            .write(&self.me, Section::Reported, &Patch::Merge(map), now)
        {
            self.last_write = dot.counter;
        }
    }

    fn sync_up(&self) -> Result<Vec<u8>> {
        let up = SyncUp {
            replica: self.me.clone(),
            changes: self.shadow.changes_since(&self.broker_vv),
        };
        Ok(up.to_cbor())
    }

    /// Merges a `SyncDown`; true when it acknowledges the last write.
    fn on_down(&mut self, payload: &[u8]) -> bool {
        let Ok(down) = SyncDown::from_cbor(payload, 8) else {
            return false;
        };
        let outcome = self.shadow.merge(&down.changes);
        if !outcome.gap {
            self.broker_vv = down.changes.vv.clone();
            self.shadow.version = self.shadow.version.max(down.version);
            self.shadow.collect_tombstones(&down.stable);
        }
        self.broker_vv.get(&self.me) >= self.last_write
    }

    fn converged(&self) -> bool {
        self.broker_vv.get(&self.me) >= self.last_write
    }
}

async fn agent(
    port: u16,
    i: usize,
    start_after: Duration,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    tokio::time::sleep(start_after).await;
    let client_id = format!("storm-{i}");
    let id = ShadowId::classic(ThingName::new(format!("storm-{i}"))?);
    let (up_topic, down_topic) = (Topic::sync_up(&id), Topic::sync_down(&id));
    let mut a = Agent {
        me: ReplicaId::agent(&client_id)?,
        shadow: Shadow::new(),
        broker_vv: VersionVector::new(),
        last_write: 0,
    };
    a.write(json!({"n": i, "phase": 1}));
    let (client, mut el) = new_client(options(&client_id, port, 16), 16);
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let (mut failures, mut synced, mut wrote_offline) = (0u32, false, false);
    let send_up = |a: &Agent, client: &AsyncClient| {
        if let Ok(bytes) = a.sync_up() {
            let _ = client.try_publish(up_topic.as_str(), QoS::AtLeastOnce, false, bytes);
        }
    };
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => break,
            event = el.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                let _ = client.try_subscribe(down_topic.as_str(), QoS::AtLeastOnce);
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => send_up(&a, &client),
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == down_topic => {
                let was = a.converged();
                if a.on_down(&p.payload) && !was {
                    if !synced {
                        synced = true;
                        shared.synced.fetch_add(1, Ordering::Relaxed);
                    } else if wrote_offline {
                        let mut c = shared
                            .converged
                            .lock()
                            .map_err(|_| anyhow::anyhow!("poisoned"))?;
                        c.push(Instant::now());
                    }
                }
            }
            Ok(_) => {}
            Err(_) => {
                if shared.phase.load(Ordering::Relaxed) == 2 {
                    shared.failures.fetch_add(1, Ordering::Relaxed);
                }
                if shared.phase.load(Ordering::Relaxed) == 2 && synced && !wrote_offline {
                    wrote_offline = true;
                    a.write(json!({"n": i, "phase": 2}));
                    shared.offline.fetch_add(1, Ordering::Relaxed);
                }
                let wait = shade_agent::backoff(
                    failures,
                    Duration::from_millis(200),
                    Duration::from_secs(30),
                    &mut rng,
                );
                failures = failures.saturating_add(1);
                tokio::select! {
                    _ = stop.changed() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    let _ = client.try_disconnect();
    Ok(())
}

/// Polls `count` until it reaches `n` or `within` passes.
async fn wait_count(
    count: impl Fn() -> usize,
    n: usize,
    within: Duration,
    what: &str,
) -> Result<()> {
    let deadline = Instant::now() + within;
    while count() < n {
        if Instant::now() > deadline {
            bail!("{what}: {} of {n} within {within:?}", count());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// One storm on a fresh `shade serve`.
pub(crate) async fn run(bins: &std::path::Path, p: Params) -> Result<Metrics> {
    let n = p.agents;
    let within = Duration::from_secs_f64(p.timeout);
    let opts = ShadeOptions {
        max_connections: n + 1000,
        ..ShadeOptions::default()
    };
    let mut shade = Shade::start(bins, &opts)?;
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(1),
        synced: AtomicUsize::new(0),
        offline: AtomicUsize::new(0),
        failures: AtomicUsize::new(0),
        converged: Mutex::new(Vec::with_capacity(n)),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let setup_start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        // Staggered at the pace the listener admits (about one per ms).
        let after = Duration::from_micros(1_500 * i as u64);
        tasks.push(tokio::spawn(agent(
            shade.port,
            i,
            after,
            shared.clone(),
            stop_rx.clone(),
        )));
    }
    let s = shared.clone();
    let setup_within = Duration::from_secs_f64(p.setup_timeout);
    wait_count(
        || s.synced.load(Ordering::Relaxed),
        n,
        setup_within,
        "agents synced in setup",
    )
    .await?;
    let setup = setup_start.elapsed();

    shared.phase.store(2, Ordering::Relaxed);
    shade.kill();
    let s = shared.clone();
    wait_count(
        || s.offline.load(Ordering::Relaxed),
        n,
        Duration::from_secs(60),
        "agents noticed the kill",
    )
    .await?;

    let t0 = Instant::now();
    shade.spawn_only()?;
    let port = shade.port;
    let listening = {
        let proc = shade.proc_mut()?;
        tokio::task::block_in_place(|| proc.wait_mqtt(port))?
    };
    let s = shared.clone();
    let done = wait_count(
        || s.converged.lock().map_or(0, |c| c.len()),
        n,
        within,
        "agents converged after the restart",
    )
    .await;
    let rss = crate::procs::rss_bytes(shade.pid()?).unwrap_or(0);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    shade.kill();
    let mut times: Vec<u32> = shared
        .converged
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
        .map(|t| u32::try_from(t.duration_since(t0).as_millis()).unwrap_or(u32::MAX))
        .collect();
    times.sort_unstable();
    let mut m = Metrics::new();
    m.insert("agents".into(), n as f64);
    m.insert("converged".into(), times.len() as f64);
    m.insert("setup_s".into(), setup.as_secs_f64());
    m.insert("restart_to_listening_s".into(), listening.as_secs_f64());
    let q = |x| crate::client::quantile(&times, x) / 1000.0;
    m.insert("converged_p50_s".into(), q(0.5));
    m.insert("converged_p90_s".into(), q(0.9));
    m.insert("converged_p99_s".into(), q(0.99));
    m.insert("all_converged_s".into(), q(1.0));
    m.insert("shade.rss_mib".into(), rss as f64 / 1048576.0);
    // Minus the one failure per agent that noticed the kill.
    let failures = shared.failures.load(Ordering::Relaxed).saturating_sub(n);
    m.insert("failed_reconnects".into(), failures as f64);
    if let Err(e) = done {
        eprintln!("storm: {e:#}");
        m.insert("all_converged_s".into(), f64::NAN);
    }
    Ok(m)
}
