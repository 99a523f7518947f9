//! `shade-agent` configuration: a raw TOML struct validated into
//! [`AgentConfig`]; command-line flags override the file. See
//! `config/agent.toml`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use shade_client::{BrokerUrl, ClientConfig, ClientError, ClientIdentity, TlsFiles};
use shade_shared::{Policies, Policy, ReplicaId, ShadowId, ShadowName, ThingName};

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
    /// A `ca`, `cert` or `key` file that cannot be used (the error names it).
    #[error("TLS: {0}")]
    Tls(#[from] ClientError),
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Raw {
    broker: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
    client_id: Option<String>,
    thing: Option<String>,
    shadow: Option<String>,
    data_dir: Option<PathBuf>,
    on_desired: Option<String>,
    hook_timeout_secs: Option<u64>,
    keep_alive_secs: Option<u64>,
    reconnect_min_ms: Option<u64>,
    reconnect_max_ms: Option<u64>,
    max_pending_leaves: Option<usize>,
    max_document_bytes: Option<usize>,
    max_depth: Option<usize>,
    policy_desired: Option<String>,
    policy_reported: Option<String>,
}

/// Flags of `shade-agent run` that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub broker: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub thing: Option<String>,
    pub shadow: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub on_desired: Option<String>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// The validated configuration of a running agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `broker`, default `mqtt://127.0.0.1:1883`.
    pub broker: BrokerUrl,
    /// `mqtts://`: the TLS client configuration, built from `ca`, `cert`
    /// and `key` when the config is loaded; `None`: plain TCP.
    pub tls: Option<Arc<ClientConfig>>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// MQTT client id; the replica id is `a:<client_id>`.
    pub client_id: String,
    pub shadow: ShadowId,
    pub data_dir: PathBuf,
    pub on_desired: Option<String>,
    pub hook_timeout: Duration,
    pub keep_alive: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub max_pending_leaves: usize,
    /// As the broker's `limits.max_document_bytes`.
    pub max_document_bytes: usize,
    pub max_depth: usize,
    /// How conflicts are shown locally; should match the broker's `[merge]`.
    pub policies: Policies,
}

impl AgentConfig {
    /// The bounds on local writes.
    pub fn bounds(&self) -> crate::replica::Bounds {
        crate::replica::Bounds {
            max_pending: self.max_pending_leaves,
            max_document_bytes: self.max_document_bytes,
            max_depth: self.max_depth,
        }
    }

    pub fn replica(&self) -> Result<ReplicaId, ConfigError> {
        ReplicaId::agent(&self.client_id).map_err(|e| invalid("client_id", e.to_string()))
    }
}

