//! Routes each stamped client publish: parses it into a typed
//! [`Request`] and queues it for the store thread, after the admission
//! checks of [`crate::serve::admission`], or answers it at once: 400 for a
//! malformed request (bad topic name, bad JSON, bad clientToken), 429
//! beyond a limit. Parsing here, on the async side, keeps the single
//! writer thread for what only it can do.
//!
//! It counts every request it routes, and the replies it gives itself
//! (the store thread counts the rest), in [`crate::metrics`].

use std::time::Instant;

use std::sync::Arc;

use serde_json::{json, Value};
use shade_shared::aws::{self, Rejection};
use shade_shared::sync::SyncUp;
use shade_shared::topic::{bad_request, Operation, Reply, Topic};
use shade_shared::{Limits, ReplicaId, ShadowId};

use tokio::sync::{mpsc, Semaphore};

use crate::config::Rates;
use crate::http::{Answer, Call};
use crate::identity::external_client_id;
use crate::identity::Principals;
use crate::metrics::{Kind, Metrics};
use crate::ops::{self, OpsRequest, Query};
use crate::router::{BrokerHandle, Inbound, Outbound};
use crate::serve::admission::{InFlight, RateLimiter, Slot};
use crate::serve::backup::{BackupQuery, Backups};
use crate::serve::request::{Queued, Request};
use shade_client::now_ms;

/// Owned by `shade serve`'s main loop: one task, so no locks on the rates.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    requests: mpsc::Sender<Queued>,
    broker: BrokerHandle,
    rates: RateLimiter,
    inflight: InFlight,
    limits: Limits,
    /// Who sent a fleet query, which runs here rather than on the store
    /// thread.
    principals: Principals,
    /// Fleet queries scanning at once (each is a scan of every retained
    /// state, on tokio's blocking pool).
    scans: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    /// Online backups (`crate::serve::backup`); `None` takes none.
    backups: Option<Arc<Backups>>,
}

/// Fleet queries that scan at once; more wait their turn.
const SCANS: usize = 2;

impl Dispatcher {
    pub(crate) fn new(
        requests: mpsc::Sender<Queued>,
        broker: BrokerHandle,
        rates: Rates,
        limits: Limits,
        principals: Principals,
        metrics: Arc<Metrics>,
        backups: Option<Arc<Backups>>,
    ) -> Dispatcher {
        Dispatcher {
            requests,
            broker,
            rates: RateLimiter::new(rates.requests_per_second_per_thing),
            inflight: InFlight::new(rates.max_inflight_per_client),
            limits,
            principals,
            scans: Arc::new(Semaphore::new(SCANS)),
            metrics,
            backups,
        }
    }

    /// Routes one client publish. Waits while the store's queue is full.
    pub(crate) async fn dispatch(&mut self, msg: Inbound) {
        self.route(msg, None).await;
    }

    /// Routes one HTTP call as the publish it stands for; its answer goes
    /// back to the caller instead of being published.
    pub(crate) async fn call(&mut self, call: Call) {
        let msg = Inbound {
            client_id: call.client_id,
            topic: call.topic,
            payload: call.payload,
        };
        self.route(msg, Some(call.answer)).await;
    }

    async fn route(&mut self, msg: Inbound, answer: Option<Answer>) {
        let now = Instant::now();
        if msg.topic == ops::REQUEST_TOPIC {
            self.dispatch_ops(msg, now, answer).await;
            return;
        }
        match Topic::parse(&msg.topic) {
            Ok(Topic::AwsRequest { id, op }) => {
                self.metrics.request(Kind::from(op));
                let allowed = self.rates.allow(id.thing.as_str(), now);
                let slot = self.inflight.acquire(&msg.client_id).filter(|_| allowed);
                let Some(slot) = slot else {
                    let why = if allowed {
                        "too many requests in flight from this client"
                    } else {
                        "more than the allowed requests per second on this thing"
                    };
                    tracing::info!(client = %msg.client_id, shadow = %id, why, "answering 429");
                    self.metrics.rate_limited(Kind::from(op));
                    let reply = Rejection::new(429, "Too Many Requests")
                        .with_token(ops::client_token_of(&msg.payload));
                    self.reject(&id, op, &reply, answer).await;
                    return;
                };
                match self.parse_aws(id.clone(), op, &msg.payload, msg.client_id) {
                    Ok(request) => self.queue(request, slot, answer).await,
                    Err(rejection) => self.reject(&id, op, &rejection, answer).await,
                }
            }
            Ok(Topic::SyncUp { id }) => {
                self.metrics.request(Kind::SyncUp);
                self.metrics.sync_up(msg.payload.len());
                let Some(slot) = self.inflight.acquire(&msg.client_id) else {
                    self.metrics.rate_limited(Kind::SyncUp);
                    tracing::info!(client = %msg.client_id, shadow = %id,
                        "dropping a sync/up: too many requests in flight from this client (the agent resends)");
                    return;
                };
                if let Some(up) = self.parse_sync_up(&id, &msg.payload, &msg.client_id) {
                    let request = Request::SyncUp {
                        id,
                        up: Box::new(up),
                        client: msg.client_id,
                    };
                    self.queue(request, slot, answer).await;
                }
            }
            _ => {
                if let Some(bad) = bad_request(&msg.topic) {
                    self.metrics.request(Kind::from(bad.op));
                    self.metrics.reply(Kind::from(bad.op), 400);
                    let reply = Rejection::new(400, bad.error.to_string())
                        .with_token(ops::client_token_of(&msg.payload))
                        .to_json(now_ms());
                    self.publish(&bad.reply_topic, &reply, answer).await;
                } else {
                    tracing::debug!(client = %msg.client_id, topic = %msg.topic, "dropping a publish no operation answers");
                }
            }
        }
    }

