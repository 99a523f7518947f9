//! The front door: shade's own listeners, in front of rumqttd.
//!
//! rumqttd's listeners cannot authenticate a device by certificate, do TLS
//! handshakes inside their accept loop (one stalled client blocks all
//! others) and sleep after each accept. So shade accepts every connection
//! itself, on TCP, TLS, WebSocket or WebSocket over TLS, and for each:
//!
//! 1. finishes the TLS and WebSocket handshakes and reads the MQTT CONNECT,
//!    all within the connect timeout, holding one of a bounded number of
//!    "pending" slots, so half-open connections cost a bounded amount of
//!    memory however many arrive;
//! 2. authenticates the CONNECT ([`Auth::authenticate`]); a refusal gets the
//!    CONNACK code MQTT defines and the connection is closed;
//! 3. opens a loopback connection to rumqttd's internal listener, sends a
//!    preamble (a per-process secret and the principal's tag) and then the
//!    client's bytes unchanged, and copies bytes both ways until the
//!    connection is over (`relay.rs`, which also keeps rumqttd from closing
//!    the wrong client after a DISCONNECT). The per-connection
//!    [`Gateway`](crate::router::gateway::Gateway) reads the preamble, so a local
//!    process that dials the internal port directly (without the secret)
//!    is refused, and it enforces what the principal
//!    may publish and receive.
//!
//! The cost is one loopback hop per connection: two more sockets (so three
//! file descriptors per client in all) and 4 KiB of copy buffers per
//! client, and one more copy of each packet.

