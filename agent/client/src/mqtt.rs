//! The rumqttc options of a connection to a broker: the address, TLS and
//! credentials. What differs between the agent and the CLI (client id,
//! keep-alive, packet sizes) each sets on the options it gets back.

use std::fmt;
use std::sync::Arc;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use tokio_rustls::rustls::ClientConfig;

use crate::BrokerUrl;

/// The user name and password sent in the CONNECT.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A password must not reach a log through `{:?}`.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Options to connect as `client_id` to `broker`, over TLS with `tls`
/// (which an `mqtts://` broker needs: see [`crate::client_config`]), sending
/// `credentials` when given.
///
/// The session is clean: neither client wants the broker to keep one. The
/// agent's replica is its session (it sends everything unacknowledged on
/// every connect), and the CLI lives for a few requests.
pub fn mqtt_options(
    client_id: impl Into<String>,
    broker: &BrokerUrl,
    tls: Option<Arc<ClientConfig>>,
    credentials: Option<Credentials>,
) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    options.set_clean_session(true);
    if let Some(Credentials { username, password }) = credentials {
        options.set_credentials(username, password);
    }
    if let Some(config) = tls {
        // rumqttc checks the server's certificate against `broker.host`.
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_carry_the_address_credentials_and_a_clean_session() {
        let broker: BrokerUrl = "mqtt://[::1]:1885".parse().expect("valid");
        let options = mqtt_options(
            "lamp",
            &broker,
            None,
            Some(Credentials {
                username: "lamp".into(),
                password: "s3cret".into(),
            }),
        );
        assert_eq!(options.client_id(), "lamp");
        assert_eq!(options.broker_address(), ("::1".to_owned(), 1885));
        assert!(options.clean_session());
        let login = options.credentials().map(|l| (l.username, l.password));
        assert_eq!(login, Some(("lamp".to_owned(), "s3cret".to_owned())));
        assert!(matches!(options.transport(), Transport::Tcp));
        let none = mqtt_options("cli", &broker, None, None);
        assert!(none.credentials().is_none());
    }

    #[test]
    fn credentials_do_not_print_the_password() {
        let c = Credentials {
            username: "admin".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
