//! The agent's local replica: its copy of the shadow, what it knows of the
//! broker, persisted in redb under `--data`.
//!
//! A write is durable (committed, fsynced) before [`Replica::write`]
//! returns, so `shade-agent report` can exit 0 only for changes that
//! survive a crash. Pending changes need no queue of their own: they are
//! the registers holding a dot the broker has not acknowledged, found with
//! `Shadow::changes_since(broker_vv)`. Writing a key again replaces its
//! register, so a device that changes ten keys once a second for a week
//! while offline holds ten pending leaves, not six million messages.

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shade_shared::aws::View;
use shade_shared::sync::{SyncDown, SyncUp};
use shade_shared::{MergeOutcome, Patch, Policies, ReplicaId, Section, Shadow, VersionVector};

const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("replica");
const KEY: &str = "state";
/// File name of the replica inside the data directory.
pub const DB_FILE: &str = "agent.redb";
const STORED_DEPTH: usize = 64;

/// Errors of the local replica.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is in use by another shade-agent process (one agent per data directory)")]
    InUse(PathBuf),
    #[error("local database error: {0}")]
    Db(#[from] redb::Error),
    #[error("the local replica is unreadable: {0}")]
    Corrupt(String),
    #[error("{pending} changes are waiting for the broker; the limit is {max} (max_pending_leaves). Reconnect the agent, or raise the limit")]
    TooManyPending { pending: usize, max: usize },
    #[error("the document would be {size} bytes; the limit is {max} (max_document_bytes, as the broker's limits.max_document_bytes)")]
    TooLarge { size: usize, max: usize },
    #[error("the change nests {depth} levels; the limit is {max} (max_depth, as the broker's limits.max_depth)")]
    TooDeep { depth: usize, max: usize },
    #[error("the replica belongs to {found}, not {wanted}: use another --data directory")]
    WrongReplica { found: ReplicaId, wanted: ReplicaId },
}

fn dbr<T, E: Into<redb::Error>>(r: Result<T, E>) -> Result<T, ReplicaError> {
    r.map_err(|e| ReplicaError::Db(e.into()))
}

/// What is persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaState {
    pub replica: ReplicaId,
    pub shadow: Shadow,
    /// The newest vector heard from the broker: what it has durably merged.
    pub broker_vv: VersionVector,
    /// True until this replica has merged the broker's whole state once
    /// (see [`Replica::apply`]). Its writes meanwhile are kept locally and
    /// written again on top of that state, never sent with their own dots.
    #[serde(default)]
    pub fresh: bool,
    /// The bounds `run` was last started with; one-shot `report` and
    /// `desire` apply them too.
    #[serde(default)]
    pub bounds: Bounds,
}

/// How far local writes may go before they are refused with a clear error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    /// Registers waiting for the broker (`max_pending_leaves`).
    pub max_pending: usize,
    /// Bytes of desired+reported, as the broker counts them
    /// (`max_document_bytes`): the broker would refuse a bigger document,
    /// and the change would wait forever.
    pub max_document_bytes: usize,
    /// Nesting levels inside a section, as the broker counts them
    /// (`max_depth`): the broker drops a `SyncUp` holding a deeper leaf.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
}

fn default_max_depth() -> usize {
    8
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_pending: 100_000,
            max_document_bytes: 8 * 1024,
            max_depth: default_max_depth(),
        }
    }
}

/// The local replica, open for writing.
#[derive(Debug)]
pub struct Replica {
    db: redb::Database,
    state: ReplicaState,
}

