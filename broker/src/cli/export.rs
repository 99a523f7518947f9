//! `shade export --json (--broker URL | --data DIR) [OUT]` and `shade
//! import FILE --broker URL`: shadows (and device secrets, as their
//! hashes) as one JSON document, for moving them to another installation.
//!
//! Unlike a backup, an export keeps no version vectors, history or agent
//! vectors: the importing broker takes each shadow as a new update of its
//! own (its `desired` and `reported`, merged into what it holds), so the
//! two installations never share dots. The export is read from a
//! consistent snapshot: a backup, taken online as `shade backup` takes one.
//!
//! ```text
//! {"format":"shade-export/1","exportedAt":MS,
//!  "shadows":[{"thing":"lamp","shadow":null,"version":3,"state":{"desired":{..},"reported":{..}}}],
//!  "devices":[{"thing":"pump","hash":"$argon2id$...","createdMs":MS}]}
//! ```

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use shade_shared::topic::{Operation, Reply, Topic};
use shade_shared::{Policies, Section, ShadowId, ShadowName, ThingName};

use super::args::{open_read_store, BrokerArgs, CliError, Source};
use super::client::Session;
use super::output::Out;
use crate::store::{ReadStore, StoredShadow};

pub const EXPORT_EXAMPLES: &str = "\
Examples:
  shade export --json --broker mqtt://old-host:1883 fleet.json
  shade export --json --data ./shade-data > fleet.json        # a stopped broker
  shade import fleet.json --broker mqtt://new-host:1883";

const FORMAT: &str = "shade-export/1";
/// Updates in flight at once while importing.
const WINDOW: usize = 64;

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Write JSON (the only format; accepted for clarity).
    #[arg(long)]
    pub json: bool,
    /// The file to write (it must not exist); default: stdout.
    #[arg(value_name = "OUT")]
    pub out: Option<PathBuf>,
    /// Leave the devices' secret hashes out.
    #[arg(long)]
    pub no_devices: bool,
    #[command(flatten)]
    pub source: Source,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// A file written by `shade export`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub online: BrokerArgs,
}

