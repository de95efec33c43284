//! rumqttd itself: started on a thread of its own on a loopback port that
//! only the gate and the engine use, configured as its `rumqttd.toml` would
//! be, and probed for as long as the process lives.

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
/// (see `gate::upstream_client_id`), so it takes no one's
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
                && crate::mqtt::broker_files::same_secret(secret.as_bytes(), password.as_bytes())
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
