//! `KEY=VALUE` arguments of `shade-agent report` and `desire`.
//!
//! `KEY` may be dotted (`light.level=80` sets `{"light":{"level":80}}`);
//! `VALUE` is read as JSON when it parses and as a string otherwise;
//! `null` deletes.

use serde_json::{Map, Value};

/// Why an argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("{0:?} is not KEY=VALUE")]
    NoEquals(String),
    #[error("{0:?} has an empty key or an empty part in a dotted key")]
    EmptyKey(String),
    #[error("{0:?} clashes with an earlier argument: one sets a key below the other's")]
    Clash(String),
}

/// Builds one patch object from `KEY=VALUE` arguments, in order.
pub fn parse_assignments<S: AsRef<str>>(args: &[S]) -> Result<Map<String, Value>, KvError> {
    let mut root = Map::new();
    // Keys set so far: `x.y=1 x=2` clashes as `x=2 x.y=1` does, whatever
    // the order (the same key twice is fine: the last one wins).
    let mut keys: Vec<&str> = Vec::new();
    for arg in args {
        let arg = arg.as_ref();
        let (key, raw) = arg
            .split_once('=')
            .ok_or_else(|| KvError::NoEquals(arg.to_owned()))?;
        let below = |outer: &str, inner: &str| {
            inner.len() > outer.len()
                && inner.starts_with(outer)
                && inner.as_bytes().get(outer.len()) == Some(&b'.')
        };
        if keys.iter().any(|k| below(key, k) || below(k, key)) {
            return Err(KvError::Clash(arg.to_owned()));
        }
        keys.push(key);
        let parts: Vec<&str> = key.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(KvError::EmptyKey(arg.to_owned()));
        }
        let value =
            serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
        let Some((last, parents)) = parts.split_last() else {
            return Err(KvError::EmptyKey(arg.to_owned()));
        };
        let mut node = &mut root;
        for p in parents {
            let entry = node
                .entry((*p).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            match entry {
                Value::Object(m) => node = m,
                _ => return Err(KvError::Clash(arg.to_owned())),
            }
        }
        node.insert((*last).to_owned(), value);
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_keys_nest_and_values_are_json_or_strings() {
        let m = parse_assignments(&[
            "light.level=80",
            "light.on=true",
            "name=kitchen lamp",
            "gone=null",
            "list=[1,2]",
        ])
        .expect("valid");
        assert_eq!(
            Value::Object(m),
            json!({"light": {"level": 80, "on": true}, "name": "kitchen lamp", "gone": null, "list": [1, 2]})
        );
    }

    #[test]
    fn malformed_arguments_are_errors() {
        assert!(matches!(
            parse_assignments(&["novalue"]),
            Err(KvError::NoEquals(_))
        ));
        assert!(matches!(
            parse_assignments(&["a..b=1"]),
            Err(KvError::EmptyKey(_))
        ));
        assert!(matches!(
            parse_assignments(&["=1"]),
            Err(KvError::EmptyKey(_))
        ));
        // Whichever comes first.
        for args in [["a=1", "a.b=2"], ["a.b=2", "a=1"], ["a.b.c=1", "a.b=2"]] {
            assert!(
                matches!(parse_assignments(&args), Err(KvError::Clash(_))),
                "{args:?}"
            );
        }
        // The same key twice, and keys that only share a prefix, are fine.
        assert_eq!(
            parse_assignments(&["a=1", "a=2", "ab=3", "a2.b=4"]).map(Value::Object),
            Ok(json!({"a": 2, "ab": 3, "a2": {"b": 4}}))
        );
    }
}
