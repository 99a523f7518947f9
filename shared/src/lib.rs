//! shade-shared: the pure model of shade.
//!
//! No sockets, no files, no clock reads: time comes in as an argument, and
//! every function here is deterministic, so the merge can be tested with
//! property tests and shared by the broker and the agent unchanged.
//!
//! # Two replicas edit one shadow offline and converge
//!
//! ```
//! use serde_json::json;
//! use shade_shared::{Patch, Policy, ReplicaId, Section, Shadow, VersionVector};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let patch = |v: serde_json::Value| Patch::Merge(v.as_object().cloned().unwrap_or_default());
//! let broker = ReplicaId::broker("local")?;
//! let device = ReplicaId::agent("lamp-1")?;
//!
//! // Both start from the same state...
//! let mut b = Shadow::new();
//! b.write(&broker, Section::Desired, &patch(json!({"color": "red", "level": 1})), 1_000);
//! let mut d = Shadow::new();
//! d.merge(&b.changes_since(&VersionVector::new()));
//!
//! // ...then edit while disconnected: both change `color`, each changes one more key.
//! b.write(&broker, Section::Desired, &patch(json!({"color": "green", "level": 2})), 2_000);
//! d.write(&device, Section::Desired, &patch(json!({"color": "blue", "mode": "eco"})), 3_000);
//!
//! // On reconnect each sends what the other has not seen.
//! let to_device = b.changes_since(d.vv());
//! let to_broker = d.changes_since(b.vv());
//! b.merge(&to_broker);
//! d.merge(&to_device);
//!
//! assert_eq!(b, d);
//! let view = b.render(Section::Desired, Policy::Lww);
//! assert_eq!(view.state, json!({"color": "blue", "level": 2, "mode": "eco"}));
//! assert_eq!(view.conflicts.len(), 1, "one real conflict: color");
//! assert_eq!(view.conflicts[0].path, "color");
//! assert_eq!(view.conflicts[0].lost.value, json!("green"));
//! assert_eq!(d.render(Section::Desired, Policy::Lww), view);
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! Ground floor first: each module uses only modules listed above it.
//!
//! - `bytes`: short byte strings kept inline, longer ones shared.
//! - `cbor`: the CBOR reader and writer primitives, and [`value::CborError`].
//! - [`limits`]: document size, depth and token limits.
//! - [`name`]: validated thing, shadow and replica names.
//! - `wire`: the compact tuple form of the structs repeated per leaf.
//! - [`path`]: a leaf's path, ordered cheaply.
//! - [`topic`]: the MQTT topic grammar, AWS and native, parsed and formatted.
//! - [`value`]: a leaf's value, kept as canonical CBOR.
//! - [`version`]: dots, version vectors, the hybrid logical clock.
//! - [`leaf`]: a leaf, the register of concurrent leaves at a path, and the two sections.
//! - `changes`: [`Changes`], the registers one replica ships another, laid out flat.
//! - `index`: the dot index, which paths got a leaf with a given dot.
//! - [`document`]: a shadow's sections of registers, local writes, rendering, delta.
//! - `message`: what [`SyncUp`] and [`SyncDown`] hold.
//! - [`aws`]: the AWS IoT Device Shadow JSON API: requests, errors, replies.
//! - `codec`: the sync messages' CBOR, written and read by hand.
//! - [`merge`]: joining remote leaves, what to send a peer, tombstone collection.
//! - [`sync`]: the sync protocol: the messages as CBOR, and serde CBOR for stored state.
//! - [`query`]: the fleet query language: `--where` expressions, and tallies kept live.

// Floor by floor, as the Layout lists them (blank lines part the floors, so
// rustfmt sorts only within one); the ground floor uses no other module.
mod bytes;
mod cbor;
pub mod limits;
pub mod name;
mod wire;

pub mod path;
pub mod topic;
pub mod value;
pub mod version;

pub mod leaf;

mod changes;
mod index;

pub mod document;
mod message;

pub mod aws;
mod codec;
pub mod merge;

pub mod sync;

pub mod query;

pub use aws::{Rejection, UpdateRequest};
pub use document::{Conflict, Patch, Policies, Policy, Rendered, Shadow};
pub use leaf::{Leaf, Section};
pub use limits::Limits;
pub use merge::{Changes, LeafRef, MergeOutcome, PathLeaves, RegisterRef};
pub use name::{NameError, ReplicaId, ShadowId, ShadowName, ThingName};
pub use sync::{SyncDown, SyncError, SyncUp};
pub use topic::{Operation, Reply, Topic, TopicError};
pub use value::LeafValue;
pub use version::{Dot, Hlc, Timestamp, VersionVector};
