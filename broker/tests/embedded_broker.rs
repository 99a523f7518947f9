//! The embedded broker over real sockets: a real rumqttd on 127.0.0.1 with
//! free ports, real rumqttc clients (3.1.1 and 5), a raw WebSocket client,
//! and a tiny echo service on the `Inbound` receiver. Every test is bounded.

mod common;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use shade_broker::embedded::{
    self as router, BrokerHandle, BrokerSettings, EmbeddedError, Inbound, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

const BOUND: Duration = Duration::from_secs(30);

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    timeout(BOUND, test).await.expect("test timed out")
}

struct Broker {
    tcp: u16,
    ws: u16,
    handle: BrokerHandle,
    inbound: mpsc::Receiver<Inbound>,
}

/// Two different free ports (see `common::free_port` for where from).
fn free_ports() -> (u16, u16) {
    let a = common::free_port();
    loop {
        let b = common::free_port();
        if b != a {
            return (a, b);
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn start_broker() -> Broker {
    // Errors only (RUST_LOG for more), shown with a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (tcp, ws) = free_ports();
    let settings = BrokerSettings {
        listeners: vec![
            (loopback(tcp), Transport::Tcp),
            (loopback(ws), Transport::Ws),
        ],
        ..BrokerSettings::default()
    };
    let (handle, inbound) = router::start(settings).expect("broker starts");
    Broker {
        tcp,
        ws,
        handle,
        inbound,
    }
}

/// Answers every `.../update` with `.../update/accepted` carrying the
/// requester's client id, and reports every request it saw.
fn spawn_echo(broker: Broker) -> (u16, mpsc::Receiver<Inbound>) {
    let Broker {
        tcp,
        handle,
        mut inbound,
        ..
    } = broker;
    let (seen_tx, seen_rx) = mpsc::channel(4096);
    tokio::spawn(async move {
        while let Some(request) = inbound.recv().await {
            if request.topic.starts_with("$aws/") && request.topic.ends_with("/update") {
                let reply = format!("{}/accepted", request.topic);
                let payload = request.client_id.clone().into_bytes();
                handle.publish(&reply, payload, false).await.expect("reply");
            }
            if seen_tx.send(request).await.is_err() {
                return;
            }
        }
    });
    (tcp, seen_rx)
}

/// A 3.1.1 client whose event loop runs in a task; incoming packets arrive
/// on the returned channel. Retries while the listener thread is binding.
async fn connect(port: u16, id: &str) -> (AsyncClient, mpsc::Receiver<Packet>) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    wait_connack(&mut eventloop).await;
    let (tx, rx) = mpsc::channel(4096);
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(packet) = event {
                if tx.send(packet).await.is_err() {
                    return;
                }
            }
        }
    });
    (client, rx)
}

async fn wait_connack(eventloop: &mut EventLoop) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return,
            Ok(_) => {}
            Err(_) => sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn subscribe(client: &AsyncClient, packets: &mut mpsc::Receiver<Packet>, filter: &str) {
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    while !matches!(packets.recv().await, Some(Packet::SubAck(_))) {}
}

/// A 3.1.1 client has no way to be told a publish was refused but to lose
/// its connection: it gets no PUBACK, and the connection closes.
async fn assert_publish_refused(
    client: &AsyncClient,
    mut packets: mpsc::Receiver<Packet>,
    topic: &str,
) {
    client
        .publish(topic, QoS::AtLeastOnce, true, b"spoof".to_vec())
        .await
        .expect("publish");
    while let Some(packet) = packets.recv().await {
        assert!(
            !matches!(packet, Packet::PubAck(_)),
            "a publish on {topic} was acknowledged"
        );
    }
}

