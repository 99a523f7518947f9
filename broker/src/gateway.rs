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
//! | `_c/<t>`                | clients (`<t>`) and the service | `<t>`              |
//! | `_aws/<rest>`           | the service only               | `$aws/<rest>`      |
//! | `_in/<escaped id>/<t>`  | the gateway, for the publisher | never              |
//! | `_void/<filter>`        | nobody (other `$` filters land here, e.g. `$SYS/#`) | nothing |
//! | `$shade/dropped`        | refused publishes              | never: rumqttd routes no `$` topic |
//!
//! Every client filter is rewritten to start with the literal level `_c`,
//! `_aws` or `_void`, so no client filter, `#` included, can match `_in/...`:
//! the service's inbound traffic is private by construction, and a `#`
//! subscriber does not see `$aws` replies (as the MQTT spec wants). Requests
//! (`$aws/things/+/shadow/{get,update,delete}`, the named-shadow forms and
//! `.../sync/up`) are stamped with the publisher's client id, which the
//! gateway learns from CONNECT (or from the CONNACK when rumqttd assigns one),
//! so a client cannot speak for another. Everything else under `$`, `_` or
//! `shade/` belongs to the service and is dropped with a warning.
//!
//! Each connection may speak MQTT 3.1.1 or 5: the gateway reads the protocol
//! level from the CONNECT and uses the matching rumqttd codec from then on,
//! so one listener serves both.

use std::sync::OnceLock;

use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{Error, Packet, Protocol};
use tracing::{error, warn};

/// Client id of the service's in-process link. The gateway refuses remote
/// clients that claim it: rumqttd drops the older connection on a duplicate
/// id, which would silently cut the service off.
pub const SERVICE_CLIENT_ID: &str = "_shade-service";
/// The filter the service link subscribes to: every stamped request.
pub const SERVICE_FILTER: &str = "_in/#";

const CLIENTS: &str = "_c";
const AWS: &str = "_aws";
const INBOUND: &str = "_in";
const VOID: &str = "_void";
/// A sink: rumqttd acks a publish to a `$` topic and routes it nowhere, so
/// refusing a publish this way keeps the client's QoS flow intact.
const DROPPED: &str = "$shade/dropped";

/// Which rumqttd codec a connection speaks, read from its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V4,
    V5,
}

/// rumqttd's `Protocol` for one client connection, with shade's topic
/// rewriting and identity stamping. See the module docs.
#[derive(Debug, Default)]
pub struct Gateway {
    /// Set by the first `read_mut`, which always frames the CONNECT.
    version: Option<Version>,
    /// The publisher's client id. A `OnceLock` because the id may only be
    /// known in `write` (`&self`), when rumqttd assigns one to an empty id.
    identity: OnceLock<String>,
}

impl Clone for Gateway {
    /// `rumqttd::Server` clones its template protocol once per accepted
    /// connection, so a clone is a fresh gateway that has seen no CONNECT.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Protocol for Gateway {
    fn read_mut(&mut self, stream: &mut BytesMut, max_size: usize) -> Result<Packet, Error> {
        let version = match self.version {
            Some(version) => version,
            None => {
                let version = sniff_version(stream)?;
                self.version = Some(version);
                version
            }
        };
        refuse_server_only_packets(stream)?;
        let packet = match version {
            Version::V4 => V4.read_mut(stream, max_size)?,
            Version::V5 => V5.read_mut(stream, max_size)?,
        };
        self.rewrite_from_client(packet)
    }

    fn write(&self, packet: Packet, buffer: &mut BytesMut) -> Result<usize, Error> {
        let packet = self.rewrite_to_client(packet)?;
        match self.version.unwrap_or(Version::V4) {
            Version::V4 => V4.write(without_properties(packet), buffer),
            Version::V5 => V5.write(packet, buffer),
        }
    }
}

impl Gateway {
    fn client_id(&self) -> &str {
        self.identity.get().map_or("<unknown>", String::as_str)
    }

