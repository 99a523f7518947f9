//! Backups: a copy of every table, taken from one read transaction, into a
//! new redb file; and a restore of such a file into an empty data
//! directory, under a new node name.
//!
//! A backup is a redb database of its own: the four tables of the store,
//! byte for byte, and a `backup` table that says what it is. One read
//! transaction sees one committed state of the store, so a backup taken
//! while the store thread keeps committing is still consistent: redb's
//! MVCC keeps that state's pages for the reader until it is done.
//!
//! A restored broker must not write under its old node name: the broker it
//! was taken from went on writing after the backup, so agents may hold
//! dots of that name the backup never saw, and new writes would reuse them
//! (see "Lost state" in docs/ARCHITECTURE.md). A restore therefore writes
//! a node name into the data directory ([`NODE_FILE`]), which `shade
//! serve` takes over its configured one.

use std::path::{Path, PathBuf};

use redb::{
    ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableHandle,
};
use serde::{Deserialize, Serialize};

use super::record::{
    decode_device, decode_presence, decode_shadow, Ctx, StoreError, DB_FILE, DEVICES, HISTORY,
    PRESENCE, SHADOWS,
};

/// What a backup file is, under the key `about` of this table.
const ABOUT: TableDefinition<&str, &[u8]> = TableDefinition::new("backup");

/// The `format` a backup file states.
const FORMAT: &str = "shade-backup/1";

/// The file in a data directory that names its broker's replica, written
/// by a restore; `shade serve` uses it over the configured `node`.
pub(crate) const NODE_FILE: &str = "node";

/// How many records of each table a backup holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub shadows: u64,
    pub history: u64,
    pub devices: u64,
    pub presence: u64,
}

/// What a backup file says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct About {
    pub format: String,
    /// When it was taken, in milliseconds since the Unix epoch.
    #[serde(rename = "takenMs")]
    pub taken_ms: u64,
    /// The node name of the broker it was taken from, when known.
    pub node: Option<String>,
    pub counts: Counts,
}

/// A handle that takes backups of a running store from any thread, while
/// the store thread keeps writing.
#[derive(Clone)]
pub struct Snapshots {
    pub(super) db: std::sync::Arc<redb::Database>,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshots")
    }
}

impl Snapshots {
    /// Writes a backup of the store's latest committed state to `out`
    /// (which must not exist). Blocks: call it off the async runtime.
    pub fn write(
        &self,
        out: &Path,
        taken_ms: u64,
        node: Option<&str>,
    ) -> Result<About, StoreError> {
        let txn = self.db.begin_read().db()?;
        write_backup(&txn, out, taken_ms, node)
    }
}

/// Copies every table visible to `txn` into a new backup file at `out`.
pub(super) fn write_backup(
    txn: &ReadTransaction,
    out: &Path,
    taken_ms: u64,
    node: Option<&str>,
) -> Result<About, StoreError> {
    let db = create_new(out)?;
    let write = db.begin_write().db()?;
    let counts = copy_tables(txn, &write)?;
    let about = About {
        format: FORMAT.into(),
        taken_ms,
        node: node.map(str::to_owned),
        counts,
    };
    let bytes = serde_json::to_vec(&about).map_err(|e| corrupt("backup/about", e))?;
    write
        .open_table(ABOUT)
        .db()?
        .insert("about", bytes.as_slice())
        .db()?;
    write.commit().db()?;
    Ok(about)
}

/// Reads what a backup file says of itself, after checking that every
/// record in it decodes: a restore of a damaged backup fails here, before
/// anything is written.
pub(crate) fn verify(backup: &Path) -> Result<About, StoreError> {
    let db = open_backup(backup)?;
    let txn = db.begin_read().db()?;
    let about = about_of(&txn, backup)?;
    let mut counts = Counts::default();
    for row in txn.open_table(SHADOWS).db()?.iter().db()? {
        let (k, v) = row.db()?;
        decode_shadow(k.value(), v.value())?;
        counts.shadows += 1;
    }
    for row in txn.open_table(DEVICES).db()?.iter().db()? {
        let (k, v) = row.db()?;
        decode_device(k.value(), v.value())?;
        counts.devices += 1;
    }
    for row in txn.open_table(PRESENCE).db()?.iter().db()? {
        let (k, v) = row.db()?;
        decode_presence(k.value(), v.value())?;
        counts.presence += 1;
    }
    counts.history = txn.open_table(HISTORY).db()?.len().db()?;
    if counts != about.counts {
        return Err(StoreError::Corrupt {
            key: backup.display().to_string(),
            reason: format!(
                "the backup says it holds {:?} but holds {counts:?}",
                about.counts
            ),
        });
    }
    Ok(about)
}

