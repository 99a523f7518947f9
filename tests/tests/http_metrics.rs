//! `GET /metrics` end to end: a real `shade serve`, real MQTT and HTTP
//! traffic, and the `shade_*` series scraped before and after, which must
//! have moved by exactly that traffic; and who may read them with `[auth]`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shade_shared::{Patch, ReplicaId, Section, Shadow, SyncUp, VersionVector};
use shade_tests::{aws, password_hash, run_shade_as, temp_data, Http, Mqtt, Server};

/// One scrape: each sample line `name{labels} value`, keyed by
/// `name{labels}` exactly as shade writes it; and the number of scrapes
/// made before it (each counts in the next one's `route="metrics"`).
#[derive(Debug)]
struct Scrape {
    samples: BTreeMap<String, f64>,
    index: u64,
}

impl Scrape {
    /// The sample's value; a series that is not there is a failure (every
    /// series of a fixed label set is written from the start, at 0).
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in the scrape: {:#?}", self.samples))
    }

    /// An open label set's sample (`shade_http_requests_total`), 0 when it
    /// was never written.
    fn get_or_zero(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }
}

/// Parses the OpenMetrics text: comments skipped, `# EOF` required last.
fn parse(text: &str, index: u64) -> Scrape {
    assert!(text.ends_with("# EOF\n"), "not a whole exposition: {text}");
    let samples = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("a sample line without a value: {line}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("{line}: the value is not a number ({e})"));
            (series.to_owned(), value)
        })
        .collect();
    Scrape { samples, index }
}

/// Scrapes one server, counting its scrapes.
struct Scraper {
    http: Http,
    made: u64,
}

