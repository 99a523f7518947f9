//! `shade get THING [--shadow NAME] [--json]`: one shadow's document.
//!
//! Online it is an AWS `get`; offline (`--data`) it renders the stored
//! shadow with [`shade_shared::aws::render_get`], the function the broker
//! answers with, so `--json` prints the same document both ways.

use clap::Args;
use serde_json::{Map, Value};
use shade_shared::aws::render_get;
use shade_shared::document::ConflictSide;
use shade_shared::topic::Operation;
use shade_shared::{ShadowName, ThingName};

use super::args::{now_ms, shadow_id, CliError, Source};
use super::client::Session;
use super::output::{local_time, pretty, Out, Paint};

pub const EXAMPLES: &str = "\
Examples:
  shade get lamp-1
  shade get lamp-1 --shadow config --json
  shade get lamp-1 --broker mqtt://10.0.0.5:1883
  shade get lamp-1 --data ./shade-data        # a stopped broker's data";

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// The thing whose shadow to show.
    pub thing: ThingName,
    /// A named shadow (default: the thing's classic shadow).
    #[arg(long, value_name = "NAME")]
    pub shadow: Option<ShadowName>,
    /// Print the document as get/accepted carries it.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub source: Source,
}

pub async fn run(args: GetArgs) -> Result<(), CliError> {
    let id = shadow_id(args.thing, args.shadow);
    let doc = match args.source.offline()? {
        Some(offline) => {
            let stored = offline
                .store
                .get(&id)?
                .filter(|s| s.shadow.exists)
                .ok_or_else(|| CliError::NoSuchShadow(id.to_string()))?;
            let mut doc = render_get(&stored.shadow, &offline.policies, None, now_ms());
            let presence = crate::store::ShadowSource::presence(&offline.store, id.thing.as_str())?;
            crate::shadow::stamp(&mut doc, presence.as_ref());
            doc
        }
        None => {
            let mut session = Session::connect(&args.source.online).await?;
            let mut doc = session.aws(&id, Operation::Get, Map::new()).await?;
            session.close().await;
            if let Value::Object(m) = &mut doc {
                m.remove("clientToken");
            }
            doc
        }
    };
    let mut out = Out::new();
    if args.json {
        out.line(&pretty(&doc))?;
    } else {
        print_document(&mut out, &id.to_string(), &doc)?;
    }
    out.flush()
}

/// The newest `timestamp` (seconds) anywhere in AWS metadata.
fn newest(metadata: &Value) -> Option<u64> {
    match metadata {
        Value::Object(m) => m
            .iter()
            .filter_map(|(k, v)| {
                if k == "timestamp" {
                    v.as_u64()
                } else {
                    newest(v)
                }
            })
            .max(),
        _ => None,
    }
}

fn indented(v: &Value) -> String {
    pretty(v)
        .lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `  desired.color  kept "blue" (a:lamp-1, TIME)  lost "green" (b:local, TIME)`.
fn conflict_line(out: &Out, c: &Value) -> Option<String> {
    let section = c.get("section")?.as_str()?;
    let path = c.get("path")?.as_str()?;
    let side = |key: &str, paint: Paint| -> Option<String> {
        let s: ConflictSide = serde_json::from_value(c.get(key)?.clone()).ok()?;
        Some(format!(
            "{} {}",
            out.paint(paint, &s.value.to_string()),
            out.paint(
                Paint::Dim,
                &format!("({}, {})", s.replica, local_time(s.ts))
            )
        ))
    };
    Some(format!(
        "  {section}.{path}  kept {}  lost {}",
        side("kept", Paint::Green)?,
        side("lost", Paint::Red)?
    ))
}

/// The human view: a title line, then desired, reported, delta and any
/// conflicts, each as indented pretty JSON.
fn print_document(out: &mut Out, name: &str, doc: &Value) -> Result<(), CliError> {
    let version = doc.get("version").and_then(Value::as_u64).unwrap_or(0);
    let mut title = format!("{}  version {version}", out.paint(Paint::Bold, name));
    if let Some(secs) = doc.get("metadata").and_then(newest) {
        title.push_str(&out.paint(
            Paint::Dim,
            &format!("  updated {}", local_time(secs.saturating_mul(1000))),
        ));
    }
    out.line(&title)?;
    if let Some(connected) = doc.get("connected").and_then(Value::as_bool) {
        let seen = doc.get("lastSeen").and_then(Value::as_u64);
        let line = match (connected, seen) {
            (true, Some(t)) => format!("connected since {}", local_time(t)),
            (true, None) => "connected".to_owned(),
            (false, Some(t)) => format!("disconnected, last seen {}", local_time(t)),
            (false, None) => "never seen connected".to_owned(),
        };
        let paint = if connected { Paint::Green } else { Paint::Dim };
        out.line(&out.paint(paint, &line))?;
    }
    let state = doc.get("state");
    for (section, paint) in [
        ("desired", Paint::Cyan),
        ("reported", Paint::Green),
        ("delta", Paint::Yellow),
    ] {
        match state.and_then(|s| s.get(section)) {
            Some(v) => {
                out.line(&out.paint(paint, &format!("{section}:")))?;
                out.line(&indented(v))?;
            }
            None if section != "delta" => out.line(&format!(
                "{}  {}",
                out.paint(paint, &format!("{section}:")),
                out.paint(Paint::Dim, "(none)")
            ))?,
            None => {}
        }
    }
    let conflicts = doc
        .get("conflicts")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if !conflicts.is_empty() {
        out.line(&out.paint(Paint::Red, "conflicts:"))?;
        for c in conflicts {
            let line = conflict_line(out, c).unwrap_or_else(|| format!("  {c}"));
            out.line(&line)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_newest_metadata_timestamp_dates_the_document() {
        let metadata = json!({"desired": {"a": {"timestamp": 5}, "b": {"c": {"timestamp": 9}}}, "reported": {"d": {"timestamp": 7}}});
        assert_eq!(newest(&metadata), Some(9));
        assert_eq!(newest(&json!({})), None);
    }
}
