//! The store thread: owns the redb [`Store`], takes requests from a bounded
//! queue and commits them in groups: as many as are waiting (up to
//! `max_batch`) share one write transaction and one fsync. Replies leave
//! for the broker only after their transaction committed, in request order.
//!
//! The JSON documents of the replies and notices are rendered after the
//! commit by a second thread (`shade-render`), in request order, so the
//! serial store thread spends its time on the transaction only.
//!
//! The store thread counts its batches, their replies by code and the
//! conflicts their merges add in [`crate::metrics`].
//!
//! Async code never touches redb: it sends a parsed [`Request`] and moves on.
//! When the request queue is full, the sender waits, which stops the
//! service from reading the broker link, which pushes back on publishers.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use shade_shared::topic::{Operation, Reply, Topic};
use shade_shared::Policies;

use crate::auth::credentials::Credentials;
use crate::http::Answer;
use crate::identity::Principals;
use crate::metrics::{Kind, Metrics};
use crate::ops;
use crate::router::Outbound;
use crate::serve::request::{Queued, Request};
use crate::shadow::{Handled, Out, Render, Renderer, Service};
use crate::store::{Store, StoreError, Tables};
use shade_client::now_ms;

/// What the store thread holds: the store, what each request does to
/// it, and the shared device credentials it keeps in step with the
/// device table. Its methods are the thread's work without the thread,
/// so tests drive them directly.
#[derive(Debug)]
pub struct Writer {
    pub store: Store,
    pub service: Service,
    /// Who sent an ops request, for its checks (the gateway already
    /// checked every AWS and sync topic).
    pub principals: Principals,
    pub credentials: Credentials,
}

impl Writer {
    /// Handles one request inside the open transaction `t`.
    pub fn handle(
        &self,
        t: &mut Tables<'_>,
        request: &Request,
        now: u64,
    ) -> Result<Handled, StoreError> {
        let mut h = Handled::default();
        let s = &self.service;
        match request {
            Request::Get { id, token, .. } => s.get(t, id, token.clone(), now, &mut h)?,
            Request::Update { id, update, client } => {
                s.update(t, id, update, client, now, &mut h)?;
            }
            Request::Delete { id, token, client } => {
                s.delete(t, id, token.clone(), client, now, &mut h)?;
            }
            Request::SyncUp { id, up, client } => s.sync_up(t, id, up, client, now, &mut h)?,
            Request::Ops { request, client } => {
                let policies: &Policies = &s.policies;
                ops::handle(t, request, client, &self.principals, policies, now, &mut h)?;
            }
            Request::Presence { things } => s.presence(t, things, now, &mut h)?,
        }
        Ok(h)
    }

