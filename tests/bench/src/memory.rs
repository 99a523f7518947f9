//! `memory`: resident memory (VmRSS) of `shade serve` holding S stored
//! shadows and C idle connections, and bytes on disk per shadow.
//!
//! 1. S shadows are created by AWS updates (one reported key each) from a
//!    few writer connections, with a global window of requests in flight;
//!    a collector subscribed to `$aws/things/+/shadow/update/{accepted,rejected}`
//!    counts the replies.
//! 2. C more connections connect and stay idle (with `--subscribe`, each
//!    first subscribes at QoS 1 to its own thing's `update/delta`).
//! 3. VmRSS is read after each step; then the redb file size over S.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rumqttc::{Event, Packet, QoS};
use tokio::sync::{watch, Semaphore};

use crate::client::{connect, options};
use crate::procs::{rss_bytes, Shade, ShadeOptions};
use crate::Metrics;

/// Parameters of one memory measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub(crate) shadows: usize,
    pub(crate) idle: usize,
    pub(crate) writers: usize,
    /// Each idle connection also subscribes to its thing's `update/delta`.
    /// Off by default: rumqttd 0.20 scans every retained message (one per
    /// shadow) on each SUBSCRIBE, so with 100,000 shadows subscribing
    /// 10,000 connections takes minutes (docs/BENCHMARKS.md).
    pub(crate) subscribe: bool,
    pub(crate) timeout: f64,
}

/// Requests in flight across all writers.
const WINDOW: usize = 1024;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

async fn fill(port: u16, p: Params) -> Result<f64> {
    fill_shadows(port, p.shadows, p.writers, p.timeout).await
}

/// Stores `shadows` shadows `mem-<i>` by AWS updates from `writers`
/// connections; returns the updates per second.
pub(crate) async fn fill_shadows(
    port: u16,
    shadows: usize,
    writers: usize,
    timeout: f64,
) -> Result<f64> {
    let replies = Arc::new(AtomicUsize::new(0));
    let window = Arc::new(Semaphore::new(WINDOW));
    let filters = vec![
        "$aws/things/+/shadow/update/accepted".to_owned(),
        "$aws/things/+/shadow/update/rejected".to_owned(),
    ];
    let (_collector, mut cel) =
        connect(options("bench-mem-collector", port, 100), 16, &filters).await?;
    let (r, w) = (replies.clone(), window.clone());
    let collector = tokio::spawn(async move {
        while let Ok(event) = cel.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = event {
                r.fetch_add(1, Ordering::Relaxed);
                w.add_permits(1);
            }
        }
    });
    let start = Instant::now();
    let mut tasks = Vec::new();
    for wi in 0..writers {
        let window = window.clone();
        let (client, mut el) = connect(
            options(&format!("bench-mem-writer-{wi}"), port, 100),
            256,
            &[],
        )
        .await?;
        let poller = tokio::spawn(async move { while el.poll().await.is_ok() {} });
        tasks.push(tokio::spawn(async move {
            let mut k = wi;
            while k < shadows {
                window.acquire().await.context("window")?.forget();
                let topic = format!("$aws/things/mem-{k}/shadow/update");
                let body = format!(
                    r#"{{"state":{{"reported":{{"temperature":21.5,"fw":"1.2.3","n":{k}}}}}}}"#
                );
                client
                    .publish(topic, QoS::AtLeastOnce, false, body.into_bytes())
                    .await?;
                k += writers;
            }
            let _ = client.try_disconnect();
            drop(poller);
            anyhow::Ok(())
        }));
    }
    for w in tasks {
        w.await.context("writer task")??;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    while replies.load(Ordering::Relaxed) < shadows {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} updates answered",
                replies.load(Ordering::Relaxed),
                shadows
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    collector.abort();
    Ok(shadows as f64 / start.elapsed().as_secs_f64())
}

/// One measurement on a fresh `shade serve`.
pub(crate) async fn run(bins: &std::path::Path, p: Params) -> Result<Metrics> {
    let opts = ShadeOptions {
        max_connections: p.idle + p.writers + 1000,
        ..ShadeOptions::default()
    };
    let mut shade = Shade::start(bins, &opts)?;
    let port = shade.port;
    let pid = shade.pid()?;
    let mut m = Metrics::new();
    m.insert("rss_empty_mib".into(), mib(rss_bytes(pid)?));

    let rate = fill(port, p).await?;
    m.insert("fill_updates_per_s".into(), rate);
    tokio::time::sleep(Duration::from_secs(2)).await;
    m.insert("rss_shadows_mib".into(), mib(rss_bytes(pid)?));

    let (stop_tx, stop_rx) = watch::channel(false);
    let connected = Arc::new(AtomicUsize::new(0));
    let limit = Arc::new(Semaphore::new(64));
    let start = Instant::now();
    let mut idle = Vec::with_capacity(p.idle);
    for i in 0..p.idle {
        let (connected, limit, mut stop) = (connected.clone(), limit.clone(), stop_rx.clone());
        idle.push(tokio::spawn(async move {
            let permit = limit.acquire_owned().await.context("limiter")?;
            let filters = if p.subscribe {
                vec![format!("$aws/things/mem-{i}/shadow/update/delta")]
            } else {
                Vec::new()
            };
            let (client, mut el) =
                connect(options(&format!("bench-idle-{i}"), port, 16), 8, &filters).await?;
            drop(permit);
            connected.fetch_add(1, Ordering::Relaxed);
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    e = el.poll() => { e?; }
                }
            }
            let _ = client.try_disconnect();
            anyhow::Ok(())
        }));
    }
    let deadline = Instant::now() + Duration::from_secs_f64(p.timeout);
    while connected.load(Ordering::Relaxed) < p.idle {
        if let Some(i) = idle.iter().position(|t| t.is_finished()) {
            let why = match idle.swap_remove(i).await {
                Ok(Err(e)) => format!("{e:#}"),
                other => format!("{other:?}"),
            };
            bail!(
                "an idle connection ended ({} of {} up): {why}",
                connected.load(Ordering::Relaxed),
                p.idle
            );
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {} idle connections up",
                connected.load(Ordering::Relaxed),
                p.idle
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    m.insert("idle_connect_s".into(), start.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = rss_bytes(pid)?;
    m.insert("rss_full_mib".into(), mib(rss));
    let _ = stop_tx.send(true);
    for t in idle {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    // Quiet shutdown, so the file is measured as committed.
    shade.terminate()?;
    let disk = std::fs::metadata(shade.data_dir().join("shade.redb"))
        .context("size of shade.redb")?
        .len();
    m.insert("disk_mib".into(), mib(disk));
    m.insert(
        "disk_bytes_per_shadow".into(),
        disk as f64 / p.shadows as f64,
    );
    Ok(m)
}
