//! shade-client: what the device agent (`shade-agent`) and the operator
//! command line (`shade get`, `update`, ...) both need to reach a broker.
//!
//! Both are MQTT clients of `shade serve` and take the same broker
//! addresses, TLS files and credentials, so they parse and build them
//! here, once. This crate does I/O (it reads PEM files and the system's
//! root store, and the wall clock), which is why it is not part of the
//! sans-IO `shade-shared`; and it knows nothing of the broker's internals,
//! so the agent can use it without depending on `shade-broker`.
//!
//! ```
//! use shade_client::{mqtt_options, BrokerUrl};
//!
//! # fn main() -> Result<(), shade_client::ClientError> {
//! let broker: BrokerUrl = "mqtts://broker.lan".parse()?;
//! assert_eq!((broker.host.as_str(), broker.port, broker.tls), ("broker.lan", 8883, true));
//! // Plain TCP here; an `mqtts://` broker passes `client_config(..)?`.
//! let options = mqtt_options("shade-example", &"mqtt://127.0.0.1".parse()?, None, None);
//! assert_eq!(options.broker_address(), ("127.0.0.1".to_owned(), 1883));
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `url`: [`BrokerUrl`], parsed from `mqtt://HOST:PORT`,
//!   `mqtts://HOST:PORT` or `HOST[:PORT]`, and printed back.
//! - `tls`: [`client_config`], the rustls client configuration of an
//!   `mqtts://` broker from [`TlsFiles`] (`--ca`, `--cert`, `--key`).
//! - `mqtt`: [`mqtt_options`], the rumqttc options of a connection to a
//!   [`BrokerUrl`], over TLS when given, with optional [`Credentials`].
//! - `clock`: [`now_ms`], the wall clock.
//! - this file: [`ClientError`], the errors of all of the above.

use std::path::PathBuf;

mod clock;
mod mqtt;
mod tls;
mod url;

pub use clock::now_ms;
pub use mqtt::{mqtt_options, Credentials};
pub use tls::{client_config, ClientIdentity, TlsFiles};
/// The configuration [`client_config`] builds, which [`mqtt_options`] takes.
pub use tokio_rustls::rustls::ClientConfig;
pub use url::BrokerUrl;

/// Why a broker address or TLS file cannot be used. Each message is one
/// line that names the address or the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A scheme other than `mqtt`, `tcp`, `mqtts` or `ssl`.
    #[error("{scheme}:// is not supported; use mqtt://HOST:PORT or mqtts://HOST:PORT")]
    Scheme { scheme: String },
    /// `[` without its `]`.
    #[error("{url:?}: missing ] after an IPv6 address")]
    Ipv6 { url: String },
    /// No host, or a path after it.
    #[error("{url:?} is not a broker address like mqtt://127.0.0.1:1883")]
    Host { url: String },
    #[error("{url:?}: {port:?} is not a port number")]
    Port { url: String, port: String },
    #[error("cannot read {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{path} holds no {what} (PEM)")]
    Empty { what: &'static str, path: PathBuf },
    #[error("no system root certificates found; name the broker's CA with --ca FILE")]
    NoSystemRoots,
    #[error("invalid TLS setup: {0}")]
    Rustls(String),
}
