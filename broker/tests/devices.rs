//! `shade device add|list|remove` and `shade hash-password` as an operator
//! runs them: the real binary, offline over a stopped broker's data and
//! online against a real `shade serve` on a free loopback port.

mod common;

use std::path::Path;

use common::{shade, shade_with_stdin, Server};
use serde_json::{json, Value};

/// A secret as `device add` prints it: 32 bytes in base64url, no padding.
fn is_secret(s: &str) -> bool {
    s.len() == 43
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The data directory of a broker that ran once and stopped.
fn stopped_broker() -> Server {
    let mut server = Server::start();
    server.stop();
    server
}

fn listed_things(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .map(|d| d["thing"].as_str().expect("thing"))
        .collect()
}

#[test]
fn offline_add_list_remove_and_the_secret_is_never_stored() {
    let server = stopped_broker();
    let data = server.data();

    let add = shade(&["device", "add", "lamp-1", "--data", data]).ok();
    let secret = add.stdout.trim_end_matches('\n');
    assert_eq!(add.stdout.lines().count(), 1, "{add:#?}");
    assert!(is_secret(secret), "{add:#?}");
    assert!(add.stderr.contains("only time"), "{add:#?}");

    let list = shade(&["device", "list", "--json", "--data", data])
        .ok()
        .json();
    assert_eq!(listed_things(&list), ["lamp-1"]);
    assert!(list[0]["created_ms"].as_u64().is_some_and(|ms| ms > 0));
    let table = shade(&["device", "list", "--data", data]).ok().stdout;
    assert!(table.starts_with("THING"), "{table}");
    assert!(table.contains("lamp-1"), "{table}");

    let db = std::fs::read(Path::new(data).join("shade.redb")).expect("read the database");
    let contains = |needle: &[u8]| db.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(secret.as_bytes()),
        "the secret is in the database"
    );
    assert!(contains(b"$argon2id$"), "no argon2 hash in the database");

    shade(&["device", "remove", "lamp-1", "--data", data]).ok();
    let list = shade(&["device", "list", "--json", "--data", data])
        .ok()
        .json();
    assert_eq!(list, json!([]));
    let empty = shade(&["device", "list", "--data", data]).ok();
    assert_eq!(empty.stdout, "");
    assert!(empty.stderr.contains("no devices"), "{empty:#?}");
}

#[test]
fn adding_a_device_twice_fails_unless_replace() {
    let server = stopped_broker();
    let data = server.data();
    let first = shade(&["device", "add", "lamp-1", "--data", data]).ok();
    shade(&["device", "add", "lamp-1", "--data", data])
        .fails_with("device lamp-1 already has a secret; add --replace to give it a new one");
    let second = shade(&[
        "device",
        "add",
        "lamp-1",
        "--replace",
        "--json",
        "--data",
        data,
    ])
    .ok()
    .json();
    assert_eq!(second["thing"], "lamp-1");
    let secret = second["secret"].as_str().expect("secret");
    assert!(is_secret(secret), "{second}");
    assert_ne!(secret, first.stdout.trim_end());
    let list = shade(&["device", "list", "--json", "--data", data])
        .ok()
        .json();
    assert_eq!(listed_things(&list), ["lamp-1"]);
}

#[test]
fn offline_device_commands_refuse_missing_data_an_unknown_device_and_a_running_broker() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope");
    let missing = missing.to_str().expect("utf-8 temp path");
    shade(&["device", "add", "lamp-1", "--data", missing]).fails_with("no shade data at");
    assert!(!Path::new(missing).exists(), "device add created {missing}");

    for args in [
        &["device", "add", "lamp-1", "--data", server.data()][..],
        &["device", "list", "--data", server.data()],
        &["device", "remove", "lamp-1", "--data", server.data()],
    ] {
        shade(args).fails_with("is in use by a running shade serve; use --broker instead");
    }

    let mut server = server;
    server.stop();
    shade(&["device", "remove", "lamp-1", "--data", server.data()])
        .fails_with("no such device: lamp-1");
}

