//! `shade conflicts [THING] [--json]`: the open conflicts of every shadow
//! (or of one thing's shadows): concurrent writes to one path, the value
//! the section's policy kept and the one it set aside.

use clap::Args;
use shade_shared::ThingName;

use super::args::{CliError, Source};
use super::output::{local_time, pretty, Out, Paint, Table};
use super::query::{self, ConflictRecord, Reader};

pub const EXAMPLES: &str = "\
Examples:
  shade conflicts
  shade conflicts lamp-1 --json
  shade conflicts --data ./shade-data         # a stopped broker's data";

#[derive(Debug, Clone, Args)]
pub struct ConflictsArgs {
    /// Only this thing's shadows.
    pub thing: Option<ThingName>,
    /// Print a JSON array of {"thing","shadow","section","path","kept","lost"}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub source: Source,
}

pub async fn run(args: ConflictsArgs) -> Result<(), CliError> {
    let thing = args.thing.as_ref().map(ThingName::as_str);
    let mut reader = Reader::open(&args.source).await?;
    let result = reader.query(query::conflicts_request(thing)).await?;
    let records: Vec<ConflictRecord> = reader.decode("a conflict list", result)?;
    reader.close().await;
    let mut out = Out::new();
    if args.json {
        let v = serde_json::to_value(&records).map_err(std::io::Error::other)?;
        out.line(&pretty(&v))?;
        return out.flush();
    }
    if records.is_empty() {
        eprintln!("shade: no conflicts");
        return Ok(());
    }
    let mut table = Table::new(&[
        ("THING", Paint::Bold),
        ("SHADOW", Paint::Plain),
        ("PATH", Paint::Plain),
        ("KEPT", Paint::Green),
        ("BY", Paint::Dim),
        ("AT", Paint::Dim),
        ("LOST", Paint::Red),
        ("BY", Paint::Dim),
        ("AT", Paint::Dim),
    ]);
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.thing.clone(),
                r.shadow.clone().unwrap_or_else(|| "-".into()),
                format!("{}.{}", r.section.as_str(), r.path),
                r.kept.value.to_string(),
                r.kept.replica.to_string(),
                local_time(r.kept.ts),
                r.lost.value.to_string(),
                r.lost.replica.to_string(),
                local_time(r.lost.ts),
            ]
        })
        .collect();
    table.print(&mut out, &rows)?;
    out.flush()
}
