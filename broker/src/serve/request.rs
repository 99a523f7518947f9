//! What the dispatcher hands the store thread: a request already parsed
//! and checked, so the write transaction spends its time on the store and
//! the merge, not on JSON or CBOR. Anything that could be refused without
//! the stored shadow (bad JSON, a bad clientToken, a `sync/up` that does
//! not decode or names another replica) was answered or dropped before it
//! was queued.

use shade_shared::aws::UpdateRequest;
use shade_shared::sync::SyncUp;
use shade_shared::ShadowId;

use crate::http::Answer;
use crate::ops::OpsRequest;
use crate::serve::admission::Slot;

/// A parsed request, with the stamped client id that sent it.
#[derive(Debug, Clone)]
pub enum Request {
    Get {
        id: ShadowId,
        token: Option<String>,
        client: String,
    },
    Update {
        id: ShadowId,
        update: Box<UpdateRequest>,
        client: String,
    },
    Delete {
        id: ShadowId,
        token: Option<String>,
        client: String,
    },
    SyncUp {
        id: ShadowId,
        up: Box<SyncUp>,
        client: String,
    },
    /// An operator request on `shade/ops/request` (see [`crate::ops`]).
    Ops { request: OpsRequest, client: String },
    /// Things whose presence changed (from `crate::presence`), each with
    /// its state now.
    Presence {
        things: Vec<(String, crate::store::PresenceRecord)>,
    },
}

/// A request on its way to the store thread, holding its place in its
/// client's in-flight budget until the store thread drops it.
#[derive(Debug)]
pub(crate) struct Queued {
    pub request: Request,
    /// Held, never read: dropping it gives the slot back.
    pub _slot: Slot,
    /// Where the answer goes instead of being published: an HTTP call's.
    pub answer: Option<Answer>,
}
