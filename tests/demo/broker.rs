//! The embedded broker in-process: retained messages and 1 MiB payloads, the
//! engine's client resuming its session, a taken port named with its flag,
//! and taken movable ports left for free ones.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::time::Duration;

use rumqttc::QoS;
use tokio::sync::mpsc as tokio_mpsc;

use scip_orchestrator::broker::{
    BrokerError, BrokerOptions, BrokerSettings, EmbeddedBroker, MovablePorts,
};
use scip_orchestrator::mqtt::{AckEvent, AckTo, Message, Mqtt, MqttSettings};
use scip_orchestrator::testing::{Proxy, Subscriber, embedded_broker, on_free_ports_async};

/// The embedded broker, open, on free loopback ports.
async fn loopback_broker() -> EmbeddedBroker {
    embedded_broker(None, BrokerOptions::default()).await
}

/// Waits for the outcome of the publish tagged `tag`.
async fn outcome(acks: &mut tokio_mpsc::UnboundedReceiver<AckEvent>, tag: u64) -> AckEvent {
    let event = tokio::time::timeout(Duration::from_secs(10), acks.recv())
        .await
        .expect("an outcome within 10 s")
        .expect("the client is alive");
    match &event {
        AckEvent::Acked { tag: t, .. } | AckEvent::Failed { tag: t, .. } => assert_eq!(*t, tag),
    }
    event
}

