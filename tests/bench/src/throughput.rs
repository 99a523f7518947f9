//! `throughput`: N devices, one MQTT connection each, publish QoS 1 as fast
//! as their replies come back, each keeping a window of requests in flight.
//!
//! Three targets, measured the same way in the same run:
//! - `shade`: reported updates on `$aws/things/bench-<i>/shadow/update`; a
//!   request leaves the window when its `update/accepted` (or `rejected`)
//!   with the same `clientToken` arrives. Counts accepted updates per second.
//! - `rumqttd`: the same payloads on `bench/<i>` through the same `shade
//!   serve`, which its gateway routes as plain client traffic (no shadow
//!   service): the device subscribes to its own topic and a request leaves
//!   the window when it comes back. The embedded rumqttd's QoS 1 bound.
//! - `mosquitto`: the same on Debian's mosquitto, published retained (the
//!   retained message is the state store).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rumqttc::{Event, Packet, QoS};
use tokio::sync::{watch, Barrier};

use crate::client::{connect, number_after, options, quantile};
use crate::procs::{CpuMeter, Mosquitto, Shade, ShadeOptions};
use crate::Metrics;

/// What the devices talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Shade,
    Rumqttd,
    Mosquitto,
}

impl Target {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Target::Shade => "shade",
            Target::Rumqttd => "rumqttd",
            Target::Mosquitto => "mosquitto",
        }
    }

    fn publish_topic(self, i: usize) -> String {
        match self {
            Target::Shade => format!("$aws/things/bench-{i}/shadow/update"),
            Target::Rumqttd | Target::Mosquitto => format!("bench/{i}"),
        }
    }

    fn reply_filters(self, i: usize) -> Vec<String> {
        match self {
            Target::Shade => vec![
                format!("$aws/things/bench-{i}/shadow/update/accepted"),
                format!("$aws/things/bench-{i}/shadow/update/rejected"),
            ],
            Target::Rumqttd | Target::Mosquitto => vec![format!("bench/{i}")],
        }
    }
}

/// Parameters of one throughput measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub(crate) devices: usize,
    pub(crate) seconds: f64,
    pub(crate) warmup: f64,
    pub(crate) window: usize,
}

/// The payload of request `seq`: an AWS update, also sent as-is to the
/// plain brokers so every target moves the same bytes.
fn payload(seq: u64) -> Vec<u8> {
    format!(
        r#"{{"state":{{"reported":{{"temperature":21.5,"humidity":40,"seq":{seq}}}}},"clientToken":"{seq}"}}"#
    )
    .into_bytes()
}

#[derive(Debug, Default)]
struct Counters {
    ok: AtomicU64,
    rejected: AtomicU64,
    measuring: AtomicBool,
}

/// One device: connect, subscribe, then keep `window` requests in flight
/// until told to stop. Returns its round-trip samples (µs) taken while
/// measuring.
async fn device(
    target: Target,
    port: u16,
    i: usize,
    window: usize,
    go: Arc<Barrier>,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) -> Result<Vec<u32>> {
    let id = format!("bench-{}-{i}", target.name());
    let opts = options(&id, port, u16::try_from(window + 4).unwrap_or(u16::MAX));
    let (client, mut el) = connect(opts, window * 2 + 16, &target.reply_filters(i)).await?;
    let topic = target.publish_topic(i);
    let retain = target == Target::Mosquitto;
    go.wait().await;
    let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(window * 2);
    let mut next = 0u64;
    let mut rtt = Vec::new();
    let send = |seq: u64, sent: &mut HashMap<u64, Instant>| -> Result<()> {
        sent.insert(seq, Instant::now());
        client
            .try_publish(topic.as_str(), QoS::AtLeastOnce, retain, payload(seq))
            .with_context(|| format!("{id}: queue a publish"))
    };
    for _ in 0..window {
        send(next, &mut sent)?;
        next += 1;
    }
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => break,
            event = el.poll() => event.with_context(|| format!("{id}: connection"))?,
        };
        let Event::Incoming(Packet::Publish(p)) = event else {
            continue;
        };
        let Some(seq) = number_after(&p.payload, br#""clientToken":"#) else {
            continue;
        };
        let Some(at) = sent.remove(&seq) else {
            continue;
        };
        if counters.measuring.load(Ordering::Relaxed) {
            if p.topic.ends_with("/rejected") {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.ok.fetch_add(1, Ordering::Relaxed);
            }
            rtt.push(u32::try_from(at.elapsed().as_micros()).unwrap_or(u32::MAX));
        }
        send(next, &mut sent)?;
        next += 1;
    }
    let _ = client.try_disconnect();
    Ok(rtt)
}

