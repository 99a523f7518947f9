//! Online backups, asked for on `shade/ops/request` by full admins:
//!
//! ```text
//! {"op":"backup","clientToken":T}
//!   -> {"clientToken":T,"ok":true,"result":{"id":ID,"bytes":N,"chunk":C,"about":About}}
//! {"op":"backup-read","clientToken":T,"id":ID,"offset":O}
//!   -> {"clientToken":T,"ok":true,"result":{"offset":O,"data":"<base64>","end":bool}}
//! {"op":"backup-end","clientToken":T,"id":ID}
//!   -> {"clientToken":T,"ok":true,"result":null}          the file is removed
//! ```
//!
//! The backup is written from one read transaction (see
//! `crate::store::backup`) on tokio's blocking pool, so the store thread
//! keeps committing while it is taken; the file waits in the data
//! directory's `backups/` until the client has read it in chunks, ended
//! it, or left it idle for [`IDLE`]. A start clears what an earlier run
//! left there.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64ct::{Base64, Encoding};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::store::backup::Snapshots;

/// Raw bytes per chunk: a reply stays well under common MQTT size limits
/// once in base64.
pub(crate) const CHUNK: usize = 64 * 1024;
/// Backups waiting to be read at once; more are refused until one ends.
const MAX_OPEN: usize = 2;
/// A backup no client read for this long is removed.
const IDLE: Duration = Duration::from_secs(600);

/// A request of the backup protocol.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) enum BackupQuery {
    Backup {
        #[serde(rename = "clientToken")]
        client_token: String,
    },
    BackupRead {
        #[serde(rename = "clientToken")]
        client_token: String,
        id: String,
        offset: u64,
    },
    BackupEnd {
        #[serde(rename = "clientToken")]
        client_token: String,
        id: String,
    },
}

impl BackupQuery {
    /// `None` when the payload is no backup request (its `op` does not
    /// start with `backup`); else the request, or why it is malformed.
    pub(crate) fn parse(payload: &[u8]) -> Option<Result<BackupQuery, serde_json::Error>> {
        #[derive(Deserialize)]
        struct Op {
            op: String,
        }
        let op = serde_json::from_slice::<Op>(payload).ok()?;
        op.op
            .starts_with("backup")
            .then(|| serde_json::from_slice(payload))
    }

    pub(crate) fn client_token(&self) -> &str {
        match self {
            BackupQuery::Backup { client_token }
            | BackupQuery::BackupRead { client_token, .. }
            | BackupQuery::BackupEnd { client_token, .. } => client_token,
        }
    }
}

#[derive(Debug)]
struct Waiting {
    path: PathBuf,
    bytes: u64,
    touched: Instant,
}

/// The backups of one running broker.
#[derive(Debug)]
pub(crate) struct Backups {
    snapshots: Snapshots,
    dir: PathBuf,
    node: String,
    waiting: Mutex<HashMap<String, Waiting>>,
}

impl Backups {
    /// Backups into `data_dir/backups`, emptied first.
    pub(crate) fn new(
        snapshots: Snapshots,
        data_dir: &std::path::Path,
        node: &str,
    ) -> std::io::Result<Backups> {
        let dir = data_dir.join("backups");
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        Ok(Backups {
            snapshots,
            dir,
            node: node.to_owned(),
            waiting: Mutex::new(HashMap::new()),
        })
    }

    /// Answers one request: its `result`, or the error to send back.
    pub(crate) async fn answer(self: Arc<Self>, query: BackupQuery) -> Result<Value, String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.answer_blocking(query))
            .await
            .unwrap_or_else(|_| Err("the backup failed".into()))
    }

    fn answer_blocking(&self, query: BackupQuery) -> Result<Value, String> {
        match query {
            BackupQuery::Backup { .. } => self.take(),
            BackupQuery::BackupRead { id, offset, .. } => self.read(&id, offset),
            BackupQuery::BackupEnd { id, .. } => {
                let gone = self.lock().remove(&id);
                match gone {
                    Some(w) => {
                        remove(&w.path);
                        Ok(Value::Null)
                    }
                    None => Err(format!(
                        "no backup {id:?} is waiting (ended, or idle too long)"
                    )),
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        // A panic while holding it cannot leave the map half-changed.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Result<Value, String> {
        let id = {
            let mut waiting = self.lock();
            waiting.retain(|_, w| {
                let keep = w.touched.elapsed() < IDLE;
                if !keep {
                    remove(&w.path);
                }
                keep
            });
            if waiting.len() >= MAX_OPEN {
                return Err(format!(
                    "{MAX_OPEN} backups are waiting to be read; try again when one is done"
                ));
            }
            let id = crate::router::gateway::random_hex()
                .map_err(|e| format!("no random source for the backup's id: {e}"))?;
            // Held by a placeholder so that two at once count.
            waiting.insert(
                id.clone(),
                Waiting {
                    path: PathBuf::new(),
                    bytes: 0,
                    touched: Instant::now(),
                },
            );
            id
        };
        let path = self.dir.join(format!("{id}.redb"));
        let written = std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))
            .and_then(|()| {
                self.snapshots
                    .write(&path, shade_client::now_ms(), Some(&self.node))
                    .map_err(|e| e.to_string())
            })
            .and_then(|about| {
                let bytes = std::fs::metadata(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                    .len();
                Ok((about, bytes))
            });
        let mut waiting = self.lock();
        match written {
            Ok((about, bytes)) => {
                tracing::info!(id, bytes, shadows = about.counts.shadows, "backup taken");
                waiting.insert(
                    id.clone(),
                    Waiting {
                        path,
                        bytes,
                        touched: Instant::now(),
                    },
                );
                Ok(json!({ "id": id, "bytes": bytes, "chunk": CHUNK, "about": about }))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take a backup");
                waiting.remove(&id);
                remove(&path);
                Err(format!("cannot take a backup: {e}"))
            }
        }
    }

    fn read(&self, id: &str, offset: u64) -> Result<Value, String> {
        let (path, bytes) = {
            let mut waiting = self.lock();
            let w = waiting
                .get_mut(id)
                .filter(|w| w.bytes > 0)
                .ok_or_else(|| format!("no backup {id:?} is waiting (ended, or idle too long)"))?;
            w.touched = Instant::now();
            (w.path.clone(), w.bytes)
        };
        if offset > bytes {
            return Err(format!(
                "offset {offset} is past the backup's {bytes} bytes"
            ));
        }
        let mut file =
            std::fs::File::open(&path).map_err(|e| format!("cannot read the backup: {e}"))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| format!("cannot read the backup: {e}"))?;
        let mut data = Vec::with_capacity(CHUNK);
        file.take(CHUNK as u64)
            .read_to_end(&mut data)
            .map_err(|e| format!("cannot read the backup: {e}"))?;
        let end = offset + data.len() as u64 >= bytes;
        Ok(json!({ "offset": offset, "data": Base64::encode_string(&data), "end": end }))
    }
}

fn remove(path: &std::path::Path) {
    if path.as_os_str().is_empty() {
        return;
    }
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a backup file");
        }
    }
}
