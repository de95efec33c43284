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
            let subscribe = Subscribe::read(header, frame.clone())?;
            if reserved_option_bits(&frame) {
                return Err(GateError::Malformed(
                    "reserved bits in a SUBSCRIBE's options",
                ));
            }
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

/// Whether a requested QoS byte of a SUBSCRIBE has one of its upper six
/// (reserved) bits set: malformed (MQTT 3.1.1 section 3.8.3.1), but
/// `mqttbytes` masks them off. Called once its reader accepted the packet,
/// so the packet id and every filter's length are there.
fn reserved_option_bits(frame: &Bytes) -> bool {
    let mut body = frame.slice(body_start(frame) + 2..);
    while body.len() >= 2 {
        let len = usize::from(body.get_u16());
        if len >= body.len() {
            return false;
        }
        body.advance(len);
        if body.get_u8() & 0b1111_1100 != 0 {
            return true;
        }
    }
    false
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

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use rumqttc::mqttbytes;

    use super::{FromClient, from_client, read_frame_up_to};

    /// What the gate makes of one whole packet from a client: the packet
    /// it passes on, or why it closes the connection.
    fn check(bytes: &[u8]) -> String {
        let frame = Bytes::copy_from_slice(bytes);
        let header = mqttbytes::check(frame.iter(), usize::MAX).unwrap();
        assert_eq!(header.frame_length(), bytes.len(), "{bytes:02x?}");
        match from_client(header, frame) {
            Ok(FromClient::Publish(p)) => format!("PUBLISH {} {:?} {}", p.topic, p.qos, p.pkid),
            Ok(FromClient::PubAck(pkid)) => format!("PUBACK {pkid}"),
            Ok(FromClient::PubRel(pkid)) => format!("PUBREL {pkid}"),
            Ok(FromClient::Subscribe(s)) => {
                let filters: Vec<_> = s.filters.iter().map(|f| (&f.path, f.qos)).collect();
                format!("SUBSCRIBE {} {filters:?}", s.pkid)
            }
            Ok(FromClient::Unsubscribe(filters)) => format!("UNSUBSCRIBE {filters:?}"),
            Ok(FromClient::Disconnect) => "DISCONNECT".into(),
            Ok(FromClient::Other) => "passed on".into(),
            Err(e) => format!("closed: {e}"),
        }
    }

    #[test]
    fn a_client_packet_that_breaks_mqtt_3_1_1_closes_the_connection() {
        let cases: &[(&[u8], &str)] = &[
            // PUBLISH
            (b"\x32\x07\x00\x02/a\x00\x07x", "PUBLISH /a AtLeastOnce 7"),
            (b"\x30\x05\x00\x02/ax", "PUBLISH /a AtMostOnce 0"),
            (b"\x34\x07\x00\x02/a\x00\x07x", "PUBLISH /a ExactlyOnce 7"),
            (
                b"\x38\x05\x00\x02/ax",
                "closed: malformed MQTT: DUP on a QoS 0 PUBLISH",
            ),
            (
                b"\x30\x05\x00\x03a/#",
                "closed: malformed MQTT: a PUBLISH topic that is empty or has wildcards",
            ),
            (
                b"\x30\x05\x00\x03a+b",
                "closed: malformed MQTT: a PUBLISH topic that is empty or has wildcards",
            ),
            (
                b"\x30\x03\x00\x00x",
                "closed: malformed MQTT: a PUBLISH topic that is empty or has wildcards",
            ),
            (
                b"\x30\x05\x00\x03a\x00b",
                "closed: malformed MQTT: a PUBLISH topic that is empty or has wildcards",
            ),
            (
                b"\x36\x07\x00\x02/a\x00\x07x",
                "closed: malformed MQTT: Invalid QoS level: 3",
            ),
            (
                b"\x32\x07\x00\x02/a\x00\x00x",
                "closed: malformed MQTT: Packet id Zero",
            ),
            // PUBACK, PUBREC, PUBREL, PUBCOMP
            (b"\x40\x02\x00\x07", "PUBACK 7"),
            (b"\x40\x02\x01\x00", "PUBACK 256"),
            (b"\x40\x02\x00\x00", "closed: malformed MQTT: packet id 0"),
            (
                b"\x41\x02\x00\x07",
                "closed: malformed MQTT: reserved flags set",
            ),
            (
                b"\x40\x03\x00\x07\x00",
                "closed: malformed MQTT: a packet of the wrong length",
            ),
            (
                b"\x40\x01\x07",
                "closed: malformed MQTT: a packet of the wrong length",
            ),
            (b"\x50\x02\x00\x07", "passed on"),
            (b"\x50\x02\x00\x00", "closed: malformed MQTT: packet id 0"),
            (
                b"\x52\x02\x00\x07",
                "closed: malformed MQTT: reserved flags set",
            ),
            (b"\x62\x02\x00\x07", "PUBREL 7"),
            (
                b"\x60\x02\x00\x07",
                "closed: malformed MQTT: reserved flags set",
            ),
            (b"\x62\x02\x00\x00", "closed: malformed MQTT: packet id 0"),
            (b"\x70\x02\x00\x07", "passed on"),
            (b"\x70\x02\x00\x00", "closed: malformed MQTT: packet id 0"),
            // SUBSCRIBE
            (
                b"\x82\x08\x00\x01\x00\x03a/#\x01",
                r#"SUBSCRIBE 1 [("a/#", AtLeastOnce)]"#,
            ),
            (
                b"\x82\x0c\x00\x02\x00\x01+\x00\x00\x03/a/\x02",
                r#"SUBSCRIBE 2 [("+", AtMostOnce), ("/a/", ExactlyOnce)]"#,
            ),
            (
                b"\x80\x08\x00\x01\x00\x03a/#\x01",
                "closed: malformed MQTT: reserved flags set",
            ),
            (
                b"\x82\x08\x00\x00\x00\x03a/#\x01",
                "closed: malformed MQTT: packet id 0",
            ),
            (
                b"\x82\x0a\x00\x01\x00\x05a/#/b\x01",
                "closed: malformed MQTT: an invalid topic filter",
            ),
            (
                b"\x82\x08\x00\x01\x00\x03a+/\x01",
                "closed: malformed MQTT: an invalid topic filter",
            ),
            (
                b"\x82\x08\x00\x01\x00\x03a\x00b\x01",
                "closed: malformed MQTT: an invalid topic filter",
            ),
            (
                b"\x82\x02\x00\x01",
                "closed: malformed MQTT: A Subscribe packet must contain atleast one filter",
            ),
            (
                b"\x82\x08\x00\x01\x00\x03a/#\x03",
                "closed: malformed MQTT: Invalid QoS level: 3",
            ),
            (
                b"\x82\x08\x00\x01\x00\x03a/#\x05",
                "closed: malformed MQTT: reserved bits in a SUBSCRIBE's options",
            ),
            (
                b"\x82\x0c\x00\x02\x00\x01+\x00\x00\x03/a/\x81",
                "closed: malformed MQTT: reserved bits in a SUBSCRIBE's options",
            ),
            // UNSUBSCRIBE, read by the gate itself
            (
                b"\xa2\x0c\x00\x01\x00\x03a/#\x00\x03b/+",
                r#"UNSUBSCRIBE ["a/#", "b/+"]"#,
            ),
            (
                b"\xa0\x07\x00\x01\x00\x03a/#",
                "closed: malformed MQTT: reserved flags set",
            ),
            (
                b"\xa2\x07\x00\x00\x00\x03a/#",
                "closed: malformed MQTT: packet id 0",
            ),
            (b"\xa2\x01\x00", "closed: malformed MQTT: packet id 0"),
            (
                b"\xa2\x02\x00\x01",
                "closed: malformed MQTT: an UNSUBSCRIBE without filters",
            ),
            (
                b"\xa2\x05\x00\x01\x00\x05a",
                "closed: malformed MQTT: a truncated UNSUBSCRIBE",
            ),
            (
                b"\xa2\x03\x00\x01\x00",
                "closed: malformed MQTT: a truncated UNSUBSCRIBE",
            ),
            (
                b"\xa2\x07\x00\x01\x00\x03a#b",
                "closed: malformed MQTT: an invalid topic filter",
            ),
            (
                b"\xa2\x06\x00\x01\x00\x02\xff\xfe",
                "closed: malformed MQTT: an invalid topic filter",
            ),
            (
                b"\xa2\x04\x00\x01\x00\x00",
                "closed: malformed MQTT: an invalid topic filter",
            ),
            // PINGREQ, DISCONNECT
            (b"\xc0\x00", "passed on"),
            (b"\xc2\x00", "closed: malformed MQTT: reserved flags set"),
            (
                b"\xc0\x01\x00",
                "closed: malformed MQTT: a packet of the wrong length",
            ),
            (b"\xe0\x00", "DISCONNECT"),
            (b"\xe1\x00", "closed: malformed MQTT: reserved flags set"),
            (
                b"\xe0\x01\x00",
                "closed: malformed MQTT: a packet of the wrong length",
            ),
            // Packets a client never sends.
            (b"\x10\x00", "closed: malformed MQTT: a second CONNECT"),
            (
                b"\x20\x02\x00\x00",
                "closed: malformed MQTT: a packet only a server sends",
            ),
            (
                b"\x90\x03\x00\x01\x00",
                "closed: malformed MQTT: a packet only a server sends",
            ),
            (
                b"\xb0\x02\x00\x01",
                "closed: malformed MQTT: a packet only a server sends",
            ),
            (
                b"\xd0\x00",
                "closed: malformed MQTT: a packet only a server sends",
            ),
            (
                b"\x00\x00",
                "closed: malformed MQTT: a reserved packet type",
            ),
            (
                b"\xf0\x00",
                "closed: malformed MQTT: a reserved packet type",
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(check(bytes), *expected, "{bytes:02x?}");
        }
    }

    /// The variable header is found after a remaining length of more than
    /// one byte.
    #[test]
    fn a_long_unsubscribe_is_read_past_its_remaining_length() {
        let filter = "f".repeat(200);
        let mut bytes = vec![0xa2, 0xcc, 0x01, 0x00, 0x01, 0x00, 200];
        bytes.extend_from_slice(filter.as_bytes());
        assert_eq!(check(&bytes), format!("UNSUBSCRIBE [{filter:?}]"));
    }

    /// The frames read from `stream`, and how reading ended.
    async fn frames(mut stream: &[u8], max: usize) -> (Vec<String>, String) {
        let mut out = Vec::new();
        let mut buf = BytesMut::new();
        loop {
            match read_frame_up_to(&mut stream, &mut buf, max).await {
                Ok(Some((_, frame))) => out.push(format!("{:02x?}", &frame[..])),
                Ok(None) => return (out, "end".to_owned()),
                Err(e) => return (out, e.to_string()),
            }
        }
    }

    #[tokio::test]
    async fn frames_are_read_whole_and_never_past_their_limit() {
        let (read, end) = frames(b"\xc0\x00\x40\x02\x00\x07\xe0", 16).await;
        assert_eq!(read, ["[c0, 00]", "[40, 02, 00, 07]"]);
        assert_eq!(end, "end");
        let (read, end) = frames(b"\xc0\x00\x30\x11", 16).await;
        assert_eq!(read, ["[c0, 00]"]);
        assert_eq!(end, "malformed MQTT: payload size limit exceeded: 17");
        let (read, end) = frames(b"\x30\xff\xff\xff\xff\x01", usize::MAX).await;
        assert!(read.is_empty());
        assert_eq!(end, "malformed MQTT: Malformed remaining length");
    }
}
