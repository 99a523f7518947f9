//! The series as encoded: names, labels and values.

use super::*;

fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| &l[series.len() + 1..])
}

#[test]
fn every_fixed_series_is_there_from_the_start_at_zero() {
    let text = Metrics::new().encode().expect("encodes");
    for series in [
        r#"shade_connections_open{transport="wss"}"#,
        r#"shade_requests_total{kind="sync_up"}"#,
        r#"shade_replies_total{kind="update",code="409"}"#,
        r#"shade_rate_limited_total{kind="ops"}"#,
        "shade_store_commit_seconds_count",
        "shade_sync_up_bytes_total",
        "shade_conflicts_total",
        "shade_shadows",
        r#"shade_http_streams_open{stream="events"}"#,
        r#"shade_http_streams_behind_total{stream="count"}"#,
    ] {
        assert_eq!(line(&text, series), Some("0"), "{series} in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn recorded_values_show_under_their_labels() {
    let m = Metrics::new();
    m.request(Kind::Update);
    m.reply(Kind::Update, 409);
    m.reply(Kind::Get, 418);
    m.rate_limited(Kind::SyncUp);
    m.commit(Duration::from_micros(300), 3, true);
    m.sync_down(120);
    m.conflicts(2);
    m.http("shadow", 404);
    m.read_at_scrape(
        Readings {
            queue_depth: Box::new(|| 7),
            shadows: Box::new(|| 42),
            things_connected: Box::new(|| 3),
        },
        8192,
    );
    let text = m.encode().expect("encodes");
    for (series, value) in [
        (r#"shade_requests_total{kind="update"}"#, "1"),
        (r#"shade_replies_total{kind="update",code="409"}"#, "1"),
        (r#"shade_replies_total{kind="get",code="418"}"#, "1"),
        (r#"shade_rate_limited_total{kind="sync_up"}"#, "1"),
        ("shade_store_commit_failures_total", "1"),
        (r#"shade_store_commit_seconds_bucket{le="0.0005"}"#, "1"),
        (r#"shade_store_commit_seconds_bucket{le="0.00025"}"#, "0"),
        (r#"shade_store_batch_size_bucket{le="4.0"}"#, "1"),
        ("shade_sync_down_messages_total", "1"),
        ("shade_sync_down_bytes_total", "120"),
        ("shade_conflicts_total", "2"),
        (
            r#"shade_http_requests_total{route="shadow",status="404"}"#,
            "1",
        ),
        ("shade_store_queue_depth", "7"),
        ("shade_store_queue_capacity", "8192"),
        ("shade_shadows", "42"),
        ("shade_things_connected", "3"),
    ] {
        assert_eq!(line(&text, series), Some(value), "{series} in:\n{text}");
    }
}

#[test]
fn a_connection_counts_its_end_when_dropped() {
    let m = Metrics::new();
    let first = m.connected(Link::Ws);
    let second = m.connected(Link::Ws);
    drop(first);
    let text = m.encode().expect("encodes");
    assert_eq!(
        line(&text, r#"shade_connections_open{transport="ws"}"#),
        Some("1")
    );
    assert_eq!(
        line(&text, r#"shade_connects_total{transport="ws"}"#),
        Some("2")
    );
    assert_eq!(
        line(&text, r#"shade_disconnects_total{transport="ws"}"#),
        Some("1")
    );
    drop(second);
}

#[test]
fn a_stream_counts_as_open_while_its_guard_lives() {
    let m = Metrics::new();
    let open = m.streams().opened(Stream::Count);
    let _other = m.streams().opened(Stream::Events);
    m.streams().behind(Stream::Events).inc();
    let text = m.encode().expect("encodes");
    assert_eq!(
        line(&text, r#"shade_http_streams_open{stream="count"}"#),
        Some("1")
    );
    assert_eq!(
        line(&text, r#"shade_http_streams_behind_total{stream="events"}"#),
        Some("1")
    );
    drop(open);
    let text = m.encode().expect("encodes");
    assert_eq!(
        line(&text, r#"shade_http_streams_open{stream="count"}"#),
        Some("0")
    );
    assert_eq!(
        line(&text, r#"shade_http_streams_open{stream="events"}"#),
        Some("1")
    );
}
