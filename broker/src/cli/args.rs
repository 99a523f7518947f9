//! What every command shares: the broker and data-directory arguments,
//! the sources a read command draws on, and [`CliError`], the one line a
//! failed command prints. The floor below every other CLI module.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use shade_client::{BrokerUrl, ClientConfig, ClientIdentity, TlsFiles};
use shade_shared::{Policies, ShadowId, ShadowName, ThingName};

use crate::auth::credentials::CredentialsError;
use crate::config::{Config, ConfigError, Overrides};
use crate::store::{ReadStore, StoreError};

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("{s} is not between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// How to reach a running broker.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// The broker to ask: mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS
    /// (port 8883 by default).
    #[arg(long, value_name = "URL", default_value = "mqtt://127.0.0.1:1883")]
    pub broker: BrokerUrl,
    /// With mqtts://: PEM file of the CA certificates to trust (default:
    /// the system's roots).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// With mqtts://: a client certificate (PEM) to present; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// With mqtts://: the private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// MQTT user name, sent in the CONNECT.
    #[arg(long, value_name = "NAME", env = "SHADE_USERNAME")]
    pub username: Option<String>,
    /// MQTT password, sent in the CONNECT.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "SHADE_PASSWORD",
        hide_env_values = true,
        // Passwords may start with `-`.
        allow_hyphen_values = true
    )]
    pub password: Option<String>,
    /// Seconds to wait for the broker to connect and to answer.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub timeout: Duration,
}

impl BrokerArgs {
    /// The TLS client configuration of an `mqtts://` broker (`None` for
    /// `mqtt://`), from `--ca`, `--cert` and `--key`.
    pub fn tls(&self) -> Result<Option<Arc<ClientConfig>>, CliError> {
        if !self.broker.tls {
            return match (&self.ca, &self.cert) {
                (None, None) => Ok(None),
                _ => Err(CliError::Usage(format!(
                    "--ca, --cert and --key need an mqtts:// broker, not {}",
                    self.broker
                ))),
            };
        }
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(ClientIdentity {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let files = TlsFiles {
            ca: self.ca.clone(),
            identity,
        };
        shade_client::client_config(&files)
            .map(Some)
            .map_err(|e| CliError::Usage(e.to_string()))
    }
}

/// Where a reading command reads from: a running broker, or with `--data`
/// a stopped broker's data directory.
#[derive(Debug, Clone, Args)]
pub struct Source {
    #[command(flatten)]
    pub online: BrokerArgs,
    /// Read a stopped broker's data directory instead of asking a broker.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["broker", "ca", "cert", "key"])]
    pub data: Option<PathBuf>,
    /// With --data: the broker's config file, whose merge policies decide
    /// which side of a conflict is shown (default: lww for both sections).
    #[arg(long, value_name = "FILE", requires = "data")]
    pub config: Option<PathBuf>,
}

/// A stopped broker's data, open read-only.
#[derive(Debug)]
pub struct Offline {
    pub store: ReadStore,
    pub policies: Policies,
}

impl Source {
    /// Opens `--data` when given; `None` means: ask the broker.
    pub fn offline(&self) -> Result<Option<Offline>, CliError> {
        let Some(dir) = &self.data else {
            return Ok(None);
        };
        let policies = match &self.config {
            Some(path) => Config::load(Some(path), &Overrides::default())?.policies,
            None => Policies::default(),
        };
        let store = open_read_store(dir)?;
        Ok(Some(Offline { store, policies }))
    }
}

/// Opens a stopped broker's data directory read-only.
pub fn open_read_store(dir: &std::path::Path) -> Result<ReadStore, CliError> {
    ReadStore::open(dir).map_err(|e| match e {
        StoreError::InUse { .. } => CliError::InUse(dir.to_owned()),
        // A read-only open cannot repair what a crash left behind.
        StoreError::Db(redb::Error::RepairAborted) => CliError::NeedsRepair(dir.to_owned()),
        other => CliError::Store(other),
    })
}

/// The classic shadow of `thing`, or its shadow `name`.
pub fn shadow_id(thing: ThingName, name: Option<ShadowName>) -> ShadowId {
    match name {
        Some(name) => ShadowId::named(thing, name),
        None => ShadowId::classic(thing),
    }
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub use shade_client::now_ms;

/// Why a command failed: each prints as the one line after `shade: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot connect to {broker}: {reason}")]
    Connect { broker: BrokerUrl, reason: String },
    #[error("lost the connection to {broker}: {reason} (the broker closes a connection whose publish it refuses in MQTT 3.1.1, or whose password or secret was removed or changed: its log says which)")]
    Lost { broker: BrokerUrl, reason: String },
    #[error("timeout: no answer from {broker} within {secs} s while waiting for {waiting_for}")]
    Timeout {
        broker: BrokerUrl,
        secs: String,
        waiting_for: String,
    },
    /// An AWS `.../rejected` answer.
    #[error("{}", rejection_line(.id, *.code, .message))]
    Rejected {
        id: ShadowId,
        code: u16,
        message: String,
    },
    /// The `error` of a query (`"ok": false` online).
    #[error("{}", refusal_line(.0))]
    Refused(String),
    #[error("no such shadow: {0}")]
    NoSuchShadow(String),
    #[error("invalid JSON argument: {0}")]
    InvalidJson(String),
    #[error("{broker} sent an answer shade cannot read: {reason}")]
    BadReply { broker: BrokerUrl, reason: String },
    #[error("{} is in use by a running shade serve; use --broker instead", .0.display())]
    InUse(PathBuf),
    #[error(
        "{} was not closed cleanly (shade serve did not shut down); start shade serve on it \
         once to repair it, or use --broker",
        .0.display()
    )]
    NeedsRepair(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
    /// Arguments that cannot work together or files that cannot be used
    /// (a `--ca` that holds no certificate); exits 2, as clap's errors.
    #[error("{0}")]
    Usage(String),
}

fn rejection_line(id: &ShadowId, code: u16, message: &str) -> String {
    let what = match code {
        400 => "bad request",
        401 | 403 => "not authorized",
        404 => "no such shadow",
        409 => "version conflict",
        413 => "too large",
        429 => "too many requests",
        _ => "rejected",
    };
    format!("{what}: {id} ({code} {message})")
}

fn refusal_line(error: &str) -> String {
    if error.starts_with("No shadow exists") {
        format!("no such shadow ({error})")
    } else {
        error.to_owned()
    }
}
