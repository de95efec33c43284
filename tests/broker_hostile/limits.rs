//! What the embedded broker holds at most: clients, subscriptions, and the
//! bytes of a connection before its login.

use std::time::Duration;

use rumqttc::mqttbytes::QoS as WireQoS;
use rumqttc::mqttbytes::v4::{Packet, Subscribe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::support::{ACCEPTED, WAIT, closed, connect_packet, embedded, encode, raw};

/// The embedded broker holds at most `max_clients` clients: one more gets
/// CONNACK 3, nothing reaches rumqttd's own limit (over which it refuses
/// without an answer and then panics on the same client id), and the
/// broker serves again once they leave.
pub async fn the_embedded_broker_holds_at_most_its_clients() {
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
pub async fn subscriptions_through_the_embedded_broker_are_bounded() {
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
pub async fn before_its_login_a_connection_costs_little() {
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