    /// Rewrites a packet read from the client into the router's namespace.
    fn rewrite_from_client(&mut self, packet: Packet) -> Result<Packet, Error> {
        Ok(match packet {
            Packet::Connect(connect, mut props, mut will, will_props, login) => {
                if connect.client_id == SERVICE_CLIENT_ID {
                    warn!(client_id = %connect.client_id, "refusing a client that claims the service's client id");
                    return Err(Error::IncorrectPacketFormat);
                }
                if !connect.client_id.is_empty() {
                    // Cannot fail: this is the connection's only CONNECT
                    // (rumqttd treats a second one as a protocol error).
                    let _ = self.identity.set(connect.client_id.clone());
                }
                // rumqttd 0.20 keys the aliases it assigns by subscription
                // filter, not topic, so a wildcard subscriber would get later
                // messages under the first message's topic. Without a
                // client-side alias maximum it assigns none.
                if let Some(props) = props.as_mut() {
                    props.topic_alias_max = None;
                }
                if let Some(will) = will.as_mut() {
                    will.topic = self.route_publish(&will.topic, &mut will.retain).into();
                }
                Packet::Connect(connect, props, will, will_props, login)
            }
            Packet::Publish(mut publish, props) => {
                // An empty topic with an alias: the router substitutes the
                // internal topic it recorded when the alias was set, which
                // this gateway had already routed.
                let aliased = props.as_ref().is_some_and(|p| p.topic_alias.is_some());
                if !(aliased && publish.topic.is_empty()) {
                    publish.topic = self
                        .route_publish(&publish.topic, &mut publish.retain)
                        .into();
                }
                Packet::Publish(publish, props)
            }
            Packet::Subscribe(mut subscribe, props) => {
                for filter in &mut subscribe.filters {
                    if catches_state(&filter.path) {
                        // rumqttd hands a new QoS 1 subscription at most 100
                        // retained messages (its fixed inflight window) and
                        // drops the rest; at QoS 0 the cap is the router's
                        // per-pass count, which we size for every shadow.
                        // The state topics are snapshots, each superseded by
                        // the next, so QoS 0 loses nothing a reader needs,
                        // and MQTT lets a server grant less than was asked.
                        filter.qos = rumqttd::protocol::QoS::AtMostOnce;
                    }
                    filter.path = client_filter(&filter.path);
                }
                Packet::Subscribe(subscribe, props)
            }
            Packet::Unsubscribe(mut unsubscribe, props) => {
                for filter in &mut unsubscribe.filters {
                    *filter = client_filter(filter);
                }
                Packet::Unsubscribe(unsubscribe, props)
            }
            other => other,
        })
    }

    /// Rewrites a packet from the router into what the client sees.
    fn rewrite_to_client(&self, packet: Packet) -> Result<Packet, Error> {
        Ok(match packet {
            Packet::ConnAck(ack, props) => {
                if let Some(id) = props
                    .as_ref()
                    .and_then(|p| p.assigned_client_identifier.as_ref())
                {
                    let _ = self.identity.set(id.clone());
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
                publish.topic = visible.into();
                Packet::Publish(publish, props)
            }
            other => other,
        })
    }

    /// Decides where a topic this client publishes (or leaves as its will)
    /// goes, and returns the router topic. Refusals are logged and sunk.
    fn route_publish(&self, topic: &[u8], retain: &mut bool) -> String {
        let Ok(topic) = std::str::from_utf8(topic) else {
            return self.refuse(
                &String::from_utf8_lossy(topic),
                "topic is not UTF-8",
                retain,
            );
        };
        match route(topic) {
            Route::Clients => format!("{CLIENTS}/{topic}"),
            Route::Service => match self.identity.get() {
                Some(id) => {
                    // A request is an event, not state: never keep it.
                    *retain = false;
                    format!("{INBOUND}/{}/{topic}", escape_client_id(id))
                }
                None => self.refuse(topic, "the publisher has no client id yet", retain),
            },
            Route::Refused(reason) => self.refuse(topic, reason, retain),
        }
    }

    fn refuse(&self, topic: &str, reason: &str, retain: &mut bool) -> String {
        warn!(
            client_id = self.client_id(),
            topic, reason, "dropping a publish the client may not make"
        );
        *retain = false;
        DROPPED.to_owned()
    }
}

/// Where a client's publish goes, by its topic as the client wrote it.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// A request for the service: stamped and sent to `_in/...`.
    Service,
    /// Ordinary client-to-client traffic, kept under `_c/...`.
    Clients,
    Refused(&'static str),
}

fn route(topic: &str) -> Route {
    if topic.is_empty() {
        return Route::Refused("empty topic");
    }
    // rumqttd 0.20 does not validate topic names itself.
    if topic.contains(['+', '#', '\0']) {
        return Route::Refused("wildcard or NUL in a topic name");
    }
    let levels: Vec<&str> = topic.split('/').collect();
    match levels.as_slice() {
        ["$aws", "things", _, "shadow", "get" | "update" | "delete"]
        | ["$aws", "things", _, "shadow", "name", _, "get" | "update" | "delete"]
        | ["shade", "things", _, "sync", "up"]
        | ["shade", "things", _, "shadows", _, "sync", "up"]
        | ["shade", "ops", "request"] => Route::Service,
        [first, ..] if first.starts_with('$') => {
            Route::Refused("only shadow requests may be published under `$`")
        }
        [first, ..] if first.starts_with('_') => Route::Refused("internal namespace"),
        ["shade", ..] => Route::Refused(
            "only `.../sync/up` and `shade/ops/request` may be published under `shade/`",
        ),
        _ => Route::Clients,
    }
}

/// Could `filter` match a retained `shade/things/.../state` topic?
fn catches_state(filter: &str) -> bool {
    let inner = match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or("", |(_, f)| f),
        None => filter,
    };
    let first = inner.split('/').next().unwrap_or("");
    matches!(first, "shade" | "+" | "#")
}

