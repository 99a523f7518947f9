//! The shadow document: two sections of leaves, each leaf with its dot,
//! timestamp and tombstone.
//!
//! A section is stored flat, as a map from a leaf's path (the object keys
//! leading to it) to a *register*: the leaves at that path that no replica
//! has yet written over with knowledge of the others. Usually a register
//! holds one leaf; two or more mean concurrent writes, shown as conflicts.
//! A deleted value stays as a tombstone leaf (value `None`) so that a stale
//! replica cannot bring it back, until every replica has seen the delete.
//!
//! Writes and renders live here; the merge of remote leaves, the choice of
//! what to send a peer, and tombstone collection live in [`crate::merge`].
//! The parts, each readable on its own:
//!
//! - `shadow`: the [`Shadow`] itself, its stored form, and how a register
//!   is replaced with the dot index kept in step;
//! - `write`: a local [`Patch`] turned into leaves under one dot;
//! - `policy`: which of concurrent leaves wins ([`Policy`]);
//! - `render`: a section as JSON with AWS metadata and its conflicts, and
//!   AWS's [`delta`].

mod policy;

mod shadow;

mod render;
mod write;

pub use crate::path::Path;
pub use policy::{Policies, Policy};
pub use render::{delta, insert_at, Conflict, ConflictSide, Rendered};
pub use shadow::Shadow;
pub use write::Patch;
