//! A client's CONNECT: read and checked, then admitted or refused with a
//! CONNACK saying why. An admitted client gets a connection to rumqttd
//! under the gate's login, with a client id rumqttd takes and a keep-alive
//! of the gate's own, and its packets are relayed from then on.

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet};
use rumqttc::mqttbytes::{self, FixedHeader, PacketType, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::info;

use super::frames::{encode, read_frame, read_frame_up_to, valid_topic};
use super::{Conn, Gate, GateError, Principal};

/// Largest CONNECT read before a client is logged in: its strings (id,
/// will topic and message, user name, password) take at most 5 x 64 KiB.
pub(super) const MAX_CONNECT_BYTES: usize = 512 * 1024;
/// Longest client id passed to rumqttd as it is (escaped); a longer one is
/// replaced by its SHA-256.
const MAX_UPSTREAM_ID: usize = 256;

impl Gate {
    /// Reads the client's CONNECT, admits or refuses it, logs in to rumqttd
    /// for the client and relays until either side ends.
    pub(super) async fn relay<S>(&self, mut client: S) -> Result<(), GateError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let connect_timeout = self.inner.options.connect_timeout;
        let mut buf = BytesMut::with_capacity(4096);
        let first = timeout(connect_timeout, async {
            // Anything but a CONNECT is turned away at its first byte,
            // before waiting for the length it claims.
            while buf.is_empty() {
                if client.read_buf(&mut buf).await? == 0 {
                    return Ok(None);
                }
            }
            if buf[0] != 0x10 {
                return Err(GateError::Malformed("the first packet is not CONNECT"));
            }
            read_frame_up_to(&mut client, &mut buf, MAX_CONNECT_BYTES).await
        })
        .await
        .map_err(|_| GateError::Protocol("no CONNECT in time".into()))??;
        let Some((header, frame)) = first else {
            return Ok(());
        };
        let connect = match read_connect(header, frame) {
            Ok(connect) => connect,
            Err(Unread::Refused(code, why)) => {
                refuse(&mut client, code).await;
                return Err(GateError::Refused(why));
            }
            Err(Unread::Broken(e)) => return Err(e),
        };
        let client_keep_alive = connect.keep_alive;
        let (principal, upstream_connect) = match self.admit(connect) {
            Ok(admitted) => admitted,
            Err((code, why)) => {
                refuse(&mut client, code).await;
                metrics::counter!("scip_broker_refused_total", "action" => "connect").increment(1);
                info!(reason = why, "MQTT connection refused");
                return Err(GateError::Refused(why));
            }
        };

        let mut upstream = TcpStream::connect(self.inner.upstream).await?;
        upstream.set_nodelay(true)?;
        upstream
            .write_all(&encode(Packet::Connect(upstream_connect))?)
            .await?;
        // rumqttd's CONNACK reaches the client before anything else is
        // passed on either way, so a client that breaks the protocol right
        // after its CONNECT still learns that it was connected.
        let mut from_upstream = BytesMut::with_capacity(4096);
        let connack = timeout(
            connect_timeout,
            read_frame(&mut upstream, &mut from_upstream),
        )
        .await
        .map_err(|_| GateError::Protocol("no CONNACK from rumqttd in time".into()))??;
        let Some((header, connack)) = connack else {
            // rumqttd closed the connection (it refuses without a CONNACK).
            refuse(&mut client, ConnectReturnCode::ServiceUnavailable).await;
            return Err(GateError::Refused("rumqttd closed the connection"));
        };
        if header.packet_type()? != PacketType::ConnAck {
            return Err(GateError::Protocol(
                "rumqttd did not answer with CONNACK".into(),
            ));
        }
        client.write_all(&connack).await?;
        client.flush().await?;
        let conn = Conn::new(self.inner.clone(), principal, client_keep_alive);
        conn.relay(client, buf, upstream, from_upstream).await
    }

    /// The client's principal and the CONNECT rumqttd gets, or the refusal.
    fn admit(
        &self,
        mut connect: Connect,
    ) -> Result<(Principal, Connect), (ConnectReturnCode, &'static str)> {
        if connect.client_id.is_empty() && !connect.clean_session {
            // MQTT 3.1.1 section 3.1.3.1: a persistent session needs an id.
            return Err((
                ConnectReturnCode::BadClientId,
                "an empty client id with a persistent session",
            ));
        }
        if let Some(will) = &connect.last_will
            && !valid_topic(&will.topic)
        {
            return Err((ConnectReturnCode::NotAuthorized, "an invalid will topic"));
        }
        let login = connect.login.take();
        let (principal, user) = match &self.inner.logins {
            None => (Principal::Unchecked, None),
            Some(logins) => {
                let Some(login) = login else {
                    return Err((ConnectReturnCode::NotAuthorized, "no user name"));
                };
                if !logins.check(&login.username, &login.password) {
                    return Err((
                        ConnectReturnCode::BadUserNamePassword,
                        "wrong user name or password",
                    ));
                }
                let principal = match logins.acl() {
                    Some(acl) if !logins.is_plain(&login.username) => Principal::User {
                        name: login.username.clone(),
                        client_id: connect.client_id.clone(),
                        acl,
                    },
                    _ => Principal::Unchecked,
                };
                (principal, Some(login.username))
            }
        };
        if let (
            Principal::User {
                name,
                client_id,
                acl,
            },
            Some(will),
        ) = (&principal, &connect.last_will)
            && !acl.may_publish(Some(name), client_id, &will.topic)
        {
            return Err((
                ConnectReturnCode::NotAuthorized,
                "the will's topic is not the user's to publish",
            ));
        }
        connect.client_id = upstream_client_id(user.as_deref(), &connect.client_id, || {
            self.inner.anonymous_ids.fetch_add(1, Ordering::Relaxed)
        });
        connect.keep_alive = u16::try_from(self.inner.options.upstream_keep_alive.as_secs())
            .unwrap_or(u16::MAX)
            .max(1);
        connect.login = Some(self.inner.upstream_login.clone());
        Ok((principal, connect))
    }
}