async fn next_publish(packets: &mut mpsc::Receiver<Packet>) -> Publish {
    loop {
        match packets.recv().await.expect("connection open") {
            Packet::Publish(publish) => return publish,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn aws_update_reaches_service_with_identity_and_reply_reaches_client() {
    bounded(async {
        let (port, mut seen) = spawn_echo(start_broker());
        let (client, mut packets) = connect(port, "device-1").await;
        subscribe(
            &client,
            &mut packets,
            "$aws/things/+/shadow/update/accepted",
        )
        .await;

        let body = br#"{"state":{"reported":{"on":true}}}"#;
        client
            .publish(
                "$aws/things/t1/shadow/update",
                QoS::AtLeastOnce,
                false,
                body.to_vec(),
            )
            .await
            .expect("publish");

        let request = seen.recv().await.expect("service sees the request");
        assert_eq!(request.client_id, "device-1");
        assert_eq!(request.topic, "$aws/things/t1/shadow/update");
        assert_eq!(request.payload, body);

        let reply = next_publish(&mut packets).await;
        assert_eq!(reply.topic, "$aws/things/t1/shadow/update/accepted");
        assert_eq!(&reply.payload[..], b"device-1");
    })
    .await;
}

/// rumqttd names a client that sent no id; the gateway learns that name
/// from the CONNACK it writes.
#[tokio::test]
async fn a_client_without_an_id_is_stamped_with_the_id_rumqttd_assigns() {
    bounded(async {
        let (port, mut seen) = spawn_echo(start_broker());
        let (client, _packets) = connect(port, "").await;
        client
            .publish("shade/things/t1/sync/up", QoS::AtLeastOnce, false, vec![1])
            .await
            .expect("publish");
        let request = seen.recv().await.expect("service sees the request");
        assert!(
            request.client_id.starts_with("rumqtt-"),
            "{}",
            request.client_id
        );
    })
    .await;
}

#[tokio::test]
async fn service_link_keeps_receiving_past_the_router_unschedule() {
    const COUNT: u32 = 1500;
    bounded(async {
        let (port, mut seen) = spawn_echo(start_broker());
        let (client, _packets) = connect(port, "agent-1").await;
        tokio::spawn(async move {
            for i in 0..COUNT {
                let payload = i.to_be_bytes().to_vec();
                client
                    .publish("shade/things/t1/sync/up", QoS::AtLeastOnce, false, payload)
                    .await
                    .expect("publish");
            }
        });
        for i in 0..COUNT {
            let request = seen.recv().await.expect("service keeps receiving");
            assert_eq!(
                (request.client_id.as_str(), request.topic.as_str()),
                ("agent-1", "shade/things/t1/sync/up")
            );
            assert_eq!(request.payload, i.to_be_bytes(), "in order, none lost");
        }
    })
    .await;
}

#[tokio::test]
async fn clients_cannot_reach_the_service_or_see_its_internal_topics() {
    bounded(async {
        let (port, mut seen) = spawn_echo(start_broker());
        let (watcher, mut watched) = connect(port, "watcher").await;
        subscribe(&watcher, &mut watched, "#").await;
        for (i, topic) in [
            "_in/evil/$aws/things/t1/shadow/update",
            "_in/evil/aws/things/t1/shadow/update",
            "_in/victim/shade/things/t1/sync/up",
            "_aws/things/t1/shadow/update/accepted",
            "$aws/things/t1/shadow/update/accepted",
            "shade/things/t1/state",
            "shade/things/t1/sync/down",
        ]
        .into_iter()
        .enumerate()
        {
            let (evil, packets) = connect(port, &format!("evil-{i}")).await;
            assert_publish_refused(&evil, packets, topic).await;
        }
        let (evil, _evil_packets) = connect(port, "evil").await;
        // Markers: one request the service must see, one topic the watcher must see.
        evil.publish(
            "$aws/things/t1/shadow/get",
            QoS::AtLeastOnce,
            false,
            Vec::new(),
        )
        .await
        .expect("publish");
        evil.publish("marker/done", QoS::AtLeastOnce, false, b"done".to_vec())
            .await
            .expect("publish");

        let first = seen.recv().await.expect("service sees the marker");
        assert_eq!(
            (first.client_id.as_str(), first.topic.as_str()),
            ("evil", "$aws/things/t1/shadow/get")
        );

        // Per-connection order holds through the router, so anything the
        // watcher would wrongly see arrives before the marker.
        let first = next_publish(&mut watched).await;
        assert_eq!(
            first.topic, "marker/done",
            "a `#` subscriber saw {:?}",
            first.topic
        );
        assert!(
            seen.try_recv().is_err(),
            "the service saw a spoofed request"
        );
    })
    .await;
}

#[tokio::test]
async fn retained_state_reaches_late_subscriber_and_clients_cannot_overwrite_it() {
    bounded(async {
        let broker = start_broker();
        let (port, handle) = (broker.tcp, broker.handle.clone());
        let (early, mut early_packets) = connect(port, "early").await;
        subscribe(&early, &mut early_packets, "shade/things/t1/state").await;

        handle
            .publish("shade/things/t1/state", b"{\"version\":1}".to_vec(), true)
            .await
            .expect("publish");
        // Once delivered, the router has stored it as retained.
        assert_eq!(
            &next_publish(&mut early_packets).await.payload[..],
            b"{\"version\":1}"
        );

        let (evil, evil_packets) = connect(port, "evil").await;
        assert_publish_refused(&evil, evil_packets, "shade/things/t1/state").await;

        let (late, mut late_packets) = connect(port, "late").await;
        subscribe(&late, &mut late_packets, "shade/things/#").await;
        let retained = next_publish(&mut late_packets).await;
        assert_eq!(retained.topic, "shade/things/t1/state");
        assert!(retained.retain);
        assert_eq!(&retained.payload[..], b"{\"version\":1}");
        let more = timeout(Duration::from_millis(300), next_publish(&mut late_packets)).await;
        assert!(more.is_err(), "unexpected second message: {more:?}");
    })
    .await;
}

#[tokio::test]
async fn mqtt5_client_gets_the_same_aws_reply_on_the_same_port() {
    use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};

    bounded(async {
        let (port, mut seen) = spawn_echo(start_broker());
        let mut options = Options5::new("device-5", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = Client5::new(options, 10);
        client
            .subscribe("$aws/things/+/shadow/update/accepted", QoS5::AtLeastOnce)
            .await
            .expect("subscribe");

        let mut published = false;
        let reply = loop {
            match eventloop.poll().await {
                Ok(Event5::Incoming(Packet5::SubAck(_))) if !published => {
                    client
                        .publish(
                            "$aws/things/t5/shadow/update",
                            QoS5::AtLeastOnce,
                            false,
                            b"{}".to_vec(),
                        )
                        .await
                        .expect("publish");
                    published = true;
                }
                Ok(Event5::Incoming(Packet5::Publish(publish))) => break publish,
                Ok(_) => {}
                Err(_) => sleep(Duration::from_millis(50)).await,
            }
        };
        assert_eq!(&reply.topic[..], b"$aws/things/t5/shadow/update/accepted");
        assert_eq!(&reply.payload[..], b"device-5");
        let request = seen.recv().await.expect("service saw the request");
        assert_eq!(request.client_id, "device-5");
    })
    .await;
}

/// rumqttd's 3.1.1 encoder panics on MQTT 5 properties; the gateway strips them.
#[tokio::test]
async fn mqtt5_publish_with_properties_reaches_a_311_subscriber() {
    use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};

    bounded(async {
        let broker = start_broker();
        let port = broker.tcp;
        let (listener, mut heard) = connect(port, "listener-4").await;
        subscribe(&listener, &mut heard, "sensors/#").await;

        let (talker, mut eventloop) =
            Client5::new(Options5::new("talker-5", "127.0.0.1", port), 10);
        let properties = PublishProperties {
            content_type: Some("application/json".to_owned()),
            user_properties: vec![("k".to_owned(), "v".to_owned())],
            ..PublishProperties::default()
        };
        talker
            .publish_with_properties(
                "sensors/t1",
                QoS5::AtLeastOnce,
                false,
                b"21.5".to_vec(),
                properties,
            )
            .await
            .expect("publish");
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event5::Incoming(Packet5::Disconnect(_))) => return,
                    Ok(_) => {}
                    Err(_) => sleep(Duration::from_millis(50)).await,
                }
            }
        });

        let publish = next_publish(&mut heard).await;
        assert_eq!(
            (publish.topic.as_str(), &publish.payload[..]),
            ("sensors/t1", &b"21.5"[..])
        );
    })
    .await;
}

