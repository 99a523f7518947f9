//! The one-shot `shade-agent` command lines (`report`, `desire`,
//! `state --json`), each bounded by [`CLI_TIMEOUT`].

use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use serde_json::Value;

use super::{agent_binary, CLI_TIMEOUT};

/// What a one-shot `shade-agent` command did.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `shade-agent ARGS...`, bounded by [`CLI_TIMEOUT`] (killed after it).
pub async fn agent_cli(args: &[OsString]) -> CliOutput {
    let child = tokio::process::Command::new(agent_binary())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn shade-agent");
    match tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => CliOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("shade-agent {args:?}: {e}"),
        Err(_) => panic!("shade-agent {args:?} did not exit within {CLI_TIMEOUT:?}"),
    }
}

async fn write(verb: &str, data: &Path, pairs: &[&str]) {
    let mut args: Vec<OsString> = vec![verb.into(), "--data".into(), data.into()];
    args.extend(pairs.iter().map(OsString::from));
    let out = agent_cli(&args).await;
    assert!(
        out.status.success(),
        "shade-agent {verb} {pairs:?} exited with {}: {}",
        out.status,
        out.stderr
    );
}

/// `shade-agent report --data DATA PAIRS...`; asserts exit 0.
pub async fn report(data: &Path, pairs: &[&str]) {
    write("report", data, pairs).await;
}

/// `shade-agent desire --data DATA PAIRS...`; asserts exit 0.
pub async fn desire(data: &Path, pairs: &[&str]) {
    write("desire", data, pairs).await;
}

/// `shade-agent state --data DATA --json`, parsed.
pub async fn state(data: &Path) -> Value {
    let out = agent_cli(&[
        "state".into(),
        "--data".into(),
        data.into(),
        "--json".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "shade-agent state exited with {}: {}",
        out.status,
        out.stderr
    );
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "shade-agent state --json printed no JSON ({e}): {}",
            out.stdout
        )
    })
}
