//! HTTP Basic authentication with MQTT's principals: a config user's name
//! and password, or a device's thing name and secret.
//!
//! A password check is argon2, tens of milliseconds of CPU on purpose,
//! and HTTP clients send their credentials with every request. A
//! successful check is therefore remembered for [`TTL`], keyed by the name
//! and a keyed hash of the password (never the password itself), with the
//! argon2 hash it matched: a remembered login counts only while that hash
//! is still the user's or device's, so a changed password, a rotated or
//! removed secret, or a user removed by a reload ends it at once.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64ct::{Base64, Encoding};
use rumqttd::protocol::Login;

use super::error::ApiError;
use crate::auth::Auth;
use crate::identity::{Principal, Role};

/// How long a checked login is remembered.
pub(crate) const TTL: Duration = Duration::from_secs(60);

/// Most remembered logins; when full, the oldest half is forgotten.
const MAX_REMEMBERED: usize = 4096;

/// The page sends this header, so a 401 shows its own form rather than
/// the browser's Basic prompt.
pub(crate) const PAGE_HEADER: &str = "x-shade-page";

#[derive(Debug, Clone)]
struct Remembered {
    principal: Principal,
    /// The argon2 hash the password matched.
    phc: String,
    at: Instant,
}

/// Logins checked recently.
#[derive(Debug, Default)]
pub(crate) struct Logins {
    remembered: Mutex<HashMap<(String, u64), Remembered>>,
    /// Keys the password hash with this process's own random key.
    hasher: RandomState,
}

/// `user:password` of a `Basic` Authorization header; `None` when there is
/// none, `Err` when it is not Basic or does not decode.
fn basic(headers: &HeaderMap) -> Result<Option<(String, String)>, ApiError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request("Authorization must be Basic base64(name:password)");
    let value = value.to_str().map_err(|_| bad())?;
    let (scheme, encoded) = value.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let decoded = Base64::decode_vec(encoded.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (name, password) = text.split_once(':').ok_or_else(bad)?;
    Ok(Some((name.to_owned(), password.to_owned())))
}

impl Logins {
    /// Who sent a request with `headers`: anonymous when authentication is
    /// off; else the principal of its Basic credentials, or 401.
    pub(crate) async fn principal(
        &self,
        auth: &Auth,
        headers: &HeaderMap,
    ) -> Result<Principal, ApiError> {
        if !auth.enabled {
            return Ok(Principal::Anonymous);
        }
        let challenge = !headers.contains_key(PAGE_HEADER);
        let Some((name, password)) = basic(headers)? else {
            return Err(ApiError::unauthorized(challenge));
        };
        let key = (name.clone(), self.hasher.hash_one(&password));
        if let Some(principal) = self.recall(auth, &key) {
            return Ok(principal);
        }
        let login = Login {
            username: name.clone(),
            password,
        };
        let principal = auth
            .authenticate(Some(&login), None)
            .await
            .map_err(|_| ApiError::unauthorized(challenge))?;
        if let Some(phc) = current_phc(auth, &principal) {
            self.remember(key, principal.clone(), phc);
        }
        Ok(principal)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u64), Remembered>> {
        self.remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A remembered login of `key`, if it is recent and its hash is still
    /// current; the principal as the config says now.
    fn recall(&self, auth: &Auth, key: &(String, u64)) -> Option<Principal> {
        let remembered = self.lock().get(key).cloned()?;
        let fresh = remembered.at.elapsed() < TTL;
        let current = current_phc(auth, &remembered.principal);
        if !fresh || current.as_deref() != Some(remembered.phc.as_str()) {
            self.lock().remove(key);
            return None;
        }
        match remembered.principal {
            Principal::User { name, .. } => {
                let users = auth.users.current();
                let user = users.get(&*name)?;
                Some(Principal::User {
                    role: user.role,
                    prefix: user.prefix.as_str().into(),
                    name,
                })
            }
            other => Some(other),
        }
    }

    fn remember(&self, key: (String, u64), principal: Principal, phc: String) {
        let mut remembered = self.lock();
        if remembered.len() >= MAX_REMEMBERED {
            let mut ages: Vec<Instant> = remembered.values().map(|r| r.at).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            remembered.retain(|_, r| r.at > cutoff);
        }
        remembered.insert(
            key,
            Remembered {
                principal,
                phc,
                at: Instant::now(),
            },
        );
    }
}

/// The argon2 hash a principal's password is checked against now.
fn current_phc(auth: &Auth, principal: &Principal) -> Option<String> {
    match principal {
        Principal::User { name, .. } => auth
            .users
            .current()
            .get(&**name)
            .map(|u| u.password_hash.clone()),
        Principal::Device { thing } => auth.devices.phc_of(thing),
        Principal::Anonymous => None,
    }
}

/// What a principal may do with a thing's shadows over HTTP, as the
/// gateway allows it over MQTT: a reader reads, an admin (within its
/// prefix) reads and writes, a device only its own thing.
pub(crate) fn may(principal: &Principal, thing: &str, write: bool) -> bool {
    if write {
        principal.may_write_thing(thing)
    } else {
        principal.may_read_thing(thing)
    }
}

/// The role names the page shows.
pub(crate) fn role_name(principal: &Principal) -> &'static str {
    match principal {
        Principal::Anonymous => "anonymous",
        Principal::User {
            role: Role::Admin, ..
        } => "admin",
        Principal::User {
            role: Role::Reader, ..
        } => "reader",
        Principal::Device { .. } => "device",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            value.parse().expect("header value"),
        );
        h
    }

    #[test]
    fn basic_credentials_decode_and_bad_ones_are_a_400() {
        let ok = basic(&headers("Basic b3BzOnMzY3JldDp3aXRoOmNvbG9ucw==")).expect("decodes");
        assert_eq!(
            ok,
            Some(("ops".to_owned(), "s3cret:with:colons".to_owned()))
        );
        assert_eq!(basic(&HeaderMap::new()).expect("none"), None);
        for bad in ["Bearer abc", "Basic !!!", "Basic", "Basic bm9jb2xvbg=="] {
            let e = basic(&headers(bad)).expect_err(bad);
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
