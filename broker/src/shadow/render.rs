//! Replies and notices rendered after the commit, off the store thread.
//!
//! Rendering JSON was a third of what an update cost the serial store
//! thread (docs/BENCHMARKS.md, "The writer"). The store thread now records
//! what to render ([`Render`]: owned shadows and values, nothing borrowed
//! from the transaction) and `crate::serve::writer` hands each committed
//! batch to a render thread, which renders in request order and passes the
//! messages on to the broker. Failure replies are rendered only when a
//! commit fails.

use std::sync::Arc;

use serde_json::Value;
use shade_shared::aws::{self, Rejection};
use shade_shared::topic::{Operation, Reply, Topic};
use shade_shared::{Policies, Shadow, ShadowId};

use crate::router::{Outbound, Subscriptions};
use crate::store::PresenceRecord;

/// A message to publish after the commit.
#[derive(Debug)]
pub enum Out {
    /// Already rendered (sync messages, ops replies, an empty state).
    Ready(Outbound),
    /// Rendered after the commit.
    Later(Box<Render>),
}

impl From<Outbound> for Out {
    fn from(o: Outbound) -> Out {
        Out::Ready(o)
    }
}

impl From<Render> for Out {
    fn from(r: Render) -> Out {
        Out::Later(Box::new(r))
    }
}

/// What to render, with everything it needs owned.
#[derive(Debug)]
pub enum Render {
    /// `get/accepted`.
    Get {
        id: ShadowId,
        shadow: Shadow,
        presence: Option<PresenceRecord>,
        token: Option<String>,
        now: u64,
    },
    /// `update/accepted`: the state as sent.
    UpdateAccepted {
        id: ShadowId,
        state: Value,
        token: Option<String>,
        version: u64,
        now: u64,
    },
    /// `update/documents` and `update/delta` (each only when someone can
    /// receive it) and the retained state.
    Notices {
        id: ShadowId,
        previous: Shadow,
        current: Shadow,
        presence: Option<PresenceRecord>,
        token: Option<String>,
        now: u64,
    },
    /// The retained state alone: the thing's presence changed.
    State {
        id: ShadowId,
        shadow: Shadow,
        presence: Option<PresenceRecord>,
        now: u64,
    },
    /// `*/rejected`.
    Rejected {
        id: ShadowId,
        op: Operation,
        rejection: Rejection,
        now: u64,
    },
}

/// What rendering needs of the service's settings.
#[derive(Debug, Clone)]
pub(crate) struct Renderer {
    pub(crate) policies: Policies,
    /// As `Service::subscriptions`: a notice nobody can receive is not
    /// rendered.
    pub(crate) subscriptions: Option<Arc<Subscriptions>>,
}

/// Whether a client could receive a message on `topic` (`None`: no broker
/// to ask, so everyone could).
pub(crate) fn wanted(subscriptions: Option<&Subscriptions>, topic: &str) -> bool {
    subscriptions.is_none_or(|s| s.wants(topic))
}

impl Renderer {
    fn wanted(&self, topic: &str) -> bool {
        wanted(self.subscriptions.as_deref(), topic)
    }

    /// Renders `outs` in order into the messages to publish.
    pub(crate) fn render(&self, outs: Vec<Out>) -> Vec<Outbound> {
        let mut messages = Vec::with_capacity(outs.len() + outs.len() / 2);
        for out in outs {
            match out {
                Out::Ready(o) => messages.push(o),
                Out::Later(r) => self.render_one(*r, &mut messages),
            }
        }
        messages
    }

    fn render_one(&self, r: Render, messages: &mut Vec<Outbound>) {
        match r {
            Render::Get {
                id,
                shadow,
                presence,
                token,
                now,
            } => {
                let mut doc = aws::render_get(&shadow, &self.policies, token.as_deref(), now);
                stamp(&mut doc, presence.as_ref());
                let topic = Topic::aws_reply(&id, Operation::Get, Reply::Accepted);
                messages.push(Outbound::json(topic, &doc));
            }
            Render::UpdateAccepted {
                id,
                state,
                token,
                version,
                now,
            } => {
                let doc = aws::render_update_accepted_parts(&state, token.as_deref(), version, now);
                let topic = Topic::aws_reply(&id, Operation::Update, Reply::Accepted);
                messages.push(Outbound::json(topic, &doc));
            }
            Render::Notices {
                id,
                previous,
                current,
                presence,
                token,
                now,
            } => {
                let token = token.as_deref();
                let (id, presence) = (&id, presence.as_ref());
                self.render_notices(id, &previous, &current, presence, token, now, messages);
            }
            Render::State {
                id,
                shadow,
                presence,
                now,
            } => {
                let mut doc = aws::render_get(&shadow, &self.policies, None, now);
                stamp(&mut doc, presence.as_ref());
                messages.push(Outbound {
                    topic: Topic::state(&id),
                    payload: crate::router::json_bytes(&doc),
                    retain: true,
                });
            }
            Render::Rejected {
                id,
                op,
                rejection,
                now,
            } => messages.push(Outbound::json(
                Topic::aws_reply(&id, op, Reply::Rejected),
                &rejection.to_json(now),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn render_notices(
        &self,
        id: &ShadowId,
        previous: &Shadow,
        current: &Shadow,
        presence: Option<&PresenceRecord>,
        token: Option<&str>,
        now: u64,
        messages: &mut Vec<Outbound>,
    ) {
        // One view of the current document serves all three notices.
        let documents = Topic::aws_reply(id, Operation::Update, Reply::Documents);
        let delta = Topic::aws_reply(id, Operation::Update, Reply::Delta);
        let wanted = aws::Wanted {
            documents: self.wanted(&documents),
            delta: self.wanted(&delta),
        };
        let notices =
            aws::render_wanted_notices(previous, current, &self.policies, token, now, wanted);
        if let Some(doc) = &notices.documents {
            messages.push(Outbound::json(documents, doc));
        }
        if let Some(doc) = &notices.delta {
            messages.push(Outbound::json(delta, doc));
        }
        // The retained state; an empty payload when the shadow does not
        // exist (as `state_message`).
        messages.push(Outbound {
            topic: Topic::state(id),
            payload: notices
                .state
                .map(|mut doc| {
                    stamp(&mut doc, presence);
                    crate::router::json_bytes(&doc)
                })
                .unwrap_or_default(),
            retain: true,
        });
    }
}

/// Adds `connected` and `lastSeen` to a shadow's full document (AWS
/// clients ignore keys they do not know). A thing never seen is not
/// connected and has no `lastSeen`.
pub(crate) fn stamp(doc: &mut Value, presence: Option<&PresenceRecord>) {
    let Value::Object(map) = doc else { return };
    map.insert(
        "connected".into(),
        Value::Bool(presence.is_some_and(|p| p.connected)),
    );
    if let Some(p) = presence {
        map.insert("lastSeen".into(), Value::from(p.last_seen));
    }
}
