//! `shade watch [THING] [--where EXPR]`: one line per accepted change
//! until Ctrl-C.
//!
//! It subscribes to the AWS notices every SDK client can see,
//! `update/documents` and `delete/accepted`, of classic and named shadows,
//! and prints each as `TIME  THING[/SHADOW]  vVERSION  CHANGES`, where
//! CHANGES are `path=value` words (`null` for what went away) or `deleted`.
//! With `--where`, only the shadows a fleet query matches, from their
//! state topics ([`super::matching`]): `matches: ...` when one starts to
//! match, what changed while it does (presence included), `no longer
//! matches` when it stops, `deleted`.
//! stdout carries those lines only, so a script can read them; the one
//! `watching ...` line goes to stderr once the broker has acknowledged the
//! subscriptions.

use clap::Args;
use serde_json::Value;
use shade_shared::topic::{Operation, Reply, Topic};
use shade_shared::ThingName;

use super::args::{now_ms, BrokerArgs, CliError};
use super::client::Session;
use super::matching::{self, Change, Matching};
use super::output::{diff_words, local_time, Out, Paint};

pub const EXAMPLES: &str = "\
Examples:
  shade watch
  shade watch lamp-1
  shade watch | grep --line-buffered desired.color
  shade watch --where 'reported.temp > 80 or connected = false'

Each line: TIME  THING[/SHADOW]  vVERSION  CHANGES, e.g.
  2026-11-26T12:03:04+01:00  lamp-1  v8  desired.color=\"red\" desired.mode=null
With --where: `matches: KEYS` when a shadow starts to match, the changes
while it matches, `no longer matches`, `deleted`.";

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Only this thing's shadows (default: every thing).
    pub thing: Option<ThingName>,
    /// Only the shadows this fleet query matches (as `shade list --where`),
    /// judged on each change, presence included.
    #[arg(long = "where", value_name = "EXPR")]
    pub filter: Option<String>,
    #[command(flatten)]
    pub online: BrokerArgs,
}

/// The filters for `thing` (`+`: every thing).
fn filters(thing: &str) -> Vec<String> {
    let base = format!("$aws/things/{thing}/shadow");
    vec![
        format!("{base}/update/documents"),
        format!("{base}/name/+/update/documents"),
        format!("{base}/delete/accepted"),
        format!("{base}/name/+/delete/accepted"),
    ]
}

/// The line for one notice, or `None` for a message that is not one.
fn line(out: &Out, topic: &str, payload: &[u8]) -> Option<String> {
    let Ok(Topic::AwsReply { id, op, reply }) = Topic::parse(topic) else {
        return None;
    };
    let doc: Value = serde_json::from_slice(payload).ok()?;
    let secs = doc.get("timestamp").and_then(Value::as_u64);
    let time = local_time(secs.map_or_else(now_ms, |s| s.saturating_mul(1000)));
    let (version, change) = match (op, reply) {
        (_, Reply::Documents) => {
            let current = doc.get("current")?;
            let version = current.get("version").and_then(Value::as_u64)?;
            let before = doc
                .get("previous")
                .and_then(|p| p.get("state"))
                .unwrap_or(&Value::Null);
            let after = current.get("state").unwrap_or(&Value::Null);
            let words = diff_words(before, after);
            (
                version,
                if words.is_empty() {
                    "no change".to_owned()
                } else {
                    words
                },
            )
        }
        (Operation::Delete, Reply::Accepted) => (
            doc.get("version").and_then(Value::as_u64)?,
            "deleted".to_owned(),
        ),
        _ => return None,
    };
    Some(format!(
        "{}  {}  {}  {change}",
        out.paint(Paint::Dim, &time),
        out.paint(Paint::Bold, &id.to_string()),
        out.paint(Paint::Cyan, &format!("v{version}"))
    ))
}

/// The line for a change of a matching shadow.
fn matching_line(out: &Out, change: Change) -> String {
    let (id, version, words) = match change {
        Change::Enters { id, version, words } => (id, version, format!("matches: {words}")),
        Change::Changes { id, version, words } => (id, version, words),
        Change::Leaves { id, version } => (id, version, "no longer matches".to_owned()),
        Change::Deleted { id, version } => (id, version, "deleted".to_owned()),
    };
    format!(
        "{}  {}  {}  {words}",
        out.paint(Paint::Dim, &local_time(now_ms())),
        out.paint(Paint::Bold, &id.to_string()),
        out.paint(Paint::Cyan, &format!("v{version}"))
    )
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed by this call,
/// not when the future is first polled, so a signal sent right after the
/// `watching` line ends the watch cleanly instead of killing the process.
#[cfg(unix)]
fn interrupted() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(not(unix))]
fn interrupted() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn run(args: WatchArgs) -> Result<(), CliError> {
    let stop = interrupted();
    tokio::select! {
        () = stop => Ok(()),
        result = watch(&args) => result,
    }
}

/// Connects, subscribes, then prints until the connection fails.
async fn watch(args: &WatchArgs) -> Result<(), CliError> {
    let thing = args.thing.as_ref().map_or("+", ThingName::as_str);
    let mut matching = args.filter.as_deref().map(Matching::parse).transpose()?;
    let mut session = Session::connect(&args.online).await?;
    match matching {
        Some(_) => session.subscribe(&matching::filters(thing)).await?,
        None => session.subscribe(&filters(thing)).await?,
    }
    let mut what = args.thing.as_ref().map_or_else(
        || "every shadow".to_owned(),
        |t| format!("the shadows of {t}"),
    );
    if let Some(filter) = &args.filter {
        what = format!("{what} matching {filter}");
    }
    eprintln!(
        "shade: watching {what} on {} (Ctrl-C to stop)",
        session.broker()
    );
    let mut out = Out::new();
    loop {
        let msg = session.next_publish(None, "changes").await?;
        let text = match &mut matching {
            Some(m) => m
                .on_state(&msg.topic, &msg.payload, msg.retain)
                .map(|change| matching_line(&out, change)),
            None => line(&out, &msg.topic, &msg.payload),
        };
        if let Some(text) = text {
            out.line_now(&text)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_cover_classic_and_named_shadows() {
        assert_eq!(
            filters("lamp-1"),
            [
                "$aws/things/lamp-1/shadow/update/documents",
                "$aws/things/lamp-1/shadow/name/+/update/documents",
                "$aws/things/lamp-1/shadow/delete/accepted",
                "$aws/things/lamp-1/shadow/name/+/delete/accepted",
            ]
        );
    }

    #[test]
    fn notices_become_one_line_each() {
        let out = Out::plain();
        let docs = json!({
            "previous": {"state": {"desired": {"color": "red", "mode": "eco"}}, "metadata": {}, "version": 7},
            "current": {"state": {"desired": {"color": "blue"}}, "metadata": {}, "version": 8},
            "timestamp": 1_764_158_584u64,
        });
        let text = line(
            &out,
            "$aws/things/lamp-1/shadow/name/cfg/update/documents",
            docs.to_string().as_bytes(),
        )
        .expect("a line");
        assert!(
            text.ends_with("  lamp-1/cfg  v8  desired.color=\"blue\" desired.mode=null"),
            "{text}"
        );
        let deleted = json!({"version": 8, "timestamp": 1_764_158_584u64});
        let text = line(
            &out,
            "$aws/things/lamp-1/shadow/delete/accepted",
            deleted.to_string().as_bytes(),
        )
        .expect("a line");
        assert!(text.ends_with("  lamp-1  v8  deleted"), "{text}");
        assert_eq!(
            line(&out, "$aws/things/lamp-1/shadow/update/accepted", b"{}"),
            None
        );
    }
}
