//! The per-connection gateway between MQTT clients and rumqttd's router.
//!
//! rumqttd 0.20 cannot tell the service who published a message, refuses
//! subscriptions to `$` filters and never routes `$` topics (DESIGN.md,
//! "Durability and identity"). [`Gateway`] wraps rumqttd's codecs (`V4`, `V5`)
//! and rewrites every topic that crosses the wire, so the router only ever
//! sees an internal namespace in which those three gaps disappear:
//!
//! | router topic            | written by                     | clients see        |
//! |-------------------------|--------------------------------|--------------------|
//! | `_c/<t>`                | clients (`<t>`)                | `<t>`              |
//! | `_aws/<rest>`           | nobody any more (below)        | `$aws/<rest>`      |
//! | `_in/requests`          | the gateway, stamping each request with its publisher | never |
//! | `_r/<escaped tag>/<x>`  | the service, replying to a principal | `shade/ops/reply/<x>`, that principal only |
//! | `_void/<filter>`        | nobody (other `$` filters land here, e.g. `$SYS/#`) | nothing |
//! | `_void/service`         | nobody: the filter of every subscription only the service's messages match | nothing |
//! | `$shade/dropped`        | refused publishes              | never: rumqttd routes no `$` topic |
//!
//! Every client filter is rewritten to start with the literal level `_c`,
//! `_aws`, `_r/<own tag>` or `_void`, so no client filter, `#` included, can
//! match `_in/...` or another principal's replies:
//! the service's inbound traffic is private by construction, and a `#`
//! subscriber does not see `$aws` replies (as the MQTT spec wants). Requests
//! (`$aws/things/+/shadow/{get,update,delete}`, the named-shadow forms and
//! `.../sync/up`) are stamped with the publisher's client id, which the
//! gateway learns from CONNECT (or from the CONNACK when rumqttd assigns one),
//! so a client cannot speak for another. Everything else under `$`, `_` or
//! `shade/` belongs to the service and is refused.
//!
//! Identity and authorization: connections arrive from the
//! [front](crate::front), which authenticated the CONNECT and sends a
//! preamble with a per-process secret and the principal's tag first; a
//! connection without it is refused. With authentication on, the client id
//! becomes `<tag>|<client id>` inside the broker, so two principals never
//! collide on an id (rumqttd drops the older connection of a duplicate id)
//! and the service reads the principal off every stamped request. Each
//! publish, subscription and outgoing message is checked against
//! [`crate::auth::acl`]; a refusal is logged with the identity and the topic and
//! answered as MQTT allows: a SUBACK failure code for a subscription, a
//! PUBACK "not authorized" for an MQTT 5 QoS 1 publish, and otherwise a
//! closed connection (3.1.1 has no way to refuse a publish).
//!
//! The service's own messages (`$aws/things/...`, `shade/things/...`) do
//! not cross the router: the gateway records each filter that can match
//! them in [`Subscriptions`] under the front's connection number, and the
//! service's link delivers them into that connection's outbox (see
//! `crate::subscriptions`). After the SUBACK of a subscription to state
//! topics, the gateway writes the retained states it matches
//! ([`Retained`]).
//!
//! Each connection may speak MQTT 3.1.1 or 5: the gateway reads the protocol
//! level from the CONNECT and uses the matching rumqttd codec from then on,
//! so one listener serves both.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{
    ConnAckProperties, Error, Packet, Protocol, PubAckReason, Publish, QoS, RetainForwardRule,
    SubscribeReasonCode,
};
use tracing::{error, warn};

use super::retained::Retained;
use crate::auth::acl::Access;
use crate::auth::Auth;
use crate::identity::Principal;
use crate::subscriptions::{reaches_service, Subscriptions};

mod namespace;

pub use crate::wire::{peek_publish, preamble};
use crate::wire::{read_preamble, refuse_server_only_packets, without_properties};
pub(crate) use crate::wire::{sniff_version, Version};
use namespace::stamp;
use namespace::{
    catches_state, client_filter, client_view, escape_client_id, route, valid_filter, void, Route,
};
pub(crate) use namespace::{reply_topic, service_topic, unstamp, REQUESTS};

