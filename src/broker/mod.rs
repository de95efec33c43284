//! The embedded MQTT broker: rumqttd in this process, for `demo` and for
//! `serve` without MQTT_BROKER_HOST, so a laptop needs nothing but the
//! binary. Production keeps an external broker (Mosquitto).
//!
//! One TCP listener (MQTT tools) and one WebSocket listener (browser MQTT
//! clients of the earlier platform), both on BROKER_BIND and both served by
//! the gate. rumqttd's `Broker::start` blocks for good and only logs when a
//! listener cannot bind, so the public ports are bound here first (a taken
//! port is an error naming the flag that changes it, unless it may move to
//! a free one: `demo`'s defaults), rumqttd runs on a
//! thread of its own on a loopback port, and start-up waits until it accepts
//! connections. rumqttd has no shutdown: the broker lives as long as the
//! process.
//!
//! What the engine relies on and rumqttd does, checked by `tests/demo`:
//! retained messages reach late subscribers (with the retain flag), topics
//! start with `/`, QoS 1 PUBACKs, a clean-session connect followed by a
//! persistent one under the same client id, packets up to
//! [`MAX_PACKET_SIZE`]. Where rumqttd differs from Mosquitto:
//! - A new subscription gets at most as many retained messages as it has
//!   free QoS 1 slots (100), so a wildcard over more than 100 retained
//!   topics misses some; one exercise has four retained topics.
//! - Resubscribing within a resumed session does not resend retained
//!   messages; the engine ignores retained control messages anyway.
//! - It refuses a keep-alive of 0, and a client id with `/`, `+`, `#` or
//!   `$` (the second CONNECT under such an id panics it for good); the gate
//!   makes every CONNECT it passes on one rumqttd takes.
//! - Each topic keeps its recent messages in memory, up to
//!   `SEGMENT_SIZE * (SEGMENT_COUNT + 1)` bytes; nothing is written to disk,
//!   so retained messages do not survive a restart.
//!
//! Access: rumqttd takes no connection without a login (the gate's or the
//! engine's, both drawn at start, or MQTT_USERNAME), so nothing on this
//! machine reaches it past the gate. rumqttd 0.20 only checks a login once per CONNECT (its
//! `ConnectionSettings` `auth`/`external_auth`, in `link/remote.rs`
//! `mqtt_connect`) and has no topic-level authorization beyond a tenant
//! prefix from TLS client certificates. So rumqttd listens on a loopback
//! port only, where the engine connects, and the public ports belong to
//! the gate (`gate`), which checks logins ([`BrokerAuth`]:
//! MQTT_USERNAME and BROKER_PASSWORD_FILE) and the topic rules of
//! BROKER_ACL_FILE, the same files Mosquitto takes.
//!
//! Here: [`EmbeddedBroker`], which binds the public ports and starts the
//! rest; `settings` (ports, timing and limits, web origins); `auth` (logins
//! and topic rules, read again on SIGHUP); `upstream` (rumqttd on loopback:
//! its start, configuration and health probe); `gate` (the public
//! listeners in front of it).

mod auth;
#[cfg(feature = "embedded-broker")]
pub mod gate;
mod settings;
#[cfg(feature = "embedded-broker")]
mod upstream;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::mqtt::{Credentials, SettingsError};

pub use auth::BrokerAuth;
pub use settings::{BrokerOptions, BrokerSettings, MovablePorts, Origins};

