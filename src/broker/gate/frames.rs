//! Packets framed and checked: each is read whole from its length, no
//! bigger than its limit, and a client's is checked against MQTT 3.1.1
//! before anything else looks at it. A packet that breaks the standard
//! closes the connection, as the standard asks.

use bytes::{Buf, Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{Packet, Publish, Subscribe};
use rumqttc::mqttbytes::{self, FixedHeader, PacketType, QoS};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::GateError;
use crate::mqtt::MAX_PACKET_SIZE;

/// A client's packet, checked against MQTT 3.1.1.
#[derive(Debug)]
pub(super) enum FromClient {
    Publish(Publish),
    PubAck(u16),
    PubRel(u16),
    Subscribe(Subscribe),
    /// Its filters.
    Unsubscribe(Vec<String>),
    Disconnect,
    /// PUBREC, PUBCOMP, UNSUBSCRIBE, PINGREQ: passed on as they are.
    Other,
}

/// Checks a client's packet against MQTT 3.1.1: its type and fixed-header
/// flags, and what rumqttd would otherwise take in (topics, filters, packet
/// ids). Anything else is a reason to close the connection.
pub(super) fn from_client(header: FixedHeader, frame: Bytes) -> Result<FromClient, GateError> {
    let flags = frame[0] & 0x0f;
    let body_len = frame.len() - body_start(&frame);
    let kind = header
        .packet_type()
        .map_err(|_| GateError::Malformed("a reserved packet type"))?;
    let expect = |wanted_flags: u8, wanted_len: Option<usize>| {
        if flags != wanted_flags {
            return Err(GateError::Malformed("reserved flags set"));
        }
        if wanted_len.is_some_and(|len| len != body_len) {
            return Err(GateError::Malformed("a packet of the wrong length"));
        }
        Ok(())
    };
    match kind {
        PacketType::Publish => {
            let publish = Publish::read(header, frame)?;
            if !valid_topic(&publish.topic) {
                return Err(GateError::Malformed(
                    "a PUBLISH topic that is empty or has wildcards",
                ));
            }
            if publish.qos == QoS::AtMostOnce && publish.dup {
                return Err(GateError::Malformed("DUP on a QoS 0 PUBLISH"));
            }
            Ok(FromClient::Publish(publish))
        }
        PacketType::PubAck => {
            expect(0, Some(2))?;
            Ok(FromClient::PubAck(packet_id(&frame)?))
        }
        PacketType::PubRec | PacketType::PubComp => {
            expect(0, Some(2))?;
            packet_id(&frame)?;
            Ok(FromClient::Other)
        }
        PacketType::PubRel => {
            expect(2, Some(2))?;
            Ok(FromClient::PubRel(packet_id(&frame)?))
        }
        PacketType::Subscribe => {
            expect(2, None)?;
            let subscribe = Subscribe::read(header, frame)?;
            if subscribe.pkid == 0 {
                return Err(GateError::Malformed("packet id 0"));
            }
            if !subscribe.filters.iter().all(|f| valid_filter(&f.path)) {
                return Err(GateError::Malformed("an invalid topic filter"));
            }
            Ok(FromClient::Subscribe(subscribe))
        }
        PacketType::Unsubscribe => {
            expect(2, None)?;
            Ok(FromClient::Unsubscribe(check_unsubscribe(&frame)?))
        }
        PacketType::PingReq => {
            expect(0, Some(0))?;
            Ok(FromClient::Other)
        }
        PacketType::Disconnect => {
            expect(0, Some(0))?;
            Ok(FromClient::Disconnect)
        }
        PacketType::Connect => Err(GateError::Malformed("a second CONNECT")),
        PacketType::ConnAck | PacketType::SubAck | PacketType::UnsubAck | PacketType::PingResp => {
            Err(GateError::Malformed("a packet only a server sends"))
        }
    }
}

/// Where the variable header starts: after the first byte and the
/// remaining length (one to four bytes, each but the last with its top bit
/// set; `read_frame` checked them).
fn body_start(frame: &[u8]) -> usize {
    1 + frame[1..]
        .iter()
        .position(|b| b & 0x80 == 0)
        .map_or(frame.len() - 1, |i| i + 1)
}

/// The packet id of a PUBACK, PUBREC, PUBREL or PUBCOMP: never 0.
fn packet_id(frame: &[u8]) -> Result<u16, GateError> {
    let body = &frame[body_start(frame)..];
    match body {
        [hi, lo] if (*hi, *lo) != (0, 0) => Ok(u16::from_be_bytes([*hi, *lo])),
        _ => Err(GateError::Malformed("packet id 0")),
    }
}

/// The filters of an UNSUBSCRIBE: a packet id other than 0 and at least
/// one valid filter, each within the packet (read here rather than by
/// `mqttbytes`, whose reader trusts the lengths it is given).
fn check_unsubscribe(frame: &Bytes) -> Result<Vec<String>, GateError> {
    let mut body = frame.slice(body_start(frame)..);
    if body.len() < 2 || body.get_u16() == 0 {
        return Err(GateError::Malformed("packet id 0"));
    }
    if body.is_empty() {
        return Err(GateError::Malformed("an UNSUBSCRIBE without filters"));
    }
    let mut filters = Vec::new();
    while !body.is_empty() {
        if body.len() < 2 {
            return Err(GateError::Malformed("a truncated UNSUBSCRIBE"));
        }
        let len = usize::from(body.get_u16());
        if len > body.len() {
            return Err(GateError::Malformed("a truncated UNSUBSCRIBE"));
        }
        let filter = body.split_to(len);
        match std::str::from_utf8(&filter) {
            Ok(filter) if valid_filter(filter) => filters.push(filter.to_owned()),
            _ => return Err(GateError::Malformed("an invalid topic filter")),
        }
    }
    Ok(filters)
}

/// A topic a client may publish to (MQTT 3.1.1 section 4.7): at least one
/// character, no wildcard, no NUL.
pub(super) fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// A topic filter a client may subscribe to (section 4.7.1).
pub(super) fn valid_filter(filter: &str) -> bool {
    !filter.contains('\0') && mqttbytes::valid_filter(filter)
}

/// The next whole packet: its header and all its bytes; None at the end of
/// the stream.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<Option<(FixedHeader, Bytes)>, GateError> {
    read_frame_up_to(reader, buf, MAX_PACKET_SIZE).await
}

/// [`read_frame`] of a packet of at most `max` bytes.
pub(super) async fn read_frame_up_to<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<(FixedHeader, Bytes)>, GateError> {
    loop {
        match mqttbytes::check(buf.iter(), max) {
            Ok(header) => {
                let frame = buf.split_to(header.frame_length()).freeze();
                return Ok(Some((header, frame)));
            }
            Err(mqttbytes::Error::InsufficientBytes(_)) => {
                if reader.read_buf(buf).await? == 0 {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub(super) fn encode(packet: Packet) -> Result<Bytes, GateError> {
    let mut out = BytesMut::new();
    packet.write(&mut out, usize::MAX)?;
    Ok(out.freeze())
}
