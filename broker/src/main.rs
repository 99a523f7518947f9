//! The `shade` binary: `shade serve` and the operator commands.

mod quiet_log;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use shade_broker::cli::{
    self, backup, conflicts, count, device, export, get, history, list, password, update, watch,
};
use shade_broker::{Config, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "shade",
    version,
    about = "Device shadows over MQTT that merge instead of rejecting."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the shadow service with its embedded MQTT broker.
    #[command(
        after_help = "Example:\n  shade serve                       # 127.0.0.1:1883, data in ./shade-data\n  shade serve --config config/broker.toml --listen 127.0.0.1:18830\n  shade serve --http 127.0.0.1:8081   # the HTTP API and dashboard elsewhere (--http off: none)\n\nSignals: SIGINT or SIGTERM stop it gracefully; SIGHUP reads the config's users and the [tls] files (cert, key, client_ca, crl) again."
    )]
    Serve {
        /// TOML config file (see config/broker.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// MQTT TCP listener address, overriding the config.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Data directory, overriding the config.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Accept clients without authentication on a non-loopback listener.
        #[arg(long)]
        allow_anonymous: bool,
        /// HTTP API and dashboard address, or `off` (default 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR|off")]
        http: Option<String>,
    },
    /// Show one shadow: desired, reported, delta and conflicts.
    #[command(after_help = get::EXAMPLES)]
    Get(get::GetArgs),
    /// List shadows with their versions.
    #[command(after_help = list::EXAMPLES)]
    List(list::ListArgs),
    /// Count shadows matching a fleet query, per value, with statistics.
    #[command(after_help = count::EXAMPLES)]
    Count(count::CountArgs),
    /// Change a shadow's desired or reported state.
    #[command(after_help = update::UPDATE_EXAMPLES)]
    Update(update::UpdateArgs),
    /// Delete a shadow (its version lives on).
    #[command(after_help = update::DELETE_EXAMPLES)]
    Delete(update::DeleteArgs),
    /// Print one line per change to any shadow (or one thing's) until Ctrl-C.
    #[command(after_help = watch::EXAMPLES)]
    Watch(watch::WatchArgs),
    /// Show a shadow's latest changes and who made them.
    #[command(after_help = history::EXAMPLES)]
    History(history::HistoryArgs),
    /// List concurrent writes: the value kept and the value set aside.
    #[command(after_help = conflicts::EXAMPLES)]
    Conflicts(conflicts::ConflictsArgs),
    /// Add, list and remove the secrets devices connect with.
    #[command(after_help = device::EXAMPLES)]
    Device(device::DeviceArgs),
    /// Copy a broker's data (running or stopped) into one file.
    #[command(after_help = backup::BACKUP_EXAMPLES)]
    Backup(backup::BackupArgs),
    /// Make a new data directory from a backup, under a new node name.
    #[command(after_help = backup::BACKUP_EXAMPLES)]
    Restore(backup::RestoreArgs),
    /// Write shadows and device secrets as JSON, to import elsewhere.
    #[command(after_help = export::EXPORT_EXAMPLES)]
    Export(export::ExportArgs),
    /// Write the shadows and devices of an export into a running broker.
    #[command(after_help = export::EXPORT_EXAMPLES)]
    Import(export::ImportArgs),
    /// Hash a password from stdin for a config user's password_hash.
    #[command(after_help = password::EXAMPLES)]
    HashPassword(password::HashPasswordArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // rustls warns on every handshake whose SNI is an IP address (what
        // mosquitto clients send for `-h 127.0.0.1`), which it then ignores.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn,rustls=error"));
    tracing_subscriber::registry()
        .with(filter)
        .with(quiet_log::QuietDisconnects)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only on a terminal: not in log files or the journal.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            data,
            allow_anonymous,
            http,
        } => {
            init_tracing();
            let overrides = Overrides {
                listen,
                data_dir: data,
                allow_anonymous,
                http,
            };
            let config = match Config::load(config.as_deref(), &overrides) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("shade serve: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("shade serve: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let shutdown = {
                let _inside = runtime.enter();
                shutdown_signal()
            };
            match runtime.block_on(shade_broker::serve(config, shutdown)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("shade serve: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Get(args) => cli::execute(get::run(args)),
        Command::List(args) => cli::execute(list::run(args)),
        Command::Count(args) => cli::execute(count::run(args)),
        Command::Update(args) => cli::execute(update::update(args)),
        Command::Delete(args) => cli::execute(update::delete(args)),
        Command::Watch(args) => cli::execute(watch::run(args)),
        Command::History(args) => cli::execute(history::run(args)),
        Command::Conflicts(args) => cli::execute(conflicts::run(args)),
        Command::Device(args) => cli::execute(device::run(args)),
        Command::Backup(args) => cli::execute(backup::backup(args)),
        Command::Restore(args) => cli::execute(backup::restore(args)),
        Command::Export(args) => cli::execute(export::export(args)),
        Command::Import(args) => cli::execute(export::import(args)),
        Command::HashPassword(args) => cli::execute(async { password::run(args) }),
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called (inside the runtime), not when first polled: the listeners accept
/// connections before `serve` polls it, and a SIGTERM in between must still
/// stop the service gracefully rather than kill it.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        match (interrupt, terminate) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
