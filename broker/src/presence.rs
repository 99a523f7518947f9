//! Presence: who is connected, told two ways.
//!
//! - AWS's lifecycle events, verbatim: on each connect and disconnect the
//!   front calls [`Presence::connected`] and [`Presence::disconnected`],
//!   which publish `$aws/events/presence/{connected,disconnected}/{clientId}`
//!   with AWS's payload to whoever subscribed (through
//!   [`Subscriptions`], like every other message of the service; readers of
//!   them are config users without a prefix, and anyone when `[auth]` is
//!   off: `crate::auth::acl`).
//! - Per thing, `connected` and `lastSeen`, kept durably and shown with each
//!   of the thing's shadows. The tracker here counts each thing's live
//!   connections; a change of a thing's state marks it dirty, and
//!   `crate::serve` hands the dirty things to the store thread in batches
//!   ([`Presence::take`]), which records them and republishes the thing's
//!   retained states. A burst of reconnects coalesces into few commits.
//!
//! Which thing a connection is: a device principal's own thing; otherwise
//! the client id, with the agent's default prefix `shade-agent-` taken off,
//! when that is a valid thing name (AWS's rule: the client id is the thing
//! name). Whatever else connects gets the lifecycle events only.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use serde_json::json;
use shade_shared::ThingName;
use tokio::sync::Notify;

use crate::identity::Principal;
use crate::store::PresenceRecord;
use crate::subscriptions::Subscriptions;

/// The agent's default client id is this and its thing's name.
const AGENT_PREFIX: &str = "shade-agent-";

/// Why a connection ended, as AWS names it in `disconnectReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The client sent DISCONNECT.
    ClientInitiated,
    /// The socket closed or failed without a DISCONNECT.
    ConnectionLost,
    /// The broker closed it (keep-alive, a protocol error, a refused
    /// publish).
    ServerInitiated,
    /// A newer connection took over its client id.
    DuplicateClientId,
    /// The secret or password it logged in with was removed or changed.
    AuthError,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::ClientInitiated => "CLIENT_INITIATED_DISCONNECT",
            Reason::ConnectionLost => "CONNECTION_LOST",
            Reason::ServerInitiated => "SERVER_INITIATED_DISCONNECT",
            Reason::DuplicateClientId => "DUPLICATE_CLIENTID",
            Reason::AuthError => "AUTH_ERROR",
        }
    }
}

/// The tracker shared by the front (connects and disconnects), the
/// store thread (a new shadow of a connected thing) and the task that
/// hands changes to the store thread.
#[derive(Debug)]
pub struct Presence {
    subscriptions: Arc<Subscriptions>,
    /// Random per process: with the connection number, a session id.
    salt: String,
    state: Mutex<Tracker>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Tracker {
    sessions: HashMap<u64, Session>,
    /// Connections handed to rumqttd and not yet answered, by client id:
    /// rumqttd closes the connection a new one takes over before it
    /// answers the new one.
    pending: HashMap<u64, String>,
    things: HashMap<String, Live>,
    /// Things whose state changed since the last [`Presence::take`].
    dirty: HashSet<String>,
    /// The last `versionNumber` handed out.
    version: u64,
}

#[derive(Debug)]
struct Session {
    client_id: String,
    thing: Option<String>,
    principal: String,
    version: u64,
}

#[derive(Debug)]
struct Live {
    connections: u32,
    record: PresenceRecord,
}

impl Presence {
    pub(crate) fn new(subscriptions: Arc<Subscriptions>, salt: String, now: u64) -> Presence {
        Presence {
            subscriptions,
            salt,
            state: Mutex::new(Tracker {
                // Each connection's number is above any of an earlier run
                // (milliseconds since the epoch, times a thousand), so the
                // events of a client stay in order across restarts.
                version: now.saturating_mul(1000),
                ..Tracker::default()
            }),
            changed: Notify::new(),
        }
    }

    /// Connection `conn` of `client_id` is on its way to rumqttd; until
    /// [`Presence::connected`] or [`Presence::abandoned`], an older
    /// connection of the same client id that rumqttd closes was taken over.
    pub(crate) fn connecting(&self, conn: u64, client_id: &str) {
        self.lock().pending.insert(conn, client_id.to_owned());
    }

    /// Connection `conn` never got its CONNACK.
    pub(crate) fn abandoned(&self, conn: u64) {
        self.lock().pending.remove(&conn);
    }

