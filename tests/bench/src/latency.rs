//! `latency`: a dashboard changes `desired` at a fixed rate, spread
//! round-robin over many things; each thing's device is subscribed to its
//! `update/delta` and times the delta against the send time the dashboard
//! embedded in the desired state (microseconds on one monotonic clock of
//! this process, so no clock skew).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rumqttc::{Event, Packet, QoS};
use tokio::sync::{watch, Barrier};

use crate::client::{connect, number_after, options, quantile};
use crate::procs::{cpu_between, thread_cpu, Shade, ShadeOptions};
use crate::Metrics;

/// Parameters of one latency measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub(crate) things: usize,
    pub(crate) rate: f64,
    pub(crate) seconds: f64,
    pub(crate) warmup: f64,
}

#[derive(Debug)]
struct Shared {
    origin: Instant,
    measuring: AtomicBool,
    received: AtomicU64,
}

fn thing(i: usize) -> String {
    format!("lat-{i}")
}

async fn device(
    port: u16,
    i: usize,
    go: Arc<Barrier>,
    mut stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
    limit: Arc<tokio::sync::Semaphore>,
) -> Result<Vec<u32>> {
    let id = format!("bench-lat-{i}");
    let filter = format!("$aws/things/{}/shadow/update/delta", thing(i));
    // At most a few connecting at once: rumqttd admits about one per ms.
    let permit = limit.acquire_owned().await.context("connect limiter")?;
    let (client, mut el) = connect(options(&id, port, 16), 16, &[filter]).await?;
    drop(permit);
    go.wait().await;
    let mut samples = Vec::new();
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => break,
            event = el.poll() => event.with_context(|| format!("{id}: connection"))?,
        };
        let Event::Incoming(Packet::Publish(p)) = event else {
            continue;
        };
        let now = shared.origin.elapsed().as_micros() as u64;
        // `"sent_us":<n>` appears once, in `state`; the metadata has
        // `"sent_us":{...}`, which has no number to read.
        let Some(sent) = number_after(&p.payload, br#""sent_us":"#) else {
            continue;
        };
        if shared.measuring.load(Ordering::Relaxed) {
            shared.received.fetch_add(1, Ordering::Relaxed);
            samples.push(u32::try_from(now.saturating_sub(sent)).unwrap_or(u32::MAX));
        }
    }
    let _ = client.try_disconnect();
    Ok(samples)
}

/// One run on a fresh `shade serve`.
pub(crate) async fn run(bins: &std::path::Path, p: Params) -> Result<Metrics> {
    let mut shade = Shade::start(bins, &ShadeOptions::default())?;
    let port = shade.port;
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        measuring: AtomicBool::new(false),
        received: AtomicU64::new(0),
    });
    let go = Arc::new(Barrier::new(p.things + 1));
    let (stop_tx, stop_rx) = watch::channel(false);
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in 0..p.things {
        tasks.push(tokio::spawn(device(
            port,
            i,
            go.clone(),
            stop_rx.clone(),
            shared.clone(),
            limit.clone(),
        )));
    }
    tokio::time::timeout(Duration::from_secs(120), go.wait())
        .await
        .context("devices did not all connect within 120 s")?;

    let (dash, mut dash_el) =
        connect(options("bench-lat-dashboard", port, 1000), 4096, &[]).await?;
    // PUBACKs the dashboard got: when they lag behind what it sent, the
    // changes wait in the dashboard's own queue (the broker's ingress is
    // the bound), not in the service.
    let acked = Arc::new(AtomicU64::new(0));
    let acks = acked.clone();
    let dash_loop = tokio::spawn(async move {
        while let Ok(event) = dash_el.poll().await {
            if let Event::Incoming(Packet::PubAck(_)) = event {
                acks.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let server_pid = shade.pid()?;
    let mut cpu0 = None;
    let start = Instant::now();
    let total = p.warmup + p.seconds;
    let mut sent = 0u64;
    let mut sent_measured = 0u64;
    let mut t_measure: Option<Instant> = None;
    let mut n = 0usize;
    while start.elapsed().as_secs_f64() < total {
        tick.tick().await;
        let elapsed = start.elapsed().as_secs_f64();
        if t_measure.is_none() && elapsed >= p.warmup {
            shared.measuring.store(true, Ordering::Relaxed);
            t_measure = Some(Instant::now());
            cpu0 = Some(thread_cpu(server_pid));
        }
        let due = (elapsed * p.rate) as u64;
        while sent < due {
            let sent_us = shared.origin.elapsed().as_micros() as u64;
            let body = format!(r#"{{"state":{{"desired":{{"sent_us":{sent_us},"n":{sent}}}}}}}"#);
            let topic = format!("$aws/things/{}/shadow/update", thing(n % p.things));
            n += 1;
            dash.publish(topic, QoS::AtLeastOnce, false, body.into_bytes())
                .await
                .context("dashboard publish")?;
            sent += 1;
            if t_measure.is_some() {
                sent_measured += 1;
            }
        }
    }
    let measured_for = t_measure.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let unacked_at_end = sent.saturating_sub(acked.load(Ordering::Relaxed));
    let cpu = cpu0.map(|c| cpu_between(&c, &thread_cpu(server_pid), measured_for));
    // Deltas of the last changes are still on their way: wait for them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let mut samples = crate::client::join_samples(tasks).await?;
    dash_loop.abort();
    let rss = crate::procs::rss_bytes(shade.pid()?).unwrap_or(0);
    shade.kill();
    let mut m = Metrics::new();
    for (thread, cores) in cpu.unwrap_or_default() {
        m.insert(format!("cpu.server.{thread}"), cores);
    }
    samples.sort_unstable();
    m.insert(
        "rate_sent_per_s".into(),
        sent_measured as f64 / measured_for,
    );
    m.insert(
        "deltas_received".into(),
        shared.received.load(Ordering::Relaxed) as f64,
    );
    m.insert("changes_sent".into(), sent_measured as f64);
    m.insert("dashboard_unacked_at_end".into(), unacked_at_end as f64);
    m.insert("p50_ms".into(), quantile(&samples, 0.5) / 1000.0);
    m.insert("p99_ms".into(), quantile(&samples, 0.99) / 1000.0);
    m.insert("p99_9_ms".into(), quantile(&samples, 0.999) / 1000.0);
    m.insert("max_ms".into(), quantile(&samples, 1.0) / 1000.0);
    m.insert("shade.rss_mib".into(), rss as f64 / 1048576.0);
    Ok(m)
}
