//! The embedded broker's gate: the listeners MQTT clients reach (TCP and
//! WebSocket), in front of rumqttd, which listens on loopback only and
//! takes no connection without a login. rumqttd 0.20 checks logins but not
//! topics (see `broker`), and it does not survive every client (below), so
//! the gate is the broker's edge: it checks logins and the topic rules of
//! the files Mosquitto takes (the password file and the `acl_file`
//! `broker-acl` writes; see `topic_acl`), and passes rumqttd only what it
//! is known to survive.
//!
//! Per connection the gate reads the client's CONNECT and answers a refusal
//! itself, with a CONNACK saying why: an MQTT version other than 3.1.1, no
//! or a wrong login, a will the client may not publish, an empty client id
//! with a persistent session. Otherwise it opens a connection to rumqttd
//! with the gate's own login, a client id made safe for rumqttd (escaped,
//! and prefixed by the user name, so no client can take over the session of
//! another user) and a keep-alive of its own. Then every packet is framed
//! and checked both ways:
//! - a packet that breaks MQTT 3.1.1 (a reserved type or flag, a topic with
//!   wildcards or no characters, an invalid filter, a packet id of 0, a
//!   second CONNECT, a packet only servers send) closes the connection, as
//!   the standard asks;
//! - a PUBLISH to a topic the user may not write is acknowledged and
//!   dropped (as Mosquitto does), a SUBSCRIBE filter no readable topic
//!   matches gets a failure code in the SUBACK (the other filters of the
//!   same SUBSCRIBE are subscribed), and a message the user may not read is
//!   never delivered (the gate acknowledges it to rumqttd in the client's
//!   place); an open broker and the engine's own login skip these rules;
//! - the client's keep-alive is the gate's to enforce (no packet within one
//!   and a half times it closes the connection; 0 turns it off, as MQTT
//!   allows), and the gate keeps its own connection to rumqttd alive with
//!   PINGREQs whose answers it keeps to itself.
//!
//! What rumqttd does not survive, and why the gate stands in front: a
//! client id with `/`, `+`, `#` or `$` is refused by rumqttd's router
//! without an answer, and a second CONNECT under the same id then panics
//! rumqttd with a lock held, after which it refuses every connection, the
//! engine's included; a keep-alive of 0 is refused. The gate never passes
//! either on.
//!
//! The engine connects to rumqttd directly, so its own publishes take no
//! extra hop.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Login, Packet, PubAck, PubComp, PubRec, PubRel, Publish,
    SubAck, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{self, FixedHeader, PacketType, Protocol, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::broker::{BrokerAuth, BrokerOptions, Origins};
use crate::mqtt::MAX_PACKET_SIZE;
use crate::mqtt::acl::Acl;

/// Packets queued towards one side of a connection.
const QUEUE: usize = 256;
/// Bytes queued towards one side of a connection.
const QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Largest CONNECT read before a client is logged in: its strings (id,
/// will topic and message, user name, password) take at most 5 x 64 KiB.
const MAX_CONNECT_BYTES: usize = 512 * 1024;
/// Largest WebSocket message (or frame) a client may send: browsers
/// publish commands, not injects; what the broker sends them is not
/// limited by this. A WebSocket message is held whole before the gate
/// reads it, so this bounds what a connection costs before its login.
const MAX_WS_MESSAGE: usize = 1024 * 1024;
/// Most subscriptions one client may hold through the gate.
pub const MAX_FILTERS_PER_CLIENT: usize = 1000;
/// How long a closing connection may take to pass on what it has queued.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest client id passed to rumqttd as it is (escaped); a longer one is
/// replaced by its SHA-256.
const MAX_UPSTREAM_ID: usize = 256;

/// The gate of one embedded broker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    upstream: SocketAddr,
    /// The login the gate gives rumqttd for every client.
    upstream_login: Login,
    /// Logins and topic rules: its plain users (the engine's MQTT_USERNAME)
    /// pass unchecked, and without an ACL a logged-in client may use every
    /// topic (Mosquitto without `acl_file`). None: an open broker.
    logins: Option<BrokerAuth>,
    options: BrokerOptions,
    /// Numbers client ids the clients left empty.
    anonymous_ids: AtomicU64,
    /// One permit per client the gate may hold (`max_clients`).
    clients: Arc<tokio::sync::Semaphore>,
    /// Every filter ever passed to rumqttd, which keeps a log per filter for
    /// good: at most `max_filters`.
    filters: Mutex<HashSet<String>>,
}

/// What a connected client is.
#[derive(Debug, Clone)]
enum Principal {
    /// Every well-formed packet passes.
    Unchecked,
    /// Checked against the ACL as it was when the client connected.
    User {
        name: String,
        client_id: String,
        acl: Arc<Acl>,
    },
}

impl Gate {
    /// A gate in front of rumqttd at `upstream`, which takes
    /// `upstream_login`; `logins` None is an open broker.
    pub fn new(
        upstream: SocketAddr,
        upstream_login: Login,
        logins: Option<BrokerAuth>,
        options: BrokerOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                upstream,
                upstream_login,
                logins,
                clients: Arc::new(tokio::sync::Semaphore::new(options.max_clients)),
                options,
                anonymous_ids: AtomicU64::new(0),
                filters: Mutex::default(),
            }),
        }
    }

    /// Serves MQTT over TCP on `listener` until the runtime ends.
    pub async fn serve_tcp(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let gate = self.clone();
                    let seat = self.seat();
                    tokio::spawn(async move { gate.connection(stream, peer, seat).await });
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }

    /// Serves MQTT over WebSocket on `listener` (any path, subprotocol
    /// `mqtt`) until the runtime ends. A browser page from an origin the
    /// options do not allow is refused at the handshake (403).
    pub async fn serve_ws(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let gate = self.clone();
                    let seat = self.seat();
                    tokio::spawn(async move {
                        let callback = Handshake {
                            origins: &gate.inner.options.origins,
                        };
                        let config = async_tungstenite::tungstenite::protocol::WebSocketConfig {
                            max_message_size: Some(MAX_WS_MESSAGE),
                            max_frame_size: Some(MAX_WS_MESSAGE),
                            ..Default::default()
                        };
                        let handshake = async_tungstenite::tokio::accept_hdr_async_with_config(
                            stream,
                            callback,
                            Some(config),
                        );
                        match timeout(gate.inner.options.connect_timeout, handshake).await {
                            Ok(Ok(ws)) => {
                                let stream = ws_stream_tungstenite::WsStream::new(ws);
                                gate.connection(stream, peer, seat).await;
                            }
                            Ok(Err(e)) => debug!(%peer, error = %e, "WebSocket handshake failed"),
                            Err(_) => debug!(%peer, "WebSocket handshake timed out"),
                        }
                    });
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }

    /// A place for one more client, while there is one
    /// (`BrokerOptions::max_clients`).
    fn seat(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.clients.clone().try_acquire_owned().ok()
    }

    async fn connection<S>(
        self,
        mut client: S,
        peer: SocketAddr,
        seat: Option<tokio::sync::OwnedSemaphorePermit>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(_seat) = seat else {
            // Full: the CONNECT (if it comes in time) gets CONNACK 3.
            metrics::counter!("scip_broker_refused_total", "action" => "full").increment(1);
            let mut buf = BytesMut::new();
            let connect = timeout(
                self.inner.options.connect_timeout,
                read_frame_up_to(&mut client, &mut buf, MAX_CONNECT_BYTES),
            )
            .await;
            if let Ok(Ok(Some((header, _)))) = connect
                && header.packet_type().ok() == Some(PacketType::Connect)
            {
                refuse(&mut client, ConnectReturnCode::ServiceUnavailable).await;
            }
            debug!(%peer, "MQTT connection refused: the broker holds BROKER_MAX_CLIENTS clients");
            return;
        };
        if let Err(e) = self.relay(client).await {
            if matches!(e, GateError::Malformed(_) | GateError::KeepAlive) {
                metrics::counter!("scip_broker_refused_total", "action" => "protocol").increment(1);
            }
            debug!(%peer, error = %e, "MQTT connection closed");
        }
    }

    async fn relay<S>(&self, mut client: S) -> Result<(), GateError>
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
        if header.packet_type()? != PacketType::Connect {
            return Err(GateError::Malformed("the first packet is not CONNECT"));
        }
        let connect = match Connect::read(header, frame) {
            Ok(connect) if connect.protocol == Protocol::V4 => connect,
            Ok(_)
            | Err(mqttbytes::Error::InvalidProtocolLevel(_) | mqttbytes::Error::InvalidProtocol) => {
                refuse(&mut client, ConnectReturnCode::RefusedProtocolVersion).await;
                return Err(GateError::Refused("only MQTT 3.1.1 is served"));
            }
            Err(e) => return Err(e.into()),
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
            return Err(GateError::Malformed("U+0000 in a CONNECT string"));
        }
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
        let conn = Conn {
            principal,
            client_idle: (client_keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(client_keep_alive) * 1500)),
            upstream_keep_alive: self.inner.options.upstream_keep_alive,
            state: Mutex::default(),
            deliveries: tokio::sync::Mutex::default(),
            warned: AtomicBool::new(false),
            sent_upstream: AtomicBool::new(false),
            gate_pings: AtomicU32::new(0),
            gate: self.inner.clone(),
            held: Mutex::default(),
        };
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

