//! What a document holds at one path: leaves, the register they form, and
//! the section they belong to.
//!
//! These are the model's smallest shared parts. The document stores them,
//! the dot index records where they sit, and a message's `Changes` carries
//! them, so they live below all three and none of those has to reach into
//! another to name a leaf.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::value::LeafValue;
use crate::version::{Dot, Timestamp};

/// `desired` or `reported`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    Desired,
    Reported,
}

impl Section {
    pub const ALL: [Section; 2] = [Section::Desired, Section::Reported];

    pub fn as_str(self) -> &'static str {
        match self {
            Section::Desired => "desired",
            Section::Reported => "reported",
        }
    }
}

/// One write at one path: a value, or a tombstone when `value` is `None`.
/// Serialized as `[value, dot, ts]`: stored documents and sync messages
/// repeat it per leaf, so it goes without field names.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    pub value: Option<LeafValue>,
    pub dot: Dot,
    pub ts: Timestamp,
}

crate::wire::tuple_serde!(Leaf {
    value: Option<LeafValue>,
    dot: Dot,
    ts: Timestamp,
});

impl Leaf {
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The value as JSON, `null` for a tombstone.
    pub fn json(&self) -> Value {
        self.value.as_ref().map_or(Value::Null, LeafValue::to_json)
    }
}

/// The leaves of one path that are concurrent with each other, sorted by dot
/// so that equal states compare and serialize equal. Nearly always one
/// leaf, kept inline.
pub type Register = smallvec::SmallVec<[Leaf; 1]>;
