//! The `http` scenario's client: one hyper HTTP/1.1 connection
//! (`hyper::client::conn::http1`) per worker, to 127.0.0.1 only, with
//! TCP_NODELAY (as the server sets it), every step bounded in time.

use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Bound of one connect, or of one request and its whole answer.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// One keep-alive connection. Its driver task ends with it.
#[derive(Debug)]
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Conn {
    /// Connects to `127.0.0.1:port` (bounded).
    pub(crate) async fn open(port: u16) -> Result<Conn> {
        let stream = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
            .await
            .with_context(|| format!("connect to 127.0.0.1:{port}: no answer in {STEP_TIMEOUT:?}"))?
            .with_context(|| format!("connect to 127.0.0.1:{port}"))?;
        stream.set_nodelay(true).context("set TCP_NODELAY")?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1 handshake")?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let host = HeaderValue::from_str(&format!("127.0.0.1:{port}")).context("host header")?;
        Ok(Conn {
            sender,
            host,
            driver,
        })
    }

    fn request(&self, method: Method, path: &str, body: Bytes) -> Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if !body.is_empty() {
            b = b.header(CONTENT_TYPE, "application/json");
        }
        b.body(Full::new(body)).context("build a request")
    }

    /// Sends a request and waits for its head (bounded).
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>> {
        let go = async {
            self.sender.ready().await.context("the connection closed")?;
            self.sender
                .send_request(req)
                .await
                .context("send a request")
        };
        tokio::time::timeout(STEP_TIMEOUT, go)
            .await
            .with_context(|| format!("no answer within {STEP_TIMEOUT:?}"))?
    }

    /// One request and its whole answer: the status and the body (bounded).
    pub(crate) async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        let req = self.request(method, path, body)?;
        let started = tokio::time::Instant::now();
        let response = self.send(req).await?;
        let status = response.status();
        let left = STEP_TIMEOUT.saturating_sub(started.elapsed());
        let body = tokio::time::timeout(left, response.into_body().collect())
            .await
            .context("the answer's body did not arrive in time")?
            .context("read the answer's body")?
            .to_bytes();
        Ok((status, body))
    }

    /// `GET path` for a stream (`text/event-stream`): the status and the
    /// body still to read, once the head arrived (bounded).
    pub(crate) async fn stream(&mut self, path: &str) -> Result<(StatusCode, Incoming)> {
        let mut req = self.request(Method::GET, path, Bytes::new())?;
        req.headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        let response = self.send(req).await?;
        Ok((response.status(), response.into_body()))
    }
}

/// Server-Sent Events out of a body's frames: each event's bytes (the
/// lines up to the blank line that ends it; axum writes `\n` line ends).
#[derive(Debug)]
pub(crate) struct SseReader {
    body: Incoming,
    buf: Vec<u8>,
    /// Where the search for the next `\n\n` resumes.
    scanned: usize,
}

impl SseReader {
    pub(crate) fn new(body: Incoming) -> SseReader {
        SseReader {
            body,
            buf: Vec::with_capacity(16 * 1024),
            scanned: 0,
        }
    }

    /// Reads one frame and hands `each` every event it completed. `false`
    /// when the stream ended. Not bounded here: the caller races it
    /// against its stop signal (keep-alive comments come every 15 s).
    pub(crate) async fn read(&mut self, mut each: impl FnMut(&[u8])) -> Result<bool> {
        let Some(frame) = self.body.frame().await else {
            return Ok(false);
        };
        let frame = frame.context("read the event stream")?;
        let Ok(data) = frame.into_data() else {
            return Ok(true); // trailers
        };
        self.buf.extend_from_slice(&data);
        let mut start = 0;
        let mut from = self.scanned;
        while let Some(pos) = crate::client::find(&self.buf[from..], b"\n\n") {
            let end = from + pos;
            each(&self.buf[start..end]);
            start = end + 2;
            from = start;
        }
        self.buf.drain(..start);
        // The last byte may be the first `\n` of the next separator.
        self.scanned = self.buf.len().saturating_sub(1);
        Ok(true)
    }
}

/// Waits (bounded) until `port` answers HTTP at all.
pub(crate) async fn wait_listening(port: u16, within: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let probe = async {
            let mut c = Conn::open(port).await?;
            c.call(
                Method::GET,
                "/things/shade-bench-probe/shadow",
                Bytes::new(),
            )
            .await
        };
        match tokio::time::timeout(Duration::from_secs(2), probe).await {
            Ok(Ok(_)) => return Ok(()),
            _ if tokio::time::Instant::now() > deadline => {
                anyhow::bail!("shade serve did not answer HTTP on {port} within {within:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
