//! Counting the shadows that match a query, grouped and summarised, kept
//! up to date change by change.
//!
//! A live count follows the fleet as shadows change, so each change must
//! cost the same however large the fleet is: [`Tally::add`] and
//! [`Tally::remove`] touch only the buckets of one document. The minimum
//! and maximum survive removals because every value is kept in an ordered
//! multiset, and the sum is exact (see `sum`), so a tally that has seen a
//! million changes says what one built afresh over the same shadows says.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Map, Value};

use super::field::FieldPath;
use super::parse::Query;
use super::sum::ExactSum;

/// A count of the documents matching a query, optionally grouped by the
/// value at one path and summarised over the numbers at another.
///
/// [`Tally::result`] is
/// `{"count": N, "by": {KEY: n, ...}, "stats": {"count", "min", "max", "sum", "avg"}}`,
/// `by` only with a `by` path and `stats` only with a `stats` path:
///
/// - A `by` key is the value's JSON text: `"\"eco\""`, `"2"`, `"true"`,
///   `"{\"a\":1}"`. Numbers are grouped by value, as `=` compares them,
///   under their canonical text (below), so `2` and `2.0` share the key
///   `"2"`. A document without the path counts under `"null"`, like a
///   JSON null: every matching document is in exactly one group, so the
///   groups add up to `count`, and shade's leaves are never null, so in
///   `desired`, `reported` and `delta` the `"null"` group is the
///   documents without the path. `exists()` in the query tells them apart
///   where that matters.
/// - `stats` are over the matching documents whose value at the path is
///   a number; `min`, `max` and `avg` are null when there are none, `sum`
///   is then 0.
/// - Numbers print canonically: an integral value within ±2^53 as an
///   integer (`3`, not `3.0`), any other as the shortest float that
///   reads back to it (`21.5`, `1e+300`); -0 prints as 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    filter: Option<Query>,
    by: Option<FieldPath>,
    stats: Option<FieldPath>,
    count: u64,
    /// Matching documents per `by` key; a key whose count falls to 0 is
    /// dropped, so the map only holds groups there are.
    groups: BTreeMap<String, u64>,
    numbers: Numbers,
}

impl Tally {
    /// An empty tally of the documents matching `filter` (all of them
    /// when `None`).
    pub fn new(filter: Option<Query>, by: Option<FieldPath>, stats: Option<FieldPath>) -> Tally {
        Tally {
            filter,
            by,
            stats,
            count: 0,
            groups: BTreeMap::new(),
            numbers: Numbers::default(),
        }
    }

    /// Counts `doc` if it matches; returns whether it did (whether the
    /// result may have changed).
    pub fn add(&mut self, doc: &Value) -> bool {
        if !self.counts(doc) {
            return false;
        }
        self.count += 1;
        if let Some(by) = &self.by {
            *self.groups.entry(group_key(by.get(doc))).or_insert(0) += 1;
        }
        if let Some(x) = self.number_at(doc) {
            self.numbers.add(x);
        }
        true
    }

    /// Undoes an earlier [`Tally::add`] of the same document: a shadow that
    /// changes is `remove(old)` then `add(new)`. Removing a document that
    /// was never added leaves meaningless numbers, but never panics.
    pub fn remove(&mut self, doc: &Value) -> bool {
        if !self.counts(doc) {
            return false;
        }
        self.count = self.count.saturating_sub(1);
        if let Some(by) = &self.by {
            let key = group_key(by.get(doc));
            if let Some(n) = self.groups.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.groups.remove(&key);
                }
            }
        }
        if let Some(x) = self.number_at(doc) {
            self.numbers.remove(x);
        }
        true
    }

    /// Adds what `other` counted, as if its documents had been added here:
    /// a scan split over threads tallies each part and merges them. Both
    /// must count the same query (`other`'s filter and paths are ignored).
    pub fn merge(&mut self, other: Tally) {
        self.count += other.count;
        for (key, n) in other.groups {
            *self.groups.entry(key).or_insert(0) += n;
        }
        self.numbers.merge(other.numbers);
    }

    /// The tally as JSON; see [`Tally`] for its shape.
    pub fn result(&self) -> Value {
        let mut out = Map::new();
        out.insert("count".to_owned(), Value::from(self.count));
        if self.by.is_some() {
            let by: Map<String, Value> = self
                .groups
                .iter()
                .map(|(key, &n)| (key.clone(), Value::from(n)))
                .collect();
            out.insert("by".to_owned(), Value::Object(by));
        }
        if self.stats.is_some() {
            out.insert("stats".to_owned(), self.numbers.result());
        }
        Value::Object(out)
    }

    fn counts(&self, doc: &Value) -> bool {
        self.filter.as_ref().is_none_or(|q| q.matches(doc))
    }

    fn number_at(&self, doc: &Value) -> Option<f64> {
        self.stats.as_ref()?.get(doc)?.as_f64()
    }
}

