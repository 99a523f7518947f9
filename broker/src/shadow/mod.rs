//! The shadow service: what each request does to a stored shadow, and the
//! messages it produces.
//!
//! Each of [`Service`]'s operations runs on the store thread inside a write
//! transaction ([`crate::serve::writer`]), on a request already parsed: it
//! loads the shadow, applies the request with the pure functions of
//! `shade-shared`, saves it, appends history and collects the replies. The replies are published only after the transaction
//! commits; if the commit fails, the request's `on_failure` replies (a 500)
//! go out instead. JSON documents are rendered after the commit, off the
//! store thread ([`render`]).

mod render;

mod presence;

pub(crate) use render::{stamp, Out, Render, Renderer};

use std::sync::Arc;

use serde_json::{Map, Value};
use shade_shared::aws::{self, Rejection, UpdateRequest};
use shade_shared::merge::stable_vector;
use shade_shared::sync::{SyncDown, SyncUp};
use shade_shared::topic::{Operation, Reply, Topic};
use shade_shared::{Limits, Policies, ReplicaId, Section, Shadow, ShadowId, VersionVector};

use crate::auth::credentials::DeviceChange;
use crate::router::{Outbound, Subscriptions};
use crate::store::{HistoryEntry, PresenceRecord, StoreError, StoredShadow, Tables};

/// An accepted change, for the history.
struct Change<'a> {
    kind: &'static str,
    client: &'a str,
    replica: &'a ReplicaId,
    what: Value,
}

/// What handling one request produced.
#[derive(Debug, Default)]
pub struct Handled {
    /// Published after the commit.
    pub out: Vec<Out>,
    /// Published instead of `out` when the commit fails.
    pub on_failure: Vec<Out>,
    /// Applied to the shared device credentials after the commit (dropped
    /// if it fails).
    pub credentials: Vec<DeviceChange>,
    /// The status of the reply, for `crate::metrics`, where `out` cannot
    /// tell it: an ops reply is rendered JSON already. `None`: read it
    /// from `out` (a [`Render::Rejected`]'s code, else 200).
    pub code: Option<u16>,
    /// Conflict records the request's merge added, for `crate::metrics`.
    pub conflicts: u64,
}

/// The service's settings.
#[derive(Debug, Clone)]
pub struct Service {
    pub node: ReplicaId,
    pub limits: Limits,
    pub policies: Policies,
    pub history_per_shadow: u64,
    /// Who can receive what: a notice no held filter matches is not even
    /// rendered. `None` renders every notice (no broker to ask).
    pub subscriptions: Option<Arc<Subscriptions>>,
    /// Who is connected, for a shadow made while its thing is online.
    /// `None`: no broker, nobody is.
    pub presence: Option<Arc<crate::presence::Presence>>,
}

fn rejected(id: &ShadowId, op: Operation, rejection: Rejection, now: u64) -> Out {
    Out::from(Render::Rejected {
        id: id.clone(),
        op,
        rejection,
        now,
    })
}

impl Service {
    /// What the render thread needs of these settings.
    pub(crate) fn renderer(&self) -> Renderer {
        Renderer {
            policies: self.policies,
            subscriptions: self.subscriptions.clone(),
        }
    }

    /// Renders `outs` in order into the messages to publish.
    pub(crate) fn render(&self, outs: Vec<Out>) -> Vec<Outbound> {
        self.renderer().render(outs)
    }

    /// Whether a client could receive a message on `topic`.
    fn wanted(&self, topic: &str) -> bool {
        render::wanted(self.subscriptions.as_deref(), topic)
    }

    /// `get`: the document, or 404. `token` is the request's clientToken.
    pub fn get(
        &self,
        t: &Tables<'_>,
        id: &ShadowId,
        token: Option<String>,
        now: u64,
        h: &mut Handled,
    ) -> Result<(), StoreError> {
        match t.load(id)? {
            Some(stored) if stored.shadow.exists => h.out.push(Out::from(Render::Get {
                id: id.clone(),
                shadow: stored.shadow,
                presence: t.presence(id.thing.as_str())?,
                token,
                now,
            })),
            _ => h.out.push(rejected(
                id,
                Operation::Get,
                Rejection::not_found(id).with_token(token),
                now,
            )),
        }
        Ok(())
    }