mod relay;
pub(crate) mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{ConnAck, ConnectReturnCode, Packet, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::auth::{Auth, Refusal};
use crate::identity::Principal;
use crate::identity::{device_tag, user_tag};
use crate::metrics::{Link, Metrics};
use crate::presence::{Presence, Reason};
use crate::subscriptions::{Subscriptions, OUTBOX};
use crate::wire::{self, Version};
use tls::ServerTls;

/// Bytes of each direction's copy buffer. Shadow requests and replies are
/// mostly well under this; larger ones take a few more reads. Every idle
/// client holds two, so they are kept small (memory: docs/BENCHMARKS.md).
const COPY_BUFFER: usize = 2048;

/// How a listener's connections arrive.
#[derive(Clone)]
pub enum Transport {
    Tcp,
    Tls(Arc<ServerTls>),
    Ws,
    Wss(Arc<ServerTls>),
}

impl Transport {
    fn link(&self) -> Link {
        match self {
            Transport::Tcp => Link::Tcp,
            Transport::Tls(_) => Link::Tls,
            Transport::Ws => Link::Ws,
            Transport::Wss(_) => Link::Wss,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls(_) => "tls",
            Transport::Ws => "websocket",
            Transport::Wss(_) => "wss",
        }
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything the front shares between its connections.
#[derive(Debug)]
pub(crate) struct FrontShared {
    /// The ports of rumqttd's internal loopback listeners (0 while one is
    /// still binding); connection `n` goes to the `n % len`th.
    pub internal: Vec<Arc<AtomicU16>>,
    /// The preamble secret the gateway checks.
    pub secret: Arc<str>,
    pub auth: Auth,
    /// Client connections at once; beyond it new ones are closed at once.
    pub connections: Arc<Semaphore>,
    /// Connections still in their handshake or CONNECT; beyond it the
    /// accept loop waits, so a flood of half-open sockets is bounded.
    pub pending: Arc<Semaphore>,
    /// Connections handed to rumqttd's internal listener and not yet
    /// answered with a CONNACK, at most [`INTERNAL_IN_FLIGHT`].
    pub dialing: Arc<Semaphore>,
    /// Every connection's filters on the service's topics and its outbox,
    /// which the relay writes to the client between rumqttd's packets.
    pub subscriptions: Arc<Subscriptions>,
    /// The next connection number (the preamble carries it to the gateway).
    pub next_conn: AtomicU64,
    /// Handshakes, CONNECT and authentication must finish within this.
    pub connect_timeout: Duration,
    /// Largest CONNECT accepted (will message included).
    pub max_connect_bytes: usize,
    /// Where connections are counted, once rumqttd has answered them.
    pub metrics: Arc<Metrics>,
    /// Told of each admitted connection and its end.
    pub presence: Arc<Presence>,
}

/// Why a connection ended before it reached rumqttd.
#[derive(Debug, thiserror::Error)]
enum FrontError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("WebSocket handshake: {0}")]
    Ws(String),
    #[error("the first packet is not a CONNECT")]
    NotConnect,
    #[error("CONNECT of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("malformed CONNECT: {0:?}")]
    Malformed(rumqttd::protocol::Error),
    #[error("closed before CONNECT")]
    Closed,
    #[error("no CONNECT within the connect timeout")]
    Timeout,
    #[error("the broker sent no CONNACK within the connect timeout")]
    NoConnAck,
    #[error("the broker closed the connection before its CONNACK")]
    ClosedBeforeConnAck,
    #[error("refused")]
    Refused,
}

/// How many connections the front hands rumqttd at once before their
/// CONNACK. rumqttd 0.20 listens with a backlog of 128 (measured with
/// `ss -ltn`) and accepts on the same thread that serves its connections;
/// more connections than that in its accept queue overflow it, and the
/// kernel resets them (SYN cookies that fail: `nstat` TcpExtSyncookiesFailed).
pub(crate) const INTERNAL_IN_FLIGHT: usize = 100;

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Accepts connections on `listener` until the process ends.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    transport: Transport,
    shared: Arc<FrontShared>,
) {
    let name = transport.name();
    info!(listener = name, addr = ?listener.local_addr().ok(), "listening");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, typically: wait instead of spinning.
                warn!(listener = name, error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(connection) = shared.connections.clone().try_acquire_owned() else {
            warn!(%peer, "closing a connection: the connection limit is reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let transport = transport.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            // Accepting never waits: a fleet reconnecting at once would
            // overflow the kernel's listen queue, which resets connections.
            // An accepted socket waits here for a handshake slot instead,
            // costing a descriptor and a small task; the slots bound what
            // handshakes (TLS state, CONNECT buffers) cost.
            let slot = shared.pending.clone().acquire_owned();
            let Ok(Ok(pending)) = tokio::time::timeout(shared.connect_timeout, slot).await else {
                info!(%peer, "closing a connection: no handshake slot freed within the connect timeout");
                return;
            };
            match serve(stream, peer, transport, &shared, pending).await {
                Ok(()) => {}
                // The client went away; nothing was refused.
                Err(e @ (FrontError::Io(_) | FrontError::Closed)) => {
                    debug!(%peer, error = %e, "connection ended");
                }
                // Logged where they happen, with more to say.
                Err(FrontError::Tls(_) | FrontError::Ws(_) | FrontError::Refused) => {}
                Err(e) => info!(%peer, error = %e, "closing a connection"),
            }
            drop(connection);
        });
    }
}