/// Why a first packet gives no CONNECT to admit.
#[derive(Debug)]
enum Unread {
    /// Answered with a CONNACK of this code, then closed.
    Refused(ConnectReturnCode, &'static str),
    /// Closed without an answer, as MQTT asks of a malformed packet.
    Broken(GateError),
}

/// The CONNECT in a client's first packet, if it is one the gate can
/// admit or refuse: MQTT 3.1.1 and well-formed.
fn read_connect(header: FixedHeader, frame: Bytes) -> Result<Connect, Unread> {
    if header.packet_type().map_err(|e| Unread::Broken(e.into()))? != PacketType::Connect {
        return Err(Unread::Broken(GateError::Malformed(
            "the first packet is not CONNECT",
        )));
    }
    let connect = match Connect::read(header, frame) {
        Ok(connect) if connect.protocol == Protocol::V4 => connect,
        Ok(_)
        | Err(mqttbytes::Error::InvalidProtocolLevel(_) | mqttbytes::Error::InvalidProtocol) => {
            return Err(Unread::Refused(
                ConnectReturnCode::RefusedProtocolVersion,
                "only MQTT 3.1.1 is served",
            ));
        }
        Err(e) => return Err(Unread::Broken(e.into())),
    };
    // MQTT 3.1.1 section 1.5.3: a string with U+0000 closes the
    // connection.
    let strings = [
        Some(&connect.client_id),
        connect.login.as_ref().map(|l| &l.username),
    ];
    let will_topic = connect.last_will.as_ref().map(|w| &w.topic);
    if strings
        .into_iter()
        .chain([will_topic])
        .flatten()
        .any(|s| s.contains('\0'))
    {
        return Err(Unread::Broken(GateError::Malformed(
            "U+0000 in a CONNECT string",
        )));
    }
    Ok(connect)
}

/// Characters of a client id escaped on the way to rumqttd: those it
/// refuses (`/`, `+`, `#`, `$`), the escape itself, the separator of the
/// user prefix, and the marker of a hashed id. Every byte outside ASCII is
/// escaped as well.
const ID_ESCAPED: &AsciiSet = &CONTROLS
    .add(b'/')
    .add(b'+')
    .add(b'#')
    .add(b'$')
    .add(b'%')
    .add(b':')
    .add(b'~')
    .add(b' ');

/// The client id rumqttd gets: the user name (none on an open broker) and
/// the client's id, each escaped (so no two logins or ids meet, and
/// rumqttd gets only characters it takes), joined by `:`; an empty id is
/// numbered by `anonymous`. Every such id holds a `:`, which the engine's
/// own client id and the broker's probe do not, so no client takes over
/// their sessions.
pub fn upstream_client_id(
    user: Option<&str>,
    client_id: &str,
    anonymous: impl FnOnce() -> u64,
) -> String {
    let id = if client_id.is_empty() {
        format!(":{}", anonymous())
    } else {
        escape_id(client_id)
    };
    format!("{}:{id}", user.map(escape_id).unwrap_or_default())
}

fn escape_id(text: &str) -> String {
    let escaped = utf8_percent_encode(text, ID_ESCAPED).to_string();
    if escaped.len() <= MAX_UPSTREAM_ID {
        return escaped;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("~{hex}")
}

/// Sends a refusing CONNACK; the caller then closes the connection.
pub(super) async fn refuse<S: AsyncWrite + Unpin>(client: &mut S, code: ConnectReturnCode) {
    if let Ok(bytes) = encode(Packet::ConnAck(ConnAck::new(code, false))) {
        let _ = client.write_all(&bytes).await;
        let _ = client.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use rumqttc::mqttbytes::v4::{Connect, LastWill, Login, Packet};
    use rumqttc::mqttbytes::{Protocol, QoS};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::super::frames::encode;
    use super::super::{Gate, Principal};
    use super::upstream_client_id;
    use crate::broker::{BrokerAuth, BrokerOptions};
    use crate::mqtt::Password;
    use crate::mqtt::acl::Acl;
    use crate::mqtt::broker_files::hash_password;

    const ACL: &str = "user blue\ntopic readwrite /exercise/blue/#\n";

    fn gate_with(logins: Option<BrokerAuth>, options: BrokerOptions) -> Gate {
        // Nothing listens there: these tests never get past a refusal.
        let upstream = SocketAddr::from(([127, 0, 0, 1], 9));
        Gate::new(
            upstream,
            Login::new("scip-gate", "gate-secret"),
            logins,
            options,
        )
    }

    fn gate(logins: Option<BrokerAuth>) -> Gate {
        gate_with(logins, BrokerOptions::default())
    }

    /// The engine's login in clear, and `blue` from a password file, held
    /// to [`ACL`] when `acl`.
    fn logins(dir: &tempfile::TempDir, acl: bool) -> BrokerAuth {
        let passwords = dir.path().join("passwords");
        let hash = hash_password("blue-secret").unwrap();
        std::fs::write(&passwords, format!("blue:{hash}\n")).unwrap();
        let mut auth = BrokerAuth::default()
            .with_password_file(&passwords)
            .unwrap();
        if acl {
            let path = dir.path().join("acl");
            std::fs::write(&path, ACL).unwrap();
            auth = auth.with_acl_file(&path).unwrap();
        }
        auth.with_user("engine", Password::new("engine-secret"))
    }

    fn connect(id: &str, login: Option<(&str, &str)>) -> Connect {
        let mut connect = Connect::new(id);
        if let Some((user, password)) = login {
            connect.set_login(user, password);
        }
        connect
    }

    fn with_will(mut connect: Connect, topic: &str) -> Connect {
        connect.last_will = Some(LastWill::new(topic, "gone", QoS::AtLeastOnce, false));
        connect
    }

    fn bytes(connect: Connect) -> Vec<u8> {
        encode(Packet::Connect(connect)).unwrap().to_vec()
    }

    /// What the gate answers a client that sends `sent` and nothing more,
    /// and why it closes the connection.
    async fn answer(gate: &Gate, sent: &[u8]) -> (Vec<u8>, String) {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(sent).await.unwrap();
        client.shutdown().await.unwrap();
        let end = match gate.relay(server).await {
            Ok(()) => "closed".to_owned(),
            Err(e) => e.to_string(),
        };
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        (answer, end)
    }

    fn connack(code: u8) -> Vec<u8> {
        vec![0x20, 0x02, 0x00, code]
    }

    #[tokio::test]
    async fn a_connect_the_gate_refuses_is_answered_with_the_code_that_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let open = gate(None);
        let checked = gate(Some(logins(&dir, true)));
        let blue = Some(("blue", "blue-secret"));
        let mut persistent = connect("", None);
        persistent.clean_session = false;
        let cases: Vec<(&Gate, Vec<u8>, Vec<u8>, &str)> = vec![
            // MQTT 3.1, MQTT 3.1.1's name with 3.1's level, MQTT 5.
            (
                &open,
                b"\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01x".to_vec(),
                connack(1),
                "refused: only MQTT 3.1.1 is served",
            ),
            (
                &open,
                b"\x10\x0d\x00\x04MQTT\x03\x02\x00\x3c\x00\x01x".to_vec(),
                connack(1),
                "refused: only MQTT 3.1.1 is served",
            ),
            (
                &open,
                b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x01x".to_vec(),
                connack(1),
                "refused: only MQTT 3.1.1 is served",
            ),
            (
                &open,
                bytes(persistent),
                connack(2),
                "refused: an empty client id with a persistent session",
            ),
            (
                &open,
                bytes(with_will(connect("x", None), "/a/+")),
                connack(5),
                "refused: an invalid will topic",
            ),
            (
                &open,
                bytes(with_will(connect("x", None), "")),
                connack(5),
                "refused: an invalid will topic",
            ),
            (
                &checked,
                bytes(connect("x", None)),
                connack(5),
                "refused: no user name",
            ),
            (
                &checked,
                bytes(connect("x", Some(("blue", "red-secret")))),
                connack(4),
                "refused: wrong user name or password",
            ),
            (
                &checked,
                bytes(connect("x", Some(("red", "blue-secret")))),
                connack(4),
                "refused: wrong user name or password",
            ),
            (
                &checked,
                bytes(connect("x", Some(("engine", "blue-secret")))),
                connack(4),
                "refused: wrong user name or password",
            ),
            (
                &checked,
                bytes(with_will(connect("x", blue), "/exercise/red/status")),
                connack(5),
                "refused: the will's topic is not the user's to publish",
            ),
        ];
        for (gate, sent, expected, why) in cases {
            assert_eq!(
                answer(gate, &sent).await,
                (expected, why.to_owned()),
                "{sent:02x?}"
            );
        }
    }

    #[tokio::test]
    async fn a_first_packet_that_breaks_mqtt_closes_the_connection_unanswered() {
        let open = gate(None);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"\x30\x05\x00\x02/ax".to_vec(),
                "malformed MQTT: the first packet is not CONNECT",
            ),
            (
                b"\x11\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01x".to_vec(),
                "malformed MQTT: the first packet is not CONNECT",
            ),
            (
                b"\x10\x02\x00\x04".to_vec(),
                "malformed MQTT: Promised boundary crossed: 4",
            ),
            (
                bytes(connect("a\0b", None)),
                "malformed MQTT: U+0000 in a CONNECT string",
            ),
            (
                bytes(connect("x", Some(("a\0", "secret")))),
                "malformed MQTT: U+0000 in a CONNECT string",
            ),
            (
                bytes(with_will(connect("x", None), "/a\0")),
                "malformed MQTT: U+0000 in a CONNECT string",
            ),
            (Vec::new(), "closed"),
        ];
        for (sent, why) in cases {
            assert_eq!(
                answer(&open, &sent).await,
                (Vec::new(), why.to_owned()),
                "{sent:02x?}"
            );
        }
    }