/// A topic a client may publish to (MQTT 3.1.1 section 4.7): at least one
/// character, no wildcard, no NUL.
fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// A topic filter a client may subscribe to (section 4.7.1).
fn valid_filter(filter: &str) -> bool {
    !filter.contains('\0') && mqttbytes::valid_filter(filter)
}

/// One client connection past its CONNECT.
struct Conn {
    principal: Principal,
    /// How long the client may stay silent (1.5 times its keep-alive);
    /// None: keep-alive off.
    client_idle: Option<Duration>,
    upstream_keep_alive: Duration,
    state: Mutex<State>,
    /// QoS 1 deliveries of rumqttd to a checked client not yet
    /// acknowledged, in order, and whether each was withheld. rumqttd takes
    /// acknowledgements only in the order it sent (an out-of-order PUBACK
    /// ends the connection), so the gate acknowledges a withheld message
    /// only once the client has acknowledged every delivery before it.
    deliveries: tokio::sync::Mutex<VecDeque<(u16, bool)>>,
    /// Whether a refusal was logged at warn level yet (the rest go to debug).
    warned: AtomicBool,
    /// Whether anything went to rumqttd since the pinger last looked.
    sent_upstream: AtomicBool,
    /// PINGREQs of the gate's own whose PINGRESP is still to come (and is
    /// not passed on).
    gate_pings: AtomicU32,
    gate: Arc<Inner>,
    /// The filters this client holds (at most MAX_FILTERS_PER_CLIENT).
    held: Mutex<HashSet<String>>,
}

