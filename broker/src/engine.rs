//! The store thread: owns the redb [`Store`], takes requests from a bounded
//! queue and commits them in groups: as many as are waiting (up to
//! `max_batch`) share one write transaction and one fsync. Replies leave
//! for the broker only after their transaction committed, in request order.
//!
//! Async code never touches redb: it sends a [`Request`] and moves on.
//! When the request queue is full, the sender waits, which stops the
//! service from reading the broker link, which pushes back on publishers.

use tokio::sync::mpsc;

use crate::credentials::Credentials;
use crate::dispatch::Queued;
use crate::service::{Outbound, Service};
use crate::store::{Store, StoreError};

/// Wall-clock milliseconds since the Unix epoch: the one clock read of the
/// broker; the model gets time as an argument.
pub use shade_client::now_ms;

/// Handle to a running store thread.
#[derive(Debug)]
pub struct Engine {
    thread: std::thread::JoinHandle<()>,
}

impl Engine {
    /// Starts the store thread. It first publishes the retained state of
    /// every stored shadow (rumqttd keeps retained messages in memory only),
    /// then serves `requests` until the channel closes, and exits after
    /// committing and handing over everything it received. After each
    /// commit it applies the batch's device changes to `credentials`, before
    /// the replies go out.
    pub fn start(
        store: Store,
        service: Service,
        credentials: Credentials,
        max_batch: usize,
        requests: mpsc::Receiver<Queued>,
        out: mpsc::Sender<Vec<Outbound>>,
    ) -> std::io::Result<Engine> {
        let thread = std::thread::Builder::new()
            .name("shade-store".into())
            .spawn(move || run(store, service, &credentials, max_batch, requests, out))?;
        Ok(Engine { thread })
    }

    /// Waits for the thread to finish its last commit.
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the store thread panicked");
        }
    }
}

fn republish(
    store: &Store,
    service: &Service,
    out: &mpsc::Sender<Vec<Outbound>>,
) -> Result<usize, StoreError> {
    let now = now_ms();
    let mut batch = Vec::new();
    let mut count = 0;
    store.for_each(|id, stored| {
        if stored.shadow.exists {
            batch.push(service.state_message(&id, &stored.shadow, now));
            count += 1;
        }
        if batch.len() >= 256 {
            // A closed channel means shutdown; the rest does not matter then.
            let _ = out.blocking_send(std::mem::take(&mut batch));
        }
    })?;
    if !batch.is_empty() {
        let _ = out.blocking_send(batch);
    }
    Ok(count)
}

fn run(
    store: Store,
    service: Service,
    credentials: &Credentials,
    max_batch: usize,
    mut requests: mpsc::Receiver<Queued>,
    out: mpsc::Sender<Vec<Outbound>>,
) {
    match republish(&store, &service, &out) {
        Ok(n) => tracing::info!(shadows = n, "republished retained state"),
        Err(e) => tracing::error!(error = %e, "could not republish retained state"),
    }
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = requests.blocking_recv() {
        batch.clear();
        batch.push(first);
        while batch.len() < max_batch {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let now = now_ms();
        let mut failures = Vec::new();
        let mut changes = Vec::new();
        let result = store.write(|t| {
            let mut replies = Vec::new();
            for queued in &batch {
                match service.handle(t, &queued.request, now) {
                    Ok(handled) => {
                        replies.extend(handled.out);
                        failures.extend(handled.on_failure);
                        changes.extend(handled.credentials);
                    }
                    // One unreadable record must not fail everyone's commit.
                    Err(e @ StoreError::Corrupt { .. }) => {
                        tracing::error!(error = %e, "request skipped")
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(replies)
        });
        let replies = match result {
            Ok(replies) => {
                // Before the replies: whoever was told "added" can connect.
                changes.into_iter().for_each(|c| credentials.apply(c));
                replies
            }
            Err(e) => {
                tracing::error!(error = %e, requests = batch.len(), "commit failed; answering 500");
                failures
            }
        };
        if !replies.is_empty() && out.blocking_send(replies).is_err() {
            tracing::warn!("publisher gone; replies dropped during shutdown");
        }
    }
    tracing::info!("store thread finished its last commit");
}