/// How long start-up waits for the listeners to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot use BROKER_ACL_FILE: {0}")]
    AclFile(#[from] crate::mqtt::acl::AclFileError),
    #[error(
        "BROKER_ACL_FILE needs BROKER_PASSWORD_FILE: the rules name users, and only logged-in users have a name"
    )]
    AclWithoutPasswords,
    #[error("cannot use BROKER_PASSWORD_FILE {}: {reason}", .path.display())]
    PasswordFile { path: PathBuf, reason: String },
    #[error(
        "BROKER_PASSWORD_FILE makes the embedded broker refuse anonymous clients, the engine's own connection too: set MQTT_USERNAME and MQTT_PASSWORD (or MQTT_PASSWORD_FILE) for it"
    )]
    EngineLogin,
    #[error("port {port} is taken: choose another with {flag} / {env}")]
    PortTaken {
        port: u16,
        flag: &'static str,
        env: &'static str,
    },
    #[error("cannot listen on {addr} ({flag} / {env}): {reason}")]
    CannotListen {
        addr: SocketAddr,
        flag: &'static str,
        env: &'static str,
        reason: String,
    },
    #[error(
        "--broker-port and --broker-ws-port are both {0}: give the WebSocket listener another port"
    )]
    SamePort(u16),
    #[error("the embedded broker did not accept connections on {addr} within {} s", .waited.as_secs())]
    NotListening { addr: SocketAddr, waited: Duration },
    #[error("the embedded broker stopped during start-up: {0}")]
    Stopped(String),
    #[error(
        "this build has no embedded broker (cargo feature `embedded-broker`): set MQTT_BROKER_HOST to use an external one"
    )]
    Unavailable,
}

/// A running embedded broker.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    settings: BrokerSettings,
    /// rumqttd itself, behind the gate: where the engine connects.
    internal: SocketAddr,
    /// The login rumqttd takes from the engine (besides MQTT_USERNAME):
    /// drawn at random at every start.
    engine_login: Credentials,
    health: tokio::sync::watch::Receiver<Result<(), String>>,
}

impl EmbeddedBroker {
    /// Whether this build has the embedded broker.
    pub const AVAILABLE: bool = cfg!(feature = "embedded-broker");

    /// Starts the broker, open to anyone, and returns once both listeners
    /// accept connections.
    pub async fn start(settings: BrokerSettings) -> Result<Self, BrokerError> {
        Self::start_with_auth(settings, None).await
    }

    /// Starts the broker; with `auth`, only its users may connect.
    pub async fn start_with_auth(
        settings: BrokerSettings,
        auth: Option<BrokerAuth>,
    ) -> Result<Self, BrokerError> {
        Self::start_with(settings, auth, BrokerOptions::default()).await
    }

    /// Starts the broker with `auth` (None: open to anyone) and `options`.
    pub async fn start_with(
        settings: BrokerSettings,
        auth: Option<BrokerAuth>,
        options: BrokerOptions,
    ) -> Result<Self, BrokerError> {
        if !Self::AVAILABLE {
            return Err(BrokerError::Unavailable);
        }
        if settings.port == settings.ws_port {
            return Err(BrokerError::SamePort(settings.port));
        }
        let movable = options.movable;
        let tcp_port = Port {
            bind: settings.bind,
            port: settings.port,
            movable: movable.mqtt,
            flag: "--broker-port",
            env: "BROKER_PORT",
        };
        let ws_port = Port {
            bind: settings.bind,
            port: settings.ws_port,
            movable: movable.ws,
            flag: "--broker-ws-port",
            env: "BROKER_WS_PORT",
        };
        let (tcp, port) = tcp_port.listen().await?;
        let (ws, ws_port) = ws_port.listen().await?;
        // The ports listened on, should one have moved.
        let settings = BrokerSettings {
            port,
            ws_port,
            ..settings
        };
        let started = upstream::start(settings, auth, options, tcp, ws).await?;
        Ok(Self {
            settings,
            internal: started.internal,
            engine_login: started.engine_login,
            health: started.health,
        })
    }

    /// The login for a connection to [`Self::engine_addr`]: rumqttd takes
    /// no connection without one (a process on this machine could otherwise
    /// reach it past the gate).
    pub fn engine_login(&self) -> &Credentials {
        &self.engine_login
    }

    /// Whether rumqttd accepts connections, as its last probe found (every
    /// `BrokerOptions::probe_every`): Err with the reason when not.
    pub fn health(&self) -> tokio::sync::watch::Receiver<Result<(), String>> {
        self.health.clone()
    }

