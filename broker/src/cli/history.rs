//! `shade history THING [--shadow NAME] [--limit N] [--json]`: the newest
//! accepted changes of one shadow, oldest first, with who made them.

use clap::Args;
use serde_json::Value;
use shade_shared::{ShadowName, ThingName};

use super::args::{shadow_id, CliError, Source};
use super::output::{change_words, local_time, pretty, Out, Paint, Table};
use super::query::{self, Reader};
use crate::store::HistoryEntry;

pub const EXAMPLES: &str = "\
Examples:
  shade history lamp-1
  shade history lamp-1 --shadow config --limit 5 --json
  shade history lamp-1 --data ./shade-data    # a stopped broker's data";

#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// The thing whose shadow's history to show.
    pub thing: ThingName,
    /// A named shadow (default: the thing's classic shadow).
    #[arg(long, value_name = "NAME")]
    pub shadow: Option<ShadowName>,
    /// How many of the newest changes to show.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// Print a JSON array of changes: time (ms), author, replica, version, kind, change.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub source: Source,
}

pub async fn run(args: HistoryArgs) -> Result<(), CliError> {
    let id = shadow_id(args.thing, args.shadow);
    let limit = args.limit as usize;
    let mut reader = Reader::open(&args.source).await?;
    let result = reader.query(query::history_request(&id, limit)).await?;
    let entries: Vec<HistoryEntry> = reader.decode("a history", result)?;
    reader.close().await;
    let mut out = Out::new();
    if args.json {
        let v = serde_json::to_value(&entries).map_err(std::io::Error::other)?;
        out.line(&pretty(&v))?;
        return out.flush();
    }
    if entries.is_empty() {
        eprintln!("shade: no history for {id}");
        return Ok(());
    }
    let mut table = Table::new(&[
        ("TIME", Paint::Dim),
        ("VERSION", Paint::Bold),
        ("KIND", Paint::Plain),
        ("AUTHOR", Paint::Plain),
        ("REPLICA", Paint::Dim),
        ("CHANGE", Paint::Plain),
    ]);
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let change = match (&e.change, e.kind.as_str()) {
                (Value::Null, "delete") => "deleted".to_owned(),
                (change, _) => change_words(change),
            };
            vec![
                local_time(e.time),
                e.version.to_string(),
                e.kind.clone(),
                e.author.clone(),
                e.replica.clone(),
                change,
            ]
        })
        .collect();
    table.print(&mut out, &rows)?;
    out.flush()
}
