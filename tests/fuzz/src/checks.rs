//! What each fuzz target does with one input, shared by the libFuzzer
//! targets (`tests/fuzz/fuzz_targets/`) and the stable-toolchain replay of
//! the saved inputs (`shared/tests/fuzz_regressions.rs`, which includes this
//! file with `#[path]`), so a saved crasher is replayed through exactly the
//! code that found it.
//!
//! Only `shade_shared`, `serde_json` and `std` may be used here: the replay
//! test is built as part of shade-shared. Every check panics on a broken
//! invariant; libFuzzer reports that as a crash.

use serde_json::{Map, Value};
use shade_shared::aws::{self, Rejection};
use shade_shared::limits::depth;
use shade_shared::sync::{SyncDown, SyncUp};
use shade_shared::topic::{self, Topic};
use shade_shared::{
    Changes, Limits, Patch, Policies, Policy, ReplicaId, Section, Shadow, VersionVector,
};

/// A fixed wall clock for every write: the model never reads the time.
const NOW_MS: u64 = 1_700_000_000_000;

fn replica(id: &str) -> ReplicaId {
    match ReplicaId::new(id) {
        Ok(r) => r,
        Err(e) => panic!("fixed replica id {id:?} is valid: {e}"),
    }
}

fn merge_patch(v: Value) -> Patch {
    match v {
        Value::Object(m) => Patch::Merge(m),
        _ => Patch::Clear,
    }
}

/// A small shadow that already holds state in both sections, a tombstone,
/// and a conflict (two replicas wrote `color` concurrently), so requests
/// and sync messages meet registers of every kind.
pub fn small_shadow() -> Shadow {
    let broker = replica("b:local");
    let agent = replica("a:lamp-1");
    let mut s = Shadow::new();
    s.write(
        &broker,
        Section::Desired,
        &merge_patch(serde_json::json!({"color": "red", "level": 1, "mode": {"eco": true}})),
        NOW_MS,
    );
    s.write(
        &broker,
        Section::Reported,
        &merge_patch(serde_json::json!({"color": "red", "gone": 1, "tags": [1, "x", null]})),
        NOW_MS,
    );
    s.write(
        &broker,
        Section::Reported,
        &merge_patch(serde_json::json!({"gone": null})),
        NOW_MS + 1,
    );
    let mut device = Shadow::new();
    device.merge(&s.changes_since(&VersionVector::new()));
    device.write(
        &agent,
        Section::Desired,
        &merge_patch(serde_json::json!({"color": "blue"})),
        NOW_MS + 2,
    );
    s.write(
        &broker,
        Section::Desired,
        &merge_patch(serde_json::json!({"color": "green"})),
        NOW_MS + 3,
    );
    s.merge(&device.changes_since(s.vv()));
    s.version = 3;
    s
}

/// The configurations each request is parsed under: the defaults, and one
/// small enough that the depth, token, payload and document limits are hit.
pub fn limit_sets() -> [Limits; 2] {
    [
        Limits::default(),
        Limits {
            max_document_bytes: 256,
            max_depth: 3,
            max_client_token_bytes: 8,
            max_payload_bytes: 512,
        },
    ]
}

/// A JSON value with every `null` removed and every object left empty by
/// that removed: what a merge patch leaves in a section that was empty.
fn pruned(value: &Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Object(m) => {
            let kept: Map<String, Value> = m
                .iter()
                .filter_map(|(k, v)| pruned(v).map(|v| (k.clone(), v)))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        other => Some(other.clone()),
    }
}

fn check_rejection(r: &Rejection, codes: &[u16], limits: &Limits) {
    assert!(codes.contains(&r.code), "unexpected rejection {r:?}");
    if let Some(t) = &r.client_token {
        assert!(t.len() <= limits.max_client_token_bytes, "token over limit");
    }
    let body = r.to_json(NOW_MS);
    assert_eq!(body["code"], serde_json::json!(r.code));
}