    /// Where the broker listens: the ports it was given, or the free ones
    /// it moved to.
    pub fn settings(&self) -> BrokerSettings {
        self.settings
    }

    /// Where the engine's own connection goes: rumqttd on loopback, past
    /// the gate (it may use every topic anyway).
    pub fn engine_addr(&self) -> SocketAddr {
        self.internal
    }

    /// The host an MQTT client on this machine connects to: the bind
    /// address, or loopback when bound to every interface.
    pub fn client_host(&self) -> String {
        connect_ip(self.settings.bind).to_string()
    }

    /// `mqtt://host:port`.
    pub fn mqtt_url(&self) -> String {
        format!("mqtt://{}", self.tcp_addr())
    }

    /// `ws://host:port/mqtt`, as browser MQTT clients take it (rumqttd
    /// accepts any path).
    pub fn ws_url(&self) -> String {
        format!("ws://{}/mqtt", self.ws_addr())
    }

    /// Where a client on this machine reaches the TCP listener.
    pub fn tcp_addr(&self) -> SocketAddr {
        SocketAddr::new(connect_ip(self.settings.bind), self.settings.port)
    }

    /// Where a client on this machine reaches the WebSocket listener.
    pub fn ws_addr(&self) -> SocketAddr {
        SocketAddr::new(connect_ip(self.settings.bind), self.settings.ws_port)
    }
}

/// A public port of the broker, and the flag and variable that change it.
struct Port {
    bind: IpAddr,
    port: u16,
    /// Whether a free port the system picks replaces it when taken.
    movable: bool,
    flag: &'static str,
    env: &'static str,
}

impl Port {
    /// A listener on the port, or on a free one when it is taken and
    /// movable; with the port it listens on. A taken port that does not
    /// move names the flag that changes it.
    async fn listen(&self) -> Result<(tokio::net::TcpListener, u16), BrokerError> {
        let listener = match self.bind_to(self.port).await {
            Err(BrokerError::PortTaken { .. }) if self.movable => self.bind_to(0).await?,
            bound => bound?,
        };
        let port = listener
            .local_addr()
            .map_err(|e| self.cannot_listen(self.port, &e))?
            .port();
        Ok((listener, port))
    }

    async fn bind_to(&self, port: u16) -> Result<tokio::net::TcpListener, BrokerError> {
        match tokio::net::TcpListener::bind(SocketAddr::new(self.bind, port)).await {
            Ok(listener) => Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(BrokerError::PortTaken {
                port,
                flag: self.flag,
                env: self.env,
            }),
            Err(e) => Err(self.cannot_listen(port, &e)),
        }
    }

    fn cannot_listen(&self, port: u16, e: &std::io::Error) -> BrokerError {
        let (flag, env) = if e.kind() == std::io::ErrorKind::AddrNotAvailable {
            ("--broker-bind", "BROKER_BIND")
        } else {
            (self.flag, self.env)
        };
        BrokerError::CannotListen {
            addr: SocketAddr::new(self.bind, port),
            flag,
            env,
            reason: e.to_string(),
        }
    }
}

fn connect_ip(bind: IpAddr) -> IpAddr {
    match bind {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

/// What `upstream::start` hands back.
struct Started {
    internal: SocketAddr,
    engine_login: Credentials,
    health: tokio::sync::watch::Receiver<Result<(), String>>,
}

/// A build without the embedded broker: it never starts.
#[cfg(not(feature = "embedded-broker"))]
mod upstream {
    use super::{BrokerAuth, BrokerError, BrokerOptions, BrokerSettings, Started};

    pub(super) async fn start(
        _: BrokerSettings,
        _: Option<BrokerAuth>,
        _: BrokerOptions,
        _: tokio::net::TcpListener,
        _: tokio::net::TcpListener,
    ) -> Result<Started, BrokerError> {
        Err(BrokerError::Unavailable)
    }
}
