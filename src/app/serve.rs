//! `serve`: every exercise in one process, and what `serve` and `demo` share:
//! the listening ports (opened first), the embedded broker, the store and the
//! service.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use tracing::info;

use super::{connect_mqtt, redact, shutdown_signal};
use crate::broker::{
    BrokerAuth, BrokerOptions, BrokerSettings, EmbeddedBroker, MovablePorts, Origins,
};
use crate::config::{Config, DEFAULT_BROKER_PORT, DEFAULT_BROKER_WS_PORT};
use crate::mqtt::Credentials;
use crate::runtime::service::Service;
use crate::store::Store;

/// Arguments of `serve`.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    pub http_bind: String,
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub public_url: Option<String>,
    pub client_id: Option<String>,
}

/// `serve`: every exercise of the organisation in one process, with the HTTP
/// API, until SIGTERM or Ctrl-C; running exercises go on at the next start.
/// Without MQTT_BROKER_HOST it starts the embedded broker (when built in).
pub async fn serve(args: ServeArgs, config: &Config) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    raise_open_file_limit();
    let listen = Listen::fixed(&args.http_bind, config);
    let ports = open_ports(&listen, args.public_url.as_deref(), config, false).await?;
    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| crate::store::default_sqlite_url(&args.data_dir));
    let client_id = ClientId {
        given: args.client_id.clone(),
        default: format!("scip-orchestrator-serve-{}", ports.local.port()),
    };
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", ports.local));
    let hosted = start_service(ports, &database_url, client_id, public_url, config.clone()).await?;
    if let Some(token) = hosted
        .service
        .bootstrap_admin()
        .await
        .context("cannot issue the first admin token")?
    {
        // Shown once: only its hash is kept.
        eprintln!(
            "\nNo API token was configured or issued yet. The first admin token, shown only now:\n\n  {token}\n\nKeep it safe; issue tokens for controllers and observers with POST /api/v1/tokens.\n"
        );
        info!("issued the first admin token (printed on stderr once)");
    }
    info!(
        http = %hosted.ports.local,
        database = hosted.store.backend(),
        exercises = hosted.service.list().len(),
        "serving"
    );
    hosted
        .serve_until_signal(
            shutdown,
            "shutting down: exercises are saved and resume at the next start",
        )
        .await
}

/// Where `serve` or `demo` listens. A movable port is one of `demo`'s
/// defaults, given by no flag or variable: when it is taken, a free port
/// the system picks replaces it; any other taken port is an error naming
/// the flag that changes it.
pub(super) struct Listen {
    pub(super) http_bind: String,
    pub(super) http_movable: bool,
    /// The embedded broker's MQTT and WebSocket ports.
    pub(super) mqtt: u16,
    pub(super) ws: u16,
    pub(super) broker_movable: MovablePorts,
}

impl Listen {
    /// `serve`'s: every port where it is given, or its default; none moves.
    pub(super) fn fixed(http_bind: &str, config: &Config) -> Self {
        Self {
            http_bind: http_bind.to_owned(),
            http_movable: false,
            mqtt: config.broker_port.unwrap_or(DEFAULT_BROKER_PORT),
            ws: config.broker_ws_port.unwrap_or(DEFAULT_BROKER_WS_PORT),
            broker_movable: MovablePorts::default(),
        }
    }
}

/// The listening side of `serve` and `demo`, opened first so that a taken
/// port fails before anything else happens.
pub(super) struct Ports {
    pub(super) listener: tokio::net::TcpListener,
    pub(super) local: SocketAddr,
    /// Runs until the process exits.
    pub(super) broker: Option<EmbeddedBroker>,
    /// Where the process's MQTT connection goes.
    pub(super) mqtt_host: String,
    pub(super) mqtt_port: u16,
    /// A line for each movable port that was taken: where its listener
    /// went instead.
    pub(super) moved: Vec<String>,
}

impl Ports {
    /// The engine's login: MQTT_USERNAME when set, else the embedded
    /// broker's own login for the engine (rumqttd takes none without one).
    pub(super) fn mqtt_credentials(&self, config: &Config) -> anyhow::Result<Option<Credentials>> {
        Ok(match config.mqtt_credentials()? {
            Some(credentials) => Some(credentials),
            None => self.broker.as_ref().map(|b| b.engine_login().clone()),
        })
    }
}

