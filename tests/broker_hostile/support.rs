//! The raw MQTT wire the cases speak: packets encoded by hand, a CONNECT
//! and its CONNACK over a bare TCP stream, and the embedded broker on free
//! ports.

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::QoS as WireQoS;
use rumqttc::mqttbytes::v4::{Connect, Packet, Subscribe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Long enough for anything that should happen; only reached on failure.
pub const WAIT: Duration = Duration::from_secs(15);

pub fn encode(packet: Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.write(&mut out, usize::MAX).unwrap();
    out.to_vec()
}

/// A SUBSCRIBE of `filter` at QoS 1, packet id 1.
pub fn subscribe(filter: &str) -> Vec<u8> {
    let mut packet = Subscribe::new(filter, WireQoS::AtLeastOnce);
    packet.pkid = 1;
    encode(Packet::Subscribe(packet))
}

pub fn connect_packet(id: &str, keep_alive: u16, clean: bool) -> Connect {
    let mut connect = Connect::new(id);
    connect.keep_alive = keep_alive;
    connect.clean_session = clean;
    connect
}

/// A raw connection: CONNECT sent, CONNACK read (its 4 bytes).
pub async fn raw(port: u16, connect: Connect) -> (TcpStream, [u8; 4]) {
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
pub async fn closed(stream: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    matches!(
        timeout(WAIT, stream.read_to_end(&mut sink)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

pub const ACCEPTED: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

/// An open embedded broker on free loopback ports, with `options`.
#[cfg(feature = "embedded-broker")]
pub async fn embedded(
    options: scip_orchestrator::broker::BrokerOptions,
) -> (
    scip_orchestrator::broker::EmbeddedBroker,
    scip_orchestrator::broker::BrokerSettings,
) {
    let broker = scip_orchestrator::testing::embedded_broker(None, options).await;
    let settings = broker.settings();
    (broker, settings)
}
