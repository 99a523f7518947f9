//! What the HTTP handlers share: the way to the dispatcher ([`Call`]),
//! who is calling ([`Caller`]), and the operator queries they run.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use shade_shared::Limits;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::events::Events;
use super::login::Logins;
use crate::auth::Auth;
use crate::config::HttpConfig;
use crate::identity::Principal;
use crate::metrics::Metrics;
use crate::router::Outbound;

/// Where the dispatcher sends the messages that answer a [`Call`].
pub(crate) type Answer = oneshot::Sender<Vec<Outbound>>;

/// A request of the HTTP API, as the MQTT publish it stands for: the
/// stamped client id, the topic and the payload, with where to answer.
#[derive(Debug)]
pub(crate) struct Call {
    pub client_id: String,
    pub topic: String,
    pub payload: Vec<u8>,
    pub answer: Answer,
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    calls: mpsc::Sender<Call>,
    auth: Auth,
    logins: Arc<Logins>,
    pub(crate) events: Arc<Events>,
    pub(crate) limits: Limits,
    /// How long a client has to send a request body.
    pub(crate) body_timeout: Duration,
    /// Makes each ops query's clientToken unique.
    tokens: Arc<AtomicU64>,
    /// What `GET /metrics` serves, and where HTTP counts its requests.
    pub(crate) metrics: Arc<Metrics>,
}

/// The connection a request came on: its peer (for the client id) and a
/// way to close it (an event stream that falls behind closes its own).
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub peer: SocketAddr,
    pub close: CancellationToken,
}

impl Api {
    pub(crate) fn new(
        calls: mpsc::Sender<Call>,
        auth: Auth,
        events: Arc<Events>,
        limits: Limits,
        config: &HttpConfig,
        metrics: Arc<Metrics>,
    ) -> Api {
        Api {
            calls,
            auth,
            logins: Arc::new(Logins::default()),
            events,
            limits,
            body_timeout: config.header_timeout,
            tokens: Arc::new(AtomicU64::new(1)),
            metrics,
        }
    }

    /// Hands `topic` and `payload` to the dispatcher as `client_id` and
    /// waits for the messages that answer it.
    pub(crate) async fn call(
        &self,
        client_id: String,
        topic: String,
        payload: Vec<u8>,
    ) -> Result<Vec<Outbound>, ApiError> {
        let (answer, answered) = oneshot::channel();
        let call = Call {
            client_id,
            topic,
            payload,
            answer,
        };
        if self.calls.send(call).await.is_err() {
            return Err(ApiError::unavailable("shade serve is shutting down"));
        }
        answered
            .await
            .map_err(|_| ApiError::internal("the request was not answered"))
    }

    pub(crate) fn next_token(&self) -> String {
        format!("http{}", self.tokens.fetch_add(1, Ordering::Relaxed))
    }
}

/// Who sent a request, and the client id its calls carry: `http-<peer>`,
/// after the principal's tag when authentication is on, as a gateway
/// stamps an MQTT client's.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub principal: Principal,
    pub client_id: String,
}

impl Api {
    pub(crate) fn auth_enabled(&self) -> bool {
        self.auth.enabled
    }

    /// The caller of a request with `headers` on `conn`, or 401.
    pub(crate) async fn caller(
        &self,
        conn: &Conn,
        headers: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        let principal = self.logins.principal(&self.auth, headers).await?;
        // As the gateway stamps MQTT clients: the tag only with [auth].
        let client_id = if self.auth.enabled {
            format!("{}|http-{}", principal.tag(), conn.peer)
        } else {
            format!("http-{}", conn.peer)
        };
        Ok(Caller {
            principal,
            client_id,
        })
    }

    /// Runs an operator query (`crate::ops`) as `caller`: its `result`, or
    /// the error it answered as an HTTP status (403 for a query outside
    /// the caller's things, 404 for a shadow that does not exist).
    pub(crate) async fn query(&self, caller: &Caller, mut query: Value) -> Result<Value, ApiError> {
        if let Value::Object(m) = &mut query {
            m.insert("clientToken".into(), Value::String(self.next_token()));
        }
        let payload = crate::router::json_bytes(&query);
        let messages = self
            .call(
                caller.client_id.clone(),
                crate::ops::REQUEST_TOPIC.to_owned(),
                payload,
            )
            .await?;
        let Some(reply) = messages.first() else {
            return Err(ApiError::internal("an ops query got no reply"));
        };
        let reply: Value = serde_json::from_slice(&reply.payload)
            .map_err(|_| ApiError::internal("an ops reply is not JSON"))?;
        if reply.get("ok").and_then(Value::as_bool) == Some(true) {
            return Ok(reply.get("result").cloned().unwrap_or(Value::Null));
        }
        let error = reply
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("the query failed")
            .to_owned();
        Err(match error.as_str() {
            "not authorized" => ApiError::forbidden(),
            "too many requests" => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
            }
            e if e.starts_with("No shadow exists") => ApiError::not_found(error),
            _ => ApiError::bad_request(error),
        })
    }
}
