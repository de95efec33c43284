//! The hostile-client suite: what a careless or malicious MQTT client can
//! send, run against a private Mosquitto and against the embedded broker
//! alike. After every case the broker must still serve: a long-lived client
//! (as the engine is) keeps getting its publishes acknowledged, and a fresh
//! client connects, subscribes and receives. Where MQTT 3.1.1 says what the
//! broker answers, both brokers are held to it.

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::QoS as WireQoS;
use rumqttc::mqttbytes::v4::{Connect, LastWill, Packet, Publish, Subscribe};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use scip_orchestrator::testing::{Mosquitto, Subscriber, on_free_ports_async};

/// Long enough for anything that should happen; only reached on failure.
const WAIT: Duration = Duration::from_secs(15);

/// A broker under test and a long-lived client of it.
struct Target {
    name: &'static str,
    port: u16,
    /// Embedded only: the keep-alive the gate gives rumqttd.
    upstream_keep_alive: Option<Duration>,
    engine: LongLived,
    checks: u32,
    _broker: Broker,
}

enum Broker {
    Mosquitto(#[allow(dead_code)] Mosquitto),
    #[cfg(feature = "embedded-broker")]
    Embedded(scip_orchestrator::broker::EmbeddedBroker),
}

impl Target {
    async fn mosquitto() -> Self {
        let mosquitto = Mosquitto::start();
        let port = mosquitto.port;
        Self {
            name: "mosquitto",
            port,
            upstream_keep_alive: None,
            engine: LongLived::connect(port, None).await,
            checks: 0,
            _broker: Broker::Mosquitto(mosquitto),
        }
    }

    #[cfg(feature = "embedded-broker")]
    async fn embedded() -> Self {
        use scip_orchestrator::broker::BrokerOptions;
        let upstream_keep_alive = Duration::from_secs(2);
        let (broker, settings) = embedded(BrokerOptions {
            connect_timeout: Duration::from_secs(2),
            upstream_keep_alive,
            probe_every: Duration::from_millis(200),
            ..BrokerOptions::default()
        })
        .await;
        // Where the engine connects: rumqttd itself, with its login.
        let login = broker.engine_login().clone();
        let engine = LongLived::connect(
            broker.engine_addr().port(),
            Some((login.username.clone(), login.password.expose().to_owned())),
        )
        .await;
        Self {
            name: "embedded",
            port: settings.port,
            upstream_keep_alive: Some(upstream_keep_alive),
            engine,
            checks: 0,
            _broker: Broker::Embedded(broker),
        }
    }

    /// The broker still serves after `case`: the long-lived client's publish
    /// is acknowledged, and a fresh client connects, subscribes and gets a
    /// message.
    async fn serves_after(&mut self, case: &str) {
        self.checks += 1;
        let topic = format!("/check/{}", self.checks);
        self.engine.publish_acked(&topic).await.unwrap_or_else(|e| {
            panic!(
                "{}: after {case}, the long-lived client's publish failed: {e}",
                self.name
            )
        });
        let mut fresh = timeout(WAIT, Subscriber::connect(self.port, &topic))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: after {case}, a fresh client cannot subscribe",
                    self.name
                )
            });
        fresh
            .client
            .publish(&topic, QoS::AtLeastOnce, false, b"{\"ok\":true}".to_vec())
            .await
            .unwrap();
        let seen = fresh.next(WAIT).await;
        assert!(
            seen.is_some_and(|m| m.topic == topic),
            "{}: after {case}, a fresh client gets no message",
            self.name
        );
        #[cfg(feature = "embedded-broker")]
        if let Broker::Embedded(broker) = &self._broker {
            assert_eq!(
                *broker.health().borrow(),
                Ok(()),
                "{}: after {case}, the broker reports itself unhealthy",
                self.name
            );
        }
    }
}

/// A client that stays connected through the whole suite, as the engine
/// does, publishing QoS 1 and waiting for each PUBACK.
struct LongLived {
    id: String,
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<u16>,
    errors: mpsc::UnboundedReceiver<String>,
}

