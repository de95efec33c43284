//! The embedded MQTT broker: rumqttd in this process, for `demo` and for
//! `serve` without MQTT_BROKER_HOST, so a laptop needs nothing but the
//! binary. Production keeps an external broker (Mosquitto).
//!
//! One TCP listener (MQTT tools) and one WebSocket listener (browser MQTT
//! clients of the earlier platform), both on BROKER_BIND and both served by
//! the gate. rumqttd's `Broker::start` blocks for good and only logs when a
//! listener cannot bind, so the public ports are bound here first (a taken
//! port is an error naming the flag that changes it), rumqttd runs on a
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
//! the gate (`broker_gate`), which checks logins ([`BrokerAuth`]:
//! MQTT_USERNAME and BROKER_PASSWORD_FILE) and the topic rules of
//! BROKER_ACL_FILE, the same files Mosquitto takes.

#[cfg(feature = "embedded-broker")]
pub mod gate;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::Config;
use crate::mqtt::acl::Acl;
use crate::mqtt::broker_files;
use crate::mqtt::{Credentials, Password, SettingsError};

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

/// How the embedded broker treats clients beyond logins: timing and
/// browser checks.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// How long a new connection has to send its CONNECT (and a WebSocket
    /// its handshake).
    pub connect_timeout: Duration,
    /// The keep-alive the gate gives rumqttd for every client, whatever the
    /// client's own; the gate pings rumqttd when half of it passed quietly.
    pub upstream_keep_alive: Duration,
    /// Which web pages may open a WebSocket to the broker.
    pub origins: Origins,
    /// How often the broker checks that rumqttd still accepts connections
    /// (`EmbeddedBroker::health`).
    pub probe_every: Duration,
    /// Most clients connected at once (BROKER_MAX_CLIENTS); one more gets
    /// CONNACK 3, "server unavailable".
    pub max_clients: usize,
    /// Most distinct subscription filters, over the broker's life
    /// (BROKER_MAX_FILTERS): rumqttd keeps a log for every filter it was
    /// ever given, so a new one past this is refused (SUBACK 0x80).
    pub max_filters: usize,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            upstream_keep_alive: Duration::from_secs(60),
            origins: Origins::Any,
            probe_every: Duration::from_secs(2),
            max_clients: 10_000,
            max_filters: 20_000,
        }
    }
}

/// The web origins (`scheme://host[:port]`) whose pages may open a
/// WebSocket to the broker. A browser always sends its page's `Origin`, so
/// without this check any site a controller visits could drive the
/// exercise through the controller's browser; clients that are not
/// browsers send none and are not concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    Any,
    Only(Vec<String>),
}

impl Origins {
    /// From a list of origins (or URLs, whose path is ignored); `*` is any.
    pub fn parse<'a>(list: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut only = Vec::new();
        for item in list {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            if item == "*" {
                return Ok(Self::Any);
            }
            only.push(
                normalize_origin(item)
                    .ok_or_else(|| format!("{item:?} is not an origin (scheme://host[:port])"))?,
            );
        }
        Ok(Self::Only(only))
    }

    /// Whether a WebSocket handshake with this `Origin` header (None:
    /// no header, a client that is not a browser) is let in.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (Self::Any, _) | (_, None) => true,
            (Self::Only(list), Some(origin)) => {
                normalize_origin(origin).is_some_and(|o| list.contains(&o))
            }
        }
    }
}

/// `scheme://host[:port]` in lower case, without a default port or a path.
fn normalize_origin(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let default_port = if scheme == "http" { ":80" } else { ":443" };
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}"))
}

/// Who may connect to the embedded broker: the engine's own login
/// (MQTT_USERNAME) and the users of a Mosquitto password file
/// (BROKER_PASSWORD_FILE). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct BrokerAuth {
    plain: Arc<HashMap<String, Password>>,
    /// What the files give; shared by every clone, replaced by `reload`.
    files: Arc<RwLock<Files>>,
}