/// `aws_update`: the `get`/`delete` and `update` parsers under every limit
/// set; an update that parses is applied to an empty and to a small shadow
/// and every reply and notice is rendered.
pub fn aws_update(data: &[u8]) {
    for limits in limit_sets() {
        match aws::parse_get_or_delete(data, &limits) {
            Ok(token) => {
                assert!(token.is_none_or(|t| t.len() <= limits.max_client_token_bytes));
            }
            Err(r) => check_rejection(&r, &[400, 413], &limits),
        }
        let req = match aws::parse_update(data, &limits) {
            Ok(req) => req,
            Err(r) => {
                check_rejection(&r, &[400, 413], &limits);
                if r.code == 413 {
                    assert!(data.len() > limits.max_payload_bytes);
                }
                continue;
            }
        };
        assert!(data.len() <= limits.max_payload_bytes);
        assert!(req
            .client_token
            .as_ref()
            .is_none_or(|t| t.len() <= limits.max_client_token_bytes));
        for section in Section::ALL {
            if let Some(Patch::Merge(m)) = req.patch(section) {
                let d = depth(&Value::Object(m.clone()));
                assert!(d <= limits.max_depth, "depth {d} passed the limit");
            }
        }
        let _ = aws::render_update_accepted(&req, 1, NOW_MS);

        // On an empty shadow a section shows exactly the patch, less its nulls.
        let mut fresh = Shadow::new();
        let fresh_req = aws::UpdateRequest {
            version: None,
            ..req.clone()
        };
        if let Ok(applied) = apply(&mut fresh, &fresh_req, &limits) {
            assert!(!applied.previous.exists);
            for section in Section::ALL {
                let shown = fresh.render(section, Policy::Lww).state;
                let expected = match req.patch(section) {
                    Some(Patch::Merge(m)) => pruned(&Value::Object(m.clone())),
                    Some(Patch::Clear) | None => None,
                }
                .unwrap_or_else(|| Value::Object(Map::new()));
                assert_eq!(
                    shown, expected,
                    "{section:?} of an empty shadow after {req:?}"
                );
            }
        }

        let mut small = small_shadow();
        let _ = apply(&mut small, &req, &limits);
        let replica = replica("b:local");
        let deleted_version = aws::apply_delete(&mut small, &replica, NOW_MS + 20);
        assert_eq!(small.version, deleted_version + 1);
        assert!(!small.exists);
        let _ = aws::render_delete_accepted(deleted_version, req.client_token.as_deref(), NOW_MS);
        let _ = apply(&mut small, &req, &limits);
    }
}

/// Applies `req` as the broker does and renders what it publishes, checking
/// that a refused update leaves the shadow untouched.
fn apply(
    shadow: &mut Shadow,
    req: &aws::UpdateRequest,
    limits: &Limits,
) -> Result<aws::Applied, Rejection> {
    let broker = replica("b:local");
    let before = shadow.clone();
    let result = aws::apply_update(shadow, &broker, req, NOW_MS + 10, limits);
    match &result {
        Ok(applied) => {
            assert!(shadow.exists);
            assert_eq!(shadow.version, before.version + 1);
            assert!(shadow.state_size() <= limits.max_document_bytes);
            for policies in all_policies() {
                let token = req.client_token.as_deref();
                let notices =
                    aws::render_notices(&applied.previous, shadow, &policies, token, NOW_MS);
                let get = aws::render_get(shadow, &policies, None, NOW_MS);
                assert_eq!(notices.state.as_ref(), Some(&get));
                assert_eq!(
                    notices.delta,
                    aws::render_delta(shadow, &policies, token, NOW_MS)
                );
                assert_eq!(
                    notices.documents,
                    Some(aws::render_documents(
                        &applied.previous,
                        shadow,
                        &policies,
                        token,
                        NOW_MS
                    ))
                );
                let _ = aws::render_get(shadow, &policies, token, NOW_MS);
            }
        }
        Err(r) => {
            check_rejection(r, &[409, 413], limits);
            assert_eq!(*shadow, before, "a refused update changed the shadow");
            assert_eq!(shadow.version, before.version);
        }
    }
    result
}

fn all_policies() -> impl Iterator<Item = Policies> {
    let all = [Policy::Lww, Policy::BrokerWins, Policy::DeviceWins];
    all.into_iter().flat_map(move |desired| {
        all.into_iter()
            .map(move |reported| Policies { desired, reported })
    })
}

/// The document depth limit sync messages are decoded under.
const SYNC_DEPTH: usize = 8;

/// `sync_decode`: the bytes as a `SyncUp` and as a `SyncDown`. What decodes
/// must encode and decode back to itself, and merge into a shadow (twice:
/// the second merge must change nothing) that can then still be written,
/// rendered and synced onwards.
pub fn sync_decode(data: &[u8]) {
    if let Ok(up) = SyncUp::from_cbor(data, SYNC_DEPTH) {
        let again = match SyncUp::from_cbor(&up.to_cbor(), SYNC_DEPTH) {
            Ok(back) => back,
            Err(e) => panic!("a re-encoded SyncUp does not decode: {e}"),
        };
        assert_eq!(again, up, "SyncUp changed in a CBOR round trip");
        let mut broker = small_shadow();
        merge_and_use(&mut broker, &up.changes, &up.replica);
    }
    if let Ok(down) = SyncDown::from_cbor(data, SYNC_DEPTH) {
        let again = match SyncDown::from_cbor(&down.to_cbor(), SYNC_DEPTH) {
            Ok(back) => back,
            Err(e) => panic!("a re-encoded SyncDown does not decode: {e}"),
        };
        assert_eq!(again, down, "SyncDown changed in a CBOR round trip");
        for mut agent in [Shadow::new(), small_shadow()] {
            let outcome = merge_and_use(&mut agent, &down.changes, &down.replica);
            if !outcome.gap {
                agent.collect_tombstones(&down.stable);
                use_shadow(&agent);
            }
        }
    }
}

