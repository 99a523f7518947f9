//! `shade count [--prefix P] [--where EXPR] [--by PATH] [--stats PATH]
//! [--json]`: how many shadows match, per value of a path, with the
//! statistics of a number (AWS's GetStatistics). Online it runs over the
//! broker's in-memory states; offline over `--data`.

use clap::Args;
use serde_json::Value;

use super::args::{CliError, Source};
use super::output::{Out, Paint, Table};
use super::query::{self, Reader};

pub const EXAMPLES: &str = "\
Examples:
  shade count
  shade count --where 'reported.fw < 2.0' --by desired.mode
  shade count --where 'connected = false' --stats reported.battery --json
  shade count --data ./shade-data --by reported.fw     # a stopped broker's data";

#[derive(Debug, Clone, Args)]
pub struct CountArgs {
    /// Only shadows whose thing name starts with P.
    #[arg(long, value_name = "P", default_value = "")]
    pub prefix: String,
    /// Only shadows this fleet query matches (see `shade list --help`).
    #[arg(long = "where", value_name = "EXPR")]
    pub filter: Option<String>,
    /// Count per distinct value of this path (e.g. reported.fw).
    #[arg(long, value_name = "PATH")]
    pub by: Option<String>,
    /// count, min, max, avg and sum of this numeric path.
    #[arg(long, value_name = "PATH")]
    pub stats: Option<String>,
    /// Print the result as JSON: {"count", "by", "stats"}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub source: Source,
}

pub async fn run(args: CountArgs) -> Result<(), CliError> {
    let mut reader = Reader::open(&args.source).await?;
    let result = reader
        .query(query::count_request(
            &args.prefix,
            args.filter.as_deref(),
            args.by.as_deref(),
            args.stats.as_deref(),
        ))
        .await;
    reader.close().await;
    let result = result?;
    let mut out = Out::new();
    if args.json {
        out.line(&result.to_string())?;
        return out.flush();
    }
    let count = result.get("count").and_then(Value::as_u64).unwrap_or(0);
    out.line(&format!(
        "{count} shadow{}",
        if count == 1 { "" } else { "s" }
    ))?;
    if let Some(Value::Object(by)) = result.get("by") {
        let mut rows: Vec<(u64, String)> = by
            .iter()
            .map(|(value, n)| (n.as_u64().unwrap_or(0), value.clone()))
            .collect();
        // Largest groups first, then by value.
        rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        out.line(&format!("by {}:", args.by.as_deref().unwrap_or("value")))?;
        let mut table = Table::new(&[("VALUE", Paint::Bold), ("COUNT", Paint::Plain)]);
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .map(|(n, value)| vec![value, n.to_string()])
            .collect();
        table.print(&mut out, &rows)?;
    }
    if let Some(stats) = result.get("stats").filter(|s| s.is_object()) {
        let field = |k: &str| match stats.get(k) {
            Some(Value::Null) | None => "-".to_owned(),
            Some(v) => v.to_string(),
        };
        out.line(&format!(
            "{}: count {}, min {}, max {}, avg {}, sum {}",
            args.stats.as_deref().unwrap_or("stats"),
            field("count"),
            field("min"),
            field("max"),
            field("avg"),
            field("sum"),
        ))?;
    }
    out.flush()
}