/// Client id of the service's in-process link. The gateway refuses remote
/// clients that claim it: rumqttd drops the older connection on a duplicate
/// id, which would silently cut the service off.
pub(crate) const SERVICE_CLIENT_ID: &str = "_shade-service";
/// The filter the service link subscribes to: every stamped request.
pub(crate) const SERVICE_FILTER: &str = REQUESTS;

/// A sink: rumqttd acks a publish to a `$` topic and routes it nowhere, so
/// refusing a publish this way keeps the client's QoS flow intact.
const DROPPED: &str = "$shade/dropped";

/// The router filter of every subscription that only the service's own
/// messages can match: those are delivered by shade, not the router.
const SERVICE_ONLY: &str = "_void/service";

/// The filter a subscription matches topics with: `$share/group/` is only
/// how the messages are spread.
fn effective(filter: &str) -> &str {
    match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or("", |(_, inner)| inner),
        None => filter,
    }
}

/// Whether `filter` can match a topic clients publish: anything not under
/// `$`, `_` or `shade/`, which belong to the broker (see the module docs).
fn reaches_clients(filter: &str) -> bool {
    let first = filter.split('/').next().unwrap_or("");
    matches!(first, "+" | "#") || !(first.starts_with(['$', '_']) || first == "shade")
}

/// What every connection's gateway shares.
#[derive(Debug)]
pub struct GatewayContext {
    /// The front's preamble secret.
    pub secret: Arc<str>,
    pub auth: Auth,
    /// Every connection's filters, kept up to date by the gateways.
    pub subscriptions: Arc<Subscriptions>,
    /// The service's retained messages, which gateways deliver to new
    /// subscriptions themselves.
    pub retained: Arc<Retained>,
}

/// rumqttd's `Protocol` for one client connection, with shade's topic
/// rewriting, identity stamping and authorization. See the module docs.
#[derive(Debug)]
pub struct Gateway {
    ctx: Arc<GatewayContext>,
    /// Set by the front's preamble, before the CONNECT.
    principal: Option<Principal>,
    /// Set by the first packet, the CONNECT.
    version: Option<Version>,
    /// The publisher's client id inside the broker. A `OnceLock` because the
    /// id may only be known in `write` (`&self`), when rumqttd assigns one.
    identity: OnceLock<String>,
    /// A client id this gateway chose for a client that sent an empty one,
    /// to put in the CONNACK (MQTT 5).
    assigned: Option<String>,
    /// Refusals to patch into acks `write` sends (`write` has `&self`):
    /// SUBSCRIBE packet id -> indices of refused filters; packet ids of
    /// refused MQTT 5 QoS 1 publishes.
    refused_filters: Mutex<HashMap<u16, Vec<usize>>>,
    refused_publishes: Mutex<HashSet<u16>>,
    /// The front's number for this connection: its outbox in the shared
    /// [`Subscriptions`], which holds its filters on the service's topics.
    conn: u64,
    /// SUBSCRIBE packet id -> (index, filter) of the filters that may
    /// catch retained service messages, delivered after their SUBACK.
    snapshots: Mutex<HashMap<u16, Vec<(usize, String)>>>,
    /// MQTT 5 topic aliases this client set on a request topic: a later
    /// publish by alias alone must be stamped again.
    request_aliases: HashMap<u16, String>,
}

/// Where a client's publish goes.
enum Routed {
    /// On this router topic, unchanged.
    Plain(String),
    /// To the service, stamped, on [`REQUESTS`]; the topic as written.
    Request(String),
}

impl Gateway {
    /// The template `rumqttd::Server` clones for every connection.
    pub fn new(ctx: Arc<GatewayContext>) -> Gateway {
        Gateway {
            ctx,
            principal: None,
            version: None,
            identity: OnceLock::new(),
            assigned: None,
            refused_filters: Mutex::new(HashMap::new()),
            refused_publishes: Mutex::new(HashSet::new()),
            conn: 0,
            snapshots: Mutex::new(HashMap::new()),
            request_aliases: HashMap::new(),
        }
    }
}

impl Clone for Gateway {
    /// `rumqttd::Server` clones its template protocol once per accepted
    /// connection, so a clone is a fresh gateway that has seen no CONNECT.
    fn clone(&self) -> Self {
        Gateway::new(self.ctx.clone())
    }
}

