//! `shade serve` configuration: read as a raw TOML struct, then validated
//! into a typed [`Config`]. Every error names the key and the problem.
//! See `config/broker.toml` for the commented example.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use shade_shared::{Limits, Policies, Policy, ReplicaId};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    node: Option<String>,
    data_dir: Option<PathBuf>,
    allow_anonymous: Option<bool>,
    listen: RawListen,
    limits: Option<Limits>,
    merge: RawMerge,
    history: RawHistory,
    broker: RawBroker,
    store: RawStore,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawListen {
    tcp: Option<String>,
    tcp_v5: Option<String>,
    websocket: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMerge {
    desired: Option<String>,
    reported: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHistory {
    max_entries_per_shadow: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBroker {
    max_connections: Option<usize>,
    max_inflight: Option<u16>,
    segment_bytes: Option<usize>,
    segment_count: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStore {
    max_batch: Option<usize>,
    queue: Option<usize>,
}

/// Listener addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// MQTT 3.1.1 (and 3.1) over TCP.
    pub tcp: SocketAddr,
    /// MQTT 5 over TCP, on its own port (rumqttd runs one protocol per listener).
    pub tcp_v5: Option<SocketAddr>,
    /// MQTT 3.1.1 over WebSocket.
    pub websocket: Option<SocketAddr>,
}

impl Listen {
    pub fn all(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.tcp)
            .chain(self.tcp_v5)
            .chain(self.websocket)
    }
}

/// Sizing of the embedded MQTT broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerSizing {
    pub max_connections: usize,
    pub max_inflight: u16,
    /// Bytes of one router log segment, and how many are kept per topic.
    pub segment_bytes: usize,
    pub segment_count: usize,
}

/// The store thread's batching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSizing {
    /// Most requests committed in one transaction.
    pub max_batch: usize,
    /// Requests waiting for the store thread; when full, the service stops
    /// reading from the broker, which pushes back on publishers.
    pub queue: usize,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: ReplicaId,
    pub data_dir: PathBuf,
    pub allow_anonymous: bool,
    pub listen: Listen,
    pub limits: Limits,
    pub policies: Policies,
    pub history_per_shadow: u64,
    pub broker: BrokerSizing,
    pub store: StoreSizing,
}

/// Command-line overrides, applied over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub allow_anonymous: bool,
}

fn addr(key: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| invalid(key, format!("{s:?} is not an address like 127.0.0.1:1883")))
}

fn policy(key: &'static str, s: Option<String>) -> Result<Policy, ConfigError> {
    s.map_or(Ok(Policy::Lww), |s| {
        s.parse().map_err(|e: String| invalid(key, e))
    })
}

