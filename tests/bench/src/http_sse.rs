//! The `http` scenario's SSE fan-out: S subscribers on `GET
//! /events?prefix=sse-` (each its own connection) over K shadows
//! `sse-<i>` created first, then P desired changes a second for D seconds,
//! round-robin over the K, published over MQTT (one QoS 1 dashboard
//! client, as `latency` does) or HTTP (`--sse-via http`: POSTs from 8
//! connections). With `--sse-where EXPR` every stream is opened with
//! that fleet query (it must match every shadow, e.g. `version > 0`), so
//! each change is judged on every stream before it is sent.
//!
//! Each change carries `"sent_us"` (microseconds on this process's
//! monotonic clock, taken just before the publish) and `"sse_seq"` (its
//! index) in its desired state, so every subscriber knows which changes
//! it got and how late. Reported: changes missing per subscriber (summed),
//! delivery latency p50/p99/p99.9, server CPU from the first change until
//! every subscriber had the last (`sse.drain_s` after it), server write
//! system calls per delivered event, RSS.
//! Beside it, `--mqtt-subscribers` MQTT clients subscribed to the K
//! `shade/things/sse-<i>/state` topics (the documents the stream carries)
//! time the same changes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use rumqttc::{Event, Packet, QoS};
use tokio::sync::{watch, Semaphore};

use crate::client::{connect, number_after, options, quantile};
use crate::http_client::{Conn, SseReader};
use crate::procs::{rss_bytes, CpuMeter, Shade};
use crate::Metrics;

/// Publishing connections with `--sse-via http`.
const HTTP_PUBLISHERS: usize = 8;
/// Bound of the subscribers' setup (connect and snapshot).
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

/// How the changes are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Mqtt,
    Http,
}

#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub(crate) subscribers: usize,
    /// Changes per second.
    pub(crate) rate: f64,
    pub(crate) seconds: f64,
    /// Shadows the changes are spread over (each subscriber's snapshot).
    pub(crate) things: usize,
    pub(crate) via: Via,
    /// `where=` of every stream (`--sse-where`): it must match every
    /// shadow, so that each stream still gets every change.
    pub(crate) filter: Option<String>,
    pub(crate) mqtt_subscribers: usize,
    /// How long to wait for the last deliveries after the last change.
    pub(crate) drain: f64,
}

#[derive(Debug)]
struct Shared {
    origin: Instant,
    /// The changes that will be made.
    changes: usize,
    ready: AtomicUsize,
    failed: AtomicUsize,
    /// Subscribers that got every change.
    complete: AtomicUsize,
    /// Streams the server ended before the bench stopped them.
    closed: AtomicUsize,
    mqtt_ready: AtomicUsize,
    mqtt_complete: AtomicUsize,
}

/// What one subscriber got.
#[derive(Debug, Default)]
struct Got {
    samples: Vec<u32>,
    distinct: usize,
    duplicates: usize,
    ready: bool,
}