impl Protocol for Gateway {
    fn read_mut(&mut self, stream: &mut BytesMut, max_size: usize) -> Result<Packet, Error> {
        if self.principal.is_none() {
            let (conn, tag) = read_preamble(stream, &self.ctx.secret).inspect_err(|e| {
                if !matches!(e, Error::InsufficientBytes(_)) {
                    warn!("refusing a connection that did not come through shade's listeners");
                }
            })?;
            let principal = Principal::from_tag(&tag, &self.ctx.auth.users.current())
                // Anonymous exactly when authentication is off.
                .filter(|p| self.ctx.auth.enabled != (*p == Principal::Anonymous))
                .ok_or(Error::InvalidProtocol)?;
            self.principal = Some(principal);
            self.conn = conn;
        }
        let version = match self.version {
            Some(version) => version,
            None => {
                let version = sniff_version(stream)?;
                self.version = Some(version);
                version
            }
        };
        refuse_server_only_packets(stream)?;
        let publish = peek_publish(stream);
        let packet = match version {
            Version::V4 => V4.read_mut(stream, max_size)?,
            Version::V5 => V5.read_mut(stream, max_size)?,
        };
        self.rewrite_from_client(packet, publish)
    }

    fn write(&self, packet: Packet, buffer: &mut BytesMut) -> Result<usize, Error> {
        let (packet, readable) = self.rewrite_to_client(packet)?;
        let start = buffer.len();
        let snapshot = match &packet {
            Packet::SubAck(ack, _) => self
                .lock_snapshots()
                .remove(&ack.pkid)
                .map(|filters| (filters, ack.return_codes.clone())),
            _ => None,
        };
        let mut written = self.encode(packet, buffer)?;
        if let Some((filters, codes)) = snapshot {
            written += self.write_retained(&filters, &codes, buffer)?;
        }
        if !readable {
            // A message the client may not read: it came through a
            // filtered wildcard subscription, which is QoS 0, so skipping
            // it breaks no acknowledgement flow (see `crate::auth::acl`).
            if peek_publish(&buffer[start..]).is_some_and(|(qos, _)| qos == 0) {
                buffer.truncate(start);
                return Ok(0);
            }
            error!(
                client_id = self.client_id(),
                "refusing to deliver an unreadable QoS 1 message"
            );
            return Err(Error::IncorrectPacketFormat);
        }
        Ok(written)
    }
}

impl Gateway {
    fn encode(&self, packet: Packet, buffer: &mut BytesMut) -> Result<usize, Error> {
        match self.version.unwrap_or(Version::V4) {
            Version::V4 => V4.write(without_properties(packet), buffer),
            Version::V5 => V5.write(packet, buffer),
        }
    }

    /// Writes, after a SUBACK, the retained service messages that its
    /// granted `filters` match and this client may read: as retained QoS 0
    /// messages (state filters are granted QoS 0, see `rewrite_from_client`).
    fn write_retained(
        &self,
        filters: &[(usize, String)],
        codes: &[SubscribeReasonCode],
        buffer: &mut BytesMut,
    ) -> Result<usize, Error> {
        let mut written = 0;
        let mut result = Ok(());
        for (i, filter) in filters {
            let granted = matches!(
                codes.get(*i),
                Some(
                    SubscribeReasonCode::QoS0
                        | SubscribeReasonCode::QoS1
                        | SubscribeReasonCode::Success(_)
                )
            );
            if !granted {
                continue;
            }
            self.ctx.retained.matching(filter, |topic, payload| {
                if result.is_err() || !self.principal().may_read(topic, &self.ctx.auth.grants) {
                    return;
                }
                let topic = Bytes::copy_from_slice(topic.as_bytes());
                let publish = Publish::new(topic, payload.clone(), true);
                match self.encode(Packet::Publish(publish, None), buffer) {
                    Ok(n) => written += n,
                    Err(e) => result = Err(e),
                }
            });
        }
        result.map(|()| written)
    }

    fn client_id(&self) -> &str {
        self.identity.get().map_or("<unknown>", String::as_str)
    }

    fn principal(&self) -> &Principal {
        self.principal.as_ref().unwrap_or(&Principal::Anonymous)
    }

