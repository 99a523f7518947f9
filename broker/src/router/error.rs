//! [`EmbeddedError`]: what can go wrong starting or using the embedded
//! broker, for every part of the router module.

use std::io;
use std::net::SocketAddr;

/// Everything that can go wrong starting or using the embedded broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    #[error("invalid broker setting: {0}")]
    Setting(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot start a broker thread: {0}")]
    Thread(#[source] io::Error),
    #[error("no OS randomness for the listener secret: {0}")]
    Random(String),
    /// rumqttd's `LinkError` carries router internals that are neither
    /// `Sync` nor useful to print, so only its message is kept.
    #[error("the service link to the router failed: {0}")]
    Link(String),
    #[error("the service cannot publish on {0:?}: clients could never receive it")]
    Topic(String),
    #[error("the broker's service link has stopped")]
    Closed,
}
