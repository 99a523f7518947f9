//! `http`: the HTTP API of `shade serve --http 127.0.0.1:<port>`, with the
//! MQTT figures of the same server beside it.
//!
//! Phases, in this order on one fresh server (`--phases` picks some):
//! 1. `get`: C keep-alive connections (one hyper HTTP/1.1 connection per
//!    worker, one request in flight each) loop `GET /things/http-<r>/shadow`
//!    on a random one of T things created first. Requests/s, p50/p99/p99.9.
//! 2. `post`: the same with `POST` of `{"state":{"desired":{"n":i}}}`,
//!    every one a change. 200s counted, other statuses by code. The
//!    per-thing rate limit is lifted in the bench's broker.toml.
//! 3. `mqtt`: the `throughput` scenario's measure on the same server (C
//!    devices, `--mqtt-window` QoS 1 updates in flight each; reported
//!    updates on their own things): MQTT beside the HTTP POST figure.
//! 4. `sse`: S subscribers on `GET /events` ([`crate::http_sse`]).
//!
//! Latencies are from sending a request to its whole answer, in this
//! process, which shares the two cores with the server. The HTTP client
//! always sets TCP_NODELAY; pass `--nodelay` so the MQTT devices do too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use rand::{Rng, SeedableRng};

use crate::client::quantile;
use crate::http_client::{wait_listening, Conn};
use crate::procs::{rss_bytes, CpuMeter, Shade, ShadeOptions};
use crate::{http_sse, throughput, Metrics};

/// Parameters of one run.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub(crate) connections: usize,
    pub(crate) things: usize,
    pub(crate) seconds: f64,
    pub(crate) warmup: f64,
    /// Which of get, post, mqtt, sse.
    pub(crate) phases: Vec<String>,
    /// QoS 1 updates in flight per MQTT device in the `mqtt` phase.
    pub(crate) mqtt_window: usize,
    pub(crate) sse: http_sse::Params,
}

/// The things of the get and post phases.
fn thing(i: usize) -> String {
    format!("http-{i}")
}

/// Creates `n` shadows `<prefix><i>` over HTTP, `conns` connections at a
/// time, each `{"state":{"desired":{"n":0}}}` (bounded: 120 s).
pub(crate) async fn create(port: u16, prefix: &str, n: usize, conns: usize) -> Result<()> {
    let conns = conns.clamp(1, n.max(1));
    let mut tasks = Vec::new();
    for w in 0..conns {
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(port).await?;
            let body = Bytes::from_static(br#"{"state":{"desired":{"n":0}}}"#);
            for i in (w..n).step_by(conns) {
                let path = format!("/things/{prefix}{i}/shadow");
                let (status, answer) = c.call(Method::POST, &path, body.clone()).await?;
                if status != StatusCode::OK {
                    bail!("POST {path}: {status} {}", String::from_utf8_lossy(&answer));
                }
            }
            anyhow::Ok(())
        }));
    }
    let all = async {
        for t in tasks {
            t.await.context("create task")??;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .with_context(|| format!("creating {n} shadows took more than 120 s"))?
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    Post,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Post => "post",
        }
    }
}

/// What the workers of a phase count.
#[derive(Debug, Default)]
struct Counts {
    measuring: AtomicBool,
    stop: AtomicBool,
    ok: AtomicU64,
    /// Answers other than 200, by status.
    other: Mutex<BTreeMap<u16, u64>>,
    /// Requests that got no answer (connection errors, timeouts).
    failed: AtomicU64,
    /// Workers that could not reconnect and stopped.
    lost: AtomicU64,
}

