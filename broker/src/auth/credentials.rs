//! Device secrets and password hashes: what a connecting client's secret is
//! checked against.
//!
//! A device connects with its thing name as the MQTT user name and a secret
//! that `shade device add` generated (256 bits from the OS RNG) and printed
//! once. The broker keeps only an argon2id PHC string of it, in the
//! `devices` table of its redb ([`crate::store`]); at start `shade serve`
//! loads them all into a [`Credentials`], which the store thread keeps in
//! step with every committed `device-add` and `device-remove`
//! ([`crate::ops::devices`]) and the network listener reads.
//!
//! Human passwords (config users) are hashed with argon2's default, strong
//! parameters instead ([`hash_password`]); both verify with [`verify_phc`],
//! which reads the parameters from the PHC string itself.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use base64ct::{Base64UrlUnpadded, Encoding};

use crate::auth::sessions::Sessions;
use crate::identity::device_tag;

/// Bytes of a device secret: 256 bits.
pub(crate) const SECRET_BYTES: usize = 32;

/// argon2id parameters of device secrets: 256 KiB, one pass, one lane.
///
/// Light on purpose. A device secret is 256 random bits, so no amount of
/// stretching makes guessing it any harder: the hash is only there so that
/// a leaked database does not hand out usable secrets, which any salted
/// one-way function achieves. What the cost does buy is CPU time at the
/// worst moment: after a broker restart every device reconnects at once,
/// and with argon2's default (19 MiB, 2 passes: 28 ms a verify on this
/// project's 2-core machine) a storm of 10,000 devices would cost over four
/// minutes of CPU before the last one is admitted. Measured on that
/// machine, release build: one verify with these parameters takes 0.14 ms
/// (1 MiB would take 0.5 ms), so 10,000 reconnects cost about 1.4 s of CPU.
/// The parameters are written into each PHC string, so changing them later
/// only affects secrets hashed afterwards.
const DEVICE_M_KIB: u32 = 256;
const DEVICE_T: u32 = 1;
const DEVICE_P: u32 = 1;

/// Errors of making secrets and hashes.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("cannot hash: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("cannot hash: invalid argon2 parameters: {0}")]
    Params(argon2::Error),
    #[error("the password is empty")]
    EmptyPassword,
}

/// A fresh device secret: 32 bytes from the OS RNG as base64url without
/// padding (43 characters, safe in shells, URLs and MQTT passwords).
pub(crate) fn new_device_secret() -> Result<String, CredentialsError> {
    // A secret starting with `-` reads as an option to many command lines
    // (`--password -Nx...`), so draw again until it does not: one draw in
    // 32 starts with `-`, and the secret keeps its 256 random bits.
    loop {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(CredentialsError::Random)?;
        let secret = Base64UrlUnpadded::encode_string(&bytes);
        if !secret.starts_with('-') {
            return Ok(secret);
        }
    }
}

/// The argon2id PHC string of a device secret, with a random salt and the
/// light parameters explained at `DEVICE_M_KIB`.
pub fn hash_device_secret(secret: &str) -> Result<String, CredentialsError> {
    let params =
        Params::new(DEVICE_M_KIB, DEVICE_T, DEVICE_P, None).map_err(CredentialsError::Params)?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let hash = argon2
        .hash_password(secret.as_bytes())
        .map_err(CredentialsError::Hash)?;
    Ok(hash.to_string())
}

/// The argon2id PHC string of a human's password, with argon2's default
/// (strong) parameters: people pick guessable passwords, so here the cost
/// of each guess matters. Empty passwords are refused.
pub(crate) fn hash_password(password: &str) -> Result<String, CredentialsError> {
    if password.is_empty() {
        return Err(CredentialsError::EmptyPassword);
    }
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(CredentialsError::Hash)?;
    Ok(hash.to_string())
}

/// Is `phc` a PHC string argon2 can verify against? For refusing a
/// malformed hash when it is stored, instead of when a device connects.
pub(crate) fn is_valid_phc(phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Algorithm::try_from(h.algorithm.as_str()).is_ok()
            && Params::try_from(&h).is_ok()
            && h.hash.is_some()
    })
}

/// Does `secret` match the PHC string `phc`? The parameters come from the
/// string; the comparison is constant-time. A malformed PHC string is
/// `false` with a warning: it means a damaged record or a config typo, and
/// it must not lock anyone in.
pub fn verify_phc(phc: &str, secret: &str) -> bool {
    let hash = match PasswordHash::new(phc) {
        Ok(hash) => hash,
        Err(e) => {
            tracing::warn!(error = %e, "a stored password hash is not a valid PHC string; refusing");
            return false;
        }
    };
    match Argon2::default().verify_password(secret.as_bytes(), &hash) {
        Ok(()) => true,
        Err(argon2::password_hash::Error::PasswordInvalid) => false,
        Err(e) => {
            tracing::warn!(error = %e, "a stored password hash cannot be verified; refusing");
            false
        }
    }
}

/// A change of one device's credential, applied to [`Credentials`] by the
/// store thread once the transaction that made it has committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChange {
    /// The device was added, or given a new secret.
    Set {
        thing: String,
        phc: String,
    },
    Removed {
        thing: String,
    },
}

/// The PHC strings of every device, by thing name, shared between the
/// store thread (the only writer, after each commit) and the network
/// listener (readers). Cloning shares the same map.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Values are `Arc<str>` so that a verify copies a pointer out and
    /// releases the lock before the (comparatively slow) hashing.
    devices: Arc<RwLock<HashMap<String, Arc<str>>>>,
    /// Connections let in by a secret, which a change of it closes.
    sessions: Sessions,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hashes are not secrets, but logs have no use for them.
        f.debug_struct("Credentials")
            .field("devices", &self.len())
            .finish()
    }
}

