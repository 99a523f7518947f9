//! Testing a document against a [`Query`].
//!
//! A comparison on a path the document lacks is false whatever the
//! operator: `desired.mode != "eco"` asks about shadows that have a mode
//! and another one, and `not exists(desired.mode)` is how to ask for the
//! rest. Beyond that the rules are JSON's, with numbers compared as f64.

use std::cmp::Ordering;

use serde_json::Value;

use super::parse::{Expr, Op, Query};

impl Query {
    /// Whether `doc`, one shadow's document, satisfies the query.
    pub fn matches(&self, doc: &Value) -> bool {
        eval(&self.expr, doc)
    }
}

/// Recursion is bounded by the tree's depth, which the parser bounds.
fn eval(expr: &Expr, doc: &Value) -> bool {
    match expr {
        Expr::Or(items) => items.iter().any(|item| eval(item, doc)),
        Expr::And(items) => items.iter().all(|item| eval(item, doc)),
        Expr::Not(inner) => !eval(inner, doc),
        Expr::Exists(path) => path.get(doc).is_some(),
        Expr::Compare { path, op, value } => path
            .get(doc)
            .is_some_and(|found| compare(found, *op, value)),
    }
}

/// `found op wanted`. Equality is JSON equality with numbers compared by
/// value (`2` = `2.0`), so values of different types differ; order is
/// defined only between two numbers or two strings (by their bytes), and
/// an order comparison of anything else is false.
fn compare(found: &Value, op: Op, wanted: &Value) -> bool {
    match op {
        Op::Eq => equal(found, wanted),
        Op::Ne => !equal(found, wanted),
        Op::Lt => order(found, wanted) == Some(Ordering::Less),
        Op::Le => matches!(order(found, wanted), Some(Ordering::Less | Ordering::Equal)),
        Op::Gt => order(found, wanted) == Some(Ordering::Greater),
        Op::Ge => matches!(
            order(found, wanted),
            Some(Ordering::Greater | Ordering::Equal)
        ),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => order(a, b) == Some(Ordering::Equal),
        _ => a == b,
    }
}

/// The order of two numbers (as f64) or two strings (bytewise); `None`
/// for any other pair. JSON numbers are finite, so f64 order is total here.
fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        _ => None,
    }
}
