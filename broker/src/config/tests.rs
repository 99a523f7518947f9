//! The configuration's validation: defaults, overrides, and every
//! refusal naming its key.

use super::*;

#[test]
fn defaults_listen_on_loopback_and_keep_data_in_shade_data() {
    let c = Config::load(None, &Overrides::default()).expect("defaults are valid");
    assert_eq!(c.listen.tcp, "127.0.0.1:1883".parse().expect("addr"));
    assert_eq!(c.data_dir, PathBuf::from("./shade-data"));
    assert_eq!(c.node.as_str(), "b:local");
    assert_eq!(c.limits, Limits::default());
}

#[test]
fn open_listener_needs_allow_anonymous() {
    let o = Overrides {
        listen: Some("0.0.0.0:1883".into()),
        ..Overrides::default()
    };
    let err = Config::load(None, &o).expect_err("refused");
    assert!(err.to_string().contains("--allow-anonymous"), "{err}");
    let o = Overrides {
        allow_anonymous: true,
        ..o
    };
    assert!(Config::load(None, &o).is_ok());
}

#[test]
fn errors_name_the_key() {
    let e =
        Config::from_toml("[merge]\ndesired = \"newest\"", &Overrides::default()).expect_err("bad");
    assert!(e.to_string().contains("merge.desired"), "{e}");
    let e =
        Config::from_toml("[listen]\ntcp = \"nowhere\"", &Overrides::default()).expect_err("bad");
    assert!(e.to_string().contains("listen.tcp"), "{e}");
    let e = Config::from_toml("colour = 1", &Overrides::default()).expect_err("bad");
    assert!(e.to_string().contains("colour"), "{e}");
    let e = Config::from_toml(
        "[history]\nmax_entries_per_shadow = 0",
        &Overrides::default(),
    )
    .expect_err("bad");
    assert!(
        e.to_string().contains("history.max_entries_per_shadow"),
        "{e}"
    );
    // The depth limit also bounds the stack of rendering a document.
    let e = Config::from_toml("[limits]\nmax_depth = 65", &Overrides::default()).expect_err("bad");
    assert!(e.to_string().contains("between 1 and 64"), "{e}");
    assert!(Config::from_toml("[limits]\nmax_depth = 64", &Overrides::default()).is_ok());
}

#[test]
fn auth_users_and_tls_are_checked_with_the_key_named() {
    let o = Overrides::default();
    let user = |role: &str, hash: &str| {
        format!("[[auth.users]]\nname = \"ops\"\npassword_hash = \"{hash}\"\nrole = \"{role}\"\n")
    };
    let ok = Config::from_toml(&user("reader", "$argon2id$x"), &o).expect("valid");
    assert!(ok.auth.enabled);
    assert_eq!(ok.auth.users["ops"].role, Role::Reader);
    for (text, key) in [
        (user("root", "$argon2id$x"), "auth.users.role"),
        (user("admin", "plain-text"), "auth.users.password_hash"),
        (
            "[auth]\ndevice_topics = [\"shade/{thing}/#\"]".to_owned(),
            "auth.device_topics",
        ),
        (
            "[listen]\ntls = \"127.0.0.1:8883\"".to_owned(),
            "listen.tls",
        ),
        (
            "[tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"".to_owned(),
            "tls.client_ca",
        ),
        (
            "[tls]\ncert = \"c\"\nkey = \"k\"\ncrl = \"revoked.pem\"".to_owned(),
            "tls.crl",
        ),
    ] {
        let e = Config::from_toml(&text, &o).expect_err("refused");
        assert!(e.to_string().contains(key), "{key}: {e}");
    }
    // With [auth], an open listener needs no --allow-anonymous.
    let o = Overrides {
        listen: Some("0.0.0.0:1883".into()),
        ..Overrides::default()
    };
    assert!(Config::from_toml("[auth]", &o).is_ok());
}

#[test]
fn example_config_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/broker.toml");
    let c = Config::load(Some(&path), &Overrides::default()).expect("config/broker.toml is valid");
    assert_eq!(c.listen.tcp, "127.0.0.1:1883".parse().expect("addr"));
    let defaults = HttpConfig {
        explicit: true,
        ..HttpConfig::default()
    };
    assert_eq!(c.http, defaults, "the example shows the HTTP defaults");
}

#[test]
fn http_defaults_to_loopback_8080_and_the_flag_overrides_the_file() {
    let c = Config::from_toml("", &Overrides::default()).expect("valid");
    assert_eq!(c.http.listen, DEFAULT_HTTP.parse().ok());
    assert!(!c.http.explicit, "the default may be taken without failing");
    let file = "[http]\nlisten = \"127.0.0.1:9090\"\nmax_connections = 7";
    let c = Config::from_toml(file, &Overrides::default()).expect("valid");
    assert_eq!(c.http.listen, "127.0.0.1:9090".parse().ok());
    assert!(c.http.explicit);
    assert_eq!(c.http.max_connections, 7);
    let off = Overrides {
        http: Some("off".into()),
        ..Overrides::default()
    };
    assert_eq!(
        Config::from_toml(file, &off).expect("valid").http.listen,
        None
    );
    let c = Config::from_toml("[http]\nlisten = \"off\"", &Overrides::default()).expect("valid");
    assert_eq!(c.http.listen, None);
}

#[test]
fn http_refuses_bad_addresses_zero_sizes_https_without_tls_and_open_addresses_without_auth() {
    let refused = |text: &str, o: &Overrides, key: &str| {
        let e = Config::from_toml(text, o).expect_err(text);
        assert!(e.to_string().contains(key), "{text}: {e}");
    };
    let none = Overrides::default();
    refused("[http]\nlisten = \"nowhere\"", &none, "http.listen");
    refused("[http]\nmax_connections = 0", &none, "http.max_connections");
    refused(
        "[http]\nheader_timeout_ms = 0",
        &none,
        "http.header_timeout_ms",
    );
    refused("[http]\nevents_buffer = 0", &none, "http.events_buffer");
    refused("[http]\ntls = true", &none, "http.tls");
    refused("[http]\ncolour = 1", &none, "colour");
    let open = Overrides {
        http: Some("0.0.0.0:8080".into()),
        ..Overrides::default()
    };
    refused("", &open, "--allow-anonymous");
    assert!(Config::from_toml("[auth]", &open).is_ok());
    let bad = Overrides {
        http: Some("eighty".into()),
        ..Overrides::default()
    };
    refused("", &bad, "--http");
}
