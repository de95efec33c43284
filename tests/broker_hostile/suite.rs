//! The hostile cases, each run against Mosquitto and the embedded broker
//! alike, and the suite that runs them in turn on one [`Target`].

use std::time::Duration;

use rumqttc::mqttbytes::QoS as WireQoS;
use rumqttc::mqttbytes::v4::{LastWill, Packet, Publish};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use scip_orchestrator::testing::Subscriber;

use crate::support::{ACCEPTED, WAIT, closed, connect_packet, encode, raw, subscribe};
use crate::target::Target;

/// Client ids rumqttd cannot take, and odd but valid ones: each connects
/// twice (the second takes the first's place), and nothing breaks.
async fn hostile_client_ids(target: &mut Target) {
    let long = "x".repeat(65_535);
    let ids = [
        "a/b",
        "a+b",
        "a#b",
        "$ab",
        "/",
        "#",
        "+",
        "a:b",
        "%2F",
        "a\u{202e}b",
        " a ",
        "ü",
        long.as_str(),
    ];
    for id in ids {
        let (mut first, connack) = raw(target.port, connect_packet(id, 30, true)).await;
        assert_eq!(connack, ACCEPTED, "{}: client id {id:.20?}", target.name);
        let (_second, connack) = raw(target.port, connect_packet(id, 30, true)).await;
        assert_eq!(
            connack, ACCEPTED,
            "{}: client id {id:.20?} again",
            target.name
        );
        assert!(
            closed(&mut first).await,
            "{}: the second connection under {id:.20?} takes over the first",
            target.name
        );
        target
            .serves_after(&format!("client id {id:.20?} twice"))
            .await;
    }
    // U+0000 in a string closes the connection (MQTT 3.1.1 section 1.5.3).
    let mut stream = TcpStream::connect(("127.0.0.1", target.port))
        .await
        .unwrap();
    stream
        .write_all(&encode(Packet::Connect(connect_packet("a\0b", 30, true))))
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = timeout(WAIT, stream.read_to_end(&mut answer)).await;
    assert!(
        answer.len() < 4 || answer[3] != 0,
        "{}: a client id with U+0000 was accepted",
        target.name
    );
    target.serves_after("a client id with U+0000").await;
    // An empty id is fine with a clean session, refused without (CONNACK 2).
    let (_anon, connack) = raw(target.port, connect_packet("", 30, true)).await;
    assert_eq!(connack, ACCEPTED, "{}: empty client id", target.name);
    let (_, connack) = raw(target.port, connect_packet("", 30, false)).await;
    assert_eq!(
        connack,
        [0x20, 0x02, 0x00, 0x02],
        "{}: empty client id, persistent session",
        target.name
    );
    target.serves_after("empty client ids").await;
}

/// A persistent session taken over by a second connection: the first is
/// closed, the second finds the session.
async fn session_takeover(target: &mut Target) {
    let (first, connack) = raw(target.port, connect_packet("takeover", 30, true)).await;
    assert_eq!(connack, ACCEPTED);
    drop(first);
    let (mut first, connack) = raw(target.port, connect_packet("takeover", 30, false)).await;
    assert_eq!(
        connack, ACCEPTED,
        "{}: a new persistent session",
        target.name
    );
    let (_second, connack) = raw(target.port, connect_packet("takeover", 30, false)).await;
    assert_eq!(
        connack,
        [0x20, 0x02, 0x01, 0x00],
        "{}: the session is present for the second connection",
        target.name
    );
    assert!(
        closed(&mut first).await,
        "{}: the first is closed",
        target.name
    );
    target.serves_after("session takeover").await;
}

