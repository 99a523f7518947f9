//! Routes each stamped client publish to the store thread, after the
//! admission checks of [`crate::serve::admission`], or answers it at once (400 for
//! a malformed request topic, 429 beyond a limit).

use std::time::Instant;

use serde_json::Value;
use shade_shared::aws::Rejection;
use shade_shared::topic::{bad_request, Reply, Topic};
use tokio::sync::mpsc;

use crate::config::Rates;
use crate::ops;
use crate::router::{BrokerHandle, Inbound};
use crate::serve::admission::{InFlight, RateLimiter, Slot};
use crate::serve::writer::now_ms;
use crate::shadow::Request;

/// A request on its way to the store thread, holding its place in its
/// client's in-flight budget until the store thread drops it.
#[derive(Debug)]
pub struct Queued {
    pub request: Request,
    pub slot: Slot,
}

/// Owned by `shade serve`'s main loop: one task, so no locks on the rates.
#[derive(Debug)]
pub struct Dispatcher {
    requests: mpsc::Sender<Queued>,
    broker: BrokerHandle,
    rates: RateLimiter,
    inflight: InFlight,
}

impl Dispatcher {
    pub fn new(requests: mpsc::Sender<Queued>, broker: BrokerHandle, rates: Rates) -> Dispatcher {
        Dispatcher {
            requests,
            broker,
            rates: RateLimiter::new(rates.requests_per_second_per_thing),
            inflight: InFlight::new(rates.max_inflight_per_client),
        }
    }

    /// Routes one client publish. Waits while the store's queue is full.
    pub async fn dispatch(&mut self, msg: Inbound) {
        let now = Instant::now();
        if msg.topic == ops::REQUEST_TOPIC {
            // Ops are not about one thing: the client's own bucket.
            let allowed = self.rates.allow(&format!("\0ops/{}", msg.client_id), now);
            let slot = self.inflight.acquire(&msg.client_id).filter(|_| allowed);
            let Some(slot) = slot else {
                self.refuse_ops(&msg).await;
                return;
            };
            let request = Request::Ops {
                payload: msg.payload,
                client: msg.client_id,
            };
            self.queue(request, slot).await;
            return;
        }
        match Topic::parse(&msg.topic) {
            Ok(Topic::AwsRequest { id, op }) => {
                let allowed = self.rates.allow(id.thing.as_str(), now);
                let slot = self.inflight.acquire(&msg.client_id).filter(|_| allowed);
                let Some(slot) = slot else {
                    let why = if allowed {
                        "too many requests in flight from this client"
                    } else {
                        "more than the allowed requests per second on this thing"
                    };
                    tracing::info!(client = %msg.client_id, shadow = %id, why, "answering 429");
                    let reply = Rejection::new(429, "Too Many Requests")
                        .with_token(ops::client_token_of(&msg.payload))
                        .to_json(now_ms());
                    let topic = Topic::aws_reply(&id, op, Reply::Rejected);
                    self.publish(&topic, &reply).await;
                    return;
                };
                let request = Request::Aws {
                    id,
                    op,
                    payload: msg.payload,
                    client: msg.client_id,
                };
                self.queue(request, slot).await;
            }
            Ok(Topic::SyncUp { id }) => {
                let Some(slot) = self.inflight.acquire(&msg.client_id) else {
                    tracing::info!(client = %msg.client_id, shadow = %id,
                        "dropping a sync/up: too many requests in flight from this client (the agent resends)");
                    return;
                };
                let request = Request::SyncUp {
                    id,
                    payload: msg.payload,
                    client: msg.client_id,
                };
                self.queue(request, slot).await;
            }
            _ => {
                if let Some(bad) = bad_request(&msg.topic) {
                    let reply = Rejection::new(400, bad.error.to_string())
                        .with_token(ops::client_token_of(&msg.payload))
                        .to_json(now_ms());
                    self.publish(&bad.reply_topic, &reply).await;
                } else {
                    tracing::debug!(client = %msg.client_id, topic = %msg.topic, "dropping a publish no operation answers");
                }
            }
        }
    }

    async fn queue(&self, request: Request, slot: Slot) {
        if self.requests.send(Queued { request, slot }).await.is_err() {
            tracing::warn!("store thread gone; request dropped");
        }
    }

    async fn publish(&self, topic: &str, value: &Value) {
        if let Err(e) = self
            .broker
            .publish(topic, value.to_string().into_bytes(), false)
            .await
        {
            tracing::warn!(topic, error = %e, "cannot answer a request");
        }
    }

    async fn refuse_ops(&self, msg: &Inbound) {
        tracing::info!(client = %msg.client_id, "answering an ops request 429");
        if let Some((topic, reply)) =
            ops::refusal(&msg.client_id, &msg.payload, "too many requests")
        {
            self.publish(&topic, &reply).await;
        }
    }
}
