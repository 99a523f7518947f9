//! The AWS IoT Device Shadow JSON API: parsing requests, applying updates as
//! writes of the broker replica, rendering replies.
//!
//! Shapes, codes and messages follow AWS's documentation so that AWS device
//! SDKs and dashboards work unchanged. Full documents also carry two
//! extensions AWS clients ignore: `vv` (the broker's version vector) and
//! `conflicts` (see [`crate::document::Conflict`]).

use serde_json::{json, Map, Value};

use crate::document::{delta, Patch, Policies, Rendered, Shadow};
use crate::leaf::Section;
use crate::limits::{depth, Limits};
use crate::name::{ReplicaId, ShadowId};

/// An error reply, published on `.../rejected`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {message}")]
pub struct Rejection {
    pub code: u16,
    pub message: String,
    pub client_token: Option<String>,
}

impl Rejection {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            client_token: None,
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.client_token = token;
        self
    }

    /// 404 for a shadow that does not exist (or was deleted).
    pub fn not_found(id: &ShadowId) -> Self {
        Self::new(
            404,
            format!("No shadow exists with name: {}", id.display_name()),
        )
    }

    pub fn version_conflict() -> Self {
        Self::new(409, "Version conflict")
    }

    pub fn too_large() -> Self {
        Self::new(413, "The payload exceeds the maximum size allowed")
    }

    pub fn internal() -> Self {
        Self::new(500, "Internal service failure")
    }

    /// The `rejected` payload.
    pub fn to_json(&self, now_ms: u64) -> Value {
        let mut v =
            json!({ "code": self.code, "message": self.message, "timestamp": now_ms / 1000 });
        put_token(&mut v, self.client_token.as_deref());
        v
    }
}

/// A parsed `update` request.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateRequest {
    pub desired: Option<Patch>,
    pub reported: Option<Patch>,
    pub client_token: Option<String>,
    pub version: Option<u64>,
    /// The `state` node as sent, echoed in `update/accepted`.
    pub state: Value,
}

impl UpdateRequest {
    pub fn patch(&self, section: Section) -> Option<&Patch> {
        match section {
            Section::Desired => self.desired.as_ref(),
            Section::Reported => self.reported.as_ref(),
        }
    }
}

fn parse_object(payload: &[u8], limits: &Limits) -> Result<Map<String, Value>, Rejection> {
    if payload.len() > limits.max_payload_bytes {
        // Still echo the clientToken when one can be read: the transport
        // already bounds how large a payload can get here.
        let token = match serde_json::from_slice::<Value>(payload) {
            Ok(Value::Object(map)) => client_token(&map, limits).ok().flatten(),
            _ => None,
        };
        return Err(Rejection::too_large().with_token(token));
    }
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Rejection::bad("Invalid JSON")),
    }
}

fn client_token(map: &Map<String, Value>, limits: &Limits) -> Result<Option<String>, Rejection> {
    match map.get("clientToken") {
        None => Ok(None),
        Some(Value::String(t)) if t.len() <= limits.max_client_token_bytes => Ok(Some(t.clone())),
        Some(_) => Err(Rejection::bad("Invalid clientToken")),
    }
}

/// Parses a `get` or `delete` request: an empty payload or a JSON object
/// with an optional `clientToken`. Returns the token.
pub fn parse_get_or_delete(payload: &[u8], limits: &Limits) -> Result<Option<String>, Rejection> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let map = parse_object(payload, limits)?;
    client_token(&map, limits)
}