/// Keep-alive 0 turns keep-alive off (MQTT 3.1.1 section 3.1.2.10): the
/// client connects and, silent for longer than the gate's own keep-alive
/// with rumqttd allows, still gets its messages.
async fn keep_alive_zero(target: &mut Target) {
    let mut opts = MqttOptions::new("keep-alive-zero", "127.0.0.1", target.port);
    opts.set_keep_alive(Duration::ZERO);
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    let (tx, mut seen) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    let _ = tx.send(Ok(packet));
                }
                Ok(Event::Outgoing(Outgoing::PingReq)) => {
                    let _ = tx.send(Err("the client pinged".to_owned()));
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    let connack = next_event(&mut seen).await;
    assert!(
        matches!(&connack, Ok(Incoming::ConnAck(c)) if c.code == rumqttc::ConnectReturnCode::Success),
        "{}: keep-alive 0 is refused: {connack:?}",
        target.name
    );
    client
        .subscribe("/quiet/topic", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut seen).await,
        Ok(Incoming::SubAck(_))
    ));
    // Silent for twice what rumqttd would allow a client with the gate's
    // keep-alive (one and a half times it), then a message arrives.
    if let Some(upstream) = target.upstream_keep_alive {
        let quiet_until = Instant::now() + upstream * 3;
        if let Ok(event) = timeout(quiet_until - Instant::now(), seen.recv()).await {
            panic!("{}: the quiet client saw {event:?}", target.name);
        }
    }
    target.engine.publish_acked("/quiet/topic").await.unwrap();
    let got = next_event(&mut seen).await;
    assert!(
        matches!(&got, Ok(Incoming::Publish(p)) if p.topic == "/quiet/topic"),
        "{}: the quiet client with keep-alive 0 lost its connection: {got:?}",
        target.name
    );
    task.abort();
    target.serves_after("keep-alive 0").await;
}

async fn next_event(
    seen: &mut mpsc::UnboundedReceiver<Result<Incoming, String>>,
) -> Result<Incoming, String> {
    timeout(WAIT, seen.recv())
        .await
        .expect("an event in time")
        .expect("the client task runs")
}

/// A client that stops talking is closed after one and a half times its
/// keep-alive, and its will goes out.
async fn keep_alive_enforced(target: &mut Target) {
    let mut wills = Subscriber::connect(target.port, "/will/silent").await;
    let mut connect = connect_packet("silent", 1, true);
    connect.last_will = Some(LastWill::new(
        "/will/silent",
        b"{\"gone\":true}".to_vec(),
        WireQoS::AtLeastOnce,
        false,
    ));
    let (mut silent, connack) = raw(target.port, connect).await;
    assert_eq!(connack, ACCEPTED);
    // Half a PUBLISH, then nothing: a packet never completed is not a
    // sign of life.
    silent.write_all(&[0x30, 0x40, 0x00]).await.unwrap();
    let started = Instant::now();
    assert!(
        closed(&mut silent).await,
        "{}: a silent client is kept",
        target.name
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{}: closed before its keep-alive ran out",
        target.name
    );
    let will = wills.next(WAIT).await;
    assert!(
        will.is_some_and(|m| m.topic == "/will/silent"),
        "{}: the silent client's will did not go out",
        target.name
    );
    target.serves_after("a silent client").await;
}

/// Packets that break MQTT 3.1.1, each on a fresh connection after an
/// accepted CONNECT: the broker closes that connection and serves on.
async fn malformed_packets(target: &mut Target) {
    let publish = |topic: &str, qos: WireQoS, pkid: u16| {
        let mut p = Publish::new(topic, qos, b"x".to_vec());
        p.pkid = pkid;
        encode(Packet::Publish(p))
    };
    let mut bad_utf8_topic = publish("/ab", WireQoS::AtMostOnce, 0);
    let at = bad_utf8_topic.iter().position(|b| *b == b'a').unwrap();
    bad_utf8_topic[at] = 0xff;
    let mut qos3 = publish("/q", WireQoS::AtMostOnce, 0);
    qos3[0] |= 0b0110;
    let mut subscribe_flags = subscribe("/s");
    subscribe_flags[0] = 0x80;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("reserved packet type 0", vec![0x00, 0x00]),
        ("reserved packet type 15", vec![0xf0, 0x00]),
        ("SUBSCRIBE with reserved flags 0", subscribe_flags),
        (
            "a remaining length of five bytes",
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        (
            "PUBLISH with an empty topic",
            publish("", WireQoS::AtMostOnce, 0),
        ),
        (
            "PUBLISH to a wildcard topic",
            publish("/a/+/b", WireQoS::AtMostOnce, 0),
        ),
        ("PUBLISH to a topic of invalid UTF-8", bad_utf8_topic),
        ("PUBLISH with QoS 3", qos3),
        (
            "QoS 1 PUBLISH with packet id 0",
            vec![0x32, 0x07, 0x00, 0x02, b'/', b'p', 0x00, 0x00, b'x'],
        ),
        ("SUBSCRIBE without filters", vec![0x82, 0x02, 0x00, 0x01]),
        ("SUBSCRIBE to an invalid filter", subscribe("/a/#/b")),
        ("UNSUBSCRIBE without filters", vec![0xa2, 0x02, 0x00, 0x01]),
        (
            "UNSUBSCRIBE shorter than its packet id",
            vec![0xa2, 0x01, 0x00],
        ),
        ("PUBACK with packet id 0", vec![0x40, 0x02, 0x00, 0x00]),
        (
            "a second CONNECT",
            encode(Packet::Connect(connect_packet("again", 30, true))),
        ),
        ("CONNACK from a client", vec![0x20, 0x02, 0x00, 0x00]),
    ];
    for (name, bytes) in cases {
        let (mut stream, connack) = raw(target.port, connect_packet("malformed", 30, true)).await;
        assert_eq!(connack, ACCEPTED);
        stream.write_all(&bytes).await.unwrap();
        assert!(
            closed(&mut stream).await,
            "{}: {name}: connection kept",
            target.name
        );
        target.serves_after(name).await;
    }
}

