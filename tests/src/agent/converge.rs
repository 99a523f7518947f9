//! Waiting, with a bound, until an agent and the broker agree.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{state, Dashboard, POLL_EVERY};
use crate::Mqtt;

/// A bound for a polling loop: `tick` sleeps [`POLL_EVERY`], or panics
/// with `what` and the caller's last observation once the bound is past.
#[derive(Debug)]
pub struct Deadline {
    what: String,
    start: Instant,
    within: Duration,
}

impl Deadline {
    pub fn new(what: &str, within: Duration) -> Deadline {
        Deadline {
            what: what.to_owned(),
            start: Instant::now(),
            within,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn left(&self) -> Duration {
        self.within.saturating_sub(self.start.elapsed())
    }

    pub async fn tick(&self, last: &str) {
        if self.start.elapsed() > self.within {
            panic!(
                "gave up waiting for {} after {:?}; last seen:\n{last}",
                self.what, self.within
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The part of a document two converged replicas must agree on
/// (DESIGN: desired, reported and conflicts; delta follows from them).
pub fn synced_view(doc: &Value) -> Value {
    json!({
        "desired": doc["state"]["desired"],
        "reported": doc["state"]["reported"],
        "delta": doc["state"]["delta"],
        "conflicts": doc["conflicts"],
    })
}

/// Is the agent on `data` converged with the broker's `broker_doc`:
/// connected, nothing pending, and the same synced view?
pub fn is_converged(agent_state: &Value, broker_doc: Option<&Value>) -> bool {
    agent_state["connected"] == true
        && agent_state["pending"] == 0
        && broker_doc.is_some_and(|b| synced_view(b) == synced_view(agent_state))
}

/// Polls the agent (`state --json`) and the broker (`get`) until they
/// agree (see [`is_converged`]); returns both.
pub async fn wait_converged(
    dash: &mut Dashboard,
    data: &Path,
    thing: &str,
    within: Duration,
) -> (Value, Value) {
    let deadline = Deadline::new(
        &format!("convergence of {thing} (agent on {})", data.display()),
        within,
    );
    loop {
        let agent = state(data).await;
        let broker = dash.get(thing).await;
        if is_converged(&agent, broker.as_ref()) {
            return (agent, broker.expect("converged means the broker has it"));
        }
        let broker = broker.map_or_else(|| "(no shadow)".to_owned(), |b| b.to_string());
        deadline
            .tick(&format!("agent:  {agent}\nbroker: {broker}"))
            .await;
    }
}

/// Waits for a message on `shade/things/THING/state` whose document
/// satisfies `matches` (the retained one counts); bounded by `within`.
pub async fn wait_state_message(
    mqtt: &mut Mqtt,
    thing: &str,
    within: Duration,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    let topic = format!("shade/things/{thing}/state");
    let what = format!("{topic} message matching the test's condition");
    let msg = mqtt
        .wait_for_within(&what, within, |m| {
            m.topic == topic
                && serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| matches(&v))
        })
        .await;
    msg.json()
}
