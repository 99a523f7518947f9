//! The redb store: shadows, their history, and the vectors of their agents.
//!
//! This module only reads and writes; it never decides. The store thread
//! ([`crate::serve::writer`]) owns the one [`Store`] of a running broker and
//! commits many requests per transaction. The operator CLI opens a stopped
//! broker's data read-only through [`ReadStore`].
//!
//! Tables:
//! - `shadows`: key `thing` or `thing/shadow` -> CBOR [`StoredShadow`].
//! - `history`: key `(shadow key, version)` -> JSON [`HistoryEntry`],
//!   trimmed to the newest N per shadow.
//! - `devices`: key thing -> JSON [`DeviceRecord`] (the argon2 hash of the
//!   device's secret, see [`crate::auth::credentials`]).
//! - `presence`: key thing -> JSON [`PresenceRecord`]: connected or not,
//!   and when it was last seen (see `crate::presence`).

mod record;

pub(crate) mod backup;

pub use record::StoreError;
pub(crate) use record::{
    key, parse_key, DeviceRecord, HistoryEntry, PresenceRecord, StoredShadow, DB_FILE,
};

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable};
use shade_shared::ShadowId;

use record::{
    decode_device, decode_presence, decode_shadow, Ctx, DEVICES, HISTORY, PRESENCE, SHADOWS,
};

/// The open database of a running broker.
#[derive(Debug)]
pub struct Store {
    /// Shared with [`backup::Snapshots`], whose read transactions run on
    /// other threads.
    db: std::sync::Arc<redb::Database>,
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let db = match redb::Database::create(&path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::InUse { path })
            }
            other => other.db()?,
        };
        Store::with_tables(db)
    }

    /// A store in memory, gone when dropped: for tests and tools that need
    /// the real tables and transactions without a disk.
    pub fn in_memory() -> Result<Store, StoreError> {
        Store::with_backend(redb::backends::InMemoryBackend::new())
    }

    /// A store over any redb backend, such as one that injects faults to
    /// test what a failed commit does.
    pub fn with_backend(backend: impl redb::StorageBackend) -> Result<Store, StoreError> {
        let db = redb::Builder::new().create_with_backend(backend).db()?;
        Store::with_tables(db)
    }

    fn with_tables(db: redb::Database) -> Result<Store, StoreError> {
        let txn = db.begin_write().db()?;
        txn.open_table(SHADOWS).db()?;
        txn.open_table(HISTORY).db()?;
        txn.open_table(DEVICES).db()?;
        txn.open_table(PRESENCE).db()?;
        txn.commit().db()?;
        Ok(Store {
            db: std::sync::Arc::new(db),
        })
    }

    /// A handle for taking consistent backups while this store is written.
    pub fn snapshots(&self) -> backup::Snapshots {
        backup::Snapshots {
            db: self.db.clone(),
        }
    }

    /// Runs `f` in one write transaction and commits it (one fsync) when
    /// `f` returns `Ok`. Nothing of it is visible or durable before.
    pub fn write<R>(
        &self,
        f: impl FnOnce(&mut Tables<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let txn = self.db.begin_write().db()?;
        let result = {
            let mut tables = Tables {
                shadows: txn.open_table(SHADOWS).db()?,
                history: txn.open_table(HISTORY).db()?,
                devices: txn.open_table(DEVICES).db()?,
                presence: txn.open_table(PRESENCE).db()?,
            };
            f(&mut tables)?
        };
        txn.commit().db()?;
        Ok(result)
    }

    /// Every stored shadow in key order, for republishing state at start.
    pub fn for_each(&self, mut f: impl FnMut(ShadowId, StoredShadow)) -> Result<(), StoreError> {
        let txn = self.db.begin_read().db()?;
        let table = txn.open_table(SHADOWS).db()?;
        for row in table.iter().db()? {
            let (k, v) = row.db()?;
            let key = k.value();
            match parse_key(key) {
                Some(id) => f(id, decode_shadow(key, v.value())?),
                None => tracing::warn!(key, "skipping a stored shadow with an invalid key"),
            }
        }
        Ok(())
    }

    /// The newest `limit` history entries of a shadow, oldest first.
    pub fn history(&self, id: &ShadowId, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        let txn = self.db.begin_read().db()?;
        history_in(&txn.open_table(HISTORY).db()?, id, limit)
    }

    /// Marks every thing disconnected (a broker that starts has no
    /// connections yet; what it held before a crash is gone) and returns
    /// every presence record, by thing. A thing that was connected keeps
    /// the time it connected as the last time it was seen.
    pub fn reset_presence(
        &self,
    ) -> Result<std::collections::HashMap<String, PresenceRecord>, StoreError> {
        self.write(|t| {
            let mut all = std::collections::HashMap::new();
            for row in t.presence.iter().db()? {
                let (k, v) = row.db()?;
                let thing = k.value().to_owned();
                all.insert(thing.clone(), decode_presence(&thing, v.value())?);
            }
            for (thing, record) in all.iter_mut().filter(|(_, r)| r.connected) {
                record.connected = false;
                t.put_presence(thing, record)?;
            }
            Ok(all)
        })
    }

    /// Every device's record in thing order, for loading the credentials at start.
    pub fn devices(&self) -> Result<Vec<(String, DeviceRecord)>, StoreError> {
        let txn = self.db.begin_read().db()?;
        let table = txn.open_table(DEVICES).db()?;
        let mut out = Vec::new();
        for row in table.iter().db()? {
            let (k, v) = row.db()?;
            out.push((k.value().to_owned(), decode_device(k.value(), v.value())?));
        }
        Ok(out)
    }
}

