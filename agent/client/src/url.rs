//! Broker addresses: `mqtt://HOST:PORT` (plain TCP, port 1883 by default),
//! `mqtts://HOST:PORT` (TLS, port 8883 by default), or `HOST[:PORT]`,
//! which is `mqtt://`. `tcp://` and `ssl://` are accepted as the names
//! other MQTT tools give the same two. An IPv6 address is bracketed:
//! `mqtt://[::1]:1883`.

use std::fmt;
use std::str::FromStr;

use crate::ClientError;

/// Where a broker listens. Over TLS the server's certificate must name
/// `host`: rumqttc hands it to rustls as the server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// A name or an IP address, without brackets.
    pub host: String,
    pub port: u16,
    /// `mqtts://`: MQTT over TLS.
    pub tls: bool,
}

impl FromStr for BrokerUrl {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, ClientError> {
        let (tls, rest) = match s.split_once("://") {
            Some(("mqtt" | "tcp", rest)) => (false, rest),
            Some(("mqtts" | "ssl", rest)) => (true, rest),
            Some((scheme, _)) => {
                return Err(ClientError::Scheme {
                    scheme: scheme.to_owned(),
                })
            }
            None => (false, s),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            // [::1]:1883
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| ClientError::Ipv6 { url: s.to_owned() })?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').unwrap_or(p))),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains('/') {
            return Err(ClientError::Host { url: s.to_owned() });
        }
        let port = match port {
            None if tls => 8883,
            None => 1883,
            Some(p) => p.parse().map_err(|_| ClientError::Port {
                url: s.to_owned(),
                port: p.to_owned(),
            })?,
        };
        Ok(BrokerUrl {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Result<BrokerUrl, ClientError> {
        s.parse()
    }

    fn broker(host: &str, port: u16, tls: bool) -> BrokerUrl {
        BrokerUrl {
            host: host.into(),
            port,
            tls,
        }
    }

    #[test]
    fn broker_urls_parse_and_print_back() {
        let u = url("mqtt://127.0.0.1:18830").expect("valid");
        assert_eq!(u, broker("127.0.0.1", 18830, false));
        assert_eq!(u.to_string(), "mqtt://127.0.0.1:18830");
        assert_eq!(url("mqtt://broker.lan").expect("valid").port, 1883);
        assert_eq!(url("mqtt://broker.lan/").expect("valid").port, 1883);
        assert_eq!(url("tcp://broker.lan:1884").expect("valid").port, 1884);
        let v6 = url("mqtt://[::1]:1885").expect("valid");
        assert_eq!(v6, broker("::1", 1885, false));
        assert_eq!(v6.to_string(), "mqtt://[::1]:1885");
    }

    #[test]
    fn a_url_without_a_scheme_is_plain_mqtt() {
        assert_eq!(
            url("localhost").expect("valid"),
            broker("localhost", 1883, false)
        );
        assert_eq!(
            url("localhost:1884").expect("valid"),
            broker("localhost", 1884, false)
        );
    }

    #[test]
    fn mqtts_urls_select_tls_with_port_8883_by_default() {
        let u = url("mqtts://broker.lan").expect("valid");
        assert_eq!(u, broker("broker.lan", 8883, true));
        assert_eq!(u.to_string(), "mqtts://broker.lan:8883");
        assert_eq!(
            url("mqtts://127.0.0.1:18883").expect("valid"),
            broker("127.0.0.1", 18883, true)
        );
        assert_eq!(
            url("mqtts://[::1]:18883").expect("valid"),
            broker("::1", 18883, true)
        );
        assert_eq!(
            url("mqtts://[::1]").expect("valid"),
            broker("::1", 8883, true)
        );
        assert_eq!(
            url("ssl://[::1]").expect("valid").to_string(),
            "mqtts://[::1]:8883"
        );
    }

    #[test]
    fn other_schemes_are_refused_by_name() {
        for s in ["ws://host:8080", "http://x:1", "wss://host"] {
            let e = url(s).expect_err(s);
            assert!(matches!(e, ClientError::Scheme { .. }), "{s}: {e:?}");
            assert!(e.to_string().contains("not supported"), "{e}");
        }
        assert_eq!(
            url("ftp://host:21").expect_err("ftp").to_string(),
            "ftp:// is not supported; use mqtt://HOST:PORT or mqtts://HOST:PORT"
        );
    }

    #[test]
    fn a_url_without_a_host_is_refused() {
        for s in [
            "mqtt://:1883",
            "mqtt://",
            "",
            ":1883",
            "mqtts://[]:8883",
            "mqtt://host/path",
        ] {
            let e = url(s).expect_err(s);
            assert!(matches!(e, ClientError::Host { .. }), "{s:?}: {e:?}");
        }
        assert_eq!(
            url("mqtt://:1883").expect_err("no host").to_string(),
            "\"mqtt://:1883\" is not a broker address like mqtt://127.0.0.1:1883"
        );
        let e = url("mqtt://[::1:1883").expect_err("no ]");
        assert!(matches!(e, ClientError::Ipv6 { .. }), "{e:?}");
    }

    #[test]
    fn a_port_that_is_not_a_u16_is_refused() {
        for s in [
            "mqtt://host:port",
            "mqtt://host:70000",
            "mqtt://host:",
            "mqtt://host:-1",
            "mqtts://[::1]:x",
        ] {
            let e = url(s).expect_err(s);
            assert!(matches!(e, ClientError::Port { .. }), "{s}: {e:?}");
        }
        assert_eq!(
            url("mqtt://host:port").expect_err("bad port").to_string(),
            "\"mqtt://host:port\": \"port\" is not a port number"
        );
    }
}