    /// Connection `conn` of `client_id` was admitted (its CONNACK sent).
    pub(crate) fn connected(
        &self,
        conn: u64,
        client_id: &str,
        principal: &Principal,
        peer: SocketAddr,
        now: u64,
    ) {
        let thing = thing_of(client_id, principal);
        let principal = principal.tag();
        let version = {
            let mut t = self.lock();
            t.pending.remove(&conn);
            t.version += 1;
            let version = t.version;
            if let Some(thing) = &thing {
                let live = t.things.entry(thing.clone()).or_insert_with(|| Live {
                    connections: 0,
                    record: offline(client_id, now),
                });
                live.connections += 1;
                if live.connections == 1 {
                    live.record = PresenceRecord {
                        connected: true,
                        last_seen: now,
                        client_id: client_id.to_owned(),
                    };
                    t.dirty.insert(thing.clone());
                }
            }
            t.sessions.insert(
                conn,
                Session {
                    client_id: client_id.to_owned(),
                    thing: thing.clone(),
                    principal: principal.clone(),
                    version,
                },
            );
            version
        };
        if thing.is_some() {
            self.changed.notify_one();
        }
        let event = json!({
            "clientId": client_id,
            "timestamp": now,
            "eventType": "connected",
            "sessionIdentifier": self.session(conn),
            "principalIdentifier": principal,
            "ipAddress": peer.ip().to_string(),
            "versionNumber": version,
        });
        self.publish("connected", client_id, &event);
    }

    /// Connection `conn` ended. `reason` is what the front saw; a broker
    /// close is a takeover when a newer connection holds the client id.
    pub(crate) fn disconnected(&self, conn: u64, reason: Reason, now: u64) {
        let (session, reason, changed) = {
            let mut t = self.lock();
            let Some(session) = t.sessions.remove(&conn) else {
                return;
            };
            let id = &session.client_id;
            let taken_over = t
                .sessions
                .iter()
                .any(|(c, s)| *c > conn && s.client_id == *id)
                || t.pending.iter().any(|(c, p)| *c > conn && p == id);
            let reason = match reason {
                Reason::ServerInitiated if taken_over => Reason::DuplicateClientId,
                r => r,
            };
            let mut changed = false;
            if let Some(thing) = &session.thing {
                if let Some(live) = t.things.get_mut(thing) {
                    live.connections = live.connections.saturating_sub(1);
                    if live.connections == 0 {
                        live.record = offline(&session.client_id, now);
                        changed = true;
                    }
                }
                if changed {
                    t.dirty.insert(thing.clone());
                }
            }
            (session, reason, changed)
        };
        if changed {
            self.changed.notify_one();
        }
        let event = json!({
            "clientId": session.client_id,
            "timestamp": now,
            "eventType": "disconnected",
            "sessionIdentifier": self.session(conn),
            "principalIdentifier": session.principal,
            "clientInitiatedDisconnect": reason == Reason::ClientInitiated,
            "disconnectReason": reason.as_str(),
            "versionNumber": session.version,
        });
        self.publish("disconnected", &session.client_id, &event);
    }

    /// The things whose state changed since the last call, each with its
    /// state now. A thing no longer connected is forgotten here once
    /// taken: the store holds it from then on.
    pub(crate) fn take(&self) -> Vec<(String, PresenceRecord)> {
        let mut t = self.lock();
        let dirty: Vec<String> = t.dirty.drain().collect();
        let mut out = Vec::with_capacity(dirty.len());
        for thing in dirty {
            let Some(live) = t.things.get(&thing) else {
                continue;
            };
            out.push((thing.clone(), live.record.clone()));
            if live.connections == 0 {
                t.things.remove(&thing);
            }
        }
        out
    }

    /// Waits until [`Presence::take`] has something.
    pub(crate) async fn wait(&self) {
        self.changed.notified().await;
    }

    /// The state of `thing` if it is connected now (for a shadow created
    /// while its thing is online).
    pub(crate) fn live(&self, thing: &str) -> Option<PresenceRecord> {
        let t = self.lock();
        t.things
            .get(thing)
            .filter(|l| l.connections > 0)
            .map(|l| l.record.clone())
    }

    /// Connections each connected thing has, for the metrics.
    pub(crate) fn connected_things(&self) -> usize {
        self.lock()
            .things
            .values()
            .filter(|l| l.connections > 0)
            .count()
    }

    fn session(&self, conn: u64) -> String {
        format!("{}{conn:016x}", self.salt)
    }