impl Got {
    /// Records one event or message that may carry a change.
    fn record(&mut self, seen: &mut [bool], payload: &[u8], now_us: u64) -> bool {
        let (Some(seq), Some(sent)) = (
            number_after(payload, br#""sse_seq":"#),
            number_after(payload, br#""sent_us":"#),
        ) else {
            return false;
        };
        let Some(slot) = usize::try_from(seq).ok().and_then(|i| seen.get_mut(i)) else {
            return false;
        };
        if *slot {
            self.duplicates += 1;
            return true;
        }
        *slot = true;
        self.distinct += 1;
        self.samples
            .push(u32::try_from(now_us.saturating_sub(sent)).unwrap_or(u32::MAX));
        true
    }
}

async fn subscriber(
    port: u16,
    path: Arc<str>,
    things: usize,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> Got {
    let mut got = Got {
        samples: Vec::with_capacity(shared.changes),
        ..Got::default()
    };
    let mut seen = vec![false; shared.changes];
    let setup = async {
        let _permit = limit.acquire().await.context("connect limiter")?;
        let mut conn = Conn::open(port).await?;
        let (status, body) = conn.stream(&path).await?;
        if status != StatusCode::OK {
            bail!("GET {path}: {status}");
        }
        let mut reader = SseReader::new(body);
        let mut snapshot = 0;
        while snapshot < things {
            // Keep-alive comments (`:`) are not events.
            let counted = reader.read(|event| {
                if event.starts_with(b"data:") || crate::client::find(event, b"\ndata:").is_some() {
                    snapshot += 1;
                }
            });
            if !counted.await? {
                bail!("the stream ended within its snapshot");
            }
        }
        anyhow::Ok((conn, reader))
    };
    let (_conn, mut reader) = match tokio::time::timeout(SETUP_TIMEOUT, setup).await {
        Ok(Ok(ok)) => ok,
        _ => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            return got;
        }
    };
    got.ready = true;
    shared.ready.fetch_add(1, Ordering::Relaxed);
    let mut complete = false;
    loop {
        let more = tokio::select! {
            biased;
            _ = stop.changed() => break,
            more = reader.read(|event| {
                let now = shared.origin.elapsed().as_micros() as u64;
                got.record(&mut seen, event, now);
            }) => more,
        };
        if !complete && got.distinct == shared.changes {
            complete = true;
            shared.complete.fetch_add(1, Ordering::Relaxed);
        }
        if !matches!(more, Ok(true)) {
            shared.closed.fetch_add(1, Ordering::Relaxed);
            break;
        }
    }
    got
}

/// An MQTT client on the K state topics, timing the same changes.
async fn mqtt_subscriber(
    port: u16,
    i: usize,
    things: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<Got> {
    let filters: Vec<String> = (0..things)
        .map(|t| format!("shade/things/sse-{t}/state"))
        .collect();
    let id = format!("bench-sse-mqtt-{i}");
    let (client, mut el) = connect(options(&id, port, 64), 256, &filters).await?;
    let mut got = Got {
        ready: true,
        ..Got::default()
    };
    let mut seen = vec![false; shared.changes];
    shared.mqtt_ready.fetch_add(1, Ordering::Relaxed);
    let mut complete = false;
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => break,
            event = el.poll() => event.with_context(|| format!("{id}: connection"))?,
        };
        if let Event::Incoming(Packet::Publish(p)) = event {
            let now = shared.origin.elapsed().as_micros() as u64;
            got.record(&mut seen, &p.payload, now);
            if !complete && got.distinct == shared.changes {
                complete = true;
                shared.mqtt_complete.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let _ = client.try_disconnect();
    Ok(got)
}

/// The body of change `k`, stamped now.
fn change(shared: &Shared, k: usize) -> String {
    let sent_us = shared.origin.elapsed().as_micros() as u64;
    format!(r#"{{"state":{{"desired":{{"sent_us":{sent_us},"sse_seq":{k}}}}}}}"#)
}

/// When change `k` is due.
fn due(t0: tokio::time::Instant, rate: f64, k: usize) -> tokio::time::Instant {
    t0 + Duration::from_secs_f64(k as f64 / rate)
}

/// Makes every change on schedule over MQTT; returns those whose PUBACK
/// had not come when the last was sent.
async fn publish_mqtt(mqtt_port: u16, p: &Params, shared: &Shared) -> Result<u64> {
    let (dash, mut el) =
        connect(options("bench-sse-dashboard", mqtt_port, 1000), 4096, &[]).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let acks = acked.clone();
    let poller = tokio::spawn(async move {
        while let Ok(event) = el.poll().await {
            if let Event::Incoming(Packet::PubAck(_)) = event {
                acks.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let t0 = tokio::time::Instant::now();
    for k in 0..shared.changes {
        tokio::time::sleep_until(due(t0, p.rate, k)).await;
        let topic = format!("$aws/things/sse-{}/shadow/update", k % p.things);
        dash.publish(topic, QoS::AtLeastOnce, false, change(shared, k))
            .await
            .context("dashboard publish")?;
    }
    // The last PUBACKs, at most 5 s.
    let waited = Instant::now();
    while acked.load(Ordering::Relaxed) < shared.changes as u64
        && waited.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let unacked = (shared.changes as u64).saturating_sub(acked.load(Ordering::Relaxed));
    let _ = dash.try_disconnect();
    poller.abort();
    Ok(unacked)
}

/// Makes every change on schedule over HTTP, from [`HTTP_PUBLISHERS`]
/// connections (change k from connection k mod 8); returns the answers
/// other than 200 and the requests without one.
async fn publish_http(http_port: u16, p: &Params, shared: &Arc<Shared>) -> Result<u64> {
    let t0 = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..HTTP_PUBLISHERS {
        let (shared, p) = (shared.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(http_port).await?;
            let mut bad = 0u64;
            for k in (w..shared.changes).step_by(HTTP_PUBLISHERS) {
                tokio::time::sleep_until(due(t0, p.rate, k)).await;
                let path = format!("/things/sse-{}/shadow", k % p.things);
                let body = Bytes::from(change(&shared, k));
                match conn.call(Method::POST, &path, body).await {
                    Ok((StatusCode::OK, _)) => {}
                    Ok(_) => bad += 1,
                    Err(_) => {
                        bad += 1;
                        conn = Conn::open(http_port).await?;
                    }
                }
            }
            anyhow::Ok(bad)
        }));
    }
    let mut bad = 0;
    for t in tasks {
        bad += t.await.context("HTTP publisher")??;
    }
    Ok(bad)
}

fn figures(m: &mut Metrics, prefix: &str, gots: &mut [Got], changes: usize) {
    let ready = gots.iter().filter(|g| g.ready).count();
    let missing: usize = gots
        .iter()
        .filter(|g| g.ready)
        .map(|g| changes - g.distinct)
        .sum();
    let duplicates: usize = gots.iter().map(|g| g.duplicates).sum();
    let complete = gots
        .iter()
        .filter(|g| g.ready && g.distinct == changes)
        .count();
    let mut samples: Vec<u32> = gots.iter_mut().flat_map(|g| g.samples.drain(..)).collect();
    samples.sort_unstable();
    m.insert(format!("{prefix}subscribers_ready"), ready as f64);
    m.insert(format!("{prefix}subscribers_complete"), complete as f64);
    m.insert(format!("{prefix}missing"), missing as f64);
    m.insert(format!("{prefix}duplicates"), duplicates as f64);
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99_9", 0.999), ("max", 1.0)] {
        m.insert(
            format!("{prefix}{label}_ms"),
            quantile(&samples, q) / 1000.0,
        );
    }
}

/// Write system calls `pid` made so far (`syscw` of /proc/PID/io).
fn write_calls(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The SSE phase on a running server (HTTP on `http_port`).
pub(crate) async fn measure(shade: &Shade, http_port: u16, p: &Params) -> Result<Metrics> {
    if p.things == 0 || p.rate <= 0.0 {
        bail!("--sse-things and --sse-rate must be positive");
    }
    let pid = shade.pid()?;
    let rss = |m: &mut Metrics, key: &str| {
        let mib = rss_bytes(pid).unwrap_or(0) as f64 / 1048576.0;
        m.insert(format!("sse.rss_mib.{key}"), mib);
    };
    let mut m = Metrics::new();
    crate::http::create(http_port, "sse-", p.things, 8).await?;
    rss(&mut m, "before");
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        changes: (p.rate * p.seconds).round() as usize,
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        complete: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
        mqtt_ready: AtomicUsize::new(0),
        mqtt_complete: AtomicUsize::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let limit = Arc::new(Semaphore::new(64));
    let path: Arc<str> = match &p.filter {
        Some(filter) => format!("/events?prefix=sse-&where={}", percent_encode(filter)),
        None => "/events?prefix=sse-".to_owned(),
    }
    .into();
    let t_setup = Instant::now();
    let subs: Vec<_> = (0..p.subscribers)
        .map(|_| {
            let (s, l, r) = (shared.clone(), limit.clone(), stop_rx.clone());
            tokio::spawn(subscriber(http_port, path.clone(), p.things, s, l, r))
        })
        .collect();
    let mqtts: Vec<_> = (0..p.mqtt_subscribers)
        .map(|i| {
            let (s, r) = (shared.clone(), stop_rx.clone());
            tokio::spawn(mqtt_subscriber(shade.port, i, p.things, s, r))
        })
        .collect();
    let all_up = || {
        shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
            >= p.subscribers
            && shared.mqtt_ready.load(Ordering::Relaxed) >= p.mqtt_subscribers
    };
    while !all_up() {
        if t_setup.elapsed() > SETUP_TIMEOUT + Duration::from_secs(10) {
            bail!(
                "subscribers not set up in time: {} SSE ready, {} failed, {} MQTT ready",
                shared.ready.load(Ordering::Relaxed),
                shared.failed.load(Ordering::Relaxed),
                shared.mqtt_ready.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    m.insert("sse.setup_s".into(), t_setup.elapsed().as_secs_f64());
    m.insert(
        "sse.subscribe_failed".into(),
        shared.failed.load(Ordering::Relaxed) as f64,
    );
    rss(&mut m, "subscribed");

    let cpu = CpuMeter::start(pid);
    let writes0 = write_calls(pid);
    let t0 = Instant::now();
    let within = Duration::from_secs_f64(p.seconds + 60.0);
    let publish = async {
        match p.via {
            Via::Mqtt => publish_mqtt(shade.port, p, &shared).await,
            Via::Http => publish_http(http_port, p, &shared).await,
        }
    };
    let bad = tokio::time::timeout(within, publish)
        .await
        .context("publishing took a minute longer than planned")??;
    let published_for = t0.elapsed().as_secs_f64();
    rss(&mut m, "end");
    let t_drain = Instant::now();
    let ready = shared.ready.load(Ordering::Relaxed);
    let mqtt_ready = shared.mqtt_ready.load(Ordering::Relaxed);
    while t_drain.elapsed().as_secs_f64() < p.drain
        && (shared.complete.load(Ordering::Relaxed) + shared.closed.load(Ordering::Relaxed) < ready
            || shared.mqtt_complete.load(Ordering::Relaxed) < mqtt_ready)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    m.insert("sse.drain_s".into(), t_drain.elapsed().as_secs_f64());
    // From the first change until every subscriber had every change (or
    // the drain bound): what the whole delivery cost.
    cpu.finish(&mut m, "sse.");
    let writes = write_calls(pid)
        .zip(writes0)
        .map(|(b, a)| b.saturating_sub(a));
    let _ = stop_tx.send(true);
    let mut gots = Vec::new();
    for t in subs {
        let got = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .context("an SSE subscriber did not stop")?
            .context("SSE subscriber")?;
        gots.push(got);
    }
    let mut mqtt_gots = Vec::new();
    for t in mqtts {
        let got = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .context("an MQTT subscriber did not stop")?
            .context("MQTT subscriber")??;
        mqtt_gots.push(got);
    }
    let changes = shared.changes;
    m.insert("sse.changes".into(), changes as f64);
    m.insert("sse.rate_sent_per_s".into(), changes as f64 / published_for);
    m.insert("sse.publish_not_ok".into(), bad as f64);
    m.insert(
        "sse.closed_by_server".into(),
        shared.closed.load(Ordering::Relaxed) as f64,
    );
    let delivered: usize = gots.iter().map(|g| g.distinct).sum();
    m.insert("sse.events_delivered".into(), delivered as f64);
    if let Some(w) = writes.filter(|_| delivered > 0) {
        // Every write of the server (MQTT and the store's too), per event.
        m.insert(
            "sse.server_writes_per_event".into(),
            w as f64 / delivered as f64,
        );
    }
    figures(&mut m, "sse.", &mut gots, changes);
    if p.mqtt_subscribers > 0 {
        figures(&mut m, "sse.mqtt.", &mut mqtt_gots, changes);
    }
    Ok(m)
}

/// `text` as a query-string value: every byte but the unreserved ones
/// percent-encoded.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
