//! [`Http`]: a blocking HTTP client (ureq) of `shade serve`'s HTTP API,
//! with Basic credentials when given, every call bounded; and
//! [`EventStream`], a reader of `GET /events`.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use base64ct::{Base64, Encoding};
use serde_json::Value;

/// One answer: the status, the headers asked for, the body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// `WWW-Authenticate`, if sent.
    pub challenge: Option<String>,
    /// `Content-Type`, if sent.
    pub content_type: Option<String>,
}

impl Reply {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} with a body that is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A client of one server's HTTP API.
#[derive(Debug, Clone)]
pub struct Http {
    base: String,
    agent: ureq::Agent,
    authorization: Option<String>,
    headers: Vec<(String, String)>,
}

fn agent(tls: Option<ureq::tls::TlsConfig>, timeout: Duration) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout));
    if let Some(tls) = tls {
        config = config.tls_config(tls);
    }
    config.build().into()
}

impl Http {
    /// A client of `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str) -> Http {
        Http {
            base: base.to_owned(),
            agent: agent(None, crate::REPLY_TIMEOUT),
            authorization: None,
            headers: Vec::new(),
        }
    }

    /// A client of `https://127.0.0.1:PORT` trusting only the CA in PEM.
    pub fn https(port: u16, ca_pem: &[u8]) -> Http {
        let ca = ureq::tls::Certificate::from_pem(ca_pem).expect("the test CA as PEM");
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca.to_owned()]))
            .build();
        Http {
            base: format!("https://127.0.0.1:{port}"),
            agent: agent(Some(tls), crate::REPLY_TIMEOUT),
            authorization: None,
            headers: Vec::new(),
        }
    }

    /// The same client with HTTP Basic credentials.
    pub fn basic(&self, name: &str, password: &str) -> Http {
        let encoded = Base64::encode_string(format!("{name}:{password}").as_bytes());
        Http {
            authorization: Some(format!("Basic {encoded}")),
            ..self.clone()
        }
    }

    /// The same client sending `name: value` with every request.
    pub fn with_header(&self, name: &str, value: &str) -> Http {
        let mut http = self.clone();
        http.headers.push((name.to_owned(), value.to_owned()));
        http
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.request("POST", path, Some(body.to_string().into_bytes()))
    }

    pub fn post_raw(&self, path: &str, body: &[u8]) -> Reply {
        self.request("POST", path, Some(body.to_vec()))
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, None)
    }

    /// One request; a transport error (refused, timed out) panics.
    pub fn request(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Reply {
        let url = format!("{}{path}", self.base);
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    /// [`Http::request`], with a transport error as an `Err`.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, ureq::Error> {
        let url = format!("{}{path}", self.base);
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(auth) = &self.authorization {
            builder = builder.header("authorization", auth);
        }
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .header("content-type", "application/json")
            .body(body.unwrap_or_default())
            .expect("a well-formed request");
        let mut response = self.agent.run(request)?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let challenge = header("www-authenticate");
        let content_type = header("content-type");
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()?;
        Ok(Reply {
            status,
            body,
            challenge,
            content_type,
        })
    }

    /// Opens `GET /events{query}`, sending `Last-Event-ID` when given.
    pub fn events(&self, query: &str, last_event_id: Option<&str>) -> EventStream {
        self.stream(&format!("/events{query}"), last_event_id)
    }

    /// Opens `GET /count/stream{query}`, a live count.
    pub fn count_stream(&self, query: &str) -> EventStream {
        self.stream(&format!("/count/stream{query}"), None)
    }

    /// Opens a Server-Sent Events stream at `path`.
    fn stream(&self, path: &str, last_event_id: Option<&str>) -> EventStream {
        let url = format!("{}{path}", self.base);
        let agent = agent(None, Duration::from_secs(90));
        let mut request = agent.get(&url);
        if let Some(auth) = &self.authorization {
            request = request.header("authorization", auth);
        }
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(response.status().as_u16(), 200, "GET {url}");
        let reader: Box<dyn Read + Send> = Box::new(response.into_body().into_reader());
        EventStream {
            lines: BufReader::new(reader),
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<String>,
    pub data: Value,
}

/// The events of one `GET /events` response, read as they come.
pub struct EventStream {
    lines: BufReader<Box<dyn Read + Send>>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventStream")
    }
}

impl EventStream {
    /// The next event (keep-alive comments skipped); `None` when the
    /// stream ended.
    pub fn next_event(&mut self) -> Option<Event> {
        let mut id = None;
        let mut data = String::new();
        loop {
            let mut line = String::new();
            match self.lines.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("an event whose data is not JSON ({e}): {data}"));
                return Some(Event { id, data });
            }
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim_start().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    }

    /// The next event; panics when the stream ends first.
    pub fn expect_event(&mut self, what: &str) -> Event {
        self.next_event()
            .unwrap_or_else(|| panic!("the event stream ended before {what}"))
    }
}
