//! The operator command line: `shade get`, `list`, `update`, `delete`,
//! `watch`, `history` and `conflicts`.
//!
//! Online, every command is an MQTT client of a running `shade serve`:
//! `get`, `update` and `delete` speak the AWS Device Shadow API like any
//! device SDK would, `watch` subscribes to the AWS notices, and `list`,
//! `history` and `conflicts`, which AWS has no API for, use shade's native
//! query topic ([`crate::ops`]). `get`, `list`, `history` and `conflicts` can also
//! read a stopped broker's data directory (`--data DIR`) through the
//! read-only [`crate::store::ReadStore`]; they print the same JSON either way.
//!
//! Exit codes: 0 success; 1 failure, with one line naming the cause on
//! stderr ([`CliError`]); 2 a usage error (clap's, or
//! [`CliError::Usage`]: `--ca`/`--cert`/`--key` files that cannot be used).
//!
//! # Layout
//!
//! - this file: the arguments every command shares ([`BrokerArgs`],
//!   [`Source`]), [`CliError`], and [`execute`], which runs a command and
//!   turns its result into an exit code.
//! - [`client`]: one MQTT session: connect, subscribe and wait for the
//!   SUBACK, request and match the reply by its clientToken, all bounded.
//! - [`query`]: `list`, `history` and `conflicts` queries, sent to the
//!   broker's `shade/ops/request` or run over `--data` with the broker's own
//!   [`crate::ops::execute`].
//! - [`output`]: colours (terminals only), local times, tables, changes.
//! - one file per command: [`get`], [`list`], [`update`] (with `delete`),
//!   [`watch`], [`history`], [`conflicts`], [`device`] (`add`, `list`,
//!   `remove`), [`password`] (`hash-password`).

use std::future::Future;
use std::io;
use std::process::ExitCode;

pub mod args;

pub mod output;

pub mod client;

pub mod query;

pub mod backup;

pub mod export;

pub mod conflicts;

pub mod count;

pub mod device;

pub mod get;

pub mod history;

pub mod list;

pub mod password;

pub mod update;

pub mod matching;

pub mod watch;

pub use args::{now_ms, open_read_store, shadow_id, BrokerArgs, CliError, Offline, Source};

/// Runs one command on a single-threaded runtime and turns its result into
/// the exit code, printing a failure as one line on stderr.
pub fn execute(command: impl Future<Output = Result<(), CliError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shade: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`shade list | head`) is not a failure.
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(CliError::Usage(line)) => {
            eprintln!("shade: {}", line.replace(['\n', '\r'], " "));
            ExitCode::from(2)
        }
        Err(e) => {
            let line = e.to_string().replace(['\n', '\r'], " ");
            eprintln!("shade: {line}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shade_shared::{ShadowId, ThingName};

    #[test]
    fn rejections_name_the_cause_first() {
        let id = ShadowId::classic(ThingName::new("lamp").expect("valid"));
        let e = CliError::Rejected {
            id: id.clone(),
            code: 404,
            message: "No shadow exists with name: lamp".into(),
        };
        assert_eq!(
            e.to_string(),
            "no such shadow: lamp (404 No shadow exists with name: lamp)"
        );
        let e = CliError::Rejected {
            id,
            code: 409,
            message: "Version conflict".into(),
        };
        assert!(e.to_string().starts_with("version conflict: lamp"));
    }
}
