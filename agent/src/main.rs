//! The `shade-agent` binary: `run`, `report`, `desire`, `state`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use shade_agent::config::{AgentConfig, Overrides};
use shade_agent::local::{self, LocalError, Request};
use shade_agent::replica::{self, Replica, ReplicaError};
use shade_agent::{kv, Agent};
use shade_client::now_ms;
use shade_shared::{Patch, Policies, Section};

#[derive(Debug, Parser)]
#[command(
    name = "shade-agent",
    version,
    about = "The shade device agent: an offline-first replica of a device shadow."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The flags of `shade-agent run` (boxed: the other commands are small).
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The broker, as mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS (port 8883 by default).
    #[arg(long)]
    broker: Option<String>,
    /// With mqtts://: PEM file of the CA certificates to trust (default: the system's roots).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// With mqtts://: the device's client certificate (PEM; its CN is the thing name).
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// With mqtts://: the private key (PEM) of --cert.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The thing whose shadow this agent keeps.
    #[arg(long)]
    thing: Option<String>,
    /// A named shadow (default: the classic shadow).
    #[arg(long)]
    shadow: Option<String>,
    /// Directory of the local replica.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Command run (sh -c) with the delta on stdin when desired differs from reported.
    #[arg(long, value_name = "CMD")]
    on_desired: Option<String>,
    /// TOML config file (see config/agent.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// MQTT client id (default shade-agent-THING[-SHADOW]); the replica id is a:<client id>.
    #[arg(long)]
    client_id: Option<String>,
    /// MQTT user name (for a broker with [auth]: the thing name).
    #[arg(long, env = "SHADE_USERNAME")]
    username: Option<String>,
    /// MQTT password (for a broker with [auth]: the secret of `shade device add`).
    #[arg(
        long,
        env = "SHADE_PASSWORD",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    password: Option<String>,
}

const DEFAULT_DATA: &str = "./shade-agent-data";

#[derive(Debug, Subcommand)]
enum Command {
    /// Keep the local replica in sync with the broker.
    #[command(
        after_help = "Examples:\n  shade-agent run --broker mqtt://127.0.0.1:1883 --thing lamp-1 --on-desired ./apply.sh\n  shade-agent run --broker mqtts://broker.lan:8883 --ca ca.pem --cert lamp-1.crt.pem --key lamp-1.key.pem --thing lamp-1"
    )]
    Run(Box<RunArgs>),
    /// Write reported state (durable when it exits 0).
    #[command(
        after_help = "Example:\n  shade-agent report --data ./shade-agent-data temperature=21.5 light.on=true"
    )]
    Report {
        #[arg(long, default_value = DEFAULT_DATA)]
        data: PathBuf,
        /// KEY=VALUE: dotted keys nest; VALUE is JSON or a string; null deletes.
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Write desired state from the device side (durable when it exits 0).
    #[command(
        after_help = "Example:\n  shade-agent desire --data ./shade-agent-data color=\"blue\" level=3"
    )]
    Desire {
        #[arg(long, default_value = DEFAULT_DATA)]
        data: PathBuf,
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Show the local replica: desired, reported, delta, pending, connected.
    #[command(after_help = "Example:\n  shade-agent state --data ./shade-agent-data --json")]
    State {
        #[arg(long, default_value = DEFAULT_DATA)]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("shade-agent: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    match cli.command {
        Command::Run(args) => {
            init_tracing();
            let RunArgs {
                broker,
                ca,
                cert,
                key,
                thing,
                shadow,
                data,
                on_desired,
                config,
                client_id,
                username,
                password,
            } = *args;
            let o = Overrides {
                broker,
                ca,
                cert,
                key,
                thing,
                shadow,
                data_dir: data,
                on_desired,
                client_id,
                username,
                password,
            };
            let config = match AgentConfig::load(config.as_deref(), &o) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            runtime.block_on(run(config))
        }
        Command::Report { data, pairs } => {
            runtime.block_on(write(&data, Section::Reported, &pairs))
        }
        Command::Desire { data, pairs } => runtime.block_on(write(&data, Section::Desired, &pairs)),
        Command::State { data, json } => runtime.block_on(state(&data, json)),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: not in log files or the journal.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(config: AgentConfig) -> ExitCode {
    // Installed before anything starts, so a SIGTERM that arrives while the
    // agent starts up stops it gracefully instead of killing it.
    let shutdown = shutdown_signal();
    let data = config.data_dir.clone();
    let agent = match Agent::start(config) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let (agent, cancel, data) = (agent.clone(), cancel.clone(), data.clone());
        async move { local::serve(agent, &data, cancel).await }
    });
    tracing::info!(data = %data.display(), thing = %agent.config().shadow, "shade-agent running");
    shutdown.await;
    tracing::info!("stopping");
    cancel.cancel();
    let _ = server.await;
    agent.shutdown().await;
    ExitCode::SUCCESS
}

