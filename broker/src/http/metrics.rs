//! `GET /metrics`: every `shade_*` series ([`crate::metrics`]) in the
//! OpenMetrics text format, for Prometheus to scrape (docs/METRICS.md).
//!
//! With `[auth]`, admins and readers may read it, devices may not (403),
//! and a request without credentials gets 401, as for the fleet queries.
//! The series are fleet-wide sums and name no thing, so a reader limited
//! to a prefix sees no names beyond it.
//!
//! Also here: the route classes HTTP requests are counted under, a few
//! fixed names, so a thing name never becomes a label.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::api::{Api, Conn};
use super::error::ApiError;
use crate::identity::Principal;
use crate::metrics::CONTENT_TYPE;

pub(super) fn routes() -> Router<Api> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(
    State(api): State<Api>,
    Extension(conn): Extension<Conn>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = api.caller(&conn, &headers).await?;
    if matches!(caller.principal, Principal::Device { .. }) {
        return Err(ApiError::forbidden());
    }
    let text = api
        .metrics
        .encode()
        .map_err(|_| ApiError::internal("the metrics could not be encoded"))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// The class of a request path, the `route` label of
/// `shade_http_requests_total`: one per route of [`super::routes`], and
/// `other` for paths no route serves.
pub(super) fn route_class(path: &str) -> &'static str {
    let mut levels = path.trim_start_matches('/').split('/');
    match (levels.next(), levels.next(), levels.next(), levels.next()) {
        (Some("" | "favicon.ico"), None, _, _) => "page",
        (Some("things"), None, _, _) => "things",
        (Some("things"), Some(_), Some("shadow"), None) => "shadow",
        (Some("things"), Some(_), Some("history"), None) => "history",
        (Some("api"), Some("things"), Some("shadow"), Some("ListNamedShadowsForThing")) => {
            "named_shadows"
        }
        (Some("conflicts"), None, _, _) => "conflicts",
        (Some("count"), None, _, _) => "count",
        (Some("count"), Some("stream"), None, _) => "count_stream",
        (Some("events"), None, _, _) => "events",
        (Some("whoami"), None, _, _) => "whoami",
        (Some("metrics"), None, _, _) => "metrics",
        (Some("backup"), None, _, _) => "backup",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::route_class;

    #[test]
    fn paths_fall_into_their_route_class() {
        for (path, class) in [
            ("/", "page"),
            ("/favicon.ico", "page"),
            ("/things", "things"),
            ("/things/lamp/shadow", "shadow"),
            ("/things/lamp/history", "history"),
            (
                "/api/things/shadow/ListNamedShadowsForThing/lamp",
                "named_shadows",
            ),
            ("/conflicts", "conflicts"),
            ("/count", "count"),
            ("/count/stream", "count_stream"),
            ("/events", "events"),
            ("/whoami", "whoami"),
            ("/metrics", "metrics"),
            ("/backup", "backup"),
            ("/metrics/x", "other"),
            ("/things/lamp/shadow/x", "other"),
            ("/nope", "other"),
        ] {
            assert_eq!(route_class(path), class, "{path}");
        }
    }
}