    fn tag(&self) -> String {
        self.principal().tag()
    }

    /// Rewrites a packet read from the client into the router's namespace.
    /// `publish` is the QoS and packet id of a PUBLISH, read off its bytes.
    fn rewrite_from_client(
        &mut self,
        packet: Packet,
        publish_header: Option<(u8, u16)>,
    ) -> Result<Packet, Error> {
        Ok(match packet {
            Packet::Connect(mut connect, mut props, mut will, will_props, _login) => {
                if connect.client_id == SERVICE_CLIENT_ID {
                    warn!(client_id = %connect.client_id, "refusing a client that claims the service's client id");
                    return Err(Error::IncorrectPacketFormat);
                }
                if self.ctx.auth.enabled {
                    if connect.client_id.is_empty() {
                        let id = format!(
                            "shade-{}",
                            random_hex().map_err(|_| Error::IncorrectPacketFormat)?
                        );
                        self.assigned = Some(id.clone());
                        connect.client_id = id;
                    }
                    connect.client_id = format!("{}|{}", self.tag(), connect.client_id);
                } else if connect.client_id.contains('|') {
                    // Without authentication the stamp is the bare id, and
                    // `|` would read as the end of a principal tag (replies
                    // to `shade/ops` went to the wrong namespace): encode it.
                    connect.client_id = connect.client_id.replace('%', "%25").replace('|', "%7C");
                }
                if !connect.client_id.is_empty() {
                    // Cannot fail: this is the connection's only CONNECT
                    // (rumqttd treats a second one as a protocol error).
                    let _ = self.identity.set(connect.client_id.clone());
                }
                let version = self.version.unwrap_or(Version::V4);
                self.ctx
                    .subscriptions
                    .identify(self.conn, self.principal().clone(), version);
                // rumqttd 0.20's router refuses an id holding `+ $ # /`
                // after its listener has registered the id's will handler;
                // the next CONNECT with that id then panics inside rumqttd
                // while holding that handlers' lock, which poisons it, and
                // from then on no client can connect. So the router gets
                // the id percent-encoded (one-to-one: `%` is encoded too);
                // the stamp above keeps the id as the client sent it.
                connect.client_id = escape_client_id(&connect.client_id);
                // rumqttd 0.20 keys the aliases it assigns by subscription
                // filter, not topic, so a wildcard subscriber would get later
                // messages under the first message's topic. Without a
                // client-side alias maximum it assigns none.
                if let Some(props) = props.as_mut() {
                    props.topic_alias_max = None;
                }
                if let Some(will) = will.as_mut() {
                    let mut retain = will.retain;
                    let routed = self.route_publish(&will.topic, &mut retain)?;
                    self.apply(routed, &mut will.topic, &mut will.message)?;
                    will.retain = retain;
                }
                // The front checked the credentials; rumqttd has no use for
                // them, and they stay out of its logs.
                Packet::Connect(connect, props, will, will_props, None)
            }
            Packet::Publish(mut publish, props) => {
                let alias = props.as_ref().and_then(|p| p.topic_alias);
                if let (Some(alias), true) = (alias, publish.topic.is_empty()) {
                    // An empty topic with an alias: for plain traffic the
                    // router substitutes the internal topic it recorded
                    // when the alias was set; a request must be stamped
                    // again, with the topic this gateway recorded.
                    if let Some(topic) = self.request_aliases.get(&alias).cloned() {
                        let mut payload = std::mem::take(&mut publish.payload);
                        self.apply(Routed::Request(topic), &mut publish.topic, &mut payload)?;
                        publish.payload = payload;
                    }
                    return Ok(Packet::Publish(publish, props));
                }
                match self.route_publish(&publish.topic, &mut publish.retain) {
                    Ok(routed) => {
                        if let Some(alias) = alias {
                            match &routed {
                                Routed::Request(topic) => {
                                    self.request_aliases.insert(alias, topic.clone());
                                }
                                Routed::Plain(_) => {
                                    self.request_aliases.remove(&alias);
                                }
                            }
                        }
                        let mut payload = std::mem::take(&mut publish.payload);
                        self.apply(routed, &mut publish.topic, &mut payload)?;
                        publish.payload = payload;
                    }
                    // MQTT 5 can refuse a QoS 1 publish in its PUBACK.
                    Err(_)
                        if self.version == Some(Version::V5)
                            && publish_header.is_some_and(|(qos, _)| qos > 0) =>
                    {
                        let pkid = publish_header.map_or(0, |(_, pkid)| pkid);
                        self.lock_publishes().insert(pkid);
                        publish.retain = false;
                        publish.topic = DROPPED.into();
                    }
                    Err(e) => return Err(e),
                }
                Packet::Publish(publish, props)
            }
            Packet::Subscribe(mut subscribe, props) => {
                let tag = self.tag();
                let mut refused = Vec::new();
                let mut snapshots = Vec::new();
                for (i, filter) in subscribe.filters.iter_mut().enumerate() {
                    let access = if valid_filter(&filter.path) {
                        self.principal()
                            .subscribe(&filter.path, &self.ctx.auth.grants)
                    } else {
                        Access::Denied("not a valid MQTT topic filter")
                    };
                    match access {
                        Access::Denied(reason) => {
                            warn!(client_id = self.client_id(), filter = %filter.path, reason, "refusing a subscription");
                            refused.push(i);
                            filter.path = void(&filter.path);
                            continue;
                        }
                        // Lets `write` drop what the client may not read
                        // without breaking a QoS 1 flow (see `crate::auth::acl`).
                        Access::Filtered => filter.qos = QoS::AtMostOnce,
                        Access::Full => {}
                    }
                    if catches_state(&filter.path) {
                        // rumqttd hands a new QoS 1 subscription at most 100
                        // retained messages (its fixed inflight window) and
                        // drops the rest; at QoS 0 the cap is the router's
                        // per-pass count, which we size for every shadow.
                        // The state topics are snapshots, each superseded by
                        // the next, so QoS 0 loses nothing a reader needs,
                        // and MQTT lets a server grant less than was asked.
                        filter.qos = QoS::AtMostOnce;
                        // MQTT 5 sends no retained messages to a shared
                        // subscription, nor when the client asks for none.
                        let shared = filter.path.starts_with("$share/");
                        if !shared && filter.retain_forward_rule != RetainForwardRule::Never {
                            snapshots.push((i, filter.path.clone()));
                        }
                    }
                    let matching = effective(&filter.path);
                    let service = reaches_service(matching);
                    if service {
                        // Delivered by shade itself (see `Subscriptions`).
                        self.ctx.subscriptions.add(self.conn, matching);
                    }
                    filter.path = if !service || reaches_clients(matching) {
                        client_filter(&filter.path, &tag)
                    } else {
                        // Nothing is published there: one filter for all,
                        // so rumqttd's filter table does not grow with the
                        // fleet.
                        SERVICE_ONLY.to_owned()
                    };
                }
                if !refused.is_empty() {
                    self.lock_filters().insert(subscribe.pkid, refused);
                }
                if !snapshots.is_empty() {
                    self.lock_snapshots().insert(subscribe.pkid, snapshots);
                }
                Packet::Subscribe(subscribe, props)
            }
            Packet::Unsubscribe(mut unsubscribe, props) => {
                let tag = self.tag();
                for filter in &mut unsubscribe.filters {
                    let matching = effective(filter);
                    self.ctx.subscriptions.remove(self.conn, matching);
                    *filter = if !reaches_service(matching) || reaches_clients(matching) {
                        client_filter(filter, &tag)
                    } else {
                        SERVICE_ONLY.to_owned()
                    };
                }
                Packet::Unsubscribe(unsubscribe, props)
            }
            other => other,
        })
    }