    /// A full gate answers a CONNECT with "server unavailable", and
    /// anything else with nothing.
    #[tokio::test]
    async fn a_full_gate_answers_connack_3() {
        let full = gate_with(
            None,
            BrokerOptions {
                max_clients: 0,
                ..BrokerOptions::default()
            },
        );
        assert!(full.seat().is_none());
        let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
        for (sent, expected) in [
            (bytes(connect("x", None)), connack(3)),
            (b"\x30\x05\x00\x02/ax".to_vec(), Vec::new()),
        ] {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            full.clone().connection(server, peer, None).await;
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            assert_eq!(answer, expected, "{sent:02x?}");
        }
    }

    /// Who the gate takes a client for: unchecked, or a user and client id
    /// held to the ACL.
    fn who(principal: &Principal) -> String {
        match principal {
            Principal::Unchecked => "unchecked".to_owned(),
            Principal::User {
                name,
                client_id,
                acl,
            } => {
                assert_eq!(**acl, Acl::parse(ACL).unwrap());
                format!("{name} as {client_id}")
            }
        }
    }

    #[test]
    fn an_admitted_client_reaches_rumqttd_under_the_gates_login_and_keep_alive() {
        let dir = tempfile::tempdir().unwrap();
        let open = gate(None);
        let checked = gate(Some(logins(&dir, true)));
        let no_acl = gate(Some(logins(&dir, false)));
        let gate_login = Some(Login::new("scip-gate", "gate-secret"));
        let upstream = |id: &str, last_will: Option<LastWill>| Connect {
            protocol: Protocol::V4,
            keep_alive: 60,
            client_id: id.to_owned(),
            clean_session: true,
            last_will,
            login: gate_login.clone(),
        };
        let blue = Some(("blue", "blue-secret"));
        let engine = Some(("engine", "engine-secret"));
        let will = LastWill::new("/exercise/blue/status", "gone", QoS::AtLeastOnce, false);
        let mut quiet = connect("x/y", blue);
        quiet.keep_alive = 0;
        let cases = [
            (
                &open,
                connect("dashboard", None),
                "unchecked",
                upstream(":dashboard", None),
            ),
            (
                &open,
                connect("dashboard", Some(("anyone", "anything"))),
                "unchecked",
                upstream(":dashboard", None),
            ),
            (&open, connect("", None), "unchecked", upstream("::0", None)),
            (&open, connect("", None), "unchecked", upstream("::1", None)),
            (
                &checked,
                connect("dashboard", blue),
                "blue as dashboard",
                upstream("blue:dashboard", None),
            ),
            (&checked, quiet, "blue as x/y", upstream("blue:x%2Fy", None)),
            (
                &checked,
                connect("", blue),
                "blue as ",
                upstream("blue::0", None),
            ),
            (
                &checked,
                with_will(connect("dashboard", blue), "/exercise/blue/status"),
                "blue as dashboard",
                upstream("blue:dashboard", Some(will)),
            ),
            (
                &checked,
                with_will(connect("engine", engine), "/anything"),
                "unchecked",
                upstream(
                    "engine:engine",
                    Some(LastWill::new("/anything", "gone", QoS::AtLeastOnce, false)),
                ),
            ),
            (
                &no_acl,
                connect("dashboard", blue),
                "unchecked",
                upstream("blue:dashboard", None),
            ),
        ];
        for (gate, connect, principal, expected) in cases {
            let asked = format!("{connect:?}");
            let (admitted, sent) = gate.admit(connect).unwrap();
            assert_eq!(
                (who(&admitted).as_str(), sent),
                (principal, expected),
                "{asked}"
            );
        }
    }

