//! Open connections that logged in with a password or a device secret,
//! by principal tag (`d:<thing>`, `u:<name>`), so that taking the
//! credential away also closes the connections it let in.
//!
//! `shade device remove` and `device add --replace` end the device's
//! secret-authenticated connections once the change is committed; a SIGHUP
//! that removes or changes a config user ends that user's connections.
//! Connections by client certificate are not listed: their credential is
//! the certificate (see `[tls] crl`).
//!
//! The front watches a session *before* it checks the password, so a
//! change committed between the check and the watch cannot be missed: it
//! either fails the check or closes the watched connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// The registry; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Sessions(Arc<Mutex<Registry>>);

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    by_tag: HashMap<String, Vec<Watched>>,
}

#[derive(Debug)]
struct Watched {
    id: u64,
    /// Logged in (not a login still being checked, nor the other tag a
    /// name was watched under): what [`Sessions::end`] counts.
    admitted: bool,
    tx: oneshot::Sender<()>,
}

/// One watched connection. Dropping it (the connection ended) takes it off
/// the registry.
#[derive(Debug)]
pub struct SessionGuard {
    sessions: Sessions,
    tag: String,
    id: u64,
}

impl Sessions {
    // Each change is one insert or remove under the lock, so a poisoned
    // lock still holds a consistent registry.
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Watches a connection of `tag`: the receiver completes when
    /// [`Sessions::end`] is called for `tag`.
    pub fn watch(&self, tag: &str) -> (SessionGuard, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut registry = self.lock();
        let id = registry.next_id;
        registry.next_id += 1;
        registry
            .by_tag
            .entry(tag.to_owned())
            .or_default()
            .push(Watched {
                id,
                admitted: false,
                tx,
            });
        let guard = SessionGuard {
            sessions: self.clone(),
            tag: tag.to_owned(),
            id,
        };
        (guard, rx)
    }

    /// Ends every watched connection of `tag`, logins being checked
    /// included; returns how many were logged in.
    pub fn end(&self, tag: &str) -> usize {
        let ended = self.lock().by_tag.remove(tag).unwrap_or_default();
        let admitted = ended.iter().filter(|w| w.admitted).count();
        for watched in ended {
            // The connection may be ending on its own already.
            let _ = watched.tx.send(());
        }
        admitted
    }

    /// Connections watched, for tests and logs.
    pub fn len(&self) -> usize {
        self.lock().by_tag.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionGuard {
    /// The login succeeded: the connection now counts as open.
    pub fn admitted(&self) {
        let mut registry = self.sessions.lock();
        if let Some(w) = registry
            .by_tag
            .get_mut(&self.tag)
            .and_then(|list| list.iter_mut().find(|w| w.id == self.id))
        {
            w.admitted = true;
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut registry = self.sessions.lock();
        if let Some(list) = registry.by_tag.get_mut(&self.tag) {
            list.retain(|w| w.id != self.id);
            if list.is_empty() {
                registry.by_tag.remove(&self.tag);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ending_a_tag_signals_its_connections_only_and_guards_clean_up() {
        let sessions = Sessions::default();
        let (a1, mut a1_rx) = sessions.watch("d:a");
        let (a2, mut a2_rx) = sessions.watch("d:a");
        let (_a3, mut a3_rx) = sessions.watch("d:a");
        let (b, mut b_rx) = sessions.watch("d:b");
        a2.admitted();
        assert_eq!(sessions.len(), 4);
        drop(a1);
        assert_eq!(sessions.len(), 3);
        assert!(
            a1_rx.try_recv().is_err(),
            "a dropped guard is not signalled"
        );
        assert_eq!(sessions.end("d:a"), 1, "one admitted connection");
        assert!(a2_rx.try_recv().is_ok(), "d:a's open connection is told");
        assert!(a3_rx.try_recv().is_ok(), "and so is a login being checked");
        assert!(b_rx.try_recv().is_err(), "d:b is not");
        assert_eq!(sessions.len(), 1);
        drop(b);
        assert!(sessions.is_empty());
        assert_eq!(sessions.end("d:nobody"), 0);
    }
}