/// The tables of one write transaction.
pub struct Tables<'t> {
    shadows: redb::Table<'t, &'static str, &'static [u8]>,
    history: redb::Table<'t, (&'static str, u64), &'static [u8]>,
    devices: redb::Table<'t, &'static str, &'static [u8]>,
    presence: redb::Table<'t, &'static str, &'static [u8]>,
}

impl std::fmt::Debug for Tables<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tables")
    }
}

impl Tables<'_> {
    pub fn load(&self, id: &ShadowId) -> Result<Option<StoredShadow>, StoreError> {
        get_in(&self.shadows, id)
    }

    pub fn save(&mut self, id: &ShadowId, stored: &StoredShadow) -> Result<(), StoreError> {
        let k = key(id);
        let bytes = shade_shared::sync::encode(stored).map_err(|e| StoreError::Corrupt {
            key: k.clone(),
            reason: e.to_string(),
        })?;
        self.shadows.insert(k.as_str(), bytes.as_slice()).db()?;
        Ok(())
    }

    /// Appends a history entry and drops entries older than the newest `keep`.
    pub fn append_history(
        &mut self,
        id: &ShadowId,
        entry: &HistoryEntry,
        keep: u64,
    ) -> Result<(), StoreError> {
        let k = key(id);
        let bytes = serde_json::to_vec(entry).map_err(|e| StoreError::Corrupt {
            key: k.clone(),
            reason: e.to_string(),
        })?;
        self.history
            .insert((k.as_str(), entry.version), bytes.as_slice())
            .db()?;
        if entry.version > keep {
            // Versions mostly go up by one per entry, so one entry falls
            // out per append: remove it by key. Only when older ones are
            // left (versions skipped, or `keep` was lowered) sweep the
            // range: a sweep of a range costs a walk that rewrites pages
            // even when it removes nothing (it was 7 % of an update).
            let cutoff = entry.version - keep;
            self.history.remove((k.as_str(), cutoff)).db()?;
            let older = self
                .history
                .range((k.as_str(), 0)..(k.as_str(), cutoff))
                .db()?
                .next()
                .is_some();
            if older {
                self.history
                    .retain_in((k.as_str(), 0)..(k.as_str(), cutoff), |_, _| false)
                    .db()?;
            }
        }
        Ok(())
    }

    pub fn presence(&self, thing: &str) -> Result<Option<PresenceRecord>, StoreError> {
        presence_in(&self.presence, thing)
    }

    pub fn put_presence(&mut self, thing: &str, record: &PresenceRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
            key: format!("presence/{thing}"),
            reason: e.to_string(),
        })?;
        self.presence.insert(thing, bytes.as_slice()).db()?;
        Ok(())
    }

    /// Every stored shadow of `thing`: the classic one, then the named
    /// ones in name order (their keys are `thing/name`).
    pub fn shadows_of(&self, thing: &str) -> Result<Vec<(ShadowId, StoredShadow)>, StoreError> {
        let mut out = Vec::new();
        let (named, end) = (format!("{thing}/"), format!("{thing}0"));
        let classic = self.shadows.range(thing..=thing).db()?;
        for row in classic.chain(self.shadows.range(named.as_str()..end.as_str()).db()?) {
            let (k, v) = row.db()?;
            if let Some(id) = parse_key(k.value()) {
                out.push((id, decode_shadow(k.value(), v.value())?));
            }
        }
        Ok(out)
    }

    pub fn has_device(&self, thing: &str) -> Result<bool, StoreError> {
        Ok(self.devices.get(thing).db()?.is_some())
    }

    /// Adds or replaces the record of device `thing`.
    pub fn put_device(&mut self, thing: &str, record: &DeviceRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
            key: format!("devices/{thing}"),
            reason: e.to_string(),
        })?;
        self.devices.insert(thing, bytes.as_slice()).db()?;
        Ok(())
    }

    /// Removes device `thing`; false if there was none.
    pub fn remove_device(&mut self, thing: &str) -> Result<bool, StoreError> {
        Ok(self.devices.remove(thing).db()?.is_some())
    }

    /// Up to `limit` devices after `after`, in thing order, and whether more follow.
    pub fn devices_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, DeviceRecord)>, bool), StoreError> {
        devices_page_in(&self.devices, after, limit)
    }
}