    /// Rewrites a packet from the router into what the client sees, and
    /// whether the client may read it.
    fn rewrite_to_client(&self, packet: Packet) -> Result<(Packet, bool), Error> {
        let mut readable = true;
        let packet = match packet {
            Packet::ConnAck(ack, mut props) => {
                if let Some(id) = props
                    .as_ref()
                    .and_then(|p| p.assigned_client_identifier.as_ref())
                {
                    let _ = self.identity.set(id.clone());
                }
                if let Some(id) = &self.assigned {
                    props
                        .get_or_insert_with(ConnAckProperties::default)
                        .assigned_client_identifier = Some(id.clone());
                }
                Packet::ConnAck(ack, props)
            }
            // An empty topic would be a broker-assigned alias, which
            // `rewrite_from_client` disables; leave it alone rather than guess.
            Packet::Publish(mut publish, props) if !publish.topic.is_empty() => {
                let visible = std::str::from_utf8(&publish.topic)
                    .ok()
                    .and_then(client_view);
                let Some(visible) = visible else {
                    // Unreachable by construction (no client filter matches
                    // anything else); fail closed by dropping the connection
                    // rather than leak a stamped request.
                    error!(client_id = self.client_id(), topic = ?publish.topic, "refusing to deliver an internal topic");
                    return Err(Error::IncorrectPacketFormat);
                };
                readable = self.principal().may_read(&visible, &self.ctx.auth.grants);
                publish.topic = visible.into();
                Packet::Publish(publish, props)
            }
            Packet::SubAck(mut ack, props) => {
                if let Some(refused) = self.lock_filters().remove(&ack.pkid) {
                    let code = match self.version {
                        Some(Version::V5) => SubscribeReasonCode::NotAuthorized,
                        _ => SubscribeReasonCode::Failure,
                    };
                    for i in refused {
                        if let Some(slot) = ack.return_codes.get_mut(i) {
                            *slot = code;
                        }
                    }
                }
                Packet::SubAck(ack, props)
            }
            Packet::PubAck(mut ack, props) => {
                if self.lock_publishes().remove(&ack.pkid) {
                    ack.reason = PubAckReason::NotAuthorized;
                }
                Packet::PubAck(ack, props)
            }
            other => other,
        };
        Ok((packet, readable))
    }

