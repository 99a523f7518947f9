//! The topic grammar: every MQTT topic shade publishes or listens on, parsed
//! into a [`Topic`] and formatted back, byte for byte.
//!
//! ```text
//! $aws/things/{thing}/shadow/{get|update|delete}                    AwsRequest
//! $aws/things/{thing}/shadow/{get|update|delete}/{accepted|rejected} AwsReply
//! $aws/things/{thing}/shadow/update/{delta|documents}               AwsReply
//! $aws/things/{thing}/shadow/name/{shadow}/...                      the same, named shadow
//! shade/things/{thing}/state                                        State
//! shade/things/{thing}/sync/{up|down}                               SyncUp, SyncDown
//! shade/things/{thing}/shadows/{shadow}/{state|sync/up|sync/down}   the same, named shadow
//! shade/ops/request                                                 OPS_REQUEST
//! shade/ops/reply/{clientToken}                                     OPS_REPLY_PREFIX
//! ```
//!
//! The operator topics carry the broker's queries AWS has no API for
//! (list, history, conflicts). They name no shadow, so they are constants
//! rather than [`Topic`]s, but they live here with the rest so that every
//! topic string of shade is spelled in one place.
//!
//! Topics come from clients, so anything else is a [`TopicError`], never a
//! panic. Names are checked with the rules of [`crate::name`]: a topic that
//! parses carries a valid [`ShadowId`], and formats back to the same string
//! (`Topic::parse(&t.to_string()) == Ok(t)` for every topic `parse` yields).
//!
//! A publish under `$aws/things/` that is shaped like a shadow request but
//! names an invalid thing or shadow deserves an answer, since an AWS SDK
//! waits for one on `<topic>/rejected`: [`bad_request`] says where and why.
//! Any other unparsable topic is dropped.

use std::fmt;
use std::str::FromStr;

use crate::name::{NameError, ShadowId, ShadowName, ThingName};

/// The prefix of every AWS shadow topic.
pub const AWS_PREFIX: &str = "$aws/things/";
/// The prefix of every native shade topic.
pub const NATIVE_PREFIX: &str = "shade/things/";
/// Where operators (the `shade` CLI, dashboards) send queries: list,
/// history, conflicts, devices. JSON, answered on [`OPS_REPLY_PREFIX`].
pub const OPS_REQUEST: &str = "shade/ops/request";
/// The replies to [`OPS_REQUEST`]: this prefix, then the request's
/// `clientToken`. Each principal sees only its own replies.
pub const OPS_REPLY_PREFIX: &str = "shade/ops/reply/";

/// A shadow operation of the AWS API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Get,
    Update,
    Delete,
}

impl Operation {
    pub const ALL: [Operation; 3] = [Operation::Get, Operation::Update, Operation::Delete];

    /// The topic level: `get`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }

    fn from_level(level: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == level)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last level of an AWS reply topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reply {
    Accepted,
    Rejected,
    /// Published on every accepted change that leaves desired and reported different.
    Delta,
    /// `previous` and `current` of every accepted change.
    Documents,
}

impl Reply {
    pub const ALL: [Reply; 4] = [
        Reply::Accepted,
        Reply::Rejected,
        Reply::Delta,
        Reply::Documents,
    ];

    /// The topic level: `accepted`, `rejected`, `delta` or `documents`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reply::Accepted => "accepted",
            Reply::Rejected => "rejected",
            Reply::Delta => "delta",
            Reply::Documents => "documents",
        }
    }

    /// Does AWS publish this reply under `op`? `delta` and `documents` exist
    /// for `update` only.
    pub fn valid_for(self, op: Operation) -> bool {
        matches!(self, Reply::Accepted | Reply::Rejected) || op == Operation::Update
    }

    /// The operation level this reply is published under: `op`, except that
    /// `delta` and `documents` always sit under `update`.
    fn op_level(self, op: Operation) -> Operation {
        if self.valid_for(op) {
            op
        } else {
            Operation::Update
        }
    }

    fn from_level(level: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == level)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed shade or AWS shadow topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `$aws/things/{thing}/shadow[/name/{shadow}]/{op}`: a client's request.
    AwsRequest { id: ShadowId, op: Operation },
    /// `.../{op}/{reply}`: the service's answer, or a `delta`/`documents`
    /// notice. Those two exist under `update` only: [`Topic::parse`] never
    /// yields them with another `op`, and [`fmt::Display`] writes them under
    /// `update` whatever `op` holds.
    AwsReply {
        id: ShadowId,
        op: Operation,
        reply: Reply,
    },
    /// `shade/things/{thing}[/shadows/{shadow}]/state`: the retained document.
    State { id: ShadowId },
    /// `.../sync/up`: agent -> broker, CBOR.
    SyncUp { id: ShadowId },
    /// `.../sync/down`: broker -> agent, CBOR.
    SyncDown { id: ShadowId },
}