impl LongLived {
    async fn connect(port: u16, login: Option<(String, String)>) -> Self {
        let id = format!("long-lived-{port}");
        let mut opts = MqttOptions::new(&id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(8 << 20, 8 << 20);
        if let Some((user, password)) = login {
            opts.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (error_tx, errors) = mpsc::unbounded_channel();
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                        let _ = ack_tx.send(ack.pkid);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = error_tx.send(e.to_string());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        timeout(WAIT, connected)
            .await
            .expect("the long-lived client connects")
            .unwrap();
        Self {
            id,
            client,
            acks,
            errors,
        }
    }

    /// Publishes QoS 1 and waits for its PUBACK; any connection error seen
    /// since the last call fails it.
    async fn publish_acked(&mut self, topic: &str) -> Result<(), String> {
        if let Ok(e) = self.errors.try_recv() {
            return Err(format!("its connection broke: {e}"));
        }
        self.client
            .publish(topic, QoS::AtLeastOnce, false, b"{}".to_vec())
            .await
            .map_err(|e| e.to_string())?;
        match timeout(WAIT, self.acks.recv()).await {
            Ok(Some(_)) => {}
            _ => return Err("no PUBACK".into()),
        }
        match self.errors.try_recv() {
            Ok(e) => Err(format!("its connection broke: {e}")),
            Err(_) => Ok(()),
        }
    }
}

fn encode(packet: Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.write(&mut out, usize::MAX).unwrap();
    out.to_vec()
}

/// A SUBSCRIBE of `filter` at QoS 1, packet id 1.
fn subscribe(filter: &str) -> Vec<u8> {
    let mut packet = Subscribe::new(filter, WireQoS::AtLeastOnce);
    packet.pkid = 1;
    encode(Packet::Subscribe(packet))
}

fn connect_packet(id: &str, keep_alive: u16, clean: bool) -> Connect {
    let mut connect = Connect::new(id);
    connect.keep_alive = keep_alive;
    connect.clean_session = clean;
    connect
}

/// A raw connection: CONNECT sent, CONNACK read (its 4 bytes).
async fn raw(port: u16, connect: Connect) -> (TcpStream, [u8; 4]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(&encode(Packet::Connect(connect)))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    timeout(WAIT, stream.read_exact(&mut connack))
        .await
        .expect("a CONNACK in time")
        .expect("a CONNACK, not a closed connection");
    (stream, connack)
}

/// Whether the broker closes `stream` within WAIT (reading and dropping
/// whatever it still sends).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    matches!(
        timeout(WAIT, stream.read_to_end(&mut sink)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

const ACCEPTED: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

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

async fn suite(mut target: Target) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_survives_hostile_clients() {
    suite(Target::mosquitto().await).await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_survives_hostile_clients() {
    suite(Target::embedded().await).await;
}

/// `serve` on the embedded broker: the client ids that used to stop
/// rumqttd go through the gate harmlessly, a client with keep-alive 0
/// connects, and should rumqttd stop accepting connections all the same
/// (here: the same ids sent to rumqttd directly, past the gate, with the
/// engine's login), `/readyz` says so.
#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_turns_unready_when_the_broker_stops_accepting() {
    use rumqttc::mqttbytes::v4::Login;
    use tokio::io::AsyncBufReadExt;

    const BIN: &str = env!("CARGO_BIN_EXE_scip-orchestrator");
    let dir = tempfile::tempdir().unwrap();
    // Ports drawn again should another process take one before serve binds it.
    let (mut serve, mut lines, [http, port, ws_port], internal) =
        on_free_ports_async(async |[http, port, ws_port]| {
            let mut serve = tokio::process::Command::new(BIN)
                .arg("serve")
                .args(["--http-bind", &format!("127.0.0.1:{http}")])
                .args(["--broker-port", &port.to_string()])
                .args(["--broker-ws-port", &ws_port.to_string()])
                .arg("--data-dir")
                .arg(dir.path())
                .env("MQTT_USERNAME", "engine")
                .env("MQTT_PASSWORD", "engine-secret")
                .env("LOG_FORMAT", "text")
                .env("RUST_LOG", "info")
                .env_remove("MQTT_BROKER_HOST")
                .env_remove("MQTT_PASSWORD_FILE")
                .env_remove("BROKER_PASSWORD_FILE")
                .env_remove("BROKER_ACL_FILE")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let mut lines = tokio::io::BufReader::new(serve.stderr.take().unwrap()).lines();
            // Logged once every port is bound; the end instead when one was taken.
            let internal: Result<u16, String> = timeout(WAIT, async {
                let mut log = String::new();
                while let Some(line) = lines.next_line().await.unwrap() {
                    if let Some(at) = line.find("internal=127.0.0.1:") {
                        let rest = &line[at + "internal=127.0.0.1:".len()..];
                        return Ok(rest
                            .split(|c: char| !c.is_ascii_digit())
                            .next()
                            .unwrap()
                            .parse()
                            .unwrap());
                    }
                    log.push_str(&line);
                    log.push('\n');
                }
                Err(log)
            })
            .await
            .expect("serve logs where rumqttd listens");
            match internal {
                Ok(internal) => Some((serve, lines, [http, port, ws_port], internal)),
                Err(log) if log.contains(" is taken: ") => None,
                Err(log) => panic!("serve ended without naming the broker's internal port:\n{log}"),
            }
        })
        .await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let readyz = format!("http://127.0.0.1:{http}/readyz");
    let status = || async {
        reqwest::get(&readyz)
            .await
            .map(|r| r.status().as_u16())
            .ok()
    };
    let deadline = Instant::now() + WAIT;
    while status().await != Some(200) {
        assert!(Instant::now() < deadline, "serve not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Through the gate, as any client would: each id twice, then business
    // as usual.
    let login = |id: &str| {
        let mut c = connect_packet(id, 30, true);
        c.login = Some(Login::new("engine", "engine-secret"));
        c
    };
    for id in ["a/b", "a+b", "$x"] {
        for _ in 0..2 {
            let (_stream, connack) = raw(port, login(id)).await;
            assert_eq!(connack, ACCEPTED, "client id {id:?}");
        }
    }
    let mut opts = MqttOptions::new("keep-alive-zero", "127.0.0.1", port);
    opts.set_keep_alive(Duration::ZERO)
        .set_credentials("engine", "engine-secret");
    let (_client, mut eventloop) = AsyncClient::new(opts, 10);
    let connack = timeout(WAIT, eventloop.poll()).await.expect("an answer");
    assert!(
        matches!(&connack, Ok(Event::Incoming(Incoming::ConnAck(c))) if c.code == rumqttc::ConnectReturnCode::Success),
        "keep-alive 0: {connack:?}"
    );
    assert_eq!(status().await, Some(200), "ready after the hostile ids");

    // The WebSocket listener lets in pages of the service's own origin and
    // clients that are not browsers (no Origin), not a page of another site.
    for (origin, allowed) in [
        (Some("http://evil.example"), false),
        (Some("null"), false),
        (Some(format!("http://127.0.0.1:{http}")).as_deref(), true),
        (Some(format!("http://localhost:{http}")).as_deref(), true),
        (None, true),
    ] {
        let answer = websocket_connect(ws_port, origin, login("browser")).await;
        match allowed {
            true => assert_eq!(answer, Ok(ACCEPTED.to_vec()), "origin {origin:?}"),
            false => assert_eq!(answer, Err(403), "origin {origin:?}"),
        }
    }

    // Past the gate: rumqttd itself takes the id once without an answer,
    // then panics on the second and refuses every connection after.
    for _ in 0..2 {
        let mut stream = TcpStream::connect(("127.0.0.1", internal)).await.unwrap();
        stream
            .write_all(&encode(Packet::Connect(login("a/b"))))
            .await
            .unwrap();
        let mut sink = [0u8; 4];
        let _ = timeout(Duration::from_millis(500), stream.read(&mut sink)).await;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let response = reqwest::get(&readyz).await.unwrap();
        if response.status() == 503 {
            let body = response.text().await.unwrap();
            assert!(body.contains("embedded MQTT broker"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still says ready while the broker refuses every connection"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serve.start_kill().unwrap();
}

/// A CONNECT over the WebSocket listener with `origin`: the CONNACK's
/// bytes, or the handshake's HTTP status when refused.
#[cfg(feature = "embedded-broker")]
async fn websocket_connect(
    port: u16,
    origin: Option<&str>,
    connect: Connect,
) -> Result<Vec<u8>, u16> {
    use async_tungstenite::tungstenite::Message;
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    use futures_util::{SinkExt, StreamExt};

    let mut request = format!("ws://127.0.0.1:{port}/mqtt")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    let (mut ws, _) = match async_tungstenite::tokio::connect_async(request).await {
        Ok(connected) => connected,
        Err(async_tungstenite::tungstenite::Error::Http(response)) => {
            return Err(response.status().as_u16());
        }
        Err(e) => panic!("WebSocket handshake: {e}"),
    };
    ws.send(Message::Binary(encode(Packet::Connect(connect))))
        .await
        .unwrap();
    match timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(Message::Binary(bytes)))) => Ok(bytes.to_vec()),
        other => panic!("no CONNACK over WebSocket: {other:?}"),
    }
}

/// An open embedded broker on free loopback ports, with `options`.
#[cfg(feature = "embedded-broker")]
async fn embedded(
    options: scip_orchestrator::broker::BrokerOptions,
) -> (
    scip_orchestrator::broker::EmbeddedBroker,
    scip_orchestrator::broker::BrokerSettings,
) {
    let broker = scip_orchestrator::testing::embedded_broker(None, options).await;
    let settings = broker.settings();
    (broker, settings)
}

/// The embedded broker holds at most `max_clients` clients: one more gets
/// CONNACK 3, nothing reaches rumqttd's own limit (over which it refuses
/// without an answer and then panics on the same client id), and the
/// broker serves again once they leave.
#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_holds_at_most_its_clients() {
    use scip_orchestrator::broker::BrokerOptions;
    let options = BrokerOptions {
        max_clients: 20,
        probe_every: Duration::from_millis(100),
        ..BrokerOptions::default()
    };
    let (broker, settings) = embedded(options).await;
    let mut held = Vec::new();
    for n in 0..20 {
        let (stream, connack) = raw(
            settings.port,
            connect_packet(&format!("filler-{n}"), 0, true),
        )
        .await;
        assert_eq!(connack, ACCEPTED, "client {n}");
        held.push(stream);
    }
    for _ in 0..2 {
        let (_stream, connack) = raw(settings.port, connect_packet("one-too-many", 30, true)).await;
        assert_eq!(
            connack,
            [0x20, 0x02, 0x00, 0x03],
            "over the cap: server unavailable"
        );
    }
    let mut health = broker.health();
    assert!(
        timeout(Duration::from_secs(1), health.wait_for(|h| h.is_err()))
            .await
            .is_err(),
        "rumqttd stopped accepting while the gate was full"
    );
    drop(held);
    // Seats come back as the connections end.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_stream, connack) = raw(settings.port, connect_packet("one-too-many", 30, true)).await;
        if connack == ACCEPTED {
            break;
        }
        assert!(Instant::now() < deadline, "no seat came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Subscriptions through the embedded broker are bounded: at most
/// MAX_FILTERS_PER_CLIENT per client, and `max_filters` distinct filters
/// over the broker's life (rumqttd keeps a log for every filter it was
/// ever given); past either, SUBACK 0x80 for the new ones.
#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_through_the_embedded_broker_are_bounded() {
    use scip_orchestrator::broker::BrokerOptions;
    use scip_orchestrator::broker::gate::MAX_FILTERS_PER_CLIENT;
    let options = BrokerOptions {
        max_filters: 1500,
        ..BrokerOptions::default()
    };
    let (_broker, settings) = embedded(options).await;
    // SUBACK codes of one SUBSCRIBE of `filters`.
    async fn codes(stream: &mut TcpStream, pkid: u16, filters: Vec<String>) -> Vec<u8> {
        let mut packet = Subscribe::new(&filters[0], WireQoS::AtMostOnce);
        for f in &filters[1..] {
            packet.add(f.clone(), WireQoS::AtMostOnce);
        }
        packet.pkid = pkid;
        stream
            .write_all(&encode(Packet::Subscribe(packet)))
            .await
            .unwrap();
        // SUBACK: 0x90, the remaining length, the packet id, the codes.
        let mut byte = [0u8; 1];
        let mut read_byte = async || {
            timeout(WAIT, stream.read_exact(&mut byte))
                .await
                .unwrap()
                .unwrap();
            byte[0]
        };
        assert_eq!(read_byte().await, 0x90);
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = read_byte().await;
            len += usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let mut rest = vec![0u8; len];
        timeout(WAIT, stream.read_exact(&mut rest))
            .await
            .unwrap()
            .unwrap();
        rest.split_off(2)
    }
    let (mut first, connack) = raw(settings.port, connect_packet("many-a", 30, true)).await;
    assert_eq!(connack, ACCEPTED);
    let granted = |c: &[u8]| c.iter().filter(|c| **c != 0x80).count();
    let a: Vec<String> = (0..1200).map(|n| format!("a/{n}")).collect();
    let got = codes(&mut first, 1, a).await;
    assert_eq!(granted(&got), MAX_FILTERS_PER_CLIENT, "one client's cap");
    let (mut second, connack) = raw(settings.port, connect_packet("many-b", 30, true)).await;
    assert_eq!(connack, ACCEPTED);
    let b: Vec<String> = (0..1000).map(|n| format!("b/{n}")).collect();
    let got = codes(&mut second, 1, b).await;
    assert_eq!(granted(&got), 500, "the broker's cap on distinct filters");
    // A filter rumqttd already has is fine for anyone with room.
    let (mut third, connack) = raw(settings.port, connect_packet("many-c", 30, true)).await;
    assert_eq!(connack, ACCEPTED);
    let got = codes(&mut third, 1, vec!["a/1".into(), "c/1".into()]).await;
    assert_eq!(got, [0x00, 0x80]);
}

/// What a connection can make the gate hold before its login: a CONNECT
/// over 512 KiB, or a WebSocket message over 1 MiB, closes it.
#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_its_login_a_connection_costs_little() {
    use scip_orchestrator::broker::BrokerOptions;
    let (_broker, settings) = embedded(BrokerOptions::default()).await;
    // A CONNECT claiming 1 MiB is closed at its header.
    let mut stream = TcpStream::connect(("127.0.0.1", settings.port))
        .await
        .unwrap();
    stream.write_all(&[0x10, 0x80, 0x80, 0x40]).await.unwrap();
    assert!(closed(&mut stream).await, "a 1 MiB CONNECT is read");

    // A WebSocket message of 2 MiB in 256 KiB frames, before any CONNECT.
    let mut ws = TcpStream::connect(("127.0.0.1", settings.ws_port))
        .await
        .unwrap();
    ws.write_all(
        b"GET /mqtt HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Protocol: mqtt\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = [0u8; 12];
    timeout(WAIT, ws.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 101");
    let frame = |first: bool| {
        let mut f = vec![if first { 0x02 } else { 0x00 }, 0x80 | 127];
        f.extend((256u64 << 10).to_be_bytes());
        f.extend([0u8; 4]);
        f.extend(vec![0u8; 256 << 10]);
        f
    };
    let mut refused = false;
    for n in 0..8 {
        if ws.write_all(&frame(n == 0)).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(
        refused || closed(&mut ws).await,
        "a 2 MiB WebSocket message is held"
    );
}
