//! `shade-agent` configuration: a raw TOML struct validated into
//! [`AgentConfig`]; command-line flags override the file. See
//! `config/agent.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
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
    pub host: String,
    pub port: u16,
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
        }
    }

    pub fn replica(&self) -> Result<ReplicaId, ConfigError> {
        ReplicaId::agent(&self.client_id).map_err(|e| invalid("client_id", e.to_string()))
    }
}

/// Splits `mqtt://HOST:PORT` (the scheme and the port are optional).
pub fn parse_broker_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .unwrap_or(url);
    if rest.contains("://") {
        return Err(format!("{url:?}: only mqtt://HOST:PORT is supported"));
    }
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{url:?}: bad port {p:?}"))?,
        ),
        None => (rest, 1883),
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
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
        let (host, port) = parse_broker_url(&broker).map_err(|e| invalid("broker", e))?;
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
            host,
            port,
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
            max_depth: raw.max_depth.unwrap_or(8),
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
    fn broker_urls_parse() {
        assert_eq!(
            parse_broker_url("mqtt://127.0.0.1:1884"),
            Ok(("127.0.0.1".into(), 1884))
        );
        assert_eq!(
            parse_broker_url("localhost"),
            Ok(("localhost".into(), 1883))
        );
        assert!(parse_broker_url("http://x:1").is_err());
        assert!(parse_broker_url("mqtt://x:port").is_err());
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
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 1883));
    }

    #[test]
    fn example_config_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/agent.toml");
        let c = AgentConfig::load(Some(&path), &Overrides::default())
            .expect("config/agent.toml is valid");
        assert_eq!(c.shadow.thing.as_str(), "lamp-1");
    }
}