/// Why a topic is not one of shade's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    #[error("topic {topic:?} is neither under {AWS_PREFIX:?} nor under {NATIVE_PREFIX:?}")]
    Foreign { topic: String },
    #[error("topic {topic:?} contains an MQTT wildcard (+ or #)")]
    Wildcard { topic: String },
    #[error("topic {topic:?} has an empty level")]
    EmptyLevel { topic: String },
    #[error("topic {topic:?} does not match {expected}")]
    Shape {
        topic: String,
        expected: &'static str,
    },
    #[error("topic {topic:?}: unknown shadow operation {op:?}; expected get, update or delete")]
    UnknownOperation { topic: String, op: String },
    #[error("topic {topic:?}: {reply:?} is not a reply to {op}")]
    BadReply {
        topic: String,
        op: Operation,
        reply: String,
    },
    #[error("topic {topic:?}: {source}")]
    Name {
        topic: String,
        #[source]
        source: NameError,
    },
}

const AWS_SHAPE: &str = "$aws/things/{thing}/shadow[/name/{shadow}]/{get|update|delete}[/{reply}]";
const NATIVE_SHAPE: &str = "shade/things/{thing}[/shadows/{shadow}]/{state|sync/up|sync/down}";

/// A topic's kind, apart from the shadow it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AwsRequest(Operation),
    AwsReply(Operation, Reply),
    State,
    SyncUp,
    SyncDown,
}

/// A topic split into levels but with its names not yet checked.
#[derive(Debug)]
struct Raw<'a> {
    thing: &'a str,
    shadow: Option<&'a str>,
    kind: Kind,
}

impl Raw<'_> {
    fn id(&self, topic: &str) -> Result<ShadowId, TopicError> {
        let name_err = |source| TopicError::Name {
            topic: topic.to_owned(),
            source,
        };
        let thing = ThingName::new(self.thing).map_err(name_err)?;
        let shadow = self
            .shadow
            .map(ShadowName::new)
            .transpose()
            .map_err(name_err)?;
        Ok(ShadowId { thing, shadow })
    }
}

fn split(topic: &str) -> Result<Raw<'_>, TopicError> {
    let owned = || topic.to_owned();
    let (rest, aws) = if let Some(rest) = topic.strip_prefix(AWS_PREFIX) {
        (rest, true)
    } else if let Some(rest) = topic.strip_prefix(NATIVE_PREFIX) {
        (rest, false)
    } else {
        return Err(TopicError::Foreign { topic: owned() });
    };
    if topic.contains(['+', '#']) {
        return Err(TopicError::Wildcard { topic: owned() });
    }
    let levels: Vec<&str> = rest.split('/').collect();
    if levels.iter().any(|l| l.is_empty()) {
        // An empty thing or shadow name in a request is a bad name, like any
        // other: parse and `bad_request` must agree that it is one.
        if let Some((_, source)) = aws.then(|| empty_name(topic)).flatten() {
            return Err(TopicError::Name {
                topic: owned(),
                source,
            });
        }
        return Err(TopicError::EmptyLevel { topic: owned() });
    }
    if aws {
        split_aws(topic, &levels)
    } else {
        split_native(topic, &levels)
    }
}

