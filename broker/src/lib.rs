//! shade-broker: `shade serve` (an embedded rumqttd broker, the AWS IoT Device
//! Shadow API, a redb store) and the `shade` operator CLI.
//!
//! # Layout
//!
//! - [`embedded`]: the embedded rumqttd broker (router, listeners, the
//!   service's in-process link) behind `start`, `BrokerHandle` and `Inbound`.
//! - [`front`]: shade's own listeners (TCP, TLS, WebSocket, WSS) in front
//!   of rumqttd: handshakes, CONNECT, authentication, then a loopback hop.
//! - [`tls`]: rustls server configuration and client-certificate names.
//! - [`auth`]: who a connection is (config users, device secrets, certificates).
//! - [`acl`]: what each principal may publish, subscribe to and receive.
//! - [`gateway`]: the per-connection wrapper around rumqttd's codecs that
//!   stamps the publisher's identity and maps `$aws/...` in and out of the
//!   router's internal namespace.
//! - [`credentials`]: device secrets and password hashes (argon2id PHC
//!   strings), and the shared [`credentials::Credentials`] a connecting
//!   device's secret is verified against.
//! - [`sessions`]: the open connections a password or secret let in, which
//!   removing or replacing it closes.
//! - [`devices`]: the `device-add`, `device-remove` and `device-list`
//!   queries, run on the store thread or over a stopped broker's data.
//! - [`config`]: `shade serve` configuration, raw TOML validated into a typed `Config`.
//! - [`store`]: the redb store of shadows, their history and agents' vectors.
//! - [`dispatch`], [`admission`]: routing of client requests to the store
//!   thread, with per-thing rates and per-client in-flight limits (429).
//! - [`service`]: what each request does to a stored shadow, and its replies.
//! - [`engine`]: the store thread, committing requests in groups.
//! - [`serve`]: `shade serve`, wiring broker, service and store together.
//! - [`reload`]: SIGHUP, reading the config users and TLS files again.
//! - [`cli`]: the operator commands (`shade get`, `list`, `update`,
//!   `delete`, `watch`, `history`, `conflicts`), online over MQTT or
//!   offline over a stopped broker's data.

pub mod acl;
pub mod admission;
pub mod auth;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod devices;
pub mod dispatch;
pub mod embedded;
pub mod engine;
pub mod front;
pub mod gateway;
pub mod ops;
mod relay;
pub mod reload;
pub mod serve;
pub mod service;
pub mod sessions;
pub mod store;
pub mod tls;