    #[test]
    fn rumqttd_gets_a_keep_alive_it_takes() {
        for (keep_alive, expected) in [
            (0, 1),
            (1, 1),
            (30, 30),
            (65_535, 65_535),
            (100_000, 65_535),
        ] {
            let gate = gate_with(
                None,
                BrokerOptions {
                    upstream_keep_alive: Duration::from_secs(keep_alive),
                    ..BrokerOptions::default()
                },
            );
            let (_, sent) = gate.admit(connect("x", None)).unwrap();
            assert_eq!(sent.keep_alive, expected, "{keep_alive} s");
        }
    }

    #[test]
    fn upstream_client_ids_are_safe_for_rumqttd_and_never_meet() {
        let id = |user: Option<&str>, client: &str| upstream_client_id(user, client, || 7);
        let ids = [
            id(None, "dashboard"),
            id(None, "a/b"),
            id(None, "a%2Fb"),
            id(None, ""),
            id(None, ":7"),
            id(Some("blue"), "dashboard"),
            id(Some("blue"), ""),
            id(Some("blue:x"), "y"),
            id(Some("blue"), "x:y"),
            id(Some("blue"), "\u{202e}"),
            id(None, &"x".repeat(65_535)),
            id(None, &"y".repeat(65_535)),
        ];
        for id in &ids {
            assert!(!id.contains(['/', '+', '#', '$']), "{id}");
            assert!(id.len() <= 512, "{}", id.len());
            assert!(id.contains(':'), "{id}");
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{ids:?}");
        assert_eq!(id(None, "dashboard"), ":dashboard");
        assert_eq!(id(None, "a/b"), ":a%2Fb");
        assert_eq!(id(None, ""), "::7");
        assert_eq!(id(Some("blue"), "dashboard"), "blue:dashboard");
        assert_eq!(id(Some("blue"), ""), "blue::7");
    }
}
