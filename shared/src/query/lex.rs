//! The characters of a query: words, quoted text, numbers, operators.
//!
//! The grammar is small enough to read characters directly rather than
//! through a token stream, and it needs context anyway: after an operator
//! `2.0` is a number, before one `2.0` would be a path of keys `2` and `0`.
//! Positions count characters, as [`QueryError::position`] does.

use std::fmt;

use serde_json::Number;

use super::error::{QueryError, MAX_QUERY_BYTES};

/// The words that are grammar, not keys, when they open an atom: a path
/// whose first key is one of them must quote it (`"not".x = 1`).
pub(super) const KEYWORDS: [&str; 4] = ["and", "or", "not", "exists"];

/// A character of an unquoted key: `[A-Za-z0-9_:$-]`.
pub(super) fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '$' | '-')
}

/// Whether `c` opens a quoted key or string.
pub(super) fn is_quote(c: char) -> bool {
    c == '"' || c == '\''
}

/// A position in a query's characters.
#[derive(Debug)]
pub(super) struct Cursor {
    chars: Vec<char>,
    pos: usize,
}

impl Cursor {
    /// A cursor at the start of `text`, refused past [`MAX_QUERY_BYTES`].
    pub(super) fn new(text: &str) -> Result<Cursor, QueryError> {
        if text.len() > MAX_QUERY_BYTES {
            return Err(QueryError::new(
                0,
                format!(
                    "the query is {} bytes, more than the {MAX_QUERY_BYTES} allowed",
                    text.len()
                ),
            ));
        }
        Ok(Cursor {
            chars: text.chars().collect(),
            pos: 0,
        })
    }

    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    /// Moves past `c` if it is next.
    pub(super) fn eat(&mut self, c: char) -> bool {
        let next = self.peek() == Some(c);
        if next {
            self.pos += 1;
        }
        next
    }

    pub(super) fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// The run of key characters at the cursor (empty if there is none).
    fn word_here(&self) -> &[char] {
        let rest = self.chars.get(self.pos..).unwrap_or(&[]);
        let len = rest.iter().take_while(|&&c| is_key_char(c)).count();
        rest.get(..len).unwrap_or(&[])
    }

    /// Whether the word at the cursor is `keyword`, in any case.
    pub(super) fn at_keyword(&self, keyword: &str) -> bool {
        let word = self.word_here();
        word.len() == keyword.len()
            && word
                .iter()
                .zip(keyword.chars())
                .all(|(a, b)| a.eq_ignore_ascii_case(&b))
    }

    /// Moves past the word at the cursor and returns it.
    pub(super) fn word(&mut self) -> String {
        let word: String = self.word_here().iter().collect();
        self.pos += word.chars().count();
        word
    }

    /// What is at the cursor, for an error message: `the end`, a word in
    /// quotes, or one character in quotes.
    pub(super) fn found(&self) -> String {
        let word = self.word_here();
        match self.peek() {
            None => "the end".to_owned(),
            Some(_) if !word.is_empty() => format!("\"{}\"", word.iter().collect::<String>()),
            Some(c) => format!("\"{c}\""),
        }
    }

    /// Reads the quoted text at the cursor, which is on its opening quote
    /// (`"` or `'`). The escapes are `\"`, `\'` and `\\`; anything else
    /// after a backslash is refused, leaving room for `\n` or `\u` later.
    pub(super) fn quoted(&mut self) -> Result<String, QueryError> {
        let start = self.pos;
        let Some(quote) = self.peek() else {
            return Err(QueryError::new(start, "expected a quote, found the end"));
        };
        self.pos += 1;
        let mut text = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(QueryError::new(
                    start,
                    format!("unterminated string: no closing {quote}"),
                ));
            };
            self.pos += 1;
            if c == quote {
                return Ok(text);
            }
            if c != '\\' {
                text.push(c);
                continue;
            }
            match self.peek() {
                Some(e @ ('"' | '\'' | '\\')) => {
                    text.push(e);
                    self.pos += 1;
                }
                Some(e) => {
                    return Err(QueryError::new(
                        self.pos - 1,
                        format!("unknown escape \"\\{e}\" (only \\\", \\' and \\\\)"),
                    ))
                }
                None => {
                    return Err(QueryError::new(
                        start,
                        format!("unterminated string: no closing {quote}"),
                    ))
                }
            }
        }
    }

    /// Reads the number at the cursor, which is on a `-` or a digit. The
    /// number runs to the next character that cannot be part of a number or
    /// a word, so `1and` and `2.0.1` are refused whole rather than read as
    /// a number and then something else.
    pub(super) fn number(&mut self) -> Result<Number, QueryError> {
        let start = self.pos;
        let rest = self.chars.get(self.pos..).unwrap_or(&[]);
        let text: String = rest
            .iter()
            .take_while(|&&c| is_key_char(c) || c == '.' || c == '+')
            .collect();
        self.pos += text.chars().count();
        if !is_json_number(&text) {
            return Err(QueryError::new(
                start,
                format!("bad number \"{text}\" (numbers are written as in JSON: -12, 3.5, 1e-3)"),
            ));
        }
        json_number(&text).ok_or_else(|| {
            QueryError::new(
                start,
                format!("bad number \"{text}\": out of range for a 64-bit float"),
            )
        })
    }

    /// Reads the run of operator characters (`=`, `!`, `<`, `>`, `~`) at
    /// the cursor, so `=>` or `<>` is named whole as an unknown operator.
    pub(super) fn operator(&mut self) -> String {
        let rest = self.chars.get(self.pos..).unwrap_or(&[]);
        let text: String = rest
            .iter()
            .take_while(|&&c| matches!(c, '=' | '!' | '<' | '>' | '~'))
            .collect();
        self.pos += text.chars().count();
        text
    }
}

/// Whether `text` is a number in JSON's grammar:
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let from = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > from
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// The number `text` (in JSON's grammar) stands for, held as serde_json
/// holds one: an integer as u64 or i64 if it fits, else an f64; `None`
/// past f64's range. The f64 is read by `str::parse`, which rounds
/// correctly: serde_json's own reader, without its `float_roundtrip`
/// feature, can miss by a bit, and a printed query would not read back.
fn json_number(text: &str) -> Option<Number> {
    let integral = !text.contains(['.', 'e', 'E']);
    if integral {
        if let Ok(n) = text.parse::<u64>() {
            return Some(Number::from(n));
        }
        if let Ok(n) = text.parse::<i64>() {
            return Some(Number::from(n));
        }
    }
    Number::from_f64(text.parse::<f64>().ok()?)
}

/// Writes `text` double-quoted, escaping `"` and `\`: what
/// [`Cursor::quoted`] reads back to `text`.
pub(super) fn write_quoted(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in text.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}