    /// Handles `requests` in one write transaction and commits it: the
    /// replies to publish, in request order. When the commit fails, nothing
    /// of the batch is kept and each request that would have changed
    /// something is answered with its failure reply (a 500) instead. After
    /// a commit, the batch's device changes reach the shared credentials,
    /// before the replies go out: whoever is told "added" can connect.
    pub fn commit<'r>(
        &self,
        requests: impl IntoIterator<Item = &'r Request>,
        now: u64,
    ) -> Vec<Outbound> {
        let batch = self.commit_unrendered(requests, now);
        self.service
            .render(batch.outs.into_iter().flatten().collect())
    }

    /// [`Writer::commit`] without the rendering: what each request (in
    /// order) has to publish, which [`Service::render`] turns into the
    /// messages after the commit, and what the metrics count of it.
    pub(crate) fn commit_unrendered<'r>(
        &self,
        requests: impl IntoIterator<Item = &'r Request>,
        now: u64,
    ) -> Batch {
        let mut failures = Vec::new();
        let mut changes = Vec::new();
        let mut count = 0;
        let mut codes = Vec::new();
        let mut conflicts = 0;
        let result = self.store.write(|t| {
            let mut replies = Vec::new();
            for request in requests {
                count += 1;
                match self.handle(t, request, now) {
                    Ok(handled) => {
                        codes.push(handled.code.or_else(|| reply_code(&handled.out)));
                        conflicts += handled.conflicts;
                        replies.push(handled.out);
                        failures.push(handled.on_failure);
                        changes.extend(handled.credentials);
                    }
                    // One unreadable record must not fail everyone's commit.
                    Err(e @ StoreError::Corrupt { .. }) => {
                        tracing::error!(error = %e, "request skipped");
                        codes.push(None);
                        replies.push(Vec::new());
                        failures.push(Vec::new());
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(replies)
        });
        match result {
            Ok(replies) => {
                changes.into_iter().for_each(|c| self.credentials.apply(c));
                Batch {
                    outs: replies,
                    codes,
                    conflicts,
                    failed: false,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = count, "commit failed; answering 500");
                Batch {
                    // Each request with a failure reply gets it, a 500.
                    codes: failures
                        .iter()
                        .map(|f| (!f.is_empty()).then_some(500))
                        .collect(),
                    outs: failures,
                    conflicts: 0,
                    failed: true,
                }
            }
        }
    }

    /// The retained state message of every stored shadow, in batches of
    /// at most 256 handed to `send`: the retained states live in memory
    /// (`crate::router::Retained`), so a started broker loads them again.
    pub fn republish(&self, mut send: impl FnMut(Vec<Outbound>)) -> Result<usize, StoreError> {
        let now = now_ms();
        let mut batch = Vec::new();
        let mut count = 0;
        // Nobody is connected to a broker that is starting.
        let presence = self.store.reset_presence()?;
        self.store.for_each(|id, stored| {
            if stored.shadow.exists {
                let p = presence.get(id.thing.as_str());
                batch.push(self.service.state_message(&id, &stored.shadow, p, now));
                count += 1;
            }
            if batch.len() >= 256 {
                send(std::mem::take(&mut batch));
            }
        })?;
        if !batch.is_empty() {
            send(batch);
        }
        Ok(count)
    }
}

/// What one batch's transaction produced.
#[derive(Debug)]
pub(crate) struct Batch {
    /// What each request, in order, has to publish.
    pub outs: Vec<Vec<Out>>,
    /// The status of each request's reply (`None`: it gets none).
    pub codes: Vec<Option<u16>>,
    /// Conflict records the batch's merges added (0 when it failed).
    pub conflicts: u64,
    /// The commit failed: `outs` are the failure replies.
    pub failed: bool,
}

/// The status of the reply in `outs`, when no handler set one: the code of
/// a rejection, else 200 for any reply (`accepted`, a `sync/down`),
/// `None` for none.
fn reply_code(outs: &[Out]) -> Option<u16> {
    let rejected = outs.iter().find_map(|o| match o {
        Out::Later(r) => match &**r {
            Render::Rejected { rejection, .. } => Some(rejection.code),
            _ => None,
        },
        Out::Ready(_) => None,
    });
    rejected.or((!outs.is_empty()).then_some(200))
}

/// The metrics' name for what `request` asks; `None` for the service's
/// own (presence), which no client asked and gets no reply.
fn kind(request: &Request) -> Option<Kind> {
    Some(match request {
        Request::Get { .. } => Kind::Get,
        Request::Update { .. } => Kind::Update,
        Request::Delete { .. } => Kind::Delete,
        Request::SyncUp { .. } => Kind::SyncUp,
        Request::Ops { .. } => Kind::Ops,
        Request::Presence { .. } => return None,
    })
}

/// Handle to the running store and render threads.
#[derive(Debug)]
pub(crate) struct Engine {
    store: std::thread::JoinHandle<()>,
    render: std::thread::JoinHandle<()>,
}

/// Committed batches on their way to the render thread. Two in flight let
/// the store thread commit the next batch while one renders; more would
/// only hold requests' slots longer.
const RENDER_QUEUE: usize = 2;

/// A committed batch: what each request has to publish, and the requests,
/// whose in-flight slots go back once their replies are rendered and on
/// their way.
type Committed = (Vec<Vec<Out>>, Vec<Queued>);

/// A rendered batch on its way to the publisher: the messages, in order,
/// then the answers of the HTTP calls among its requests, handed over
/// once the messages are published (as an MQTT client reads its reply
/// only after the batch's retained states are set).
#[derive(Debug, Default)]
pub(crate) struct Published {
    pub messages: Vec<Outbound>,
    pub answers: Vec<(Answer, Vec<Outbound>)>,
}

/// Splits an HTTP call's messages into its answer and what is published:
/// a `get` and an ops query publish nothing; an `update` or `delete`
/// publishes its notices and its `accepted` (as it would over MQTT, for
/// whoever watches the shadow) but not its `rejected`.
fn split_answer(request: &Request, messages: Vec<Outbound>) -> (Vec<Outbound>, Vec<Outbound>) {
    let (id, op) = match request {
        Request::Update { id, .. } => (id, Operation::Update),
        Request::Delete { id, .. } => (id, Operation::Delete),
        Request::Get { .. }
        | Request::Ops { .. }
        | Request::SyncUp { .. }
        | Request::Presence { .. } => return (messages, Vec::new()),
    };
    let accepted = Topic::aws_reply(id, op, Reply::Accepted);
    let rejected = Topic::aws_reply(id, op, Reply::Rejected);
    let mut answer = Vec::new();
    let mut public = Vec::with_capacity(messages.len());
    for m in messages {
        if m.topic == rejected {
            answer.push(m);
        } else {
            if m.topic == accepted {
                answer.push(m.clone());
            }
            public.push(m);
        }
    }
    (answer, public)
}

impl Engine {
    /// Starts the store thread. It first publishes the retained state of
    /// every stored shadow, then serves `requests` until the channel
    /// closes, and exits after committing and handing over everything it
    /// received. As many requests as are waiting (up to `max_batch`) share
    /// one transaction and one fsync.
    pub(crate) fn start(
        writer: Writer,
        max_batch: usize,
        requests: mpsc::Receiver<Queued>,
        out: mpsc::Sender<Published>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Engine> {
        let (committed_tx, committed_rx) = std::sync::mpsc::sync_channel(RENDER_QUEUE);
        let renderer = writer.service.renderer();
        let render = std::thread::Builder::new()
            .name("shade-render".into())
            .spawn(move || render_loop(&renderer, &committed_rx, &out))?;
        let store = std::thread::Builder::new()
            .name("shade-store".into())
            .spawn(move || run(&writer, max_batch.max(1), &metrics, requests, &committed_tx))?;
        Ok(Engine { store, render })
    }

    /// Waits for the last commit to be rendered and handed over.
    pub(crate) fn join(self) {
        if self.store.join().is_err() {
            tracing::error!("the store thread panicked");
        }
        if self.render.join().is_err() {
            tracing::error!("the render thread panicked");
        }
    }
}

fn render_loop(
    renderer: &Renderer,
    committed: &std::sync::mpsc::Receiver<Committed>,
    out: &mpsc::Sender<Published>,
) {
    // Ends when the store thread has finished and dropped its sender.
    while let Ok((outs, mut requests)) = committed.recv() {
        let mut published = Published::default();
        let mut queued = requests.iter_mut();
        for outs in outs {
            let rendered = renderer.render(outs);
            match queued.next() {
                Some(q) if q.answer.is_some() => {
                    let (answer, public) = split_answer(&q.request, rendered);
                    published.messages.extend(public);
                    if let Some(to) = q.answer.take() {
                        published.answers.push((to, answer));
                    }
                }
                _ => published.messages.extend(rendered),
            }
        }
        let empty = published.messages.is_empty() && published.answers.is_empty();
        if !empty && out.blocking_send(published).is_err() {
            tracing::warn!("publisher gone; replies dropped during shutdown");
        }
        drop(requests);
    }
}

fn run(
    writer: &Writer,
    max_batch: usize,
    metrics: &Metrics,
    mut requests: mpsc::Receiver<Queued>,
    out: &std::sync::mpsc::SyncSender<Committed>,
) {
    // A closed channel means shutdown; the rest does not matter then.
    let republished = writer.republish(|batch| {
        let ready = batch.into_iter().map(Out::Ready).collect();
        drop(out.send((vec![ready], Vec::new())));
    });
    match republished {
        Ok(n) => tracing::info!(shadows = n, "republished retained state"),
        Err(e) => tracing::error!(error = %e, "could not republish retained state"),
    }
    // As many requests as are waiting share a commit: one under light
    // load (no wait for company), up to `max_batch` when they queue up
    // behind a commit, so the group grows with the load.
    while let Some(first) = requests.blocking_recv() {
        let mut batch = Vec::with_capacity(max_batch.min(64));
        batch.push(first);
        while batch.len() < max_batch {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let done = writer.commit_unrendered(batch.iter().map(|q| &q.request), now_ms());
        count(metrics, started, &batch, &done);
        let outs = done.outs;
        // The slots go back only after rendering, with the replies on
        // their way.
        if out.send((outs, batch)).is_err() {
            tracing::warn!("render thread gone; replies dropped during shutdown");
        }
    }
    tracing::info!("store thread finished its last commit");
}

/// Counts a batch the store thread handled in `started.elapsed()`.
fn count(metrics: &Metrics, started: Instant, batch: &[Queued], done: &Batch) {
    metrics.commit(started.elapsed(), batch.len(), done.failed);
    metrics.conflicts(done.conflicts);
    for (q, code) in batch.iter().zip(&done.codes) {
        if let (Some(code), Some(kind)) = (code, kind(&q.request)) {
            metrics.reply(kind, *code);
        }
    }
}