fn split_aws<'a>(topic: &str, levels: &[&'a str]) -> Result<Raw<'a>, TopicError> {
    let shape = || TopicError::Shape {
        topic: topic.to_owned(),
        expected: AWS_SHAPE,
    };
    let (thing, shadow, tail) = match levels {
        [thing, "shadow", "name", shadow, tail @ ..] if !tail.is_empty() => {
            (*thing, Some(*shadow), tail)
        }
        [_, "shadow", "name", ..] => return Err(shape()),
        [thing, "shadow", tail @ ..] => (*thing, None, tail),
        _ => return Err(shape()),
    };
    let op_of = |level: &str| {
        Operation::from_level(level).ok_or_else(|| TopicError::UnknownOperation {
            topic: topic.to_owned(),
            op: level.to_owned(),
        })
    };
    let kind = match tail {
        [op] => Kind::AwsRequest(op_of(op)?),
        [op, reply] => {
            let op = op_of(op)?;
            match Reply::from_level(reply) {
                Some(r) if r.valid_for(op) => Kind::AwsReply(op, r),
                _ => {
                    return Err(TopicError::BadReply {
                        topic: topic.to_owned(),
                        op,
                        reply: (*reply).to_owned(),
                    })
                }
            }
        }
        _ => return Err(shape()),
    };
    Ok(Raw {
        thing,
        shadow,
        kind,
    })
}

fn split_native<'a>(topic: &str, levels: &[&'a str]) -> Result<Raw<'a>, TopicError> {
    let (thing, shadow, tail) = match levels {
        [thing, "shadows", shadow, tail @ ..] => (*thing, Some(*shadow), tail),
        [thing, tail @ ..] => (*thing, None, tail),
        [] => ("", None, levels),
    };
    let kind = match tail {
        ["state"] => Kind::State,
        ["sync", "up"] => Kind::SyncUp,
        ["sync", "down"] => Kind::SyncDown,
        _ => {
            return Err(TopicError::Shape {
                topic: topic.to_owned(),
                expected: NATIVE_SHAPE,
            })
        }
    };
    Ok(Raw {
        thing,
        shadow,
        kind,
    })
}

/// Writes the topic of `kind` for `id`: the one place the grammar is spelled out.
fn write_topic(f: &mut impl fmt::Write, id: &ShadowId, kind: Kind) -> fmt::Result {
    let thing = &id.thing;
    let aws_base = |f: &mut dyn fmt::Write| {
        write!(f, "{AWS_PREFIX}{thing}/shadow/")?;
        match &id.shadow {
            Some(shadow) => write!(f, "name/{shadow}/"),
            None => Ok(()),
        }
    };
    let native_base = |f: &mut dyn fmt::Write| {
        write!(f, "{NATIVE_PREFIX}{thing}/")?;
        match &id.shadow {
            Some(shadow) => write!(f, "shadows/{shadow}/"),
            None => Ok(()),
        }
    };
    match kind {
        Kind::AwsRequest(op) => {
            aws_base(f)?;
            f.write_str(op.as_str())
        }
        Kind::AwsReply(op, reply) => {
            aws_base(f)?;
            write!(f, "{}/{reply}", reply.op_level(op))
        }
        Kind::State => {
            native_base(f)?;
            f.write_str("state")
        }
        Kind::SyncUp => {
            native_base(f)?;
            f.write_str("sync/up")
        }
        Kind::SyncDown => {
            native_base(f)?;
            f.write_str("sync/down")
        }
    }
}

fn topic_string(id: &ShadowId, kind: Kind) -> String {
    let mut s = String::with_capacity(64);
    // Writing into a String cannot fail.
    let _ = write_topic(&mut s, id, kind);
    s
}

