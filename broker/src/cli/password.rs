//! `shade hash-password`: the argon2id PHC string of a password read from
//! stdin, for a user's `password_hash` in the broker's config.
//!
//! The password comes from stdin, not an argument, so that it stays out of
//! the shell history and the process list; typed on a terminal, it is not
//! echoed.

use std::io::{BufRead, IsTerminal};

use clap::Args;

use super::args::CliError;
use super::output::Out;
use crate::auth::credentials::hash_password;

pub const EXAMPLES: &str = "\
Reads one line (the password) from stdin and prints its argon2id hash, for a
user of the broker's config file: password_hash = \"$argon2id$...\".
Hashing takes a moment on purpose: it makes guessing the password slow.

Examples:
  shade hash-password                        # type the password, then Enter
  printf '%s\\n' \"$PASSWORD\" | shade hash-password
  shade hash-password < password.txt";

/// Longest password line read: far above any real password, it only
/// bounds what a wrong file piped in costs.
const MAX_LINE: u64 = 4096;

#[derive(Debug, Clone, Args)]
pub struct HashPasswordArgs {}

/// The password on the first line of `input`, without its line ending.
fn read_password(input: impl BufRead) -> Result<String, CliError> {
    let mut line = String::new();
    input
        .take(MAX_LINE + 1)
        .read_line(&mut line)
        .map_err(|e| CliError::Refused(format!("cannot read the password from stdin: {e}")))?;
    if line.len() as u64 > MAX_LINE {
        return Err(CliError::Refused(format!(
            "the password line is longer than {MAX_LINE} bytes"
        )));
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    Ok(password.to_owned())
}

pub fn run(_args: HashPasswordArgs) -> Result<(), CliError> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        // The prompt goes to the terminal, echo is off while typing.
        rpassword::prompt_password("password (not shown): ")
            .map_err(|e| CliError::Refused(format!("cannot read the password: {e}")))?
    } else {
        read_password(stdin.lock())?
    };
    if password.len() as u64 > MAX_LINE {
        return Err(CliError::Refused(format!(
            "the password is longer than {MAX_LINE} bytes"
        )));
    }
    let phc = hash_password(&password)?;
    let mut out = Out::plain();
    out.line(&phc)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_the_password_without_its_ending() {
        let read = |s: &str| read_password(s.as_bytes()).expect("reads");
        assert_eq!(read("hunter2\n"), "hunter2");
        assert_eq!(read("hunter2\r\nsecond line\n"), "hunter2");
        assert_eq!(read("  spaces kept  "), "  spaces kept  ");
        assert_eq!(read(""), "");
        let long = "x".repeat(5000);
        assert!(read_password(long.as_bytes()).is_err());
    }
}
