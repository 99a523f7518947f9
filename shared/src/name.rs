//! Validated names: things, shadows and replicas.
//!
//! Names end up inside MQTT topics and redb keys, so they are checked once,
//! at the edge, and carried as types afterwards. A `ThingName` can never hold
//! a `/`, a wildcard or an empty string.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} name is empty")]
    Empty { kind: &'static str },
    #[error("{kind} name is {len} bytes long; the maximum is {max}")]
    TooLong {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind} name {name:?} contains {bad:?}; allowed are A-Z a-z 0-9 : _ -")]
    BadChar {
        kind: &'static str,
        name: String,
        bad: char,
    },
    #[error("replica id {0:?} must start with \"b:\" (broker) or \"a:\" (agent)")]
    BadReplica(String),
}

fn check(kind: &'static str, name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            kind,
            len: name.len(),
            max,
        });
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-')))
    {
        return Err(NameError::BadChar {
            kind,
            name: name.to_owned(),
            bad,
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// The longest name accepted, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates `name`.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check($kind, &name, $max)?;
                Ok(Self(name))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A thing (device) name: `[A-Za-z0-9:_-]{1,128}`, as in AWS IoT.
    ThingName,
    "thing",
    128
);
name_type!(
    /// A named shadow's name: `[A-Za-z0-9:_-]{1,64}`. The classic shadow has none.
    ShadowName,
    "shadow",
    64
);

/// Which shadow of which thing: the classic shadow when `shadow` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShadowId {
    pub thing: ThingName,
    pub shadow: Option<ShadowName>,
}

impl ShadowId {
    pub fn classic(thing: ThingName) -> Self {
        Self {
            thing,
            shadow: None,
        }
    }

    pub fn named(thing: ThingName, shadow: ShadowName) -> Self {
        Self {
            thing,
            shadow: Some(shadow),
        }
    }

    /// The name AWS uses in 404 messages: the shadow name, or the thing for the classic shadow.
    pub fn display_name(&self) -> &str {
        match &self.shadow {
            Some(s) => s.as_str(),
            None => self.thing.as_str(),
        }
    }
}

impl fmt::Display for ShadowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.shadow {
            Some(s) => write!(f, "{}/{}", self.thing, s),
            None => write!(f, "{}", self.thing),
        }
    }
}

/// Who wrote a leaf: `b:<node>` for a broker, `a:<client id>` for an agent.
///
/// Ordered, because ties between equal timestamps are broken by replica id,
/// and every replica must break them the same way.
///
/// Shared (`Arc<str>`): every dot carries one, and dots are cloned with
/// every leaf, so a clone must not allocate. Comparisons first check
/// whether both share one allocation (the usual case inside one document
/// and one decoded message), before comparing the text.
#[derive(Debug, Clone, Eq)]
pub struct ReplicaId(std::sync::Arc<str>);

impl std::hash::Hash for ReplicaId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for ReplicaId {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl PartialOrd for ReplicaId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ReplicaId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if std::sync::Arc::ptr_eq(&self.0, &other.0) {
            std::cmp::Ordering::Equal
        } else {
            self.0.cmp(&other.0)
        }
    }
}

impl Serialize for ReplicaId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ReplicaId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ReplicaId::new(s.into_owned()).map_err(serde::de::Error::custom)
    }
}

impl ReplicaId {
    /// Client ids may be up to 128 bytes in shade; the prefix adds two.
    pub const MAX_LEN: usize = 130;

    pub fn new(id: impl Into<String>) -> Result<Self, NameError> {
        let id = id.into();
        let rest = id
            .strip_prefix("b:")
            .or_else(|| id.strip_prefix("a:"))
            .ok_or_else(|| NameError::BadReplica(id.clone()))?;
        check("replica", rest, Self::MAX_LEN - 2)?;
        Ok(Self(id.into()))
    }

    /// The broker replica of node `node`.
    pub fn broker(node: &str) -> Result<Self, NameError> {
        Self::new(format!("b:{node}"))
    }

    /// The agent replica of MQTT client `client_id`.
    pub fn agent(client_id: &str) -> Result<Self, NameError> {
        Self::new(format!("a:{client_id}"))
    }

    pub fn is_broker(&self) -> bool {
        self.0.starts_with("b:")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ReplicaId {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(s)
    }
}

impl std::str::FromStr for ReplicaId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::new(s)
    }
}

impl From<ReplicaId> for String {
    fn from(r: ReplicaId) -> String {
        r.0.to_string()
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thing_names_follow_the_aws_alphabet() {
        assert!(ThingName::new("lamp-1:kitchen_2").is_ok());
        assert_eq!(ThingName::new(""), Err(NameError::Empty { kind: "thing" }));
        assert!(matches!(
            ThingName::new("a/b"),
            Err(NameError::BadChar { bad: '/', .. })
        ));
        assert!(matches!(
            ThingName::new("a+"),
            Err(NameError::BadChar { bad: '+', .. })
        ));
        assert!(ThingName::new("x".repeat(128)).is_ok());
        assert!(matches!(
            ThingName::new("x".repeat(129)),
            Err(NameError::TooLong { .. })
        ));
        assert!(matches!(
            ShadowName::new("x".repeat(65)),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn replica_ids_carry_their_kind() {
        assert!(ReplicaId::broker("local").is_ok_and(|r| r.is_broker()));
        assert!(ReplicaId::agent("dev-1").is_ok_and(|r| !r.is_broker()));
        assert!(matches!(
            ReplicaId::new("x:dev"),
            Err(NameError::BadReplica(_))
        ));
        assert!(ReplicaId::new("a:").is_err());
    }

    #[test]
    fn names_deserialize_only_when_valid() {
        assert!(serde_json::from_str::<ThingName>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<ThingName>("\"no#\"").is_err());
    }
}