/// One client connection, from accept to close.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    transport: Transport,
    shared: &FrontShared,
    pending: OwnedSemaphorePermit,
) -> Result<(), FrontError> {
    // Boxed: the handshake state (TLS, WebSocket, CONNECT buffer) is
    // freed once admitted instead of sizing every connection's task for it.
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let admitted = tokio::time::timeout(
        shared.connect_timeout,
        Box::pin(admit(stream, peer, &transport, shared, conn)),
    )
    .await
    .map_err(|_| FrontError::Timeout)?;
    let (client, preamble, head, session, (principal, client_id)) = match admitted {
        Ok(admitted) => admitted,
        Err(e @ (FrontError::Tls(_) | FrontError::Ws(_))) => {
            info!(%peer, listener = transport.name(), error = %e, "handshake failed");
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    drop(pending);
    // Handed over to rumqttd in turn (see `INTERNAL_IN_FLIGHT`), within
    // the connect timeout.
    let dial = shared.dialing.clone().acquire_owned();
    let dialing = tokio::time::timeout(shared.connect_timeout, dial)
        .await
        .map_err(|_| FrontError::NoConnAck)?
        .map_err(|_| FrontError::NoConnAck)?;
    shared.presence.connecting(conn, &client_id);
    let _connecting = Connecting {
        presence: &shared.presence,
        conn,
    };
    let (outbox, deliveries) = tokio::sync::mpsc::channel(OUTBOX);
    shared.subscriptions.open(conn, outbox);
    let _open = Opened {
        subscriptions: &shared.subscriptions,
        conn,
    };
    let spread = usize::try_from(conn).unwrap_or(0) % shared.internal.len().max(1);
    let Some(internal) = shared.internal.get(spread) else {
        return Err(FrontError::ClosedBeforeConnAck);
    };
    let mut broker = dial_internal(internal).await?;
    let _ = broker.set_nodelay(true);
    broker.write_all(&preamble).await?;
    broker.write_all(&head).await?;
    let mut client = client;
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(shared.connect_timeout, broker.read(&mut answer))
        .await
        .map_err(|_| FrontError::NoConnAck)??;
    if n == 0 {
        return Err(FrontError::ClosedBeforeConnAck);
    }
    drop(dialing);
    client.write_all(&answer[..n]).await?;
    // Open from its CONNACK until the relay ends, however it ends.
    let _connected = shared.metrics.connected(transport.link());
    let mut online = accepted(&answer[..n]).then(|| {
        let now = shade_client::now_ms();
        shared
            .presence
            .connected(conn, &client_id, &principal, peer, now);
        Online {
            presence: &shared.presence,
            conn,
            reason: Reason::ConnectionLost,
        }
    });
    let relay = relay::relay(client, broker, &head, COPY_BUFFER, deliveries);
    let reason = |ended: &std::io::Result<relay::Ended>| match ended {
        Ok(relay::Ended::Goodbye) => Reason::ClientInitiated,
        Ok(relay::Ended::BrokerClosed) => Reason::ServerInitiated,
        Ok(relay::Ended::ClientGone) | Err(_) => Reason::ConnectionLost,
    };
    let Some((guard, revoked)) = session else {
        let ended = relay.await;
        if let Some(online) = &mut online {
            online.reason = reason(&ended);
        }
        return ended.map(drop).map_err(FrontError::from);
    };
    guard.admitted();
    tokio::select! {
        ended = relay => {
            if let Some(online) = &mut online {
                online.reason = reason(&ended);
            }
            ended?;
        }
        // Dropping the relay closes both sockets: rumqttd sees the link
        // go as if the client vanished (its will, if any, fires).
        Ok(()) = revoked => {
            if let Some(online) = &mut online {
                online.reason = Reason::AuthError;
            }
            info!(%peer, "closing a connection: the secret or password it logged in with was removed or changed");
        }
    }
    Ok(())
}

/// Whether `answer` starts with a CONNACK that accepts the connection
/// (the same byte for 3.1.1's return code and 5's reason code).
fn accepted(answer: &[u8]) -> bool {
    matches!(answer, [0x20, _, _, 0, ..])
}

/// A connection on its way to rumqttd: forgotten by [`Presence`] if it
/// never gets its CONNACK (a no-op once it did).
struct Connecting<'a> {
    presence: &'a Presence,
    conn: u64,
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.presence.abandoned(self.conn);
    }
}

/// An admitted connection: tells [`Presence`] when it ends, however it
/// ends.
struct Online<'a> {
    presence: &'a Presence,
    conn: u64,
    reason: Reason,
}

impl Drop for Online<'_> {
    fn drop(&mut self) {
        self.presence
            .disconnected(self.conn, self.reason, shade_client::now_ms());
    }
}

