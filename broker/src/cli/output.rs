//! How the command line prints: colour only on a terminal, times in local
//! ISO 8601, aligned tables that stream, and changes in the `path=value`
//! form that `shade-agent report` takes.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};

use serde_json::Value;

use super::args::CliError;

/// ANSI styles, or nothing when stdout is not a terminal (or `NO_COLOR` is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paint {
    Plain,
    Bold,
    Dim,
    Green,
    Red,
    Yellow,
    Cyan,
}

impl Paint {
    fn code(self) -> &'static str {
        match self {
            Paint::Plain => "",
            Paint::Bold => "\x1b[1m",
            Paint::Dim => "\x1b[2m",
            Paint::Green => "\x1b[32m",
            Paint::Red => "\x1b[31m",
            Paint::Yellow => "\x1b[33m",
            Paint::Cyan => "\x1b[36m",
        }
    }
}

/// Standard output, line by line, with colour when it is a terminal.
#[derive(Debug)]
pub struct Out {
    stdout: io::Stdout,
    color: bool,
}

impl Default for Out {
    fn default() -> Self {
        Self::new()
    }
}

impl Out {
    pub fn new() -> Self {
        let stdout = io::stdout();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        let color = stdout.is_terminal() && !no_color && !dumb;
        Self { stdout, color }
    }

    /// Standard output without colour, whatever it is.
    pub fn plain() -> Self {
        Self {
            stdout: io::stdout(),
            color: false,
        }
    }

    /// `text` in `paint`, when colour is on.
    pub fn paint(&self, paint: Paint, text: &str) -> String {
        if self.color && paint != Paint::Plain {
            format!("{}{text}\x1b[0m", paint.code())
        } else {
            text.to_owned()
        }
    }

    /// Writes `text` as it is, without a newline.
    pub fn write(&mut self, text: &str) -> Result<(), CliError> {
        self.stdout.write_all(text.as_bytes())?;
        Ok(())
    }

    /// Writes one line.
    pub fn line(&mut self, text: &str) -> Result<(), CliError> {
        writeln!(self.stdout, "{text}")?;
        Ok(())
    }

    /// Writes one line and flushes it, for a reader waiting on a pipe.
    pub fn line_now(&mut self, text: &str) -> Result<(), CliError> {
        self.line(text)?;
        self.flush()
    }

    pub fn flush(&mut self) -> Result<(), CliError> {
        self.stdout.flush()?;
        Ok(())
    }
}

/// Milliseconds since the epoch as local ISO 8601: `2026-11-26T12:03:04+01:00`.
pub fn local_time(ms: u64) -> String {
    let Ok(ms) = i64::try_from(ms) else {
        return ms.to_string();
    };
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        Err(_) => ms.to_string(),
    }
}

/// Pretty JSON, two spaces per level.
pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Every leaf of `v` by dotted path below `prefix`; an empty object is a leaf
/// only at the top (so `{}` flattens to nothing).
pub fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match child {
                    Value::Object(inner) if inner.is_empty() => {
                        out.insert(path, child.clone());
                    }
                    _ => flatten(&path, child, out),
                }
            }
        }
        // A bare scalar (or `null` for "no document") has no path.
        _ if prefix.is_empty() => {}
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

/// A change as `path=value` words: `desired.color="red" reported.level=3`,
/// `null` for a deleted leaf. `change` is an update's `state` (or the
/// dotted `{"desired":{"a.b":v}}` of a sync), so null stays null.
pub fn change_words(change: &Value) -> String {
    let mut leaves = BTreeMap::new();
    flatten("", change, &mut leaves);
    leaves
        .iter()
        .map(|(path, v)| format!("{path}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What differs between two documents' `state`, as `path=value` words
/// (`null` for a leaf that went away).
pub fn diff_words(previous: &Value, current: &Value) -> String {
    let mut before = BTreeMap::new();
    let mut after = BTreeMap::new();
    flatten("", previous, &mut before);
    flatten("", current, &mut after);
    let mut words = Vec::new();
    for (path, v) in &after {
        if before.get(path) != Some(v) {
            words.push(format!("{path}={v}"));
        }
    }
    for path in before.keys() {
        if !after.contains_key(path) {
            words.push(format!("{path}=null"));
        }
    }
    words.sort();
    words.join(" ")
}

/// A table printed as it streams in: column widths come from the first
/// batch and grow when a later row is wider, so memory stays one batch.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    paints: Vec<Paint>,
    widths: Vec<usize>,
    started: bool,
}

impl Table {
    /// Columns by header and how their cells are painted.
    pub fn new(columns: &[(&'static str, Paint)]) -> Self {
        Self {
            headers: columns.iter().map(|(h, _)| *h).collect(),
            paints: columns.iter().map(|(_, p)| *p).collect(),
            widths: columns.iter().map(|(h, _)| h.chars().count()).collect(),
            started: false,
        }
    }

    pub fn columns(&self) -> usize {
        self.headers.len()
    }

    /// Prints `rows` (each with one cell per column), and the header first.
    pub fn print(&mut self, out: &mut Out, rows: &[Vec<String>]) -> Result<(), CliError> {
        for row in rows {
            for (w, cell) in self.widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        if !self.started {
            self.started = true;
            let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
            let line = self.format(out, &header, true);
            out.line(&line)?;
        }
        for row in rows {
            let line = self.format(out, row, false);
            out.line(&line)?;
        }
        Ok(())
    }

    fn format(&self, out: &Out, row: &[String], header: bool) -> String {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let paint = if header {
                Paint::Bold
            } else {
                self.paints.get(i).copied().unwrap_or(Paint::Plain)
            };
            line.push_str(&out.paint(paint, cell));
            if i < last {
                let pad = self
                    .widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn local_times_are_iso_8601_with_an_offset() {
        let t = local_time(1_764_158_584_000);
        // 2025-11-26T12:03:04+01:00 in Paris, ...Z-free in every zone.
        assert_eq!(t.len(), "2025-11-26T12:03:04+01:00".len(), "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], "T");
        assert!(matches!(&t[19..20], "+" | "-"), "{t}");
    }

    #[test]
    fn changes_read_as_path_value_words() {
        let change = json!({"desired": {"light": {"level": 80, "on": true}, "mode": null}});
        assert_eq!(
            change_words(&change),
            "desired.light.level=80 desired.light.on=true desired.mode=null"
        );
        assert_eq!(change_words(&json!({"desired": null})), "desired=null");
        assert_eq!(
            change_words(&json!({"reported": {"a.b": "x"}})),
            "reported.a.b=\"x\""
        );
    }

    #[test]
    fn diffs_show_set_and_removed_leaves() {
        let before =
            json!({"desired": {"color": "red", "mode": "eco"}, "reported": {"color": "red"}});
        let after = json!({"desired": {"color": "blue"}, "reported": {"color": "red"}});
        assert_eq!(
            diff_words(&before, &after),
            "desired.color=\"blue\" desired.mode=null"
        );
        assert_eq!(
            diff_words(&Value::Null, &json!({"desired": {"x": 1}})),
            "desired.x=1"
        );
    }
}