/// Maps a filter a client subscribes to (or unsubscribes from).
fn client_filter(filter: &str) -> String {
    if let Some(rest) = filter.strip_prefix("$share/") {
        // rumqttd extracts the group and subscribes the inner filter.
        return match rest.split_once('/') {
            Some((group, inner)) if !group.is_empty() && !inner.is_empty() => {
                format!("$share/{group}/{}", plain_filter(inner))
            }
            _ => format!("{VOID}/{filter}"),
        };
    }
    plain_filter(filter)
}

fn plain_filter(filter: &str) -> String {
    if let Some(rest) = strip_first_level(filter, "$aws") {
        format!("{AWS}{rest}")
    } else if filter.starts_with('$') {
        // rumqttd disconnects a client that subscribes to a `$` filter; a
        // dashboard asking for `$SYS/#` should just get nothing instead.
        format!("{VOID}/{filter}")
    } else {
        format!("{CLIENTS}/{filter}")
    }
}

/// The topic a client sees for a router topic; `None` for anything that
/// must never reach a client.
fn client_view(internal: &str) -> Option<String> {
    if let Some(topic) = internal.strip_prefix("_c/") {
        Some(topic.to_owned())
    } else {
        strip_first_level(internal, AWS).map(|rest| format!("$aws{rest}"))
    }
}

/// Maps a topic the service publishes, written as clients see it
/// (`$aws/things/t1/shadow/update/accepted`, `shade/things/t1/state`), to the
/// router topic. `None` for topics no client could ever receive: empty, with
/// wildcards, internal (`_...`) or under `$` other than `$aws`.
pub fn service_topic(topic: &str) -> Option<String> {
    if topic.is_empty() || topic.contains(['+', '#', '\0']) {
        return None;
    }
    if let Some(rest) = strip_first_level(topic, "$aws") {
        Some(format!("{AWS}{rest}"))
    } else if topic.starts_with(['$', '_']) {
        None
    } else {
        Some(format!("{CLIENTS}/{topic}"))
    }
}

/// Splits a stamped router topic `_in/<escaped id>/<topic>` into the
/// publisher's client id and the topic as the publisher wrote it.
pub fn parse_inbound(internal: &str) -> Option<(String, &str)> {
    let rest = internal.strip_prefix(INBOUND)?.strip_prefix('/')?;
    let (id, topic) = rest.split_once('/')?;
    Some((unescape_client_id(id)?, topic))
}

/// `Some(rest)` when `topic`'s first level is `level`; `rest` is empty or
/// starts with `/`.
fn strip_first_level<'a>(topic: &'a str, level: &str) -> Option<&'a str> {
    let rest = topic.strip_prefix(level)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Percent-encodes what could break or spoof a topic level. rumqttd already
/// refuses client ids containing `+ $ # /`; this does not rely on it.
fn escape_client_id(id: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        if matches!(c, '%' | '/' | '+' | '#' | '$') || c.is_control() {
            let mut utf8 = [0; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                out.push('%');
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xF)]));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape_client_id(escaped: &str) -> Option<String> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let high = char::from(bytes.next()?).to_digit(16)?;
            let low = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from((high << 4) | low).ok()?);
        } else {
            out.push(byte);
        }
    }
    String::from_utf8(out).ok()
}

/// Reads the protocol level of the CONNECT at the head of `stream` without
/// consuming anything. Anything but level 5 goes to `V4`, which reports
/// what is wrong with it (rumqttd then closes the connection).
fn sniff_version(stream: &[u8]) -> Result<Version, Error> {
    let byte = |i: usize| {
        stream
            .get(i)
            .copied()
            .ok_or_else(|| Error::InsufficientBytes(i + 1 - stream.len()))
    };
    if byte(0)? >> 4 != 1 {
        return Ok(Version::V4);
    }
    // Fixed header: type byte, then 1..=4 bytes of remaining length.
    let mut i = 1;
    while byte(i)? & 0x80 != 0 {
        i += 1;
        if i > 4 {
            return Err(Error::MalformedRemainingLength);
        }
    }
    // Variable header: protocol name (u16 length + bytes), then the level.
    let name_len = usize::from(u16::from_be_bytes([byte(i + 1)?, byte(i + 2)?]));
    let level = byte(i + 3 + name_len)?;
    Ok(if level == 5 { Version::V5 } else { Version::V4 })
}

