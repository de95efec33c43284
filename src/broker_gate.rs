//! The embedded broker's gate: the listeners MQTT clients reach (TCP and
//! WebSocket), in front of rumqttd, which listens on loopback only. rumqttd
//! 0.20 checks logins but not topics (see `broker`), so the gate does both,
//! with the same files Mosquitto takes: the password file and the `acl_file`
//! `broker-acl` writes (see `topic_acl` for the rules).
//!
//! Per connection the gate reads the client's CONNECT and answers a refusal
//! itself, with a CONNACK saying why: an MQTT version other than 3.1.1, no
//! or a wrong login, a will the client may not publish. Otherwise it opens a
//! connection to rumqttd with the gate's own login and the client id
//! prefixed by the user name (`blue:dashboard-1`), so no client can take
//! over the session of another user, the engine's included. Then:
//! - an open broker (no logins configured) and the engine's own login pass
//!   bytes through as they are;
//! - any other user has each packet checked: a PUBLISH to a topic the user
//!   may not write is acknowledged and dropped (as Mosquitto does), a
//!   SUBSCRIBE filter no readable topic matches gets a failure code in the
//!   SUBACK (the other filters of the same SUBSCRIBE are subscribed), and a
//!   message the user may not read is never delivered (the gate
//!   acknowledges it to rumqttd in the client's place).
//!
//! The engine connects to rumqttd directly, so its own publishes take no
//! extra hop.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
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

use crate::broker::BrokerAuth;
use crate::mqtt::MAX_PACKET_SIZE;
use crate::topic_acl::Acl;

/// How long a new connection has to send its CONNECT (and a WebSocket its
/// handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Packets queued towards one side of a connection.
const QUEUE: usize = 256;
/// How long a closing connection may take to pass on what it has queued.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Who may do what through the gate.
#[derive(Debug)]
pub struct Policy {
    /// Logins and topic rules: its plain users (the engine's MQTT_USERNAME)
    /// pass unchecked, and without an ACL a logged-in client may use every
    /// topic (Mosquitto without `acl_file`).
    pub logins: BrokerAuth,
    /// The login the gate gives rumqttd for every client.
    pub upstream_login: Login,
}

/// The gate of one embedded broker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    upstream: SocketAddr,
    policy: Option<Policy>,
    /// Numbers client ids the clients left empty.
    anonymous_ids: AtomicU64,
}

/// What a connected client is.
#[derive(Debug, Clone)]
enum Principal {
    /// Every packet passes.
    Unchecked,
    /// Checked against the ACL as it was when the client connected.
    User {
        name: String,
        client_id: String,
        acl: Arc<Acl>,
    },
}

