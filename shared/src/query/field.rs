//! A dotted path into a shadow's document: `reported.fw`, `connected`,
//! `desired."my key".level`.
//!
//! The keys are object keys, as in [`crate::path`]: a path never walks
//! into an array, since shade keeps an array whole as one leaf's value.

use std::fmt;

use serde_json::Value;

use super::error::QueryError;
use super::lex::{is_key_char, is_quote, write_quoted, Cursor, KEYWORDS};

/// Object keys from the document's root, outermost first; never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath {
    pub(super) keys: Vec<String>,
}

impl FieldPath {
    /// Reads a path on its own, as `--by` and `--stats` give one; spaces
    /// around it are ignored.
    pub fn parse(text: &str) -> Result<FieldPath, QueryError> {
        let mut cursor = Cursor::new(text)?;
        cursor.skip_whitespace();
        if cursor.at_end() {
            return Err(QueryError::new(0, "empty path"));
        }
        let path = FieldPath::read(&mut cursor)?;
        cursor.skip_whitespace();
        if !cursor.at_end() {
            return Err(QueryError::new(
                cursor.pos(),
                format!("expected the end of the path, found {}", cursor.found()),
            ));
        }
        Ok(path)
    }

    /// The keys, outermost first.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The value at this path in `doc`, if every key on the way is there
    /// (a `null` value is there).
    pub fn get<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        self.keys
            .iter()
            .try_fold(doc, |value, key| value.as_object()?.get(key))
    }

    /// Reads the path at the cursor: keys, bare or quoted, joined by `.`
    /// with no space inside (a space ends the path).
    pub(super) fn read(cursor: &mut Cursor) -> Result<FieldPath, QueryError> {
        let mut keys = Vec::new();
        loop {
            match cursor.peek() {
                Some(c) if is_quote(c) => keys.push(cursor.quoted()?),
                Some(c) if is_key_char(c) => keys.push(cursor.word()),
                _ if keys.is_empty() => {
                    return Err(QueryError::new(
                        cursor.pos(),
                        format!("expected a path, found {}", cursor.found()),
                    ))
                }
                _ => {
                    return Err(QueryError::new(
                        cursor.pos(),
                        format!("expected a key after \".\", found {}", cursor.found()),
                    ))
                }
            }
            if !cursor.eat('.') {
                return Ok(FieldPath { keys });
            }
        }
    }
}

impl std::str::FromStr for FieldPath {
    type Err = QueryError;

    fn from_str(text: &str) -> Result<FieldPath, QueryError> {
        FieldPath::parse(text)
    }
}

/// Keys bare where they can be, else double-quoted. A first key that is a
/// keyword is quoted too, so the path reads back inside a query.
impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.keys.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            let keyword = i == 0 && KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(key));
            if key.is_empty() || keyword || !key.chars().all(is_key_char) {
                write_quoted(f, key)?;
            } else {
                f.write_str(key)?;
            }
        }
        Ok(())
    }
}