#[tokio::test]
async fn websocket_listener_speaks_mqtt() {
    bounded(async {
        let broker = start_broker();
        let mut stream = loop {
            match TcpStream::connect(loopback(broker.ws)).await {
                Ok(stream) => break stream,
                Err(_) => sleep(Duration::from_millis(50)).await,
            }
        };
        let upgrade = "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";
        stream.write_all(upgrade.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        while !response.ends_with(b"\r\n\r\n") {
            response.push(stream.read_u8().await.expect("read"));
        }
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 101"), "{response}");

        // MQTT 3.1.1 CONNECT, clean session, keep alive 60 s, client id "ws-1".
        let connect = [
            0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 4, b'w', b's', b'-', b'1',
        ];
        // One masked binary frame; a zero mask leaves the payload as is.
        let mut frame = vec![0x82, 0x80 | 18, 0, 0, 0, 0];
        frame.extend_from_slice(&connect);
        stream.write_all(&frame).await.expect("write");

        let mut reply = [0; 6];
        stream.read_exact(&mut reply).await.expect("read");
        assert_eq!(
            reply,
            [0x82, 4, 0x20, 0x02, 0x00, 0x00],
            "a binary frame holding CONNACK accepted"
        );
    })
    .await;
}

#[tokio::test]
async fn a_client_claiming_the_service_id_is_refused_and_the_service_keeps_working() {
    bounded(async {
        let (port, mut seen) = spawn_echo(start_broker());
        let options = MqttOptions::new("_shade-service", "127.0.0.1", port);
        let (_impostor, mut eventloop) = AsyncClient::new(options, 10);
        for _ in 0..3 {
            let event = eventloop.poll().await;
            assert!(
                !matches!(event, Ok(Event::Incoming(Packet::ConnAck(_)))),
                "impostor accepted"
            );
            sleep(Duration::from_millis(50)).await;
        }

        let (client, mut packets) = connect(port, "device-2").await;
        subscribe(
            &client,
            &mut packets,
            "$aws/things/t2/shadow/update/accepted",
        )
        .await;
        client
            .publish(
                "$aws/things/t2/shadow/update",
                QoS::AtLeastOnce,
                false,
                b"{}".to_vec(),
            )
            .await
            .expect("publish");
        assert_eq!(seen.recv().await.expect("request").client_id, "device-2");
        assert_eq!(&next_publish(&mut packets).await.payload[..], b"device-2");
    })
    .await;
}

#[tokio::test]
async fn start_reports_a_port_in_use_and_bad_settings() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let settings = BrokerSettings {
        listeners: vec![(addr, Transport::Tcp)],
        ..BrokerSettings::default()
    };
    assert!(matches!(
        router::start(settings),
        Err(EmbeddedError::Bind { .. })
    ));

    let settings = BrokerSettings {
        listeners: Vec::new(),
        ..BrokerSettings::default()
    };
    assert!(matches!(
        router::start(settings),
        Err(EmbeddedError::Setting(_))
    ));
}