impl Gate {
    /// A gate in front of rumqttd at `upstream`; `policy` None is an open
    /// broker.
    pub fn new(upstream: SocketAddr, policy: Option<Policy>) -> Self {
        Self {
            inner: Arc::new(Inner {
                upstream,
                policy,
                anonymous_ids: AtomicU64::new(0),
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
                    tokio::spawn(async move { gate.connection(stream, peer).await });
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }

    /// Serves MQTT over WebSocket on `listener` (any path, subprotocol
    /// `mqtt`) until the runtime ends.
    pub async fn serve_ws(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let gate = self.clone();
                    tokio::spawn(async move {
                        let handshake =
                            async_tungstenite::tokio::accept_hdr_async(stream, MqttSubprotocol);
                        match timeout(CONNECT_TIMEOUT, handshake).await {
                            Ok(Ok(ws)) => {
                                let stream = ws_stream_tungstenite::WsStream::new(ws);
                                gate.connection(stream, peer).await;
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

    async fn connection<S>(self, client: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if let Err(e) = self.relay(client).await {
            debug!(%peer, error = %e, "MQTT connection closed");
        }
    }

    async fn relay<S>(&self, mut client: S) -> Result<(), GateError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut buf = BytesMut::with_capacity(4096);
        let first = timeout(CONNECT_TIMEOUT, async {
            // Anything but a CONNECT is turned away at its first byte,
            // before waiting for the length it claims.
            while buf.is_empty() {
                if client.read_buf(&mut buf).await? == 0 {
                    return Ok(None);
                }
            }
            if buf[0] != 0x10 {
                return Err(GateError::Protocol(
                    "the first packet is not CONNECT".into(),
                ));
            }
            read_frame(&mut client, &mut buf).await
        })
        .await
        .map_err(|_| GateError::Protocol("no CONNECT in time".into()))??;
        let Some((header, frame)) = first else {
            return Ok(());
        };
        if header.packet_type()? != PacketType::Connect {
            return Err(GateError::Protocol(
                "the first packet is not CONNECT".into(),
            ));
        }
        let connect = match Connect::read(header, frame.clone()) {
            Ok(connect) if connect.protocol == Protocol::V4 => connect,
            Ok(_) | Err(mqttbytes::Error::InvalidProtocolLevel(_)) => {
                refuse(&mut client, ConnectReturnCode::RefusedProtocolVersion).await;
                return Err(GateError::Refused("only MQTT 3.1.1 is served"));
            }
            Err(e) => return Err(e.into()),
        };
        let (principal, upstream_connect) = match self.admit(connect) {
            Ok(admitted) => admitted,
            Err((code, why)) => {
                refuse(&mut client, code).await;
                metrics::counter!("scip_broker_refused_total", "action" => "connect").increment(1);
                info!(reason = why, "MQTT login refused");
                return Err(GateError::Refused(why));
            }
        };

        let mut upstream = TcpStream::connect(self.inner.upstream).await?;
        upstream.set_nodelay(true)?;
        match upstream_connect {
            Some(connect) => {
                let mut out = BytesMut::new();
                Packet::Connect(connect).write(&mut out, usize::MAX)?;
                upstream.write_all(&out).await?;
            }
            None => upstream.write_all(&frame).await?,
        }
        // rumqttd's CONNACK reaches the client before anything else is
        // passed on either way, so a client that breaks the protocol right
        // after its CONNECT still learns that it was connected.
        let mut from_upstream = BytesMut::with_capacity(4096);
        let connack = timeout(
            CONNECT_TIMEOUT,
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
        match principal {
            Principal::Unchecked => {
                upstream.write_all(&buf).await?;
                client.write_all(&from_upstream).await?;
                let (mut client_r, mut client_w) = tokio::io::split(client);
                let (mut upstream_r, mut upstream_w) = upstream.into_split();
                // Each way until its reader ends; then the other side's
                // writing half is shut down, and the other way runs on.
                let (a, b) = tokio::join!(
                    pump(&mut client_r, &mut upstream_w),
                    pump(&mut upstream_r, &mut client_w)
                );
                a.and(b)
            }
            Principal::User {
                name,
                client_id,
                acl,
            } => {
                let checker = Checker {
                    acl: &acl,
                    user: &name,
                    client_id: &client_id,
                    state: Mutex::default(),
                    deliveries: tokio::sync::Mutex::default(),
                    warned: std::sync::atomic::AtomicBool::new(false),
                };
                checker.relay(client, buf, upstream, from_upstream).await
            }
        }
    }

    /// The client's principal and the CONNECT rumqttd gets (None: the same
    /// bytes), or the refusal.
    fn admit(
        &self,
        mut connect: Connect,
    ) -> Result<(Principal, Option<Connect>), (ConnectReturnCode, &'static str)> {
        let Some(policy) = &self.inner.policy else {
            return Ok((Principal::Unchecked, None));
        };
        let Some(login) = connect.login.take() else {
            return Err((ConnectReturnCode::NotAuthorized, "no user name"));
        };
        if !policy.logins.check(&login.username, &login.password) {
            return Err((
                ConnectReturnCode::BadUserNamePassword,
                "wrong user name or password",
            ));
        }
        let principal = match policy.logins.acl() {
            Some(acl) if !policy.logins.is_plain(&login.username) => Principal::User {
                name: login.username.clone(),
                client_id: connect.client_id.clone(),
                acl,
            },
            _ => Principal::Unchecked,
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
        connect.client_id = if connect.client_id.is_empty() {
            let n = self.inner.anonymous_ids.fetch_add(1, Ordering::Relaxed);
            format!("{}::{n}", login.username)
        } else {
            format!("{}:{}", login.username, connect.client_id)
        };
        connect.login = Some(policy.upstream_login.clone());
        Ok((principal, Some(connect)))
    }
}

/// The per-packet checks of one client's connection.
struct Checker<'a> {
    acl: &'a Acl,
    user: &'a str,
    client_id: &'a str,
    state: Mutex<State>,
    /// QoS 1 deliveries of rumqttd to this client not yet acknowledged, in
    /// order, and whether each was withheld. rumqttd takes acknowledgements
    /// only in the order it sent (an out-of-order PUBACK ends the
    /// connection), so the gate acknowledges a withheld message only once
    /// the client has acknowledged every delivery before it.
    deliveries: tokio::sync::Mutex<VecDeque<(u16, bool)>>,
    /// Whether a refusal was logged at warn level yet (the rest go to debug).
    warned: std::sync::atomic::AtomicBool,
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

impl Checker<'_> {
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
        let (to_client, mut client_queue) = mpsc::channel::<Bytes>(QUEUE);
        let (to_upstream, mut upstream_queue) = mpsc::channel::<Bytes>(QUEUE);
        let result = tokio::select! {
            r = self.client_to_broker(&mut client_r, buf, &to_upstream, &to_client) => r,
            r = self.broker_to_client(&mut upstream_r, from_upstream, &to_upstream, &to_client) => r,
            r = write_queue(&mut client_queue, &mut client_w) => r,
            r = write_queue(&mut upstream_queue, &mut upstream_w) => r,
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

    /// Client to rumqttd: PUBLISH and SUBSCRIBE checked.
    async fn client_to_broker<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        mut buf: BytesMut,
        to_upstream: &mpsc::Sender<Bytes>,
        to_client: &mpsc::Sender<Bytes>,
    ) -> Result<(), GateError> {
        while let Some((header, frame)) = read_frame(reader, &mut buf).await? {
            match header.packet_type()? {
                PacketType::Publish => {
                    let publish = Publish::read(header, frame.clone())?;
                    if self
                        .acl
                        .may_publish(Some(self.user), self.client_id, &publish.topic)
                    {
                        forward(to_upstream, frame).await?;
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
                PacketType::PubAck => {
                    let puback = PubAck::read(header, frame.clone())?;
                    let mut deliveries = self.deliveries.lock().await;
                    forward(to_upstream, frame).await?;
                    if let Some(at) = deliveries.iter().position(|(pkid, _)| *pkid == puback.pkid) {
                        deliveries.remove(at);
                    }
                    ack_withheld(&mut deliveries, to_upstream).await?;
                }
                PacketType::PubRel => {
                    let pubrel = PubRel::read(header, frame.clone())?;
                    if self.state().dropped_from_client.remove(&pubrel.pkid) {
                        reply(to_client, Packet::PubComp(PubComp::new(pubrel.pkid)))?;
                    } else {
                        forward(to_upstream, frame).await?;
                    }
                }
                PacketType::Subscribe => {
                    let mut subscribe = Subscribe::read(header, frame.clone())?;
                    // QoS 2 deliveries would need their own ordering of
                    // withheld messages; at most QoS 1 is granted (MQTT
                    // lets the server grant less than asked).
                    let capped = subscribe.filters.iter().any(|f| f.qos == QoS::ExactlyOnce);
                    for filter in &mut subscribe.filters {
                        if filter.qos == QoS::ExactlyOnce {
                            filter.qos = QoS::AtLeastOnce;
                        }
                    }
                    let granted: Vec<bool> = subscribe
                        .filters
                        .iter()
                        .map(|f| {
                            self.acl
                                .may_subscribe(Some(self.user), self.client_id, &f.path)
                        })
                        .collect();
                    for (filter, _) in subscribe.filters.iter().zip(&granted).filter(|(_, g)| !**g)
                    {
                        self.refused("subscribe", &filter.path);
                    }
                    if granted.iter().all(|g| *g) && !capped {
                        forward(to_upstream, frame).await?;
                    } else if !granted.iter().any(|g| *g) {
                        let codes = vec![SubscribeReasonCode::Failure; granted.len()];
                        reply(
                            to_client,
                            Packet::SubAck(SubAck::new(subscribe.pkid, codes)),
                        )?;
                    } else if granted.iter().all(|g| *g) {
                        forward(to_upstream, encode(Packet::Subscribe(subscribe))?).await?;
                    } else {
                        let mut keep = granted.iter();
                        subscribe.filters.retain(|_| *keep.next().unwrap_or(&false));
                        self.state().partial.insert(subscribe.pkid, granted);
                        forward(to_upstream, encode(Packet::Subscribe(subscribe))?).await?;
                    }
                }
                PacketType::Connect => {
                    return Err(GateError::Protocol("a second CONNECT".into()));
                }
                _ => forward(to_upstream, frame).await?,
            }
        }
        Ok(())
    }

    /// rumqttd to the client: deliveries checked, partial SUBACKs rebuilt.
    async fn broker_to_client<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        mut buf: BytesMut,
        to_upstream: &mpsc::Sender<Bytes>,
        to_client: &mpsc::Sender<Bytes>,
    ) -> Result<(), GateError> {
        while let Some((header, frame)) = read_frame(reader, &mut buf).await? {
            match header.packet_type()? {
                PacketType::Publish => {
                    let publish = Publish::read(header, frame.clone())?;
                    let allowed =
                        self.acl
                            .may_receive(Some(self.user), self.client_id, &publish.topic);
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
                                ack_withheld(&mut deliveries, to_upstream).await?;
                            }
                        }
                        // Not granted by the gate; passed on should rumqttd
                        // send one anyway.
                        (QoS::ExactlyOnce, true) => forward(to_client, frame).await?,
                        (QoS::ExactlyOnce, false) => {
                            self.state().dropped_to_client.insert(publish.pkid);
                            reply(to_upstream, Packet::PubRec(PubRec::new(publish.pkid)))?;
                        }
                    }
                }
                PacketType::PubRel => {
                    let pubrel = PubRel::read(header, frame.clone())?;
                    if self.state().dropped_to_client.remove(&pubrel.pkid) {
                        reply(to_upstream, Packet::PubComp(PubComp::new(pubrel.pkid)))?;
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

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a refused publish or subscribe; the first of a connection is
    /// logged as a warning, the rest at debug level.
    fn refused(&self, action: &'static str, topic: &str) {
        metrics::counter!("scip_broker_refused_total", "action" => action).increment(1);
        if !self.warned.swap(true, Ordering::Relaxed) {
            warn!(
                user = self.user,
                client_id = self.client_id,
                action,
                topic,
                "MQTT access refused by the ACL"
            );
        } else {
            debug!(
                user = self.user,
                client_id = self.client_id,
                action,
                topic,
                "MQTT access refused by the ACL"
            );
        }
    }
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
    loop {
        match mqttbytes::check(buf.iter(), MAX_PACKET_SIZE) {
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

/// Copies `reader` to `writer` as it comes (each read written at once; no
/// buffering beyond one read), then shuts `writer` down.
async fn pump<R, W>(reader: &mut R, writer: &mut W) -> Result<(), GateError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            let _ = writer.shutdown().await;
            return Ok(());
        }
        writer.write_all(&buf[..n]).await?;
        writer.flush().await?;
    }
}

/// Acknowledges to rumqttd the withheld deliveries at the front of
/// `deliveries`: those whose predecessors are all acknowledged.
async fn ack_withheld(
    deliveries: &mut VecDeque<(u16, bool)>,
    to_upstream: &mpsc::Sender<Bytes>,
) -> Result<(), GateError> {
    while let Some(&(pkid, true)) = deliveries.front() {
        deliveries.pop_front();
        forward(to_upstream, encode(Packet::PubAck(PubAck::new(pkid)))?).await?;
    }
    Ok(())
}

async fn forward(queue: &mpsc::Sender<Bytes>, frame: Bytes) -> Result<(), GateError> {
    queue.send(frame).await.map_err(|_| GateError::Closed)
}

/// An answer of the gate's own, queued without waiting: a side whose queue
/// is full does not read, and the connection is closed.
fn reply(queue: &mpsc::Sender<Bytes>, packet: Packet) -> Result<(), GateError> {
    queue.try_send(encode(packet)?).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => GateError::Stuck,
        mpsc::error::TrySendError::Closed(_) => GateError::Closed,
    })
}

fn encode(packet: Packet) -> Result<Bytes, GateError> {
    let mut out = BytesMut::new();
    packet.write(&mut out, usize::MAX)?;
    Ok(out.freeze())
}

/// Writes what is queued until every sender is gone.
async fn write_queue<W: AsyncWrite + Unpin>(
    queue: &mut mpsc::Receiver<Bytes>,
    writer: &mut W,
) -> Result<(), GateError> {
    while let Some(bytes) = queue.recv().await {
        writer.write_all(&bytes).await?;
        while let Ok(more) = queue.try_recv() {
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

/// Answers the WebSocket handshake with the `mqtt` subprotocol when the
/// client asks for it (browser MQTT clients do).
struct MqttSubprotocol;

impl async_tungstenite::tungstenite::handshake::server::Callback for MqttSubprotocol {
    fn on_request(
        self,
        request: &async_tungstenite::tungstenite::handshake::server::Request,
        mut response: async_tungstenite::tungstenite::handshake::server::Response,
    ) -> Result<
        async_tungstenite::tungstenite::handshake::server::Response,
        async_tungstenite::tungstenite::handshake::server::ErrorResponse,
    > {
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