/// Valid MQTT 3.1.1 that brokers may treat specially: `$` topics and
/// shared subscriptions (`$share/<group>/<filter>`, which rumqttd and
/// Mosquitto both know), well formed and not. The broker may refuse them
/// (a SUBACK failure code, or closing the connection) but serves on.
async fn dollar_topics(target: &mut Target) {
    let publish = |topic: &str| {
        let p = Publish::new(topic, WireQoS::AtMostOnce, b"x".to_vec());
        encode(Packet::Publish(p))
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("PUBLISH to $SYS/x", publish("$SYS/x")),
        ("PUBLISH to $share/g/t", publish("$share/g/t")),
        ("SUBSCRIBE to $SYS/#", subscribe("$SYS/#")),
        ("SUBSCRIBE to $share/g/t", subscribe("$share/g/t")),
        ("SUBSCRIBE to $share/g/#", subscribe("$share/g/#")),
        ("SUBSCRIBE to $share/g", subscribe("$share/g")),
        ("SUBSCRIBE to $share//t", subscribe("$share//t")),
        ("SUBSCRIBE to $share/+/t", subscribe("$share/+/t")),
        ("SUBSCRIBE to $", subscribe("$")),
        ("SUBSCRIBE to #", subscribe("#")),
    ];
    for (name, bytes) in cases {
        let (mut stream, connack) = raw(target.port, connect_packet("dollar", 30, true)).await;
        assert_eq!(connack, ACCEPTED);
        stream.write_all(&bytes).await.unwrap();
        // Whatever the answer: a PINGREQ after it is answered, or the
        // connection was closed.
        let _ = stream.write_all(&[0xc0, 0x00]).await;
        let mut answer = [0u8; 64];
        let _ = timeout(WAIT, stream.read(&mut answer)).await;
        target.serves_after(name).await;
    }
    // Shared subscriptions: Mosquitto shares; the embedded broker refuses
    // them (SUBACK 0x80; MQTT 3.1.1 has none), since rumqttd panics for
    // good when the one member of a group leaves a persistent session with
    // a delivery unacknowledged. That case, on both.
    let embedded = target.upstream_keep_alive.is_some();
    let mut sharer = TcpStream::connect(("127.0.0.1", target.port))
        .await
        .unwrap();
    sharer
        .write_all(&encode(Packet::Connect(connect_packet(
            "sharer", 30, false,
        ))))
        .await
        .unwrap();
    sharer.write_all(&subscribe("$share/g/jobs")).await.unwrap();
    let mut answer = [0u8; 9];
    timeout(WAIT, sharer.read_exact(&mut answer))
        .await
        .expect("CONNACK and SUBACK in time")
        .unwrap();
    assert_eq!(answer[..4], [0x20, 0x02, 0x00, 0x00], "{}", target.name);
    assert_eq!(answer[4], 0x90, "{}: a SUBACK", target.name);
    let code = answer[8];
    if embedded {
        assert_eq!(code, 0x80, "{}: a shared subscription granted", target.name);
    } else {
        assert_eq!(code, 0x01, "{}: the shared subscription", target.name);
    }
    target.engine.publish_acked("jobs").await.unwrap();
    if !embedded {
        let mut delivery = [0u8; 2];
        timeout(WAIT, sharer.read_exact(&mut delivery))
            .await
            .expect("the shared subscriber gets the message")
            .unwrap();
        assert_eq!(delivery[0] & 0xf0, 0x30, "{}: a PUBLISH", target.name);
    }
    // Gone without acknowledging it.
    drop(sharer);
    target
        .serves_after("a lone shared subscriber leaving a delivery unacknowledged")
        .await;
}

