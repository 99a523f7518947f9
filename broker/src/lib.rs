//! shade-broker: `shade serve` (an embedded rumqttd broker, the AWS IoT Device
//! Shadow API, a redb store) and the `shade` operator CLI.
//!
//! # Layout
//!
//! - [`embedded`]: the embedded rumqttd broker (router, listeners, the
//!   service's in-process link) behind `start`, `BrokerHandle` and `Inbound`.
//! - [`gateway`]: the per-connection wrapper around rumqttd's codecs that
//!   stamps the publisher's identity and maps `$aws/...` in and out of the
//!   router's internal namespace.

pub mod embedded;
pub mod gateway;
pub mod config;
pub mod store;
pub mod service;
pub mod engine;
pub mod serve;