    /// Parses an AWS request's payload; a rejection carries the AWS code.
    fn parse_aws(
        &self,
        id: ShadowId,
        op: Operation,
        payload: &[u8],
        client: String,
    ) -> Result<Request, Rejection> {
        Ok(match op {
            Operation::Get => Request::Get {
                id,
                token: aws::parse_get_or_delete(payload, &self.limits)?,
                client,
            },
            Operation::Update => Request::Update {
                id,
                update: Box::new(aws::parse_update(payload, &self.limits)?),
                client,
            },
            Operation::Delete => Request::Delete {
                id,
                token: aws::parse_get_or_delete(payload, &self.limits)?,
                client,
            },
        })
    }

    /// Decodes a `sync/up` and checks that it comes from the replica it
    /// names; `None`, with a log line, for one the service drops.
    fn parse_sync_up(&self, id: &ShadowId, payload: &[u8], client: &str) -> Option<SyncUp> {
        let up = match SyncUp::from_cbor(payload, self.limits.max_depth) {
            Ok(up) => up,
            Err(e) => {
                tracing::warn!(client, shadow = %id, error = %e, "dropping an unreadable sync/up");
                return None;
            }
        };
        // An agent's replica id is `a:` and the client id it chose; inside
        // the broker the id carries its principal's tag too.
        match ReplicaId::agent(external_client_id(client)) {
            Ok(expected) if expected == up.replica => Some(up),
            _ => {
                tracing::warn!(client, replica = %up.replica, shadow = %id,
                    "dropping a sync/up whose replica id is not a:<client id>");
                None
            }
        }
    }

    async fn dispatch_ops(&mut self, msg: Inbound, now: Instant, answer: Option<Answer>) {
        self.metrics.request(Kind::Ops);
        // A backup is read in many chunks, one at a time, off the store
        // thread: held to the in-flight cap, not to the request rate.
        if let Some(parsed) = BackupQuery::parse(&msg.payload) {
            match self.inflight.acquire(&msg.client_id) {
                Some(slot) => self.backup(msg.client_id, parsed, slot, answer),
                None => {
                    self.metrics.rate_limited(Kind::Ops);
                    self.refuse_ops(&msg, "too many requests", answer).await;
                }
            }
            return;
        }
        // Ops are not about one thing: the client's own bucket.
        let allowed = self.rates.allow(&format!("\0ops/{}", msg.client_id), now);
        let slot = self.inflight.acquire(&msg.client_id).filter(|_| allowed);
        let Some(slot) = slot else {
            tracing::info!(client = %msg.client_id, "answering an ops request 429");
            self.metrics.rate_limited(Kind::Ops);
            self.refuse_ops(&msg, "too many requests", answer).await;
            return;
        };
        match OpsRequest::parse(&msg.payload) {
            Ok(OpsRequest::Query(query)) if ops::is_fleet_query(&query) => {
                self.fleet_query(msg.client_id, query, slot, answer);
            }
            Ok(request) => {
                let request = Request::Ops {
                    request,
                    client: msg.client_id,
                };
                self.queue(request, slot, answer).await;
            }
            Err(e) => {
                tracing::warn!(client = %msg.client_id, error = %e, "dropping an unreadable shade/ops/request");
            }
        }
    }

