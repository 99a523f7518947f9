//! SIGHUP: read the config file and the TLS files again while serving.
//!
//! What changes without a restart: the config users (`[[auth.users]]`:
//! added, removed, new passwords, roles, prefixes) and the TLS files
//! (`cert`, `key`, `client_ca`, `crl`: renewing the server's certificate,
//! revoking devices). Everything else (listeners, limits, `[auth]` on or
//! off, the TLS file paths...) is read at start only, and a reload that
//! finds it changed says so in the log.
//!
//! A reload is all or nothing per part: a config file that does not parse
//! or validate changes nothing, and TLS files that do not load leave the
//! previous ones in force; either is logged as an error and the service
//! keeps serving. The open connections of a user the reload removes or
//! changes (password, role, prefix) are closed; the user reconnects with
//! what the new list says.

use std::sync::Arc;

use crate::acl::user_tag;
use crate::auth::SharedUsers;
use crate::config::Config;
use crate::sessions::Sessions;
use crate::tls::ServerTls;

/// What a SIGHUP can replace, and the config it started with.
#[derive(Debug)]
pub struct Reloadable {
    pub started: Config,
    pub users: SharedUsers,
    /// The connections users logged in with, closed when their entry goes.
    pub sessions: Sessions,
    pub tls: Option<Arc<ServerTls>>,
}

/// Installs the SIGHUP handler now (before `serve` says it is ready, so a
/// SIGHUP sent after that never meets the default action, which ends the
/// process) and returns the task that serves the signals.
#[cfg(unix)]
pub fn on_hangup(reloadable: Reloadable) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let hangups = signal(SignalKind::hangup());
    let reloadable = Arc::new(reloadable);
    async move {
        let mut hangups = match hangups {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: the config and TLS files are read at start only");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            // Reading files and parsing PEM: short, but blocking.
            let r = reloadable.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || reload(&r)).await {
                tracing::error!(error = %e, "SIGHUP: the reload failed");
            }
        }
    }
}

#[cfg(not(unix))]
pub fn on_hangup(_reloadable: Reloadable) -> impl std::future::Future<Output = ()> {
    std::future::pending()
}

/// One reload; every outcome is logged.
fn reload(r: &Reloadable) {
    if let Some(path) = &r.started.source {
        match Config::load(Some(path), &r.started.overrides) {
            Ok(fresh) => apply_config(r, &fresh),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: config not reloaded, the previous settings stay in force");
                return;
            }
        }
    }
    if let Some(tls) = &r.tls {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS files reloaded"),
            Err(e) => tracing::error!(
                error = %e,
                "SIGHUP: TLS files not reloaded, the previous ones stay in force"
            ),
        }
    }
}

fn apply_config(r: &Reloadable, fresh: &Config) {
    let started = &r.started;
    if fresh.auth.enabled != started.auth.enabled {
        tracing::warn!("SIGHUP: adding or removing [auth] takes a restart; users not reloaded");
    } else {
        let before = r.users.current();
        r.users.replace(fresh.auth.users.clone());
        // After the replace: a user reconnecting at once meets the new list.
        let closed: usize = before
            .iter()
            .filter(|(name, entry)| fresh.auth.users.get(*name) != Some(*entry))
            .map(|(name, _)| r.sessions.end(&user_tag(name)))
            .sum();
        tracing::info!(
            users = fresh.auth.users.len(),
            closed_connections = closed,
            "SIGHUP: config users reloaded"
        );
    }
    if fresh.tls != started.tls {
        tracing::warn!(
            "SIGHUP: changes to the [tls] section take a restart; its files are reread from the paths the service started with"
        );
    }
    if fresh.auth.grants != started.auth.grants || fresh.listen != started.listen {
        tracing::warn!("SIGHUP: changes to listeners or device_topics take a restart");
    }
}
