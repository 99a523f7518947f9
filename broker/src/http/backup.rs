//! `GET /backup`: an online backup, the file `shade backup --broker`
//! writes, as the response body (`curl -fu ops:pw -o shade.backup
//! http://127.0.0.1:8080/backup`).
//!
//! It speaks the backup protocol of `crate::serve::backup` through the
//! dispatcher, as the CLI does over MQTT: `backup` takes the snapshot (one
//! read transaction, off the store thread), `backup-read` gives it chunk by
//! chunk while the body is sent, `backup-end` removes it. So who may take
//! one (full admins only: it holds every device's secret hash), how many
//! may wait at once and when an abandoned one is removed are decided in
//! one place for both APIs. The body is streamed, one chunk in memory at a
//! time; a client that goes away mid-way drops the stream, which ends the
//! backup.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use base64ct::{Base64, Encoding};
use bytes::Bytes;
use serde_json::{json, Value};

use super::api::{Api, Caller, Conn};
use super::error::ApiError;

pub(super) fn routes() -> Router<Api> {
    Router::new().route("/backup", get(backup))
}

async fn backup(
    State(api): State<Api>,
    Extension(conn): Extension<Conn>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = api.caller(&conn, &headers).await?;
    let started = api
        .query(&caller, json!({ "op": "backup" }))
        .await
        .map_err(busy_is_503)?;
    let (Some(id), Some(bytes)) = (
        started.get("id").and_then(Value::as_str),
        started.get("bytes").and_then(Value::as_u64),
    ) else {
        return Err(ApiError::internal("a backup answer without id or bytes"));
    };
    let name = file_name(&started);
    let reader = Reader {
        api,
        caller,
        id: id.to_owned(),
        offset: 0,
        bytes,
    };
    let body = futures_util::stream::try_unfold(reader, |mut reader| async move {
        Ok::<_, ApiError>(reader.next().await?.map(|chunk| (chunk, reader)))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// "Try again later" is a 503, not the 400 of a query that is wrong.
fn busy_is_503(e: ApiError) -> ApiError {
    if e.message.contains("backups are waiting") {
        ApiError::unavailable(e.message)
    } else {
        e
    }
}

/// `shade-<node>-<taken ms>.backup`, from the backup's `about` (node
/// `b:local` is `local`), kept to characters a file name may hold.
fn file_name(started: &Value) -> String {
    let about = started.get("about");
    let node: String = about
        .and_then(|a| a.get("node"))
        .and_then(Value::as_str)
        .unwrap_or("shade")
        .trim_start_matches("b:")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let taken = about
        .and_then(|a| a.get("takenMs"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    format!("shade-{node}-{taken}.backup")
}

/// Reads one waiting backup chunk by chunk; ends it when dropped (read to
/// the end, failed, or the client gone).
struct Reader {
    api: Api,
    caller: Caller,
    id: String,
    offset: u64,
    bytes: u64,
}

impl Reader {
    /// The next chunk, `None` after the last.
    async fn next(&mut self) -> Result<Option<Bytes>, ApiError> {
        if self.offset >= self.bytes {
            return Ok(None);
        }
        let read = json!({ "op": "backup-read", "id": self.id, "offset": self.offset });
        let chunk = self.api.query(&self.caller, read).await?;
        let data = chunk
            .get("data")
            .and_then(Value::as_str)
            .and_then(|d| Base64::decode_vec(d).ok())
            .ok_or_else(|| ApiError::internal("a backup chunk that is not base64"))?;
        if data.is_empty() {
            // The file is shorter than announced: cut the body, so the
            // client sees it incomplete rather than a short file.
            return Err(ApiError::internal("the backup ended before its length"));
        }
        self.offset += data.len() as u64;
        Ok(Some(Bytes::from(data)))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let api = self.api.clone();
        let caller = self.caller.clone();
        let end = json!({ "op": "backup-end", "id": self.id });
        // Dropped inside the runtime (the body stream, on a connection's
        // task); a failure leaves the file to the idle timeout.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = api.query(&caller, end).await {
                    tracing::debug!(message = %e.message, "ending an HTTP backup");
                }
            });
        }
    }
}
