//! The router's topic namespaces and the mapping of client topics into
//! and out of them (see the table in the parent module's docs).

use shade_shared::topic::OPS_REPLY_PREFIX as REPLY_PREFIX;

use crate::identity::principal_tag;

pub(super) const CLIENTS: &str = "_c";
const AWS: &str = "_aws";
const VOID: &str = "_void";
/// Replies to `shade/ops/request`, one namespace per principal tag:
/// `_r/<escaped tag>/<rest>` is `shade/ops/reply/<rest>` to clients.
const REPLIES: &str = "_r";

/// Where a client's publish goes, by its topic as the client wrote it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// A request for the service: stamped and sent to `_in/...`.
    Service,
    /// Ordinary client-to-client traffic, kept under `_c/...`.
    Clients,
    Refused(&'static str),
}

pub(super) fn route(topic: &str) -> Route {
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
pub(super) fn catches_state(filter: &str) -> bool {
    let inner = match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or("", |(_, f)| f),
        None => filter,
    };
    let first = inner.split('/').next().unwrap_or("");
    matches!(first, "shade" | "+" | "#")
}

/// Maps a filter a client whose principal has `tag` subscribes to (or
/// unsubscribes from).
pub(super) fn client_filter(filter: &str, tag: &str) -> String {
    if let Some(rest) = filter.strip_prefix("$share/") {
        // rumqttd extracts the group and subscribes the inner filter.
        return match rest.split_once('/') {
            Some((group, inner)) if !group.is_empty() && !inner.is_empty() => {
                format!("$share/{group}/{}", plain_filter(inner, tag))
            }
            _ => void(filter),
        };
    }
    plain_filter(filter, tag)
}

/// A filter that matches nothing anyone publishes.
pub(super) fn void(filter: &str) -> String {
    format!("{VOID}/{filter}")
}

