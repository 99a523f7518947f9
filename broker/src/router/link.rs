//! The service's in-process link to the router: [`Inbound`] requests
//! stamped by the gateway come in, [`Outbound`] publishes go out through a
//! [`BrokerHandle`]. Backpressure in both directions is described in the
//! router module's docs.

use std::sync::Arc;
use std::thread;

use bytes::Bytes;

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Packet, Publish};
use rumqttd::Notification;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::error::EmbeddedError;
use super::gateway;
use super::retained::Retained;
use crate::presence::Presence;
use crate::subscriptions::Subscriptions;

/// A message a client published on a topic the service handles, with the
/// publisher's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The publisher's MQTT client id (rumqttd's `rumqtt-<uuid>` when the
    /// client sent an empty one).
    pub client_id: String,
    /// The topic as the client wrote it, e.g. `$aws/things/t1/shadow/update`
    /// or `shade/things/t1/sync/up`.
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Publishes as the service. Cheap to clone; every clone feeds one link.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    /// Router topic and payload of each message, published at QoS 0.
    outbound: mpsc::Sender<(String, Bytes)>,
    subscriptions: Arc<Subscriptions>,
    retained: Arc<Retained>,
    presence: Arc<Presence>,
}

/// A message the service publishes. [`BrokerHandle::send`] takes it with
/// its topic as clients see it; on the link's channel the topic is the
/// router's (see [`gateway`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Kept for later subscribers; an empty retained payload clears it.
    pub retain: bool,
}

/// `value` as JSON bytes.
pub(crate) fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(256);
    // Writing a `Value` into a `Vec` cannot fail (its keys are strings).
    if serde_json::to_writer(&mut bytes, value).is_err() {
        return value.to_string().into_bytes();
    }
    bytes
}

impl Outbound {
    /// A message of `value` serialized as JSON, not retained.
    pub fn json(topic: String, value: &serde_json::Value) -> Outbound {
        Outbound {
            topic,
            // Straight to bytes: `to_string` goes through `fmt::Write`,
            // which was a tenth of an update's cost.
            payload: json_bytes(value),
            retain: false,
        }
    }
}

impl BrokerHandle {
    /// Publishes `payload` on `topic` as clients see it
    /// (`$aws/things/t1/shadow/update/accepted`, `shade/things/t1/state`).
    /// Each subscriber gets it at the QoS it subscribed with: the link itself
    /// is in-process and cannot lose a message, so it publishes at QoS 0.
    /// `retain` keeps it for later subscribers (in memory only: rumqttd
    /// forgets retained messages on restart); an empty retained payload
    /// clears the topic. Returns once the link has queued the message; waits
    /// while that queue is full.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), EmbeddedError> {
        self.send(Outbound {
            topic: topic.to_owned(),
            payload,
            retain,
        })
        .await
    }

    /// Publishes `message`, as [`BrokerHandle::publish`].
    ///
    /// The service's own topics (`$aws/things/...`, `shade/things/...`) are
    /// delivered by shade to the connections that hold a matching filter
    /// ([`Subscriptions`]), at QoS 0, not through the router; a retained
    /// one is also kept ([`Retained`]) for later subscribers. Other topics
    /// (an ops reply, a plain client topic) go through the router.
    pub async fn send(&self, message: Outbound) -> Result<(), EmbeddedError> {
        self.route(message, true).await
    }

    /// Publishes a batch of the store thread's replies in order, with
    /// every retained state of the batch kept before any of them goes
    /// out: whoever reads `delete/accepted` and then subscribes must not
    /// get the deleted shadow's state. Returns the failures, by topic.
    pub async fn send_batch(&self, batch: Vec<Outbound>) -> Vec<(String, EmbeddedError)> {
        for m in batch
            .iter()
            .filter(|m| m.retain && is_service_topic(&m.topic))
        {
            self.retained
                .set(&m.topic, Bytes::copy_from_slice(&m.payload));
        }
        let mut failed = Vec::new();
        for m in batch {
            let topic = m.topic.clone();
            if let Err(e) = self.route(m, false).await {
                failed.push((topic, e));
            }
        }
        failed
    }

    /// [`BrokerHandle::send`]; a retained state is kept only when `keep`
    /// (`send_batch` has kept its batch's already).
    async fn route(&self, message: Outbound, keep: bool) -> Result<(), EmbeddedError> {
        let Outbound {
            topic,
            payload,
            retain,
        } = message;
        let routed =
            gateway::service_topic(&topic).ok_or_else(|| EmbeddedError::Topic(topic.clone()))?;
        let payload = Bytes::from(payload);
        if is_service_topic(&topic) {
            if retain && keep {
                self.retained.set(&topic, payload.clone());
            }
            self.subscriptions.deliver(&topic, &payload);
            return Ok(());
        }
        self.outbound
            .send((routed, payload))
            .await
            .map_err(|_| EmbeddedError::Closed)
    }

    /// The retained service messages (every shadow's state), for a
    /// reader that starts from them (the HTTP event stream).
    pub fn retained(&self) -> Arc<Retained> {
        self.retained.clone()
    }

    /// Who is connected (see [`Presence`]), for the service that keeps it.
    pub fn presence(&self) -> Arc<Presence> {
        self.presence.clone()
    }

    /// The subscriptions the gateways keep, for a service that decides
    /// what to render before it publishes.
    pub fn subscriptions(&self) -> Arc<Subscriptions> {
        self.subscriptions.clone()
    }
}