fn positive(key: &'static str, v: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match v {
        Some(0) => Err(invalid(key, "must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

impl Config {
    /// Loads `path` (or the defaults when `None`) and applies `overrides`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let raw = match path {
            None => RawConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?
            }
        };
        Self::validate(raw, overrides)
    }

    /// Parses config text (for tests and `--config -`).
    pub fn from_toml(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        Self::validate(raw, overrides)
    }

    fn validate(raw: RawConfig, o: &Overrides) -> Result<Config, ConfigError> {
        let node = raw.node.unwrap_or_else(|| "local".into());
        let node = ReplicaId::broker(&node).map_err(|e| invalid("node", e.to_string()))?;
        let tcp = match (&o.listen, &raw.listen.tcp) {
            (Some(s), _) => addr("--listen", s)?,
            (None, Some(s)) => addr("listen.tcp", s)?,
            (None, None) => addr("listen.tcp", "127.0.0.1:1883")?,
        };
        let listen = Listen {
            tcp,
            tcp_v5: raw
                .listen
                .tcp_v5
                .as_deref()
                .map(|s| addr("listen.tcp_v5", s))
                .transpose()?,
            websocket: raw
                .listen
                .websocket
                .as_deref()
                .map(|s| addr("listen.websocket", s))
                .transpose()?,
        };
        let allow_anonymous = o.allow_anonymous || raw.allow_anonymous.unwrap_or(false);
        if !allow_anonymous {
            if let Some(open) = listen.all().find(|a| !a.ip().is_loopback()) {
                return Err(invalid(
                    "listen",
                    format!(
                        "{open} is reachable from other machines and shade has no authentication \
                         configured; listen on 127.0.0.1, or pass --allow-anonymous \
                         (allow_anonymous = true) to accept any client"
                    ),
                ));
            }
        }
        let limits = raw.limits.unwrap_or_default();
        if limits.max_depth == 0 {
            return Err(invalid("limits.max_depth", "must be at least 1"));
        }
        if limits.max_document_bytes == 0 || limits.max_payload_bytes == 0 {
            return Err(invalid("limits", "sizes must be at least 1 byte"));
        }
        let policies = Policies {
            desired: policy("merge.desired", raw.merge.desired)?,
            reported: policy("merge.reported", raw.merge.reported)?,
        };
        let history_per_shadow = match raw.history.max_entries_per_shadow {
            Some(0) => {
                return Err(invalid(
                    "history.max_entries_per_shadow",
                    "must be at least 1",
                ))
            }
            Some(n) => n,
            None => 100,
        };
        let broker = BrokerSizing {
            max_connections: positive(
                "broker.max_connections",
                raw.broker.max_connections,
                10_000,
            )?,
            max_inflight: match raw.broker.max_inflight {
                Some(0) => return Err(invalid("broker.max_inflight", "must be at least 1")),
                Some(n) => n,
                None => 100,
            },
            segment_bytes: positive("broker.segment_bytes", raw.broker.segment_bytes, 1 << 20)?,
            segment_count: positive("broker.segment_count", raw.broker.segment_count, 10)?,
        };
        let store = StoreSizing {
            max_batch: positive("store.max_batch", raw.store.max_batch, 1024)?,
            queue: positive("store.queue", raw.store.queue, 8192)?,
        };
        Ok(Config {
            node,
            data_dir: o
                .data_dir
                .clone()
                .or(raw.data_dir)
                .unwrap_or_else(|| PathBuf::from("./shade-data")),
            allow_anonymous,
            listen,
            limits,
            policies,
            history_per_shadow,
            broker,
            store,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_loopback_and_keep_data_in_shade_data() {
        let c = Config::load(None, &Overrides::default()).expect("defaults are valid");
        assert_eq!(c.listen.tcp, "127.0.0.1:1883".parse().expect("addr"));
        assert_eq!(c.data_dir, PathBuf::from("./shade-data"));
        assert_eq!(c.node.as_str(), "b:local");
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn open_listener_needs_allow_anonymous() {
        let o = Overrides {
            listen: Some("0.0.0.0:1883".into()),
            ..Overrides::default()
        };
        let err = Config::load(None, &o).expect_err("refused");
        assert!(err.to_string().contains("--allow-anonymous"), "{err}");
        let o = Overrides {
            allow_anonymous: true,
            ..o
        };
        assert!(Config::load(None, &o).is_ok());
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml("[merge]\ndesired = \"newest\"", &Overrides::default())
            .expect_err("bad");
        assert!(e.to_string().contains("merge.desired"), "{e}");
        let e = Config::from_toml("[listen]\ntcp = \"nowhere\"", &Overrides::default())
            .expect_err("bad");
        assert!(e.to_string().contains("listen.tcp"), "{e}");
        let e = Config::from_toml("colour = 1", &Overrides::default()).expect_err("bad");
        assert!(e.to_string().contains("colour"), "{e}");
        let e = Config::from_toml(
            "[history]\nmax_entries_per_shadow = 0",
            &Overrides::default(),
        )
        .expect_err("bad");
        assert!(
            e.to_string().contains("history.max_entries_per_shadow"),
            "{e}"
        );
    }

    #[test]
    fn example_config_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/broker.toml");
        let c =
            Config::load(Some(&path), &Overrides::default()).expect("config/broker.toml is valid");
        assert_eq!(c.listen.tcp, "127.0.0.1:1883".parse().expect("addr"));
    }
}