/// Binds the HTTP listener and picks the broker: MQTT_BROKER_HOST when set,
/// else the embedded one, started here. A build without it uses localhost
/// for `serve`, and fails when `need_broker` (`demo`).
pub(super) async fn open_ports(
    listen: &Listen,
    public_url: Option<&str>,
    config: &Config,
    need_broker: bool,
) -> anyhow::Result<Ports> {
    let (listener, http_taken) = bind_http(&listen.http_bind, listen.http_movable).await?;
    let local = listener.local_addr()?;
    let mut moved = Vec::new();
    if let Some(port) = http_taken {
        moved.push(format!(
            "port {port} is taken: the pages and the API are on http://{} instead",
            reachable(local)
        ));
    }
    let mut broker_files = None;
    let (broker, mqtt_host, mqtt_port) = match &config.mqtt_broker_host {
        Some(host) => (None, host.clone(), config.mqtt_broker_port),
        None if !EmbeddedBroker::AVAILABLE && !need_broker => {
            (None, config.mqtt_host().to_owned(), config.mqtt_broker_port)
        }
        None => {
            if config.mqtt_tls {
                bail!(
                    "MQTT_TLS needs an external broker (MQTT_BROKER_HOST): the embedded broker listens without TLS"
                );
            }
            let auth = BrokerAuth::from_config(config)?;
            broker_files.clone_from(&auth);
            let options = BrokerOptions {
                origins: ws_origins(config, public_url, local)?,
                max_clients: match config.broker_max_clients {
                    Some(max) => max as usize,
                    None => default_max_clients(),
                },
                max_filters: config.broker_max_filters as usize,
                movable: listen.broker_movable,
                ..BrokerOptions::default()
            };
            let settings = BrokerSettings {
                bind: config.broker_bind,
                port: listen.mqtt,
                ws_port: listen.ws,
            };
            let broker = EmbeddedBroker::start_with(settings, auth, options).await?;
            let now = broker.settings();
            if now.port != settings.port {
                moved.push(format!(
                    "port {} is taken (another MQTT broker?): the embedded broker listens on {} instead",
                    settings.port,
                    broker.tcp_addr()
                ));
            }
            if now.ws_port != settings.ws_port {
                moved.push(format!(
                    "port {} is taken: the embedded broker's WebSocket listener is on {} instead",
                    settings.ws_port,
                    broker.ws_addr()
                ));
            }
            info!(
                mqtt = %broker.mqtt_url(),
                websocket = %broker.ws_url(),
                internal = %broker.engine_addr(),
                "embedded MQTT broker listening"
            );
            let engine = broker.engine_addr();
            let (host, port) = (engine.ip().to_string(), engine.port());
            (Some(broker), host, port)
        }
    };
    reload_on_hangup(broker_files);
    Ok(Ports {
        listener,
        local,
        broker,
        mqtt_host,
        mqtt_port,
        moved,
    })
}

/// How many clients the embedded broker holds by default: each costs three
/// open files (its socket, the gate's connection to rumqttd and rumqttd's
/// end), and the rest of the process needs some, so a quarter of the limit
/// of open files, raised first to its hard limit, and at most 10,000.
fn default_max_clients() -> usize {
    let limit = raise_open_file_limit().unwrap_or(1024);
    usize::try_from(limit / 4)
        .unwrap_or(usize::MAX)
        .clamp(64, 10_000)
}

/// Raises the soft limit of open files to the hard one (a server holds a
/// file per connection, and many systems start at 1024); the limit now.
pub(super) fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the limit of open files");
            None
        }
    }
}

/// The web origins whose pages may use the embedded broker's WebSocket
/// listener: BROKER_WS_ORIGINS, else the service's own (PUBLIC_URL, or the
/// HTTP address with both its loopback names).
fn ws_origins(
    config: &Config,
    public_url: Option<&str>,
    local: SocketAddr,
) -> anyhow::Result<Origins> {
    if let Some(list) = &config.broker_ws_origins {
        return Origins::parse(list.split(','))
            .map_err(|e| anyhow::anyhow!("BROKER_WS_ORIGINS / --broker-ws-origins: {e}"));
    }
    let mut own = Vec::new();
    if let Some(url) = public_url {
        own.push(url.to_owned());
    }
    let port = local.port();
    if local.ip().is_loopback() || local.ip().is_unspecified() {
        own.push(format!("http://127.0.0.1:{port}"));
        own.push(format!("http://localhost:{port}"));
        own.push(format!("http://[::1]:{port}"));
    } else {
        own.push(format!("http://{local}"));
    }
    Origins::parse(own.iter().map(String::as_str))
        .map_err(|e| anyhow::anyhow!("PUBLIC_URL / --public-url: {e}"))
}