    /// `update`: merges the parsed request into the shadow as this
    /// broker's replica; 409 and 413 are decided here, on the stored
    /// document.
    pub fn update(
        &self,
        t: &mut Tables<'_>,
        id: &ShadowId,
        req: &UpdateRequest,
        client: &str,
        now: u64,
        h: &mut Handled,
    ) -> Result<(), StoreError> {
        let mut stored = t.load(id)?.unwrap_or_default();
        let applied =
            match aws::apply_update(&mut stored.shadow, &self.node, req, now, &self.limits) {
                Ok(applied) => applied,
                Err(r) => {
                    h.out.push(rejected(id, Operation::Update, r, now));
                    return Ok(());
                }
            };
        let change = Change {
            kind: "update",
            client,
            replica: &self.node,
            what: req.state.clone(),
        };
        // The history entry's copy of the state comes back for the reply.
        let state = self.save(t, id, &mut stored, Some(change), now)?;
        h.out.push(Out::from(Render::UpdateAccepted {
            id: id.clone(),
            state: state.unwrap_or(Value::Null),
            token: req.client_token.clone(),
            version: stored.shadow.version,
            now,
        }));
        let token = req.client_token.clone();
        let presence = presence::for_write(t, id.thing.as_str(), self.presence.as_deref())?;
        self.announce(id, stored, applied.previous, presence, token, None, now, h);
        h.on_failure.push(rejected(
            id,
            Operation::Update,
            Rejection::internal().with_token(req.client_token.clone()),
            now,
        ));
        Ok(())
    }

    /// `delete`: tombstones every leaf (the version goes on), or 404.
    pub fn delete(
        &self,
        t: &mut Tables<'_>,
        id: &ShadowId,
        token: Option<String>,
        client: &str,
        now: u64,
        h: &mut Handled,
    ) -> Result<(), StoreError> {
        let Some(mut stored) = t.load(id)?.filter(|s| s.shadow.exists) else {
            h.out.push(rejected(
                id,
                Operation::Delete,
                Rejection::not_found(id).with_token(token),
                now,
            ));
            return Ok(());
        };
        let version = aws::apply_delete(&mut stored.shadow, &self.node, now);
        let change = Change {
            kind: "delete",
            client,
            replica: &self.node,
            what: Value::Null,
        };
        let _ = self.save(t, id, &mut stored, Some(change), now)?;
        let accepted = aws::render_delete_accepted(version, token.as_deref(), now);
        h.out.push(Out::from(Outbound::json(
            Topic::aws_reply(id, Operation::Delete, Reply::Accepted),
            &accepted,
        )));
        // An empty retained payload removes the retained state message.
        h.out.push(Out::from(Outbound {
            topic: Topic::state(id),
            payload: Vec::new(),
            retain: true,
        }));
        self.push_to_agents(id, &stored, None, h);
        h.on_failure.push(rejected(
            id,
            Operation::Delete,
            Rejection::internal().with_token(token),
            now,
        ));
        Ok(())
    }

