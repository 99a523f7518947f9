//! What the store keeps and how: the table definitions, the record types
//! ([`StoredShadow`], [`HistoryEntry`], [`DeviceRecord`]), their keys and
//! decoding, and the storage layer's error.

use std::collections::BTreeMap;
use std::path::PathBuf;

use redb::TableDefinition;
use serde::{Deserialize, Serialize};
use shade_shared::{ReplicaId, Shadow, ShadowId, ShadowName, ThingName, VersionVector};

pub(super) const SHADOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("shadows");
pub(super) const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");
pub(super) const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
pub(super) const PRESENCE: TableDefinition<&str, &[u8]> = TableDefinition::new("presence");

/// File name of the database inside the data directory.
pub(crate) const DB_FILE: &str = "shade.redb";

/// Nesting allowed when decoding stored CBOR; stored documents were
/// checked against the configured depth when they came in.
const STORED_DEPTH: usize = 64;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is in use by a running shade serve; stop it, or ask it over MQTT with --broker"
    )]
    InUse { path: PathBuf },
    #[error("no shade data at {0}")]
    Missing(PathBuf),
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
    #[error("stored record {key:?} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{} is not empty: a restore goes into a new data directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("{} is not a shade backup ({}); make one with shade backup", .0.display(), .1)]
    NotABackup(PathBuf, String),
    #[error("{} exists already: choose a new name, or remove it first", .0.display())]
    Exists(PathBuf),
    #[error("cannot use {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl<E: Into<redb::Error>> From<Wrap<E>> for StoreError {
    fn from(e: Wrap<E>) -> Self {
        StoreError::Db(e.0.into())
    }
}

/// Lets `?` turn any redb error type into a [`StoreError`].
pub(super) struct Wrap<E>(pub(super) E);

pub(super) trait Ctx<T> {
    fn db(self) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> Ctx<T> for Result<T, E> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::from(Wrap(e)))
    }
}

/// A shadow as stored: the merged document and what the broker knows of
/// each agent replica (the last vector it sent), used to compute what to
/// push it and which tombstones everyone has seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredShadow {
    pub shadow: Shadow,
    pub peers: BTreeMap<ReplicaId, VersionVector>,
}

/// One accepted change, as `shade history` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Milliseconds since the Unix epoch.
    pub time: u64,
    /// The MQTT client id that sent the change.
    pub author: String,
    /// The replica whose write it was (`b:<node>` for AWS-topic clients).
    pub replica: String,
    /// The AWS version after the change.
    pub version: u64,
    /// `update`, `delete` or `sync`.
    pub kind: String,
    /// What changed: the update's `state`, or the merged leaves of a sync.
    pub change: serde_json::Value,
}

/// A device's credential: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// argon2id PHC string of the secret.
    pub hash: String,
    /// When the device (or its current secret) was added, in milliseconds
    /// since the Unix epoch.
    pub created_ms: u64,
}

/// Whether a thing is connected, and when it was last seen coming or
/// going: kept per thing, shown with each of its shadows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceRecord {
    pub connected: bool,
    /// When the thing last connected (while `connected`) or disconnected,
    /// in milliseconds since the Unix epoch.
    #[serde(rename = "lastSeen")]
    pub last_seen: u64,
    /// The MQTT client id of that connection.
    #[serde(rename = "clientId")]
    pub client_id: String,
}

pub(super) fn decode_presence(thing: &str, bytes: &[u8]) -> Result<PresenceRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: format!("presence/{thing}"),
        reason: e.to_string(),
    })
}

pub(super) fn decode_device(thing: &str, bytes: &[u8]) -> Result<DeviceRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: format!("devices/{thing}"),
        reason: e.to_string(),
    })
}

/// The storage key of a shadow: names cannot hold `/`, so this is unambiguous.
pub(crate) fn key(id: &ShadowId) -> String {
    match &id.shadow {
        Some(s) => format!("{}/{}", id.thing, s),
        None => id.thing.to_string(),
    }
}

/// The inverse of [`key`].
pub(crate) fn parse_key(key: &str) -> Option<ShadowId> {
    let mut parts = key.splitn(2, '/');
    let thing = ThingName::new(parts.next()?).ok()?;
    match parts.next() {
        None => Some(ShadowId::classic(thing)),
        Some(s) => Some(ShadowId::named(thing, ShadowName::new(s).ok()?)),
    }
}

pub(super) fn decode_shadow(key: &str, bytes: &[u8]) -> Result<StoredShadow, StoreError> {
    shade_shared::sync::decode(bytes, STORED_DEPTH).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}