/// The `by` key of the value at the path, `"null"` when there is none.
fn group_key(value: Option<&Value>) -> String {
    match value {
        None => "null".to_owned(),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) => number(x).to_string(),
            None => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// `x` in the canonical form [`Tally`] documents.
fn number(x: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if x.fract() == 0.0 && x.abs() < EXACT {
        return Value::from(x as i64);
    }
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// The numbers at the `stats` path of the matching documents.
#[derive(Debug, Clone, Default, PartialEq)]
struct Numbers {
    /// Each value with how many documents hold it.
    values: BTreeMap<Finite, u64>,
    count: u64,
    sum: ExactSum,
}

impl Numbers {
    fn add(&mut self, x: f64) {
        let Some(key) = Finite::new(x) else { return };
        *self.values.entry(key).or_insert(0) += 1;
        self.count += 1;
        self.sum.add(key.0);
    }

    fn merge(&mut self, other: Numbers) {
        for (value, n) in other.values {
            *self.values.entry(value).or_insert(0) += n;
        }
        self.count += other.count;
        self.sum.merge(&other.sum);
    }

    /// Removes one `x`; a value not held is ignored, so the count and sum
    /// are always those of the multiset.
    fn remove(&mut self, x: f64) {
        let Some(key) = Finite::new(x) else { return };
        let Some(n) = self.values.get_mut(&key) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.values.remove(&key);
        }
        self.count -= 1;
        self.sum.remove(key.0);
    }

    fn result(&self) -> Value {
        let min = self.values.keys().next().map(|k| k.0);
        let max = self.values.keys().next_back().map(|k| k.0);
        let sum = self.sum.value();
        let avg = (self.count > 0).then(|| sum / self.count as f64);
        let or_null = |x: Option<f64>| x.map_or(Value::Null, number);
        json!({
            "count": self.count,
            "min": or_null(min),
            "max": or_null(max),
            "sum": number(sum),
            "avg": or_null(avg),
        })
    }
}

/// A finite f64 with -0 folded into 0, so its total order is the numeric
/// one and equal numbers share a multiset entry.
#[derive(Clone, Copy, PartialEq)]
struct Finite(f64);

impl Finite {
    fn new(x: f64) -> Option<Finite> {
        x.is_finite().then_some(Finite(x + 0.0))
    }
}

impl Eq for Finite {}

impl PartialOrd for Finite {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Finite {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl fmt::Debug for Finite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::Tally;
    use crate::query::{FieldPath, Query};

    fn tally(filter: Option<&str>, by: Option<&str>, stats: Option<&str>) -> Tally {
        let parsed = |text: &str| Query::parse(text).expect("a test query parses");
        let path = |text: &str| FieldPath::parse(text).expect("a test path parses");
        Tally::new(filter.map(parsed), by.map(path), stats.map(path))
    }

    #[test]
    fn merging_two_tallies_equals_one_tally_of_both_parts() {
        let docs: Vec<Value> = (0..40)
            .map(|i| {
                let mode = ["eco", "on"][i % 2];
                json!({"mode": mode, "t": (i % 7) as f64 / 2.0})
            })
            .collect();
        let make = || tally(Some("t > 0.5"), Some("mode"), Some("t"));
        let mut whole = make();
        let (mut a, mut b) = (make(), make());
        for (i, doc) in docs.iter().enumerate() {
            whole.add(doc);
            if i % 3 == 0 {
                a.add(doc)
            } else {
                b.add(doc)
            };
        }
        a.merge(b);
        assert_eq!(a.result(), whole.result());
        assert_eq!(a, whole);
    }

    #[test]
    fn a_tally_counts_the_matching_documents() {
        let mut t = tally(Some("connected = true"), None, None);
        assert!(t.add(&json!({"connected": true})));
        assert!(!t.add(&json!({"connected": false})));
        assert!(t.add(&json!({"connected": true})));
        assert_eq!(t.result(), json!({"count": 2}));
        assert!(t.remove(&json!({"connected": true})));
        assert!(!t.remove(&json!({"connected": false})));
        assert_eq!(t.result(), json!({"count": 1}));
    }

    #[test]
    fn a_tally_groups_by_json_text_with_numbers_by_value_and_missing_as_null() {
        let mut t = tally(None, Some("reported.fw"), None);
        for fw in [
            json!("2.0"),
            json!(2),
            json!(2.0),
            json!(true),
            json!(null),
            json!({"b": 1, "a": [1]}),
        ] {
            t.add(&json!({"reported": {"fw": fw}}));
        }
        t.add(&json!({"reported": {}}));
        t.add(&json!({"reported": {"fw": 1.5}}));
        assert_eq!(
            t.result(),
            json!({"count": 8, "by": {
                "\"2.0\"": 1, "2": 2, "true": 1, "null": 2, "{\"a\":[1],\"b\":1}": 1, "1.5": 1,
            }})
        );
        t.remove(&json!({"reported": {"fw": true}}));
        assert_eq!(
            t.result()["by"].get("true"),
            None,
            "an emptied group is dropped"
        );
    }

    #[test]
    fn a_tally_keeps_min_and_max_through_removals() {
        let mut t = tally(None, None, Some("reported.temp"));
        let with = |x: Value| json!({"reported": {"temp": x}});
        for x in [json!(20), json!(25.5), json!(-3), json!(25.5), json!("hot")] {
            t.add(&with(x));
        }
        t.add(&json!({}));
        assert_eq!(
            t.result()["stats"],
            json!({"count": 4, "min": -3, "max": 25.5, "sum": 68, "avg": 17})
        );
        t.remove(&with(json!(25.5)));
        t.remove(&with(json!(-3)));
        assert_eq!(
            t.result()["stats"],
            json!({"count": 2, "min": 20, "max": 25.5, "sum": 45.5, "avg": 22.75})
        );
        t.remove(&with(json!(25.5)));
        t.remove(&with(json!(20)));
        assert_eq!(
            t.result(),
            json!({"count": 2, "stats": {"count": 0, "min": null, "max": null, "sum": 0, "avg": null}}),
            "the string and the document without the path are still counted"
        );
    }

    #[test]
    fn a_tally_sum_is_exact_after_removals() {
        let mut t = tally(None, None, Some("x"));
        let x = |v: f64| json!({ "x": v });
        t.add(&x(1e20));
        t.add(&x(0.5));
        t.add(&x(0.1));
        t.remove(&x(1e20));
        t.remove(&x(0.1));
        assert_eq!(t.result()["stats"]["sum"], json!(0.5));
        t.add(&x(-1e300));
        t.add(&x(f64::MAX));
        t.add(&x(f64::MAX));
        t.remove(&x(f64::MAX));
        t.remove(&x(f64::MAX));
        t.remove(&x(-1e300));
        assert_eq!(t.result()["stats"]["sum"], json!(0.5));
        assert_eq!(t, {
            let mut fresh = tally(None, None, Some("x"));
            fresh.add(&x(0.5));
            fresh
        });
    }

    #[test]
    fn a_tally_sum_past_the_float_range_prints_null() {
        let mut t = tally(None, None, Some("x"));
        t.add(&json!({"x": f64::MAX}));
        t.add(&json!({"x": f64::MAX}));
        assert_eq!(t.result()["stats"]["sum"], Value::Null);
        assert_eq!(t.result()["stats"]["max"], json!(f64::MAX));
    }

    #[test]
    fn a_tally_prints_integral_numbers_as_integers() {
        let mut t = tally(None, Some("x"), Some("x"));
        t.add(&json!({"x": 3.0}));
        t.add(&json!({"x": -0.0}));
        t.add(&json!({"x": 1e300}));
        let result = t.result();
        assert_eq!(result["by"], json!({"3": 1, "0": 1, "1e+300": 1}));
        assert_eq!(result["stats"]["min"].to_string(), "0");
        assert_eq!(result["stats"]["max"].to_string(), "1e+300");
    }

    #[test]
    fn removing_what_was_never_added_does_not_panic() {
        let mut t = tally(None, Some("x"), Some("x"));
        assert!(t.remove(&json!({"x": 1})));
        assert_eq!(
            t.result(),
            json!({"count": 0, "by": {}, "stats": {"count": 0, "min": null, "max": null, "sum": 0, "avg": null}})
        );
    }
}