/// rumqttd's V5 decoder hits `unreachable!()` on a CONNACK or UNSUBACK from
/// a client; no client may send those (nor SUBACK, PINGRESP), so refuse them
/// before decoding.
fn refuse_server_only_packets(stream: &[u8]) -> Result<(), Error> {
    match stream.first().map(|byte| byte >> 4) {
        Some(kind @ (2 | 9 | 11 | 13)) => Err(Error::InvalidPacketType(kind)),
        _ => Ok(()),
    }
}

/// rumqttd's V4 encoder hits `unreachable!()` on a packet carrying MQTT 5
/// properties, which a 3.1.1 subscriber gets whenever an MQTT 5 client
/// publishes with any property. 3.1.1 has no properties: drop them.
fn without_properties(packet: Packet) -> Packet {
    match packet {
        Packet::Connect(connect, _, will, _, login) => {
            Packet::Connect(connect, None, will, None, login)
        }
        Packet::Publish(publish, _) => Packet::Publish(publish, None),
        Packet::PubAck(ack, _) => Packet::PubAck(ack, None),
        Packet::PubRec(rec, _) => Packet::PubRec(rec, None),
        Packet::PubRel(rel, _) => Packet::PubRel(rel, None),
        Packet::PubComp(comp, _) => Packet::PubComp(comp, None),
        Packet::Subscribe(subscribe, _) => Packet::Subscribe(subscribe, None),
        Packet::SubAck(ack, _) => Packet::SubAck(ack, None),
        Packet::Unsubscribe(unsubscribe, _) => Packet::Unsubscribe(unsubscribe, None),
        Packet::UnsubAck(ack, _) => Packet::UnsubAck(ack, None),
        Packet::Disconnect(disconnect, _) => Packet::Disconnect(disconnect, None),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_to_the_service_and_service_topics_are_refused() {
        for topic in [
            "$aws/things/t1/shadow/update",
            "$aws/things/t1/shadow/name/cfg/get",
            "shade/things/t1/sync/up",
            "shade/things/t1/shadows/cfg/sync/up",
        ] {
            assert_eq!(route(topic), Route::Service, "{topic}");
        }
        for topic in [
            "$aws/things/t1/shadow/update/accepted",
            "$SYS/uptime",
            "_in/evil/$aws/things/t1/shadow/update",
            "_aws/things/t1/shadow/update/accepted",
            "shade/things/t1/state",
            "shade/things/t1/sync/down",
            "a/+/b",
            "",
        ] {
            assert!(matches!(route(topic), Route::Refused(_)), "{topic}");
        }
        assert_eq!(route("sensors/t1/temp"), Route::Clients);
    }

    #[test]
    fn every_client_filter_stays_out_of_the_inbound_namespace() {
        assert_eq!(client_filter("#"), "_c/#");
        assert_eq!(client_filter("+/x"), "_c/+/x");
        assert_eq!(client_filter("_in/#"), "_c/_in/#");
        assert_eq!(
            client_filter("$aws/things/+/shadow/update/accepted"),
            "_aws/things/+/shadow/update/accepted"
        );
        assert_eq!(client_filter("$aws/#"), "_aws/#");
        assert_eq!(client_filter("$awsx/#"), "_void/$awsx/#");
        assert_eq!(client_filter("$SYS/#"), "_void/$SYS/#");
        assert_eq!(client_filter("$share/g/shade/#"), "$share/g/_c/shade/#");
        assert_eq!(client_filter("$share/g"), "_void/$share/g");
    }

    #[test]
    fn service_topics_round_trip_to_what_clients_see() {
        for topic in [
            "$aws/things/t1/shadow/update/accepted",
            "shade/things/t1/state",
        ] {
            let internal = service_topic(topic).expect("publishable");
            assert_eq!(client_view(&internal).as_deref(), Some(topic));
        }
        assert_eq!(service_topic("_in/x/y"), None);
        assert_eq!(service_topic("$SYS/x"), None);
        assert_eq!(client_view("_in/a/$aws/things/t1/shadow/update"), None);
    }

    #[test]
    fn client_ids_cannot_break_or_spoof_the_stamp() {
        for id in ["plain-id", "a/b", "+#", "$aws", "50%", "é\u{1}"] {
            let topic = format!("_in/{}/shade/things/t1/sync/up", escape_client_id(id));
            assert_eq!(
                parse_inbound(&topic),
                Some((id.to_owned(), "shade/things/t1/sync/up"))
            );
        }
        assert_eq!(parse_inbound("_in/%zz/x"), None);
    }

    #[test]
    fn protocol_level_is_read_from_connect() {
        let v5 = [0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 5];
        assert_eq!(sniff_version(&v5), Ok(Version::V5));
        assert_eq!(sniff_version(&v5[..5]), Err(Error::InsufficientBytes(4)));
        let v4 = [0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4];
        assert_eq!(sniff_version(&v4), Ok(Version::V4));
    }
}
