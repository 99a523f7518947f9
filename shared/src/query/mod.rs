//! The fleet query language: which shadows to list or count, and how to
//! group and summarise them.
//!
//! Operators write `shade list --where 'reported.fw < 2.0 and connected = false'`,
//! `shade count --where EXPR --by reported.fw --stats reported.temp`, or
//! `GET /count?where=&by=&stats=`. Each shadow is tested as one JSON
//! document:
//!
//! ```json
//! {"thing": "lamp-1", "shadow": null, "version": 3, "connected": true,
//!  "lastSeen": 1796319975000, "desired": {}, "reported": {}, "delta": {}}
//! ```
//!
//! (`shadow` is null for a thing's classic shadow, else the shadow's name.)
//!
//! # Syntax
//!
//! ```text
//! EXPR  := OR
//! OR    := AND ("or" AND)*
//! AND   := NOT ("and" NOT)*
//! NOT   := "not" NOT | ATOM
//! ATOM  := "(" EXPR ")" | "exists" "(" PATH ")" | PATH OP VALUE
//! PATH  := KEY ("." KEY)*         no spaces inside a path
//! KEY   := [A-Za-z0-9_:$-]+ | a quoted string
//! OP    := "=" | "==" | "!=" | "<" | "<=" | ">" | ">="
//! VALUE := a JSON number | a quoted string | "true" | "false" | "null"
//! ```
//!
//! - `not` binds tighter than `and`, `and` tighter than `or`:
//!   `a = 1 or b = 1 and c = 1` is `a = 1 or (b = 1 and c = 1)`.
//! - Keywords (`and`, `or`, `not`, `exists`, `true`, `false`, `null`) are
//!   read in any case. The first four open no path: a first key named
//!   so is quoted, `"not".x = 1` (`reported.not` needs no quotes).
//! - A path starts at the document's root: `connected`, `thing`,
//!   `reported.fw`, `desired.light.level`, `reported."my key"`. It walks
//!   object keys only, never into an array (shade keeps an array whole as
//!   one value).
//! - Strings and quoted keys take double or single quotes; the escapes
//!   are `\"`, `\'` and `\\`, and any other character stands for itself.
//! - Numbers are JSON's: `2`, `-1`, `2.5`, `1e-3`; `01`, `.5` and `1.`
//!   are refused, and so are `2.0x` and `1and`: a number runs on through
//!   key characters, `.` and `+`, and must be a number as a whole.
//! - Whitespace may go anywhere between tokens.
//! - A query is at most [`MAX_QUERY_BYTES`] bytes and nests `(` and
//!   `not` at most [`MAX_NESTING`] deep.
//!
//! A mistake is reported with the character offset where it is, from 0:
//! `at 14: expected a value after "<", found the end`.
//!
//! # Meaning
//!
//! - A comparison whose path the document lacks is false, whatever the
//!   operator: `desired.mode != "eco"` matches shadows with another mode,
//!   not those without one (`not exists(desired.mode)` finds those).
//! - `exists(p)` is true when the path is there, even holding `null`.
//! - `=` and `!=` compare JSON values, numbers by value (`2` = `2.0`), so
//!   values of different types are unequal: `!=` between them is true.
//! - `<`, `<=`, `>`, `>=` order two numbers (as f64) or two strings (by
//!   their UTF-8 bytes); between any other values they are false.
//! - `Display` prints a canonical form that parses back to the same
//!   [`Query`].
//!
//! ```
//! use serde_json::json;
//! use shade_shared::query::{FieldPath, Query, Tally};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let q = Query::parse("reported.fw < 2.0 AND NOT (connected == true)")?;
//! assert_eq!(q.to_string(), "reported.fw < 2.0 and not connected = true");
//!
//! let old = json!({"thing": "lamp-1", "connected": false, "reported": {"fw": 1.9, "temp": 20}});
//! let new = json!({"thing": "lamp-1", "connected": false, "reported": {"fw": 2.1, "temp": 21}});
//! assert!(q.matches(&old) && !q.matches(&new));
//!
//! let err = Query::parse("reported.fw < ").unwrap_err();
//! assert_eq!(err.to_string(), r#"at 14: expected a value after "<", found the end"#);
//!
//! // A live count: each change is remove(old), add(new).
//! let mut tally = Tally::new(None, Some(FieldPath::parse("reported.fw")?), Some(FieldPath::parse("reported.temp")?));
//! tally.add(&old);
//! tally.remove(&old);
//! tally.add(&new);
//! assert_eq!(tally.result(), json!({
//!     "count": 1,
//!     "by": {"2.1": 1},
//!     "stats": {"count": 1, "min": 21, "max": 21, "sum": 21, "avg": 21},
//! }));
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `error`: [`QueryError`] and the size limits.
//! - `lex`: reading characters: words, quoted text, numbers, operators.
//! - `field`: [`FieldPath`], a dotted path, read, printed and looked up.
//! - `parse`: [`Query`]: the grammar and the canonical form.
//! - `eval`: [`Query::matches`].
//! - `sum`: an exact running sum of f64s.
//! - `tally`: [`Tally`], counts, groups and stats kept change by change.

mod error;
mod lex;

mod field;

mod parse;

mod eval;
mod sum;

mod tally;

pub use error::{QueryError, MAX_NESTING, MAX_QUERY_BYTES};
pub use field::FieldPath;
pub use parse::Query;
pub use tally::Tally;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