/// Checks the TLS keys against the broker URL and builds the client
/// configuration of an `mqtts://` broker.
fn tls_config(
    url: &BrokerUrl,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<Arc<ClientConfig>>, ConfigError> {
    if !url.tls {
        let set = [("ca", &ca), ("cert", &cert), ("key", &key)]
            .into_iter()
            .find(|(_, v)| v.is_some());
        return match set {
            None => Ok(None),
            Some((key, _)) => Err(invalid(
                key,
                "needs an mqtts:// broker (TLS); the broker is mqtt://",
            )),
        };
    }
    let identity = match (cert, key) {
        (Some(cert), Some(key)) => Some(ClientIdentity { cert, key }),
        (None, None) => None,
        (Some(_), None) => return Err(invalid("key", "required with cert (--key FILE)")),
        (None, Some(_)) => return Err(invalid("cert", "required with key (--cert FILE)")),
    };
    Ok(Some(shade_client::client_config(&TlsFiles {
        ca,
        identity,
    })?))
}

fn policy(key: &'static str, s: Option<String>) -> Result<Policy, ConfigError> {
    s.map_or(Ok(Policy::Lww), |s| {
        s.parse().map_err(|e: String| invalid(key, e))
    })
}

impl AgentConfig {
    /// Loads `path` (if any) and applies `o`.
    pub fn load(path: Option<&Path>, o: &Overrides) -> Result<AgentConfig, ConfigError> {
        let raw: Raw = match path {
            None => Raw::default(),
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
        let broker = o
            .broker
            .clone()
            .or(raw.broker)
            .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
        let url: BrokerUrl = broker
            .parse()
            .map_err(|e: ClientError| invalid("broker", e.to_string()))?;
        let tls = tls_config(
            &url,
            o.ca.clone().or(raw.ca),
            o.cert.clone().or(raw.cert),
            o.key.clone().or(raw.key),
        )?;
        let thing = o
            .thing
            .clone()
            .or(raw.thing)
            .ok_or_else(|| invalid("thing", "required (--thing THING)"))?;
        let thing = ThingName::new(thing).map_err(|e| invalid("thing", e.to_string()))?;
        let shadow = match o.shadow.clone().or(raw.shadow) {
            None => ShadowId::classic(thing),
            Some(s) => ShadowId::named(
                thing,
                ShadowName::new(s).map_err(|e| invalid("shadow", e.to_string()))?,
            ),
        };
        let default_client = match &shadow.shadow {
            None => format!("shade-agent-{}", shadow.thing),
            Some(s) => format!("shade-agent-{}-{}", shadow.thing, s),
        };
        let client_id = o
            .client_id
            .clone()
            .or(raw.client_id)
            .unwrap_or(default_client);
        ReplicaId::agent(&client_id).map_err(|e| invalid("client_id", e.to_string()))?;
        let ms = |key: &'static str, v: Option<u64>, d: u64| match v {
            Some(0) => Err(invalid(key, "must be at least 1")),
            Some(n) => Ok(Duration::from_millis(n)),
            None => Ok(Duration::from_millis(d)),
        };
        let reconnect_min = ms("reconnect_min_ms", raw.reconnect_min_ms, 200)?;
        let reconnect_max = ms("reconnect_max_ms", raw.reconnect_max_ms, 30_000)?;
        if reconnect_max < reconnect_min {
            return Err(invalid(
                "reconnect_max_ms",
                "must be at least reconnect_min_ms",
            ));
        }
        Ok(AgentConfig {
            broker: url,
            tls,
            username: o.username.clone().or(raw.username),
            password: o.password.clone().or(raw.password),
            client_id,
            shadow,
            data_dir: o
                .data_dir
                .clone()
                .or(raw.data_dir)
                .unwrap_or_else(|| PathBuf::from("./shade-agent-data")),
            on_desired: o.on_desired.clone().or(raw.on_desired),
            hook_timeout: ms(
                "hook_timeout_secs",
                raw.hook_timeout_secs.map(|s| s.saturating_mul(1000)),
                30_000,
            )?,
            keep_alive: ms(
                "keep_alive_secs",
                raw.keep_alive_secs.map(|s| s.saturating_mul(1000)),
                30_000,
            )?,
            reconnect_min,
            reconnect_max,
            max_document_bytes: match raw.max_document_bytes {
                Some(0) => return Err(invalid("max_document_bytes", "must be at least 1")),
                Some(n) => n,
                None => 8 * 1024,
            },
            max_pending_leaves: match raw.max_pending_leaves {
                Some(0) => return Err(invalid("max_pending_leaves", "must be at least 1")),
                Some(n) => n,
                None => 100_000,
            },
            max_depth: match raw.max_depth {
                Some(n) if n == 0 || n > shade_shared::limits::MAX_DEPTH_CEILING => {
                    return Err(invalid(
                        "max_depth",
                        format!(
                            "must be between 1 and {}",
                            shade_shared::limits::MAX_DEPTH_CEILING
                        ),
                    ))
                }
                Some(n) => n,
                None => 8,
            },
            policies: Policies {
                desired: policy("policy_desired", raw.policy_desired)?,
                reported: policy("policy_reported", raw.policy_reported)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_broker_url_is_refused_under_its_key() {
        let o = Overrides {
            thing: Some("lamp".into()),
            broker: Some("http://x:1".into()),
            ..Overrides::default()
        };
        let e = AgentConfig::load(None, &o).expect_err("http://");
        assert!(
            e.to_string().starts_with("config key `broker`: http://"),
            "{e}"
        );
        let o = Overrides {
            broker: Some("mqtts://broker.lan".into()),
            ..o
        };
        // No CA file and perhaps no system roots: either way the URL parsed.
        if let Ok(c) = AgentConfig::load(None, &o) {
            assert_eq!((c.broker.port, c.tls.is_some()), (8883, true));
        }
    }

    #[test]
    fn tls_files_need_mqtts_and_cert_goes_with_key() {
        let lamp = |broker: &str| Overrides {
            thing: Some("lamp".into()),
            broker: Some(broker.into()),
            ..Overrides::default()
        };
        let o = Overrides {
            ca: Some("ca.pem".into()),
            ..lamp("mqtt://127.0.0.1:1883")
        };
        let e = AgentConfig::load(None, &o).expect_err("ca without TLS");
        assert!(
            e.to_string().contains("`ca`") && e.to_string().contains("mqtts"),
            "{e}"
        );
        let o = Overrides {
            cert: Some("dev.crt.pem".into()),
            ..lamp("mqtts://127.0.0.1")
        };
        let e = AgentConfig::load(None, &o).expect_err("cert without key");
        assert!(e.to_string().contains("`key`"), "{e}");
        let o = Overrides {
            ca: Some("/nonexistent/ca.pem".into()),
            ..lamp("mqtts://127.0.0.1")
        };
        let e = AgentConfig::load(None, &o).expect_err("missing CA file");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn thing_is_required_and_validated() {
        let e = AgentConfig::load(None, &Overrides::default()).expect_err("no thing");
        assert!(e.to_string().contains("thing"), "{e}");
        let o = Overrides {
            thing: Some("bad/thing".into()),
            ..Overrides::default()
        };
        assert!(AgentConfig::load(None, &o).is_err());
        let o = Overrides {
            thing: Some("lamp".into()),
            ..Overrides::default()
        };
        let c = AgentConfig::load(None, &o).expect("valid");
        assert_eq!(c.client_id, "shade-agent-lamp");
        assert_eq!((c.broker.host.as_str(), c.broker.port), ("127.0.0.1", 1883));
    }

    #[test]
    fn example_config_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/agent.toml");
        let c = AgentConfig::load(Some(&path), &Overrides::default())
            .expect("config/agent.toml is valid");
        assert_eq!(c.shadow.thing.as_str(), "lamp-1");
    }
}
