//! The grammar, read by recursive descent, and the canonical form printed
//! back. The module docs of [`crate::query`] give the grammar; each
//! function here reads one of its rules.

use std::fmt;

use serde_json::Value;

use super::error::{QueryError, MAX_NESTING};
use super::field::FieldPath;
use super::lex::{is_key_char, is_quote, write_quoted, Cursor};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn from_text(text: &str) -> Option<Op> {
        Some(match text {
            "=" | "==" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// A parsed expression. `Or` and `And` hold two or more items: a chain
/// `a and b and c` is one node, so the tree is only as deep as the
/// nesting, which [`MAX_NESTING`] bounds. Parentheses leave no node of
/// their own; a parenthesised chain inside a chain of the same kind stays
/// a child, so printing and reading back give the same tree.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Exists(FieldPath),
    /// `value` is a string, number, bool or null.
    Compare {
        path: FieldPath,
        op: Op,
        value: Value,
    },
}

/// A parsed fleet query. [`Query::matches`] (in `eval`) tests a document;
/// `Display` prints the canonical form, which parses back to an equal
/// `Query`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub(super) expr: Expr,
}

impl Query {
    /// Parses `text`; see the module docs of [`crate::query`] for the
    /// grammar.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        let mut parser = Parser {
            cursor: Cursor::new(text)?,
            depth: 0,
        };
        let cursor = &mut parser.cursor;
        cursor.skip_whitespace();
        if cursor.at_end() {
            return Err(QueryError::new(0, "empty query"));
        }
        let expr = parser.or()?;
        let cursor = &mut parser.cursor;
        cursor.skip_whitespace();
        match cursor.peek() {
            None => Ok(Query { expr }),
            Some(')') => Err(QueryError::new(
                cursor.pos(),
                "unbalanced parentheses: this \")\" closes no \"(\"",
            )),
            Some(_) => Err(QueryError::new(
                cursor.pos(),
                format!(
                    "expected \"and\", \"or\" or the end, found {}",
                    cursor.found()
                ),
            )),
        }
    }
}

impl std::str::FromStr for Query {
    type Err = QueryError;

    fn from_str(text: &str) -> Result<Query, QueryError> {
        Query::parse(text)
    }
}

struct Parser {
    cursor: Cursor,
    /// Open `(` and `not` levels around the cursor.
    depth: usize,
}

impl Parser {
    /// `OR := AND ("or" AND)*`
    fn or(&mut self) -> Result<Expr, QueryError> {
        let first = self.and()?;
        let mut rest = Vec::new();
        while self.keyword("or") {
            rest.push(self.and()?);
        }
        Ok(chain(first, rest, Expr::Or))
    }

    /// `AND := NOT ("and" NOT)*`
    fn and(&mut self) -> Result<Expr, QueryError> {
        let first = self.not()?;
        let mut rest = Vec::new();
        while self.keyword("and") {
            rest.push(self.not()?);
        }
        Ok(chain(first, rest, Expr::And))
    }

    /// `NOT := "not" NOT | ATOM`
    fn not(&mut self) -> Result<Expr, QueryError> {
        self.cursor.skip_whitespace();
        if !self.cursor.at_keyword("not") {
            return self.atom();
        }
        self.enter()?;
        self.cursor.word();
        let inner = self.not()?;
        self.depth -= 1;
        Ok(Expr::Not(Box::new(inner)))
    }

    /// `ATOM := "(" EXPR ")" | "exists" "(" PATH ")" | PATH OP VALUE`,
    /// with the cursor past any whitespace.
    fn atom(&mut self) -> Result<Expr, QueryError> {
        let open = self.cursor.pos();
        if self.cursor.peek() == Some('(') {
            self.enter()?;
            self.cursor.eat('(');
            let inner = self.or()?;
            self.cursor.skip_whitespace();
            if !self.cursor.eat(')') {
                return Err(self.error(format!(
                    "unbalanced parentheses: expected \")\" to close the \"(\" at {open}, found {}",
                    self.cursor.found()
                )));
            }
            self.depth -= 1;
            return Ok(inner);
        }
        if self.cursor.at_keyword("exists") {
            return self.exists();
        }
        let path_starts = self
            .cursor
            .peek()
            .is_some_and(|c| is_quote(c) || is_key_char(c));
        if !path_starts || self.cursor.at_keyword("and") || self.cursor.at_keyword("or") {
            return Err(self.error(format!(
                "expected a path, \"(\", \"not\" or \"exists\", found {}",
                self.cursor.found()
            )));
        }
        let path = FieldPath::read(&mut self.cursor)?;
        self.cursor.skip_whitespace();
        let op = self.op(&path)?;
        self.cursor.skip_whitespace();
        let value = self.value(op)?;
        Ok(Expr::Compare { path, op, value })
    }