/// How long a one-shot command waits for the replica's file, which a
/// starting agent or another one-shot command may hold for a moment.
const WAIT_FOR_REPLICA: Duration = Duration::from_secs(10);

/// Asks the running agent, or, when none runs, does `direct` on the
/// replica itself, retrying while another process holds the file.
async fn with_replica<T: Send + 'static>(
    data: &Path,
    req: Request,
    direct: impl Fn(&Path) -> Result<T, ReplicaError> + Send + Sync + 'static,
) -> Result<Result<local::Response, T>, String> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_REPLICA;
    let direct = std::sync::Arc::new(direct);
    loop {
        match local::request(data, &req, WAIT_FOR_REPLICA).await {
            Ok(r) => return Ok(Ok(r)),
            Err(LocalError::NotRunning(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        let (d, path) = (direct.clone(), data.to_owned());
        match tokio::task::spawn_blocking(move || d(&path)).await {
            Ok(Ok(v)) => return Ok(Err(v)),
            Ok(Err(ReplicaError::InUse(_))) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn no_replica(data: &Path) -> String {
    format!(
        "no replica in {}: start `shade-agent run --thing THING --data {}` once first",
        data.display(),
        data.display()
    )
}

async fn write(data: &Path, section: Section, pairs: &[String]) -> ExitCode {
    let patch = match kv::parse_assignments(pairs) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let req = Request::Write {
        section,
        patch: patch.clone(),
    };
    let result = with_replica(data, req, move |dir| -> Result<bool, ReplicaError> {
        let Some(mut r) = Replica::open_existing(dir)? else {
            return Ok(false);
        };
        r.write(section, &Patch::Merge(patch.clone()), now_ms())?;
        Ok(true)
    })
    .await;
    match result {
        Ok(Ok(r)) if r.ok => ExitCode::SUCCESS,
        Ok(Ok(r)) => fail(
            r.error
                .unwrap_or_else(|| "the running agent refused the write".into()),
        ),
        Ok(Err(true)) => ExitCode::SUCCESS,
        Ok(Err(false)) => fail(no_replica(data)),
        Err(e) => fail(e),
    }
}

async fn state(data: &Path, json: bool) -> ExitCode {
    let result = with_replica(data, Request::State, Replica::peek).await;
    let doc = match result {
        Ok(Ok(r)) if r.ok => r.state.unwrap_or_default(),
        Ok(Ok(r)) => {
            return fail(
                r.error
                    .unwrap_or_else(|| "the running agent refused".into()),
            )
        }
        Ok(Err(Some(s))) => replica::state_json(&s, &Policies::default(), false, now_ms()),
        Ok(Err(None)) => return fail(no_replica(data)),
        Err(e) => return fail(e),
    };
    let text = if json {
        format!("{doc}\n")
    } else {
        human(&doc)
    };
    print_out(&text)
}

/// Writes `text` to stdout. A reader that went away (`| head`) is not an
/// error: `println!` would panic on the broken pipe.
fn print_out(text: &str) -> ExitCode {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(format!("cannot write to stdout: {e}")),
    }
}

fn human(doc: &serde_json::Value) -> String {
    use std::fmt::Write;
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let empty = serde_json::json!({});
    let state = &doc["state"];
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "replica:   {}", doc["replica"].as_str().unwrap_or("?"));
    let _ = writeln!(
        out,
        "connected: {}",
        doc["connected"].as_bool().unwrap_or(false)
    );
    let _ = writeln!(out, "version:   {}", doc["version"]);
    let _ = writeln!(out, "pending:   {}", doc["pending"]);
    for name in ["desired", "reported", "delta"] {
        let v = state.get(name).unwrap_or(&empty);
        let _ = writeln!(out, "{name}:\n{}", pretty(v));
    }
    if let Some(c) = doc["conflicts"].as_array().filter(|c| !c.is_empty()) {
        let conflicts = pretty(&serde_json::Value::Array(c.clone()));
        let _ = writeln!(out, "conflicts:\n{conflicts}");
    }
    out
}

/// Resolves on SIGINT or SIGTERM; the handlers are installed by this call,
/// not when the future is first polled. A SIGHUP (which daemons take as
/// "reload", and whose default action would end the agent silently) is
/// logged and ignored: the agent reads its config at start only.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    let hangup = signal(SignalKind::hangup());
    async move {
        match (interrupt, terminate) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                let mut hangup = hangup.ok();
                loop {
                    tokio::select! {
                        _ = interrupt.recv() => break,
                        _ = terminate.recv() => break,
                        Some(_) = async { hangup.as_mut()?.recv().await } => {
                            tracing::info!("SIGHUP: shade-agent reads its config at start only; restart it to apply a change");
                        }
                    }
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