/// The users of BROKER_PASSWORD_FILE and the rules of BROKER_ACL_FILE, and
/// where they were read from.
#[derive(Debug, Default)]
struct Files {
    hashed: HashMap<String, String>,
    /// Topic rules of the password file's users.
    acl: Option<Arc<Acl>>,
    password_path: Option<PathBuf>,
    acl_path: Option<PathBuf>,
}

impl BrokerAuth {
    /// From MQTT_USERNAME/MQTT_PASSWORD and BROKER_PASSWORD_FILE; None (anyone
    /// may connect) when neither is set.
    pub fn from_config(config: &Config) -> Result<Option<Self>, BrokerError> {
        let credentials = config.mqtt_credentials()?;
        let file = config.broker_password_file.as_deref();
        if config.broker_acl_file.is_some() && file.is_none() {
            return Err(BrokerError::AclWithoutPasswords);
        }
        if credentials.is_none() && file.is_none() {
            return Ok(None);
        }
        let mut auth = Self::default();
        if let Some(path) = file {
            auth = auth.with_password_file(path)?;
        }
        if let Some(path) = config.broker_acl_file.as_deref() {
            auth = auth.with_acl_file(path)?;
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

    /// Takes the users of a Mosquitto password file (`$7$` or `$6$`
    /// hashes).
    pub fn with_password_file(self, path: &std::path::Path) -> Result<Self, BrokerError> {
        let users = read_passwords(path)?;
        let mut files = self.files_mut();
        files.hashed = users;
        files.password_path = Some(path.to_owned());
        drop(files);
        Ok(self)
    }

    /// Takes the topic rules of a Mosquitto `acl_file`: every user of the
    /// password file is then held to them (the plain users, the engine's,
    /// are not).
    pub fn with_acl_file(self, path: &std::path::Path) -> Result<Self, BrokerError> {
        let acl = Acl::read(path)?;
        let mut files = self.files_mut();
        files.acl = Some(Arc::new(acl));
        files.acl_path = Some(path.to_owned());
        drop(files);
        Ok(self)
    }

    /// Reads the password and ACL files again (on SIGHUP, as Mosquitto
    /// does). New connections get the new logins and rules; connected
    /// clients keep the rules they connected under. On any error nothing
    /// changes.
    pub fn reload(&self) -> Result<(), BrokerError> {
        let (password_path, acl_path) = {
            let files = self.files_read();
            (files.password_path.clone(), files.acl_path.clone())
        };
        let hashed = password_path.as_deref().map(read_passwords).transpose()?;
        let acl = acl_path.as_deref().map(Acl::read).transpose()?;
        let mut files = self.files_mut();
        if let Some(hashed) = hashed {
            files.hashed = hashed;
        }
        if let Some(acl) = acl {
            files.acl = Some(Arc::new(acl));
        }
        Ok(())
    }

    /// The topic rules now, when there are any.
    pub fn acl(&self) -> Option<Arc<Acl>> {
        self.files_read().acl.clone()
    }

    fn files_read(&self) -> std::sync::RwLockReadGuard<'_, Files> {
        self.files.read().unwrap_or_else(|e| e.into_inner())
    }

    fn files_mut(&self) -> std::sync::RwLockWriteGuard<'_, Files> {
        self.files.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `username` is a plain user (the engine's login): one the
    /// ACL does not restrict.
    pub fn is_plain(&self, username: &str) -> bool {
        self.plain.contains_key(username)
    }

    /// Whether `username` may log in with `password` as a plain user.
    pub fn check_plain(&self, username: &str, password: &str) -> bool {
        self.plain.get(username).is_some_and(|expected| {
            broker_files::same_secret(expected.expose().as_bytes(), password.as_bytes())
        })
    }

    /// Whether `username` may log in with `password`.
    pub fn check(&self, username: &str, password: &str) -> bool {
        if self.is_plain(username) {
            return self.check_plain(username, password);
        }
        let hash = self.files_read().hashed.get(username).cloned();
        hash.is_some_and(|hash| broker_files::verify_password(&hash, password))
    }
}

fn read_passwords(path: &std::path::Path) -> Result<HashMap<String, String>, BrokerError> {
    broker_files::read_password_file(path).map_err(|e| BrokerError::PasswordFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

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
        let tcp = listen(settings.bind, settings.port, "--broker-port", "BROKER_PORT").await?;
        let ws = listen(
            settings.bind,
            settings.ws_port,
            "--broker-ws-port",
            "BROKER_WS_PORT",
        )
        .await?;
        let started = imp::start(settings, auth, options, tcp, ws).await?;
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

/// A listener on `port` of `bind`; a taken port names the flag that
/// changes it.
async fn listen(
    bind: IpAddr,
    port: u16,
    flag: &'static str,
    env: &'static str,
) -> Result<tokio::net::TcpListener, BrokerError> {
    let addr = SocketAddr::new(bind, port);
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => Ok(listener),
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

/// What `imp::start` hands back.
struct Started {
    internal: SocketAddr,
    engine_login: Credentials,
    health: tokio::sync::watch::Receiver<Result<(), String>>,
}

#[cfg(feature = "embedded-broker")]
mod imp {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use base64::Engine as _;
    use ring::rand::{SecureRandom, SystemRandom};
    use rumqttc::mqttbytes::v4::{Connect, Login, Packet};
    use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::watch;
    use tokio::time::{Instant, sleep, timeout};
    use tracing::{debug, info, warn};

    use super::{BrokerAuth, BrokerError, BrokerOptions, BrokerSettings, START_TIMEOUT, Started};
    use crate::broker::gate::Gate;
    use crate::mqtt::{Credentials, INFLIGHT, MAX_PACKET_SIZE, Password};

    /// Bytes of messages one topic (or subscription filter) keeps per
    /// segment; a segment may overflow by its last message.
    const SEGMENT_SIZE: usize = 4 * 1024 * 1024;
    /// Full segments kept besides the one being written.
    const SEGMENT_COUNT: usize = 4;
    /// The user name the gate logs in to rumqttd with.
    const GATE_USER: &str = "scip-gate";
    /// The user name of the engine's own login to rumqttd.
    const ENGINE_USER: &str = "scip-engine";
    /// The probe's client id: no client of the gate gets one without a `:`
    /// (see `broker_gate::upstream_client_id`), so it takes no one's
    /// session.
    const PROBE_CLIENT_ID: &str = "scip-broker-probe";
    /// Connections to rumqttd beyond the gate's clients.
    const RESERVED_CONNECTIONS: usize = 256;

    /// Starts rumqttd on a loopback port and the gate on the public ones;
    /// returns rumqttd's address and the engine's login, for the engine.
    pub(super) async fn start(
        settings: BrokerSettings,
        auth: Option<BrokerAuth>,
        options: BrokerOptions,
        tcp: tokio::net::TcpListener,
        ws: tokio::net::TcpListener,
    ) -> Result<Started, BrokerError> {
        let internal = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), free_loopback_port()?);
        let gate_login = Login::new(GATE_USER, random_password()?);
        let engine_login = Credentials {
            username: ENGINE_USER.to_owned(),
            password: Password::new(random_password()?),
        };
        let mut broker = rumqttd::Broker::new(config(
            internal,
            &gate_login,
            &engine_login,
            auth.clone(),
            options.max_clients,
        ));
        let thread = std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || broker.start().map_err(|e| e.to_string()))
            .map_err(|e| BrokerError::Stopped(format!("cannot start its thread: {e}")))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(internal).await.is_ok() {
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
                    addr: internal,
                    waited: START_TIMEOUT,
                });
            }
            sleep(Duration::from_millis(5)).await;
        }
        if !nodelay_on_listener(internal) {
            tracing::warn!(
                %internal,
                "could not turn on TCP_NODELAY for rumqttd's connections: its acknowledgements may wait up to 40 ms"
            );
        }
        let (health_tx, health) = watch::channel(Ok(()));
        tokio::spawn(watch_health(
            internal,
            gate_login.clone(),
            options.probe_every,
            health_tx,
        ));
        let gate = Gate::new(internal, gate_login, auth, options);
        tokio::spawn(gate.clone().serve_tcp(tcp));
        tokio::spawn(gate.serve_ws(ws));
        debug!(
            port = settings.port,
            ws_port = settings.ws_port,
            %internal,
            "embedded broker up"
        );
        Ok(Started {
            internal,
            engine_login,
            health,
        })
    }

    /// Connects to rumqttd every `every` and publishes whether it accepted
    /// (a CONNACK 0 within a few seconds) until nobody listens. rumqttd can
    /// fail in ways it does not report (a panic in one of its tasks leaves
    /// it listening but refusing every CONNECT); this is how readiness
    /// learns of it.
    async fn watch_health(
        internal: SocketAddr,
        login: Login,
        every: Duration,
        health: watch::Sender<Result<(), String>>,
    ) {
        let gauge = metrics::gauge!("scip_broker_ready");
        for attempt in 0u64.. {
            // A fresh id each time: should an attempt be cut short, the
            // next does not find its id half registered in rumqttd.
            let now = probe(internal, &login, attempt).await;
            gauge.set(if now.is_ok() { 1.0 } else { 0.0 });
            let was = health.borrow().clone();
            match (&was, &now) {
                (Ok(()), Err(e)) => {
                    warn!(error = %e, "the embedded broker no longer accepts connections")
                }
                (Err(_), Ok(())) => info!("the embedded broker accepts connections again"),
                _ => {}
            }
            if was != now && health.send(now).is_err() {
                return;
            }
            if health.is_closed() {
                return;
            }
            sleep(every).await;
        }
    }

    /// One CONNECT to rumqttd, answered with CONNACK 0 in time.
    async fn probe(internal: SocketAddr, login: &Login, attempt: u64) -> Result<(), String> {
        const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect(internal)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            let mut connect = Connect::new(format!("{PROBE_CLIENT_ID}-{attempt}"));
            connect.keep_alive = 10;
            connect.login = Some(login.clone());
            let mut out = bytes::BytesMut::new();
            Packet::Connect(connect)
                .write(&mut out, usize::MAX)
                .map_err(|e| e.to_string())?;
            stream
                .write_all(&out)
                .await
                .map_err(|e| format!("cannot send CONNECT: {e}"))?;
            let mut answer = [0u8; 4];
            stream
                .read_exact(&mut answer)
                .await
                .map_err(|_| "closed the connection without a CONNACK".to_owned())?;
            // CONNACK, length 2, session flags, return code 0.
            if answer[0] != 0x20 || answer[1] != 0x02 || answer[3] != 0 {
                return Err(format!("answered {answer:02x?} instead of CONNACK 0"));
            }
            let _ = stream.write_all(&[0xe0, 0x00]).await;
            Ok(())
        };
        timeout(PROBE_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Err(format!("no CONNACK within {} s", PROBE_TIMEOUT.as_secs())))
    }

    /// Turns on TCP_NODELAY for every connection rumqttd accepts; true when
    /// done. rumqttd never sets it, so its small writes (a PUBACK, a feed
    /// message) wait behind Nagle's algorithm for the peer's delayed ACK:
    /// measured, PUBACKs then took 3 ms at the median on some connections and
    /// up to 40 ms. Linux copies the option from a listening socket to the
    /// connections it accepts, so it is set on rumqttd's listener, found
    /// among the process's open files by its address (rumqttd takes an
    /// address, not a listener).
    #[cfg(target_os = "linux")]
    fn nodelay_on_listener(addr: SocketAddr) -> bool {
        use std::os::fd::BorrowedFd;
        let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
            return false;
        };
        let mut done = false;
        for entry in entries.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let is_socket = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
            if !is_socket {
                continue;
            }
            // SAFETY: the descriptor was open a moment ago and is only
            // borrowed for two system calls. Should it have been closed and
            // reused meanwhile, getsockname on whatever it is now is
            // harmless, and setsockopt only follows a match of rumqttd's
            // address, whose listener stays open for the process's life.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let socket = socket2::SockRef::from(&fd);
            let local = socket.local_addr().ok().and_then(|a| a.as_socket());
            if local == Some(addr) && socket.peer_addr().is_err() {
                done |= socket.set_tcp_nodelay(true).is_ok();
            }
        }
        done
    }

    #[cfg(not(target_os = "linux"))]
    fn nodelay_on_listener(_: SocketAddr) -> bool {
        false
    }

    /// A loopback port free now, for rumqttd (which binds it itself).
    fn free_loopback_port() -> Result<u16, BrokerError> {
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| BrokerError::Stopped(format!("no loopback port for rumqttd: {e}")))
    }

    /// A fresh random password for a login to rumqttd.
    fn random_password() -> Result<String, BrokerError> {
        let mut bytes = [0u8; 24];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| BrokerError::Stopped("no random numbers from the system".into()))?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// rumqttd's configuration, as its `rumqttd.toml` would give it: one
    /// TCP listener on loopback, which only the gate and the engine use,
    /// each with its login (and the plain users of `auth`, MQTT_USERNAME).
    fn config(
        internal: SocketAddr,
        gate: &Login,
        engine: &Credentials,
        auth: Option<BrokerAuth>,
        max_clients: usize,
    ) -> Config {
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
        // Checked once per CONNECT, before rumqttd looks at anything else
        // (a connection without a login is refused before this is called).
        let gate = gate.clone();
        let engine = engine.clone();
        connections.set_auth_handler(move |_client_id, username: String, password: String| {
            let same = |user: &str, secret: &str| {
                username == user
                    && crate::mqtt::broker_files::same_secret(
                        secret.as_bytes(),
                        password.as_bytes(),
                    )
            };
            let allowed = same(&gate.username, &gate.password)
                || same(&engine.username, engine.password.expose())
                || auth
                    .as_ref()
                    .is_some_and(|auth| auth.check_plain(&username, &password));
            std::future::ready(allowed)
        });
        Config {
            id: 0,
            router: RouterConfig {
                // The gate holds clients to `max_clients`; the rest is
                // room for the engine, the probe and MQTT_USERNAME logins.
                // Over its limit rumqttd refuses without an answer and
                // leaves the client id half registered (the same id once
                // more then panics it), so it must never be reached.
                max_connections: max_clients.saturating_add(RESERVED_CONNECTIONS),
                max_outgoing_packet_count: 200,
                max_segment_size: SEGMENT_SIZE,
                max_segment_count: SEGMENT_COUNT,
                ..RouterConfig::default()
            },
            v4: Some(HashMap::from([(
                "tcp".to_owned(),
                ServerSettings {
                    name: "mqtt-internal".to_owned(),
                    listen: internal,
                    tls: None,
                    next_connection_delay_ms: 0,
                    connections,
                },
            )])),
            ..Config::default()
        }
    }
}

#[cfg(not(feature = "embedded-broker"))]
mod imp {
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

#[cfg(test)]
mod tests {
    use super::Origins;

    #[test]
    fn origins_match_scheme_host_and_port_only() {
        let own = Origins::parse(["http://127.0.0.1:8080/", "https://Exercise.Example"]).unwrap();
        let check = |origin: Option<&str>, expected: bool| {
            assert_eq!(own.allows(origin), expected, "{origin:?}");
        };
        check(None, true);
        check(Some("http://127.0.0.1:8080"), true);
        check(Some("https://exercise.example"), true);
        check(Some("https://exercise.example:443"), true);
        check(Some("http://exercise.example"), false);
        check(Some("http://127.0.0.1:8081"), false);
        check(Some("http://127.0.0.1:8080.evil.example"), false);
        check(Some("null"), false);
        check(Some(""), false);
        assert_eq!(Origins::parse(["*"]).unwrap(), Origins::Any);
        assert!(
            Origins::parse(["http://a", " * "])
                .unwrap()
                .allows(Some("null"))
        );
        for bad in ["ftp://x", "127.0.0.1:8080", "http://", "http://user@host"] {
            assert!(Origins::parse([bad]).is_err(), "{bad}");
        }
    }
}
