//! Fleet scale, end to end: what shade delivers itself (the retained
//! `shade/things/.../state` snapshot, the service's notices through
//! `Subscriptions`) must reach every client it should, whatever the number
//! of shadows, subscribers and connections coming and going.
//!
//! All with the real `shade serve`, rumqttc clients (through the harness)
//! and, for the reconnecting fleet, the real agent library in-process: 500
//! `shade-agent` processes would cost more memory and start-up than the
//! 2-core machines these run on can spare, and the library is the same
//! sync loop the binary runs.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rumqttc::QoS;
use serde_json::{json, Value};
use shade_tests::agent::Dashboard;
use shade_tests::{aws, temp_data, Mqtt, Msg, Server};

/// Shadows the late `shade/things/#` subscribers must all get.
const SHADOWS: usize = 5_000;
/// Updates published before their replies are awaited. Well under the
/// service's `max_inflight_per_client` (1,000; beyond it: 429) and the
/// outbox of one connection (1,024 messages; beyond it: dropped).
const WINDOW: usize = 250;
/// Bound for a late subscriber to get every one of the states.
const SNAPSHOT_WITHIN: Duration = Duration::from_secs(60);
/// How long a client must stay silent once it got what it expected, to
/// catch duplicates and messages it should not get at all.
const QUIET: Duration = Duration::from_millis(700);

/// Waits (bounded by `within`) until `client` holds a retained state of
/// each of `things`, then for [`QUIET`]; returns the states by thing.
/// Panics, with counts and examples, on a missing, unexpected, repeated
/// or unretained state.
async fn collect_states(
    client: &mut Mqtt,
    things: &[String],
    within: Duration,
) -> BTreeMap<String, Value> {
    let wanted: HashSet<&str> = things.iter().map(String::as_str).collect();
    let mut got: BTreeMap<String, Value> = BTreeMap::new();
    let mut extra: Vec<String> = Vec::new();
    let deadline = Instant::now() + within;
    let mut quiet_from: Option<Instant> = None;
    loop {
        let left = match quiet_from {
            Some(t) => QUIET.saturating_sub(t.elapsed()),
            None => deadline.saturating_duration_since(Instant::now()),
        };
        let Some(msg) = client.next_within(left).await else {
            break;
        };
        let thing = msg
            .topic
            .strip_prefix("shade/things/")
            .and_then(|t| t.strip_suffix("/state"))
            .filter(|t| wanted.contains(t));
        match thing {
            Some(t) if msg.retain && !got.contains_key(t) => {
                got.insert(t.to_owned(), msg.json());
            }
            _ if extra.len() < 10 => extra.push(format!("{msg}")),
            _ => extra.push(String::new()),
        }
        if quiet_from.is_none() && got.len() == wanted.len() {
            quiet_from = Some(Instant::now());
        }
    }
    let missing: Vec<&&str> = wanted.iter().filter(|t| !got.contains_key(**t)).collect();
    assert!(
        missing.is_empty(),
        "client {}: {} of {} states missing after {within:?} (closed: {:?}); e.g. {:?}",
        client.id,
        missing.len(),
        wanted.len(),
        client.closed(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        extra.is_empty(),
        "client {}: {} messages beyond one retained state per shadow; first: {:?}",
        client.id,
        extra.len(),
        &extra[..extra.len().min(10)]
    );
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_subscribers_at_qos_0_and_1_get_every_state_of_5000_shadows() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let t0 = Instant::now();
    let things: Vec<String> = (0..SHADOWS).map(|i| format!("t{i}")).collect();
    let updates: Vec<(String, Value)> = things
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!({"reported": {"n": i}})))
        .collect();
    let mut creator = Dashboard::connect(server.port(), "fleet-creator").await;
    creator.update_many(&updates, WINDOW).await;
    let created = t0.elapsed();

    // Both subscribe before either reads, so the two snapshots (over 1 MB
    // each, in one write) are served at the same time. shade grants state
    // filters QoS 0 whatever was asked (docs/ARCHITECTURE.md: rumqttd would
    // cap a QoS 1 snapshot at its inflight window), so the QoS 1
    // subscriber is held to the count, not to the QoS of what it gets.
    let mut late0 = Mqtt::connect(server.port(), "fleet-late-qos0").await;
    let mut late1 = Mqtt::connect(server.port(), "fleet-late-qos1").await;
    late0.subscribe_qos("shade/things/#", QoS::AtMostOnce).await;
    late1
        .subscribe_qos("shade/things/#", QoS::AtLeastOnce)
        .await;
    let t1 = Instant::now();
    let (states0, states1) = tokio::join!(
        collect_states(&mut late0, &things, SNAPSHOT_WITHIN),
        collect_states(&mut late1, &things, SNAPSHOT_WITHIN),
    );
    let delivered = t1.elapsed();
    for states in [&states0, &states1] {
        for (i, thing) in things.iter().enumerate() {
            let doc = &states[thing];
            assert_eq!(doc["state"]["reported"], json!({"n": i}), "{thing}: {doc}");
            assert_eq!(doc["version"], 1, "{thing}: {doc}");
        }
    }
    eprintln!("timings: {SHADOWS} shadows created in {created:?}; both snapshots in {delivered:?}");
}