/// `changes` as an agent would receive them: through a `SyncDown`'s CBOR.
fn round_trip(changes: &Changes) -> Changes {
    let down = SyncDown {
        replica: replica("b:local"),
        version: 1,
        changes: changes.clone(),
        stable: VersionVector::new(),
    };
    match SyncDown::from_cbor(&down.to_cbor(), SYNC_DEPTH) {
        Ok(back) => back.changes,
        Err(e) => panic!("a re-encoded message does not decode: {e}"),
    }
}

fn merge_and_use(
    shadow: &mut Shadow,
    changes: &Changes,
    sender: &ReplicaId,
) -> shade_shared::MergeOutcome {
    let outcome = shadow.merge(changes);
    let after = shadow.clone();
    let second = shadow.merge(changes);
    assert!(
        second.changed.is_empty() && *shadow == after,
        "merging the same message twice changed the shadow: {second:?}"
    );
    if !outcome.gap {
        assert!(shadow.vv().dominates(&changes.vv));
    }
    use_shadow(shadow);
    // Local writes after the merge, by this replica and by the sender.
    for writer in [replica("b:local"), sender.clone()] {
        let patch = merge_patch(serde_json::json!({"color": "white", "mode": null}));
        if let Some(dot) = shadow.write(&writer, Section::Desired, &patch, NOW_MS + 30) {
            assert!(shadow.vv().covers(&dot));
        }
    }
    use_shadow(shadow);
    outcome
}

/// Renders both sections under every policy and ships the shadow to peers.
fn use_shadow(shadow: &Shadow) {
    for policy in [Policy::Lww, Policy::BrokerWins, Policy::DeviceWins] {
        for section in Section::ALL {
            let _ = shadow.render(section, policy);
        }
    }
    let _ = shadow.state_size();
    let _ = aws::render_get(shadow, &Policies::default(), None, NOW_MS);
    let all = shadow.changes_since(&VersionVector::new());
    let mut peer = Shadow::new();
    let outcome = peer.merge(&round_trip(&all));
    assert!(!outcome.gap);
    for max_paths in [1, 3] {
        let _ = shadow.changes_since_limited(&VersionVector::new(), max_paths);
    }
}

/// `topic_parse`: the bytes as a topic, as UTF-8 when they are and lossily
/// converted when not. What parses formats back byte for byte, and
/// `bad_request` answers only topics that do not parse.
pub fn topic_parse(data: &[u8]) {
    let lossy = String::from_utf8_lossy(data);
    check_topic(&lossy);
    if let Ok(text) = std::str::from_utf8(data) {
        // The same topic under each prefix, so the fuzzer need not find them.
        for prefix in [topic::AWS_PREFIX, topic::NATIVE_PREFIX] {
            check_topic(&format!("{prefix}{text}"));
        }
    }
}

fn check_topic(text: &str) {
    let parsed = Topic::parse(text);
    let bad = topic::bad_request(text);
    match parsed {
        Ok(t) => {
            let formatted = t.to_string();
            assert_eq!(formatted, text, "a parsed topic formats differently");
            assert_eq!(Topic::parse(&formatted).as_ref(), Ok(&t));
            assert_eq!(text.parse::<Topic>().as_ref(), Ok(&t));
            assert!(bad.is_none(), "bad_request answered a valid topic");
            let helper = match &t {
                Topic::AwsRequest { id, op } => Topic::aws_request(id, *op),
                Topic::AwsReply { id, op, reply } => Topic::aws_reply(id, *op, *reply),
                Topic::State { id } => Topic::state(id),
                Topic::SyncUp { id } => Topic::sync_up(id),
                Topic::SyncDown { id } => Topic::sync_down(id),
            };
            assert_eq!(helper, text);
            assert_eq!(t.is_aws(), topic::is_aws_things(text));
        }
        Err(e) => {
            let _ = e.to_string();
            if let Some(b) = bad {
                assert!(topic::is_aws_things(text));
                assert_eq!(b.reply_topic, format!("{text}/rejected"));
                assert!(b.reply_topic.len() <= usize::from(u16::MAX));
            }
        }
    }
}