#[derive(Debug, Serialize, Deserialize)]
struct ExportedShadow {
    thing: String,
    shadow: Option<String>,
    version: u64,
    state: Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct ExportedDevice {
    thing: String,
    hash: String,
    #[serde(rename = "createdMs")]
    created_ms: u64,
}

#[derive(Debug, Deserialize)]
struct Export {
    format: String,
    #[serde(default)]
    shadows: Vec<ExportedShadow>,
    #[serde(default)]
    devices: Vec<ExportedDevice>,
}

pub async fn export(args: ExportArgs) -> Result<(), CliError> {
    if let Some(out) = args.out.as_ref().filter(|o| o.exists()) {
        return Err(CliError::Usage(format!(
            "{} exists already: choose a new name, or remove it first",
            out.display()
        )));
    }
    let policies = args
        .source
        .offline()?
        .map(|o| o.policies)
        .unwrap_or_default();
    let (store, _scratch) = match &args.source.data {
        Some(dir) => (open_read_store(dir)?, None),
        None => {
            let scratch = Scratch::new()?;
            let mut session = Session::connect(&args.source.online).await?;
            let taken = super::backup::download(&mut session, &scratch.file).await;
            session.close().await;
            taken?;
            (ReadStore::open_backup(&scratch.file)?, Some(scratch))
        }
    };
    let written = match &args.out {
        Some(out) => {
            let file = std::fs::File::create_new(out)?;
            let mut w = BufWriter::new(file);
            write_export(&store, &policies, !args.no_devices, &mut w)
                .and_then(|n| w.flush().map(|()| n).map_err(CliError::from))
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = BufWriter::new(stdout.lock());
            write_export(&store, &policies, !args.no_devices, &mut w)
                .and_then(|n| w.flush().map(|()| n).map_err(CliError::from))
        }
    };
    let (shadows, devices) = written?;
    if let Some(out) = &args.out {
        let mut o = Out::new();
        o.line(&format!(
            "exported {} and {} to {}",
            plural(shadows, "shadow"),
            plural(devices, "device"),
            out.display()
        ))?;
        o.flush()?;
    }
    Ok(())
}

/// Streams the export document to `w`: (shadows, devices) written.
fn write_export(
    store: &ReadStore,
    policies: &Policies,
    devices: bool,
    w: &mut impl Write,
) -> Result<(usize, usize), CliError> {
    write!(
        w,
        "{{\"format\":\"{FORMAT}\",\"exportedAt\":{},\"shadows\":[",
        super::args::now_ms()
    )?;
    let mut shadows = 0usize;
    let mut failed = None;
    store.for_each("", |id, stored| {
        if failed.is_some() || !stored.shadow.exists {
            return;
        }
        let item = exported(&id, &stored, policies);
        let sep = if shadows == 0 { "\n" } else { ",\n" };
        let written = w
            .write_all(sep.as_bytes())
            .and_then(|()| serde_json::to_writer(&mut *w, &item).map_err(std::io::Error::from));
        match written {
            Ok(()) => shadows += 1,
            Err(e) => failed = Some(e),
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    write!(w, "],\"devices\":[")?;
    let mut count = 0usize;
    let mut after: Option<String> = None;
    let mut more = devices;
    while more {
        let page;
        (page, more) = store.devices_page(after.as_deref(), 1000)?;
        for (thing, record) in &page {
            let item = ExportedDevice {
                thing: thing.clone(),
                hash: record.hash.clone(),
                created_ms: record.created_ms,
            };
            w.write_all(if count == 0 { b"\n" } else { b",\n" })?;
            serde_json::to_writer(&mut *w, &item).map_err(std::io::Error::from)?;
            count += 1;
        }
        after = page.last().map(|(t, _)| t.clone());
    }
    writeln!(w, "]}}")?;
    Ok((shadows, count))
}

fn exported(id: &ShadowId, stored: &StoredShadow, policies: &Policies) -> ExportedShadow {
    let mut state = Map::new();
    for (name, section) in [
        ("desired", Section::Desired),
        ("reported", Section::Reported),
    ] {
        let rendered = stored.shadow.render(section, policies.of(section));
        if rendered.state.as_object().is_some_and(|m| !m.is_empty()) {
            state.insert(name.into(), rendered.state);
        }
    }
    ExportedShadow {
        thing: id.thing.to_string(),
        shadow: id.shadow.as_ref().map(|s| s.to_string()),
        version: stored.shadow.version,
        state: Value::Object(state),
    }
}

pub async fn import(args: ImportArgs) -> Result<(), CliError> {
    let text = std::fs::read(&args.file)?;
    let export: Export = serde_json::from_slice(&text).map_err(|e| {
        CliError::Usage(format!(
            "{} is not a shade export: {e}",
            args.file.display()
        ))
    })?;
    if export.format != FORMAT {
        return Err(CliError::Usage(format!(
            "{}: format {:?}; this shade reads {FORMAT:?}",
            args.file.display(),
            export.format
        )));
    }
    let mut session = Session::connect(&args.online).await?;
    let result = import_into(&mut session, &export).await;
    session.close().await;
    let (shadows, devices, kept) = result?;
    let mut out = Out::new();
    out.line(&format!(
        "imported {} and {}{}",
        plural(shadows, "shadow"),
        plural(devices, "device"),
        if kept == 0 {
            String::new()
        } else {
            format!(
                " ({} there already kept its secret)",
                plural(kept, "device")
            )
        }
    ))?;
    out.flush()
}

/// (shadows, devices added, devices that existed).
async fn import_into(
    session: &mut Session,
    export: &Export,
) -> Result<(usize, usize, usize), CliError> {
    let (mut added, mut kept) = (0, 0);
    for device in &export.devices {
        let body = json!({ "op": "device-add", "thing": device.thing, "hash": device.hash });
        match session.ops(object(body)).await {
            Ok(_) => added += 1,
            Err(CliError::Refused(e)) if e.contains("already has a secret") => kept += 1,
            Err(e) => return Err(e),
        }
    }
    let filters: Vec<String> = ["accepted", "rejected"]
        .iter()
        .flat_map(|r| {
            [
                format!("$aws/things/+/shadow/update/{r}"),
                format!("$aws/things/+/shadow/name/+/update/{r}"),
            ]
        })
        .collect();
    session.subscribe(&filters).await?;
    let mut waiting: HashMap<String, ShadowId> = HashMap::new();
    let mut done = 0;
    let mut items = export.shadows.iter().enumerate().peekable();
    while items.peek().is_some() || !waiting.is_empty() {
        while waiting.len() < WINDOW {
            let Some((i, item)) = items.next() else { break };
            let id = shadow_id(item)?;
            let state = item.state.as_object().filter(|s| !s.is_empty());
            let Some(state) = state else {
                // Nothing to write: a shadow that exists with no state.
                done += 1;
                continue;
            };
            let token = format!("import-{i}");
            let body = json!({ "state": state, "clientToken": token });
            session
                .publish(
                    &Topic::aws_request(&id, Operation::Update),
                    body.to_string().into_bytes(),
                )
                .await?;
            waiting.insert(token, id);
        }
        if waiting.is_empty() {
            continue;
        }
        let deadline = session.deadline();
        let p = session
            .next_publish(Some(deadline), "the answers to the import's updates")
            .await?;
        let Ok(reply) = serde_json::from_slice::<Value>(&p.payload) else {
            continue;
        };
        let Some(id) = reply
            .get("clientToken")
            .and_then(Value::as_str)
            .and_then(|t| waiting.remove(t))
        else {
            continue;
        };
        if p.topic == Topic::aws_reply(&id, Operation::Update, Reply::Rejected) {
            return Err(CliError::Rejected {
                id,
                code: reply.get("code").and_then(Value::as_u64).unwrap_or(0) as u16,
                message: reply
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            });
        }
        done += 1;
    }
    Ok((done, added, kept))
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn shadow_id(item: &ExportedShadow) -> Result<ShadowId, CliError> {
    let bad = |e: String| CliError::Usage(format!("a shadow of the export: {e}"));
    let thing = ThingName::new(&item.thing).map_err(|e| bad(e.to_string()))?;
    Ok(match &item.shadow {
        None => ShadowId::classic(thing),
        Some(s) => ShadowId::named(thing, ShadowName::new(s).map_err(|e| bad(e.to_string()))?),
    })
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A temporary directory for an online export's backup, removed when
/// dropped.
struct Scratch {
    dir: PathBuf,
    file: PathBuf,
}

impl Scratch {
    fn new() -> Result<Scratch, CliError> {
        let name = format!("shade-export-{}", super::client::token());
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir(&dir)?;
        let file = dir.join("export.backup");
        Ok(Scratch { dir, file })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
