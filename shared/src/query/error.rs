//! What a query, or a path for `--by` and `--stats`, got wrong, and where.
//!
//! One error type for the whole language: the text reaches an operator
//! (a CLI message, an HTTP 400 body), so what matters is the place and a
//! sentence saying what was expected there, not a variant to match on.

/// The longest query accepted, in bytes. A query arrives in a URL or a
/// command line; anything longer is a mistake or an attack, and the bound
/// also caps the parse's work.
pub const MAX_QUERY_BYTES: usize = 4096;

/// The deepest nesting accepted: each `(` and each `not` opens a level.
/// The parser and the evaluator recurse once per level, so this bound is
/// what keeps a hostile query from overflowing the stack.
pub const MAX_NESTING: usize = 32;

/// A query or path that does not parse.
///
/// Displayed as `at 14: expected a value after "<", found the end`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at {position}: {message}")]
pub struct QueryError {
    /// Where the mistake is: the number of characters (not bytes) before
    /// it, from 0, so an operator can count to it in what they typed.
    pub position: usize,
    /// What was expected there and what was found.
    pub message: String,
}

impl QueryError {
    pub(super) fn new(position: usize, message: impl Into<String>) -> QueryError {
        QueryError {
            position,
            message: message.into(),
        }
    }
}
