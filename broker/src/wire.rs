//! What the gateway needs of MQTT framing beyond rumqttd's codecs: the
//! protocol level of a CONNECT, the packets a client may never send, the
//! MQTT 5 properties a 3.1.1 client must not get, and the front's preamble.

use bytes::{Buf, BytesMut};
use rumqttd::protocol::{Error, Packet};

/// Which rumqttd codec a connection speaks, read from its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V4,
    V5,
}

/// Reads the protocol level of the CONNECT at the head of `stream` without
/// consuming anything. Anything but level 5 goes to `V4`, which reports
/// what is wrong with it (rumqttd then closes the connection).
pub(crate) fn sniff_version(stream: &[u8]) -> Result<Version, Error> {
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
pub(crate) fn refuse_server_only_packets(stream: &[u8]) -> Result<(), Error> {
    match stream.first().map(|byte| byte >> 4) {
        Some(kind @ (2 | 9 | 11 | 13)) => Err(Error::InvalidPacketType(kind)),
        _ => Ok(()),
    }
}

/// rumqttd's V4 encoder hits `unreachable!()` on a packet carrying MQTT 5
/// properties, which a 3.1.1 subscriber gets whenever an MQTT 5 client
/// publishes with any property. 3.1.1 has no properties: drop them.
pub(crate) fn without_properties(packet: Packet) -> Packet {
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

/// QoS and packet id of the PUBLISH at the head of `stream`, read from
/// its bytes (rumqttd keeps those fields private). `None` for any other
/// packet or a truncated one; the packet id is 0 at QoS 0.
pub fn peek_publish(stream: &[u8]) -> Option<(u8, u16)> {
    let first = *stream.first()?;
    if first >> 4 != 3 {
        return None;
    }
    let qos = (first >> 1) & 0b11;
    let mut i = 1;
    while stream.get(i)? & 0x80 != 0 {
        i += 1;
        if i > 4 {
            return None;
        }
    }
    let topic_len = usize::from(u16::from_be_bytes([
        *stream.get(i + 1)?,
        *stream.get(i + 2)?,
    ]));
    if qos == 0 {
        return Some((0, 0));
    }
    let at = i + 3 + topic_len;
    Some((
        qos,
        u16::from_be_bytes([*stream.get(at)?, *stream.get(at + 1)?]),
    ))
}

/// First byte of the front's preamble: MQTT packet type 0 is reserved,
/// so no MQTT client can send it by accident.
const PREAMBLE_MARK: u8 = 0x00;

/// What the front sends rumqttd's internal listener before a client's
/// bytes: the process secret, the front's number for the connection (its
/// outbox, see `crate::router::Subscriptions`) and the authenticated
/// principal's tag.
pub fn preamble(secret: &str, conn: u64, tag: &str) -> Vec<u8> {
    let body = format!("{secret} {conn} {tag}");
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(3 + body.len());
    out.push(PREAMBLE_MARK);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body.as_bytes()[..usize::from(len)]);
    out
}

/// Takes the preamble off the head of `stream`, checks its secret and
/// returns the connection number and the principal tag. A connection that
/// does not start with a preamble did not come through the front (a local
/// process dialled the internal port) and is refused.
pub(crate) fn read_preamble(stream: &mut BytesMut, secret: &str) -> Result<(u64, String), Error> {
    let byte = |i: usize| {
        stream
            .get(i)
            .copied()
            .ok_or_else(|| Error::InsufficientBytes(i + 1 - stream.len()))
    };
    if byte(0)? != PREAMBLE_MARK {
        return Err(Error::InvalidProtocol);
    }
    let len = usize::from(u16::from_be_bytes([byte(1)?, byte(2)?]));
    if stream.len() < 3 + len {
        return Err(Error::InsufficientBytes(3 + len - stream.len()));
    }
    stream.advance(3);
    let body = stream.split_to(len);
    let body = std::str::from_utf8(&body).map_err(|_| Error::InvalidProtocol)?;
    let (given, rest) = body.split_once(' ').ok_or(Error::InvalidProtocol)?;
    if !constant_time_eq(given.as_bytes(), secret.as_bytes()) {
        return Err(Error::InvalidProtocol);
    }
    let (conn, tag) = rest.split_once(' ').ok_or(Error::InvalidProtocol)?;
    let conn = conn.parse().map_err(|_| Error::InvalidProtocol)?;
    Ok((conn, tag.to_owned()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_qos_and_packet_id_are_read_from_the_bytes() {
        // QoS 1, topic "a/b", packet id 0x0102, payload "x".
        let qos1 = [0x32, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x02, b'x'];
        assert_eq!(peek_publish(&qos1), Some((1, 0x0102)));
        let qos0 = [0x30, 0x06, 0x00, 0x03, b'a', b'/', b'b', b'x'];
        assert_eq!(peek_publish(&qos0), Some((0, 0)));
        assert_eq!(peek_publish(&[0x82, 0x00]), None);
        assert_eq!(peek_publish(&qos1[..8]), None);
    }

    #[test]
    fn the_preamble_carries_the_tag_only_with_the_secret() {
        let mut stream = BytesMut::from(&preamble("s3cret", 7, "d:t1")[..]);
        stream.extend_from_slice(&[0x10, 0x00]);
        assert_eq!(
            read_preamble(&mut stream, "s3cret"),
            Ok((7, "d:t1".to_owned()))
        );
        assert_eq!(&stream[..], &[0x10, 0x00]);
        let mut forged = BytesMut::from(&preamble("guess", 1, "u:admin")[..]);
        assert_eq!(
            read_preamble(&mut forged, "s3cret"),
            Err(Error::InvalidProtocol)
        );
        let mut direct = BytesMut::from(&[0x10u8, 0x0c][..]);
        assert_eq!(
            read_preamble(&mut direct, "s3cret"),
            Err(Error::InvalidProtocol)
        );
        let mut partial = BytesMut::from(&preamble("s3cret", 7, "d:t1")[..4]);
        assert!(matches!(
            read_preamble(&mut partial, "s3cret"),
            Err(Error::InsufficientBytes(_))
        ));
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