    /// `sync/up`: merges an agent's changes, answers with what it lacks
    /// and tells the shadow's other subscribers and agents. The message was
    /// decoded, and its replica id checked against its sender, before it
    /// was queued.
    pub fn sync_up(
        &self,
        t: &mut Tables<'_>,
        id: &ShadowId,
        up: &SyncUp,
        client: &str,
        now: u64,
        h: &mut Handled,
    ) -> Result<(), StoreError> {
        let mut stored = t.load(id)?.unwrap_or_default();
        let previous = stored.shadow.clone();
        let outcome = stored.shadow.merge(&up.changes);
        if outcome.gap {
            tracing::info!(client, shadow = %id, "sync/up was computed against a vector this broker has not seen; answering with ours");
        }
        if !outcome.is_empty() && stored.shadow.state_size() > self.limits.max_document_bytes {
            // Refuse the merge as a whole: the agent keeps its changes pending
            // and the operator sees why in the log.
            tracing::warn!(client, shadow = %id, "sync/up would grow the document over max_document_bytes; not merged");
            stored.shadow = previous.clone();
        } else if !outcome.gap && !up.changes.partial {
            // What the agent holds now, as it says: replaced, not joined, so
            // an agent that lost its data (and starts again from nothing) is
            // sent everything; a stale vector from a reordered message only
            // means resending what it already has. Only a merged, complete
            // message's vector may count towards the stable vector that lets
            // tombstones go (see shade_shared::merge).
            stored
                .peers
                .insert(up.replica.clone(), up.changes.vv.clone());
        }
        let changed = !outcome.is_empty() && stored.shadow != previous;
        if changed {
            stored.shadow.version += 1;
            h.conflicts = added_conflicts(&previous, &stored.shadow, &outcome.changed);
        }
        let change = changed.then(|| Change {
            kind: "sync",
            client,
            replica: &up.replica,
            what: self.sent_leaves(up, &outcome.changed),
        });
        let _ = self.save(t, id, &mut stored, change, now)?;
        // The reply: everything the agent lacks, with our vector, which now
        // covers (acknowledges) the agent's merged changes.
        if let Some(reply) = self.sync_down(id, &stored, &up.changes.vv) {
            h.out.push(Out::from(reply));
        }
        if changed {
            let presence = presence::for_write(t, id.thing.as_str(), self.presence.as_deref())?;
            self.announce(
                id,
                stored,
                previous,
                presence,
                None,
                Some(&up.replica),
                now,
                h,
            );
        }
        Ok(())
    }

    /// Collects what tombstones every replica has seen, saves the shadow
    /// and records `change` (if any) in its history.
    fn save(
        &self,
        t: &mut Tables<'_>,
        id: &ShadowId,
        stored: &mut StoredShadow,
        change: Option<Change<'_>>,
        now: u64,
    ) -> Result<Option<Value>, StoreError> {
        self.collect_tombstones(stored);
        t.save(id, stored)?;
        let Some(c) = change else { return Ok(None) };
        let entry = HistoryEntry {
            time: now,
            author: c.client.to_owned(),
            replica: c.replica.to_string(),
            version: stored.shadow.version,
            kind: c.kind.into(),
            change: c.what,
        };
        t.append_history(id, &entry, self.history_per_shadow)?;
        Ok(Some(entry.change))
    }

    /// After an accepted change: `update/documents`, `update/delta`, the
    /// retained state (rendered after the commit), and a push to the
    /// shadow's agents (but `skip`).
    #[allow(clippy::too_many_arguments)]
    fn announce(
        &self,
        id: &ShadowId,
        stored: StoredShadow,
        previous: Shadow,
        presence: Option<PresenceRecord>,
        token: Option<String>,
        skip: Option<&ReplicaId>,
        now: u64,
        h: &mut Handled,
    ) {
        // The agents' pushes follow the notices, as before the rendering
        // moved; they are built first because the notice takes the shadow.
        let mut pushes = Handled::default();
        self.push_to_agents(id, &stored, skip, &mut pushes);
        h.out.push(Out::from(Render::Notices {
            id: id.clone(),
            previous,
            current: stored.shadow,
            presence,
            token,
            now,
        }));
        h.out.append(&mut pushes.out);
    }

    /// Records each thing's new presence (`crate::presence` hands it over)
    /// and republishes the retained states it changes.
    pub fn presence(
        &self,
        t: &mut Tables<'_>,
        things: &[(String, PresenceRecord)],
        now: u64,
        h: &mut Handled,
    ) -> Result<(), StoreError> {
        presence::apply(t, things, now, &mut h.out)
    }