/// The watched session of a connection that logs in with a password or
/// secret (see [`crate::auth::sessions`]).
type Watched = (
    crate::auth::sessions::SessionGuard,
    tokio::sync::oneshot::Receiver<()>,
);

/// Closes a connection's outbox and drops its filters when it ends, however
/// it ends.
struct Opened<'a> {
    subscriptions: &'a Subscriptions,
    conn: u64,
}

impl Drop for Opened<'_> {
    fn drop(&mut self) {
        self.subscriptions.close(self.conn);
    }
}

/// Connects to rumqttd's internal listener. Its thread binds a moment
/// after `embedded::start` returns, so the first clients may have to wait
/// for it.
async fn dial_internal(internal: &AtomicU16) -> std::io::Result<TcpStream> {
    let mut attempts = 0;
    loop {
        let port = internal.load(Ordering::Acquire);
        let dialed = if port == 0 {
            Err(std::io::ErrorKind::ConnectionRefused.into())
        } else {
            TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)).await
        };
        match dialed {
            Ok(stream) => return Ok(stream),
            Err(e) if attempts < 100 && e.kind() == std::io::ErrorKind::ConnectionRefused => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                warn!(error = %e, "cannot reach the broker's internal listener");
                return Err(e);
            }
        }
    }
}

/// What [`admit`] hands on: the client stream, the preamble for the
/// gateway, the bytes read so far, for a login by password or secret its
/// watched session, and who connected under which client id.
type Admitted = (
    Box<dyn Io>,
    Vec<u8>,
    BytesMut,
    Option<Watched>,
    (Principal, String),
);

/// Handshakes, reads the CONNECT and authenticates it.
async fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    transport: &Transport,
    shared: &FrontShared,
    conn: u64,
) -> Result<Admitted, FrontError> {
    let (mut client, cert_cn): (Box<dyn Io>, Option<String>) = match transport {
        Transport::Tcp => (Box::new(stream), None),
        Transport::Ws => (websocket(stream).await?, None),
        Transport::Tls(config) => {
            let (tls, cn) = tls(stream, config).await?;
            (Box::new(tls), cn)
        }
        Transport::Wss(config) => {
            let (tls, cn) = tls(stream, config).await?;
            (websocket(tls).await?, cn)
        }
    };
    let (head, version, connect) = read_connect(&mut client, shared.max_connect_bytes).await?;
    let Packet::Connect(connect, _, _, _, login) = connect else {
        return Err(FrontError::NotConnect);
    };
    // Watched before the check (see `crate::auth::sessions`), under both tags
    // the name could turn out to have; the one that applies is kept.
    let sessions = shared.auth.devices.sessions();
    let mut watched = match (&login, &cert_cn) {
        (Some(login), None) if shared.auth.enabled && !login.username.is_empty() => {
            [user_tag(&login.username), device_tag(&login.username)]
                .map(|tag| {
                    let session = sessions.watch(&tag);
                    (tag, session)
                })
                .into()
        }
        _ => Vec::new(),
    };
    match shared
        .auth
        .authenticate(login.as_ref(), cert_cn.as_deref())
        .await
    {
        Ok(principal) => {
            debug!(%peer, client_id = %connect.client_id, principal = %principal.tag(), "authenticated");
            let tag = principal.tag();
            let preamble = wire::preamble(&shared.secret, conn, &tag);
            let session = watched
                .iter()
                .position(|(t, _)| *t == tag)
                .map(|i| watched.swap_remove(i).1);
            let client_id = connect.client_id.clone();
            Ok((client, preamble, head, session, (principal, client_id)))
        }
        Err(refusal) => {
            info!(%peer, client_id = %connect.client_id, username = ?login.as_ref().map(|l| &l.username), ?refusal, "refused a CONNECT");
            let code = match refusal {
                Refusal::BadCredentials => ConnectReturnCode::BadUserNamePassword,
                Refusal::NotAuthorized => ConnectReturnCode::NotAuthorized,
            };
            let ack = Packet::ConnAck(
                ConnAck {
                    session_present: false,
                    code,
                },
                None,
            );
            let mut out = BytesMut::new();
            let written = match version {
                Version::V4 => V4.write(ack, &mut out),
                Version::V5 => V5.write(ack, &mut out),
            };
            if written.is_ok() {
                client.write_all(&out).await?;
                client.flush().await?;
            }
            let _ = client.shutdown().await;
            Err(FrontError::Refused)
        }
    }
}

