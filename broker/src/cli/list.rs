//! `shade list [--prefix P] [--where EXPR] [--json]`: every shadow (or
//! those a fleet query matches), in key order.
//!
//! It walks the pages of the `list` query, online or over `--data`, holding
//! one page at a time and printing as it goes: `--json` streams the array's
//! brackets and elements.

use clap::Args;

use super::args::{CliError, Source};
use super::output::{local_time, Out, Paint, Table};
use super::query::{self, ListItem, ListPage, Reader, LIST_PAGE};

pub const EXAMPLES: &str = "\
Examples:
  shade list
  shade list --prefix lamp- --json
  shade list --where 'reported.fw < 2.0 and desired.mode = \"eco\"'
  shade list --where 'not exists(reported.temp)'
  shade list --data ./shade-data              # a stopped broker's data";

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only shadows whose thing name (or `thing/shadow`) starts with P.
    #[arg(long, value_name = "P", default_value = "")]
    pub prefix: String,
    /// Only shadows this fleet query matches: comparisons of state paths
    /// (`reported.fw < 2.0`, `desired.mode = "eco"`, `connected = false`,
    /// `exists(reported.temp)`) joined by and, or, not and parentheses.
    #[arg(long = "where", value_name = "EXPR")]
    pub filter: Option<String>,
    /// Print a JSON array of {"thing","shadow","version","connected","lastSeen"}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub source: Source,
}

/// Prints pages of items as they arrive.
#[derive(Debug)]
struct Printer {
    out: Out,
    json: bool,
    /// Made with the first rows: a PRESENCE column only when some thing
    /// of theirs was ever seen connected.
    table: Option<Table>,
    printed: usize,
}

impl Printer {
    fn new(json: bool) -> Self {
        Self {
            out: Out::new(),
            json,
            table: None,
            printed: 0,
        }
    }

    fn page(&mut self, items: &[ListItem]) -> Result<(), CliError> {
        if self.json {
            for item in items {
                let open = if self.printed == 0 { "[\n" } else { ",\n" };
                let element = serde_json::to_string(item).map_err(std::io::Error::other)?;
                // The newline after an element comes with the next one (or
                // the closing bracket), which knows whether a comma is due.
                self.out.write(&format!("{open}  {element}"))?;
                self.printed += 1;
            }
            return Ok(());
        }
        if items.is_empty() {
            return Ok(());
        }
        let table = self.table.get_or_insert_with(|| {
            let mut columns = vec![
                ("THING", Paint::Bold),
                ("SHADOW", Paint::Plain),
                ("VERSION", Paint::Plain),
            ];
            if items.iter().any(|i| i.connected.is_some()) {
                columns.push(("PRESENCE", Paint::Plain));
            }
            Table::new(&columns)
        });
        let with_presence = table.columns() > 3;
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|i| {
                let mut row = vec![
                    i.thing.clone(),
                    i.shadow.clone().unwrap_or_else(|| "-".into()),
                    i.version.to_string(),
                ];
                if with_presence {
                    row.push(presence_cell(i));
                }
                row
            })
            .collect();
        self.printed += rows.len();
        table.print(&mut self.out, &rows)
    }

    fn finish(mut self) -> Result<(), CliError> {
        if self.json {
            let close = if self.printed == 0 { "[]" } else { "\n]" };
            self.out.line(close)?;
        } else if self.printed == 0 {
            eprintln!("shade: no shadows");
        }
        self.out.flush()
    }
}

/// `online since T`, `offline, seen T`, or `-` for a thing never seen.
fn presence_cell(item: &ListItem) -> String {
    match (item.connected, item.last_seen) {
        (Some(true), Some(t)) => format!("online since {}", local_time(t)),
        (Some(false), Some(t)) => format!("offline, seen {}", local_time(t)),
        (Some(true), None) => "online".to_owned(),
        _ => "-".to_owned(),
    }
}

pub async fn run(args: ListArgs) -> Result<(), CliError> {
    let mut printer = Printer::new(args.json);
    let mut reader = Reader::open(&args.source).await?;
    let mut after: Option<String> = None;
    loop {
        let result = reader
            .query(query::list_request(
                &args.prefix,
                args.filter.as_deref(),
                after.as_deref(),
                LIST_PAGE,
            ))
            .await?;
        let page: ListPage = reader.decode("a list page", result)?;
        printer.page(&page.items)?;
        match page.next {
            None => break,
            Some(next) if after.as_ref() == Some(&next) => {
                return Err(CliError::Refused(format!(
                    "the list does not advance past {next:?}"
                )));
            }
            Some(next) => after = Some(next),
        }
    }
    reader.close().await;
    printer.finish()
}