impl Scraper {
    async fn scrape(&mut self) -> Scrape {
        let http = self.http.clone();
        let reply = tokio::task::spawn_blocking(move || http.get("/metrics"))
            .await
            .expect("the scrape");
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(
            reply.content_type.as_deref(),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        let text = String::from_utf8(reply.body).expect("UTF-8 metrics");
        let scrape = parse(&text, self.made);
        self.made += 1;
        scrape
    }

    /// Scrapes until `settled` holds (bounded), as a connection's end is
    /// counted only once the front's relay has let go of it.
    async fn scrape_until(&mut self, what: &str, settled: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let scrape = self.scrape().await;
            if settled(&scrape) {
                return scrape;
            }
            assert!(
                Instant::now() < deadline,
                "never {what}: {:#?}",
                scrape.samples
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

const TCP_OPEN: &str = r#"shade_connections_open{transport="tcp"}"#;
const TCP_CONNECTS: &str = r#"shade_connects_total{transport="tcp"}"#;
const TCP_DISCONNECTS: &str = r#"shade_disconnects_total{transport="tcp"}"#;

fn no_tcp_client(s: &Scrape) -> bool {
    s.get(TCP_OPEN) == 0.0 && s.get(TCP_CONNECTS) == s.get(TCP_DISCONNECTS)
}

const KINDS: [&str; 5] = ["get", "update", "delete", "sync_up", "ops"];
const CODES: [u16; 9] = [200, 400, 401, 403, 404, 409, 413, 429, 500];

/// A `sync/up` of the agent replica of client `client`, which wrote
/// desired `key = value` knowing nothing of the broker's state.
fn sync_up(client: &str, key: &str, value: Value) -> Vec<u8> {
    let replica = ReplicaId::agent(client).expect("an agent replica id");
    let mut local = Shadow::default();
    let Value::Object(patch) = json!({ key: value }) else {
        unreachable!("an object literal")
    };
    let now = now_ms();
    local
        .write(&replica, Section::Desired, &Patch::Merge(patch), now)
        .expect("a write takes a dot");
    SyncUp {
        replica,
        changes: local.changes_since(&VersionVector::default()),
    }
    .to_cbor()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Gets on one thing at once, three times its 20 a second: some are 429
/// however slowly a loaded machine sends them (as `serve_auth.rs`).
const BURST: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_exactly_the_traffic_made() {
    let (_dir, data) = temp_data();
    let server = Server::start_http(&data, &[]);
    let http = Http::new(&server.http_base());
    let mut scraper = Scraper {
        http: http.clone(),
        made: 0,
    };
    // The harness's readiness probe connected and left: wait for its end.
    let before = scraper
        .scrape_until("the probe's disconnect counted", no_tcp_client)
        .await;
    assert_eq!(before.get("shade_shadows"), 0.0);

    let mut c = Mqtt::connect(server.port(), "metrics-client").await;
    c.subscribe("$aws/things/+/shadow/#").await;
    let accepted = c
        .request(
            &aws("lamp", "update"),
            &json!({"state": {"desired": {"color": "red"}}, "clientToken": "u1"}),
        )
        .await;
    assert!(accepted.topic.ends_with("/update/accepted"), "{accepted}");
    let stale = c
        .request(
            &aws("lamp", "update"),
            &json!({"state": {"desired": {"color": "green"}}, "version": 99, "clientToken": "u2"}),
        )
        .await;
    assert_eq!(stale.json()["code"], 409, "{stale}");
    let missing = c
        .request(&aws("ghost", "get"), &json!({"clientToken": "g1"}))
        .await;
    assert_eq!(missing.json()["code"], 404, "{missing}");
    // Not JSON: the dispatcher answers 400 itself (no clientToken).
    c.publish(&aws("lamp", "update"), b"not json".to_vec())
        .await;
    let bad = c
        .wait_for("the 400 of the bad update", |m| {
            m.topic.ends_with("/update/rejected") && m.json()["code"] == 400
        })
        .await;
    assert_eq!(bad.json()["code"], 400, "{bad}");

    let (http_posted, http_missing) = {
        let http = http.clone();
        tokio::task::spawn_blocking(move || {
            let posted = http.post(
                "/things/lamp/shadow",
                &json!({"state": {"reported": {"color": "red"}}}),
            );
            let missing = http.get("/things/ghost/shadow").status;
            // An operator query (the store thread answers it) and a fleet
            // query (the dispatcher does).
            assert_eq!(http.get("/things").status, 200);
            assert_eq!(http.get("/count").status, 200);
            (posted.status, missing)
        })
        .await
        .expect("the HTTP calls")
    };
    assert_eq!((http_posted, http_missing), (200, 404));

    // A burst of gets on one thing: beyond its rate, 429s.
    for i in 0..BURST {
        c.publish_json(
            &aws("burst", "get"),
            &json!({ "clientToken": format!("b{i}") }),
        )
        .await;
    }
    let mut throttled = 0;
    for i in 0..BURST {
        let reply = c.reply(&format!("b{i}")).await.json();
        match reply["code"].as_u64() {
            Some(429) => throttled += 1,
            Some(404) => {}
            other => panic!("a get of a missing thing answered {other:?}: {reply}"),
        }
    }
    assert!(throttled > 0, "no 429 in a burst of {BURST}");

    // An agent's sync/up, written without knowing the broker's red: the
    // merge keeps both values of desired.color, one conflict record.
    let mut agent = Mqtt::connect(server.port(), "metrics-agent").await;
    agent.subscribe("shade/things/lamp/sync/down").await;
    let up = sync_up("metrics-agent", "color", json!("blue"));
    agent.publish("shade/things/lamp/sync/up", up.clone()).await;
    let down = agent
        .wait_for("the sync/down reply", |m| {
            m.topic == "shade/things/lamp/sync/down"
        })
        .await;

    drop(c);
    drop(agent);
    let after = scraper
        .scrape_until(
            "the two clients' disconnects counted, their presence recorded",
            |s| {
                // A presence batch is counted as it is sent, then goes
                // through the store: wait for the store to have done it.
                let sent = s.get("shade_presence_batches_total")
                    - before.get("shade_presence_batches_total");
                let stored =
                    s.get("shade_store_batch_size_sum") - before.get("shade_store_batch_size_sum");
                no_tcp_client(s)
                    && s.get("shade_things_connected") == 0.0
                    && stored >= 7.0 + BURST as f64 - f64::from(throttled) + sent
            },
        )
        .await;

    let delta = |series: &str| after.get(series) - before.get(series);
    let requests = |kind: &str| delta(&format!(r#"shade_requests_total{{kind="{kind}"}}"#));
    let replies = |kind: &str, code: u16| {
        delta(&format!(
            r#"shade_replies_total{{kind="{kind}",code="{code}"}}"#
        ))
    };
    let burst = BURST as f64;
    let throttled = f64::from(throttled);

    assert_eq!(requests("update"), 4.0, "u1, u2, the bad one, the POST");
    assert_eq!(
        requests("get"),
        2.0 + burst,
        "ghost over MQTT and HTTP, the burst"
    );
    assert_eq!(requests("sync_up"), 1.0);
    assert_eq!(requests("ops"), 2.0, "GET /things and GET /count");
    assert_eq!(requests("delete"), 0.0);
    let expected: BTreeMap<(&str, u16), f64> = [
        (("update", 200), 2.0),
        (("update", 409), 1.0),
        (("update", 400), 1.0),
        (("get", 404), 2.0 + burst - throttled),
        (("get", 429), throttled),
        (("sync_up", 200), 1.0),
        (("ops", 200), 2.0),
    ]
    .into();
    for kind in KINDS {
        for code in CODES {
            let want = expected.get(&(kind, code)).copied().unwrap_or(0.0);
            assert_eq!(replies(kind, code), want, "replies of {kind} with {code}");
        }
    }
    assert_eq!(delta(r#"shade_rate_limited_total{kind="get"}"#), throttled);
    assert_eq!(delta(r#"shade_rate_limited_total{kind="sync_up"}"#), 0.0);

    // Through the store thread: u1, u2, two ghost gets, the POST, the
    // list, the gets the rate let through, the sync; in however many
    // batches; and the service's own presence batches for the clients'
    // connects and disconnects (however they were gathered).
    let stored = 7.0 + burst - throttled + delta("shade_presence_batches_total");
    assert_eq!(delta("shade_store_batch_size_sum"), stored);
    let batches = delta("shade_store_batch_size_count");
    assert!((1.0..=stored).contains(&batches), "{batches} batches");
    assert_eq!(delta("shade_store_commit_seconds_count"), batches);
    assert!(delta("shade_store_commit_seconds_sum") > 0.0);
    assert_eq!(delta("shade_store_commit_failures_total"), 0.0);
    assert_eq!(after.get("shade_store_queue_depth"), 0.0);
    assert_eq!(after.get("shade_store_queue_capacity"), 8192.0);

    assert_eq!(delta("shade_sync_up_messages_total"), 1.0);
    assert_eq!(delta("shade_sync_up_bytes_total"), up.len() as f64);
    assert_eq!(delta("shade_sync_down_messages_total"), 1.0);
    assert_eq!(
        delta("shade_sync_down_bytes_total"),
        down.payload.len() as f64
    );
    assert_eq!(delta("shade_conflicts_total"), 1.0);
    assert_eq!(
        after.get("shade_shadows"),
        1.0,
        "lamp; ghost and burst do not exist"
    );

    assert_eq!(delta(TCP_CONNECTS), 2.0);
    assert_eq!(delta(TCP_DISCONNECTS), 2.0);
    for transport in ["tls", "ws", "wss"] {
        let connects = format!(r#"shade_connects_total{{transport="{transport}"}}"#);
        assert_eq!(delta(&connects), 0.0, "{transport}");
    }
    let http_requests = |route: &str, status: u16| {
        let series = format!(r#"shade_http_requests_total{{route="{route}",status="{status}"}}"#);
        after.get_or_zero(&series) - before.get_or_zero(&series)
    };
    assert_eq!(http_requests("shadow", 200), 1.0);
    assert_eq!(http_requests("shadow", 404), 1.0);
    assert_eq!(http_requests("things", 200), 1.0);
    assert_eq!(http_requests("count", 200), 1.0);
    // A scrape is counted once it is answered, so in the next one.
    let scrapes = (after.index - before.index) as f64;
    assert_eq!(http_requests("metrics", 200), scrapes);
}

const ADMIN_PASSWORD: &str = "admin-pw";
const READER_PASSWORD: &str = "reader-pw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_readers_and_admins_read_the_metrics_devices_get_403_and_strangers_401() {
    let (dir, data) = temp_data();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[auth]
[[auth.users]]
name = "admin"
password_hash = "{admin}"
role = "admin"

[[auth.users]]
name = "reader"
password_hash = "{reader}"
role = "reader"
prefix = "t1"
"#,
            admin = password_hash(ADMIN_PASSWORD),
            reader = password_hash(READER_PASSWORD),
        ),
    )
    .expect("write the config");
    let server = Server::start_http(&data, &["--config", config.to_str().expect("UTF-8")]);
    let (ok, secret, err) = run_shade_as(
        server.port(),
        "admin",
        ADMIN_PASSWORD,
        &["device", "add", "t1"],
    );
    assert!(ok, "shade device add t1: {err}");
    let base = Http::new(&server.http_base());
    tokio::task::spawn_blocking(move || {
        let none = base.get("/metrics");
        assert_eq!(none.status, 401, "{:?}", none.json());
        assert!(none.challenge.is_some(), "a 401 asks for Basic: {none:?}");
        assert_eq!(base.basic("reader", "wrong").get("/metrics").status, 401);
        let device = base.basic("t1", &secret).get("/metrics");
        assert_eq!(device.status, 403, "{:?}", device.json());
        for (name, password) in [("reader", READER_PASSWORD), ("admin", ADMIN_PASSWORD)] {
            let r = base.basic(name, password).get("/metrics");
            assert_eq!(r.status, 200, "{name}");
            let text = String::from_utf8(r.body).expect("UTF-8 metrics");
            let scrape = parse(&text, 0);
            // The device add was an ops request, answered 200.
            assert_eq!(
                scrape.get(r#"shade_replies_total{kind="ops",code="200"}"#),
                1.0,
                "{name}"
            );
            let refused =
                scrape.get_or_zero(r#"shade_http_requests_total{route="metrics",status="403"}"#);
            assert_eq!(refused, 1.0, "{name}: the device's 403 is counted");
        }
    })
    .await
    .expect("the HTTP checks");
}