/// One notice as a test compares it: topic, the version it is about,
/// and whether it came flagged retained.
type Notice = (String, u64, bool);

/// The version a notice is about: `version` of a delta or a state,
/// `current.version` of `update/documents`.
fn notice(msg: &Msg) -> Notice {
    let v = msg.json();
    let version = v["version"]
        .as_u64()
        .or_else(|| v["current"]["version"].as_u64())
        .unwrap_or_else(|| panic!("a notice without a version: {msg}"));
    (msg.topic.clone(), version, msg.retain)
}

/// Everything `client` gets until it holds `want.len()` messages, then for
/// [`QUIET`] more (bounded by [`shade_tests::REPLY_TIMEOUT`]), sorted.
async fn notices(client: &mut Mqtt, want: &[Notice]) -> Vec<Notice> {
    let mut got = Vec::new();
    let deadline = Instant::now() + shade_tests::REPLY_TIMEOUT;
    loop {
        let left = if got.len() >= want.len() {
            QUIET
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        match client.next_within(left).await {
            Some(msg) => got.push(notice(&msg)),
            None => break,
        }
    }
    got.sort();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_reach_every_subscriber_whose_filter_matches_and_no_other() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let port = server.port();
    let delta = aws("lamp", "update/delta");
    let documents = aws("lamp", "update/documents");
    let state = "shade/things/lamp/state".to_owned();
    // (name, filters): every kind of filter the service's index keeps
    // apart (exact, wildcard after the thing, wildcard before it, `#`).
    let early: [(&str, &[&str]); 5] = [
        ("exact-delta", &[&delta]),
        ("plus-delta", &["$aws/things/+/shadow/update/delta"]),
        ("hash", &["#"]),
        ("exact-documents", &[&documents]),
        ("exact-state", &[&state]),
    ];
    let mut clients = Vec::new();
    for (name, filters) in early {
        let mut c = Mqtt::connect(port, &format!("notice-{name}")).await;
        for f in filters {
            c.subscribe(f).await;
        }
        clients.push(c);
    }
    let mut writer = Mqtt::connect(port, "notice-writer").await;
    writer.subscribe(&aws("lamp", "update/+")).await;
    writer.subscribe(&state).await;
    let first = json!({"state": {"desired": {"level": 1}}, "clientToken": "u1"});
    let reply = writer.request(&aws("lamp", "update"), &first).await;
    assert!(reply.topic.ends_with("/accepted"), "{reply}");
    // The reply goes out before the change's notices, the state last of
    // them; once the writer has that, no notice of the first change is
    // still on its way to be caught by the late subscriber's filters.
    writer
        .wait_for("the first state", |m| m.topic == state)
        .await;

    // Subscribes after the first change: it gets that change's state as the
    // retained snapshot, and no delta or documents of it (not retained).
    let mut late = Mqtt::connect(port, "notice-late").await;
    for f in [&delta, &documents, &state] {
        late.subscribe(f).await;
    }
    let second = json!({"state": {"desired": {"level": 2}}, "clientToken": "u2"});
    let reply = writer.request(&aws("lamp", "update"), &second).await;
    assert!(reply.topic.ends_with("/accepted"), "{reply}");

    // Live messages go to current subscribers with the retain flag clear
    // (MQTT 3.1.1, 3.3.1.3); only the snapshot after a SUBACK is retained.
    let both = |topic: &str| vec![(topic.to_owned(), 1, false), (topic.to_owned(), 2, false)];
    let expected: [Vec<Notice>; 5] = [
        both(&delta),
        both(&delta),
        // `#` matches no topic starting with `$` (MQTT 3.1.1, 4.7.2):
        // of the service's notices only the native state reaches it.
        both(&state),
        both(&documents),
        both(&state),
    ];
    for (client, want) in clients.iter_mut().zip(expected) {
        let got = notices(client, &want).await;
        assert_eq!(got, want, "client {} got other notices", client.id);
    }
    let mut want_late = vec![
        (delta.clone(), 2, false),
        (documents.clone(), 2, false),
        (state.clone(), 1, true),
        (state.clone(), 2, false),
    ];
    want_late.sort();
    let got = notices(&mut late, &want_late).await;
    assert_eq!(got, want_late, "the late subscriber got other notices");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_starting_with_a_wildcard_match_no_dollar_aws_topic() {
    // MQTT 3.1.1, 4.7.2 (and MQTT 5, 4.7.2): "The Server MUST NOT match
    // Topic Filters starting with a wildcard character (# or +) with Topic
    // Names beginning with a $ character." `#` is held to it (above); a
    // leading `+` must be too. Of the service's messages these filters can
    // only match the native `shade/things/...` ones.
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let port = server.port();
    let filters = ["+/things/lamp/shadow/update/delta", "+/things/#", "+/#"];
    let mut clients = Vec::new();
    for (i, filter) in filters.iter().enumerate() {
        let mut c = Mqtt::connect(port, &format!("leading-plus-{i}")).await;
        c.subscribe(filter).await;
        clients.push(c);
    }
    let mut writer = Mqtt::connect(port, "leading-plus-writer").await;
    writer.subscribe(&aws("lamp", "update/accepted")).await;
    let update = json!({"state": {"desired": {"level": 1}}, "clientToken": "p1"});
    let reply = writer.request(&aws("lamp", "update"), &update).await;
    assert!(reply.topic.ends_with("/accepted"), "{reply}");
    let state = ("shade/things/lamp/state".to_owned(), 1, false);
    let expected = [vec![], vec![state.clone()], vec![state]];
    for ((client, filter), want) in clients.iter_mut().zip(filters).zip(expected) {
        let got = notices(client, &want).await;
        assert_eq!(
            got, want,
            "client {} on {filter:?} got other messages",
            client.id
        );
    }
}

/// Agents of the reconnecting fleet, each with its own thing and replica.
const AGENTS: usize = 500;
/// Bound for the whole fleet to push its offline writes once the broker
/// is back (they come back within a second: see `agent_config`).
const FLEET_CONVERGE: Duration = Duration::from_secs(120);

/// The agent library's configuration of agent `i`: its own thing and data
/// directory, and reconnects as quick as `write_agent_config` makes the
/// `shade-agent` processes' (100 ms doubling to at most 1 s), so the 500
/// come back within the same second.
fn agent_config(broker: &str, dir: &std::path::Path, i: usize) -> shade_agent::config::AgentConfig {
    use shade_agent::config::{AgentConfig, Overrides};
    let overrides = Overrides {
        broker: Some(broker.to_owned()),
        thing: Some(format!("fleet-{i}")),
        data_dir: Some(dir.join(format!("agent-{i}"))),
        ..Default::default()
    };
    let mut config = AgentConfig::load(None, &overrides).expect("a valid agent configuration");
    config.reconnect_min = Duration::from_millis(100);
    config.reconnect_max = Duration::from_secs(1);
    config
}

/// Agent `i` reports `{key: i}`, all agents at once; each write is
/// durable in its replica when this returns.
async fn report_all(agents: &[shade_agent::Agent], key: &str) {
    let mut writes = tokio::task::JoinSet::new();
    for (i, agent) in agents.iter().enumerate() {
        let (agent, key) = (agent.clone(), key.to_owned());
        writes.spawn(async move {
            let mut patch = serde_json::Map::new();
            patch.insert(key.clone(), Value::from(i));
            let result = agent.report(patch).await;
            (i, key, result)
        });
    }
    let within = Duration::from_secs(60);
    let done = tokio::time::timeout(within, writes.join_all())
        .await
        .unwrap_or_else(|_| panic!("{} reports not written within {within:?}", agents.len()));
    for (i, key, result) in done {
        result.unwrap_or_else(|e| panic!("agent {i}: report {key}: {e}"));
    }
}

/// Waits (bounded) until every agent is in the `connected` state with
/// `pending` changes (`None`: any number); returns the time it took.
async fn wait_fleet(
    agents: &[shade_agent::Agent],
    connected: bool,
    pending: Option<usize>,
    within: Duration,
    what: &str,
) -> Duration {
    let start = Instant::now();
    loop {
        let laggards: Vec<(usize, bool, usize)> = agents
            .iter()
            .enumerate()
            .map(|(i, a)| {
                (
                    i,
                    a.is_connected(),
                    shade_agent::replica::pending(&a.state()),
                )
            })
            .filter(|&(_, c, p)| c != connected || pending.is_some_and(|want| p != want))
            .collect();
        if laggards.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{} of {AGENTS} agents not {what} after {within:?}; e.g. (agent, connected, pending) {:?}",
            laggards.len(),
            &laggards[..laggards.len().min(5)]
        );
        // Polling the agents' state: the library has no fleet-wide event.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_agents_reconnecting_at_once_all_push_their_offline_writes() {
    let t0 = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("shade-serve-fleet-")
        .tempdir()
        .expect("create a temp dir");
    // `agent::Broker`, not `Server`: it comes back on the same port, which
    // the agents keep dialling.
    let mut broker = shade_tests::agent::Broker::start(&dir.path().join("broker"));
    let url = broker.url();
    // Opening a replica is a redb create and fsync: in parallel, it takes
    // a fraction of the time it takes one after the other.
    let mut starts = tokio::task::JoinSet::new();
    for i in 0..AGENTS {
        let config = agent_config(&url, dir.path(), i);
        starts.spawn_blocking(move || (i, shade_agent::Agent::start(config)));
    }
    let mut agents: Vec<(usize, shade_agent::Agent)> = starts
        .join_all()
        .await
        .into_iter()
        .map(|(i, a)| {
            (
                i,
                a.unwrap_or_else(|e| panic!("agent {i} does not start: {e}")),
            )
        })
        .collect();
    agents.sort_by_key(|(i, _)| *i);
    let agents: Vec<shade_agent::Agent> = agents.into_iter().map(|(_, a)| a).collect();
    let started = t0.elapsed();
    // Every thing exists on the broker, and every agent is in sync with it.
    report_all(&agents, "boot").await;
    let synced = wait_fleet(&agents, true, Some(0), FLEET_CONVERGE, "synced").await;

    // The broker dies without a word; every agent notices, then writes
    // while offline (durable in its replica, pending for the broker).
    broker.kill9();
    wait_fleet(
        &agents,
        false,
        None,
        Duration::from_secs(30),
        "disconnected",
    )
    .await;
    let offline = Instant::now();
    report_all(&agents, "offline").await;
    let offline = offline.elapsed();
    for (i, a) in agents.iter().enumerate() {
        let pending = shade_agent::replica::pending(&a.state());
        assert_eq!(pending, 1, "agent {i}: its offline write is not pending");
    }

    // Back on the same data and port: all 500 reconnect within a second
    // and push; pending 0 means the broker acknowledged the write, which
    // it does only once it is committed.
    let restart = Instant::now();
    broker.restart();
    let restart = restart.elapsed();
    let back = wait_fleet(&agents, true, Some(0), FLEET_CONVERGE, "synced again").await;

    // The broker's side, seen by a dashboard that subscribes now: every
    // shadow's retained state holds both writes of its agent.
    let mut dash = Mqtt::connect(broker.port(), "fleet-dashboard").await;
    dash.subscribe("shade/things/+/state").await;
    let things: Vec<String> = (0..AGENTS).map(|i| format!("fleet-{i}")).collect();
    let states = collect_states(&mut dash, &things, SNAPSHOT_WITHIN).await;
    for (i, thing) in things.iter().enumerate() {
        let doc = &states[thing];
        assert_eq!(
            doc["state"]["reported"],
            json!({"boot": i, "offline": i}),
            "{thing}: {doc}"
        );
    }
    let mut stops = tokio::task::JoinSet::new();
    for agent in agents {
        stops.spawn(agent.shutdown());
    }
    tokio::time::timeout(Duration::from_secs(30), stops.join_all())
        .await
        .expect("the agents shut down within 30 s");
    eprintln!(
        "timings: {AGENTS} agents started by {started:?}, synced in {synced:?}; \
         offline writes {offline:?}; restart {restart:?}; synced again {back:?}; total {:?}",
        t0.elapsed()
    );
}

/// Clients that stay connected, and as many that leave at once.
const STAYERS: usize = 100;

/// Connects the clients `(id, filters)`, all at once; in the given order.
async fn subscribers(port: u16, specs: Vec<(String, Vec<String>)>) -> Vec<Mqtt> {
    let mut set = tokio::task::JoinSet::new();
    for (i, (id, filters)) in specs.into_iter().enumerate() {
        set.spawn(async move {
            let mut client = Mqtt::connect(port, &id).await;
            for f in &filters {
                client.subscribe(f).await;
            }
            (i, client)
        });
    }
    let mut clients = set.join_all().await;
    clients.sort_by_key(|(i, _)| *i);
    clients.into_iter().map(|(_, c)| c).collect()
}

/// Thing `d{i}`'s delta filter: exact for even `i`, a wildcard after the
/// thing for odd `i`, so both of the service's indexes lose filters.
fn delta_filter(i: usize) -> String {
    if i % 2 == 0 {
        aws(&format!("d{i}"), "update/delta")
    } else {
        aws(&format!("d{i}"), "update/+")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_leaving_at_once_close_none_of_the_others() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data);
    let port = server.port();
    let t0 = Instant::now();
    // Stayer `j` watches thing `d{j}`. Leaver `j` watches its own thing
    // `d{100 + j}` and the same filter as stayer `j`: its leaving must take
    // only its own hold on that filter.
    let stayers = (0..STAYERS).map(|j| (format!("stay-{j}"), vec![delta_filter(j)]));
    let leavers = (0..STAYERS).map(|j| {
        let filters = vec![delta_filter(STAYERS + j), delta_filter(j)];
        (format!("leave-{j}"), filters)
    });
    let mut stayers = subscribers(port, stayers.collect()).await;
    let leavers = subscribers(port, leavers.collect()).await;
    let connected = t0.elapsed();

    // All at once: half send DISCONNECT, half just close their socket, and
    // a hundred newcomers (things d200..) connect in the middle of it, as
    // when part of a fleet goes and another part comes.
    // Each leave is complete, as far as the client can tell, before the
    // deltas below are sent: a clean one once the server closed the
    // connection, a dropped one once the client's socket is closed.
    let mut gone = tokio::task::JoinSet::new();
    for (j, leaver) in leavers.into_iter().enumerate() {
        gone.spawn(async move {
            if j % 2 == 0 {
                let id = leaver.id.clone();
                let closed = leaver.disconnect(shade_tests::REPLY_TIMEOUT).await;
                assert!(closed, "{id}: its connection did not end after DISCONNECT");
            } else {
                leaver.drop_socket().await;
            }
        });
    }
    let newcomers = (0..STAYERS).map(|k| {
        let i = 2 * STAYERS + k;
        (format!("new-{k}"), vec![delta_filter(i)])
    });
    let mut newcomers = subscribers(port, newcomers.collect()).await;
    gone.join_all().await;
    let left = t0.elapsed();

    // A delta for every thing still watched, sent after the leaving.
    let things: Vec<usize> = (0..STAYERS).chain(2 * STAYERS..3 * STAYERS).collect();
    let updates: Vec<(String, Value)> = things
        .iter()
        .map(|i| (format!("d{i}"), json!({"desired": {"v": i}})))
        .collect();
    let mut writer = Dashboard::connect(port, "leave-writer").await;
    writer.update_many(&updates, WINDOW).await;
    for (client, i) in stayers.iter_mut().chain(newcomers.iter_mut()).zip(&things) {
        let topic = aws(&format!("d{i}"), "update/delta");
        let msg = client
            .wait_for(&format!("the delta of d{i}"), |m| m.topic == topic)
            .await;
        assert_eq!(msg.json()["state"], json!({"v": i}), "{msg}");
        assert!(client.closed().is_none(), "client {} was closed", client.id);
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
    eprintln!(
        "timings: {} clients connected in {connected:?}; left and came by {left:?}; total {:?}",
        2 * STAYERS,
        t0.elapsed()
    );
}
