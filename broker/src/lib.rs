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
//! - [`store`]: redb: shadows, their history, agents' vectors, device
//!   secrets; one writer, any number of readers.
//! - [`auth`]: authentication (passwords, device secrets, certificates),
//!   authorization ([`auth::acl`]), the credentials table the listeners
//!   check, and the sessions that a revoked secret closes.
//! - [`front`]: shade's listeners (TCP, TLS, WebSocket, WSS): handshakes,
//!   CONNECT, authentication, then a loopback hop to rumqttd.
//! - [`router`]: the embedded rumqttd router, its internal listener, the
//!   per-connection [`router::gateway`] that maps topics in and out of the
//!   router's namespace, and the service's in-process link.
//! - [`shadow`]: what an AWS request or a `sync/up` does to a stored
//!   shadow, and the messages it produces.
//! - [`ops`]: the operator queries on `shade/ops/request`: list, history,
//!   conflicts, and the device table ([`ops::devices`]).
//! - [`config`]: `shade serve`'s configuration, raw TOML validated into a
//!   typed [`config::Config`].
//! - [`serve`]: `shade serve` itself: wiring, parsing and admitting requests
//!   ([`serve::dispatch`], [`serve::admission`]), the store's writer thread
//!   ([`serve::writer`]) and SIGHUP ([`serve::reload`]).
//! - [`cli`]: the operator commands, online over MQTT or offline over a
//!   stopped broker's data.

pub mod identity;

pub mod wire;

pub mod store;

pub mod auth;

pub mod front;

pub mod router;

pub mod shadow;

pub mod ops;

pub mod config;

pub mod serve;

pub mod cli;
