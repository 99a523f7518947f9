//! `shade serve` configuration: read as a raw TOML struct, then validated
//! into a typed [`Config`]. Every error names the key and the problem.
//! See `config/broker.toml` for the commented example.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use shade_shared::{Limits, Policies, Policy, ReplicaId};

mod raw;

use raw::{RawAuth, RawConfig};

use crate::front::tls::TlsFiles;
use crate::identity::{DeviceGrants, Role, UserEntry, Users};

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

/// Listener addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// MQTT 3.1.1 (and 3.1) over TCP.
    pub tcp: SocketAddr,
    /// MQTT 5 over TCP, on its own port (rumqttd runs one protocol per listener).
    pub tcp_v5: Option<SocketAddr>,
    /// MQTT over WebSocket.
    pub websocket: Option<SocketAddr>,
    /// MQTT over TLS (needs `[tls]`).
    pub tls: Option<SocketAddr>,
    /// MQTT over WebSocket over TLS (needs `[tls]`).
    pub wss: Option<SocketAddr>,
}

impl Listen {
    pub fn all(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.tcp)
            .chain(self.tcp_v5)
            .chain(self.websocket)
            .chain(self.tls)
            .chain(self.wss)
    }
}

/// Request rates and concurrency the service admits, from `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    /// AWS shadow and ops requests per second on one thing (all its
    /// shadows); beyond it they are answered 429. AWS: 20.
    pub requests_per_second_per_thing: u32,
    /// Requests of one client waiting for the store; beyond it they are
    /// answered 429 (sync messages are dropped, and resent by the agent).
    /// The default, an eighth of the store's default queue, leaves room for
    /// bulk provisioning scripts while no single client can fill the queue.
    pub max_inflight_per_client: usize,
    /// Connections still handshaking or waiting for their CONNECT.
    pub max_pending_connections: usize,
    /// How long a new connection may wait for a handshake slot, and then
    /// how long it has to finish its handshakes and send CONNECT.
    pub connect_timeout: std::time::Duration,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            requests_per_second_per_thing: 20,
            max_inflight_per_client: 1000,
            max_pending_connections: 1024,
            connect_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// The HTTP API and dashboard, from `[http]` and `--http`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// `None`: `--http off` (or `listen = "off"`).
    pub listen: Option<SocketAddr>,
    /// The address was asked for (`--http` or `[http] listen`): failing to
    /// bind it stops `shade serve`. The default, when taken (another shade
    /// on the machine), only leaves HTTP off with a warning.
    pub explicit: bool,
    /// Serve HTTPS with the `[tls]` certificate.
    pub tls: bool,
    /// Open HTTP connections; beyond it a new one is answered 503 and closed.
    pub max_connections: usize,
    /// How long a client has to send a request's headers (slow clients
    /// are closed after it).
    pub header_timeout: std::time::Duration,
    /// Changes an event stream may fall behind by before it is dropped; also
    /// how many recent changes a reconnecting stream can resume from.
    pub events_buffer: usize,
}

/// The default HTTP address.
pub(crate) const DEFAULT_HTTP: &str = "127.0.0.1:8080";

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: DEFAULT_HTTP.parse().ok(),
            explicit: false,
            tls: false,
            max_connections: 4096,
            header_timeout: std::time::Duration::from_secs(10),
            events_buffer: 4096,
        }
    }
}

fn http(raw: raw::RawHttp, o: &Overrides) -> Result<HttpConfig, ConfigError> {
    let d = HttpConfig::default();
    let (key, asked) = match (&o.http, &raw.listen) {
        (Some(s), _) => ("--http", Some(s.as_str())),
        (None, Some(s)) => ("http.listen", Some(s.as_str())),
        (None, None) => ("http.listen", None),
    };
    let listen = match asked {
        Some("off") => None,
        Some(s) => Some(addr(key, s)?),
        None => d.listen,
    };
    let header_timeout = match raw.header_timeout_ms {
        Some(0) => return Err(invalid("http.header_timeout_ms", "must be at least 1")),
        Some(ms) => std::time::Duration::from_millis(ms),
        None => d.header_timeout,
    };
    Ok(HttpConfig {
        listen,
        explicit: asked.is_some(),
        tls: raw.tls.unwrap_or(false),
        max_connections: positive(
            "http.max_connections",
            raw.max_connections,
            d.max_connections,
        )?,
        header_timeout,
        events_buffer: positive("http.events_buffer", raw.events_buffer, d.events_buffer)?,
    })
}

