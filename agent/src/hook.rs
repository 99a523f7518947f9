//! `--on-desired CMD`: run a command when desired differs from reported.
//!
//! The command runs through `sh -c` with the delta as JSON on stdin. If it
//! exits 0 and prints a JSON object, the agent reports that object: a hook
//! that applies settings can answer with what it applied. One run at a
//! time: changes that arrive meanwhile are coalesced into one more run
//! with the delta as it is then. A failing or hanging hook (killed after
//! the timeout) is logged and retried on the next change; it never stops
//! the agent.
//!
//! The hook runs in a process group of its own, and a hook killed (the
//! timeout, or the agent stopping) is killed as the whole group: `sh -c
//! "sleep 30; ..."` has `sleep` as a child, and killing only `sh` would
//! leave it running past the failure the agent logged, possibly beside
//! the next run. A hook that exits by itself may leave processes behind
//! on purpose (it started a service); those are its own.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use shade_shared::{Patch, Section};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::{replica, Shared};

/// Why a hook run failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HookError {
    #[error("cannot start the hook: {0}")]
    Spawn(std::io::Error),
    #[error("the hook ran longer than {0:?} and was killed")]
    Timeout(Duration),
    #[error("the hook exited with {status}: {stderr}")]
    Failed {
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("the hook's output could not be read: {0}")]
    Io(std::io::Error),
}

/// Runs `cmd` with `input` on stdin. `Ok(Some(object))` when it exits 0
/// and prints a JSON object; `Ok(None)` when it exits 0 and prints anything else.
pub(crate) async fn run_hook(
    cmd: &str,
    input: &Value,
    timeout: Duration,
) -> Result<Option<Map<String, Value>>, HookError> {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.spawn().map_err(HookError::Spawn)?;
    // Armed until the hook exits by itself: a timeout, or this future
    // dropped because the agent stops, kills the whole group.
    let mut group = GroupKill(child.id());
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let bytes = input.to_string().into_bytes();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    // Everything under the timeout, the delta written while the outputs are
    // read: a hook that reads no stdin, or writes much, cannot stall us.
    let ran = tokio::time::timeout(timeout, async {
        let io = async {
            let feed = async {
                if let Some(mut stdin) = stdin {
                    // A hook that does not read its stdin is allowed.
                    let _ = stdin.write_all(&bytes).await;
                }
            };
            tokio::join!(feed, read_all(stdout, &mut out), read_all(stderr, &mut err));
        };
        tokio::pin!(io);
        let wait = child.wait();
        tokio::pin!(wait);
        let mut io_done = false;
        let status = tokio::select! {
            status = &mut wait => status,
            () = &mut io => {
                io_done = true;
                (&mut wait).await
            }
        };
        // Exited. Output pipes a process the hook left behind still holds
        // open are read a moment longer, then let go: the hook is done.
        if !io_done {
            let _ = tokio::time::timeout(OUTPUT_GRACE, &mut io).await;
        }
        status
    })
    .await;
    let status = match ran {
        Err(_) => return Err(HookError::Timeout(timeout)),
        Ok(status) => status.map_err(HookError::Io)?,
    };
    group.disarm();
    let output = std::process::Output {
        status,
        stdout: out,
        stderr: err,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr)
            .trim()
            .chars()
            .take(500)
            .collect();
        return Err(HookError::Failed {
            status: output.status,
            stderr,
        });
    }
    match serde_json::from_slice::<Value>(&output.stdout) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        _ => Ok(None),
    }
}

/// How long the outputs are still read once the hook has exited.
const OUTPUT_GRACE: Duration = Duration::from_millis(250);

/// Reads `pipe` to its end into `buf` (what was read stays there if this
/// is cancelled).
async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>, buf: &mut Vec<u8>) {
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(buf).await;
    }
}

/// Kills the process group whose leader has this pid when dropped, unless
/// disarmed.
struct GroupKill(Option<u32>);