/// Measures one target on an already running broker at `port`.
pub(crate) async fn measure(
    target: Target,
    port: u16,
    server_pid: u32,
    p: Params,
) -> Result<Metrics> {
    let counters = Arc::new(Counters::default());
    let go = Arc::new(Barrier::new(p.devices + 1));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..p.devices {
        tasks.push(tokio::spawn(device(
            target,
            port,
            i,
            p.window,
            go.clone(),
            stop_rx.clone(),
            counters.clone(),
        )));
    }
    // Every device connected and subscribed, or one failed (then the
    // barrier never opens: bounded by the connect timeout and a margin).
    tokio::time::timeout(
        crate::client::CONNECT_TIMEOUT + Duration::from_secs(10),
        go.wait(),
    )
    .await
    .context("devices did not all connect")?;
    tokio::time::sleep(Duration::from_secs_f64(p.warmup)).await;
    let cpu = CpuMeter::start(server_pid);
    counters.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(p.seconds)).await;
    counters.measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let mut m = Metrics::new();
    cpu.finish(&mut m, &format!("{}.", target.name()));
    let ok = counters.ok.load(Ordering::Relaxed);
    let rejected = counters.rejected.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let mut rtt = crate::client::join_samples(tasks).await?;
    rtt.sort_unstable();
    let name = target.name();
    m.insert(format!("{name}.per_s"), ok as f64 / elapsed);
    m.insert(format!("{name}.rejected"), rejected as f64);
    m.insert(format!("{name}.rtt_p50_ms"), quantile(&rtt, 0.5) / 1000.0);
    m.insert(format!("{name}.rtt_p99_ms"), quantile(&rtt, 0.99) / 1000.0);
    Ok(m)
}

/// One run: each target in turn, on freshly started processes.
pub(crate) async fn run(bins: &std::path::Path, targets: &[Target], p: Params) -> Result<Metrics> {
    let mut all = Metrics::new();
    for &target in targets {
        let m = match target {
            Target::Shade | Target::Rumqttd => {
                let mut shade = Shade::start(bins, &ShadeOptions::default())?;
                let m = measure(target, shade.port, shade.pid()?, p).await;
                if target == Target::Shade {
                    if let Ok(pid) = shade.pid() {
                        all.insert(
                            "shade.rss_mib".into(),
                            crate::procs::rss_bytes(pid).unwrap_or(0) as f64 / 1048576.0,
                        );
                    }
                }
                shade.kill();
                m?
            }
            Target::Mosquitto => {
                let mosquitto = Mosquitto::start()?;
                let m = measure(target, mosquitto.port, mosquitto.pid()?, p).await;
                drop(mosquitto);
                m?
            }
        };
        all.extend(m);
    }
    let shade = all.get("shade.per_s").copied();
    if let (Some(s), Some(r)) = (shade, all.get("rumqttd.per_s").copied()) {
        all.insert("ratio.shade_to_rumqttd".into(), s / r);
    }
    if let (Some(s), Some(r)) = (shade, all.get("mosquitto.per_s").copied()) {
        all.insert("ratio.shade_to_mosquitto".into(), s / r);
    }
    Ok(all)
}
