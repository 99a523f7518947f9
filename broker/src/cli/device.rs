//! `shade device add THING [--replace]`, `shade device list` and
//! `shade device remove THING`: the devices that may connect with a secret.
//!
//! `add` generates the secret here, hashes it here and sends only the hash
//! (see [`crate::ops::devices`]): the secret never crosses the network and is
//! never stored; it is printed once, on its own line, for a script to
//! capture. Online, the queries go to the broker's `shade/ops/request`;
//! with `--data`, the same [`crate::ops::devices::execute`] runs over a stopped
//! broker's data.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};
use shade_shared::ThingName;

use super::args::{now_ms, open_read_store, BrokerArgs, CliError};
use super::client::Session;
use super::output::{local_time, pretty, Out, Paint, Table};
use crate::auth::credentials::{hash_device_secret, new_device_secret};
use crate::ops::devices::{self, DevicePage, DeviceQuery, MAX_PAGE};
use crate::store::{Store, StoreError, DB_FILE};

pub const EXAMPLES: &str = "\
Examples:
  shade device add lamp-1                      # prints lamp-1's new secret, once
  shade device list
  shade device remove lamp-1
  shade device add lamp-1 --data ./shade-data  # a stopped broker's data";

pub const ADD_EXAMPLES: &str = "\
The secret is printed once, alone on stdout, and stored only as an argon2 hash.
The device connects with user name = its thing name and password = the secret.

Examples:
  shade device add lamp-1
  SECRET=$(shade device add lamp-1)            # capture it in a script
  shade device add lamp-1 --replace --json     # a new secret for lamp-1
  shade device add lamp-1 --data ./shade-data  # a stopped broker's data";

pub const LIST_EXAMPLES: &str = "\
Examples:
  shade device list
  shade device list --json
  shade device list --data ./shade-data        # a stopped broker's data";

pub const REMOVE_EXAMPLES: &str = "\
Examples:
  shade device remove lamp-1
  shade device remove lamp-1 --data ./shade-data";

#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    #[command(subcommand)]
    pub command: DeviceCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DeviceCommand {
    /// Give a device a fresh secret, printed once.
    #[command(after_help = ADD_EXAMPLES)]
    Add(AddArgs),
    /// List the devices that have a secret, and since when.
    #[command(after_help = LIST_EXAMPLES)]
    List(ListArgs),
    /// Remove a device's secret: it can no longer connect with one.
    #[command(after_help = REMOVE_EXAMPLES)]
    Remove(RemoveArgs),
}

/// Where a device command runs: a running broker, or with `--data` a
/// stopped broker's data directory.
#[derive(Debug, Clone, Args)]
pub struct Target {
    #[command(flatten)]
    pub online: BrokerArgs,
    /// Work on a stopped broker's data directory instead of asking a broker.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["broker", "ca", "cert", "key"])]
    pub data: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    /// The device's thing name, which is also its MQTT user name.
    pub thing: ThingName,
    /// Give a device that already has a secret a new one (the old one stops working).
    #[arg(long)]
    pub replace: bool,
    /// Print {"thing","secret"} instead of the bare secret.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Print a JSON array of {"thing","created_ms"}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Clone, Args)]
pub struct RemoveArgs {
    /// The device to remove.
    pub thing: ThingName,
    #[command(flatten)]
    pub target: Target,
}

pub async fn run(args: DeviceArgs) -> Result<(), CliError> {
    match args.command {
        DeviceCommand::Add(args) => add(args).await,
        DeviceCommand::List(args) => list(args).await,
        DeviceCommand::Remove(args) => remove(args).await,
    }
}

/// A broker session, or a stopped broker's data directory.
#[derive(Debug)]
enum Conn {
    /// Boxed: a session is large, and there is one per run.
    Online(Box<Session>),
    Offline(PathBuf),
}

impl Conn {
    async fn open(target: &Target) -> Result<Conn, CliError> {
        match &target.data {
            Some(dir) => Ok(Conn::Offline(dir.clone())),
            None => Ok(Conn::Online(Box::new(
                Session::connect(&target.online).await?,
            ))),
        }
    }