fn message(topic: &str, payload: Vec<u8>, retain: bool, tag: u64, to: &AckTo) -> Message {
    Message {
        topic: topic.to_owned(),
        payload,
        qos: QoS::AtLeastOnce,
        retain,
        ack: Some(AckTo {
            tag,
            to: to.to.clone(),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_keeps_retained_messages_and_carries_1_mib() {
    let broker = loopback_broker().await;
    assert_eq!(
        broker.mqtt_url(),
        format!("mqtt://127.0.0.1:{}", broker.settings().port)
    );
    assert_eq!(
        broker.ws_url(),
        format!("ws://127.0.0.1:{}/mqtt", broker.settings().ws_port)
    );
    // The engine's client: a clean-session probe, then a persistent session.
    let mqtt = Mqtt::connect(MqttSettings::new(
        broker.client_host(),
        broker.settings().port,
        "engine-under-test",
    ))
    .await
    .unwrap();
    let (tx, mut acks) = tokio_mpsc::unbounded_channel();
    let to = AckTo { tag: 0, to: tx };

    // Retained, on a topic with a leading "/", before anyone subscribes.
    let timer = br#"{"current":5,"formatted":"T+00:05"}"#.to_vec();
    mqtt.publish(message("/exercise/b1/timer", timer.clone(), true, 1, &to));
    assert!(matches!(
        outcome(&mut acks, 1).await,
        AckEvent::Acked { .. }
    ));
    let mut late = Subscriber::connect(broker.settings().port, "/exercise/b1/#").await;
    let seen = late
        .next(Duration::from_secs(10))
        .await
        .expect("the retained timer reaches a late subscriber");
    assert_eq!(seen.topic, "/exercise/b1/timer");
    assert_eq!(seen.raw, timer);
    assert!(seen.retain, "delivered as retained");

    // A long inject: 1 MiB, acknowledged and delivered intact.
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    mqtt.publish(message(
        "/exercise/b1/team/blue/feed",
        big.clone(),
        false,
        2,
        &to,
    ));
    assert!(matches!(
        outcome(&mut acks, 2).await,
        AckEvent::Acked { .. }
    ));
    let seen = late
        .next(Duration::from_secs(10))
        .await
        .expect("the 1 MiB message arrives");
    assert_eq!(seen.topic, "/exercise/b1/team/blue/feed");
    assert_eq!(seen.raw.len(), big.len());
    assert!(seen.raw == big, "payload intact");
    assert!(!seen.retain);
    mqtt.close(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_client_resumes_its_session_with_the_embedded_broker() {
    let broker = loopback_broker().await;
    let proxy = Proxy::start(broker.settings().port).await;
    let mut sub = Subscriber::connect(broker.settings().port, "/exercise/b2/#").await;
    let mqtt = Mqtt::connect(MqttSettings::new("127.0.0.1", proxy.port, "engine-resumes"))
        .await
        .unwrap();
    let mut connected = mqtt.connected();
    let (tx, mut acks) = tokio_mpsc::unbounded_channel();
    let to = AckTo { tag: 0, to: tx };

    // Sent into a stalled link and lost with it: rumqttc resends it on the
    // resumed session. Had rumqttd forgotten the session (CONNACK without
    // session present), the client would report it failed instead.
    proxy.set_stalled(true);
    mqtt.publish(message(
        "/exercise/b2/team/red/feed",
        b"during the outage".to_vec(),
        false,
        7,
        &to,
    ));
    proxy.set_up(false);
    tokio::time::timeout(Duration::from_secs(20), connected.wait_for(|c| !*c))
        .await
        .expect("the cut is noticed")
        .unwrap();
    proxy.set_stalled(false);
    proxy.set_up(true);
    let event = outcome(&mut acks, 7).await;
    assert!(matches!(event, AckEvent::Acked { .. }), "{event:?}");
    let seen = sub
        .collect_until(Duration::from_secs(10), |m| {
            m.topic == "/exercise/b2/team/red/feed"
        })
        .await;
    assert_eq!(seen.last().unwrap().raw, b"during the outage");
    mqtt.close(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_names_a_taken_port_and_its_flag() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for flag in [
        "--broker-port / BROKER_PORT",
        "--broker-ws-port / BROKER_WS_PORT",
    ] {
        // The other port is drawn free; should another process take it
        // first, the error names that one: then another.
        let err = on_free_ports_async(async |[other]| {
            let (port, ws_port) = match flag {
                "--broker-port / BROKER_PORT" => (port, other),
                _ => (other, port),
            };
            let settings = BrokerSettings {
                bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
                ws_port,
            };
            match EmbeddedBroker::start(settings).await.unwrap_err() {
                BrokerError::PortTaken { port: p, .. } if p == other => None,
                err => Some(err),
            }
        })
        .await;
        assert!(matches!(err, BrokerError::PortTaken { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("port {port} is taken: choose another with {flag}")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_moves_taken_movable_ports_to_free_ones() {
    let held = [(); 2].map(|()| TcpListener::bind("127.0.0.1:0").unwrap());
    let [port, ws_port] = held.each_ref().map(|l| l.local_addr().unwrap().port());
    let settings = BrokerSettings {
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port,
        ws_port,
    };
    let options = BrokerOptions {
        movable: MovablePorts {
            mqtt: true,
            ws: true,
        },
        ..BrokerOptions::default()
    };
    let broker = EmbeddedBroker::start_with(settings, None, options)
        .await
        .expect("taken movable ports move");
    let now = broker.settings();
    assert_ne!(now.port, port);
    assert_ne!(now.ws_port, ws_port);
    assert_ne!(now.port, now.ws_port);
    assert_eq!(broker.tcp_addr().port(), now.port);
    assert_eq!(
        broker.ws_url(),
        format!("ws://127.0.0.1:{}/mqtt", now.ws_port)
    );
    // The moved listener is the broker's: a message goes through it.
    let mut sub = Subscriber::connect(now.port, "/exercise/moved/#").await;
    sub.client
        .publish("/exercise/moved/timer", QoS::AtLeastOnce, false, "tick")
        .await
        .unwrap();
    let seen = sub
        .collect_until(Duration::from_secs(10), |m| {
            m.topic == "/exercise/moved/timer"
        })
        .await;
    assert_eq!(seen.last().unwrap().raw, b"tick");
    drop(held);
}
