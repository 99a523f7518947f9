//! The running agent's local socket: `shade-agent report`, `desire` and
//! `state` reach a running `shade-agent run` through `<data>/agent.sock`,
//! since the replica's redb file can be open in one process only.
//!
//! One JSON line in, one JSON line out:
//! `{"op":"write","section":"reported","patch":{..}}` -> `{"ok":true}` once
//! the write is durable; `{"op":"state"}` -> `{"ok":true,"state":{..}}`;
//! errors -> `{"ok":false,"error":".."}`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shade_shared::{Patch, Section};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::Agent;

/// Socket file name inside the data directory.
pub const SOCKET: &str = "agent.sock";

/// Largest request line accepted: a patch bigger than this is a mistake.
const MAX_LINE: usize = 1024 * 1024;

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// A request to a running agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Write {
        section: Section,
        patch: Map<String, Value>,
    },
    State,
}

/// Its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
}

/// Errors talking to a running agent.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("no agent is running on {0}")]
    NotRunning(PathBuf),
    #[error("talking to the running agent failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the running agent sent an unreadable answer: {0}")]
    Protocol(String),
    #[error("the running agent did not answer within {0:?}")]
    Timeout(Duration),
}

/// Serves the socket until `cancel`. Replaces a stale socket file: the
/// caller holds the replica's lock, so no other agent owns this one.
pub async fn serve(
    agent: Agent,
    data_dir: &Path,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let agent = agent.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(agent, stream).await {
                            tracing::debug!(error = %e, "local client");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "local socket accept failed"),
            },
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

async fn handle(agent: Agent, stream: UnixStream) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_LINE as u64));
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response {
            ok: false,
            error: Some(format!("bad request: {e}")),
            state: None,
        },
        Ok(Request::State) => Response {
            ok: true,
            error: None,
            state: Some(agent.state_json()),
        },
        Ok(Request::Write { section, patch }) => {
            match agent.write(section, Patch::Merge(patch)).await {
                Ok(()) => Response {
                    ok: true,
                    error: None,
                    state: None,
                },
                Err(e) => Response {
                    ok: false,
                    error: Some(e.to_string()),
                    state: None,
                },
            }
        }
    };
    let mut bytes = serde_json::to_vec(&response).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

/// Sends `req` to the agent running on `data_dir`, if any.
pub async fn request(
    data_dir: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Response, LocalError> {
    let path = socket_path(data_dir);
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(_) => return Err(LocalError::NotRunning(path)),
    };
    let exchange = async {
        let (read, mut write) = stream.into_split();
        let mut bytes = serde_json::to_vec(req).map_err(|e| LocalError::Protocol(e.to_string()))?;
        bytes.push(b'\n');
        write.write_all(&bytes).await?;
        let mut line = String::new();
        BufReader::new(read.take(MAX_LINE as u64 * 16))
            .read_line(&mut line)
            .await?;
        serde_json::from_str::<Response>(&line).map_err(|e| LocalError::Protocol(e.to_string()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| LocalError::Timeout(timeout))?
}

use tokio::io::AsyncReadExt as _;