/// Packets bigger than anything sensible: a length that claims 256 MiB is
/// closed at once; a 7 MiB publish goes through.
async fn huge_packets(target: &mut Target) {
    let (mut stream, connack) = raw(target.port, connect_packet("huge", 30, true)).await;
    assert_eq!(connack, ACCEPTED);
    stream
        .write_all(&[0x30, 0xff, 0xff, 0xff, 0x7f])
        .await
        .unwrap();
    stream.write_all(&[0u8; 64 * 1024]).await.ok();
    target.serves_after("a packet claiming 256 MiB").await;

    let mut big = Subscriber::connect(target.port, "/big").await;
    let payload = vec![b'x'; 7 * 1024 * 1024];
    big.client
        .publish("/big", QoS::AtLeastOnce, false, payload.clone())
        .await
        .unwrap();
    let seen = big.next(WAIT).await.expect("the 7 MiB message arrives");
    assert_eq!(seen.raw.len(), payload.len());
    target.serves_after("a 7 MiB publish").await;
}

/// A subscriber that never reads while much is published to it: everyone
/// else is served as before.
async fn slow_reader(target: &mut Target) {
    let (mut slow, connack) = raw(target.port, connect_packet("never-reads", 0, true)).await;
    assert_eq!(connack, ACCEPTED);
    slow.write_all(&subscribe("/flood")).await.unwrap();
    let mut reader = Subscriber::connect(target.port, "/flood").await;
    // 8 MiB in all: less than rumqttd keeps of one topic (20 MiB), so a
    // reader that falls behind on a loaded machine still gets everything.
    let payload = vec![b'f'; 8 * 1024];
    let count = 1000;
    for _ in 0..count {
        target
            .engine
            .client
            .publish("/flood", QoS::AtMostOnce, false, payload.clone())
            .await
            .unwrap();
    }
    let mut got = 0;
    while got < count {
        let m = reader.next(WAIT).await.unwrap_or_else(|| {
            panic!(
                "{}: a reader got {got} of {count} beside a stuck one",
                target.name
            )
        });
        if m.topic == "/flood" {
            got += 1;
        }
    }
    target.serves_after("a subscriber that never reads").await;
    drop(slow);
}

/// Connections that never send a CONNECT, and connected clients that
/// stay idle, a few hundred of each.
async fn idle_connections(target: &mut Target) {
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(
            TcpStream::connect(("127.0.0.1", target.port))
                .await
                .unwrap(),
        );
    }
    let mut idle = Vec::new();
    for n in 0..300 {
        let (stream, connack) =
            raw(target.port, connect_packet(&format!("idle-{n}"), 60, true)).await;
        assert_eq!(connack, ACCEPTED, "{}: idle client {n}", target.name);
        idle.push(stream);
    }
    target.serves_after("600 idle connections").await;
    drop(idle);
    drop(silent);
    target.serves_after("600 idle connections closing").await;
}

/// Embedded only: a client through the gate under the engine's own client
/// id gets a session of its own; the engine's connection stays.
async fn engine_client_id(target: &mut Target) {
    let id = target.engine.id.clone();
    for _ in 0..2 {
        let (_stream, connack) = raw(target.port, connect_packet(&id, 30, false)).await;
        assert_eq!(connack[3], 0, "{}: the engine's client id", target.name);
    }
    target
        .serves_after("a client with the engine's client id")
        .await;
}

pub async fn suite(mut target: Target) {
    if target.upstream_keep_alive.is_some() {
        engine_client_id(&mut target).await;
    }
    hostile_client_ids(&mut target).await;
    session_takeover(&mut target).await;
    keep_alive_zero(&mut target).await;
    keep_alive_enforced(&mut target).await;
    malformed_packets(&mut target).await;
    dollar_topics(&mut target).await;
    huge_packets(&mut target).await;
    slow_reader(&mut target).await;
    idle_connections(&mut target).await;
}