/// Authentication and authorization, from `[auth]`.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// `[auth]` is present: every client must authenticate.
    pub enabled: bool,
    pub users: Users,
    pub grants: DeviceGrants,
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
    pub auth: AuthConfig,
    pub tls: Option<TlsFiles>,
    pub http: HttpConfig,
    pub limits: Limits,
    pub rates: Rates,
    pub policies: Policies,
    pub history_per_shadow: u64,
    pub broker: BrokerSizing,
    pub store: StoreSizing,
    /// The file this was read from and the command line's overrides, to
    /// read it again on SIGHUP; `None` for the defaults or text.
    pub source: Option<PathBuf>,
    pub overrides: Overrides,
}

/// Command-line overrides, applied over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub allow_anonymous: bool,
    /// `--http ADDR` or `--http off`.
    pub http: Option<String>,
}

fn addr(key: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| invalid(key, format!("{s:?} is not an address like 127.0.0.1:1883")))
}

fn opt_addr(key: &'static str, s: Option<&str>) -> Result<Option<SocketAddr>, ConfigError> {
    s.map(|s| addr(key, s)).transpose()
}

fn auth(raw: Option<RawAuth>) -> Result<AuthConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(AuthConfig::default());
    };
    let mut users = Users::new();
    for user in raw.users {
        // A user name is what a client sends as its username; it must not
        // be able to break the principal tags (`u:<name>|<client id>`).
        if user.name.is_empty() || user.name.contains(['|', '/', '+', '#', '$']) {
            return Err(invalid(
                "auth.users.name",
                format!("{:?}: must be non-empty, without | / + # $", user.name),
            ));
        }
        if !user.password_hash.starts_with("$argon2") {
            return Err(invalid(
                "auth.users.password_hash",
                format!(
                    "user {:?}: not an argon2 hash; make one with `shade hash-password`",
                    user.name
                ),
            ));
        }
        let role = match user.role.as_str() {
            "admin" => Role::Admin,
            "reader" => Role::Reader,
            other => {
                return Err(invalid(
                    "auth.users.role",
                    format!("user {:?}: {other:?} is not admin or reader", user.name),
                ))
            }
        };
        let entry = UserEntry {
            password_hash: user.password_hash,
            role,
            prefix: user.prefix,
        };
        if users.insert(user.name.clone(), entry).is_some() {
            return Err(invalid(
                "auth.users.name",
                format!("{:?} is given twice", user.name),
            ));
        }
    }
    for filter in &raw.device_topics {
        let levels: Vec<&str> = filter.split('/').collect();
        let hash_last = levels
            .iter()
            .position(|l| *l == "#")
            .is_none_or(|i| i + 1 == levels.len());
        let sample = filter.replace("{thing}", "t");
        if filter.is_empty()
            || !hash_last
            || sample.starts_with(['$', '_'])
            || sample.starts_with("shade/")
            || levels.iter().any(|l| l.len() > 1 && l.contains(['+', '#']))
        {
            return Err(invalid(
                "auth.device_topics",
                format!("{filter:?} is not a topic filter outside `$`, `_` and `shade/`"),
            ));
        }
    }
    Ok(AuthConfig {
        enabled: true,
        users,
        grants: DeviceGrants {
            filters: raw.device_topics,
        },
    })
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
        let mut config = Self::validate(raw, overrides)?;
        config.source = path.map(Path::to_owned);
        Ok(config)
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
            websocket: opt_addr("listen.websocket", raw.listen.websocket.as_deref())?,
            tls: opt_addr("listen.tls", raw.listen.tls.as_deref())?,
            wss: opt_addr("listen.wss", raw.listen.wss.as_deref())?,
        };
        let tls = raw.tls.map(|t| TlsFiles {
            cert: t.cert,
            key: t.key,
            client_ca: t.client_ca,
            require_client_cert: t.require_client_cert,
            crl: t.crl,
        });
        if tls
            .as_ref()
            .is_some_and(|t| t.crl.is_some() && t.client_ca.is_none())
        {
            return Err(invalid(
                "tls.crl",
                "a CRL revokes client certificates: it needs client_ca",
            ));
        }
        if tls.is_none() && (listen.tls.is_some() || listen.wss.is_some()) {
            return Err(invalid(
                "listen.tls",
                "a TLS listener needs a [tls] section with cert and key",
            ));
        }
        let http = http(raw.http, o)?;
        if tls.is_none() && http.tls && http.listen.is_some() {
            return Err(invalid(
                "http.tls",
                "HTTPS needs a [tls] section with cert and key",
            ));
        }
        let auth = auth(raw.auth)?;
        if tls.as_ref().is_some_and(|t| t.client_ca.is_some()) && !auth.enabled {
            return Err(invalid(
                "tls.client_ca",
                "client certificates authenticate devices: add an [auth] section",
            ));
        }
        let allow_anonymous = o.allow_anonymous || raw.allow_anonymous.unwrap_or(false);
        if !allow_anonymous && !auth.enabled {
            if let Some(open) = listen
                .all()
                .chain(http.listen)
                .find(|a| !a.ip().is_loopback())
            {
                return Err(invalid(
                    "listen",
                    format!(
                        "{open} is reachable from other machines and shade has no authentication \
                         configured; add an [auth] section, listen on 127.0.0.1, or pass \
                         --allow-anonymous (allow_anonymous = true) to accept any client"
                    ),
                ));
            }
        }
        let defaults = Limits::default();
        let l = raw.limits;
        let limits = Limits {
            max_document_bytes: l.max_document_bytes.unwrap_or(defaults.max_document_bytes),
            max_depth: l.max_depth.unwrap_or(defaults.max_depth),
            max_client_token_bytes: l
                .max_client_token_bytes
                .unwrap_or(defaults.max_client_token_bytes),
            max_payload_bytes: l.max_payload_bytes.unwrap_or(defaults.max_payload_bytes),
        };
        let rate_defaults = Rates::default();
        let rates = Rates {
            requests_per_second_per_thing: match l.requests_per_second_per_thing {
                Some(0) => {
                    return Err(invalid(
                        "limits.requests_per_second_per_thing",
                        "must be at least 1",
                    ))
                }
                Some(n) => n,
                None => rate_defaults.requests_per_second_per_thing,
            },
            max_inflight_per_client: positive(
                "limits.max_inflight_per_client",
                l.max_inflight_per_client,
                rate_defaults.max_inflight_per_client,
            )?,
            max_pending_connections: positive(
                "limits.max_pending_connections",
                l.max_pending_connections,
                rate_defaults.max_pending_connections,
            )?,
            connect_timeout: match l.connect_timeout_ms {
                // rumqttd keeps its own copy in a u16 of milliseconds.
                Some(ms @ 1..=65_535) => std::time::Duration::from_millis(ms),
                Some(_) => {
                    return Err(invalid(
                        "limits.connect_timeout_ms",
                        "must be between 1 and 65535",
                    ))
                }
                None => rate_defaults.connect_timeout,
            },
        };
        if limits.max_depth == 0 || limits.max_depth > shade_shared::limits::MAX_DEPTH_CEILING {
            return Err(invalid(
                "limits.max_depth",
                format!(
                    "must be between 1 and {}",
                    shade_shared::limits::MAX_DEPTH_CEILING
                ),
            ));
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
            auth,
            tls,
            http,
            limits,
            rates,
            policies,
            history_per_shadow,
            broker,
            store,
            source: None,
            overrides: o.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