fn plain_filter(filter: &str, tag: &str) -> String {
    if let Some(rest) = filter.strip_prefix(REPLY_PREFIX) {
        format!("{REPLIES}/{}/{rest}", escape_client_id(tag))
    } else if let Some(rest) = strip_first_level(filter, "$aws") {
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
pub(super) fn client_view(internal: &str) -> Option<String> {
    if let Some(topic) = internal.strip_prefix("_c/") {
        Some(topic.to_owned())
    } else if let Some(rest) = internal.strip_prefix("_r/") {
        let (_tag, rest) = rest.split_once('/')?;
        Some(format!("{REPLY_PREFIX}{rest}"))
    } else {
        strip_first_level(internal, AWS).map(|rest| format!("$aws{rest}"))
    }
}

/// Maps a topic the service publishes, written as clients see it
/// (`$aws/things/t1/shadow/update/accepted`, `shade/things/t1/state`), to the
/// router topic. `None` for topics no client could ever receive: empty, with
/// wildcards, internal (`_...`) or under `$` other than `$aws`. Replies
/// to `shade/ops/request` come already mapped by [`reply_topic`].
pub(crate) fn service_topic(topic: &str) -> Option<String> {
    if topic.is_empty() || topic.contains(['+', '#', '\0']) {
        return None;
    }
    if topic.starts_with("_r/") {
        Some(topic.to_owned())
    } else if topic.starts_with(REPLY_PREFIX) {
        // Only per-principal replies exist: see `reply_topic`.
        None
    } else if let Some(rest) = strip_first_level(topic, "$aws") {
        Some(format!("{AWS}{rest}"))
    } else if topic.starts_with(['$', '_']) {
        None
    } else {
        Some(format!("{CLIENTS}/{topic}"))
    }
}

/// The router topic of the reply to a `shade/ops/request` that the client
/// `client_id` (as stamped) sent with `token`: only connections of the same
/// principal can subscribe to it, so a reader cannot see an admin's replies.
pub(crate) fn reply_topic(client_id: &str, token: &str) -> String {
    format!(
        "{REPLIES}/{}/{token}",
        escape_client_id(principal_tag(client_id))
    )
}

/// The one router topic every request to the service travels on. One
/// topic, not one per client and thing: rumqttd matches each new filter
/// against every topic ever published (`DataLog::next_native_offset`), so
/// per-request topics made every SUBSCRIBE cost O(requests seen).
pub(crate) const REQUESTS: &str = "_in/requests";

/// A request's payload on [`REQUESTS`]: the publisher's client id and the
/// topic it wrote, each with a big-endian u16 length, then its payload.
/// `None` for an id or topic too long to frame (MQTT topics fit).
pub(crate) fn stamp(client_id: &str, topic: &str, payload: &[u8]) -> Option<Vec<u8>> {
    let id_len = u16::try_from(client_id.len()).ok()?;
    let topic_len = u16::try_from(topic.len()).ok()?;
    let mut out = Vec::with_capacity(4 + client_id.len() + topic.len() + payload.len());
    out.extend_from_slice(&id_len.to_be_bytes());
    out.extend_from_slice(client_id.as_bytes());
    out.extend_from_slice(&topic_len.to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(payload);
    Some(out)
}

/// The inverse of [`stamp`]: client id, topic, payload.
pub(crate) fn unstamp(framed: &[u8]) -> Option<(String, String, &[u8])> {
    fn field(bytes: &[u8]) -> Option<(String, &[u8])> {
        let (len, rest) = bytes.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let (value, rest) = (rest.get(..len)?, rest.get(len..)?);
        Some((std::str::from_utf8(value).ok()?.to_owned(), rest))
    }
    let (client_id, rest) = field(framed)?;
    let (topic, payload) = field(rest)?;
    Some((client_id, topic, payload))
}

/// `Some(rest)` when `topic`'s first level is `level`; `rest` is empty or
/// starts with `/`.
fn strip_first_level<'a>(topic: &'a str, level: &str) -> Option<&'a str> {
    let rest = topic.strip_prefix(level)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Percent-encodes what could break or spoof a topic level. rumqttd already
/// refuses client ids containing `+ $ # /`; this does not rely on it.
pub(super) fn escape_client_id(id: &str) -> String {
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

/// Whether `filter` is a topic filter MQTT allows: not empty, no NUL,
/// `#` only as the whole last level, `+` only as a whole level. rumqttd
/// grants anything, so a client with a typo would wait for messages that
/// never come instead of reading a failure in its SUBACK.
pub(super) fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == last,
        "+" => true,
        level => !level.contains(['#', '+']),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_topic_filters_are_told_apart_from_valid_ones() {
        for ok in [
            "#",
            "+",
            "a",
            "a/b",
            "a/+/b",
            "a/#",
            "+/+",
            "/",
            "a//b",
            "$aws/things/+/shadow/#",
        ] {
            assert!(valid_filter(ok), "{ok:?}");
        }
        for bad in ["", "a/#/b", "+a", "a+", "a/b#", "#/a", "a/\0", "##"] {
            assert!(!valid_filter(bad), "{bad:?}");
        }
    }
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
        assert_eq!(client_filter("#", "-"), "_c/#");
        assert_eq!(client_filter("+/x", "-"), "_c/+/x");
        assert_eq!(client_filter("_in/#", "-"), "_c/_in/#");
        assert_eq!(
            client_filter("$aws/things/+/shadow/update/accepted", "-"),
            "_aws/things/+/shadow/update/accepted"
        );
        assert_eq!(client_filter("$aws/#", "-"), "_aws/#");
        assert_eq!(client_filter("$awsx/#", "-"), "_void/$awsx/#");
        assert_eq!(client_filter("$SYS/#", "-"), "_void/$SYS/#");
        assert_eq!(
            client_filter("$share/g/shade/#", "-"),
            "$share/g/_c/shade/#"
        );
        assert_eq!(client_filter("$share/g", "-"), "_void/$share/g");
    }

    #[test]
    fn ops_replies_live_in_one_namespace_per_principal() {
        let reader = client_filter("shade/ops/reply/#", "u:viewer");
        let admin_reply = reply_topic("u:admin|cli-1", "tok");
        assert_eq!(admin_reply, "_r/u:admin/tok");
        assert!(crate::auth::acl::filter_matches(
            &client_filter("shade/ops/reply/#", "u:admin"),
            &admin_reply
        ));
        assert!(!crate::auth::acl::filter_matches(&reader, &admin_reply));
        assert!(!crate::auth::acl::filter_matches(
            &client_filter("#", "u:viewer"),
            &admin_reply
        ));
        assert_eq!(
            client_view(&admin_reply).as_deref(),
            Some("shade/ops/reply/tok")
        );
        assert_eq!(reply_topic("cli-1", "tok"), "_r/-/tok");
        assert_eq!(service_topic("shade/ops/reply/tok"), None);
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
        let topic = "shade/things/t1/sync/up";
        for id in ["plain-id", "a/b", "+#", "$aws", "50%", "é\u{1}", ""] {
            for payload in [&b""[..], b"\x00\x05hello", b"{}"] {
                let framed = stamp(id, topic, payload).expect("fits");
                assert_eq!(
                    unstamp(&framed),
                    Some((id.to_owned(), topic.to_owned(), payload))
                );
            }
        }
        let long = "x".repeat(70_000);
        assert_eq!(stamp(&long, topic, b""), None);
        // Truncated or garbled frames are refused, not misread.
        let framed = stamp("id", topic, b"body").expect("fits");
        for cut in 0..(4 + 2 + topic.len()) {
            assert_eq!(unstamp(&framed[..cut]), None, "cut at {cut}");
        }
        assert_eq!(unstamp(&[0, 2, 0xff, 0xfe, 0, 0]), None);
    }
}
