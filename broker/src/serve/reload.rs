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

use crate::auth::credentials::Credentials;
use crate::config::Config;
use crate::front::tls::ServerTls;
use crate::identity::user_tag;
use crate::identity::SharedUsers;

/// What a SIGHUP can replace, and the config it started with.
#[derive(Debug)]
pub(crate) struct Reloadable {
    pub started: Config,
    pub users: SharedUsers,
    /// Device secrets, to warn of a user named like a device, and the
    /// connections users logged in with, closed when their entry goes.
    pub credentials: Credentials,
    pub tls: Option<Arc<ServerTls>>,
}

/// Installs the SIGHUP handler now (before `serve` says it is ready, so a
/// SIGHUP sent after that never meets the default action, which ends the
/// process) and returns the task that serves the signals.
#[cfg(unix)]
pub(crate) fn on_hangup(reloadable: Reloadable) -> impl std::future::Future<Output = ()> {
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
        // A config that does not load changes nothing of its own; the TLS
        // files are still reread below (a CRL update must not wait on an
        // unrelated typo).
        match Config::load(Some(path), &r.started.overrides) {
            Ok(fresh) => apply_config(r, &fresh),
            Err(e) => tracing::error!(
                error = %e,
                "SIGHUP: config not reloaded, the previous users stay in force"
            ),
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
            .map(|(name, _)| r.credentials.sessions().end(&user_tag(name)))
            .sum();
        tracing::info!(
            users = fresh.auth.users.len(),
            closed_connections = closed,
            "SIGHUP: config users reloaded"
        );
        crate::ops::devices::warn_of_shared_names(&fresh.auth.users, &r.credentials);
    }
    let pending = restart_only_changes(started, fresh);
    if !pending.is_empty() {
        tracing::warn!(
            settings = %pending.join(", "),
            "SIGHUP: these settings changed but take a restart (the [tls] files are reread from the paths the service started with)"
        );
    }
}

/// The settings that differ between `started` and `fresh` and that only a
/// restart applies.
fn restart_only_changes(started: &Config, fresh: &Config) -> Vec<&'static str> {
    let changed = [
        ("node", started.node != fresh.node),
        ("data", started.data_dir != fresh.data_dir),
        (
            "allow_anonymous",
            started.allow_anonymous != fresh.allow_anonymous,
        ),
        ("[listen]", started.listen != fresh.listen),
        ("[tls] paths", started.tls != fresh.tls),
        (
            "[auth] on or off",
            started.auth.enabled != fresh.auth.enabled,
        ),
        (
            "[auth] device_topics",
            started.auth.grants != fresh.auth.grants,
        ),
        (
            "[limits]",
            started.limits != fresh.limits || started.rates != fresh.rates,
        ),
        ("[merge]", started.policies != fresh.policies),
        (
            "history",
            started.history_per_shadow != fresh.history_per_shadow,
        ),
        ("[broker]", started.broker != fresh.broker),
        ("[store]", started.store != fresh.store),
    ];
    changed
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    #[test]
    fn every_setting_a_reload_cannot_apply_is_named_when_it_changes() {
        let o = Overrides::default();
        let base = Config::from_toml("", &o).expect("defaults");
        assert!(restart_only_changes(&base, &base).is_empty());
        for (text, name) in [
            ("node = \"other\"", "node"),
            ("[limits]\nmax_payload_bytes = 100", "[limits]"),
            ("[limits]\nrequests_per_second_per_thing = 3", "[limits]"),
            ("[merge]\ndesired = \"device-wins\"", "[merge]"),
            ("[broker]\nmax_connections = 5", "[broker]"),
            ("[store]\nqueue = 3", "[store]"),
            ("[listen]\ntcp = \"127.0.0.1:1999\"", "[listen]"),
            ("[auth]", "[auth] on or off"),
        ] {
            let fresh = Config::from_toml(text, &o).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(
                restart_only_changes(&base, &fresh).contains(&name),
                "{text}: {:?}",
                restart_only_changes(&base, &fresh)
            );
        }
    }
}
