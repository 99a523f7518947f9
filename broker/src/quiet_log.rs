//! The `shade` binary's log: drops two ERROR events rumqttd 0.20 logs for
//! every client that disconnects cleanly, so that an operator's log shows
//! errors only when something went wrong.
//!
//! When a client sends DISCONNECT, rumqttd's router drops the link first
//! and its connection task then logs `router-drop` with
//! `Recv(Disconnected)` (the channel the router closed). When the network
//! close came first, the router was told a second time and logged
//! `no-connection id N is already gone` (its own comment calls this double
//! disconnect expected), or, had another client taken slot N meanwhile,
//! closed that client: the front now leaves closing to rumqttd after a
//! DISCONNECT (`relay.rs`), so the second notice is rare, but both events
//! are still benign when they come. Every `shade get` produced them. Only these exact events are dropped: `router-drop`
//! with any other error, and everything else rumqttd logs, still show.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// A layer whose only job is to veto the two benign events.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuietDisconnects;

impl<S: Subscriber> Layer<S> for QuietDisconnects {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR || !meta.target().starts_with("rumqttd::") {
            return true;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        !is_benign(&fields.message, &fields.error)
    }
}

/// The `message` and `error` fields of one event, as text.
#[derive(Default)]
struct Fields {
    message: String,
    error: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "error" => self.error = format!("{value:?}"),
            _ => {}
        }
    }
}

fn is_benign(message: &str, error: &str) -> bool {
    (message == "router-drop" && error == "Recv(Disconnected)")
        || (message.starts_with("no-connection id ") && message.ends_with(" is already gone"))
}

#[cfg(test)]
mod tests {
    use super::is_benign;

    #[test]
    fn only_the_clean_disconnect_events_are_benign() {
        assert!(is_benign("router-drop", "Recv(Disconnected)"));
        assert!(is_benign("no-connection id 7 is already gone", ""));
        assert!(!is_benign("router-drop", "Send(Full)"));
        assert!(!is_benign("Remote link error", "Recv(Disconnected)"));
        assert!(!is_benign("connection-stop", ""));
    }
}
