//! Copying an admitted client's bytes to rumqttd's internal listener and
//! back, ending each side the way rumqttd needs.
//!
//! rumqttd 0.20 frees a connection's slot when it reads DISCONNECT, and
//! later, when that connection's socket closes, tells its router again
//! that the slot's connection is gone. If another client connected in
//! between, the slot (a reused number) is now that client's, and the new
//! client is closed right after its CONNACK (`rumqttd::server::broker`:
//! "some other connection might be using this connection ID"). It does
//! not send that second notice when the router ended the link first, as
//! it does right after a DISCONNECT. So after a client's DISCONNECT the
//! front does not close the internal socket: it waits for rumqttd to
//! close it (bounded by [`DISCONNECT_GRACE`]). A client that just goes
//! away, without DISCONNECT, is passed on at once as a closed socket,
//! which is also what makes rumqttd publish its will.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How long rumqttd gets to close a connection after its DISCONNECT.
const DISCONNECT_GRACE: Duration = Duration::from_secs(5);

/// MQTT's DISCONNECT packet type (the high nibble of its first byte).
const DISCONNECT: u8 = 14;

/// How a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The client sent DISCONNECT.
    Goodbye,
    /// The client's socket closed without one.
    ClientGone,
    /// rumqttd closed the connection.
    BrokerClosed,
}

/// Copies between `client` and `broker` until the connection is over.
/// `head` is what the front already sent on from the client (its
/// CONNECT, perhaps more): packet framing starts there.
/// `deliveries` are the service's messages to this client (see
/// `crate::subscriptions`), each a whole encoded packet, written between
/// rumqttd's packets.
pub(crate) async fn relay<C>(
    client: C,
    broker: TcpStream,
    head: &[u8],
    buffer: usize,
    mut deliveries: mpsc::Receiver<Bytes>,
) -> std::io::Result<Ended>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut broker_rx, mut broker_tx) = broker.into_split();
    let mut framer = Framer::default();
    framer.feed(head);
    // Whether the client's bytes so far end with a DISCONNECT: rumqttd
    // closes its side as soon as it reads one, which can end the
    // downstream copy before the upstream one sees the client go.
    let goodbye = AtomicBool::new(false);
    let upstream = async {
        let mut buf = vec![0u8; buffer];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(n) => n,
                // A reset after a DISCONNECT is still a goodbye.
                Err(_) if framer.ended_with_disconnect() => break,
                Err(e) => return Err(e),
            };
            let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) else {
                break;
            };
            framer.feed(bytes);
            goodbye.store(framer.ended_with_disconnect(), Ordering::Relaxed);
            broker_tx.write_all(bytes).await?;
        }
        let said_goodbye = framer.ended_with_disconnect();
        if !said_goodbye {
            broker_tx.shutdown().await?;
        }
        // Returned, not dropped: dropping a write half shuts it down.
        Ok::<_, std::io::Error>((said_goodbye, broker_tx))
    };
    let downstream = async {
        let mut buf = vec![0u8; buffer];
        let mut frames = Framer::default();
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                n = broker_rx.read(&mut buf) => {
                    let n = n?;
                    let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) else {
                        break;
                    };
                    frames.feed(bytes);
                    client_tx.write_all(bytes).await?;
                }
                // Only between two of rumqttd's packets, never inside one.
                Some(first) = deliveries.recv(), if frames.at_boundary() => {
                    batch.clear();
                    batch.extend_from_slice(&first);
                    while batch.len() < buffer {
                        match deliveries.try_recv() {
                            Ok(more) => batch.extend_from_slice(&more),
                            Err(_) => break,
                        }
                    }
                    client_tx.write_all(&batch).await?;
                }
            }
        }
        client_tx.shutdown().await
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        up = &mut upstream => {
            let (said_goodbye, _broker_tx) = up?;
            if said_goodbye {
                // Some clients never read what follows; rumqttd closing
                // its side (or the grace running out) is the end.
                let _ = tokio::time::timeout(DISCONNECT_GRACE, downstream).await;
                Ok(Ended::Goodbye)
            } else {
                downstream.await.map(|()| Ended::ClientGone)
            }
        }
        // rumqttd ended the connection: nothing the client sends now has
        // anywhere to go.
        down = &mut downstream => down.map(|()| {
            if goodbye.load(Ordering::Relaxed) {
                Ended::Goodbye
            } else {
                Ended::BrokerClosed
            }
        }),
    }
}

