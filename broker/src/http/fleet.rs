//! shade's additions to AWS's API, the queries the CLI makes: `GET
//! /things` (the list, `where=` a fleet query), `GET /count`, `GET
//! /things/{thing}/history`, `GET /conflicts`, and `GET /whoami` (who the
//! credentials are, for the page).
//!
//! Each runs the operator query of `crate::ops` as the caller, so it sees
//! what the CLI would see with the same credentials.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{Api, Conn};
use super::error::ApiError;
use super::login;
use super::shadows::{page_size, query, shadow_id};

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/things", get(list))
        .route("/things/{thing}/history", get(history))
        .route("/conflicts", get(conflicts))
        .route("/count", get(count))
        .route("/whoami", get(whoami))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    next_token: Option<String>,
    page_size: Option<usize>,
    /// A fleet query: only the shadows it matches.
    #[serde(rename = "where")]
    filter: Option<String>,
}

/// `{"results":[{"thing","shadow","version"}],"nextToken":..}`: a page of
/// the list `shade list` prints, in key order.
async fn list(
    State(api): State<Api>,
    Extension(conn): Extension<Conn>,
    q: Result<Query<ListQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let caller = api.caller(&conn, &headers).await?;
    let result = api
        .query(
            &caller,
            json!({"op": "list", "prefix": q.prefix, "after": q.next_token,
                   "limit": page_size(q.page_size)?, "where": q.filter}),
        )
        .await?;
    Ok(Json(json!({
        "results": result.get("items").cloned().unwrap_or_else(|| json!([])),
        "nextToken": result.get("next").cloned().unwrap_or(Value::Null),
    })))
}

/// The query string of `GET /count` and `GET /count/stream`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CountQuery {
    #[serde(default)]
    pub prefix: String,
    #[serde(rename = "where")]
    pub filter: Option<String>,
    pub by: Option<String>,
    pub stats: Option<String>,
}

/// `{"count":N,"by":{value:n},"stats":{"count","min","max","sum","avg"}}`
/// over the shadows the caller may read (AWS's GetStatistics, with
/// grouping).
async fn count(
    State(api): State<Api>,
    Extension(conn): Extension<Conn>,
    q: Result<Query<CountQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let caller = api.caller(&conn, &headers).await?;
    let result = api
        .query(
            &caller,
            json!({"op": "count", "prefix": q.prefix, "where": q.filter, "by": q.by, "stats": q.stats}),
        )
        .await?;
    Ok(Json(result))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    name: Option<String>,
    limit: Option<usize>,
}

/// The shadow's recent changes, oldest first (as `shade history --json`).
async fn history(
    State(api): State<Api>,
    Extension(conn): Extension<Conn>,
    Path(thing): Path<String>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let id = shadow_id(&thing, q.name.as_deref())?;
    let caller = api.caller(&conn, &headers).await?;
    if !login::may(&caller.principal, id.thing.as_str(), false) {
        return Err(ApiError::forbidden());
    }
    let shadow = id.shadow.as_ref().map(|s| s.as_str().to_owned());
    let result = api
        .query(
            &caller,
            json!({"op": "history", "thing": id.thing.as_str(), "shadow": shadow, "limit": q.limit}),
        )
        .await?;
    Ok(Json(result))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConflictsQuery {
    thing: Option<String>,
}

/// Conflict records (as `shade conflicts --json`), of one thing or all
/// the caller may read.
async fn conflicts(
    State(api): State<Api>,
    Extension(conn): Extension<Conn>,
    q: Result<Query<ConflictsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    if let Some(thing) = &q.thing {
        shadow_id(thing, None)?;
    }
    let caller = api.caller(&conn, &headers).await?;
    let result = api
        .query(&caller, json!({"op": "conflicts", "thing": q.thing}))
        .await?;
    Ok(Json(result))
}

/// `{"name","role"}` of the credentials sent: the page's login check.
async fn whoami(
    State(api): State<Api>,
    Extension(conn): Extension<Conn>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = api.caller(&conn, &headers).await?;
    let name = match &caller.principal {
        crate::identity::Principal::User { name, .. } => Value::String(name.to_string()),
        crate::identity::Principal::Device { thing } => Value::String(thing.to_string()),
        crate::identity::Principal::Anonymous => Value::Null,
    };
    Ok(Json(json!({
        "name": name,
        "role": login::role_name(&caller.principal),
        "auth": api.auth_enabled(),
    })))
}