impl Credentials {
    /// An empty set: no device can log in with a secret.
    pub fn new() -> Self {
        Self::default()
    }

    /// The credentials of `devices`, pairs of thing name and PHC string.
    pub fn from_devices(devices: impl IntoIterator<Item = (String, String)>) -> Self {
        let map = devices
            .into_iter()
            .map(|(thing, phc)| (thing, Arc::from(phc)))
            .collect();
        Self {
            devices: Arc::new(RwLock::new(map)),
            sessions: Sessions::default(),
        }
    }

    // A panic while holding the lock cannot leave the map half-changed (each
    // change is one insert or remove), so a poisoned lock is still usable.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<str>>> {
        self.devices.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<str>>> {
        self.devices.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Is `secret` the secret of device `thing`? False for an unknown thing.
    ///
    /// Runs argon2 (0.14 ms in a release build, see `DEVICE_M_KIB`):
    /// async code should call it inside `spawn_blocking`. An unknown thing
    /// answers at once; thing names are not secret (they are in every
    /// topic), so that timing difference reveals nothing worth hiding.
    pub fn verify_device(&self, thing: &str, secret: &str) -> bool {
        let Some(phc) = self.read().get(thing).cloned() else {
            return false;
        };
        verify_phc(&phc, secret)
    }

    /// The argon2 hash of device `thing`'s secret: what a cached login
    /// compares to tell that the secret it checked is still the one.
    pub(crate) fn phc_of(&self, thing: &str) -> Option<String> {
        self.read().get(thing).map(|phc| phc.to_string())
    }

    /// Does device `thing` have a secret?
    pub fn has_device(&self, thing: &str) -> bool {
        self.read().contains_key(thing)
    }

    /// How many devices have a secret.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets (adds or replaces) the PHC string of device `thing`.
    pub fn insert(&self, thing: String, phc: String) {
        self.write().insert(thing, Arc::from(phc));
    }

    /// Removes device `thing`; false if it had no secret.
    pub fn remove(&self, thing: &str) -> bool {
        self.write().remove(thing).is_some()
    }

    /// The open connections of users and devices that logged in with a
    /// password or a secret (shared by every clone).
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Applies a committed change, and closes the connections the old
    /// secret let in: a removed device is cut off, a replaced secret stops
    /// working at once (the device reconnects with the new one).
    pub fn apply(&self, change: DeviceChange) {
        let thing = match change {
            DeviceChange::Set { thing, phc } => {
                self.insert(thing.clone(), phc);
                thing
            }
            DeviceChange::Removed { thing } => {
                self.remove(&thing);
                thing
            }
        };
        let closed = self.sessions.end(&device_tag(&thing));
        if closed > 0 {
            tracing::info!(%thing, connections = closed, "closing the connections its old secret let in");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_secrets_are_256_random_bits_in_base64url() {
        let a = new_device_secret().expect("rng");
        let b = new_device_secret().expect("rng");
        assert_eq!(a.len(), 43, "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{a}"
        );
        assert_ne!(a, b);
        // One draw in 32 would start with `-`: a few hundred catch a regression.
        for _ in 0..500 {
            let secret = new_device_secret().expect("rng");
            assert!(!secret.starts_with('-'), "{secret} reads as an option");
        }
    }

    #[test]
    fn a_hashed_device_secret_verifies_and_a_wrong_one_does_not() {
        let secret = new_device_secret().expect("rng");
        let phc = hash_device_secret(&secret).expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{phc}");
        assert!(!phc.contains(&secret));
        assert!(verify_phc(&phc, &secret));
        assert!(!verify_phc(&phc, "not the secret"));
        assert!(!verify_phc(&phc, ""));
        // A fresh salt each time: the same secret hashes differently.
        assert_ne!(phc, hash_device_secret(&secret).expect("hash"));
    }

    #[test]
    fn a_password_hashes_with_the_default_strong_parameters() {
        let phc = hash_password("correct horse").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_phc(&phc, "correct horse"));
        assert!(!verify_phc(&phc, "correct horse "));
        assert!(matches!(
            hash_password(""),
            Err(CredentialsError::EmptyPassword)
        ));
    }

    #[test]
    fn a_malformed_phc_string_verifies_nothing_and_does_not_panic() {
        for phc in [
            "",
            "secret",
            "$argon2id$",
            "$argon2id$v=19$m=256,t=1,p=1$",
            "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$!!!",
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
            "$scrypt$ln=10,r=8,p=1$c2FsdA$aGFzaA",
        ] {
            assert!(!verify_phc(phc, "secret"), "{phc:?}");
            assert!(!is_valid_phc(phc), "{phc:?}");
        }
        let good = hash_device_secret("s").expect("hash");
        assert!(is_valid_phc(&good));
    }

    #[test]
    fn credentials_follow_inserts_and_removes_across_clones() {
        let secret = new_device_secret().expect("rng");
        let phc = hash_device_secret(&secret).expect("hash");
        let store_side = Credentials::from_devices([("lamp".to_owned(), phc.clone())]);
        let listener_side = store_side.clone();
        assert!(listener_side.verify_device("lamp", &secret));
        assert!(!listener_side.verify_device("lamp", "wrong"));
        assert!(!listener_side.verify_device("fan", &secret));
        store_side.apply(DeviceChange::Set {
            thing: "fan".into(),
            phc,
        });
        assert!(listener_side.verify_device("fan", &secret));
        assert_eq!(listener_side.len(), 2);
        store_side.apply(DeviceChange::Removed {
            thing: "lamp".into(),
        });
        assert!(!listener_side.has_device("lamp"));
        assert!(!listener_side.verify_device("lamp", &secret));
        assert_eq!(format!("{listener_side:?}"), "Credentials { devices: 1 }");
    }
}