/// Handles SIGHUP for the life of the process. With the embedded broker's
/// password and ACL files, it reads them again (as Mosquitto does); a file
/// that cannot be read or parsed is logged and the rules stay as they were.
/// Without them there is nothing to read again: the signal is logged and
/// changes nothing (its default action would end the process).
fn reload_on_hangup(auth: Option<BrokerAuth>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("no SIGHUP handler: the broker's files are read at start only");
            return;
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match auth.as_ref().map(BrokerAuth::reload) {
                    None => info!(
                        "SIGHUP: no broker password or ACL file to read again; nothing changes"
                    ),
                    Some(Ok(())) => info!("SIGHUP: broker password and ACL files read again"),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "SIGHUP: broker files not reloaded, the old ones still apply")
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = auth;
}

/// The HTTP listener, with the port it left when that was taken and
/// `movable` (then it listens on a free one of the same address); a taken
/// port that does not move names the flag that changes it.
async fn bind_http(
    addr: &str,
    movable: bool,
) -> anyhow::Result<(tokio::net::TcpListener, Option<u16>)> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => Ok((listener, None)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if let (true, Ok(wanted)) = (movable, addr.parse::<SocketAddr>()) {
                let free = SocketAddr::new(wanted.ip(), 0);
                let listener = tokio::net::TcpListener::bind(free).await.with_context(|| {
                    format!("cannot listen on {free} (HTTP_BIND / --http-bind)")
                })?;
                return Ok((listener, Some(wanted.port())));
            }
            let port = addr.rsplit(':').next().unwrap_or(addr);
            bail!("port {port} is taken: choose another with --http-bind / HTTP_BIND")
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot listen on {addr} (HTTP_BIND / --http-bind)"))
        }
    }
}

/// What `serve` and `demo` run: the ports, the store and the service.
pub(super) struct Hosted {
    pub(super) ports: Ports,
    pub(super) store: Store,
    pub(super) service: Service,
    /// Holds the SQLite lock file while the process serves.
    _role: RoleGuard,
}

/// The MQTT client id: the one given, else a node's own, else `default`.
pub(super) struct ClientId {
    pub(super) given: Option<String>,
    pub(super) default: String,
}

/// What stays held of the node's role while it serves.
struct RoleGuard {
    _file: Option<std::fs::File>,
    _lock: Option<crate::store::NodeLock>,
}

/// Opens the store, connects to the broker and starts the service, which
/// restores every stored exercise.
pub(super) async fn start_service(
    ports: Ports,
    database_url: &str,
    client_id: ClientId,
    public_url: String,
    config: Config,
) -> anyhow::Result<Hosted> {
    let sqlite_lock = super::node::lock_sqlite(database_url)?;
    let store = Store::connect(database_url)
        .await
        .with_context(|| format!("cannot open the database {}", redact(database_url)))?;
    let role = if store.backend() == "sqlite" {
        super::node::Role::Sqlite(sqlite_lock)
    } else {
        super::node::place(
            &store,
            database_url,
            &config,
            ports.broker.is_some(),
            ports.local,
        )
        .await?
    };
    let client_id = client_id
        .given
        .or_else(|| role.client_id())
        .unwrap_or(client_id.default);
    let (node, guard) = match role {
        super::node::Role::Cluster(settings, lock) => (
            Some((settings, lock)),
            RoleGuard {
                _file: None,
                _lock: None,
            },
        ),
        super::node::Role::Sqlite(file) => (
            None,
            RoleGuard {
                _file: file,
                _lock: None,
            },
        ),
        super::node::Role::SinglePostgres(lock) => (
            None,
            RoleGuard {
                _file: None,
                _lock: Some(lock),
            },
        ),
    };
    let credentials = ports.mqtt_credentials(&config)?;
    let mqtt = connect_mqtt(
        &config,
        &ports.mqtt_host,
        ports.mqtt_port,
        client_id,
        credentials,
    )
    .await?;
    // Before the restored exercises start counting deliveries.
    crate::http::install_metrics();
    let service = Service::start_node(store.clone(), mqtt, config, public_url, node)
        .await
        .context("cannot restore the stored exercises")?;
    if let Some(broker) = &ports.broker {
        service.watch_broker(broker.health());
    }
    Ok(Hosted {
        ports,
        store,
        service,
        _role: guard,
    })
}

impl Hosted {
    /// Serves HTTP until SIGTERM or Ctrl-C, then saves and ends every
    /// exercise and closes the store.
    pub(super) async fn serve_until_signal(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        farewell: &str,
    ) -> anyhow::Result<()> {
        crate::http::serve(self.ports.listener, self.service.clone(), shutdown).await?;
        info!("{farewell}");
        self.service.shutdown().await;
        self.store.close().await;
        Ok(())
    }
}

/// An address a browser on this machine can open: loopback for a listener
/// on every interface.
pub(super) fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        ip if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}