/// rumqttd hands a new QoS 1 subscription at most 100 retained messages;
/// the gateway grants state subscriptions QoS 0 so a dashboard sees every
/// shadow, however many there are.
#[tokio::test]
async fn a_late_subscriber_gets_every_retained_state_not_just_the_first_hundred() {
    bounded(async {
        let broker = start_broker();
        let (port, handle) = (broker.tcp, broker.handle.clone());
        const SHADOWS: usize = 500;
        // A subscriber that sees them all go by, so we know the router stored them.
        let (early, mut early_packets) = connect(port, "early").await;
        subscribe(&early, &mut early_packets, "shade/things/+/state").await;
        for i in 0..SHADOWS {
            handle
                .publish(&format!("shade/things/t{i}/state"), b"{}".to_vec(), true)
                .await
                .expect("publish");
        }
        for _ in 0..SHADOWS {
            next_publish(&mut early_packets).await;
        }
        for filter in ["shade/things/#", "#"] {
            let (late, mut late_packets) = connect(port, &format!("late-{}", filter.len())).await;
            subscribe(&late, &mut late_packets, filter).await;
            let mut seen = std::collections::BTreeSet::new();
            while seen.len() < SHADOWS {
                let p = next_publish(&mut late_packets).await;
                assert!(p.retain, "{} should be a retained state", p.topic);
                seen.insert(p.topic);
            }
            assert_eq!(seen.len(), SHADOWS, "subscriber to {filter}");
        }
    })
    .await;
}