/// Whether shade delivers `topic` itself (see [`BrokerHandle::send`]).
fn is_service_topic(topic: &str) -> bool {
    topic.starts_with("$aws/things/") || topic.starts_with("shade/things/")
}

/// Starts the two threads of the service's link: rumqttd's link blocks on
/// its channels, so async code talks to them through bounded tokio
/// channels of `inbound_capacity` and `outbound_capacity` messages.
pub(super) fn spawn(
    link_tx: LinkTx,
    link_rx: LinkRx,
    inbound_capacity: usize,
    outbound_capacity: usize,
    subscriptions: Arc<Subscriptions>,
    retained: Arc<Retained>,
    presence: Arc<Presence>,
) -> Result<(BrokerHandle, mpsc::Receiver<Inbound>), EmbeddedError> {
    let (inbound_tx, inbound_rx) = mpsc::channel(inbound_capacity);
    let (outbound_tx, outbound_rx) = mpsc::channel(outbound_capacity);
    thread::Builder::new()
        .name("shade-link-rx".to_owned())
        .spawn(move || receive_loop(link_rx, &inbound_tx))
        .map_err(EmbeddedError::Thread)?;
    // `LinkTx::send` is an `async fn` that blocks on the router's channel, so
    // it gets a runtime of its own on a thread of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(EmbeddedError::Thread)?;
    thread::Builder::new()
        .name("shade-link-tx".to_owned())
        .spawn(move || runtime.block_on(send_loop(link_tx, outbound_rx)))
        .map_err(EmbeddedError::Thread)?;
    Ok((
        BrokerHandle {
            outbound: outbound_tx,
            subscriptions,
            retained,
            presence,
        },
        inbound_rx,
    ))
}

/// Hands stamped requests from the router to the service until either side
/// goes away. Runs on a plain thread: both channels are blocking ones here.
fn receive_loop(mut link_rx: LinkRx, inbound: &mpsc::Sender<Inbound>) {
    loop {
        let notification = match link_rx.recv() {
            Ok(Some(notification)) => notification,
            Ok(None) => continue,
            Err(e) => {
                error!(error = %e, "the service link to the router closed");
                return;
            }
        };
        match notification {
            Notification::Forward(forward) => {
                let stamped = (forward.publish.topic.as_ref() == gateway::REQUESTS.as_bytes())
                    .then(|| gateway::unstamp(&forward.publish.payload))
                    .flatten();
                let Some((client_id, topic, payload)) = stamped else {
                    let topic = String::from_utf8_lossy(&forward.publish.topic);
                    warn!(%topic, "ignoring a message on the service link that the gateway did not stamp");
                    continue;
                };
                let message = Inbound {
                    client_id,
                    topic,
                    payload: payload.to_vec(),
                };
                // Blocks while the service lags: see the module docs.
                if inbound.blocking_send(message).is_err() {
                    info!("the service stopped receiving; closing its link");
                    return;
                }
            }
            // The router parks a link whose buffer filled until it says it is
            // ready again; without this the service stops receiving after
            // about 200 messages.
            Notification::Unschedule => {
                if let Err(e) = link_rx.ready() {
                    error!(error = %e, "the service link to the router closed");
                    return;
                }
            }
            Notification::Disconnect(..) => {
                error!("the router disconnected the service link");
                return;
            }
            // Acks of the link's own subscription.
            _ => {}
        }
    }
}

async fn send_loop(mut link_tx: LinkTx, mut outbound: mpsc::Receiver<(String, Bytes)>) {
    while let Some((topic, payload)) = outbound.recv().await {
        let publish = Publish::new(Bytes::from(topic), payload, false);
        if let Err(e) = link_tx.send(Packet::Publish(publish, None)).await {
            error!(error = %e, "the service link to the router closed");
            return;
        }
    }
}