async fn tls(
    stream: TcpStream,
    config: &ServerTls,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, Option<String>), FrontError> {
    let tls = TlsAcceptor::from(config.current())
        .accept(stream)
        .await
        .map_err(FrontError::Tls)?;
    let cn = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(tls::common_name);
    Ok((tls, cn))
}

/// The WebSocket handshake (subprotocol `mqtt`, any path), then MQTT bytes
/// in binary frames.
async fn websocket<S>(stream: S) -> Result<Box<dyn Io>, FrontError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    use async_tungstenite::tungstenite::http::HeaderValue;
    // The signature is tungstenite's `Callback`, large error type included.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        let asks_mqtt = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|p| p.trim() == "mqtt"));
        if asks_mqtt {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        }
        Ok(response)
    };
    let ws = async_tungstenite::tokio::accept_hdr_async(stream, callback)
        .await
        .map_err(|e| FrontError::Ws(e.to_string()))?;
    Ok(Box::new(ws_stream_tungstenite::WsStream::new(ws)))
}

/// Reads until one whole MQTT packet is buffered and decodes it. Returns
/// every byte read (the packet and anything after it), the protocol
/// version and the packet.
async fn read_connect(
    client: &mut Box<dyn Io>,
    max: usize,
) -> Result<(BytesMut, Version, Packet), FrontError> {
    let mut buffer = BytesMut::with_capacity(512);
    loop {
        if let Some(len) = frame_length(&buffer)? {
            if len > max {
                return Err(FrontError::TooLarge(len));
            }
            if buffer.len() >= len {
                let mut frame = BytesMut::from(&buffer[..len]);
                let version = wire::sniff_version(&frame).map_err(FrontError::Malformed)?;
                let packet = match version {
                    Version::V4 => V4.read_mut(&mut frame, max),
                    Version::V5 => V5.read_mut(&mut frame, max),
                }
                .map_err(FrontError::Malformed)?;
                return Ok((buffer, version, packet));
            }
        }
        if client.read_buf(&mut buffer).await? == 0 {
            return Err(FrontError::Closed);
        }
    }
}

/// The length of the packet at the head of `buffer` once its fixed header
/// is complete; an error for anything but a CONNECT.
fn frame_length(buffer: &[u8]) -> Result<Option<usize>, FrontError> {
    let Some(&first) = buffer.first() else {
        return Ok(None);
    };
    if first != 0x10 {
        return Err(FrontError::NotConnect);
    }
    let mut remaining = 0usize;
    for (i, &byte) in buffer.iter().skip(1).take(4).enumerate() {
        remaining |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some(1 + (i + 1) + remaining));
        }
    }
    if buffer.len() > 5 {
        return Err(FrontError::Malformed(
            rumqttd::protocol::Error::MalformedRemainingLength,
        ));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_length_reads_the_fixed_header() {
        assert_eq!(frame_length(&[]).ok(), Some(None));
        assert_eq!(frame_length(&[0x10]).ok(), Some(None));
        assert_eq!(frame_length(&[0x10, 0x0c]).ok(), Some(Some(14)));
        assert_eq!(frame_length(&[0x10, 0x80, 0x01]).ok(), Some(Some(131)));
        assert!(frame_length(&[0x30, 0x00]).is_err());
        assert!(frame_length(&[0x10, 0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
    }
}
