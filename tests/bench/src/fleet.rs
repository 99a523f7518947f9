//! `fleet`: N plain MQTT 3.1.1 clients connect and subscribe at once over N
//! stored shadows, then one late subscriber reads every state.
//!
//! 1. N shadows are stored (`mem-<i>`, as `memory` stores them). Against
//!    mosquitto, the baseline, each state is a retained message on
//!    `shade/things/mem-<i>/state` instead: its retained store is the
//!    state store.
//! 2. N clients connect at the same moment; each subscribes at QoS 1 to its
//!    own thing's `update/delta` and `state` (one SUBSCRIBE) and waits for
//!    its retained state. Counted: CONNACKs, SUBACKs, own states, and the
//!    connections that ended before their CONNACK or SUBACK (with why).
//! 3. One more client subscribes to `shade/things/#` at QoS 1 and counts the
//!    states it gets within `timeout`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rumqttc::{Event, Packet, QoS};
use tokio::sync::Semaphore;

use crate::client::{connect, new_client, options};
use crate::memory;
use crate::procs::{raise_nofile, rss_bytes, CpuMeter, Mosquitto, Shade, ShadeOptions};
use crate::Metrics;

/// How long a client waits for its CONNACK, seconds.
const WAIT_FOR_CONNACK_S: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Shade,
    Mosquitto,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub(crate) clients: usize,
    /// Bound of each phase, seconds.
    pub(crate) timeout: f64,
    pub(crate) target: Target,
}

#[derive(Debug, Default)]
struct Counts {
    connacked: AtomicUsize,
    subscribed: AtomicUsize,
    own_state: AtomicUsize,
    failed: AtomicUsize,
}

/// Stores the retained states on mosquitto, from one connection, with a
/// window of QoS 1 publishes in flight.
async fn fill_mosquitto(port: u16, n: usize, timeout: f64) -> Result<()> {
    let (client, mut el) = new_client(options("bench-fleet-fill", port, 1000), 1024);
    let acks = Arc::new(AtomicUsize::new(0));
    let window = Arc::new(Semaphore::new(1000));
    let (a, w) = (acks.clone(), window.clone());
    let poller = tokio::spawn(async move {
        while let Ok(event) = el.poll().await {
            if let Event::Incoming(Packet::PubAck(_)) = event {
                a.fetch_add(1, Ordering::Relaxed);
                w.add_permits(1);
            }
        }
    });
    for i in 0..n {
        window.acquire().await.context("window")?.forget();
        let body = format!(
            r#"{{"state":{{"reported":{{"temperature":21.5,"fw":"1.2.3","n":{i}}}}},"version":1}}"#
        );
        client
            .publish(
                format!("shade/things/mem-{i}/state"),
                QoS::AtLeastOnce,
                true,
                body.into_bytes(),
            )
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    while acks.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    poller.abort();
    anyhow::ensure!(
        acks.load(Ordering::Relaxed) >= n,
        "mosquitto did not ack every state"
    );
    Ok(())
}

/// One client of step 2: connect, subscribe, wait for its state, then stay
/// connected until `stop`.
async fn device(port: u16, i: usize, counts: Arc<Counts>, stop: Arc<Semaphore>) -> Result<()> {
    let (client, mut el) = new_client(options(&format!("bench-fleet-{i}"), port, 16), 8);
    // rumqttc gives up on a CONNACK after 5 s; a device would retry. The
    // bench waits instead, so it measures when the server answers.
    let mut net = el.network_options();
    net.set_connection_timeout(WAIT_FOR_CONNACK_S);
    el.set_network_options(net);
    let topics = [
        format!("$aws/things/mem-{i}/shadow/update/delta"),
        format!("shade/things/mem-{i}/state"),
    ];
    let mut acked = false;
    loop {
        let event = tokio::select! {
            _ = stop.acquire() => return Ok(()),
            e = el.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                counts.connacked.fetch_add(1, Ordering::Relaxed);
                let filters = topics
                    .iter()
                    .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                client.subscribe_many(filters).await?;
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                counts.subscribed.fetch_add(1, Ordering::Relaxed);
                acked = true;
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topics[1] => {
                counts.own_state.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                let phase = if acked {
                    "after SUBACK"
                } else {
                    "before SUBACK"
                };
                anyhow::bail!("{phase}: {e}");
            }
        }
    }
}

async fn wait_for(what: &AtomicUsize, n: usize, failed: &AtomicUsize, timeout: f64) -> f64 {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(timeout);
    while what.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed().as_secs_f64()
}

/// Step 3: the states a new `shade/things/#` subscriber gets, and how long
/// the last took.
async fn late_subscriber(port: u16, n: usize, timeout: f64) -> Result<(usize, f64)> {
    let start = Instant::now();
    let filters = ["shade/things/#".to_owned()];
    let (_client, mut el) = connect(options("bench-fleet-late", port, 100), 64, &filters).await?;
    let deadline = start + Duration::from_secs_f64(timeout);
    let (mut got, mut last) = (0, 0.0);
    while got < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                got += 1;
                last = start.elapsed().as_secs_f64();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("late subscriber: {e}"),
            Err(_) => break,
        }
    }
    Ok((got, last))
}

pub(crate) async fn run(bins: &std::path::Path, p: Params) -> Result<Metrics> {
    raise_nofile();
    let mut shade = None;
    let mut mosquitto = None;
    let (port, pid) = match p.target {
        Target::Shade => {
            let opts = ShadeOptions {
                max_connections: p.clients + 1000,
                ..ShadeOptions::default()
            };
            let s = Shade::start(bins, &opts)?;
            let port = s.port;
            let pid = s.pid()?;
            memory::fill_shadows(port, p.clients, 20, p.timeout * 10.0).await?;
            shade = Some(s);
            (port, pid)
        }
        Target::Mosquitto => {
            let m = Mosquitto::start()?;
            let (port, pid) = (m.port, m.pid()?);
            fill_mosquitto(port, p.clients, p.timeout * 10.0).await?;
            mosquitto = Some(m);
            (port, pid)
        }
    };
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(Semaphore::new(0));
    let cpu = CpuMeter::start(pid);
    let mut tasks = Vec::with_capacity(p.clients);
    for i in 0..p.clients {
        tasks.push(tokio::spawn(device(port, i, counts.clone(), stop.clone())));
    }
    let n = p.clients;
    let subscribed_s = wait_for(&counts.subscribed, n, &counts.failed, p.timeout).await;
    let own_s = wait_for(&counts.own_state, n, &counts.failed, p.timeout).await + subscribed_s;
    let mut m = Metrics::new();
    cpu.finish(&mut m, "");
    let load = |a: &AtomicUsize| a.load(Ordering::Relaxed) as f64;
    m.insert("connacked".into(), load(&counts.connacked));
    m.insert("subscribed".into(), load(&counts.subscribed));
    m.insert("own_states".into(), load(&counts.own_state));
    m.insert("failed".into(), load(&counts.failed));
    m.insert("all_subscribed_s".into(), subscribed_s);
    m.insert("all_own_states_s".into(), own_s);
    m.insert("rss_mib".into(), rss_bytes(pid)? as f64 / 1048576.0);
    let (late, late_s) = late_subscriber(port, n, p.timeout).await?;
    m.insert("late_states".into(), late as f64);
    m.insert("late_all_states_s".into(), late_s);
    stop.add_permits(p.clients);
    let mut why = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), t).await {
            *why.entry(format!("{e:#}")).or_default() += 1;
        }
    }
    for (e, n) in why {
        eprintln!("fleet: {n} clients failed: {e}");
    }
    drop(shade);
    drop(mosquitto);
    Ok(m)
}