impl Replica {
    /// Opens (or creates) the replica of `replica` in `dir`.
    pub fn open(dir: &Path, replica: ReplicaId, bounds: Bounds) -> Result<Replica, ReplicaError> {
        std::fs::create_dir_all(dir).map_err(|source| ReplicaError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let database = match redb::Database::create(&path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(ReplicaError::InUse(dir.to_owned()))
            }
            other => dbr(other)?,
        };
        let loaded = {
            let txn = dbr(database.begin_write())?;
            let loaded: Option<Vec<u8>> = {
                let table = dbr(txn.open_table(STATE))?;
                let bytes = dbr(table.get(KEY))?.map(|v| v.value().to_vec());
                bytes
            };
            dbr(txn.commit())?;
            loaded
        };
        let loaded_nothing = loaded.is_none();
        let state = match loaded {
            Some(bytes) => {
                let state: ReplicaState = shade_shared::sync::decode(&bytes, STORED_DEPTH)
                    .map_err(|e| ReplicaError::Corrupt(e.to_string()))?;
                if state.replica != replica {
                    return Err(ReplicaError::WrongReplica {
                        found: state.replica,
                        wanted: replica,
                    });
                }
                state
            }
            None => ReplicaState {
                replica,
                shadow: Shadow::new(),
                broker_vv: VersionVector::new(),
                fresh: true,
                bounds,
            },
        };
        let bounds_changed = state.bounds != bounds;
        let mut replica = Replica {
            db: database,
            state,
        };
        replica.state.bounds = bounds;
        if loaded_nothing || bounds_changed {
            // A replica exists from its first open on, so `report` and
            // `desire` can write to it before it ever synced.
            replica.persist()?;
        }
        Ok(replica)
    }

