//! [`BrokerSettings`]: what the embedded broker listens on and how it is
//! sized, checked against what rumqttd would panic on, and turned into
//! rumqttd's own configuration types.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttd::{ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings};

use super::error::EmbeddedError;
use super::gateway::SERVICE_FILTER;
use crate::auth::Auth;
use crate::front::Transport;

/// How much of one subscription filter's traffic rumqttd keeps in memory: it
/// appends every message to the log of each filter that matches it, in
/// segments of `segment_bytes`, and drops the oldest segment once there are
/// `segments`. A subscriber further behind than that loses messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSize {
    pub segment_bytes: usize,
    pub segments: usize,
}

impl LogSize {
    fn to_rumqttd(self) -> SegmentConfig {
        SegmentConfig {
            max_segment_size: self.segment_bytes,
            max_segment_count: self.segments,
        }
    }
}

/// What the embedded broker listens on and how it is sized. The defaults
/// suit a small machine: a few tens of MB for ten thousand connections,
/// where rumqttd's sample config allows 1 GB per filter.
#[derive(Clone)]
pub struct BrokerSettings {
    /// Where clients connect, and how: TCP, TLS, WebSocket (subprotocol
    /// `mqtt`, any path) or WebSocket over TLS. Each connection may speak
    /// MQTT 3.1.1 or 5: the gateway reads the level from CONNECT.
    pub listeners: Vec<(SocketAddr, Transport)>,
    /// Client connections; the service's own link comes on top.
    pub max_connections: usize,
    /// Connections still handshaking or waiting for their CONNECT; more
    /// wait to be accepted (bounds the memory a half-open flood costs).
    pub max_pending_connections: usize,
    /// Largest packet a client may send (topic, properties and payload),
    /// in bytes; a bigger one closes its connection.
    pub max_payload: usize,
    /// How long a new connection has to send CONNECT (at most 65.535 s,
    /// a rumqttd limit).
    pub connect_timeout: Duration,
    /// Who may connect and what each may do. Disabled admits anyone with
    /// full access; the caller decides when that is allowed (DESIGN.md:
    /// loopback only, or `--allow-anonymous`).
    pub auth: Auth,
    /// Log of `_in/#`, the requests waiting for the service: how far the
    /// service may fall behind before the oldest requests are lost.
    pub service_log: LogSize,
    /// Log of every client subscription filter. rumqttd never frees a
    /// filter's log, so this is kept small: memory grows with the number of
    /// distinct filters times this, at most.
    pub client_log: LogSize,
    /// Requests buffered between the link thread and the service.
    pub inbound_capacity: usize,
    /// Service publishes buffered between [`BrokerHandle`](super::BrokerHandle) and the link.
    pub outbound_capacity: usize,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            listeners: vec![(SocketAddr::from(([127, 0, 0, 1], 1883)), Transport::Tcp)],
            max_connections: 10_000,
            max_pending_connections: 1024,
            max_payload: 128 * 1024,
            connect_timeout: Duration::from_secs(10),
            auth: Auth::disabled(),
            service_log: LogSize {
                segment_bytes: 1024 * 1024,
                segments: 10,
            },
            client_log: LogSize {
                segment_bytes: 256 * 1024,
                segments: 4,
            },
            inbound_capacity: 1024,
            outbound_capacity: 1024,
        }
    }
}

impl fmt::Debug for BrokerSettings {
    /// `Auth`'s own `Debug` names users but never prints their hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("listeners", &self.listeners)
            .field("max_connections", &self.max_connections)
            .field("max_pending_connections", &self.max_pending_connections)
            .field("max_payload", &self.max_payload)
            .field("connect_timeout", &self.connect_timeout)
            .field("auth", &self.auth)
            .field("service_log", &self.service_log)
            .field("client_log", &self.client_log)
            .field("inbound_capacity", &self.inbound_capacity)
            .field("outbound_capacity", &self.outbound_capacity)
            .finish()
    }
}

