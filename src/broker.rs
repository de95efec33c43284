//! The embedded MQTT broker: rumqttd in this process, for `demo` and for
//! `serve` without MQTT_BROKER_HOST, so a laptop needs nothing but the
//! binary. Production keeps an external broker (Mosquitto).
//!
//! One TCP listener (the engine and MQTT tools) and one WebSocket listener
//! (browser MQTT clients of the earlier platform), both on BROKER_BIND.
//! rumqttd's `Broker::start` blocks for good and only logs when a listener
//! cannot bind, so each port is bind-tested first (a taken port is an error
//! naming the flag that changes it), the broker runs on a thread of its own,
//! and start-up waits until both ports accept connections. rumqttd has no
//! shutdown: the broker lives as long as the process.
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
//! - Clients must send a non-zero keep-alive.
//! - Each topic keeps its recent messages in memory, up to
//!   `SEGMENT_SIZE * (SEGMENT_COUNT + 1)` bytes; nothing is written to disk,
//!   so retained messages do not survive a restart.
//!
//! Access: with a [`BrokerAuth`] (MQTT_USERNAME or BROKER_PASSWORD_FILE set)
//! every client must log in as the engine's user or a user of the password
//! file; anonymous clients and wrong passwords are refused (rumqttd closes
//! the connection without a CONNACK). rumqttd 0.20 has no topic-level
//! authorization: its only hooks are the login check (`ConnectionSettings`
//! `auth`/`external_auth`, called once in `link/remote.rs` `mqtt_connect`)
//! and a tenant prefix taken from TLS client certificates (features
//! `verify-client-cert`/`validate-tenant-prefix`, fixed to
//! `/tenants/<id>/`). So a logged-in client may read and write every topic:
//! the per-team rules of `broker-acl` need Mosquitto.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::broker_acl;
use crate::config::Config;
use crate::mqtt::{Password, SettingsError};

/// How long start-up waits for the listeners to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the embedded broker listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerSettings {
    pub bind: IpAddr,
    /// MQTT over TCP.
    pub port: u16,
    /// MQTT over WebSocket.
    pub ws_port: u16,
}

impl BrokerSettings {
    /// BROKER_BIND, BROKER_PORT and BROKER_WS_PORT.
    pub fn from_config(config: &Config) -> Self {
        Self {
            bind: config.broker_bind,
            port: config.broker_port,
            ws_port: config.broker_ws_port,
        }
    }
}

/// Who may connect to the embedded broker: the engine's own login
/// (MQTT_USERNAME) and the users of a Mosquitto password file
/// (BROKER_PASSWORD_FILE). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct BrokerAuth {
    plain: Arc<HashMap<String, Password>>,
    hashed: Arc<HashMap<String, String>>,
}

impl BrokerAuth {
    /// From MQTT_USERNAME/MQTT_PASSWORD and BROKER_PASSWORD_FILE; None (anyone
    /// may connect) when neither is set.
    pub fn from_config(config: &Config) -> Result<Option<Self>, BrokerError> {
        let credentials = config.mqtt_credentials()?;
        let file = config.broker_password_file.as_deref();
        if credentials.is_none() && file.is_none() {
            return Ok(None);
        }
        let mut auth = Self::default();
        if let Some(path) = file {
            auth = auth.with_password_file(path)?;
        }
        match credentials {
            Some(c) => auth = auth.with_user(c.username, c.password),
            None => return Err(BrokerError::EngineLogin),
        }
        Ok(Some(auth))
    }

    /// Adds a user with a password in clear.
    pub fn with_user(mut self, username: impl Into<String>, password: Password) -> Self {
        Arc::make_mut(&mut self.plain).insert(username.into(), password);
        self
    }

    /// Adds the users of a Mosquitto password file (`$7$` or `$6$` hashes).
    pub fn with_password_file(mut self, path: &std::path::Path) -> Result<Self, BrokerError> {
        let users =
            broker_acl::read_password_file(path).map_err(|e| BrokerError::PasswordFile {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        Arc::make_mut(&mut self.hashed).extend(users);
        Ok(self)
    }

    /// Whether `username` may log in with `password`.
    pub fn check(&self, username: &str, password: &str) -> bool {
        if let Some(expected) = self.plain.get(username) {
            return broker_acl::same_secret(expected.expose().as_bytes(), password.as_bytes());
        }
        self.hashed
            .get(username)
            .is_some_and(|hash| broker_acl::verify_password(hash, password))
    }
}

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
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
        if !Self::AVAILABLE {
            return Err(BrokerError::Unavailable);
        }
        if settings.port == settings.ws_port {
            return Err(BrokerError::SamePort(settings.port));
        }
        check_free(settings.bind, settings.port, "--broker-port", "BROKER_PORT")?;
        check_free(
            settings.bind,
            settings.ws_port,
            "--broker-ws-port",
            "BROKER_WS_PORT",
        )?;
        imp::start(settings, auth).await?;
        Ok(Self { settings })
    }