    /// Opens the replica in `dir` for writing, whoever's it is; `None` when
    /// there is none (no `shade-agent run` ever started there).
    /// It keeps the bounds the last `run` stored.
    pub fn open_existing(dir: &Path) -> Result<Option<Replica>, ReplicaError> {
        if !dir.join(DB_FILE).exists() {
            return Ok(None);
        }
        let database = match redb::Database::open(dir.join(DB_FILE)) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(ReplicaError::InUse(dir.to_owned()))
            }
            other => dbr(other)?,
        };
        let bytes: Option<Vec<u8>> = {
            let txn = dbr(database.begin_read())?;
            match txn.open_table(STATE) {
                Ok(table) => dbr(table.get(KEY))?.map(|v| v.value().to_vec()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(ReplicaError::Db(e.into())),
            }
        };
        let Some(bytes) = bytes else { return Ok(None) };
        let state: ReplicaState = shade_shared::sync::decode(&bytes, STORED_DEPTH)
            .map_err(|e| ReplicaError::Corrupt(e.to_string()))?;
        Ok(Some(Replica {
            db: database,
            state,
        }))
    }

    /// Reads the replica in `dir` without a running agent, if it exists.
    pub fn peek(dir: &Path) -> Result<Option<ReplicaState>, ReplicaError> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let in_use = |e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => ReplicaError::InUse(dir.to_owned()),
            e => ReplicaError::Db(e.into()),
        };
        // The database must outlive the transaction: whichever was opened
        // lives to the end of this function.
        let (read_only, writable);
        let txn = match redb::ReadOnlyDatabase::open(&path) {
            Ok(database) => {
                read_only = database;
                dbr(read_only.begin_read())?
            }
            // A file left by an agent that was killed needs the repair
            // redb runs only on a writable open. No agent holds the file
            // (the read-only open would have said so), so repair it as the
            // next `run` would, then read.
            Err(redb::DatabaseError::RepairAborted) => {
                tracing::info!(file = %path.display(), "repairing the replica file of an agent that did not stop cleanly");
                writable = redb::Database::open(&path).map_err(in_use)?;
                dbr(writable.begin_read())?
            }
            Err(e) => return Err(in_use(e)),
        };
        let table = match txn.open_table(STATE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(ReplicaError::Db(e.into())),
        };
        let Some(bytes) = dbr(table.get(KEY))? else {
            return Ok(None);
        };
        shade_shared::sync::decode(bytes.value(), STORED_DEPTH)
            .map(Some)
            .map_err(|e| ReplicaError::Corrupt(e.to_string()))
    }

    fn persist(&self) -> Result<(), ReplicaError> {
        let bytes = shade_shared::sync::encode(&self.state)
            .map_err(|e| ReplicaError::Corrupt(e.to_string()))?;
        let txn = dbr(self.db.begin_write())?;
        {
            let mut table = dbr(txn.open_table(STATE))?;
            dbr(table.insert(KEY, bytes.as_slice()))?;
        }
        dbr(txn.commit())
    }

    pub fn state(&self) -> &ReplicaState {
        &self.state
    }

    pub fn replica(&self) -> &ReplicaId {
        &self.state.replica
    }

    /// Number of registers the broker has not acknowledged.
    pub fn pending(&self) -> usize {
        pending(&self.state)
    }

    /// A local write, durable when this returns `Ok`. Refused, changing
    /// nothing, when it would push the pending count over the bound.
    pub fn write(
        &mut self,
        section: Section,
        patch: &Patch,
        now_ms: u64,
    ) -> Result<bool, ReplicaError> {
        let bounds = self.state.bounds;
        if let Patch::Merge(map) = patch {
            let depth = map
                .values()
                .map(|v| 1 + shade_shared::limits::depth(v))
                .max()
                .unwrap_or(0);
            if depth > bounds.max_depth {
                return Err(ReplicaError::TooDeep {
                    depth,
                    max: bounds.max_depth,
                });
            }
        }
        let before = self.state.shadow.clone();
        let replica = self.state.replica.clone();
        if self
            .state
            .shadow
            .write(&replica, section, patch, now_ms)
            .is_none()
        {
            return Ok(false);
        }
        let pending = self.pending();
        if pending > bounds.max_pending {
            self.state.shadow = before;
            return Err(ReplicaError::TooManyPending {
                pending,
                max: bounds.max_pending,
            });
        }
        let size = self.state.shadow.state_size();
        if size > bounds.max_document_bytes {
            self.state.shadow = before;
            return Err(ReplicaError::TooLarge {
                size,
                max: bounds.max_document_bytes,
            });
        }
        if let Err(e) = self.persist() {
            self.state.shadow = before;
            return Err(e);
        }
        Ok(true)
    }

    /// The `SyncUp` to send: everything the broker has not acknowledged.
    pub fn sync_up(&self) -> SyncUp {
        self.sync_up_limited(usize::MAX)
    }

    /// The `SyncUp` to send, with at most about `max_paths` registers. A
    /// fresh replica sends none: it asks for the broker's whole state first.
    pub fn sync_up_limited(&self, max_paths: usize) -> SyncUp {
        let changes = if self.state.fresh {
            shade_shared::Changes::default()
        } else {
            self.state
                .shadow
                .changes_since_limited(&self.state.broker_vv, max_paths)
        };
        SyncUp {
            replica: self.state.replica.clone(),
            changes,
        }
    }

    /// Applies a `SyncDown`: merges it, learns the broker's vector (which
    /// acknowledges our covered dots), drops tombstones everyone has seen.
    ///
    /// Lost state is repaired here, in two cases:
    /// - A *fresh* replica (new, or whose data directory was wiped) numbers
    ///   its writes from 1 under the same replica id as before, so the
    ///   broker may already hold other writes with the same dots and would
    ///   skip ours as seen. A fresh replica therefore sends nothing until it
    ///   has merged the broker's whole state (a `SyncDown` computed since the
    ///   empty vector); then its own writes are written again on top of it,
    ///   with new dots, in one durable step. The same happens when a
    ///   `SyncDown` shows the broker has seen more of our writes than we
    ///   hold (our data was restored from an old copy).
    /// - The broker has seen less than we thought (its data was restored):
    ///   its vector replaces ours, so what it lacks is pending again.
    pub fn apply(&mut self, down: &SyncDown) -> Result<Applied, ReplicaError> {
        let me = self.state.replica.clone();
        if !self.state.fresh && down.changes.vv.get(&me) > self.state.shadow.vv().get(&me) {
            tracing::warn!(
                "the broker has seen writes of this replica that it no longer holds \
                 (its data was wiped or restored): fetching the broker's state"
            );
            let before = self.state.clone();
            self.state.fresh = true;
            if let Err(e) = self.persist() {
                self.state = before;
                return Err(e);
            }
            return Ok(Applied {
                outcome: MergeOutcome::default(),
                resync: true,
            });
        }
        if self.state.fresh {
            return self.rebase(down);
        }
        let before = self.state.clone();
        let outcome = self.state.shadow.merge(&down.changes);
        if outcome.gap {
            return Ok(Applied {
                outcome,
                resync: false,
            });
        }
        self.state.broker_vv = down.changes.vv.clone();
        self.state.shadow.version = self.state.shadow.version.max(down.version);
        self.state.shadow.collect_tombstones(&down.stable);
        if self.state != before {
            if let Err(e) = self.persist() {
                self.state = before;
                return Err(e);
            }
        }
        Ok(Applied {
            outcome,
            resync: false,
        })
    }

    /// Merges the broker's whole state into an empty replica, then writes
    /// this replica's own leaves again on top, with new dots.
    fn rebase(&mut self, down: &SyncDown) -> Result<Applied, ReplicaError> {
        if !down.changes.since.is_empty() {
            // Not the whole state (a reply meant for another agent).
            return Ok(Applied {
                outcome: MergeOutcome {
                    changed: vec![],
                    gap: true,
                },
                resync: false,
            });
        }
        let me = self.state.replica.clone();
        let mut mine = Vec::new();
        for section in Section::ALL {
            for (path, register) in self.state.shadow.section(section) {
                if let Some(leaf) = register.iter().find(|l| l.dot.replica == me) {
                    let mut patch = Map::new();
                    shade_shared::document::insert_at(&mut patch, path, leaf.json());
                    mine.push((section, patch));
                }
            }
        }
        let mut shadow = Shadow::new();
        let outcome = shadow.merge(&down.changes);
        for (section, patch) in mine {
            shadow.write(&me, section, &Patch::Merge(patch), shade_client::now_ms());
        }
        shadow.version = down.version;
        shadow.collect_tombstones(&down.stable);
        let before = self.state.clone();
        self.state.shadow = shadow;
        self.state.broker_vv = down.changes.vv.clone();
        self.state.fresh = false;
        if let Err(e) = self.persist() {
            self.state = before;
            return Err(e);
        }
        Ok(Applied {
            outcome,
            resync: true,
        })
    }
}

