//! Authentication: who a new connection is, from its CONNECT's username
//! and password or its TLS client certificate. Authorization (what that
//! principal may do) is in [`acl`].
//!
//! - Authentication off (no `[auth]` in config): every client is
//!   [`Principal::Anonymous`], and `shade serve` only listens on loopback
//!   unless told `--allow-anonymous`.
//! - A config user: username = its name, password checked against its
//!   argon2 `password_hash`.
//! - A device: username = its thing name, password = the secret `shade
//!   device add` printed (checked against the stored argon2 hash); or a
//!   client certificate signed by the configured CA whose CN is its thing
//!   name (a username, if sent, must then be that same name).
//!
//! Argon2 costs CPU on purpose. Checks run on tokio's blocking pool, at
//! most [`MAX_CONCURRENT_CHECKS`] at a time, so a flood of wrong passwords
//! slows down logins but never the connections already serving.

pub(crate) mod acl;

pub(crate) mod sessions;

pub(crate) mod credentials;

use std::sync::Arc;

use rumqttd::protocol::Login;
use shade_shared::ThingName;
use tokio::sync::Semaphore;
use tracing::warn;

use crate::identity::{DeviceGrants, Principal, SharedUsers};
use credentials::{verify_phc, Credentials};

/// Password checks running at once (the machine has few cores; the
/// rest of the broker must keep running).
pub(crate) const MAX_CONCURRENT_CHECKS: usize = 2;

/// Why a CONNECT was refused; maps to the CONNACK return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown user or device, or a wrong secret (3.1.1 code 4, 5: 0x86).
    BadCredentials,
    /// No credentials where some are needed, or a certificate whose name
    /// contradicts the username (3.1.1 code 5, 5: 0x87).
    NotAuthorized,
}

/// Everything a listener needs to authenticate and authorize clients.
#[derive(Clone)]
pub struct Auth {
    /// `false`: every client is anonymous with full access.
    pub enabled: bool,
    pub users: SharedUsers,
    pub grants: Arc<DeviceGrants>,
    pub devices: Credentials,
    checks: Arc<Semaphore>,
}

impl std::fmt::Debug for Auth {
    /// Names users, never their hashes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("enabled", &self.enabled)
            .field("users", &self.users)
            .field("grants", &self.grants)
            .field("devices", &self.devices.len())
            .finish()
    }
}

impl Auth {
    pub fn new(
        enabled: bool,
        users: SharedUsers,
        grants: DeviceGrants,
        devices: Credentials,
    ) -> Auth {
        Auth {
            enabled,
            users,
            grants: Arc::new(grants),
            devices,
            checks: Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS)),
        }
    }

    /// Authentication off: everyone is anonymous.
    pub fn disabled() -> Auth {
        Auth::new(
            false,
            SharedUsers::default(),
            DeviceGrants::default(),
            Credentials::default(),
        )
    }

    /// Who a CONNECT with `login`, over a connection whose verified client
    /// certificate has CN `cert_cn`, is.
    pub async fn authenticate(
        &self,
        login: Option<&Login>,
        cert_cn: Option<&str>,
    ) -> Result<Principal, Refusal> {
        if !self.enabled {
            return Ok(Principal::Anonymous);
        }
        if let Some(cn) = cert_cn {
            if ThingName::new(cn).is_err() {
                warn!(
                    cn,
                    "refusing a client certificate whose CN is not a thing name"
                );
                return Err(Refusal::NotAuthorized);
            }
            return match login {
                Some(login) if !login.username.is_empty() && login.username != cn => {
                    warn!(cn, username = %login.username, "refusing a certificate for another name than the username");
                    Err(Refusal::NotAuthorized)
                }
                _ => Ok(Principal::Device { thing: cn.into() }),
            };
        }
        let Some(login) = login.filter(|l| !l.username.is_empty()) else {
            return Err(Refusal::NotAuthorized);
        };
        let name = login.username.clone();
        let secret = login.password.clone();
        let Ok(_slot) = self.checks.acquire().await else {
            return Err(Refusal::BadCredentials);
        };
        let auth = self.clone();
        let checked = tokio::task::spawn_blocking(move || auth.check_password(&name, &secret))
            .await
            .unwrap_or(Err(Refusal::BadCredentials));
        if checked.is_err() {
            warn!(username = %login.username, "refusing a login with a wrong username or password");
        }
        checked
    }

    /// The blocking part: argon2 verification of a user or device secret.
    fn check_password(&self, name: &str, secret: &str) -> Result<Principal, Refusal> {
        if let Some(user) = self.users.current().get(name) {
            return if verify_phc(&user.password_hash, secret) {
                Ok(Principal::User {
                    name: name.into(),
                    role: user.role,
                    prefix: user.prefix.as_str().into(),
                })
            } else {
                Err(Refusal::BadCredentials)
            };
        }
        if self.devices.verify_device(name, secret) {
            Ok(Principal::Device { thing: name.into() })
        } else {
            Err(Refusal::BadCredentials)
        }
    }
}
