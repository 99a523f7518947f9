//! Helpers for the `shade-agent` end-to-end tests: real `shade serve` and
//! `shade-agent run` processes, the `shade-agent report/desire/state`
//! command lines, and a rumqttc dashboard speaking the AWS shadow topics.
//!
//! # Layout
//!
//! - `agent/broker.rs`, [`Broker`]: one `shade serve` child process that
//!   can be killed and started again on the *same* port (the crate's
//!   [`crate::Server`] picks a new port on restart, but a running agent only
//!   reconnects to the port it was given). Killed (SIGKILL) when dropped.
//! - `agent/process.rs`, [`Agent`] and [`AgentSpec`]: one `shade-agent run`
//!   child process; ready once its local socket answers; killed (SIGKILL)
//!   when dropped. [`write_agent_config`] makes its reconnects quick.
//! - `agent/cli.rs`, [`report`], [`desire`], [`state`], [`agent_cli`]: the
//!   one-shot command lines, each bounded by [`CLI_TIMEOUT`].
//! - `agent/dashboard.rs`, [`Dashboard`]: an MQTT 3.1.1 client
//!   ([`crate::Mqtt`]) doing AWS `get` and `update`.
//! - `agent/converge.rs`, [`Deadline`], [`wait_converged`],
//!   [`synced_view`], [`wait_state_message`]: polling with a bound.
//! - here: the timeouts, the paths of the binaries, and what both process
//!   guards share (SIGTERM with a bounded wait, reading their logs).
//!
//! Every process is started with its stderr in a log file; when a test
//! panics, the guards print the logs (the agents' tails) while they unwind.
//!
//! The binaries are found next to the test executable
//! (`target/<profile>/shade` and `shade-agent`). Cargo does not build a
//! dependency's binaries, but `cargo test --workspace` builds a member's
//! binaries when that member has integration tests of its own: both
//! `broker/tests/` and `agent/tests/` exist for that reason too.

mod broker;
mod cli;
mod converge;
mod dashboard;
mod process;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::{shade_binary, STOP_TIMEOUT};

pub use broker::Broker;
pub use cli::{agent_cli, desire, report, state, CliOutput};
pub use converge::{is_converged, synced_view, wait_converged, wait_state_message, Deadline};
pub use dashboard::Dashboard;
pub use process::{write_agent_config, Agent, AgentSpec};

/// Bound of one `shade-agent report/desire/state` run. Generous: debug
/// builds on two cores, with other tests running beside.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the waits poll.
pub const POLL_EVERY: Duration = Duration::from_millis(20);
/// Lines of an agent's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Checks that the `shade` and `shade-agent` binaries are there (see the
/// module docs for why `cargo test --workspace` builds both).
pub fn ensure_binaries_built() {
    for name in ["shade", "shade-agent"] {
        let path = shade_binary().with_file_name(name);
        assert!(
            path.exists(),
            "{} is missing: run `cargo test --workspace` (or `cargo build --workspace`) first",
            path.display()
        );
    }
}

/// Path of the `shade-agent` binary of this build profile.
pub fn agent_binary() -> PathBuf {
    ensure_binaries_built();
    let shade = shade_binary();
    let bin = shade.with_file_name(format!("shade-agent{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo test --workspace`, or `cargo build -p shade-agent` before `cargo test -p shade-tests`",
        bin.display()
    );
    bin
}

/// Sends SIGTERM to `child` and waits (bounded) for its exit status.
fn terminate_child(child: &mut Child, what: &str) -> ExitStatus {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("run kill -TERM");
    assert!(
        status.success(),
        "kill -TERM {} ({what}) failed",
        child.id()
    );
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {STOP_TIMEOUT:?} of SIGTERM");
        }
        // Polling an exit status: there is no message to await.
        std::thread::sleep(POLL_EVERY);
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