#[test]
fn online_add_list_remove_and_devices_survive_a_restart() {
    let mut server = Server::start();
    let added = server
        .shade(&["device", "add", "lamp-1", "--json"])
        .ok()
        .json();
    assert_eq!(added["thing"], "lamp-1");
    assert!(is_secret(added["secret"].as_str().expect("secret")));
    let fan = server.shade(&["device", "add", "fan"]).ok();
    assert!(is_secret(fan.stdout.trim_end()), "{fan:#?}");
    server
        .shade(&["device", "add", "fan"])
        .fails_with("already has a secret");

    let list = server.shade(&["device", "list", "--json"]).ok().json();
    assert_eq!(listed_things(&list), ["fan", "lamp-1"]);

    server.shade(&["device", "remove", "fan"]).ok();
    server
        .shade(&["device", "remove", "fan"])
        .fails_with("no such device: fan");

    server.stop();
    server.restart();
    let list = server.shade(&["device", "list", "--json"]).ok().json();
    assert_eq!(listed_things(&list), ["lamp-1"]);
    // What the broker wrote reads the same offline.
    server.stop();
    let offline = shade(&["device", "list", "--json", "--data", server.data()])
        .ok()
        .json();
    assert_eq!(offline, list);
}

#[test]
fn invalid_thing_names_are_usage_errors() {
    for args in [
        &["device", "add", "bad/name", "--data", "d"][..],
        &["device", "remove", "no spaces"],
        &["device", "add"],
        &["device", "frobnicate"],
        &[
            "device",
            "list",
            "--data",
            "d",
            "--broker",
            "mqtt://127.0.0.1:1883",
        ],
    ] {
        let run = shade(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:#?}");
        assert!(!run.stderr.contains("panicked"), "{args:?}: {run:#?}");
    }
}

#[test]
fn hash_password_prints_an_argon2id_hash_of_the_first_line() {
    let run = shade_with_stdin(&["hash-password"], Some("correct horse\n")).ok();
    let phc = run.stdout.trim_end();
    assert_eq!(run.stdout.lines().count(), 1, "{run:#?}");
    assert!(
        phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{run:#?}"
    );
    assert!(shade_broker::verify_phc(phc, "correct horse"));
    assert!(!shade_broker::verify_phc(phc, "correct horse\n"));

    shade_with_stdin(&["hash-password"], Some("\n")).fails_with("the password is empty");
    shade_with_stdin(&["hash-password"], None).fails_with("the password is empty");
}

/// Typed on a terminal, the password is not echoed. Python's `pty` gives
/// `shade hash-password` a real terminal; the transcript must hold the
/// prompt and the hash, never the password.
#[test]
fn hash_password_on_a_terminal_does_not_echo_the_password() {
    const SCRIPT: &str = r#"
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "hash-password"])
out = b""
def read(seconds):
    global out
    end = time.time() + seconds
    while time.time() < end:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            out += chunk
read(2)
os.write(fd, b"tr0ub4dor\n")
read(10)
os.waitpid(pid, 0)
sys.stdout.write(out.decode("utf-8", "replace"))
"#;
    let run = std::process::Command::new("python3")
        .args(["-c", SCRIPT, common::SHADE])
        .output()
        .expect("python3 runs (CI installs it for the paho tests)");
    let transcript = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{run:?}");
    assert!(transcript.contains("password (not shown):"), "{transcript}");
    assert!(!transcript.contains("tr0ub4dor"), "echoed: {transcript}");
    let phc = transcript
        .split_whitespace()
        .find(|w| w.starts_with("$argon2id$"))
        .unwrap_or_else(|| panic!("no hash in {transcript}"));
    assert!(shade_broker::verify_phc(phc, "tr0ub4dor"));
}

#[test]
fn device_commands_and_hash_password_have_help_with_examples() {
    for command in [
        &["device"][..],
        &["device", "add"],
        &["device", "list"],
        &["device", "remove"],
        &["hash-password"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let run = shade(&args).ok();
        assert!(
            run.stdout.contains("Examples:"),
            "{command:?}:\n{}",
            run.stdout
        );
        assert!(
            run.stdout.contains(&format!("shade {}", command.join(" "))),
            "{command:?}:\n{}",
            run.stdout
        );
    }
    let help = shade(&["hash-password", "--help"]).ok().stdout;
    assert!(help.contains("password_hash"), "{help}");
}
