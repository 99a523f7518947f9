//! Who is who inside the broker: the ground floor every other module
//! builds on. A [`Principal`] is an authenticated identity (a config user
//! or a device); its tag (`u:<name>`, `d:<thing>`, `-` for anonymous)
//! travels inside the broker as the prefix of a connection's client id,
//! `<tag>|<client id>`, so that every stamped request names who sent it.
//! Nothing here checks a password or a topic: that is [`crate::auth`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// An authenticated identity. Users come from config; devices from the
/// secrets of `shade device add` or a client certificate's CN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Authentication is off: every client may do everything.
    Anonymous,
    User {
        name: Arc<str>,
        role: Role,
        /// Thing-name prefix the user is limited to; empty for all.
        prefix: Arc<str>,
    },
    Device {
        thing: Arc<str>,
    },
}

/// What a config user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read and write every shadow (within its prefix), run every op.
    Admin,
    /// Get and subscribe only.
    Reader,
}

/// Topic grants of devices, from config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceGrants {
    /// Filters with `{thing}` placeholders; a device may publish to and
    /// subscribe within each, with `{thing}` replaced by its own name.
    pub filters: Vec<String>,
}

/// Users by name, as the gateway and the service look them up.
pub type Users = HashMap<String, UserEntry>;

/// A config user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub password_hash: String,
    pub role: Role,
    pub prefix: String,
}

/// Resolves the stamped client id of a request into its principal, for
/// the service's own checks (ops queries).
#[derive(Debug, Clone, Default)]
pub struct Principals {
    /// Authentication on; off, everyone is anonymous whatever its id.
    pub enabled: bool,
    pub users: SharedUsers,
}

impl Principals {
    /// `None` when the id names no known principal (fail closed).
    pub fn of(&self, client_id: &str) -> Option<Principal> {
        if !self.enabled {
            return Some(Principal::Anonymous);
        }
        Principal::from_tag(principal_tag(client_id), &self.users.current())
    }
}

/// The tag of config user `name`: `u:<name>`.
pub(crate) fn user_tag(name: &str) -> String {
    format!("u:{name}")
}

/// The tag of device `thing`: `d:<thing>`.
pub(crate) fn device_tag(thing: &str) -> String {
    format!("d:{thing}")
}

/// The tag a principal carries inside the broker (client ids, stamps):
/// `u:<name>` or `d:<thing>`; `-` for anonymous. Names never contain `|`.
impl Principal {
    pub fn tag(&self) -> String {
        match self {
            Principal::Anonymous => "-".to_owned(),
            Principal::User { name, .. } => user_tag(name),
            Principal::Device { thing } => device_tag(thing),
        }
    }

    /// The principal of a tag, looking users up in `users`. `None` for a
    /// tag that names nobody (such as a user removed from the config by a
    /// reload since it connected).
    pub fn from_tag(tag: &str, users: &Users) -> Option<Principal> {
        if tag == "-" {
            return Some(Principal::Anonymous);
        }
        if let Some(thing) = tag.strip_prefix("d:") {
            return Some(Principal::Device {
                thing: thing.into(),
            });
        }
        let name = tag.strip_prefix("u:")?;
        let user = users.get(name)?;
        Some(Principal::User {
            name: name.into(),
            role: user.role,
            prefix: user.prefix.as_str().into(),
        })
    }

    /// Whether this principal may write the shadows of `thing` (AWS update
    /// and delete, the ops that change things).
    pub fn may_write_thing(&self, thing: &str) -> bool {
        match self {
            Principal::Anonymous => true,
            Principal::User { role, prefix, .. } => {
                *role == Role::Admin && thing.starts_with(&**prefix)
            }
            Principal::Device { thing: own } => **own == *thing,
        }
    }

    /// Whether this principal may read the shadows of `thing`.
    pub fn may_read_thing(&self, thing: &str) -> bool {
        match self {
            Principal::Anonymous => true,
            Principal::User { prefix, .. } => thing.starts_with(&**prefix),
            Principal::Device { thing: own } => **own == *thing,
        }
    }

    /// Admins without a prefix manage devices; nobody else does.
    pub fn is_full_admin(&self) -> bool {
        match self {
            Principal::Anonymous => true,
            Principal::User { role, prefix, .. } => *role == Role::Admin && prefix.is_empty(),
            Principal::Device { .. } => false,
        }
    }
}

/// The config users, replaced as a whole when the config is reloaded
/// (SIGHUP): a lookup sees the old list or the new one, never a mix.
/// Clones share the list.
#[derive(Clone, Default)]
pub struct SharedUsers(Arc<RwLock<Arc<Users>>>);

impl SharedUsers {
    pub fn new(users: Users) -> SharedUsers {
        SharedUsers(Arc::new(RwLock::new(Arc::new(users))))
    }

    /// The list as it is now.
    pub fn current(&self) -> Arc<Users> {
        // Writers only swap a complete list in, so a poisoned lock still
        // holds one.
        match self.0.read() {
            Ok(users) => users.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, users: Users) {
        let users = Arc::new(users);
        match self.0.write() {
            Ok(mut current) => *current = users,
            Err(poisoned) => *poisoned.into_inner() = users,
        }
    }
}

impl std::fmt::Debug for SharedUsers {
    /// Names users, never their hashes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users = self.current();
        let mut names: Vec<&String> = users.keys().collect();
        names.sort();
        f.debug_list().entries(names).finish()
    }
}

/// The principal tag in a stamped client id (`<tag>|<client id>`); `-`
/// (anonymous) when there is none, i.e. when authentication is off.
pub(crate) fn principal_tag(client_id: &str) -> &str {
    client_id.split_once('|').map_or("-", |(tag, _)| tag)
}

/// The client id a client chose, without the principal tag.
pub(crate) fn external_client_id(client_id: &str) -> &str {
    client_id.split_once('|').map_or(client_id, |(_, id)| id)
}