    /// Decides where a topic this client publishes (or leaves as its will)
    /// goes, and returns the router topic, or the refusal.
    fn route_publish(&self, topic: &[u8], retain: &mut bool) -> Result<Routed, Error> {
        let Ok(topic) = std::str::from_utf8(topic) else {
            return Err(self.refuse(&String::from_utf8_lossy(topic), "topic is not UTF-8"));
        };
        let route = route(topic);
        if let Route::Refused(reason) = route {
            return Err(self.refuse(topic, reason));
        }
        if let Err(reason) = self.principal().may_publish(topic, &self.ctx.auth.grants) {
            return Err(self.refuse(topic, reason));
        }
        match route {
            Route::Service => match self.identity.get() {
                Some(_) => {
                    // A request is an event, not state: never keep it.
                    *retain = false;
                    Ok(Routed::Request(topic.to_owned()))
                }
                None => Err(self.refuse(topic, "the publisher has no client id yet")),
            },
            Route::Clients | Route::Refused(_) => {
                Ok(Routed::Plain(format!("{}/{topic}", namespace::CLIENTS)))
            }
        }
    }

    /// Rewrites `topic` and `payload` of a publish (or will) as routed.
    fn apply(&self, routed: Routed, topic: &mut Bytes, payload: &mut Bytes) -> Result<(), Error> {
        match routed {
            Routed::Plain(router_topic) => *topic = router_topic.into(),
            Routed::Request(client_topic) => {
                let id = self.identity.get().map_or("", String::as_str);
                let Some(framed) = stamp(id, &client_topic, payload) else {
                    return Err(self.refuse(&client_topic, "client id too long to stamp"));
                };
                *topic = Bytes::from_static(REQUESTS.as_bytes());
                *payload = framed.into();
            }
        }
        Ok(())
    }

    fn refuse(&self, topic: &str, reason: &str) -> Error {
        warn!(
            client_id = self.client_id(),
            principal = %self.tag(),
            topic, reason, "refusing a publish the client may not make"
        );
        Error::IncorrectPacketFormat
    }

    fn lock_filters(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Vec<usize>>> {
        self.refused_filters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_snapshots(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Vec<(usize, String)>>> {
        self.snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_publishes(&self) -> std::sync::MutexGuard<'_, HashSet<u16>> {
        self.refused_publishes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// 16 bytes from the OS's random source, as hex: assigned client ids and
/// the preamble secret.
pub(crate) fn random_hex() -> Result<String, getrandom::Error> {
    use std::fmt::Write;
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}
