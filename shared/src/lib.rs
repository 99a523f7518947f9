//! shade-shared: the pure model of shade.
//!
//! No sockets, no files, no clock reads: time comes in as an argument, and
//! every function here is deterministic, so the merge can be tested with
//! property tests and shared by the broker and the agent unchanged.
//!
//! # Layout
//!
//! - [`name`]: validated thing, shadow and replica names.
//! - [`version`]: dots, version vectors, the hybrid logical clock.
//! - [`document`]: a shadow's sections of leaves, local writes, rendering, delta.
//! - [`merge`]: joining remote leaves, what to send a peer, tombstone collection.

pub mod document;
pub mod merge;
pub mod name;
pub mod sync;
pub mod version;

pub use document::{Conflict, Leaf, Patch, Policies, Policy, Rendered, Section, Shadow};
pub use merge::{Changes, MergeOutcome, PathLeaves};
pub use name::{NameError, ReplicaId, ShadowId, ShadowName, ThingName};
pub use sync::{SyncDown, SyncError, SyncUp};
pub use version::{Dot, Hlc, Timestamp, VersionVector};
