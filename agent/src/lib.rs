//! shade-agent: the device side of shade.
//!
//! An [`Agent`] keeps a local replica of one shadow in redb, accepts
//! `report` and `desire` writes whether or not the broker is reachable,
//! and reconciles with `shade serve` over MQTT whenever it can, using the
//! `SyncUp`/`SyncDown` messages of `shade-shared`. It never uses rumqttd.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use shade_agent::{config::{AgentConfig, Overrides}, Agent};
//! let config = AgentConfig::load(None, &Overrides { thing: Some("lamp-1".into()), ..Default::default() })?;
//! let agent = Agent::start(config)?;
//! let mut events = agent.events();
//! agent.report(serde_json::json!({"temperature": 21.5}).as_object().cloned().unwrap_or_default()).await?;
//! while let Ok(event) = events.recv().await {
//!     println!("desired is now {}", event.desired);
//! }
//! agent.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! The modules are floors, declared bottom-up: each uses only those
//! declared before it (`tests/tests/layers.rs` checks it).
//!
//! - [`kv`]: `KEY=VALUE` arguments.
//! - [`replica`]: the local replica in redb; pending changes; durability.
//! - [`config`]: `agent.toml` and flags, validated.
//! - [`hook`]: runs `--on-desired` when desired differs from reported.
//! - [`link`]: the sync loop over rumqttc: connect, backoff, SyncUp/SyncDown.
//! - [`local`]: the Unix socket that lets `report`/`desire`/`state` reach a running agent.
//!
//! Broker URLs, the rustls client configuration, the rumqttc options and
//! the wall clock come from `shade-client`, which the `shade` CLI uses too.

pub mod kv;

pub mod replica;

pub mod config;

mod hook;

mod link;

pub mod local;

/// The reconnect backoff of the sync loop, which `shade-bench storm`
/// reuses so its simulated agents reconnect as this one does.
pub use link::backoff;

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};
use shade_client::now_ms;
use shade_shared::{Patch, Section};
use tokio::sync::{broadcast, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::AgentConfig;
use crate::replica::{Replica, ReplicaError, ReplicaState};

/// Errors of the agent library.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("the agent has stopped")]
    Stopped,
}

/// A change of the desired state, as the device should see it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredChange {
    /// The whole desired section.
    pub desired: Value,
    /// Desired keys reported does not match yet, if any.
    pub delta: Option<Value>,
    /// Whether the broker (a dashboard, another writer) made the change,
    /// rather than a local `desire`.
    pub from_broker: bool,
}

/// State shared by the agent's tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: AgentConfig,
    replica: Mutex<Replica>,
    pub(crate) connected: watch::Sender<bool>,
    pub(crate) events: broadcast::Sender<DesiredChange>,
    /// Wakes the link after a local write, to push it at once.
    pub(crate) kick: Notify,
}

impl Shared {
    /// Locks the replica. A poisoned lock means a panic while holding it;
    /// the replica on disk is still consistent, so carry on with it.
    pub(crate) fn replica(&self) -> MutexGuard<'_, Replica> {
        self.replica.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A local write (blocking: it commits to redb): durable on `Ok`; then
    /// wakes the link to push it and tells listeners of a desired change.
    pub(crate) fn write(&self, section: Section, patch: &Patch) -> Result<(), AgentError> {
        let change = {
            let mut replica = self.replica();
            let changed = replica.write(section, patch, now_ms())?;
            (changed && section == Section::Desired)
                .then(|| self.desired_change(replica.state(), false))
        };
        self.kick.notify_one();
        if let Some(change) = change {
            // Nobody listening is fine.
            let _ = self.events.send(change);
        }
        Ok(())
    }

    pub(crate) fn desired_change(&self, state: &ReplicaState, from_broker: bool) -> DesiredChange {
        let (desired, _) = replica::sections(state, &self.config.policies);
        DesiredChange {
            desired: Value::Object(desired),
            delta: replica::delta(state, &self.config.policies),
            from_broker,
        }
    }
}

/// A running agent. Dropping it without [`Agent::shutdown`] leaves its tasks
/// running until the runtime ends.
#[derive(Debug, Clone)]
pub struct Agent {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Agent {
    /// Opens the replica and starts the sync loop. Must run inside a tokio runtime.
    pub fn start(config: AgentConfig) -> Result<Agent, AgentError> {
        let id = config.replica()?;
        // A one-shot `report` may hold the file for a moment.
        let replica = replica::when_free(std::time::Duration::from_secs(10), || {
            Replica::open(&config.data_dir, id.clone(), config.bounds())
        })?;
        let (connected, _) = watch::channel(false);
        let (events, _) = broadcast::channel(64);
        let shared = Arc::new(Shared {
            config,
            replica: Mutex::new(replica),
            connected,
            events,
            kick: Notify::new(),
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(link::run(shared.clone(), cancel.clone()));
        hook::start(shared.clone(), cancel.clone(), &tracker);
        Ok(Agent {
            shared,
            cancel,
            tracker,
        })
    }

    pub fn config(&self) -> &AgentConfig {
        &self.shared.config
    }

    /// Writes reported state. Durable when this returns `Ok`.
    pub async fn report(&self, patch: Map<String, Value>) -> Result<(), AgentError> {
        self.write(Section::Reported, Patch::Merge(patch)).await
    }

    /// Writes desired state from the device side. Durable when this returns `Ok`.
    pub async fn desire(&self, patch: Map<String, Value>) -> Result<(), AgentError> {
        self.write(Section::Desired, Patch::Merge(patch)).await
    }

    /// Writes `patch` to `section` of the local replica, then pushes it.
    pub async fn write(&self, section: Section, patch: Patch) -> Result<(), AgentError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.write(section, &patch))
            .await
            .map_err(|_| AgentError::Stopped)?
    }

    /// Desired changes (and deltas), from the broker or local `desire`.
    pub fn events(&self) -> broadcast::Receiver<DesiredChange> {
        self.shared.events.subscribe()
    }

    /// A copy of the local replica.
    pub fn state(&self) -> ReplicaState {
        self.shared.replica().state().clone()
    }

    /// The document as `shade-agent state --json` prints it.
    pub fn state_json(&self) -> Value {
        let state = self.state();
        replica::state_json(
            &state,
            &self.shared.config.policies,
            self.is_connected(),
            now_ms(),
        )
    }

    /// Whether the agent is connected to the broker now.
    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// Connection status changes.
    pub fn connection(&self) -> watch::Receiver<bool> {
        self.shared.connected.subscribe()
    }

    /// Stops the sync loop (disconnecting cleanly) and waits for it.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}