    /// Runs one query: its `result`, or its `error` as [`CliError::Refused`].
    async fn ask(&mut self, mut body: Map<String, Value>) -> Result<Value, CliError> {
        let dir = match self {
            Conn::Online(session) => return session.ops(body).await,
            Conn::Offline(dir) => dir,
        };
        body.insert("clientToken".into(), Value::String("offline".into()));
        let query: DeviceQuery = serde_json::from_value(Value::Object(body))
            .map_err(|e| CliError::Refused(format!("cannot build the query: {e}")))?;
        if let DeviceQuery::List { after, limit, .. } = &query {
            let store = open_read_store(dir)?;
            let limit = limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
            let (rows, more) = store.devices_page(after.as_deref(), limit)?;
            return Ok(devices::list_result(rows, more));
        }
        let store = open_write_store(dir)?;
        // The config is not read offline: `shade serve` warns of a device
        // named like a config user when it starts.
        let users = crate::identity::Users::new();
        let done = store.write(|t| devices::execute(t, &query, &users, now_ms()))?;
        done.map(|d| d.result).map_err(CliError::Refused)
    }

    async fn close(self) {
        if let Conn::Online(session) = self {
            session.close().await;
        }
    }
}

/// Opens a stopped broker's data for writing. Unlike `shade serve`, it does
/// not create a database where there is none: a mistyped path would
/// otherwise collect devices no broker ever reads.
fn open_write_store(dir: &Path) -> Result<Store, CliError> {
    if !dir.join(DB_FILE).exists() {
        return Err(StoreError::Missing(dir.to_owned()).into());
    }
    Store::open(dir).map_err(|e| match e {
        StoreError::InUse { .. } => CliError::InUse(dir.to_owned()),
        other => CliError::Store(other),
    })
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

async fn add(args: AddArgs) -> Result<(), CliError> {
    let secret = new_device_secret()?;
    let hash = hash_device_secret(&secret)?;
    let mut conn = Conn::open(&args.target).await?;
    let body = object(json!({
        "op": "device-add",
        "thing": args.thing.as_str(),
        "hash": hash,
        "replace": args.replace,
    }));
    let result = conn.ask(body).await;
    conn.close().await;
    result?;
    let mut out = Out::plain();
    if args.json {
        out.line(&json!({ "thing": args.thing.as_str(), "secret": secret }).to_string())?;
    } else {
        out.line(&secret)?;
    }
    out.flush()?;
    eprintln!(
        "shade: this is the only time the secret of {thing} is shown; the device connects \
         with user name {thing} and the secret as its password",
        thing = args.thing
    );
    Ok(())
}

async fn list(args: ListArgs) -> Result<(), CliError> {
    let mut conn = Conn::open(&args.target).await?;
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let body = object(json!({ "op": "device-list", "after": after, "limit": MAX_PAGE }));
        let result = match conn.ask(body).await {
            Ok(result) => result,
            Err(e) => {
                conn.close().await;
                return Err(e);
            }
        };
        let page: DevicePage = serde_json::from_value(result)
            .map_err(|e| CliError::Refused(format!("a device list page is unreadable: {e}")))?;
        items.extend(page.items);
        match page.next {
            Some(next) if after.as_ref() != Some(&next) => after = Some(next),
            _ => break,
        }
    }
    conn.close().await;
    let mut out = Out::new();
    if args.json {
        let v = serde_json::to_value(&items).map_err(std::io::Error::other)?;
        out.line(&pretty(&v))?;
        return out.flush();
    }
    if items.is_empty() {
        eprintln!("shade: no devices");
        return Ok(());
    }
    let mut table = Table::new(&[("THING", Paint::Bold), ("CREATED", Paint::Dim)]);
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| vec![i.thing.clone(), local_time(i.created_ms)])
        .collect();
    table.print(&mut out, &rows)?;
    out.flush()
}

async fn remove(args: RemoveArgs) -> Result<(), CliError> {
    let mut conn = Conn::open(&args.target).await?;
    let body = object(json!({ "op": "device-remove", "thing": args.thing.as_str() }));
    let result = conn.ask(body).await;
    conn.close().await;
    result?;
    let mut out = Out::new();
    out.line(&format!("device {} removed", args.thing))?;
    out.flush()
}