/// Parses an `update` request with every 400 check AWS makes, in AWS's order.
/// The error carries the clientToken when one could be read.
pub fn parse_update(payload: &[u8], limits: &Limits) -> Result<UpdateRequest, Rejection> {
    let map = parse_object(payload, limits)?;
    let token = client_token(&map, limits)?;
    let fail = |r: Rejection| r.with_token(token.clone());
    let state = match map.get("state") {
        None => return Err(fail(Rejection::bad("Missing required node: state"))),
        Some(Value::Object(s)) => s,
        Some(_) => return Err(fail(Rejection::bad("State node must be an object"))),
    };
    if let Some(bad) = state.keys().find(|k| *k != "desired" && *k != "reported") {
        return Err(fail(Rejection::bad(format!(
            "State contains an invalid node: '{bad}'"
        ))));
    }
    let mut patches = [None, None];
    for (i, section) in Section::ALL.into_iter().enumerate() {
        patches[i] = match state.get(section.as_str()) {
            None => None,
            Some(Value::Null) => Some(Patch::Clear),
            Some(v @ Value::Object(m)) => {
                if depth(v) > limits.max_depth {
                    return Err(fail(Rejection::bad(format!(
                        "JSON contains too many levels of nesting; maximum is {}",
                        limits.max_depth
                    ))));
                }
                Some(Patch::Merge(m.clone()))
            }
            Some(_) => {
                let msg = match section {
                    Section::Desired => "Desired node must be an object",
                    Section::Reported => "Reported node must be an object",
                };
                return Err(fail(Rejection::bad(msg)));
            }
        };
    }
    let version = match map.get("version") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| fail(Rejection::bad("Invalid version")))?,
        ),
    };
    let [desired, reported] = patches;
    Ok(UpdateRequest {
        desired,
        reported,
        client_token: token,
        version,
        state: Value::Object(state.clone()),
    })
}

/// What an accepted update did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The shadow as it was before, for `update/documents`.
    pub previous: Shadow,
    /// Whether any leaf changed (an update of `{}` changes nothing).
    pub changed: bool,
}

/// Applies `req` to `shadow` as a write of the broker replica `replica` at
/// wall time `now_ms`: the version check (409), the write, the document
/// size limit measured on the merged result (413), then `version + 1`.
/// On error `shadow` is left as it was.
pub fn apply_update(
    shadow: &mut Shadow,
    replica: &ReplicaId,
    req: &UpdateRequest,
    now_ms: u64,
    limits: &Limits,
) -> Result<Applied, Rejection> {
    let token = || req.client_token.clone();
    if let Some(expected) = req.version {
        if expected != shadow.version {
            return Err(Rejection::version_conflict().with_token(token()));
        }
    }
    let mut next = shadow.clone();
    let mut changed = false;
    for section in Section::ALL {
        if let Some(patch) = req.patch(section) {
            changed |= next.write(replica, section, patch, now_ms).is_some();
        }
    }
    if next.state_size() > limits.max_document_bytes {
        return Err(Rejection::too_large().with_token(token()));
    }
    next.version += 1;
    next.exists = true;
    let previous = std::mem::replace(shadow, next);
    Ok(Applied { previous, changed })
}

/// Applies an AWS `delete`: every live leaf becomes a tombstone (so agents
/// learn of it through sync), the shadow stops existing, its version lives
/// on and goes up by one. Returns the version reported in `delete/accepted`.
pub fn apply_delete(shadow: &mut Shadow, replica: &ReplicaId, now_ms: u64) -> u64 {
    for section in Section::ALL {
        shadow.write(replica, section, &Patch::Clear, now_ms);
    }
    let version = shadow.version;
    shadow.version += 1;
    shadow.exists = false;
    version
}

/// Both sections rendered under `policies`, and their delta.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub desired: Rendered,
    pub reported: Rendered,
    pub delta: Option<Value>,
}

impl View {
    pub fn of(shadow: &Shadow, policies: &Policies) -> Self {
        let desired = shadow.render(Section::Desired, policies.desired);
        let reported = shadow.render(Section::Reported, policies.reported);
        let delta = delta(&desired.state, &reported.state);
        Self {
            desired,
            reported,
            delta,
        }
    }