impl Topic {
    /// Parses a topic name (not a filter: wildcards are refused).
    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        let raw = split(topic)?;
        let id = raw.id(topic)?;
        Ok(match raw.kind {
            Kind::AwsRequest(op) => Topic::AwsRequest { id, op },
            Kind::AwsReply(op, reply) => Topic::AwsReply { id, op, reply },
            Kind::State => Topic::State { id },
            Kind::SyncUp => Topic::SyncUp { id },
            Kind::SyncDown => Topic::SyncDown { id },
        })
    }

    /// The shadow this topic belongs to.
    pub fn id(&self) -> &ShadowId {
        match self {
            Topic::AwsRequest { id, .. }
            | Topic::AwsReply { id, .. }
            | Topic::State { id }
            | Topic::SyncUp { id }
            | Topic::SyncDown { id } => id,
        }
    }

    /// Is this one of the AWS `$aws/things/...` topics?
    pub fn is_aws(&self) -> bool {
        matches!(self, Topic::AwsRequest { .. } | Topic::AwsReply { .. })
    }

    fn kind(&self) -> Kind {
        match self {
            Topic::AwsRequest { op, .. } => Kind::AwsRequest(*op),
            Topic::AwsReply { op, reply, .. } => Kind::AwsReply(*op, *reply),
            Topic::State { .. } => Kind::State,
            Topic::SyncUp { .. } => Kind::SyncUp,
            Topic::SyncDown { .. } => Kind::SyncDown,
        }
    }

    /// `$aws/things/{thing}/shadow[/name/{shadow}]/{op}`.
    pub fn aws_request(id: &ShadowId, op: Operation) -> String {
        topic_string(id, Kind::AwsRequest(op))
    }

    /// `$aws/things/{thing}/shadow[/name/{shadow}]/{op}/{reply}`; `delta` and
    /// `documents` go under `update` whatever `op` says.
    pub fn aws_reply(id: &ShadowId, op: Operation, reply: Reply) -> String {
        topic_string(id, Kind::AwsReply(op, reply))
    }

    /// `shade/things/{thing}[/shadows/{shadow}]/state`.
    pub fn state(id: &ShadowId) -> String {
        topic_string(id, Kind::State)
    }

    /// `shade/things/{thing}[/shadows/{shadow}]/sync/up`.
    pub fn sync_up(id: &ShadowId) -> String {
        topic_string(id, Kind::SyncUp)
    }

    /// `shade/things/{thing}[/shadows/{shadow}]/sync/down`.
    pub fn sync_down(id: &ShadowId) -> String {
        topic_string(id, Kind::SyncDown)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_topic(f, self.id(), self.kind())
    }
}

impl FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, TopicError> {
        Self::parse(s)
    }
}

/// Is `topic` under `$aws/things/`, the AWS namespace the service answers for?
pub fn is_aws_things(topic: &str) -> bool {
    topic.starts_with(AWS_PREFIX)
}

/// A publish shaped like an AWS shadow request whose thing or shadow name is
/// invalid: the service answers it with a 400 on `reply_topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    pub op: Operation,
    /// `<topic>/rejected`, the topic an AWS SDK listens on for the answer.
    pub reply_topic: String,
    pub error: NameError,
}

/// Classifies a publish under `$aws/things/` that is not a valid shadow
/// request: `Some` when it deserves a rejection (a request with a bad name),
/// `None` when it should be dropped (a valid request, a reply topic, an
/// unknown or malformed topic, or one outside `$aws/things/`).
pub fn bad_request(topic: &str) -> Option<BadRequest> {
    /// MQTT caps topic names at 65,535 bytes.
    const MAX_TOPIC: usize = u16::MAX as usize;
    let (op, source) = match split(topic) {
        Ok(raw) => {
            let Kind::AwsRequest(op) = raw.kind else {
                return None;
            };
            let Err(TopicError::Name { source, .. }) = raw.id(topic) else {
                return None;
            };
            (op, source)
        }
        // Only an empty name fails `split` with a name error.
        Err(TopicError::Name { .. }) => empty_name(topic)?,
        Err(_) => return None,
    };
    let reply_topic = format!("{topic}/{}", Reply::Rejected);
    (reply_topic.len() <= MAX_TOPIC && !topic.contains('\0')).then_some(BadRequest {
        op,
        reply_topic,
        error: source,
    })
}

