//! The configuration file as TOML gives it: every key optional, unknown
//! keys refused. `super` validates these into the typed [`super::Config`].

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) node: Option<String>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) allow_anonymous: Option<bool>,
    pub(super) listen: RawListen,
    pub(super) limits: RawLimits,
    pub(super) merge: RawMerge,
    pub(super) history: RawHistory,
    pub(super) broker: RawBroker,
    pub(super) store: RawStore,
    pub(super) auth: Option<RawAuth>,
    pub(super) tls: Option<RawTls>,
    pub(super) http: RawHttp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHttp {
    /// An address, or "off".
    pub(super) listen: Option<String>,
    pub(super) tls: Option<bool>,
    pub(super) max_connections: Option<usize>,
    pub(super) header_timeout_ms: Option<u64>,
    pub(super) events_buffer: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLimits {
    pub(super) max_document_bytes: Option<usize>,
    pub(super) max_depth: Option<usize>,
    pub(super) max_client_token_bytes: Option<usize>,
    pub(super) max_payload_bytes: Option<usize>,
    pub(super) requests_per_second_per_thing: Option<u32>,
    pub(super) max_inflight_per_client: Option<usize>,
    pub(super) max_pending_connections: Option<usize>,
    pub(super) connect_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAuth {
    pub(super) users: Vec<RawUser>,
    pub(super) device_topics: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub(super) name: String,
    pub(super) password_hash: String,
    pub(super) role: String,
    #[serde(default)]
    pub(super) prefix: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) client_ca: Option<PathBuf>,
    #[serde(default)]
    pub(super) require_client_cert: bool,
    pub(super) crl: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawListen {
    pub(super) tcp: Option<String>,
    pub(super) tcp_v5: Option<String>,
    pub(super) websocket: Option<String>,
    pub(super) tls: Option<String>,
    pub(super) wss: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMerge {
    pub(super) desired: Option<String>,
    pub(super) reported: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHistory {
    pub(super) max_entries_per_shadow: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBroker {
    pub(super) max_connections: Option<usize>,
    pub(super) max_inflight: Option<u16>,
    pub(super) segment_bytes: Option<usize>,
    pub(super) segment_count: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStore {
    pub(super) max_batch: Option<usize>,
    pub(super) queue: Option<usize>,
}