    pub fn settings(&self) -> BrokerSettings {
        self.settings
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

/// Fails when `port` cannot be bound on `bind` now (the listener is dropped
/// at once, so rumqttd can take the port).
fn check_free(
    bind: IpAddr,
    port: u16,
    flag: &'static str,
    env: &'static str,
) -> Result<(), BrokerError> {
    let addr = SocketAddr::new(bind, port);
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(BrokerError::PortTaken { port, flag, env })
        }
        Err(e) => Err(BrokerError::CannotListen {
            addr,
            flag: if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                "--broker-bind"
            } else {
                flag
            },
            env: if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                "BROKER_BIND"
            } else {
                env
            },
            reason: e.to_string(),
        }),
    }
}

fn connect_ip(bind: IpAddr) -> IpAddr {
    match bind {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

#[cfg(feature = "embedded-broker")]
mod imp {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::time::Duration;

    use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
    use tokio::time::{Instant, sleep};
    use tracing::debug;

    use super::{BrokerAuth, BrokerError, BrokerSettings, START_TIMEOUT, connect_ip};
    use crate::mqtt::{INFLIGHT, MAX_PACKET_SIZE};

    /// Bytes of messages one topic (or subscription filter) keeps per
    /// segment; a segment may overflow by its last message.
    const SEGMENT_SIZE: usize = 4 * 1024 * 1024;
    /// Full segments kept besides the one being written.
    const SEGMENT_COUNT: usize = 4;

    pub(super) async fn start(
        settings: BrokerSettings,
        auth: Option<BrokerAuth>,
    ) -> Result<(), BrokerError> {
        let mut broker = rumqttd::Broker::new(config(&settings, auth));
        let thread = std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || broker.start().map_err(|e| e.to_string()))
            .map_err(|e| BrokerError::Stopped(format!("cannot start its thread: {e}")))?;
        let deadline = Instant::now() + START_TIMEOUT;
        let ip = connect_ip(settings.bind);
        for port in [settings.port, settings.ws_port] {
            let addr = SocketAddr::new(ip, port);
            loop {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    break;
                }
                if thread.is_finished() {
                    let reason = match thread.join() {
                        Ok(Ok(())) => "its listeners ended".to_owned(),
                        Ok(Err(e)) => e,
                        Err(_) => "it panicked".to_owned(),
                    };
                    return Err(BrokerError::Stopped(reason));
                }
                if Instant::now() >= deadline {
                    return Err(BrokerError::NotListening {
                        addr,
                        waited: START_TIMEOUT,
                    });
                }
                sleep(Duration::from_millis(5)).await;
            }
        }
        debug!(
            port = settings.port,
            ws_port = settings.ws_port,
            "embedded broker up"
        );
        Ok(())
    }

    /// rumqttd's configuration, as its `rumqttd.toml` would give it.
    fn config(settings: &BrokerSettings, auth: Option<BrokerAuth>) -> Config {
        let mut connections = ConnectionSettings {
            // Time a new connection has to send CONNECT.
            connection_timeout_ms: 10_000,
            max_payload_size: MAX_PACKET_SIZE,
            // Packets read from one connection in one go.
            max_inflight_count: usize::from(INFLIGHT),
            auth: None,
            external_auth: None,
            // Publishing to a topic nobody subscribed to yet is allowed
            // (otherwise rumqttd drops the connection).
            dynamic_filters: true,
        };
        if let Some(auth) = auth {
            // Checked once per CONNECT; a client without a login is refused
            // before this is called.
            connections.set_auth_handler(move |_client_id, username: String, password: String| {
                std::future::ready(auth.check(&username, &password))
            });
        }
        let server = |name: &str, port: u16| ServerSettings {
            name: name.to_owned(),
            listen: SocketAddr::new(settings.bind, port),
            tls: None,
            next_connection_delay_ms: 0,
            connections: connections.clone(),
        };
        Config {
            id: 0,
            router: RouterConfig {
                max_connections: 10_000,
                max_outgoing_packet_count: 200,
                max_segment_size: SEGMENT_SIZE,
                max_segment_count: SEGMENT_COUNT,
                ..RouterConfig::default()
            },
            v4: Some(HashMap::from([(
                "tcp".to_owned(),
                server("mqtt-tcp", settings.port),
            )])),
            ws: Some(HashMap::from([(
                "ws".to_owned(),
                server("mqtt-ws", settings.ws_port),
            )])),
            ..Config::default()
        }
    }
}

#[cfg(not(feature = "embedded-broker"))]
mod imp {
    use super::{BrokerAuth, BrokerError, BrokerSettings};

    pub(super) async fn start(_: BrokerSettings, _: Option<BrokerAuth>) -> Result<(), BrokerError> {
        Err(BrokerError::Unavailable)
    }
}
