//! Device credentials as operator queries: add, remove and list the devices
//! that may connect with a secret (see [`crate::auth::credentials`]).
//!
//! They travel on `shade/ops/request` like the queries of [`crate::ops`] and
//! run on the store thread inside its write transaction; the reply, and the
//! change to the shared [`Credentials`], happen only after the commit
//! ([`crate::serve::writer`]). The CLI runs the same [`execute`] over a stopped
//! broker's data. The secret itself never travels: the CLI generates it,
//! hashes it and sends only the hash.
//!
//! ```text
//! {"op":"device-add","clientToken":T,"thing":"lamp","hash":"$argon2id$...","replace":false}
//!   -> {"clientToken":T,"ok":true,"result":{"thing":"lamp","created_ms":N,"replaced":false}}
//! {"op":"device-remove","clientToken":T,"thing":"lamp"}
//!   -> {"clientToken":T,"ok":true,"result":{"thing":"lamp"}}
//! {"op":"device-list","clientToken":T,"after":null|"lamp","limit":1000}
//!   -> {"clientToken":T,"ok":true,"result":{"items":[{"thing","created_ms"}],"next":null|"<thing>"}}
//! errors -> {"clientToken":T,"ok":false,"error":"..."}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shade_shared::ThingName;

use crate::auth::credentials::{is_valid_phc, Credentials, DeviceChange};
use crate::identity::Users;
use crate::ops;
use crate::router::Outbound;
use crate::shadow::{Handled, Out};
use crate::store::{DeviceRecord, Store, StoreError, Tables};

/// Largest page of `device-list`.
pub(crate) const MAX_PAGE: usize = 1000;

/// A device query.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum DeviceQuery {
    #[serde(rename = "device-add")]
    Add {
        #[serde(rename = "clientToken")]
        client_token: String,
        thing: String,
        /// argon2 PHC string of the secret; never the secret.
        hash: String,
        /// Give an existing device a new secret instead of refusing.
        #[serde(default)]
        replace: bool,
    },
    #[serde(rename = "device-remove")]
    Remove {
        #[serde(rename = "clientToken")]
        client_token: String,
        thing: String,
    },
    #[serde(rename = "device-list")]
    List {
        #[serde(rename = "clientToken")]
        client_token: String,
        #[serde(default)]
        after: Option<String>,
        #[serde(default)]
        limit: Option<usize>,
    },
}

impl DeviceQuery {
    pub fn client_token(&self) -> &str {
        match self {
            DeviceQuery::Add { client_token, .. }
            | DeviceQuery::Remove { client_token, .. }
            | DeviceQuery::List { client_token, .. } => client_token,
        }
    }
}

/// One row of `shade device list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeviceItem {
    pub thing: String,
    pub created_ms: u64,
}

/// The `result` of a `device-list` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DevicePage {
    pub items: Vec<DeviceItem>,
    /// The thing to pass as `after` for the next page; `null` on the last.
    pub next: Option<String>,
}

/// What a query did: its `result`, and the change to apply to the shared
/// credentials once the transaction has committed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Done {
    pub result: Value,
    pub change: Option<DeviceChange>,
}

fn thing_name(thing: &str) -> Result<ThingName, String> {
    ThingName::new(thing).map_err(|e| format!("{thing:?} is not a valid thing name: {e}"))
}

/// Runs `query` inside the write transaction `t`: a store failure (which
/// fails the commit), or the query's `result` or refusal.
/// `users` are the config users, whose names a device may not take (a
/// user's password is checked first, so such a device could never log
/// in with its secret); offline they are not known, and `serve` warns of a
/// clash at start and on reload.
pub(crate) fn execute(
    t: &mut Tables<'_>,
    query: &DeviceQuery,
    users: &Users,
    now: u64,
) -> Result<Result<Done, String>, StoreError> {
    match query {
        DeviceQuery::Add {
            thing,
            hash,
            replace,
            ..
        } => {
            let thing = match thing_name(thing) {
                Ok(t) => t,
                Err(e) => return Ok(Err(e)),
            };
            if users.contains_key(thing.as_str()) {
                return Ok(Err(format!(
                    "{thing} is the name of a config user, whose password is checked first: a device of that name could never log in with its secret"
                )));
            }
            // Checked now, not when the device first connects: a bad hash
            // would lock the device out with nothing in the operator's view.
            if !is_valid_phc(hash) {
                return Ok(Err("the hash is not an argon2 PHC string".into()));
            }
            let exists = t.has_device(thing.as_str())?;
            if exists && !replace {
                return Ok(Err(format!(
                    "device {thing} already has a secret; add --replace to give it a new one"
                )));
            }
            let record = DeviceRecord {
                hash: hash.clone(),
                created_ms: now,
            };
            t.put_device(thing.as_str(), &record)?;
            Ok(Ok(Done {
                result: json!({ "thing": thing.as_str(), "created_ms": now, "replaced": exists }),
                change: Some(DeviceChange::Set {
                    thing: thing.to_string(),
                    phc: record.hash,
                }),
            }))
        }
        DeviceQuery::Remove { thing, .. } => {
            let thing = match thing_name(thing) {
                Ok(t) => t,
                Err(e) => return Ok(Err(e)),
            };
            if !t.remove_device(thing.as_str())? {
                return Ok(Err(format!("no such device: {thing}")));
            }
            Ok(Ok(Done {
                result: json!({ "thing": thing.as_str() }),
                change: Some(DeviceChange::Removed {
                    thing: thing.to_string(),
                }),
            }))
        }
        DeviceQuery::List { after, limit, .. } => {
            let limit = limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
            let (rows, more) = t.devices_page(after.as_deref(), limit)?;
            Ok(Ok(Done {
                result: list_result(rows, more),
                change: None,
            }))
        }
    }
}