/// A stopped broker's data, opened read-only by the operator CLI.
pub struct ReadStore {
    db: redb::ReadOnlyDatabase,
}

impl std::fmt::Debug for ReadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadStore")
    }
}

impl ReadStore {
    pub fn open(dir: &Path) -> Result<ReadStore, StoreError> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            return Err(StoreError::Missing(dir.to_owned()));
        }
        match redb::ReadOnlyDatabase::open(&path) {
            Ok(db) => Ok(ReadStore { db }),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::InUse {
                path: dir.to_owned(),
            }),
            Err(e) => Err(StoreError::Db(e.into())),
        }
    }

    /// A file written by `shade backup`, open read-only like a stopped
    /// broker's data.
    pub fn open_backup(path: &Path) -> Result<ReadStore, StoreError> {
        backup::verify(path)?;
        redb::ReadOnlyDatabase::open(path)
            .map(|db| ReadStore { db })
            .map_err(|e| StoreError::NotABackup(path.to_owned(), e.to_string()))
    }

    /// Writes a backup of this (stopped) broker's data to `out`.
    pub fn backup_to(&self, out: &Path, taken_ms: u64) -> Result<backup::About, StoreError> {
        let txn = self.db.begin_read().db()?;
        backup::write_backup(&txn, out, taken_ms, None)
    }

    pub fn get(&self, id: &ShadowId) -> Result<Option<StoredShadow>, StoreError> {
        let txn = self.db.begin_read().db()?;
        get_in(&txn.open_table(SHADOWS).db()?, id)
    }

    /// Walks shadows whose key starts with `prefix`, in key order, one at a
    /// time: memory stays flat however many there are.
    pub fn for_each(
        &self,
        prefix: &str,
        mut f: impl FnMut(ShadowId, StoredShadow),
    ) -> Result<(), StoreError> {
        ShadowSource::scan(self, prefix, None, &mut |_, id, stored| {
            f(id, stored);
            true
        })
    }

    /// The newest `limit` history entries of a shadow, oldest first.
    pub fn history(&self, id: &ShadowId, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        ShadowSource::history(self, id, limit)
    }

    /// As [`Tables::devices_page`]. Data from before devices existed has none.
    pub fn devices_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, DeviceRecord)>, bool), StoreError> {
        let txn = self.db.begin_read().db()?;
        match txn.open_table(DEVICES) {
            Err(redb::TableError::TableDoesNotExist(_)) => Ok((Vec::new(), false)),
            table => devices_page_in(&table.db()?, after, limit),
        }
    }
}

