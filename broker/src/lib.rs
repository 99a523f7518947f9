//! shade-broker: `shade serve` (an embedded rumqttd broker, the AWS IoT Device
//! Shadow API, a redb store) and the `shade` operator CLI.
//!
//! # Layout
//!
//! The modules are floors: each one uses only the floors below it, in the
//! order they are declared here (a test, `tests/layers.rs`, holds every
//! crate of the workspace to that). Where a change goes:
//!
//! - [`identity`]: who is who: principals (config users, devices), their
//!   tags, and the stamped client id `<tag>|<client id>` that carries them.
//! - [`wire`]: MQTT framing that rumqttd's codecs lack: the protocol level
//!   of a CONNECT, the front's preamble to the gateway, packet peeks.
//! - [`metrics`]: the `shade_*` Prometheus series (`GET /metrics`): what
//!   the floors above record, atomics resolved in advance.
//! - [`store`]: redb: shadows, their history, agents' vectors, device
//!   secrets; one writer, any number of readers.
//! - [`auth`]: authentication (passwords, device secrets, certificates),
//!   authorization ([`auth::acl`]), the credentials table the listeners
//!   check, and the sessions that a revoked secret closes.
//! - [`subscriptions`]: every connection's filters on the service's topics
//!   and its outbox: the service's messages are delivered from here into
//!   the front's relay, not through rumqttd's router.
//! - [`presence`]: who is connected: AWS's lifecycle events, and each
//!   thing's `connected` and `lastSeen`, counted per connection.
//! - [`front`]: shade's listeners (TCP, TLS, WebSocket, WSS): handshakes,
//!   CONNECT, authentication, then a loopback hop to rumqttd.
//! - [`router`]: the embedded rumqttd router, its internal listener, the
//!   per-connection [`router::gateway`] that maps topics in and out of the
//!   router's namespace, and the service's in-process link.
//! - [`shadow`]: what an AWS request or a `sync/up` does to a stored
//!   shadow, and the messages it produces.
//! - [`fleet`]: fleet queries (`list --where`, `count --by --stats`) over
//!   the retained states online and the store offline, and live counts.
//! - [`ops`]: the operator queries on `shade/ops/request`: list, history,
//!   conflicts, and the device table ([`ops::devices`]).
//! - [`config`]: `shade serve`'s configuration, raw TOML validated into a
//!   typed [`config::Config`].
//! - [`http`]: the HTTP API (AWS's shadow REST API, the fleet queries,
//!   the event stream) and the dashboard page, on axum and hyper.
//! - [`serve`]: `shade serve` itself: wiring, parsing and admitting requests
//!   ([`serve::dispatch`], [`serve::admission`]), the store's writer thread
//!   ([`serve::writer`]) and SIGHUP ([`serve::reload`]).
//! - [`cli`]: the operator commands, online over MQTT or offline over a
//!   stopped broker's data.
//!
//! Only [`cli`] is a public module (the `shade` binary calls its commands).
//! The rest is private; what the binary, the tests and the fuzz targets
//! need is re-exported below: [`serve()`] with its [`Config`], the core
//! that the in-memory tests drive ([`Store`], [`Service`], [`Writer`],
//! [`Request`]), the principals and credentials, and [`embedded`], the
//! broker and its gateway without the shadow service.

// These docs are for shade's developers (`cargo doc --document-private-items`):
// they link the private modules they describe.
#![allow(rustdoc::private_intra_doc_links)]

mod identity;

mod wire;

mod metrics;

mod store;

mod auth;

mod subscriptions;

mod presence;

mod front;

mod router;

mod shadow;

mod fleet;

mod ops;

mod config;

mod http;

mod serve;

pub mod cli;

// The public surface: what the `shade` binary, the tests and the fuzz
// targets use. Everything else stays inside the crate.
pub use auth::credentials::{hash_device_secret, verify_phc, Credentials};
pub use auth::Auth;
pub use config::{Config, ConfigError, Overrides};
pub use identity::{DeviceGrants, Principals, Role, SharedUsers, UserEntry, Users};
pub use ops::OpsRequest;
pub use serve::request::Request;
pub use serve::serve;
pub use serve::writer::Writer;
pub use shadow::Service;
pub use store::{Store, StoreError};

/// The embedded broker on its own, without the shadow service: for tests
/// and tools that drive the router and its gateway directly.
pub mod embedded {
    pub use crate::front::Transport;
    pub use crate::router::gateway::{peek_publish, preamble, Gateway, GatewayContext};
    pub use crate::router::{
        start, BrokerHandle, BrokerSettings, EmbeddedError, Inbound, LogSize, Outbound, Retained,
        Subscriptions,
    };
}
