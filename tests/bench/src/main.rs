//! shade-bench: the load generator of docs/BENCHMARKS.md.
//!
//! It starts what it measures itself (`shade serve` and `shade-agent` from
//! the directory of this binary, normally `target/release/`, and Debian's
//! `mosquitto`), on loopback ports it picks free, with temporary data
//! directories, and kills them by pid when done. Every scenario is bounded
//! in count and time. One MQTT connection (rumqttc) per simulated device.
//! The generator runs on the same machine as the server and competes with it
//! for the CPU: the figures are for both together.
//!
//! ```text
//! cargo build --release -p shade-broker -p shade-agent -p shade-bench
//! target/release/shade-bench throughput --devices 50 --seconds 10 --runs 3 --out t.json
//! ```
//!
//! `cargo run --release -p shade-bench -- throughput ...` runs the same once
//! `shade` and `shade-agent` are built: cargo builds only this binary for it.
//!
//! # Layout
//!
//! - here: the command line, repeated runs, the table and the JSON file.
//! - [`procs`]: the processes measured, free ports, VmRSS, the machine.
//! - [`client`]: rumqttc connection helpers, quantiles.
//! - one file per scenario: [`throughput`] (with its two baselines),
//!   [`latency`], [`storm`], [`catchup`], [`memory`], [`fleet`], and
//!   [`http`] (with [`http_sse`], over [`http_client`]).

mod catchup;
mod client;
mod fleet;
mod http;
mod http_client;
mod http_sse;
mod latency;
mod memory;
mod procs;
mod storm;
mod storm_library;
mod throughput;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;

/// Named figures of one run.
pub(crate) type Metrics = BTreeMap<String, f64>;

/// Wall-clock milliseconds (the agents' writes are stamped with it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Parser)]
#[command(
    name = "shade-bench",
    about = "Load generator for shade serve (see docs/BENCHMARKS.md)"
)]
struct Cli {
    /// Repeat the scenario this many times (fresh processes each time);
    /// the table shows the median and the spread.
    #[arg(long, global = true, default_value_t = 1)]
    runs: usize,
    /// Write the results as JSON to this file.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Directory of the `shade` and `shade-agent` binaries (default: this
    /// binary's directory).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// Clients set TCP_NODELAY (rumqttc's default, which shade-agent keeps,
    /// leaves Nagle's algorithm on).
    #[arg(long, global = true)]
    nodelay: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Accepted updates per second, and the rumqttd and mosquitto baselines.
    Throughput {
        #[arg(long, default_value_t = 50)]
        devices: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Requests in flight per device.
        #[arg(long, default_value_t = 16)]
        window: usize,
        /// Which of shade, rumqttd, mosquitto to measure.
        #[arg(long, value_delimiter = ',', default_value = "shade,rumqttd,mosquitto")]
        targets: Vec<String>,
    },
    /// Desired-to-delta latency at a fixed rate of desired changes.
    Latency {
        #[arg(long, default_value_t = 1000)]
        things: usize,
        /// Desired changes per second, over all things.
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
    },
    /// Time until N agents converge after a broker restart.
    Storm {
        /// Agents, or several sizes run one after another (`1000,5000`).
        #[arg(long, value_delimiter = ',', default_value = "10000")]
        agents: Vec<usize>,
        /// Real `shade_agent::Agent`s (the library's replica and sync
        /// loop) instead of the protocol-level simulation.
        #[arg(long)]
        library: bool,
        /// Bound of the untimed setup (every agent's first sync), seconds.
        #[arg(long, default_value_t = 300.0)]
        setup_timeout: f64,
        /// Bound of the timed reconnection, seconds.
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
    },
    /// N plain clients connect and subscribe at once over N shadows; then a
    /// late `shade/things/#` subscriber.
    Fleet {
        #[arg(long, default_value_t = 5000)]
        clients: usize,
        /// Bound of each phase, seconds.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
        /// shade or mosquitto (its retained store holding the states).
        #[arg(long, default_value = "shade")]
        target: String,
    },
    /// Time for one shade-agent to push its pending leaves after reconnecting.
    Catchup {
        #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
        leaves: Vec<usize>,
        #[arg(long, default_value_t = 900.0)]
        timeout: f64,
    },
    /// Resident memory with many shadows and idle connections; disk per shadow.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        shadows: usize,
        #[arg(long, default_value_t = 10_000)]
        idle: usize,
        #[arg(long, default_value_t = 20)]
        writers: usize,
        /// Idle connections also subscribe to their thing's update/delta.
        #[arg(long)]
        subscribe: bool,
        #[arg(long, default_value_t = 300.0)]
        timeout: f64,
    },
    /// The HTTP API: GET and POST requests/s and latency over keep-alive
    /// connections, MQTT updates beside them, and SSE fan-out.
    Http {
        /// Concurrent keep-alive connections (one request in flight each);
        /// also the MQTT devices of the mqtt phase.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Things the GET and POST requests pick from at random.
        #[arg(long, default_value_t = 1000)]
        things: usize,
        /// Length of the get, post and mqtt phases, each.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Which of get, post, mqtt, sse to run (in that order).
        #[arg(long, value_delimiter = ',', default_value = "get,post,mqtt,sse")]
        phases: Vec<String>,
        /// QoS 1 updates in flight per MQTT device in the mqtt phase (1:
        /// as the HTTP connections; 16: the throughput scenario's).
        #[arg(long, default_value_t = 1)]
        mqtt_window: usize,
        /// SSE subscribers on GET /events, one connection each.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Changes per second while the subscribers listen.
        #[arg(long, default_value_t = 200.0)]
        sse_rate: f64,
        #[arg(long, default_value_t = 10.0)]
        sse_seconds: f64,
        /// Shadows the changes are spread over (each stream's snapshot).
        #[arg(long, default_value_t = 100)]
        sse_things: usize,
        /// How the changes are made: mqtt or http.
        #[arg(long, default_value = "mqtt")]
        sse_via: String,
        /// A fleet query every stream is opened with (`/events?where=`),
        /// to measure judging each change; it must match every shadow
        /// (e.g. `version > 0`), as the subscribers count every change.
        #[arg(long)]
        sse_where: Option<String>,
        /// MQTT clients on the same changes' state topics, for comparison.
        #[arg(long, default_value_t = 1)]
        mqtt_subscribers: usize,
        /// Bound of the wait for the last deliveries, seconds.
        #[arg(long, default_value_t = 10.0)]
        drain: f64,
    },
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Throughput { .. } => "throughput",
            Scenario::Latency { .. } => "latency",
            Scenario::Storm { .. } => "storm",
            Scenario::Catchup { .. } => "catchup",
            Scenario::Fleet { .. } => "fleet",
            Scenario::Memory { .. } => "memory",
            Scenario::Http { .. } => "http",
        }
    }
}