    fn sections(&self, with_delta: bool) -> (Value, Value) {
        let mut state = Map::new();
        let mut metadata = Map::new();
        for (name, r) in [("desired", &self.desired), ("reported", &self.reported)] {
            if r.state.as_object().is_some_and(|m| !m.is_empty()) {
                state.insert(name.into(), r.state.clone());
                metadata.insert(name.into(), r.metadata.clone());
            }
        }
        if with_delta {
            if let Some(d) = &self.delta {
                state.insert("delta".into(), d.clone());
            }
        }
        (Value::Object(state), Value::Object(metadata))
    }
}

fn put_token(v: &mut Value, token: Option<&str>) {
    if let (Some(t), Value::Object(m)) = (token, v) {
        m.insert("clientToken".into(), Value::String(t.into()));
    }
}

/// `get/accepted`, and the retained `shade/things/.../state` payload
/// (without a clientToken): the whole document with `vv` and `conflicts`.
pub fn render_get(
    shadow: &Shadow,
    policies: &Policies,
    client_token: Option<&str>,
    now_ms: u64,
) -> Value {
    View::of(shadow, policies).into_get(shadow, client_token, now_ms)
}

impl View {
    /// The `get/accepted` shape of `shadow`, whose view this is.
    pub fn get(&self, shadow: &Shadow, client_token: Option<&str>, now_ms: u64) -> Value {
        self.clone().into_get(shadow, client_token, now_ms)
    }

    /// [`View::get`], taking the view apart instead of copying its sections.
    pub fn into_get(self, shadow: &Shadow, client_token: Option<&str>, now_ms: u64) -> Value {
        let mut state = Map::new();
        let mut metadata = Map::new();
        let mut conflicts = self.desired.conflicts;
        conflicts.extend(self.reported.conflicts);
        let sections = [
            ("desired", self.desired.state, self.desired.metadata),
            ("reported", self.reported.state, self.reported.metadata),
        ];
        for (name, s, m) in sections {
            if s.as_object().is_some_and(|o| !o.is_empty()) {
                state.insert(name.into(), s);
                metadata.insert(name.into(), m);
            }
        }
        if let Some(d) = self.delta {
            state.insert("delta".into(), d);
        }
        let mut v = json!({
            "state": Value::Object(state),
            "metadata": Value::Object(metadata),
            "version": shadow.version,
            "timestamp": now_ms / 1000,
            "vv": shadow.vv(),
            "conflicts": conflicts,
        });
        put_token(&mut v, client_token);
        v
    }

    /// The `update/delta` shape, or `None` when desired and reported agree.
    pub fn delta_notice(
        &self,
        shadow: &Shadow,
        client_token: Option<&str>,
        now_ms: u64,
    ) -> Option<Value> {
        let d = self.delta.clone()?;
        let metadata = metadata_for(&d, &self.desired.state, &self.desired.metadata);
        let mut v = json!({ "state": d, "metadata": metadata, "version": shadow.version, "timestamp": now_ms / 1000 });
        put_token(&mut v, client_token);
        Some(v)
    }

    /// One side of `update/documents`: `null` when the shadow does not exist.
    fn document_side(&self, shadow: &Shadow) -> Value {
        if !shadow.exists {
            return Value::Null;
        }
        let (state, metadata) = self.sections(false);
        json!({ "state": state, "metadata": metadata, "version": shadow.version })
    }
}

/// Metadata mirroring `state`: every leaf (and every `null`) becomes `{"timestamp": secs}`.
fn stamp(state: &Value, secs: u64) -> Value {
    match state {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), stamp(v, secs))).collect())
        }
        _ => json!({ "timestamp": secs }),
    }
}

/// `update/accepted`: the state as sent, its metadata, the new version.
pub fn render_update_accepted(req: &UpdateRequest, version: u64, now_ms: u64) -> Value {
    render_update_accepted_parts(&req.state, req.client_token.as_deref(), version, now_ms)
}

/// [`render_update_accepted`] from the request's `state` and clientToken
/// (for a renderer that holds those but not the request).
pub fn render_update_accepted_parts(
    state: &Value,
    client_token: Option<&str>,
    version: u64,
    now_ms: u64,
) -> Value {
    let secs = now_ms / 1000;
    let mut v = json!({
        "state": state,
        "metadata": stamp(state, secs),
        "version": version,
        "timestamp": secs,
    });
    put_token(&mut v, client_token);
    v
}