/// The `result` of `device-list` for one page of rows, the same online
/// and offline.
pub(crate) fn list_result(rows: Vec<(String, DeviceRecord)>, more: bool) -> Value {
    let next = if more {
        rows.last().map(|(thing, _)| thing.clone())
    } else {
        None
    };
    let page = DevicePage {
        items: rows
            .into_iter()
            .map(|(thing, record)| DeviceItem {
                thing,
                created_ms: record.created_ms,
            })
            .collect(),
        next,
    };
    serde_json::to_value(page).unwrap_or(Value::Null)
}

/// The reply payload for a query with `client_token`.
pub(crate) fn reply(client_token: &str, result: Result<Value, String>) -> Value {
    match result {
        Ok(result) => json!({ "clientToken": client_token, "ok": true, "result": result }),
        Err(error) => json!({ "clientToken": client_token, "ok": false, "error": error }),
    }
}

/// Handles a device query from `client` on the store thread: its reply
/// goes out, and its change reaches the shared credentials, after the
/// commit; if the commit fails, the client is told so instead.
pub(crate) fn handle(
    t: &mut Tables<'_>,
    query: &DeviceQuery,
    client: &str,
    users: &Users,
    now: u64,
    h: &mut Handled,
) -> Result<(), StoreError> {
    let Some(topic) = ops::reply_topic(client, query.client_token()) else {
        tracing::warn!(
            client,
            "dropping a device query whose clientToken cannot be a topic level"
        );
        return Ok(());
    };
    let outbound = |value: Value| -> Out { Outbound::json(topic.clone(), &value).into() };
    let result = match execute(t, query, users, now)? {
        Ok(done) => {
            if let Some(change) = done.change {
                match &change {
                    DeviceChange::Set { thing, .. } => {
                        tracing::info!(client, thing, "device secret set");
                    }
                    DeviceChange::Removed { thing } => {
                        tracing::info!(client, thing, "device removed");
                    }
                }
                h.credentials.push(change);
            }
            Ok(done.result)
        }
        Err(refusal) => Err(refusal),
    };
    h.code = Some(if result.is_ok() { 200 } else { 400 });
    h.out.push(outbound(reply(query.client_token(), result)));
    h.on_failure.push(outbound(reply(
        query.client_token(),
        Err("the broker could not commit the change; nothing was changed".into()),
    )));
    Ok(())
}

/// Warns of each config user that has the name of a device with a secret:
/// the user's password is checked first, so that device cannot log in
/// with its secret. `shade device add` refuses such a name online; a
/// device added offline, or a user added later, can still meet one.
pub(crate) fn warn_of_shared_names(users: &Users, credentials: &Credentials) {
    for name in users.keys().filter(|name| credentials.has_device(name)) {
        tracing::warn!(
            name = %name,
            "a config user has the name of a device: the device cannot log in with its secret (rename one of them)"
        );
    }
}

/// The credentials of every device in `store`, loaded once at start.
pub(crate) fn load_credentials(store: &Store) -> Result<Credentials, StoreError> {
    let devices = store.devices()?;
    Ok(Credentials::from_devices(
        devices
            .into_iter()
            .map(|(thing, record)| (thing, record.hash)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_queries_are_told_apart_from_shadow_queries() {
        use crate::ops::OpsRequest;
        assert!(matches!(
            OpsRequest::parse(br#"{"op":"device-list","clientToken":"t"}"#),
            Ok(OpsRequest::Devices(DeviceQuery::List { .. }))
        ));
        assert!(matches!(
            OpsRequest::parse(br#"{"op":"list","clientToken":"t"}"#),
            Ok(OpsRequest::Query(_))
        ));
        assert!(OpsRequest::parse(b"not json").is_err());
        // A device op with a bad body is a bad device query, not a query.
        let bad = OpsRequest::parse(br#"{"op":"device-add","clientToken":"t"}"#);
        assert!(bad.is_err_and(|e| e.to_string().contains("missing field")));
        let q: DeviceQuery = serde_json::from_slice(
            br#"{"op":"device-add","clientToken":"t","thing":"lamp","hash":"h"}"#,
        )
        .expect("parses");
        assert!(matches!(q, DeviceQuery::Add { replace: false, .. }));
        let extra: Result<DeviceQuery, _> = serde_json::from_slice(
            br#"{"op":"device-remove","clientToken":"t","thing":"lamp","secret":"s"}"#,
        );
        assert!(extra.is_err());
    }

    #[test]
    fn a_list_page_names_where_the_next_one_starts() {
        let record = |ms| DeviceRecord {
            hash: "h".into(),
            created_ms: ms,
        };
        let rows = vec![("a".to_owned(), record(1)), ("b".to_owned(), record(2))];
        assert_eq!(
            list_result(rows.clone(), true),
            json!({"items": [{"thing": "a", "created_ms": 1}, {"thing": "b", "created_ms": 2}], "next": "b"})
        );
        assert_eq!(list_result(rows, false)["next"], Value::Null);
    }
}