async fn run_once(scenario: &Scenario, bins: &std::path::Path) -> Result<Metrics> {
    match scenario {
        Scenario::Throughput {
            devices,
            seconds,
            warmup,
            window,
            targets,
        } => {
            let targets = targets
                .iter()
                .map(|t| match t.as_str() {
                    "shade" => Ok(throughput::Target::Shade),
                    "rumqttd" => Ok(throughput::Target::Rumqttd),
                    "mosquitto" => Ok(throughput::Target::Mosquitto),
                    other => anyhow::bail!("unknown target {other:?}: shade, rumqttd or mosquitto"),
                })
                .collect::<Result<Vec<_>>>()?;
            let p = throughput::Params {
                devices: *devices,
                seconds: *seconds,
                warmup: *warmup,
                window: *window,
            };
            throughput::run(bins, &targets, p).await
        }
        Scenario::Latency {
            things,
            rate,
            seconds,
            warmup,
        } => {
            latency::run(
                bins,
                latency::Params {
                    things: *things,
                    rate: *rate,
                    seconds: *seconds,
                    warmup: *warmup,
                },
            )
            .await
        }
        Scenario::Fleet {
            clients,
            timeout,
            target,
        } => {
            let target = match target.as_str() {
                "shade" => fleet::Target::Shade,
                "mosquitto" => fleet::Target::Mosquitto,
                other => anyhow::bail!("unknown target {other:?}: shade or mosquitto"),
            };
            let p = fleet::Params {
                clients: *clients,
                timeout: *timeout,
                target,
            };
            fleet::run(bins, p).await
        }
        Scenario::Storm {
            agents,
            library,
            setup_timeout,
            timeout,
        } => {
            let mut all = Metrics::new();
            for &n in agents {
                let m = if *library {
                    let (setup, within) = (*setup_timeout, *timeout);
                    let (setup, within) = (
                        std::time::Duration::from_secs_f64(setup),
                        std::time::Duration::from_secs_f64(within),
                    );
                    storm_library::run(bins, n, setup, within).await?
                } else {
                    let p = storm::Params {
                        agents: n,
                        setup_timeout: *setup_timeout,
                        timeout: *timeout,
                    };
                    storm::run(bins, p).await?
                };
                if agents.len() == 1 {
                    return Ok(m);
                }
                all.extend(m.into_iter().map(|(k, v)| (format!("{n}.{k}"), v)));
            }
            Ok(all)
        }
        Scenario::Catchup { leaves, timeout } => {
            let mut all = Metrics::new();
            for &l in leaves {
                let m = catchup::run(
                    bins,
                    catchup::Params {
                        leaves: l,
                        timeout: *timeout,
                    },
                )
                .await?;
                all.extend(m.into_iter().map(|(k, v)| (format!("{l}.{k}"), v)));
            }
            Ok(all)
        }
        Scenario::Memory {
            shadows,
            idle,
            writers,
            subscribe,
            timeout,
        } => {
            let p = memory::Params {
                shadows: *shadows,
                idle: *idle,
                writers: *writers,
                subscribe: *subscribe,
                timeout: *timeout,
            };
            memory::run(bins, p).await
        }
        Scenario::Http {
            connections,
            things,
            seconds,
            warmup,
            phases,
            mqtt_window,
            subscribers,
            sse_rate,
            sse_seconds,
            sse_things,
            sse_via,
            sse_where,
            mqtt_subscribers,
            drain,
        } => {
            let via = match sse_via.as_str() {
                "mqtt" => http_sse::Via::Mqtt,
                "http" => http_sse::Via::Http,
                other => anyhow::bail!("unknown --sse-via {other:?}: mqtt or http"),
            };
            let p = http::Params {
                connections: *connections,
                things: *things,
                seconds: *seconds,
                warmup: *warmup,
                phases: phases.clone(),
                mqtt_window: *mqtt_window,
                sse: http_sse::Params {
                    subscribers: *subscribers,
                    rate: *sse_rate,
                    seconds: *sse_seconds,
                    things: *sse_things,
                    via,
                    filter: sse_where.clone(),
                    mqtt_subscribers: *mqtt_subscribers,
                    drain: *drain,
                },
            };
            http::run(bins, &p).await
        }
    }
}