/// rumqttd's outgoing inflight window is a constant (100) in 0.20; this is
/// the matching number of packets read from one socket per batch.
const READ_BATCH: usize = 100;
/// QoS 0 messages handed to one connection per router pass. rumqttd also
/// truncates the retained messages a new QoS 0 subscription receives to
/// this count, and every shadow's state is a retained message, so it is
/// sized for a large fleet: a dashboard subscribing to `shade/things/#`
/// must see every shadow. The messages are reference-counted slices of
/// the router's log, so a large pass costs pointers, not copies.
const MAX_OUTGOING_PER_PASS: u64 = 200_000;
/// Above this, rumqttd's router preallocates too much (and, far above,
/// overflows a capacity computation).
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;
/// The largest remaining length MQTT can encode.
const MQTT_MAX_PACKET: usize = 268_435_455;

impl BrokerSettings {
    fn listeners(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.listeners.iter().map(|(addr, _)| *addr)
    }

    /// Rejects what rumqttd would panic on, or silently misbehave with.
    pub(super) fn validate(&self) -> Result<(), EmbeddedError> {
        let bad = |what: String| Err(EmbeddedError::Setting(what));
        if self.listeners().next().is_none() {
            return bad("no listener: give at least one TCP or WebSocket address".to_owned());
        }
        let mut seen = HashSet::new();
        for addr in self.listeners() {
            if addr.port() == 0 {
                return bad(format!("{addr}: port 0 would bind a port nobody can learn"));
            }
            if !seen.insert(addr) {
                return bad(format!("{addr} is given twice"));
            }
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            return bad(format!(
                "max_connections must be 1..={MAX_CONNECTIONS_LIMIT}"
            ));
        }
        if !(1..=MQTT_MAX_PACKET).contains(&self.max_payload) {
            return bad(format!("max_payload must be 1..={MQTT_MAX_PACKET} bytes"));
        }
        if u16::try_from(self.connect_timeout.as_millis()).map_or(true, |ms| ms == 0) {
            return bad("connect_timeout must be 1 ms..=65.535 s".to_owned());
        }
        for (name, log) in [
            ("service_log", self.service_log),
            ("client_log", self.client_log),
        ] {
            // rumqttd panics below 1 KiB or without a segment.
            if log.segment_bytes < 1024 || log.segments == 0 {
                return bad(format!(
                    "{name} needs segments of at least 1024 bytes, and at least one"
                ));
            }
        }
        if self.max_pending_connections == 0 {
            return bad("max_pending_connections must be at least 1".to_owned());
        }
        if self.inbound_capacity == 0 || self.outbound_capacity == 0 {
            return bad("channel capacities must be at least 1".to_owned());
        }
        Ok(())
    }

    pub(super) fn router_config(&self) -> RouterConfig {
        RouterConfig {
            // The service link, and room for connections the front has
            // closed while rumqttd has not yet noticed.
            max_connections: self.max_connections + 1 + self.max_pending_connections,
            max_outgoing_packet_count: MAX_OUTGOING_PER_PASS,
            max_segment_size: self.client_log.segment_bytes,
            max_segment_count: self.client_log.segments,
            custom_segment: Some(HashMap::from([(
                SERVICE_FILTER.to_owned(),
                self.service_log.to_rumqttd(),
            )])),
            ..RouterConfig::default()
        }
    }

    pub(super) fn connection_settings(&self) -> ConnectionSettings {
        ConnectionSettings {
            // Fits: `validate` checked it.
            connection_timeout_ms: u16::try_from(self.connect_timeout.as_millis())
                .unwrap_or(u16::MAX),
            max_payload_size: self.max_payload,
            max_inflight_count: READ_BATCH,
            // The front authenticates; the gateway checks its preamble.
            auth: None,
            external_auth: None,
            // Only matters for a topic no filter matches, which rumqttd 0.20
            // discards either way (`DataLog::matches` never returns `None`).
            dynamic_filters: false,
        }
    }
}

pub(super) fn server_settings(
    name: String,
    listen: SocketAddr,
    connections: &ConnectionSettings,
) -> ServerSettings {
    ServerSettings {
        name,
        listen,
        tls: None,
        // Only the front connects here, and it bounds how many connections
        // are pending; a delay would only slow reconnect storms down.
        next_connection_delay_ms: 0,
        connections: connections.clone(),
    }
}