/// Where the client's byte stream is in MQTT's packet framing: a fixed
/// header byte, a remaining length of 1 to 4 bytes, then that many bytes.
#[derive(Debug, Default)]
struct Framer {
    state: State,
    /// The type of the last whole packet.
    last: u8,
}

#[derive(Debug, Default, Clone, Copy)]
enum State {
    #[default]
    Header,
    Length {
        kind: u8,
        value: usize,
        shift: u32,
    },
    Body {
        kind: u8,
        left: usize,
    },
}

impl Framer {
    fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((&b, rest)) = bytes.split_first() {
            match self.state {
                State::Header => {
                    self.state = State::Length {
                        kind: b >> 4,
                        value: 0,
                        shift: 0,
                    };
                    bytes = rest;
                }
                State::Length { kind, value, shift } => {
                    let value = value | usize::from(b & 0x7f) << shift;
                    bytes = rest;
                    // A fifth length byte is malformed; rumqttd refuses
                    // it, and the framing no longer matters.
                    if b & 0x80 != 0 && shift < 21 {
                        self.state = State::Length {
                            kind,
                            value,
                            shift: shift + 7,
                        };
                    } else if value == 0 {
                        self.whole(kind);
                    } else {
                        self.state = State::Body { kind, left: value };
                    }
                }
                State::Body { kind, left } => {
                    let take = left.min(bytes.len());
                    bytes = bytes.get(take..).unwrap_or_default();
                    if take == left {
                        self.whole(kind);
                    } else {
                        self.state = State::Body {
                            kind,
                            left: left - take,
                        };
                    }
                }
            }
        }
    }

    fn whole(&mut self, kind: u8) {
        self.last = kind;
        self.state = State::Header;
    }

    /// Between two packets: the next byte starts a new one.
    fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header)
    }

    /// The stream ended right after a whole DISCONNECT.
    fn ended_with_disconnect(&self) -> bool {
        matches!(self.state, State::Header) && self.last == DISCONNECT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CONNECT, a PUBLISH with a two-byte length, a PINGREQ and a
    /// DISCONNECT, as one stream.
    fn stream(disconnect: &[u8]) -> Vec<u8> {
        let mut s = vec![0x10, 3, 0, 0, 0];
        s.extend([0x30, 0x80 | 0x2c, 0x01]); // 172 bytes follow
        s.extend([b'x'; 172]);
        s.extend([0xc0, 0]);
        s.extend(disconnect);
        s
    }

    #[test]
    fn a_stream_ending_in_a_whole_disconnect_is_told_apart_at_any_split() {
        for (tail, expected) in [
            (&[0xe0, 0][..], true),       // 3.1.1 DISCONNECT
            (&[0xe0, 1, 0x04][..], true), // 5: with a reason code
            (&[][..], false),             // gone after a PINGREQ
            (&[0xe0][..], false),         // cut inside the DISCONNECT
            (&[0xe0, 2, 0][..], false),   // cut inside its body
        ] {
            let bytes = stream(tail);
            for split in 0..=bytes.len() {
                let mut f = Framer::default();
                let (a, b) = bytes.split_at(split);
                f.feed(a);
                f.feed(b);
                assert_eq!(
                    f.ended_with_disconnect(),
                    expected,
                    "tail {tail:?}, split at {split}"
                );
            }
        }
    }

    #[test]
    fn a_disconnect_byte_inside_a_payload_is_not_a_disconnect() {
        let mut f = Framer::default();
        f.feed(&[0x30, 4, 0, 0, 0xe0, 0]);
        assert!(!f.ended_with_disconnect());
        f.feed(&[0xe0, 0]);
        assert!(f.ended_with_disconnect());
    }
}
