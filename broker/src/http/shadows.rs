//! AWS's shadow REST API, verbatim: `GET`, `POST` and `DELETE
//! /things/{thing}/shadow[?name=N]` (GetThingShadow, UpdateThingShadow,
//! DeleteThingShadow) and `GET
//! /api/things/shadow/ListNamedShadowsForThing/{thing}`.
//!
//! Each is the MQTT request it stands for, through the same dispatcher;
//! the body of the answer is the `accepted` document, or the `rejected`
//! one with its code as the status.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Json, Router};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Value};
use shade_shared::topic::{Operation, Reply, Topic};
use shade_shared::{ShadowId, ShadowName, ThingName};

use super::api::{Api, Conn};
use super::error::{json_response, ApiError};
use super::login;
use crate::router::Outbound;

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route(
            "/things/{thing}/shadow",
            get(get_shadow).post(update_shadow).delete(delete_shadow),
        )
        .route(
            "/api/things/shadow/ListNamedShadowsForThing/{thing}",
            get(list_named),
        )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ShadowQuery {
    name: Option<String>,
}

/// A query string that does not parse is AWS's 400, not axum's text.
pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// The shadow a path and `?name=` name, or AWS's 400.
pub(super) fn shadow_id(thing: &str, name: Option<&str>) -> Result<ShadowId, ApiError> {
    let thing = ThingName::new(thing)
        .map_err(|e| ApiError::bad_request(format!("Invalid thing name: {e}")))?;
    Ok(match name {
        None => ShadowId::classic(thing),
        Some(name) => ShadowId::named(
            thing,
            ShadowName::new(name)
                .map_err(|e| ApiError::bad_request(format!("Invalid shadow name: {e}")))?,
        ),
    })
}

async fn get_shadow(
    State(api): State<Api>,
    Extension(conn): Extension<Conn>,
    Path(thing): Path<String>,
    q: Result<Query<ShadowQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let id = shadow_id(&thing, q.name.as_deref())?;
    shadow_op(&api, &conn, &headers, &id, Operation::Get, Vec::new()).await
}

async fn update_shadow(
    State(api): State<Api>,
    Extension(conn): Extension<Conn>,
    Path(thing): Path<String>,
    q: Result<Query<ShadowQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let id = shadow_id(&thing, q.name.as_deref())?;
    // Who may write is known before the body is read.
    let caller = api.caller(&conn, &headers).await?;
    if !login::may(&caller.principal, id.thing.as_str(), true) {
        return Err(ApiError::forbidden());
    }
    let payload = read_body(&api, body).await?;
    answer(
        &id,
        Operation::Update,
        api.call(
            caller.client_id,
            Topic::aws_request(&id, Operation::Update),
            payload,
        )
        .await?,
    )
}

async fn delete_shadow(
    State(api): State<Api>,
    Extension(conn): Extension<Conn>,
    Path(thing): Path<String>,
    q: Result<Query<ShadowQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let id = shadow_id(&thing, q.name.as_deref())?;
    shadow_op(&api, &conn, &headers, &id, Operation::Delete, Vec::new()).await
}

/// Checks the caller may do `op` to `id`, asks the dispatcher, answers.
async fn shadow_op(
    api: &Api,
    conn: &Conn,
    headers: &HeaderMap,
    id: &ShadowId,
    op: Operation,
    payload: Vec<u8>,
) -> Result<Response, ApiError> {
    let caller = api.caller(conn, headers).await?;
    if !login::may(&caller.principal, id.thing.as_str(), op != Operation::Get) {
        return Err(ApiError::forbidden());
    }
    let messages = api
        .call(caller.client_id, Topic::aws_request(id, op), payload)
        .await?;
    answer(id, op, messages)
}

/// The `accepted` document as 200, or the `rejected` one with its code.
fn answer(id: &ShadowId, op: Operation, messages: Vec<Outbound>) -> Result<Response, ApiError> {
    let accepted = Topic::aws_reply(id, op, Reply::Accepted);
    let rejected = Topic::aws_reply(id, op, Reply::Rejected);
    for m in messages {
        if m.topic == accepted {
            return Ok(json_response(StatusCode::OK, m.payload));
        }
        if m.topic == rejected {
            let code = serde_json::from_slice::<Value>(&m.payload)
                .ok()
                .and_then(|v| v.get("code").and_then(Value::as_u64))
                .and_then(|c| u16::try_from(c).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(json_response(code, m.payload));
        }
    }
    Err(ApiError::internal("no accepted or rejected answer"))
}

/// The request body, at most `limits.max_payload_bytes` (413 beyond, as
/// AWS), within the body timeout (408 after it: a slow client).
pub(super) async fn read_body(api: &Api, body: Body) -> Result<Vec<u8>, ApiError> {
    let limit = api.limits.max_payload_bytes;
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(api.body_timeout, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "The request body did not arrive in time",
        )),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::too_large())
        }
        Ok(Err(_)) => Err(ApiError::bad_request("The request body could not be read")),
        Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PageQuery {
    next_token: Option<String>,
    page_size: Option<usize>,
}

/// Checks a `pageSize` (1 to the ops list's largest page).
pub(super) fn page_size(size: Option<usize>) -> Result<Option<usize>, ApiError> {
    match size {
        Some(n) if n == 0 || n > crate::ops::MAX_PAGE => Err(ApiError::bad_request(format!(
            "pageSize must be between 1 and {}",
            crate::ops::MAX_PAGE
        ))),
        other => Ok(other),
    }
}

/// ListNamedShadowsForThing: `{"results":[names],"nextToken":..,"timestamp":s}`.
async fn list_named(
    State(api): State<Api>,
    Extension(conn): Extension<Conn>,
    Path(thing): Path<String>,
    q: Result<Query<PageQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let id = shadow_id(&thing, None)?;
    let caller = api.caller(&conn, &headers).await?;
    if !login::may(&caller.principal, id.thing.as_str(), false) {
        return Err(ApiError::forbidden());
    }
    // Named shadows are stored under `thing/name`: a prefix of the thing
    // and a slash lists exactly them.
    let result = api
        .query(
            &caller,
            json!({"op": "list", "prefix": format!("{}/", id.thing), "after": q.next_token, "limit": page_size(q.page_size)?}),
        )
        .await?;
    let names: Vec<Value> = result
        .get("items")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("shadow").filter(|s| s.is_string()).cloned())
                .collect()
        })
        .unwrap_or_default();
    let mut out = json!({"results": names, "timestamp": shade_client::now_ms() / 1000});
    if let Some(next) = result.get("next").filter(|n| n.is_string()) {
        out["nextToken"] = next.clone();
    }
    Ok(Json(out))
}
