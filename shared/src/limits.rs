//! Size and shape limits, from config. Defaults follow AWS IoT's shadow limits.

use serde::{Deserialize, Serialize};

/// Limits applied to requests and documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Bytes of `{"desired":..,"reported":..}` after the merge (metadata
    /// excluded). AWS: 8 KiB.
    pub max_document_bytes: usize,
    /// Nesting levels inside a section; `{"a":{"b":1}}` is 2. AWS: 8 (6 at depth-first counting of some SDKs).
    pub max_depth: usize,
    /// Bytes of a `clientToken`. AWS: 64.
    pub max_client_token_bytes: usize,
    /// Bytes of one request payload before it is parsed. AWS: 128 KiB.
    pub max_payload_bytes: usize,
}

/// The most nesting levels a config may allow. Rendering, serializing and
/// dropping a JSON document recurse once per level, so the depth limit is
/// also what bounds their stack use; serde_json's own parser stops at 128.
pub const MAX_DEPTH_CEILING: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_document_bytes: 8 * 1024,
            max_depth: 8,
            max_client_token_bytes: 64,
            max_payload_bytes: 128 * 1024,
        }
    }
}

/// Nesting depth of a JSON value: 0 for a scalar, one more per object or array level.
pub fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_levels_inside_a_section() {
        assert_eq!(depth(&serde_json::json!({"a": {"b": 1}})), 2);
        assert_eq!(depth(&serde_json::json!({"a": 1})), 1);
        assert_eq!(depth(&serde_json::json!({"a": [[1]]})), 3);
        assert_eq!(depth(&serde_json::json!(5)), 0);
    }
}