/// Restores `backup` into the data directory `dir`, which must be empty
/// or not exist, with `node` as its broker's new node name.
pub(crate) fn restore(backup: &Path, dir: &Path, node: &str) -> Result<About, StoreError> {
    let about = verify(backup)?;
    let busy = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(source) => {
            return Err(StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })
        }
    };
    if busy {
        return Err(StoreError::NotEmpty(dir.to_owned()));
    }
    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    // The node name first: a database in this directory is never served
    // under the old name, even if the restore stops half-way.
    write_file(&dir.join(NODE_FILE), format!("{node}\n").as_bytes())?;
    let part = dir.join(format!("{DB_FILE}.part"));
    {
        let from = open_backup(backup)?;
        let txn = from.begin_read().db()?;
        let db = create_new(&part)?;
        let write = db.begin_write().db()?;
        copy_tables(&txn, &write)?;
        write.commit().db()?;
    }
    std::fs::rename(&part, dir.join(DB_FILE)).map_err(|e| io(&part, e))?;
    Ok(about)
}

/// The node name a restore left in `dir`, if any.
pub(crate) fn node_of(dir: &Path) -> Result<Option<String>, StoreError> {
    let path = dir.join(NODE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|n| !n.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path, e)),
    }
}

fn about_of(txn: &ReadTransaction, backup: &Path) -> Result<About, StoreError> {
    let not_a_backup = || StoreError::NotABackup(backup.to_owned(), "no backup table".into());
    let table = match txn.open_table(ABOUT) {
        Err(redb::TableError::TableDoesNotExist(_)) => return Err(not_a_backup()),
        other => other.db()?,
    };
    let about = match table.get("about").db()? {
        Some(v) => serde_json::from_slice::<About>(v.value()).map_err(|_| not_a_backup())?,
        None => return Err(not_a_backup()),
    };
    if about.format != FORMAT {
        return Err(StoreError::Corrupt {
            key: backup.display().to_string(),
            reason: format!("format {:?}; this shade reads {FORMAT:?}", about.format),
        });
    }
    Ok(about)
}

/// Copies the four store tables from `from` into `to`, counting records.
/// A table the source lacks (data from before it existed) is left empty.
fn copy_tables(from: &ReadTransaction, to: &redb::WriteTransaction) -> Result<Counts, StoreError> {
    Ok(Counts {
        shadows: copy(from, to, SHADOWS)?,
        history: copy(from, to, HISTORY)?,
        devices: copy(from, to, DEVICES)?,
        presence: copy(from, to, PRESENCE)?,
    })
}

fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &ReadTransaction,
    to: &redb::WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let mut target = to.open_table(table).db()?;
    let source = match from.open_table(table) {
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        other => other.db()?,
    };
    let mut n = 0;
    for row in source.iter().db()? {
        let (k, v) = row.db()?;
        target.insert(k.value(), v.value()).db()?;
        n += 1;
    }
    tracing::debug!(table = table.name(), rows = n, "copied");
    Ok(n)
}

/// A new database at `path`, refusing to touch a file already there.
fn create_new(path: &Path) -> Result<redb::Database, StoreError> {
    if path.exists() {
        return Err(StoreError::Exists(path.to_owned()));
    }
    redb::Database::create(path).db()
}

fn open_backup(path: &Path) -> Result<redb::ReadOnlyDatabase, StoreError> {
    if !path.is_file() {
        return Err(StoreError::NotABackup(path.to_owned(), "not a file".into()));
    }
    redb::ReadOnlyDatabase::open(path)
        .map_err(|e| StoreError::NotABackup(path.to_owned(), e.to_string()))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    std::fs::write(path, bytes).map_err(|e| io(path, e))
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: PathBuf::from(path),
        source,
    }
}

fn corrupt(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.into(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests;