impl GroupKill {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self
            .0
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            // Gone already (every member exited) is fine.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Starts the hook task if the config has a hook.
pub(crate) fn start(
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) {
    let Some(cmd) = shared.config.on_desired.clone() else {
        return;
    };
    tracker.spawn(run(shared, cmd, cancel));
}

async fn run(shared: Arc<Shared>, cmd: String, cancel: CancellationToken) {
    let mut events = shared.events.subscribe();
    // A delta left from before a restart is handled at start, then one run
    // per batch of changes.
    loop {
        {
            let delta = {
                let r = shared.replica();
                replica::delta(r.state(), &shared.config.policies)
            };
            if let Some(delta) = delta {
                tracing::info!(hook = %cmd, delta = %delta, "running on-desired hook");
                let ran = tokio::select! {
                    ran = run_hook(&cmd, &delta, shared.config.hook_timeout) => ran,
                    // Stopping does not wait for the hook: dropping the run
                    // kills its process group.
                    () = cancel.cancelled() => {
                        tracing::info!("stopping: the running hook is killed");
                        break;
                    }
                };
                match ran {
                    Ok(Some(report)) => {
                        let shared2 = shared.clone();
                        let written = tokio::task::spawn_blocking(move || {
                            shared2.write(Section::Reported, &Patch::Merge(report))
                        })
                        .await;
                        match written {
                            Ok(Ok(())) => tracing::info!("hook output reported"),
                            Ok(Err(e)) => {
                                tracing::error!(error = %e, "cannot report the hook's output")
                            }
                            Err(e) => tracing::error!(error = %e, "hook report task failed"),
                        }
                    }
                    Ok(None) => {
                        tracing::info!("hook done (no JSON object printed, nothing reported)")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "on-desired hook failed; will retry on the next change")
                    }
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            ev = events.recv() => match ev {
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
        }
        // Coalesce changes that arrived while the hook ran.
        while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
            events.try_recv()
        {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hook_gets_delta_on_stdin_and_its_object_is_returned() {
        let out = run_hook(
            "cat",
            &serde_json::json!({"color": "red"}),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            out.ok().flatten(),
            serde_json::json!({"color": "red"}).as_object().cloned()
        );
    }

    #[tokio::test]
    async fn failing_and_hanging_hooks_are_errors() {
        let v = Value::Null;
        assert!(matches!(
            run_hook("exit 3", &v, Duration::from_secs(5)).await,
            Err(HookError::Failed { .. })
        ));
        assert!(matches!(
            run_hook("sleep 5", &v, Duration::from_millis(100)).await,
            Err(HookError::Timeout(_))
        ));
        assert!(matches!(
            run_hook("echo not-json", &v, Duration::from_secs(5)).await,
            Ok(None)
        ));
    }

    #[tokio::test]
    async fn the_timeout_holds_while_a_large_delta_waits_on_a_hook_that_reads_no_stdin() {
        let big = serde_json::json!({"v": "b".repeat(200_000)});
        // Unbounded, the write would wait for the hook's 30 s to end.
        let start = std::time::Instant::now();
        let out = run_hook("sleep 30", &big, Duration::from_millis(300)).await;
        assert!(matches!(out, Err(HookError::Timeout(_))), "{out:?}");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_hook_that_exits_leaving_a_child_on_its_stdout_is_done_and_the_child_is_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bg.pid");
        let cmd = format!(
            "sleep 30 & echo $! > {}; echo '{{\"applied\": 1}}'",
            file.display()
        );
        let out = run_hook(&cmd, &Value::Null, Duration::from_secs(5)).await;
        let pid = pid_in(&file).await;
        let alive = !gone(pid).await;
        // Not a test of its own: the sleep is ours to clean up.
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
        assert_eq!(
            out.ok().flatten(),
            serde_json::json!({"applied": 1}).as_object().cloned()
        );
        assert!(alive, "the hook's background child was killed");
    }

    /// The pid a hook wrote to `file`, once it has.
    async fn pid_in(file: &std::path::Path) -> u32 {
        for _ in 0..200 {
            if let Some(pid) = std::fs::read_to_string(file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the hook wrote no pid to {}", file.display());
    }

    /// Whether process `pid` is gone (or a zombie) within 2 s.
    async fn gone(pid: u32) -> bool {
        for _ in 0..200 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // After the command name in parentheses: the state; Z is a zombie.
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            if state.is_none_or(|s| s == 'Z') {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_killed_hook_takes_its_child_processes_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        // `sleep` runs as a child of the hook's shell.
        let hook =
            |file: &std::path::Path| format!("sleep 30 & echo $! > {}; wait", file.display());

        // Killed by the timeout.
        let file = dir.path().join("timeout.pid");
        let out = run_hook(&hook(&file), &Value::Null, Duration::from_millis(300)).await;
        assert!(matches!(out, Err(HookError::Timeout(_))), "{out:?}");
        let pid = pid_in(&file).await;
        assert!(
            gone(pid).await,
            "the hook's child {pid} outlived its timeout"
        );

        // Killed because the agent stops (the run is dropped).
        let file = dir.path().join("stop.pid");
        let cmd = hook(&file);
        let run =
            tokio::spawn(
                async move { run_hook(&cmd, &Value::Null, Duration::from_secs(60)).await },
            );
        let pid = pid_in(&file).await;
        run.abort();
        let _ = run.await;
        assert!(
            gone(pid).await,
            "the hook's child {pid} outlived the agent's stop"
        );
    }
}