/// Median, min and max of each figure over the runs.
fn summarize(runs: &[Metrics]) -> BTreeMap<String, (f64, f64, f64)> {
    let mut by_key: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in runs {
        for (k, v) in run {
            by_key.entry(k.clone()).or_default().push(*v);
        }
    }
    by_key
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            let median = if v.len() % 2 == 1 {
                v[v.len() / 2]
            } else {
                (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
            };
            (k, (median, v[0], v[v.len() - 1]))
        })
        .collect()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let bins = procs::bin_dir(cli.bin_dir.as_deref())?;
    let nofile = procs::raise_nofile();
    let _ = client::NODELAY.set(cli.nodelay);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    let name = cli.scenario.name();
    let mut runs = Vec::new();
    let mut loads = Vec::new();
    for i in 0..cli.runs.max(1) {
        let load = procs::loadavg();
        eprintln!(
            "{name}: run {} of {} (loadavg {load})",
            i + 1,
            cli.runs.max(1)
        );
        let m = runtime.block_on(run_once(&cli.scenario, &bins))?;
        for (k, v) in &m {
            eprintln!("  {k:<36} {v:>14.3}");
        }
        loads.push(load);
        runs.push(m);
    }
    let summary = summarize(&runs);
    println!(
        "\n{name} ({} runs; loadavg at each start: {})",
        runs.len(),
        loads.join(" | ")
    );
    println!(
        "{:<36} {:>14} {:>14} {:>14}",
        "figure", "median", "min", "max"
    );
    for (k, (med, min, max)) in &summary {
        println!("{k:<36} {med:>14.3} {min:>14.3} {max:>14.3}");
    }
    if let Some(path) = &cli.out {
        let doc = json!({
            "scenario": name,
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "machine": procs::machine(),
            "open_file_limit": nofile,
            "client_tcp_nodelay": cli.nodelay,
            "loadavg_at_start": loads,
            "runs": runs,
            "summary": summary.iter().map(|(k, (med, min, max))| {
                (k.clone(), json!({"median": med, "min": min, "max": max}))
            }).collect::<serde_json::Map<_, _>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}
