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
//!
//! Here: [`Gate`] and what its parts share (the listeners, the seat a
//! client takes, a connection's `Conn`); `connect` (the CONNECT, read,
//! admitted or refused, and the client id rumqttd gets); `frames` (packets
//! framed and checked against MQTT 3.1.1); `relay` (a connection's two
//! directions and their bounded queues); `acl` (the topic rules on a
//! checked user's packets, and withheld deliveries acknowledged in order);
//! `websocket` (browser clients, unwrapped).

mod acl;
mod connect;
mod frames;
mod relay;
mod websocket;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Login};
use rumqttc::mqttbytes::{self, PacketType};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tracing::{debug, warn};

use crate::broker::{BrokerAuth, BrokerOptions};
use crate::mqtt::acl::Acl;
use acl::Deliveries;
use connect::{MAX_CONNECT_BYTES, refuse};
use frames::read_frame_up_to;

pub use connect::upstream_client_id;

/// Most subscriptions one client may hold through the gate.
pub const MAX_FILTERS_PER_CLIENT: usize = 1000;

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

impl Principal {
    /// Whether the client may publish to `topic` (an unchecked one may).
    fn may_publish(&self, topic: &str) -> bool {
        self.allows(topic, Acl::may_publish)
    }

    /// Whether the client may subscribe to `filter`.
    fn may_subscribe(&self, filter: &str) -> bool {
        self.allows(filter, Acl::may_subscribe)
    }

    /// Whether a message on `topic` may be delivered to the client.
    fn may_receive(&self, topic: &str) -> bool {
        self.allows(topic, Acl::may_receive)
    }

    fn allows(&self, topic: &str, rule: fn(&Acl, Option<&str>, &str, &str) -> bool) -> bool {
        match self {
            Principal::Unchecked => true,
            Principal::User {
                name,
                client_id,
                acl,
            } => rule(acl, Some(name), client_id, topic),
        }
    }

    fn is_checked(&self) -> bool {
        matches!(self, Principal::User { .. })
    }

    /// The user name and client id, for the log; empty when unchecked.
    fn who(&self) -> (&str, &str) {
        match self {
            Principal::User {
                name, client_id, ..
            } => (name, client_id),
            Principal::Unchecked => ("", ""),
        }
    }
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
    /// acknowledged, in order (see [`Deliveries`]).
    deliveries: tokio::sync::Mutex<Deliveries>,
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

impl Conn {
    /// The connection of a client admitted as `principal`, which asked for
    /// a keep-alive of `client_keep_alive` seconds (0: none).
    fn new(gate: Arc<Inner>, principal: Principal, client_keep_alive: u16) -> Self {
        Self {
            principal,
            client_idle: (client_keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(client_keep_alive) * 1500)),
            upstream_keep_alive: gate.options.upstream_keep_alive,
            state: Mutex::default(),
            deliveries: tokio::sync::Mutex::default(),
            warned: AtomicBool::new(false),
            sent_upstream: AtomicBool::new(false),
            gate_pings: AtomicU32::new(0),
            gate,
            held: Mutex::default(),
        }
    }
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

async fn accept_failed(e: std::io::Error) {
    // Out of file descriptors, typically: wait a moment instead of spinning.
    warn!(error = %e, "cannot accept an MQTT connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
