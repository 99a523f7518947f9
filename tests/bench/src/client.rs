//! MQTT client helpers shared by the scenarios (one rumqttc connection per
//! simulated device), and the statistics they report.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

/// Largest packet the bench clients accept or send.
pub(crate) const MAX_PACKET: usize = 64 * 1024 * 1024;
/// How long one connect (CONNACK) or subscribe (SUBACK) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Set once from `--nodelay`: the clients set TCP_NODELAY on their sockets
/// (rumqttc's default, and so shade-agent's, leaves Nagle's algorithm on).
pub(crate) static NODELAY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Options of a bench client: clean session, QoS 1 window `inflight`.
pub(crate) fn options(id: &str, port: u16, inflight: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_clean_session(true);
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    o.set_inflight(inflight.max(1));
    o
}

/// A client and its event loop, with TCP_NODELAY when `--nodelay` says so.
pub(crate) fn new_client(options: MqttOptions, capacity: usize) -> (AsyncClient, EventLoop) {
    let (client, mut el) = AsyncClient::new(options, capacity);
    if NODELAY.get().copied().unwrap_or(false) {
        let mut net = el.network_options();
        net.set_tcp_nodelay(true);
        el.set_network_options(net);
    }
    (client, el)
}

/// Connects and subscribes to `filters` at QoS 1, polling the event loop
/// until the CONNACK and every SUBACK arrived (bounded). Publishes that
/// arrive meanwhile are dropped.
pub(crate) async fn connect(
    options: MqttOptions,
    capacity: usize,
    filters: &[String],
) -> Result<(AsyncClient, EventLoop)> {
    let id = options.client_id();
    let (client, mut el) = new_client(options, capacity);
    let setup = async {
        loop {
            match el.poll().await.with_context(|| format!("{id}: connect"))? {
                Event::Incoming(Packet::ConnAck(_)) => break,
                _ => continue,
            }
        }
        for f in filters {
            client
                .subscribe(f.as_str(), QoS::AtLeastOnce)
                .await
                .with_context(|| format!("{id}: subscribe {f}"))?;
        }
        let mut acks = 0;
        while acks < filters.len() {
            if let Event::Incoming(Packet::SubAck(ack)) = el
                .poll()
                .await
                .with_context(|| format!("{id}: subscribe"))?
            {
                if !ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                {
                    bail!("{id}: subscription refused");
                }
                acks += 1;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(CONNECT_TIMEOUT, setup)
        .await
        .with_context(|| format!("{id}: no CONNACK/SUBACK within {CONNECT_TIMEOUT:?}"))??;
    Ok((client, el))
}

/// Waits (at most 10 s each) for the device tasks that `stop` ended and
/// gathers their samples; the first task error is the run's error.
pub(crate) async fn join_samples(
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<u32>>>>,
) -> Result<Vec<u32>> {
    let mut samples = Vec::new();
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(Ok(Ok(s))) => samples.extend(s),
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(e)) => return Err(e).context("device task"),
            Err(_) => bail!("a device did not stop within 10 s"),
        }
    }
    Ok(samples)
}

/// The first number after `"key":` (optionally quoted) in a JSON payload,
/// found without parsing the whole document: the load generator shares two
/// cores with the server, so it spends as little as it can per message.
/// Occurrences followed by something else (`"key":{..}`) are skipped.
pub(crate) fn number_after(payload: &[u8], key: &[u8]) -> Option<u64> {
    let mut from = 0;
    while let Some(pos) = find(payload.get(from..)?, key) {
        let at = from + pos + key.len();
        from = at;
        let rest = &payload[at..];
        let rest = rest.strip_prefix(b"\"").unwrap_or(rest);
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 {
            return std::str::from_utf8(&rest[..digits]).ok()?.parse().ok();
        }
    }
    None
}

/// Where `needle` first occurs in `hay`: a scan for its first byte, then
/// a comparison (`windows(..).position(..)` calls memcmp at every byte,
/// which made it the SSE readers' main cost; JSON keys all start with `"`,
/// so even one call per candidate showed).
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(pos) = hay.get(from..)?.iter().position(|&b| b == first) {
        let at = from + pos;
        let tail = hay.get(at + 1..)?;
        // Byte by byte: a call to memcmp per candidate costs more.
        if tail.len() >= rest.len() && tail.iter().zip(rest).all(|(a, b)| a == b) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The `q` quantile (0..=1) of sorted samples, nearest rank.
pub(crate) fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_numbers_quoted_or_not() {
        let p = br#"{"clientToken":"42","state":{"t":7}}"#;
        assert_eq!(number_after(p, br#""clientToken":"#), Some(42));
        assert_eq!(number_after(p, br#""t":"#), Some(7));
        assert_eq!(number_after(p, br#""x":"#), None);
        let delta = br#"{"metadata":{"t":{"timestamp":1}},"state":{"t":9}}"#;
        assert_eq!(number_after(delta, br#""t":"#), Some(9));
        assert_eq!(number_after(br#""t":"#, br#""t":"#), None);
    }

    #[test]
    fn finds_needles() {
        assert_eq!(find(b"ab\n\ncd\n\n", b"\n\n"), Some(2));
        assert_eq!(find(b"aab", b"ab"), Some(1));
        assert_eq!(find(b"a\n", b"\n\n"), None);
        assert_eq!(find(b"", b"x"), None);
        assert_eq!(find(b"x", b""), None);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let s: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&s, 0.5), 50.0);
        assert_eq!(quantile(&s, 0.99), 99.0);
        assert_eq!(quantile(&s, 0.999), 100.0);
    }
}