/// A request whose thing or shadow name is the empty level
/// (`$aws/things//shadow/get`): its operation and the name's error, so
/// that it is answered like any other bad name rather than dropped.
fn empty_name(topic: &str) -> Option<(Operation, NameError)> {
    let levels: Vec<&str> = topic.strip_prefix(AWS_PREFIX)?.split('/').collect();
    let (thing, shadow, op) = match levels[..] {
        [thing, "shadow", "name", shadow, op] => (thing, Some(shadow), op),
        [thing, "shadow", op] => (thing, None, op),
        _ => return None,
    };
    let op = Operation::from_level(op)?;
    if let Err(e) = ThingName::new(thing) {
        return Some((op, e));
    }
    // The thing is valid, so the empty level must be the shadow's.
    ShadowName::new(shadow?).err().map(|e| (op, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_with_an_empty_thing_or_shadow_name_are_bad_requests() {
        for (topic, reply) in [
            (
                "$aws/things//shadow/update",
                "$aws/things//shadow/update/rejected",
            ),
            (
                "$aws/things/t/shadow/name//get",
                "$aws/things/t/shadow/name//get/rejected",
            ),
        ] {
            let bad = bad_request(topic).unwrap_or_else(|| panic!("{topic} is dropped"));
            assert_eq!(bad.reply_topic, reply);
        }
        // Empty levels elsewhere are malformed topics, dropped.
        for topic in [
            "$aws/things/t//shadow/get",
            "$aws/things/t/shadow//get",
            "$aws/things//shadow/update/accepted",
            "$aws/things//shadow/",
        ] {
            assert_eq!(bad_request(topic), None, "{topic}");
        }
    }

    #[test]
    fn an_empty_thing_name_in_a_request_is_a_name_error() {
        let got = Topic::parse("$aws/things//shadow/get");
        assert!(
            matches!(
                got,
                Err(TopicError::Name {
                    source: NameError::Empty { kind: "thing" },
                    ..
                })
            ),
            "{got:?}"
        );
    }

    #[test]
    fn operator_topics_are_no_shadow_topics() {
        let reply = format!("{OPS_REPLY_PREFIX}tok");
        for topic in [OPS_REQUEST, reply.as_str()] {
            assert!(
                matches!(Topic::parse(topic), Err(TopicError::Foreign { .. })),
                "{topic}"
            );
            assert_eq!(bad_request(topic), None, "{topic}");
        }
    }

    fn id(thing: &str, shadow: Option<&str>) -> ShadowId {
        ShadowId {
            thing: ThingName::new(thing).expect("valid thing"),
            shadow: shadow.map(|s| ShadowName::new(s).expect("valid shadow")),
        }
    }

    fn round_trips(text: &str, topic: Topic) {
        assert_eq!(Topic::parse(text), Ok(topic.clone()), "{text}");
        assert_eq!(topic.to_string(), text);
    }

    #[test]
    fn every_aws_topic_form_round_trips() {
        for (shadow, base) in [
            (None, "$aws/things/lamp-1/shadow"),
            (Some("fw"), "$aws/things/lamp-1/shadow/name/fw"),
        ] {
            let id = id("lamp-1", shadow);
            for op in Operation::ALL {
                let text = format!("{base}/{op}");
                round_trips(&text, Topic::AwsRequest { id: id.clone(), op });
                assert_eq!(Topic::aws_request(&id, op), text);
                for reply in Reply::ALL.into_iter().filter(|r| r.valid_for(op)) {
                    let text = format!("{base}/{op}/{reply}");
                    let (id, topic_id) = (id.clone(), id.clone());
                    round_trips(&text, Topic::AwsReply { id, op, reply });
                    assert_eq!(Topic::aws_reply(&topic_id, op, reply), text);
                }
            }
        }
    }

    #[test]
    fn every_native_topic_form_round_trips() {
        for (shadow, base) in [
            (None, "shade/things/lamp-1"),
            (Some("fw"), "shade/things/lamp-1/shadows/fw"),
        ] {
            let id = id("lamp-1", shadow);
            round_trips(&format!("{base}/state"), Topic::State { id: id.clone() });
            round_trips(&format!("{base}/sync/up"), Topic::SyncUp { id: id.clone() });
            round_trips(
                &format!("{base}/sync/down"),
                Topic::SyncDown { id: id.clone() },
            );
            assert_eq!(Topic::state(&id), format!("{base}/state"));
            assert_eq!(Topic::sync_up(&id), format!("{base}/sync/up"));
            assert_eq!(Topic::sync_down(&id), format!("{base}/sync/down"));
        }
    }

    #[test]
    fn names_that_look_like_keywords_are_still_names() {
        let (id1, id2) = (id("shadow", Some("name")), id("shadows", Some("state")));
        let op = Operation::Get;
        round_trips(
            "$aws/things/shadow/shadow/name/name/get",
            Topic::AwsRequest { id: id1, op },
        );
        round_trips(
            "shade/things/shadows/shadows/state/state",
            Topic::State { id: id2 },
        );
    }

    #[test]
    fn delta_and_documents_live_under_update_only() {
        for text in [
            "$aws/things/l/shadow/get/delta",
            "$aws/things/l/shadow/delete/documents",
        ] {
            assert!(
                matches!(Topic::parse(text), Err(TopicError::BadReply { .. })),
                "{text}"
            );
        }
        let written = Topic::aws_reply(&id("l", None), Operation::Get, Reply::Delta);
        assert_eq!(written, "$aws/things/l/shadow/update/delta");
    }

    fn variant(e: &TopicError) -> &'static str {
        match e {
            TopicError::Foreign { .. } => "foreign",
            TopicError::Wildcard { .. } => "wildcard",
            TopicError::EmptyLevel { .. } => "empty",
            TopicError::Shape { .. } => "shape",
            TopicError::UnknownOperation { .. } => "op",
            TopicError::BadReply { .. } => "reply",
            TopicError::Name { .. } => "name",
        }
    }

    #[test]
    fn malformed_topics_are_errors() {
        let cases = [
            ("", "foreign"),
            ("$aws/things", "foreign"),
            ("$aws/thingz/x/shadow/get", "foreign"),
            ("shade/thing/x/state", "foreign"),
            ("$aws/things/", "empty"),
            ("$aws/things/x/shadow/get/", "empty"),
            ("$aws/things/x/shadow//get", "empty"),
            ("shade/things/x/state/", "empty"),
            ("shade/things/x/shadows//state", "empty"),
            ("$aws/things/+/shadow/get", "wildcard"),
            ("$aws/things/x/shadow/name/#", "wildcard"),
            ("shade/things/a+b/state", "wildcard"),
            ("$aws/things/x", "shape"),
            ("$aws/things/x/shadow", "shape"),
            ("$aws/things/x/jobs/get", "shape"),
            ("$aws/things/x/shadow/name/get", "shape"),
            ("$aws/things/x/shadow/name/fw", "shape"),
            ("$aws/things/x/shadow/get/accepted/more", "shape"),
            ("$aws/things/x/shadow/name/fw/get/accepted/x", "shape"),
            ("shade/things/x", "shape"),
            ("shade/things/x/sync", "shape"),
            ("shade/things/x/sync/sideways", "shape"),
            ("shade/things/x/shadows/state", "shape"),
            ("shade/things/x/shadows/fw", "shape"),
            ("shade/things/x/state/extra", "shape"),
            ("$aws/things/x/shadow/list", "op"),
            ("$aws/things/x/shadow/GET", "op"),
            ("$aws/things/x/shadow/name/fw/put/accepted", "op"),
            ("$aws/things/x/shadow/get/maybe", "reply"),
            ("$aws/things/my lamp/shadow/get", "name"),
            ("$aws/things//shadow/get", "name"),
            ("$aws/things/x/shadow/name//get", "name"),
            ("$aws/things/x/shadow/name/f.w/update", "name"),
            ("shade/things/lämpe/state", "name"),
        ];
        for (text, expected) in cases {
            let got = Topic::parse(text).map_err(|e| variant(&e));
            assert_eq!(got, Err(expected), "{text:?}");
        }
    }

    #[test]
    fn names_are_held_to_their_length_limits() {
        let long_thing = format!("$aws/things/{}/shadow/get", "t".repeat(129));
        let long_shadow = format!("shade/things/t/shadows/{}/state", "s".repeat(65));
        for text in [long_thing, long_shadow] {
            let source = match Topic::parse(&text) {
                Err(TopicError::Name { source, .. }) => Some(source),
                _ => None,
            };
            assert!(matches!(source, Some(NameError::TooLong { .. })), "{text}");
        }
        assert!(Topic::parse(&format!("$aws/things/{}/shadow/get", "t".repeat(128))).is_ok());
    }

    #[test]
    fn bad_names_in_requests_get_a_rejection_topic() {
        let bad = bad_request("$aws/things/my.lamp/shadow/name/fw/update").expect("rejected");
        assert_eq!(bad.op, Operation::Update);
        assert_eq!(
            bad.reply_topic,
            "$aws/things/my.lamp/shadow/name/fw/update/rejected"
        );
        assert!(matches!(bad.error, NameError::BadChar { bad: '.', .. }));
        // Valid requests, replies, unknown and malformed topics: dropped.
        for text in [
            "$aws/things/lamp/shadow/update",
            "$aws/things/my.lamp/shadow/update/accepted",
            "$aws/things/my.lamp/shadow/list",
            "$aws/things/my.lamp/jobs/get",
            "shade/things/my.lamp/sync/up",
            "other/my.lamp/shadow/get",
        ] {
            assert_eq!(bad_request(text), None, "{text}");
        }
        assert!(is_aws_things("$aws/things/x/anything"));
        assert!(!is_aws_things("$aws/rules/x"));
    }

    #[test]
    fn errors_name_the_topic_and_the_reason() {
        let e = Topic::parse("$aws/things/x/shadow/list").expect_err("unknown op");
        let text = "topic \"$aws/things/x/shadow/list\": unknown shadow operation \"list\"; \
                    expected get, update or delete";
        assert_eq!(e.to_string(), text);
        let e = Topic::parse("$aws/things/a b/shadow/get").expect_err("bad name");
        assert!(e.to_string().contains("contains ' '"), "{e}");
    }

    fn topic() -> impl Strategy<Value = Topic> {
        let thing = "[A-Za-z0-9:_-]{1,128}";
        let shadow = proptest::option::of("[A-Za-z0-9:_-]{1,64}");
        let op = proptest::sample::select(Operation::ALL.to_vec());
        let reply = proptest::sample::select(Reply::ALL.to_vec());
        (thing, shadow, op, reply, 0..5u8).prop_map(|(thing, shadow, op, reply, k)| {
            let id = ShadowId {
                thing: ThingName::new(thing).expect("regex yields a valid thing"),
                shadow: shadow.map(|s| ShadowName::new(s).expect("regex yields a valid shadow")),
            };
            match k {
                0 => Topic::AwsRequest { id, op },
                1 => Topic::AwsReply {
                    id,
                    op: reply.op_level(op),
                    reply,
                },
                2 => Topic::State { id },
                3 => Topic::SyncUp { id },
                _ => Topic::SyncDown { id },
            }
        })
    }

    /// Strings built from the grammar's own words, so that most cases get
    /// deep into the parser instead of failing on the prefix.
    fn topicish() -> impl Strategy<Value = String> {
        let level = proptest::sample::select(vec![
            "$aws",
            "things",
            "shade",
            "shadow",
            "shadows",
            "name",
            "get",
            "update",
            "delete",
            "accepted",
            "rejected",
            "delta",
            "documents",
            "state",
            "sync",
            "up",
            "down",
            "",
            "+",
            "#",
            "lamp",
            "a:b_c-d",
            "é",
            " ",
            "\0",
        ]);
        (proptest::collection::vec(level, 0..9), any::<bool>()).prop_map(|(levels, aws)| {
            let prefix = if aws { AWS_PREFIX } else { NATIVE_PREFIX };
            format!("{prefix}{}", levels.join("/"))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn formatted_topics_parse_back_to_the_same_value(t in topic()) {
            prop_assert_eq!(Topic::parse(&t.to_string()), Ok(t));
        }

        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            let _ = Topic::parse(&s);
            let _ = bad_request(&s);
        }

        #[test]
        fn what_parses_formats_back_and_only_bad_names_are_answered(s in topicish()) {
            if let Ok(t) = Topic::parse(&s) {
                prop_assert_eq!(&t.to_string(), &s);
            }
            if let Some(bad) = bad_request(&s) {
                let is_name_error = matches!(Topic::parse(&s), Err(TopicError::Name { .. }));
                prop_assert!(is_name_error);
                prop_assert_eq!(bad.reply_topic, format!("{s}/rejected"));
            }
        }
    }
}
