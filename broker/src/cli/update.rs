//! `shade update THING [--shadow NAME] (--desired JSON | --reported JSON)`
//! and `shade delete THING [--shadow NAME]`: AWS `update` and `delete`
//! requests, written through the broker replica like any SDK client's.

use clap::{ArgGroup, Args};
use serde_json::{Map, Value};
use shade_shared::topic::Operation;
use shade_shared::{ShadowName, ThingName};

use super::args::{shadow_id, BrokerArgs, CliError};
use super::client::Session;
use super::output::Out;

pub const UPDATE_EXAMPLES: &str = "\
Examples:
  shade update lamp-1 --desired '{\"color\":\"red\",\"level\":80}'
  shade update lamp-1 --desired '{\"level\":null}'          # null deletes a key
  shade update lamp-1 --shadow config --reported '{\"fw\":\"1.2\"}'
  shade update lamp-1 --desired '{\"on\":true}' --expect-version 7";

pub const DELETE_EXAMPLES: &str = "\
Examples:
  shade delete lamp-1
  shade delete lamp-1 --shadow config";

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("section").required(true).args(["desired", "reported"])))]
pub struct UpdateArgs {
    /// The thing whose shadow to change.
    pub thing: ThingName,
    /// A named shadow (default: the thing's classic shadow).
    #[arg(long, value_name = "NAME")]
    pub shadow: Option<ShadowName>,
    /// Merge this JSON object into desired (null deletes a key; null alone clears desired).
    #[arg(long, value_name = "JSON")]
    pub desired: Option<String>,
    /// Merge this JSON object into reported (null deletes a key; null alone clears reported).
    #[arg(long, value_name = "JSON")]
    pub reported: Option<String>,
    /// Apply only if the shadow is at this version (else: version conflict).
    #[arg(long, value_name = "N")]
    pub expect_version: Option<u64>,
    #[command(flatten)]
    pub online: BrokerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// The thing whose shadow to delete.
    pub thing: ThingName,
    /// A named shadow (default: the thing's classic shadow).
    #[arg(long, value_name = "NAME")]
    pub shadow: Option<ShadowName>,
    #[command(flatten)]
    pub online: BrokerArgs,
}

/// Reads a `--desired`/`--reported` argument: a JSON object, or null.
pub fn section_argument(flag: &str, text: &str) -> Result<Value, CliError> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| CliError::InvalidJson(format!("{flag}: {e}")))?;
    let kind = match &v {
        Value::Object(_) | Value::Null => return Ok(v),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
    };
    Err(CliError::InvalidJson(format!(
        "{flag} must be a JSON object or null, not {kind} (try '{{\"key\": {text}}}')"
    )))
}

pub async fn update(args: UpdateArgs) -> Result<(), CliError> {
    // Checked before connecting: a typo never reaches the broker.
    let mut state = Map::new();
    if let Some(text) = &args.desired {
        state.insert("desired".into(), section_argument("--desired", text)?);
    }
    if let Some(text) = &args.reported {
        state.insert("reported".into(), section_argument("--reported", text)?);
    }
    let mut body = Map::new();
    body.insert("state".into(), Value::Object(state));
    if let Some(v) = args.expect_version {
        body.insert("version".into(), Value::from(v));
    }
    let id = shadow_id(args.thing, args.shadow);
    let mut session = Session::connect(&args.online).await?;
    let accepted = session.aws(&id, Operation::Update, body).await?;
    session.close().await;
    let version = accepted.get("version").and_then(Value::as_u64).unwrap_or(0);
    let mut out = Out::new();
    out.line(&format!("{id} version {version}"))?;
    out.flush()
}

pub async fn delete(args: DeleteArgs) -> Result<(), CliError> {
    let id = shadow_id(args.thing, args.shadow);
    let mut session = Session::connect(&args.online).await?;
    let accepted = session.aws(&id, Operation::Delete, Map::new()).await?;
    session.close().await;
    let version = accepted.get("version").and_then(Value::as_u64).unwrap_or(0);
    let mut out = Out::new();
    out.line(&format!("{id} deleted at version {version}"))?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn section_arguments_are_objects_or_null() {
        assert_eq!(
            section_argument("--desired", r#"{"a":1}"#).expect("object"),
            json!({"a": 1})
        );
        assert_eq!(
            section_argument("--desired", "null").expect("null"),
            Value::Null
        );
        let e = section_argument("--desired", "{a:1}").expect_err("not JSON");
        assert!(
            e.to_string()
                .starts_with("invalid JSON argument: --desired: key must be a string"),
            "{e}"
        );
        let e = section_argument("--reported", "5").expect_err("a number");
        assert!(
            e.to_string()
                .contains("--reported must be a JSON object or null, not a number"),
            "{e}"
        );
    }
}
