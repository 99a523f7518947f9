//! The HTTP API and the dashboard: AWS's shadow REST API, shade's fleet
//! queries, a Server-Sent Events stream of state changes, and a page.
//!
//! ```text
//!  curl, page --HTTP--> accept loop (limit, header timeout, TLS) --> axum routes
//!     --Call (topic, payload, answer)--> dispatcher --> store thread --> render
//!     <-- answer, after the batch's messages are published ------------------+
//! ```
//!
//! An HTTP request becomes the MQTT request it stands for (`POST
//! /things/t/shadow` is a publish on `$aws/things/t/shadow/update`) and
//! goes through the same dispatcher: the same parsing, limits, rate limit
//! and store thread, so the two APIs cannot disagree. Its answer (the
//! `accepted` or `rejected` document) comes back to the caller instead of
//! being published; the notices (`update/accepted`, `documents`, `delta`,
//! the retained state) are published as for MQTT.
//!
//! Authentication: HTTP Basic with the same principals as MQTT ([`login`]).
//! Authorization: what the principal may do to the thing, as the gateway
//! checks it for MQTT; the operator queries are checked by `crate::ops`.

mod error;

mod login;

pub(crate) mod events;

mod api;

mod shadows;

mod fleet;

mod stream;

mod counts;

mod metrics;

mod backup;

mod page;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::HttpConfig;
use crate::front::tls::ServerTls;
use crate::metrics::{Link, Metrics};
use api::Conn;
pub(crate) use api::{Answer, Api, Call};

/// The routes.
fn routes(api: Api) -> Router {
    Router::new()
        .merge(page::routes())
        .merge(shadows::routes())
        .merge(fleet::routes())
        .merge(stream::routes())
        .merge(counts::routes())
        .merge(metrics::routes())
        .merge(backup::routes())
        .fallback(error::no_such_path)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(api)
}

/// Binds the HTTP listener. `Ok(None)` when HTTP is off, or when the
/// default address is taken and nobody asked for it (a second shade on
/// the machine): then with a warning. An address that was asked for and
/// cannot be bound is an error.
pub(crate) async fn bind(config: &HttpConfig) -> std::io::Result<Option<TcpListener>> {
    let Some(addr) = config.listen else {
        return Ok(None);
    };
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if !config.explicit => {
            tracing::warn!(%addr, error = %e,
                "cannot listen on the default HTTP address; HTTP is off (choose one with --http ADDR)");
            Ok(None)
        }
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("cannot listen for HTTP on {addr}: {e}"),
        )),
    }
}

/// Serves HTTP on `listener` until `shutdown` is cancelled, at most
/// `config.max_connections` connections at a time; beyond them a new
/// connection is answered 503 and closed. With `tls`, every connection
/// first completes a TLS handshake (within the header timeout).
pub(crate) async fn serve(
    listener: TcpListener,
    api: Api,
    config: HttpConfig,
    tls: Option<Arc<ServerTls>>,
    shutdown: CancellationToken,
) {
    let metrics = api.metrics.clone();
    let router = routes(api);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut last_warned: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, usually: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if last_warned.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                tracing::warn!(
                    max_connections = config.max_connections,
                    "refusing HTTP connections beyond http.max_connections with 503"
                );
                last_warned = Some(Instant::now());
            }
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        let conn = Conn {
            peer,
            close: shutdown.child_token(),
        };
        let router = router.clone();
        let tls = tls.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _connected = metrics.connected(Link::Http);
            serve_connection(stream, conn, router, tls, config.header_timeout, metrics).await;
        });
    }
    tracing::info!("HTTP listener closed");
}

/// One connection: TLS (if any), then HTTP/1.1 with keep-alive until the
/// client closes, the header timeout passes, or `conn.close` fires.
async fn serve_connection(
    stream: TcpStream,
    conn: Conn,
    router: Router,
    tls: Option<Arc<ServerTls>>,
    header_timeout: Duration,
    metrics: Arc<Metrics>,
) {
    let _ = stream.set_nodelay(true);
    let close = conn.close.clone();
    let peer = conn.peer;
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(conn.clone());
        let route = metrics::route_class(request.uri().path());
        let answered = router.clone().oneshot(request.map(axum::body::Body::new));
        let metrics = metrics.clone();
        async move {
            let response = answered.await;
            // Counted when the head is ready: an event stream's 200 too.
            if let Ok(response) = &response {
                metrics.http(route, response.status().as_u16());
            }
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let served = match tls {
        None => {
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            run_until_closed(connection, &close).await
        }
        Some(tls) => {
            let acceptor = TlsAcceptor::from(tls.current());
            let stream = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "HTTPS handshake timed out");
                    return;
                }
            };
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            run_until_closed(connection, &close).await
        }
    };
    if let Err(e) = served {
        // Timeouts and clients that vanish mid-request end up here.
        tracing::debug!(%peer, error = %e, "HTTP connection ended");
    }
}

/// Drives `connection`; when `close` fires, lets the request in progress
/// finish (at most 2 s) and closes.
async fn run_until_closed<I, S>(
    connection: hyper::server::conn::http1::Connection<I, S>,
    close: &CancellationToken,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => served,
        () = close.cancelled() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(Duration::from_secs(2), connection).await {
                Ok(served) => served,
                Err(_) => Ok(()),
            }
        }
    }
}

/// A fixed 503 for a connection beyond the limit: written, not parsed,
/// since the request is never read.
async fn refuse_busy(mut stream: TcpStream) {
    let body = br#"{"code":503,"message":"Too many connections"}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