    /// `"exists" "(" PATH ")"`, the cursor on `exists`.
    fn exists(&mut self) -> Result<Expr, QueryError> {
        self.cursor.word();
        self.cursor.skip_whitespace();
        if !self.cursor.eat('(') {
            return Err(self.error(format!(
                "expected \"(\" after exists, found {}",
                self.cursor.found()
            )));
        }
        self.cursor.skip_whitespace();
        let path = FieldPath::read(&mut self.cursor)?;
        self.cursor.skip_whitespace();
        if !self.cursor.eat(')') {
            return Err(self.error(format!(
                "expected \")\" after the path in exists(, found {}",
                self.cursor.found()
            )));
        }
        Ok(Expr::Exists(path))
    }

    fn op(&mut self, path: &FieldPath) -> Result<Op, QueryError> {
        let at = self.cursor.pos();
        let text = self.cursor.operator();
        if text.is_empty() {
            return Err(self.error(format!(
                "expected an operator (=, !=, <, <=, >, >=) after {path}, found {}",
                self.cursor.found()
            )));
        }
        Op::from_text(&text).ok_or_else(|| {
            QueryError::new(
                at,
                format!("unknown operator \"{text}\" (use =, !=, <, <=, >, >=)"),
            )
        })
    }

    /// `VALUE`: a JSON number, quoted text, `true`, `false` or `null`.
    fn value(&mut self, op: Op) -> Result<Value, QueryError> {
        let at = self.cursor.pos();
        let expected = format!("expected a value after \"{}\"", op.as_str());
        match self.cursor.peek() {
            Some(c) if is_quote(c) => Ok(Value::String(self.cursor.quoted()?)),
            Some(c) if c == '-' || c.is_ascii_digit() => Ok(Value::Number(self.cursor.number()?)),
            Some(c) if is_key_char(c) => {
                let word = self.cursor.word();
                match word.to_ascii_lowercase().as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    "null" => Ok(Value::Null),
                    _ => Err(QueryError::new(
                        at,
                        format!("{expected}, found \"{word}\" (text needs quotes)"),
                    )),
                }
            }
            _ => Err(self.error(format!("{expected}, found {}", self.cursor.found()))),
        }
    }

    /// Moves past `keyword` (after any whitespace) if it is next.
    fn keyword(&mut self, keyword: &str) -> bool {
        self.cursor.skip_whitespace();
        let next = self.cursor.at_keyword(keyword);
        if next {
            self.cursor.word();
        }
        next
    }

    /// Opens a nesting level at the cursor, refused past [`MAX_NESTING`].
    fn enter(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error(format!(
                "nested deeper than {MAX_NESTING} levels (each \"(\" and \"not\" is one)"
            )));
        }
        Ok(())
    }

    fn error(&self, message: String) -> QueryError {
        QueryError::new(self.cursor.pos(), message)
    }
}

/// `first` alone, or a chain of it and `rest`.
fn chain(first: Expr, mut rest: Vec<Expr>, make: fn(Vec<Expr>) -> Expr) -> Expr {
    if rest.is_empty() {
        return first;
    }
    rest.insert(0, first);
    make(rest)
}

/// How tightly an expression binds: `or` 0, `and` 1, the rest 2.
fn level(expr: &Expr) -> u8 {
    match expr {
        Expr::Or(_) => 0,
        Expr::And(_) => 1,
        _ => 2,
    }
}

/// Writes `expr`, in parentheses if it binds less tightly than `min`.
/// A chain's items need to bind more tightly than the chain, so a
/// parenthesised chain of the same kind keeps its parentheses.
fn write_expr(f: &mut fmt::Formatter<'_>, expr: &Expr, min: u8) -> fmt::Result {
    if level(expr) < min {
        f.write_str("(")?;
        write_expr(f, expr, 0)?;
        return f.write_str(")");
    }
    match expr {
        Expr::Or(items) => write_chain(f, items, " or ", 1),
        Expr::And(items) => write_chain(f, items, " and ", 2),
        Expr::Not(inner) => {
            f.write_str("not ")?;
            write_expr(f, inner, 2)
        }
        Expr::Exists(path) => write!(f, "exists({path})"),
        Expr::Compare { path, op, value } => {
            write!(f, "{path} {} ", op.as_str())?;
            match value {
                Value::String(text) => write_quoted(f, text),
                other => write!(f, "{other}"),
            }
        }
    }
}

fn write_chain(f: &mut fmt::Formatter<'_>, items: &[Expr], sep: &str, min: u8) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write_expr(f, item, min)?;
    }
    Ok(())
}

/// The canonical form: lower-case keywords, one space around operators
/// and keywords, `=` for `==`, strings in double quotes, only the
/// parentheses the tree needs.
impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_expr(f, &self.expr, 0)
    }
}