/// Reading shadows and history, the same way from a running broker's write
/// transaction ([`Tables`]) and from a stopped broker's data ([`ReadStore`]),
/// so online and offline answers of the CLI cannot drift apart.
pub(crate) trait ShadowSource {
    fn get(&self, id: &ShadowId) -> Result<Option<StoredShadow>, StoreError>;
    /// Visits shadows whose key starts with `prefix` and sorts after
    /// `after`, in key order, one at a time, until `f` returns false.
    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        f: &mut dyn FnMut(&str, ShadowId, StoredShadow) -> bool,
    ) -> Result<(), StoreError>;
    /// The newest `limit` history entries of a shadow, oldest first.
    fn history(&self, id: &ShadowId, limit: usize) -> Result<Vec<HistoryEntry>, StoreError>;
    /// Whether `thing` is connected, as last recorded.
    fn presence(&self, thing: &str) -> Result<Option<PresenceRecord>, StoreError>;
}

impl ShadowSource for Tables<'_> {
    fn get(&self, id: &ShadowId) -> Result<Option<StoredShadow>, StoreError> {
        get_in(&self.shadows, id)
    }
    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        f: &mut dyn FnMut(&str, ShadowId, StoredShadow) -> bool,
    ) -> Result<(), StoreError> {
        scan_in(&self.shadows, prefix, after, f)
    }
    fn history(&self, id: &ShadowId, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        history_in(&self.history, id, limit)
    }
    fn presence(&self, thing: &str) -> Result<Option<PresenceRecord>, StoreError> {
        presence_in(&self.presence, thing)
    }
}

impl ShadowSource for ReadStore {
    fn get(&self, id: &ShadowId) -> Result<Option<StoredShadow>, StoreError> {
        ReadStore::get(self, id)
    }
    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        f: &mut dyn FnMut(&str, ShadowId, StoredShadow) -> bool,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read().db()?;
        scan_in(&txn.open_table(SHADOWS).db()?, prefix, after, f)
    }
    fn history(&self, id: &ShadowId, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        let txn = self.db.begin_read().db()?;
        history_in(&txn.open_table(HISTORY).db()?, id, limit)
    }
    fn presence(&self, thing: &str) -> Result<Option<PresenceRecord>, StoreError> {
        let txn = self.db.begin_read().db()?;
        match txn.open_table(PRESENCE) {
            // Data from before presence was kept has none.
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            table => presence_in(&table.db()?, thing),
        }
    }
}

fn presence_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    thing: &str,
) -> Result<Option<PresenceRecord>, StoreError> {
    match table.get(thing).db()? {
        None => Ok(None),
        Some(v) => decode_presence(thing, v.value()).map(Some),
    }
}

fn get_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &ShadowId,
) -> Result<Option<StoredShadow>, StoreError> {
    let k = key(id);
    match table.get(k.as_str()).db()? {
        None => Ok(None),
        Some(v) => decode_shadow(&k, v.value()).map(Some),
    }
}

fn scan_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    after: Option<&str>,
    f: &mut dyn FnMut(&str, ShadowId, StoredShadow) -> bool,
) -> Result<(), StoreError> {
    let start = match after {
        Some(a) if a >= prefix => a,
        _ => prefix,
    };
    for row in table.range(start..).db()? {
        let (k, v) = row.db()?;
        let key = k.value();
        if Some(key) == after {
            continue;
        }
        if !key.starts_with(prefix) {
            break;
        }
        match parse_key(key) {
            Some(id) => {
                if !f(key, id, decode_shadow(key, v.value())?) {
                    break;
                }
            }
            None => tracing::warn!(key, "skipping a stored shadow with an invalid key"),
        }
    }
    Ok(())
}

fn devices_page_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<(String, DeviceRecord)>, bool), StoreError> {
    let mut out = Vec::new();
    for row in table.range(after.unwrap_or("")..).db()? {
        let (k, v) = row.db()?;
        let thing = k.value();
        if Some(thing) == after {
            continue;
        }
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push((thing.to_owned(), decode_device(thing, v.value())?));
    }
    Ok((out, false))
}

fn history_in(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    id: &ShadowId,
    limit: usize,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let k = key(id);
    let mut out = Vec::new();
    for row in table
        .range((k.as_str(), 0)..=(k.as_str(), u64::MAX))
        .db()?
        .rev()
        .take(limit)
    {
        let (_, v) = row.db()?;
        let entry = serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
            key: k.clone(),
            reason: e.to_string(),
        })?;
        out.push(entry);
    }
    out.reverse();
    Ok(out)
}
