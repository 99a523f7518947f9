//! `GET /`: the dashboard, one HTML file built into the binary (no CDN,
//! no build step). It talks to the API like any client: `/things`,
//! `/things/{t}/shadow`, `/conflicts`, history and the `/events` stream,
//! with Basic credentials from its own login form when `[auth]` is on.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::api::Api;

const PAGE: &str = include_str!("dashboard.html");

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/", get(page))
        // Browsers ask for it on every page load; nothing to show.
        .route(
            "/favicon.ico",
            get(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything the page loads is its own.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