    /// Runs a fleet query (`count`, `list` with `where`) over the retained
    /// states on the blocking pool, off the store thread, and answers it.
    fn fleet_query(&self, client: String, mut query: Query, slot: Slot, answer: Option<Answer>) {
        let Some(topic) = ops::reply_topic(&client, query.client_token()) else {
            tracing::warn!(
                client,
                "dropping a fleet query whose clientToken cannot be a topic level"
            );
            return;
        };
        let allowed = self
            .principals
            .of(&client)
            .is_some_and(|p| ops::authorize(&p, &mut query));
        let retained = self.broker.retained();
        let broker = self.broker.clone();
        let scans = self.scans.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let reply = if allowed {
                let _scan = scans.acquire_owned().await;
                let q = query.clone();
                let result =
                    tokio::task::spawn_blocking(move || ops::execute_retained(&retained, &q))
                        .await
                        .unwrap_or_else(|_| Err("the query failed".into()));
                metrics.reply(Kind::Ops, if result.is_ok() { 200 } else { 400 });
                ops::reply(&query, result)
            } else {
                tracing::warn!(
                    client,
                    ?query,
                    "refusing a fleet query outside the client's things"
                );
                metrics.reply(Kind::Ops, 403);
                json!({"clientToken": query.client_token(), "ok": false, "error": "not authorized"})
            };
            send(&broker, Outbound::json(topic, &reply), answer).await;
        });
    }

    /// Answers a backup request of a full admin (`crate::serve::backup`).
    fn backup(
        &self,
        client: String,
        parsed: Result<BackupQuery, serde_json::Error>,
        slot: Slot,
        answer: Option<Answer>,
    ) {
        let query = match parsed {
            Ok(query) => query,
            Err(e) => {
                tracing::warn!(client, error = %e, "dropping an unreadable backup request");
                return;
            }
        };
        let Some(topic) = ops::reply_topic(&client, query.client_token()) else {
            tracing::warn!(
                client,
                "dropping a backup request whose clientToken cannot be a topic level"
            );
            return;
        };
        // A backup holds every device's secret hash: full admins only.
        let admin = self
            .principals
            .of(&client)
            .is_some_and(|p| p.is_full_admin());
        let backups = self.backups.clone();
        let broker = self.broker.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let token = query.client_token().to_owned();
            let (code, result) = match backups {
                _ if !admin => {
                    tracing::warn!(
                        client,
                        "refusing a backup request of a client that is not a full admin"
                    );
                    (403, Err("not authorized".to_owned()))
                }
                None => (400, Err("this broker takes no backups".to_owned())),
                Some(backups) => {
                    let result = backups.answer(query).await;
                    (if result.is_ok() { 200 } else { 400 }, result)
                }
            };
            metrics.reply(Kind::Ops, code);
            let reply = match result {
                Ok(result) => json!({ "clientToken": token, "ok": true, "result": result }),
                Err(error) => json!({ "clientToken": token, "ok": false, "error": error }),
            };
            send(&broker, Outbound::json(topic, &reply), answer).await;
        });
    }

    async fn queue(&self, request: Request, slot: Slot, answer: Option<Answer>) {
        if self
            .requests
            .send(Queued {
                request,
                _slot: slot,
                answer,
            })
            .await
            .is_err()
        {
            tracing::warn!("store thread gone; request dropped");
        }
    }

    async fn reject(
        &self,
        id: &ShadowId,
        op: Operation,
        rejection: &Rejection,
        answer: Option<Answer>,
    ) {
        self.metrics.reply(Kind::from(op), rejection.code);
        let topic = Topic::aws_reply(id, op, Reply::Rejected);
        self.publish(&topic, &rejection.to_json(now_ms()), answer)
            .await;
    }

    /// Publishes an immediate answer, or hands it to the HTTP caller.
    async fn publish(&self, topic: &str, value: &Value, answer: Option<Answer>) {
        if let Some(answer) = answer {
            // A caller that went away no longer needs it.
            let _ = answer.send(vec![Outbound::json(topic.to_owned(), value)]);
            return;
        }
        if let Err(e) = self
            .broker
            .publish(topic, value.to_string().into_bytes(), false)
            .await
        {
            tracing::warn!(topic, error = %e, "cannot answer a request");
        }
    }

    async fn refuse_ops(&self, msg: &Inbound, error: &str, answer: Option<Answer>) {
        if let Some((topic, reply)) = ops::refusal(&msg.client_id, &msg.payload, error) {
            // Its one caller refuses beyond a limit.
            self.metrics.reply(Kind::Ops, 429);
            self.publish(&topic, &reply, answer).await;
        }
    }
}

/// Hands an answer to its HTTP caller, or publishes it.
async fn send(broker: &BrokerHandle, message: Outbound, answer: Option<Answer>) {
    match answer {
        Some(answer) => drop(answer.send(vec![message])),
        None => {
            if let Err(e) = broker.send(message).await {
                tracing::warn!(error = %e, "cannot publish an answer");
            }
        }
    }
}
