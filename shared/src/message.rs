//! What the sync messages hold: [`SyncUp`] and [`SyncDown`] as plain data.
//!
//! The types sit below both the codec that writes and reads them and the
//! `sync` module that offers `to_cbor` / `from_cbor`, so the codec never
//! has to reach up into the module that calls it.

use crate::changes::Changes;
use crate::name::ReplicaId;
use crate::version::VersionVector;

/// Agent -> broker.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncUp {
    /// The sending agent's replica id.
    pub replica: ReplicaId,
    /// The agent's registers the broker has not seen, and the agent's vector.
    pub changes: Changes,
}

/// Broker -> agent.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncDown {
    /// The broker's replica id.
    pub replica: ReplicaId,
    /// AWS `version` of the shadow after this state.
    pub version: u64,
    /// The broker's registers the agent has not seen, and the broker's vector.
    /// Any of the agent's dots this vector covers are durable on the broker.
    pub changes: Changes,
    /// What every known replica of the shadow has seen: tombstones it covers
    /// may be dropped (see [`crate::merge`]).
    pub stable: VersionVector,
}