    fn publish(&self, kind: &str, client_id: &str, event: &serde_json::Value) {
        // A client id that is not one topic level has no event topic.
        if client_id.is_empty() || client_id.contains(['/', '+', '#', '\0']) {
            return;
        }
        let topic = format!("$aws/events/presence/{kind}/{client_id}");
        if self.subscriptions.wants(&topic) {
            let payload = Bytes::from(event.to_string());
            self.subscriptions.deliver(&topic, &payload);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tracker> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn offline(client_id: &str, now: u64) -> PresenceRecord {
    PresenceRecord {
        connected: false,
        last_seen: now,
        client_id: client_id.to_owned(),
    }
}

/// The thing a connection stands for, if any (see the module's docs).
fn thing_of(client_id: &str, principal: &Principal) -> Option<String> {
    if let Principal::Device { thing } = principal {
        return Some(thing.to_string());
    }
    let name = client_id.strip_prefix(AGENT_PREFIX).unwrap_or(client_id);
    ThingName::new(name).ok().map(|t| t.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceGrants;
    use crate::wire::Version;

    fn presence() -> (Presence, tokio::sync::mpsc::Receiver<Bytes>) {
        let subs = Arc::new(Subscriptions::new(Arc::new(DeviceGrants::default())));
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        subs.open(99, tx);
        subs.identify(99, Principal::Anonymous, Version::V4);
        subs.add(99, "$aws/events/presence/+/+");
        (Presence::new(subs, "ab".repeat(8), 1_000), rx)
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 5000))
    }

    #[test]
    fn a_thing_is_connected_while_any_of_its_connections_is() {
        let (p, _rx) = presence();
        p.connected(1, "lamp", &Principal::Anonymous, peer(), 10);
        p.connected(2, "shade-agent-lamp", &Principal::Anonymous, peer(), 11);
        let taken = p.take();
        assert_eq!(taken.len(), 1);
        assert!(taken[0].1.connected);
        assert_eq!((taken[0].0.as_str(), taken[0].1.last_seen), ("lamp", 10));
        p.disconnected(1, Reason::ClientInitiated, 20);
        assert!(p.take().is_empty(), "one connection is left");
        assert!(p.live("lamp").is_some());
        p.disconnected(2, Reason::ConnectionLost, 30);
        let taken = p.take();
        assert_eq!(taken.len(), 1);
        assert!(!taken[0].1.connected);
        assert_eq!(taken[0].1.last_seen, 30);
        assert!(p.live("lamp").is_none());
        assert_eq!(p.connected_things(), 0);
    }

    #[test]
    fn lifecycle_events_carry_aws_fields_and_a_takeover_is_a_duplicate_client_id() {
        let (p, mut rx) = presence();
        p.connected(1, "lamp", &Principal::Anonymous, peer(), 10);
        // rumqttd closes the old connection before it answers the new one.
        p.connecting(2, "lamp");
        p.disconnected(1, Reason::ServerInitiated, 12);
        p.connected(2, "lamp", &Principal::Anonymous, peer(), 11);
        let mut texts = Vec::new();
        while let Ok(packet) = rx.try_recv() {
            texts.push(String::from_utf8_lossy(&packet).into_owned());
        }
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert!(texts[0].contains("$aws/events/presence/connected/lamp"));
        assert!(texts[0].contains("\"eventType\":\"connected\""));
        assert!(texts[0].contains("\"ipAddress\":\"127.0.0.1\""));
        assert!(texts[1].contains("$aws/events/presence/disconnected/lamp"));
        assert!(texts[1].contains("\"disconnectReason\":\"DUPLICATE_CLIENTID\""));
        assert!(texts[1].contains("\"clientInitiatedDisconnect\":false"));
        assert!(
            p.live("lamp").is_some(),
            "the new connection holds the thing"
        );
    }

    #[test]
    fn a_client_id_that_is_not_a_thing_name_gets_events_but_no_presence() {
        let (p, mut rx) = presence();
        p.connected(1, "dash board", &Principal::Anonymous, peer(), 10);
        assert!(p.take().is_empty());
        assert!(rx.try_recv().is_ok(), "the event still goes out");
        let device = Principal::Device {
            thing: Arc::from("t9"),
        };
        p.connected(2, "anything at all", &device, peer(), 10);
        assert_eq!(p.take()[0].0, "t9", "a device is its own thing");
    }
}
