//! `shade list [--prefix P] [--json]`: every shadow, in key order.
//!
//! Online it walks the pages of the native `list` request; offline it walks
//! the store. Either way it holds one page at a time and prints as it goes:
//! `--json` streams the array's brackets and elements.

use clap::Args;

use super::client::Session;
use super::ops::{self, ListItem, ListPage, LIST_PAGE};
use super::output::{Out, Paint, Table};
use super::{CliError, Source};

pub const EXAMPLES: &str = "\
Examples:
  shade list
  shade list --prefix lamp- --json
  shade list --data ./shade-data              # a stopped broker's data";

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only shadows whose thing name (or `thing/shadow`) starts with P.
    #[arg(long, value_name = "P", default_value = "")]
    pub prefix: String,
    /// Print a JSON array of {"thing","shadow","version"}.
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
    table: Table,
    printed: usize,
}

impl Printer {
    fn new(json: bool) -> Self {
        let table = Table::new(&[("THING", Paint::Bold), ("SHADOW", Paint::Plain), ("VERSION", Paint::Plain)]);
        Self { out: Out::new(), json, table, printed: 0 }
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
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|i| vec![i.thing.clone(), i.shadow.clone().unwrap_or_else(|| "-".into()), i.version.to_string()])
            .collect();
        self.printed += rows.len();
        self.table.print(&mut self.out, &rows)
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

pub async fn run(args: ListArgs) -> Result<(), CliError> {
    let mut printer = Printer::new(args.json);
    match args.source.offline()? {
        Some(offline) => {
            let mut page = Vec::with_capacity(LIST_PAGE);
            let mut failed = None;
            offline.store.for_each(&args.prefix, |id, stored| {
                if failed.is_some() {
                    return;
                }
                if let Some(item) = ops::list_item(&id, &stored) {
                    page.push(item);
                }
                if page.len() == LIST_PAGE {
                    failed = printer.page(&page).err();
                    page.clear();
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            printer.page(&page)?;
        }
        None => {
            let mut session = Session::connect(&args.source.online).await?;
            let mut after: Option<String> = None;
            loop {
                let result = session.ops(ops::list_request(&args.prefix, after.as_deref(), LIST_PAGE)).await?;
                let page: ListPage = serde_json::from_value(result)
                    .map_err(|e| session.bad_reply(format!("a list page: {e}")))?;
                printer.page(&page.items)?;
                match page.next {
                    None => break,
                    Some(next) if after.as_ref() == Some(&next) || page.items.is_empty() => {
                        return Err(session.bad_reply(format!("the list does not advance past {next:?}")));
                    }
                    Some(next) => after = Some(next),
                }
            }
            session.close().await;
        }
    }
    printer.finish()
}
