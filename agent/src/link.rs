//! The sync loop: one MQTT connection to the broker, kept up with
//! exponential backoff and jitter, carrying `SyncUp` and `SyncDown`.
//!
//! On every (re)connect the agent subscribes to its `sync/down` topic and,
//! once the subscription is in place, sends a `SyncUp` with its vector and
//! every change the broker has not acknowledged. Each `SyncDown` is merged
//! into the replica; its vector acknowledges the agent's changes it covers.
//! While connected, local writes are pushed at once. Nothing is queued in
//! rumqttc that matters: the replica is the queue, and it is re-read on
//! every send, so rumqttc dropping requests across a reconnect loses nothing.

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use shade_client::Credentials;
use shade_shared::sync::SyncDown;
use shade_shared::topic::Topic;
use shade_shared::Section;
use tokio_util::sync::CancellationToken;

use crate::Shared;

/// Registers per `SyncUp`, so a long outage is caught up in bounded messages.
const MAX_PATHS_PER_MESSAGE: usize = 2_000;

/// The next wait before reconnecting: `base` doubled per failure up to
/// `max`, then drawn uniformly from its upper half, so that thousands of
/// agents that lost the broker at the same moment spread their returns.
pub fn backoff(failures: u32, min: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let exp = min.saturating_mul(1u32 << failures.min(20)).min(max);
    let half = exp / 2;
    half + Duration::from_micros(rng.random_range(0..=half.as_micros().max(1) as u64))
}

pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let c = &shared.config;
    // A user name without a password (or the reverse) sends neither.
    let credentials = match (&c.username, &c.password) {
        (Some(username), Some(password)) => Some(Credentials {
            username: username.clone(),
            password: password.clone(),
        }),
        _ => None,
    };
    // The replica is the session: a clean session each time (set by
    // `mqtt_options`), and a full resync on every connect.
    let mut options =
        shade_client::mqtt_options(c.client_id.clone(), &c.broker, c.tls.clone(), credentials);
    options.set_keep_alive(c.keep_alive);
    options.set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let down_topic = Topic::sync_down(&c.shadow);
    let up_topic = Topic::sync_up(&c.shadow);
    let mut failures = 0u32;
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut subscribed = false;

    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = shared.kick.notified(), if subscribed => send_up(&shared, &client, &up_topic),
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    failures = 0;
                    subscribed = false;
                    tracing::info!(broker = %format!("{}:{}", c.broker.host, c.broker.port), tls = c.tls.is_some(), "connected");
                    if let Err(e) = client.try_subscribe(down_topic.clone(), QoS::AtLeastOnce) {
                        tracing::warn!(error = %e, "cannot subscribe to sync/down");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    subscribed = true;
                    shared.connected.send_replace(true);
                    send_up(&shared, &client, &up_topic);
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == down_topic => {
                    if on_down(&shared, &p.payload) {
                        send_up(&shared, &client, &up_topic);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    subscribed = false;
                    shared.connected.send_replace(false);
                    let wait = backoff(failures, c.reconnect_min, c.reconnect_max, &mut rng);
                    failures = failures.saturating_add(1);
                    match &e {
                        // Reached, and refused: say so, it is not the network.
                        rumqttc::ConnectionError::ConnectionRefused(code) => tracing::warn!(
                            ?code,
                            retry_in_ms = wait.as_millis() as u64,
                            "the broker refused the connection (check the username and secret, or certificate)"
                        ),
                        e => tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "broker unreachable"),
                    }
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            },
        }
    }
    shared.connected.send_replace(false);
    // Best effort: a clean DISCONNECT, flushed by a few more polls.
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while eventloop.poll().await.is_ok() {}
        })
        .await;
    }
}

/// Sends what the broker lacks (at most [`MAX_PATHS_PER_MESSAGE`] registers).
fn send_up(shared: &Shared, client: &AsyncClient, topic: &str) {
    let up = shared.replica().sync_up_limited(MAX_PATHS_PER_MESSAGE);
    if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, up.to_cbor()) {
        // Full request queue: the next connect or ack resends it all.
        tracing::debug!(error = %e, "sync/up not queued");
    }
}

/// Applies a `SyncDown`. Returns whether to send another `SyncUp`: the
/// broker acknowledged progress and changes are still pending (the rest of
/// a long catch-up), or we merged news the broker should know we have.
fn on_down(shared: &Shared, payload: &[u8]) -> bool {
    let down = match SyncDown::from_cbor(payload, shared.config.max_depth) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "dropping an unreadable sync/down");
            return false;
        }
    };
    let mut replica = shared.replica();
    let acked_before = replica.state().broker_vv.clone();
    let applied = match replica.apply(&down) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot store a sync/down; it will be resent");
            return false;
        }
    };
    let outcome = applied.outcome;
    if outcome.gap {
        // Meant for another agent of this shadow (sync/down is shared).
        return false;
    }
    let progressed = replica.state().broker_vv != acked_before;
    if outcome.changed.iter().any(|(s, _)| *s == Section::Desired) {
        let change = shared.desired_change(replica.state(), true);
        let _ = shared.events.send(change);
    }
    let pending = replica.pending() > 0;
    if progressed && !pending {
        tracing::info!(
            version = down.version,
            "every local change is acknowledged by the broker"
        );
    }
    applied.resync || (progressed && pending) || !outcome.changed.is_empty()
}