/// One worker: its own connection, one request at a time until told to
/// stop; a broken connection is opened again (three tries). Returns the
/// latencies (µs) of the answers that came while measuring.
async fn worker(port: u16, w: usize, op: Op, things: usize, c: Arc<Counts>) -> Result<Vec<u32>> {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut conn = Conn::open(port).await?;
    let mut samples = Vec::new();
    let mut n = w as u64;
    let stride = 1 << 20;
    while !c.stop.load(Ordering::Relaxed) {
        let path = format!("/things/{}/shadow", thing(rng.random_range(0..things)));
        let (method, body) = match op {
            Op::Get => (Method::GET, Bytes::new()),
            Op::Post => {
                n += stride;
                let body = format!(r#"{{"state":{{"desired":{{"n":{n}}}}}}}"#);
                (Method::POST, Bytes::from(body))
            }
        };
        let at = Instant::now();
        let answer = conn.call(method, &path, body).await;
        let us = u32::try_from(at.elapsed().as_micros()).unwrap_or(u32::MAX);
        let measuring = c.measuring.load(Ordering::Relaxed);
        match answer {
            Ok((status, _)) => {
                if !measuring {
                    continue;
                }
                samples.push(us);
                if status == StatusCode::OK {
                    c.ok.fetch_add(1, Ordering::Relaxed);
                } else if let Ok(mut other) = c.other.lock() {
                    *other.entry(status.as_u16()).or_default() += 1;
                }
            }
            Err(_) => {
                if measuring {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                }
                let mut again = None;
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Ok(fresh) = Conn::open(port).await {
                        again = Some(fresh);
                        break;
                    }
                }
                match again {
                    Some(fresh) => conn = fresh,
                    None => {
                        c.lost.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
    Ok(samples)
}

/// One GET or POST phase: `{op}.per_s`, quantiles, statuses, CPU, RSS.
async fn load(shade: &Shade, port: u16, op: Op, p: &Params) -> Result<Metrics> {
    let c = Arc::new(Counts::default());
    let tasks: Vec<_> = (0..p.connections)
        .map(|w| tokio::spawn(worker(port, w, op, p.things, c.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(p.warmup)).await;
    let pid = shade.pid()?;
    let cpu = CpuMeter::start(pid);
    c.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(p.seconds)).await;
    c.measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let name = op.name();
    let mut m = Metrics::new();
    cpu.finish(&mut m, &format!("{name}."));
    c.stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for t in tasks {
        // A request in progress ends within its own 10 s bound.
        let s = tokio::time::timeout(Duration::from_secs(15), t)
            .await
            .with_context(|| format!("an HTTP {name} worker did not stop"))?
            .context("HTTP worker")??;
        samples.extend(s);
    }
    samples.sort_unstable();
    let ok = c.ok.load(Ordering::Relaxed);
    m.insert(format!("{name}.per_s"), ok as f64 / elapsed);
    m.insert(format!("{name}.ok"), ok as f64);
    if let Ok(other) = c.other.lock() {
        for (status, count) in other.iter() {
            m.insert(format!("{name}.status.{status}"), *count as f64);
        }
    }
    m.insert(
        format!("{name}.failed"),
        c.failed.load(Ordering::Relaxed) as f64,
    );
    m.insert(
        format!("{name}.workers_lost"),
        c.lost.load(Ordering::Relaxed) as f64,
    );
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99_9", 0.999), ("max", 1.0)] {
        m.insert(format!("{name}.{label}_ms"), quantile(&samples, q) / 1000.0);
    }
    m.insert(
        format!("{name}.rss_mib"),
        rss_bytes(pid).unwrap_or(0) as f64 / 1048576.0,
    );
    Ok(m)
}

/// One run on a fresh `shade serve --http 127.0.0.1:<port>`.
pub(crate) async fn run(bins: &std::path::Path, p: &Params) -> Result<Metrics> {
    for phase in &p.phases {
        if !["get", "post", "mqtt", "sse"].contains(&phase.as_str()) {
            bail!("unknown phase {phase:?}: get, post, mqtt or sse");
        }
    }
    let has = |name: &str| p.phases.iter().any(|x| x == name);
    let opts = ShadeOptions {
        http: true,
        max_connections: p.connections + p.sse.subscribers + 1000,
        ..ShadeOptions::default()
    };
    let mut shade = Shade::start(bins, &opts)?;
    let port = shade.http_port.context("no HTTP port")?;
    wait_listening(port, Duration::from_secs(30)).await?;
    let mut m = Metrics::new();
    m.insert(
        "idle.rss_mib".into(),
        rss_bytes(shade.pid()?).unwrap_or(0) as f64 / 1048576.0,
    );
    if has("get") || has("post") {
        let t = Instant::now();
        create(port, "http-", p.things, p.connections).await?;
        m.insert("setup.create_s".into(), t.elapsed().as_secs_f64());
    }
    if has("get") {
        eprintln!("  http: GET, {} connections", p.connections);
        m.extend(load(&shade, port, Op::Get, p).await?);
    }
    if has("post") {
        eprintln!("  http: POST, {} connections", p.connections);
        m.extend(load(&shade, port, Op::Post, p).await?);
    }
    if has("mqtt") {
        eprintln!(
            "  http: MQTT updates, {} devices x {} in flight",
            p.connections, p.mqtt_window
        );
        let tp = throughput::Params {
            devices: p.connections,
            seconds: p.seconds,
            warmup: p.warmup,
            window: p.mqtt_window,
        };
        let mq =
            throughput::measure(throughput::Target::Shade, shade.port, shade.pid()?, tp).await?;
        m.extend(mq.into_iter().map(|(k, v)| {
            let k = k.strip_prefix("shade.").map_or(k.clone(), str::to_owned);
            (format!("mqtt_update.{k}"), v)
        }));
    }
    if let (Some(h), Some(q)) = (m.get("post.per_s"), m.get("mqtt_update.per_s")) {
        m.insert("ratio.post_to_mqtt_update".into(), h / q);
    }
    if has("sse") {
        eprintln!(
            "  http: SSE, {} subscribers, {}/s for {} s",
            p.sse.subscribers, p.sse.rate, p.sse.seconds
        );
        m.extend(http_sse::measure(&shade, port, &p.sse).await?);
    }
    shade.kill();
    Ok(m)
}