    /// The retained `shade/things/.../state` message of a shadow.
    pub fn state_message(
        &self,
        id: &ShadowId,
        shadow: &Shadow,
        presence: Option<&PresenceRecord>,
        now: u64,
    ) -> Outbound {
        if !shadow.exists {
            return Outbound {
                topic: Topic::state(id),
                payload: Vec::new(),
                retain: true,
            };
        }
        let mut doc = aws::render_get(shadow, &self.policies, None, now);
        stamp(&mut doc, presence);
        Outbound {
            topic: Topic::state(id),
            payload: crate::router::json_bytes(&doc),
            retain: true,
        }
    }

    fn push_to_agents(
        &self,
        id: &ShadowId,
        stored: &StoredShadow,
        skip: Option<&ReplicaId>,
        h: &mut Handled,
    ) {
        for (replica, vv) in &stored.peers {
            if Some(replica) != skip && self.wanted(&Topic::sync_down(id)) {
                if let Some(msg) = self
                    .sync_down(id, stored, vv)
                    .filter(|_| has_news(&stored.shadow, vv))
                {
                    h.out.push(Out::from(msg));
                }
            }
        }
    }

    fn sync_down(
        &self,
        id: &ShadowId,
        stored: &StoredShadow,
        agent_vv: &VersionVector,
    ) -> Option<Outbound> {
        let down = SyncDown {
            replica: self.node.clone(),
            version: stored.shadow.version,
            changes: stored.shadow.changes_since(agent_vv),
            stable: self.stable(stored),
        };
        Some(Outbound {
            topic: Topic::sync_down(id),
            payload: down.to_cbor(),
            retain: false,
        })
    }

    /// What every replica of the shadow (this broker and each agent it
    /// has heard from) has seen.
    fn stable(&self, stored: &StoredShadow) -> VersionVector {
        stable_vector(std::iter::once(stored.shadow.vv()).chain(stored.peers.values()))
    }

    fn collect_tombstones(&self, stored: &mut StoredShadow) {
        let stable = self.stable(stored);
        stored.shadow.collect_tombstones(&stable);
    }

    /// `{"desired": {"a.b": value}, "reported": {..}}`: what the agent sent
    /// for the paths the merge changed (`null` for a delete).
    fn sent_leaves(
        &self,
        up: &SyncUp,
        changed: &[(Section, shade_shared::document::Path)],
    ) -> Value {
        let mut out = Map::new();
        for register in up.changes.registers() {
            let pl = register.to_owned();
            if pl.leaves.is_empty()
                || !changed
                    .iter()
                    .any(|(s, p)| *s == pl.section && *p == pl.path)
            {
                continue;
            }
            let value = pl.leaves[self.policies.of(pl.section).winner(&pl.leaves)].json();
            let entry = out
                .entry(pl.section.as_str())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                m.insert(pl.path.to_string(), value);
            }
        }
        Value::Object(out)
    }
}

/// How many conflict records the merge that turned `before` into `after`
/// added: per path it changed, the growth of the register's losing leaves
/// (a register holds one leaf per concurrent write; all but the shown one
/// are conflicts). Two lookups per changed path, nothing fleet-wide. A
/// leaf and a leaf below it both live (`a` and `a.b`) is a conflict too
/// when rendered, but not counted here: finding it is a render.
fn added_conflicts(
    before: &Shadow,
    after: &Shadow,
    changed: &[(Section, shade_shared::document::Path)],
) -> u64 {
    let losers = |shadow: &Shadow, section: Section, path| {
        shadow
            .section(section)
            .get(path)
            .map_or(0, |register| register.len().saturating_sub(1))
    };
    changed
        .iter()
        .map(|(section, path)| {
            let grown =
                losers(after, *section, path).saturating_sub(losers(before, *section, path));
            grown as u64
        })
        .sum()
}

/// Does the shadow hold a leaf the vector has not seen?
fn has_news(shadow: &Shadow, vv: &VersionVector) -> bool {
    !vv.dominates(shadow.vv())
}