/// Keeps the parts of desired metadata that sit under a delta key.
fn metadata_for(delta: &Value, desired: &Value, metadata: &Value) -> Value {
    match (delta, desired, metadata) {
        (Value::Object(d), Value::Object(s), Value::Object(m)) => Value::Object(
            d.iter()
                .filter_map(|(k, dv)| {
                    let (sv, mv) = (s.get(k)?, m.get(k)?);
                    Some((k.clone(), metadata_for(dv, sv, mv)))
                })
                .collect(),
        ),
        (_, _, m) => m.clone(),
    }
}

/// `update/delta`, or `None` when desired and reported agree.
pub fn render_delta(
    shadow: &Shadow,
    policies: &Policies,
    client_token: Option<&str>,
    now_ms: u64,
) -> Option<Value> {
    View::of(shadow, policies).delta_notice(shadow, client_token, now_ms)
}

/// `update/documents`: the document before and after an accepted change.
/// `previous` is `null` when the shadow did not exist before.
pub fn render_documents(
    previous: &Shadow,
    current: &Shadow,
    policies: &Policies,
    client_token: Option<&str>,
    now_ms: u64,
) -> Value {
    let current_view = View::of(current, policies);
    documents(
        previous,
        policies,
        &current_view,
        current,
        client_token,
        now_ms,
    )
}

fn documents(
    previous: &Shadow,
    policies: &Policies,
    current_view: &View,
    current: &Shadow,
    client_token: Option<&str>,
    now_ms: u64,
) -> Value {
    let mut v = json!({
        "previous": View::of(previous, policies).document_side(previous),
        "current": current_view.document_side(current),
        "timestamp": now_ms / 1000,
    });
    put_token(&mut v, client_token);
    v
}

/// What every accepted change publishes besides its reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Notices {
    /// `update/documents`, when wanted.
    pub documents: Option<Value>,
    /// `update/delta`, when wanted and desired and reported differ.
    pub delta: Option<Value>,
    /// The retained state (the `get/accepted` shape), `None` when the
    /// shadow does not exist.
    pub state: Option<Value>,
}

/// Which of a change's notices someone can receive; the others are not
/// rendered. The state is always rendered: it is kept for later readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub documents: bool,
    pub delta: bool,
}

impl Wanted {
    pub const ALL: Wanted = Wanted {
        documents: true,
        delta: true,
    };
}

/// Renders the notices of a change from `previous` to `current`, rendering
/// `current` once for all three (rendering is most of what an update costs).
pub fn render_notices(
    previous: &Shadow,
    current: &Shadow,
    policies: &Policies,
    client_token: Option<&str>,
    now_ms: u64,
) -> Notices {
    render_wanted_notices(
        previous,
        current,
        policies,
        client_token,
        now_ms,
        Wanted::ALL,
    )
}

/// [`render_notices`], rendering only what `wanted` asks for (and the
/// state). `documents` renders `previous` as well, so skipping it halves
/// the work of a change nobody watches that way.
pub fn render_wanted_notices(
    previous: &Shadow,
    current: &Shadow,
    policies: &Policies,
    client_token: Option<&str>,
    now_ms: u64,
    wanted: Wanted,
) -> Notices {
    let view = View::of(current, policies);
    let documents = wanted
        .documents
        .then(|| documents(previous, policies, &view, current, client_token, now_ms));
    let delta = if wanted.delta {
        view.delta_notice(current, client_token, now_ms)
    } else {
        None
    };
    Notices {
        documents,
        delta,
        state: current.exists.then(|| view.into_get(current, None, now_ms)),
    }
}

/// `delete/accepted`.
pub fn render_delete_accepted(version: u64, client_token: Option<&str>, now_ms: u64) -> Value {
    let mut v = json!({ "version": version, "timestamp": now_ms / 1000 });
    put_token(&mut v, client_token);
    v
}