/// What one connection's two directions share.
#[derive(Default)]
struct State {
    /// SUBSCRIBEs passed on with some filters left out: packet id to which
    /// of the client's filters were granted, to rebuild the client's SUBACK.
    partial: HashMap<u16, Vec<bool>>,
    /// QoS 2 publishes of the client that were dropped (PUBREC sent); their
    /// PUBREL gets a PUBCOMP from the gate.
    dropped_from_client: HashSet<u16>,
    /// QoS 2 deliveries withheld from the client (PUBREC sent to rumqttd).
    dropped_to_client: HashSet<u16>,
}

/// A client's packet, checked against MQTT 3.1.1.
enum FromClient {
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

impl Conn {
    async fn relay<S>(
        &self,
        client: S,
        buf: BytesMut,
        upstream: TcpStream,
        from_upstream: BytesMut,
    ) -> Result<(), GateError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut client_r, mut client_w) = tokio::io::split(client);
        let (mut upstream_r, mut upstream_w) = upstream.into_split();
        let (to_client, mut client_queue) = Queue::new();
        let (to_upstream, mut upstream_queue) = Queue::new();
        let result = tokio::select! {
            r = self.client_to_broker(&mut client_r, buf, &to_upstream, &to_client) => r,
            r = self.broker_to_client(&mut upstream_r, from_upstream, &to_upstream, &to_client) => r,
            r = write_queue(&mut client_queue, &mut client_w) => r,
            r = write_queue(&mut upstream_queue, &mut upstream_w) => r,
            r = self.keep_upstream_alive(&to_upstream) => r,
        };
        // Whatever was read is passed on before both sides close (a client's
        // last PUBLISH before it hangs up, say).
        let _ = timeout(DRAIN_TIMEOUT, async {
            drop((to_client, to_upstream));
            let _ = write_queue(&mut upstream_queue, &mut upstream_w).await;
            let _ = write_queue(&mut client_queue, &mut client_w).await;
        })
        .await;
        result
    }

    /// Client to rumqttd: every packet checked against MQTT, PUBLISH and
    /// SUBSCRIBE against the ACL.
    async fn client_to_broker<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        mut buf: BytesMut,
        to_upstream: &Queue,
        to_client: &Queue,
    ) -> Result<(), GateError> {
        loop {
            let next = match self.client_idle {
                Some(idle) => timeout(idle, read_frame(reader, &mut buf))
                    .await
                    .map_err(|_| GateError::KeepAlive)??,
                None => read_frame(reader, &mut buf).await?,
            };
            let Some((header, frame)) = next else {
                return Ok(());
            };
            match from_client(header, frame.clone())? {
                FromClient::Publish(publish) => {
                    let Principal::User {
                        name,
                        client_id,
                        acl,
                    } = &self.principal
                    else {
                        self.up(to_upstream, frame).await?;
                        continue;
                    };
                    if acl.may_publish(Some(name), client_id, &publish.topic) {
                        self.up(to_upstream, frame).await?;
                        continue;
                    }
                    self.refused("publish", &publish.topic);
                    match publish.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => {
                            reply(to_client, Packet::PubAck(PubAck::new(publish.pkid)))?
                        }
                        QoS::ExactlyOnce => {
                            self.state().dropped_from_client.insert(publish.pkid);
                            reply(to_client, Packet::PubRec(PubRec::new(publish.pkid)))?;
                        }
                    }
                }
                FromClient::PubAck(pkid) => {
                    if matches!(self.principal, Principal::Unchecked) {
                        self.up(to_upstream, frame).await?;
                        continue;
                    }
                    let mut deliveries = self.deliveries.lock().await;
                    self.up(to_upstream, frame).await?;
                    if let Some(at) = deliveries.iter().position(|(p, _)| *p == pkid) {
                        deliveries.remove(at);
                    }
                    self.ack_withheld(&mut deliveries, to_upstream).await?;
                }
                FromClient::PubRel(pkid) => {
                    if self.state().dropped_from_client.remove(&pkid) {
                        reply(to_client, Packet::PubComp(PubComp::new(pkid)))?;
                    } else {
                        self.up(to_upstream, frame).await?;
                    }
                }
                FromClient::Subscribe(subscribe) => {
                    self.subscribe(subscribe, frame, to_upstream, to_client)
                        .await?
                }
                FromClient::Disconnect => {
                    // The client closes now; anything after is not read.
                    self.up(to_upstream, frame).await?;
                    return Ok(());
                }
                FromClient::Unsubscribe(filters) => {
                    {
                        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                        for filter in &filters {
                            held.remove(filter);
                        }
                    }
                    self.up(to_upstream, frame).await?
                }
                FromClient::Other => self.up(to_upstream, frame).await?,
            }
        }
    }

    /// A SUBSCRIBE, filter by filter under the ACL.
    async fn subscribe(
        &self,
        mut subscribe: Subscribe,
        frame: Bytes,
        to_upstream: &Queue,
        to_client: &Queue,
    ) -> Result<(), GateError> {
        // QoS 2 deliveries to a checked user would need their own ordering
        // of withheld messages; it is granted at most QoS 1 (MQTT lets the
        // server grant less than asked).
        let user = matches!(self.principal, Principal::User { .. });
        let capped = user && subscribe.filters.iter().any(|f| f.qos == QoS::ExactlyOnce);
        if capped {
            for filter in &mut subscribe.filters {
                if filter.qos == QoS::ExactlyOnce {
                    filter.qos = QoS::AtLeastOnce;
                }
            }
        }
        let granted: Vec<bool> = subscribe
            .filters
            .iter()
            .map(|f| self.may_hold(&f.path))
            .collect();
        if granted.iter().all(|g| *g) && !capped {
            self.up(to_upstream, frame).await
        } else if !granted.iter().any(|g| *g) {
            let codes = vec![SubscribeReasonCode::Failure; granted.len()];
            reply(
                to_client,
                Packet::SubAck(SubAck::new(subscribe.pkid, codes)),
            )
        } else if granted.iter().all(|g| *g) {
            self.up(to_upstream, encode(Packet::Subscribe(subscribe))?)
                .await
        } else {
            let mut keep = granted.iter();
            subscribe.filters.retain(|_| *keep.next().unwrap_or(&false));
            self.state().partial.insert(subscribe.pkid, granted);
            self.up(to_upstream, encode(Packet::Subscribe(subscribe))?)
                .await
        }
    }

    /// Whether the client may subscribe to `filter`: the ACL (for a checked
    /// user), no shared subscription, and room under the limits; a filter
    /// granted here counts as held by the client and by rumqttd.
    fn may_hold(&self, filter: &str) -> bool {
        if let Principal::User {
            name,
            client_id,
            acl,
        } = &self.principal
            && !acl.may_subscribe(Some(name), client_id, filter)
        {
            self.refused("subscribe", filter);
            return false;
        }
        // rumqttd panics for good when the one member of a shared group
        // leaves a persistent session with a delivery unacknowledged
        // (`router/routing.rs`, "group must exists"); MQTT 3.1.1 has no
        // shared subscriptions, so none are passed on.
        if filter.starts_with("$share/") {
            self.refused("share", filter);
            return false;
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.contains(filter) {
            return true;
        }
        if held.len() >= MAX_FILTERS_PER_CLIENT {
            self.refused("filters", filter);
            return false;
        }
        let mut known = self.gate.filters.lock().unwrap_or_else(|e| e.into_inner());
        if !known.contains(filter) {
            if known.len() >= self.gate.options.max_filters {
                drop(known);
                self.refused("filters", filter);
                return false;
            }
            known.insert(filter.to_owned());
        }
        held.insert(filter.to_owned());
        true
    }

    /// rumqttd to the client: deliveries checked, partial SUBACKs rebuilt,
    /// answers to the gate's own pings kept back.
    async fn broker_to_client<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        mut buf: BytesMut,
        to_upstream: &Queue,
        to_client: &Queue,
    ) -> Result<(), GateError> {
        while let Some((header, frame)) = read_frame(reader, &mut buf).await? {
            match header.packet_type()? {
                PacketType::PingResp => {
                    let ours = self
                        .gate_pings
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                        .is_ok();
                    if !ours {
                        forward(to_client, frame).await?;
                    }
                }
                PacketType::Publish => {
                    let Principal::User {
                        name,
                        client_id,
                        acl,
                    } = &self.principal
                    else {
                        forward(to_client, frame).await?;
                        continue;
                    };
                    let publish = Publish::read(header, frame.clone())?;
                    let allowed = acl.may_receive(Some(name), client_id, &publish.topic);
                    if !allowed {
                        metrics::counter!("scip_broker_refused_total", "action" => "deliver")
                            .increment(1);
                    }
                    match (publish.qos, allowed) {
                        (QoS::AtMostOnce, true) => forward(to_client, frame).await?,
                        (QoS::AtMostOnce, false) => {}
                        (QoS::AtLeastOnce, _) => {
                            let mut deliveries = self.deliveries.lock().await;
                            deliveries.push_back((publish.pkid, !allowed));
                            if allowed {
                                drop(deliveries);
                                forward(to_client, frame).await?;
                            } else {
                                self.ack_withheld(&mut deliveries, to_upstream).await?;
                            }
                        }
                        // Not granted by the gate; passed on should rumqttd
                        // send one anyway.
                        (QoS::ExactlyOnce, true) => forward(to_client, frame).await?,
                        (QoS::ExactlyOnce, false) => {
                            self.state().dropped_to_client.insert(publish.pkid);
                            self.reply_up(to_upstream, Packet::PubRec(PubRec::new(publish.pkid)))?;
                        }
                    }
                }
                PacketType::PubRel => {
                    let pubrel = PubRel::read(header, frame.clone())?;
                    if self.state().dropped_to_client.remove(&pubrel.pkid) {
                        self.reply_up(to_upstream, Packet::PubComp(PubComp::new(pubrel.pkid)))?;
                    } else {
                        forward(to_client, frame).await?;
                    }
                }
                PacketType::SubAck => {
                    let suback = SubAck::read(header, frame.clone())?;
                    let Some(granted) = self.state().partial.remove(&suback.pkid) else {
                        forward(to_client, frame).await?;
                        continue;
                    };
                    let mut codes = suback.return_codes.into_iter();
                    let merged = granted
                        .iter()
                        .map(|g| match g {
                            true => codes.next().unwrap_or(SubscribeReasonCode::Failure),
                            false => SubscribeReasonCode::Failure,
                        })
                        .collect();
                    forward(
                        to_client,
                        encode(Packet::SubAck(SubAck::new(suback.pkid, merged)))?,
                    )
                    .await?;
                }
                _ => forward(to_client, frame).await?,
            }
        }
        Ok(())
    }

    /// Pings rumqttd whenever half its keep-alive passed with nothing sent,
    /// so a quiet client (keep-alive 0, or long) keeps its connection.
    async fn keep_upstream_alive(&self, to_upstream: &Queue) -> Result<(), GateError> {
        let every = self.upstream_keep_alive / 2;
        let ping = encode(Packet::PingReq)?;
        loop {
            tokio::time::sleep(every).await;
            if self.sent_upstream.swap(false, Ordering::AcqRel) {
                continue;
            }
            self.gate_pings.fetch_add(1, Ordering::AcqRel);
            match to_upstream.try_send(ping.clone()) {
                Ok(()) => {}
                // A full queue is on its way to rumqttd anyway.
                Err(GateError::Stuck) => {
                    self.gate_pings.fetch_sub(1, Ordering::AcqRel);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues `frame` for rumqttd.
    async fn up(&self, to_upstream: &Queue, frame: Bytes) -> Result<(), GateError> {
        self.sent_upstream.store(true, Ordering::Release);
        forward(to_upstream, frame).await
    }

    /// An answer of the gate's own to rumqttd, queued without waiting.
    fn reply_up(&self, to_upstream: &Queue, packet: Packet) -> Result<(), GateError> {
        self.sent_upstream.store(true, Ordering::Release);
        reply(to_upstream, packet)
    }

    /// Acknowledges to rumqttd the withheld deliveries at the front of
    /// `deliveries`: those whose predecessors are all acknowledged.
    async fn ack_withheld(
        &self,
        deliveries: &mut VecDeque<(u16, bool)>,
        to_upstream: &Queue,
    ) -> Result<(), GateError> {
        while let Some(&(pkid, true)) = deliveries.front() {
            deliveries.pop_front();
            self.up(to_upstream, encode(Packet::PubAck(PubAck::new(pkid)))?)
                .await?;
        }
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a refused publish or subscribe; the first of a connection is
    /// logged as a warning, the rest at debug level.
    fn refused(&self, action: &'static str, topic: &str) {
        metrics::counter!("scip_broker_refused_total", "action" => action).increment(1);
        let (name, client_id) = match &self.principal {
            Principal::User {
                name, client_id, ..
            } => (name.as_str(), client_id.as_str()),
            Principal::Unchecked => ("", ""),
        };
        if !self.warned.swap(true, Ordering::Relaxed) {
            warn!(user = name, client_id, action, topic, "MQTT access refused");
        } else {
            debug!(user = name, client_id, action, topic, "MQTT access refused");
        }
    }
}

/// Checks a client's packet against MQTT 3.1.1: its type and fixed-header
/// flags, and what rumqttd would otherwise take in (topics, filters, packet
/// ids). Anything else is a reason to close the connection.
fn from_client(header: FixedHeader, frame: Bytes) -> Result<FromClient, GateError> {
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

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum GateError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("malformed MQTT: {0}")]
    Mqtt(#[from] mqttbytes::Error),
    #[error("{0}")]
    Protocol(String),
    /// The client broke MQTT 3.1.1.
    #[error("malformed MQTT: {0}")]
    Malformed(&'static str),
    #[error("no packet from the client within one and a half times its keep-alive")]
    KeepAlive,
    #[error("refused: {0}")]
    Refused(&'static str),
    #[error("the other side is gone")]
    Closed,
    #[error("the client does not read what it is sent")]
    Stuck,
}

/// The next whole packet: its header and all its bytes; None at the end of
/// the stream.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<Option<(FixedHeader, Bytes)>, GateError> {
    read_frame_up_to(reader, buf, MAX_PACKET_SIZE).await
}

/// [`read_frame`] of a packet of at most `max` bytes.
async fn read_frame_up_to<R: AsyncRead + Unpin>(
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

async fn forward(queue: &Queue, frame: Bytes) -> Result<(), GateError> {
    queue.send(frame).await
}

/// An answer of the gate's own, queued without waiting: a side whose queue
/// is full does not read, and the connection is closed.
fn reply(queue: &Queue, packet: Packet) -> Result<(), GateError> {
    queue.try_send(encode(packet)?)
}

/// Packets on their way to one side of a connection, bounded by count and
/// by bytes, so that a peer that does not read holds at most
/// [`QUEUE_BYTES`] (plus one packet) of the gate's memory, whatever the
/// size of its packets. Cheap to clone.
#[derive(Clone)]
struct Queue {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<tokio::sync::Semaphore>,
}

/// A queued packet and its share of the queue's bytes, given back once it
/// is written.
type Queued = (Bytes, tokio::sync::OwnedSemaphorePermit);

impl Queue {
    fn new() -> (Self, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let bytes = Arc::new(tokio::sync::Semaphore::new(QUEUE_BYTES));
        (Self { tx, bytes }, rx)
    }

    /// A packet's weight in the byte budget: its size, at most the whole
    /// budget (a packet bigger than it waits for an empty queue).
    fn weight(bytes: &Bytes) -> u32 {
        bytes.len().clamp(1, QUEUE_BYTES) as u32
    }

    async fn send(&self, bytes: Bytes) -> Result<(), GateError> {
        let permit = self
            .bytes
            .clone()
            .acquire_many_owned(Self::weight(&bytes))
            .await
            .map_err(|_| GateError::Closed)?;
        self.tx
            .send((bytes, permit))
            .await
            .map_err(|_| GateError::Closed)
    }

    fn try_send(&self, bytes: Bytes) -> Result<(), GateError> {
        let permit = self
            .bytes
            .clone()
            .try_acquire_many_owned(Self::weight(&bytes))
            .map_err(|e| match e {
                tokio::sync::TryAcquireError::NoPermits => GateError::Stuck,
                tokio::sync::TryAcquireError::Closed => GateError::Closed,
            })?;
        self.tx.try_send((bytes, permit)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => GateError::Stuck,
            mpsc::error::TrySendError::Closed(_) => GateError::Closed,
        })
    }
}

fn encode(packet: Packet) -> Result<Bytes, GateError> {
    let mut out = BytesMut::new();
    packet.write(&mut out, usize::MAX)?;
    Ok(out.freeze())
}

/// Writes what is queued until every sender is gone.
async fn write_queue<W: AsyncWrite + Unpin>(
    queue: &mut mpsc::Receiver<Queued>,
    writer: &mut W,
) -> Result<(), GateError> {
    while let Some((bytes, _permit)) = queue.recv().await {
        writer.write_all(&bytes).await?;
        while let Ok((more, _permit)) = queue.try_recv() {
            writer.write_all(&more).await?;
        }
        writer.flush().await?;
    }
    Ok(())
}

/// Sends a refusing CONNACK; the caller then closes the connection.
async fn refuse<S: AsyncWrite + Unpin>(client: &mut S, code: ConnectReturnCode) {
    if let Ok(bytes) = encode(Packet::ConnAck(ConnAck::new(code, false))) {
        let _ = client.write_all(&bytes).await;
        let _ = client.flush().await;
    }
}

async fn accept_failed(e: std::io::Error) {
    // Out of file descriptors, typically: wait a moment instead of spinning.
    warn!(error = %e, "cannot accept an MQTT connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Answers the WebSocket handshake: refuses a page from an origin the
/// options do not allow (403), and picks the `mqtt` subprotocol when the
/// client asks for it (browser MQTT clients do).
struct Handshake<'a> {
    origins: &'a Origins,
}

impl async_tungstenite::tungstenite::handshake::server::Callback for Handshake<'_> {
    fn on_request(
        self,
        request: &async_tungstenite::tungstenite::handshake::server::Request,
        mut response: async_tungstenite::tungstenite::handshake::server::Response,
    ) -> Result<
        async_tungstenite::tungstenite::handshake::server::Response,
        async_tungstenite::tungstenite::handshake::server::ErrorResponse,
    > {
        let origin = request.headers().get("origin");
        let allowed = match origin {
            None => self.origins.allows(None),
            Some(value) => value
                .to_str()
                .is_ok_and(|origin| self.origins.allows(Some(origin))),
        };
        if !allowed {
            metrics::counter!("scip_broker_refused_total", "action" => "origin").increment(1);
            info!(
                origin = ?origin,
                "MQTT WebSocket refused: a page from an origin not in BROKER_WS_ORIGINS"
            );
            let mut refusal = async_tungstenite::tungstenite::handshake::server::ErrorResponse::new(
                Some("this page's origin may not connect to the broker".to_owned()),
            );
            *refusal.status_mut() = async_tungstenite::tungstenite::http::StatusCode::FORBIDDEN;
            return Err(refusal);
        }
        let asked = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find(|p| matches!(*p, "mqtt" | "mqttv3.1"))
            .map(str::to_owned);
        if let Some(protocol) = asked
            && let Ok(value) = protocol.parse()
        {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", value);
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::{GateError, QUEUE_BYTES, Queue, upstream_client_id};
    use bytes::Bytes;

    /// A peer that does not read holds at most the queue's bytes of the
    /// gate's memory, however big its packets.
    #[tokio::test]
    async fn a_queue_holds_at_most_its_bytes() {
        let (queue, mut written) = Queue::new();
        let half = Bytes::from(vec![0u8; QUEUE_BYTES / 2]);
        queue.try_send(half.clone()).unwrap();
        queue.try_send(half.clone()).unwrap();
        assert!(matches!(
            queue.try_send(Bytes::from_static(b"x")),
            Err(GateError::Stuck)
        ));
        let waiting = tokio::spawn({
            let queue = queue.clone();
            let half = half.clone();
            async move { queue.send(half).await }
        });
        // Once one is written, its bytes are free again.
        drop(written.recv().await.unwrap());
        waiting.await.unwrap().unwrap();
        assert!(matches!(
            queue.try_send(Bytes::from_static(b"x")),
            Err(GateError::Stuck)
        ));
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
