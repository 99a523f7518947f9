//! `shade backup (--broker URL | --data DIR) OUT` and `shade restore OUT
//! --data DIR`: a consistent copy of a broker's data, taken while it runs
//! (over `shade/ops/request`, see `crate::serve::backup`) or from a stopped
//! broker's data directory, and its restore into a new data directory
//! under a new node name (see `crate::store::backup`).

use std::io::Write;
use std::path::{Path, PathBuf};

use base64ct::{Base64, Encoding};
use clap::Args;
use serde_json::{json, Map, Value};
use shade_shared::ReplicaId;

use super::args::{open_read_store, CliError, Source};
use super::client::Session;
use super::output::Out;
use crate::store::backup::{self, About};

pub const BACKUP_EXAMPLES: &str = "\
Examples:
  shade backup --broker mqtt://127.0.0.1:1883 shade.backup    # while it runs
  shade backup --data ./shade-data shade.backup               # a stopped broker
  shade restore shade.backup --data ./new-data && shade serve --data ./new-data";

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The file to write (it must not exist).
    #[arg(value_name = "OUT")]
    pub out: PathBuf,
    #[command(flatten)]
    pub source: Source,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// A file written by `shade backup`.
    #[arg(value_name = "BACKUP")]
    pub backup: PathBuf,
    /// The new data directory: empty or not there yet.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// The restored broker's node name (default: restored-<random>). It
    /// must differ from the old broker's, whose writes agents may hold.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}

pub async fn backup(args: BackupArgs) -> Result<(), CliError> {
    if args.out.exists() {
        return Err(CliError::Usage(format!(
            "{} exists already: choose a new name, or remove it first",
            args.out.display()
        )));
    }
    let part = part_of(&args.out);
    remove_stale(&part)?;
    let taken = match take(&args, &part).await {
        Ok(()) => backup::verify(&part).map_err(CliError::from),
        Err(e) => Err(e),
    };
    let about = match taken {
        Ok(about) => about,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, &args.out)?;
    let bytes = std::fs::metadata(&args.out).map_or(0, |m| m.len());
    let mut out = Out::new();
    out.line(&format!(
        "backed up {} to {} ({bytes} bytes)",
        summary(&about),
        args.out.display()
    ))?;
    out.flush()
}

/// Writes the backup to `part`, from the broker or the data directory.
async fn take(args: &BackupArgs, part: &Path) -> Result<(), CliError> {
    if let Some(dir) = &args.source.data {
        let store = open_read_store(dir)?;
        store.backup_to(part, super::args::now_ms())?;
        return Ok(());
    }
    let mut session = Session::connect(&args.source.online).await?;
    let result = download(&mut session, part).await;
    session.close().await;
    result
}

/// Asks the broker for a backup and reads it in chunks into `part`.
pub(crate) async fn download(session: &mut Session, part: &Path) -> Result<(), CliError> {
    let started = session.ops(body(json!({ "op": "backup" }))).await?;
    let id = started
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| session.bad_reply("a backup without an id"))?
        .to_owned();
    let bytes = started.get("bytes").and_then(Value::as_u64).unwrap_or(0);
    let mut file = std::fs::File::create_new(part)?;
    let mut offset = 0u64;
    loop {
        let chunk = session
            .ops(body(
                json!({ "op": "backup-read", "id": id, "offset": offset }),
            ))
            .await?;
        let data = chunk
            .get("data")
            .and_then(Value::as_str)
            .and_then(|d| Base64::decode_vec(d).ok())
            .ok_or_else(|| session.bad_reply("a backup chunk that is not base64"))?;
        file.write_all(&data)?;
        offset += data.len() as u64;
        if chunk.get("end").and_then(Value::as_bool) == Some(true) {
            break;
        }
        if data.is_empty() {
            return Err(session.bad_reply("an empty backup chunk before the end"));
        }
    }
    file.sync_all()?;
    // The broker removes its copy; if this fails it does so when idle.
    let _ = session
        .ops(body(json!({ "op": "backup-end", "id": id })))
        .await;
    if offset != bytes {
        return Err(session.bad_reply(format!(
            "a backup of {offset} bytes where {bytes} were announced"
        )));
    }
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> Result<(), CliError> {
    let name = match args.node {
        Some(name) => name,
        None => format!(
            "restored-{}",
            crate::router::gateway::random_hex()
                .map_err(|e| CliError::Usage(format!("no random source for a node name: {e}")))?
                .get(..8)
                .unwrap_or("0")
        ),
    };
    let node =
        ReplicaId::broker(&name).map_err(|e| CliError::Usage(format!("--node {name:?}: {e}")))?;
    let about = backup::verify(&args.backup)?;
    if about.node.as_deref() == Some(node.as_str()) {
        return Err(CliError::Usage(format!(
            "--node {name}: the backup was taken from that node; a restored broker needs a new name"
        )));
    }
    backup::restore(&args.backup, &args.data, &name)?;
    let mut out = Out::new();
    out.line(&format!(
        "restored {} into {}; its broker writes as {node}{}",
        summary(&about),
        args.data.display(),
        about
            .node
            .map(|n| format!(" (the backup was taken from {n})"))
            .unwrap_or_default()
    ))?;
    out.flush()
}

fn summary(about: &About) -> String {
    let c = &about.counts;
    format!(
        "{} shadow{}, {} device{}, {} history entr{}",
        c.shadows,
        if c.shadows == 1 { "" } else { "s" },
        c.devices,
        if c.devices == 1 { "" } else { "s" },
        c.history,
        if c.history == 1 { "y" } else { "ies" },
    )
}

fn body(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Where a backup is written before it is complete.
fn part_of(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_owned();
    name.push(".part");
    out.with_file_name(name)
}

/// A `.part` file left by an earlier backup that failed half-way.
fn remove_stale(part: &Path) -> Result<(), CliError> {
    match std::fs::remove_file(part) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}