/// Runs `open` until the replica's file is free or `timeout` passes:
/// another one-shot `report`/`desire`/`state` may hold it for a moment,
/// and redb lets one process at a time open it.
pub fn when_free<T>(
    timeout: std::time::Duration,
    mut open: impl FnMut() -> Result<T, ReplicaError>,
) -> Result<T, ReplicaError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match open() {
            Err(ReplicaError::InUse(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// What applying a `SyncDown` did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub outcome: MergeOutcome,
    /// Send a `SyncUp` at once: to fetch the broker's whole state, or to
    /// push writes just rebased onto it.
    pub resync: bool,
}

/// Registers holding a dot the broker has not acknowledged.
pub fn pending(state: &ReplicaState) -> usize {
    state.shadow.changes_since(&state.broker_vv).len()
}

/// The JSON of `shade-agent state --json`: the get/accepted shape plus
/// `pending` and `connected`.
pub fn state_json(
    state: &ReplicaState,
    policies: &Policies,
    connected: bool,
    now_ms: u64,
) -> Value {
    let mut doc = shade_shared::aws::render_get(&state.shadow, policies, None, now_ms);
    if let Value::Object(m) = &mut doc {
        m.insert("pending".into(), Value::from(pending(state)));
        m.insert("connected".into(), Value::Bool(connected));
        m.insert("replica".into(), Value::String(state.replica.to_string()));
    }
    doc
}

/// The current delta (desired keys that reported does not match), if any.
pub fn delta(state: &ReplicaState, policies: &Policies) -> Option<Value> {
    View::of(&state.shadow, policies).delta
}

/// Desired and reported as rendered JSON objects.
pub fn sections(
    state: &ReplicaState,
    policies: &Policies,
) -> (Map<String, Value>, Map<String, Value>) {
    let view = View::of(&state.shadow, policies);
    let obj = |v: Value| match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    (obj(view.desired.state), obj(view.reported.state))
}
