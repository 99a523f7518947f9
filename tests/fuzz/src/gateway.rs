//! What the `gateway_packets` fuzz target does with one input: arbitrary
//! bytes as one client connection through the broker's `Gateway`
//! (rumqttd's `Protocol`), and the router's answers written back through
//! it. Nothing may panic. Kept apart from the target so that the broker's
//! tests replay the seeds on the stable toolchain
//! (`broker/tests/gateway_fuzz_seeds.rs`). See docs/FUZZING.md.
//!
//! Input: byte 0 picks the connection's principal and whether
//! authentication is on (bits 0-1: anonymous, device `lamp-1`, admin user,
//! reader user limited to `lamp`; bit 2: auth on) and whether the front's
//! preamble is put in front of the rest (bit 3 clear) or the rest is sent
//! raw, as a process dialling the internal port would (bit 3 set). The rest
//! is the client's byte stream.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, Packet, PingResp, Protocol, PubAck,
    PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, Publish, SubAck,
    SubscribeReasonCode, UnsubAck, UnsubAckReason,
};
use shade_broker::embedded::{preamble, Gateway, GatewayContext, Retained, Subscriptions};
use shade_broker::{Auth, Credentials, DeviceGrants, Role, SharedUsers, UserEntry, Users};

const SECRET: &str = "fuzz-secret";
/// rumqttd's default `max_payload_size` is far larger; a small one also
/// exercises the codecs' size checks.
const MAX_SIZE: usize = 4096;
/// A connection rumqttd keeps reading from; bounds a run on any input.
const MAX_PACKETS: usize = 64;

fn context(auth_on: bool) -> Arc<GatewayContext> {
    let user = |role, prefix: &str| UserEntry {
        password_hash: String::new(),
        role,
        prefix: prefix.to_owned(),
    };
    let users: Users = HashMap::from([
        ("admin".to_owned(), user(Role::Admin, "")),
        ("viewer".to_owned(), user(Role::Reader, "lamp")),
    ]);
    let grants = DeviceGrants {
        filters: vec![
            "$aws/things/{thing}/shadow/#".to_owned(),
            "shade/things/{thing}/#".to_owned(),
        ],
    };
    let auth = Auth::new(auth_on, SharedUsers::new(users), grants, Credentials::new());
    Arc::new(GatewayContext {
        secret: SECRET.into(),
        subscriptions: Arc::new(Subscriptions::new(auth.grants.clone())),
        auth,
        retained: Arc::new(Retained::new()),
    })
}

/// What rumqttd's router would send back for `packet`, read from the client
/// and rewritten by the gateway.
fn answers(packet: &Packet, header: Option<(u8, u16)>) -> Vec<Packet> {
    match packet {
        Packet::Connect(connect, props, ..) => {
            let ack = ConnAck {
                session_present: false,
                code: ConnectReturnCode::Success,
            };
            let props = props.as_ref().map(|_| ConnAckProperties {
                assigned_client_identifier: connect
                    .client_id
                    .is_empty()
                    .then(|| "rumqttd-assigned".to_owned()),
                ..ConnAckProperties::default()
            });
            vec![Packet::ConnAck(ack, props)]
        }
        Packet::Publish(publish, props) => {
            // Delivered to a subscriber (maybe this client) as routed, and
            // once more under each internal namespace.
            let mut out = vec![Packet::Publish(publish.clone(), props.clone())];
            let topic = String::from_utf8_lossy(&publish.topic).into_owned();
            let tail = topic.split_once('/').map_or(topic.as_str(), |(_, t)| t);
            for prefix in ["_c/", "_aws/", "_r/-/", "_in/x/", "_void/", ""] {
                out.push(Packet::Publish(
                    Publish::new(format!("{prefix}{tail}"), "{}".to_owned(), publish.retain),
                    None,
                ));
            }
            match header {
                Some((1, pkid)) => out.push(Packet::PubAck(
                    PubAck {
                        pkid,
                        reason: PubAckReason::Success,
                    },
                    None,
                )),
                Some((2, pkid)) => {
                    out.push(Packet::PubRec(
                        PubRec {
                            pkid,
                            reason: PubRecReason::Success,
                        },
                        None,
                    ));
                    out.push(Packet::PubComp(
                        PubComp {
                            pkid,
                            reason: PubCompReason::Success,
                        },
                        None,
                    ));
                }
                _ => {}
            }
            out
        }
        Packet::Subscribe(subscribe, _) => vec![Packet::SubAck(
            SubAck {
                pkid: subscribe.pkid,
                return_codes: subscribe
                    .filters
                    .iter()
                    .map(|f| SubscribeReasonCode::Success(f.qos))
                    .collect(),
            },
            None,
        )],
        Packet::Unsubscribe(unsubscribe, _) => vec![Packet::UnsubAck(
            UnsubAck {
                pkid: unsubscribe.pkid,
                reasons: vec![UnsubAckReason::Success; unsubscribe.filters.len()],
            },
            None,
        )],
        Packet::PingReq(_) => vec![Packet::PingResp(PingResp)],
        _ => Vec::new(),
    }
}

/// One input, as the fuzz target runs it. Returns how many packets the
/// gateway read.
pub fn gateway_packets(data: &[u8]) -> usize {
    let Some((&mode, rest)) = data.split_first() else {
        return 0;
    };
    let auth_on = mode & 0b100 != 0;
    let tag = ["-", "d:lamp-1", "u:admin", "u:viewer"][usize::from(mode & 0b11)];
    let mut stream = BytesMut::new();
    if mode & 0b1000 == 0 {
        stream.extend_from_slice(&preamble(SECRET, 1, tag));
    }
    stream.extend_from_slice(rest);

    let mut gateway = Gateway::new(context(auth_on)).clone();
    let mut out = BytesMut::new();
    let mut read = 0;
    for _ in 0..MAX_PACKETS {
        let before = stream.len();
        let header = shade_broker::embedded::peek_publish(&stream);
        let packet = match gateway.read_mut(&mut stream, MAX_SIZE) {
            Ok(packet) => packet,
            // A refusal or an incomplete packet: rumqttd stops reading here.
            Err(_) => break,
        };
        read += 1;
        for answer in answers(&packet, header) {
            out.clear();
            let _ = gateway.write(answer, &mut out);
        }
        // The packet itself, as the router would forward it.
        out.clear();
        let _ = gateway.write(packet, &mut out);
        if stream.is_empty() || stream.len() >= before {
            break;
        }
    }
    read
}
