//! Which of concurrent leaves wins.
//!
//! The merge keeps every concurrent leaf whatever the policy, so replicas
//! converge on the same registers; a policy only picks the leaf a register
//! shows. That is why it is an argument of a render and not part of the
//! merged state.

use serde::{Deserialize, Serialize};

use crate::leaf::{Leaf, Section};
use crate::name::ReplicaId;
use crate::version::Timestamp;

/// Which write wins among concurrent ones, per section (config `policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Higher timestamp wins; equal timestamps are broken by replica id.
    #[default]
    Lww,
    /// A write of a broker replica beats one of an agent; else `lww`.
    BrokerWins,
    /// A write of an agent beats one of a broker; else `lww`.
    DeviceWins,
}

impl std::str::FromStr for Policy {
    type Err = String;

    /// The names config files use: `lww`, `broker-wins`, `device-wins`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lww" => Ok(Policy::Lww),
            "broker-wins" => Ok(Policy::BrokerWins),
            "device-wins" => Ok(Policy::DeviceWins),
            other => Err(format!(
                "{other:?} is not one of lww, broker-wins, device-wins"
            )),
        }
    }
}

impl Policy {
    /// The sort key under this policy: the greatest key wins.
    pub(super) fn key(self, leaf: &Leaf) -> (bool, Timestamp, &ReplicaId, u64) {
        let class = match self {
            Policy::Lww => false,
            Policy::BrokerWins => leaf.dot.replica.is_broker(),
            Policy::DeviceWins => !leaf.dot.replica.is_broker(),
        };
        (class, leaf.ts, &leaf.dot.replica, leaf.dot.counter)
    }

    /// The index of the winning leaf of a non-empty register.
    pub fn winner(self, register: &[Leaf]) -> usize {
        let mut best = 0;
        for (i, leaf) in register.iter().enumerate().skip(1) {
            if self.key(leaf) > self.key(&register[best]) {
                best = i;
            }
        }
        best
    }
}

/// Merge policy of each section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    pub desired: Policy,
    pub reported: Policy,
}

impl Policies {
    pub fn of(&self, section: Section) -> Policy {
        match section {
            Section::Desired => self.desired,
            Section::Reported => self.reported,
        }
    }
}
