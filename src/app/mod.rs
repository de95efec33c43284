//! The subcommands, called by `main` once the command line is parsed.

pub mod logging;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;
use tracing::info;

use crate::app::logging::PROGRESS_LINE;
use crate::broker::{BrokerAuth, BrokerOptions, BrokerSettings, EmbeddedBroker, Origins};
use crate::config::Config;
use crate::core::{Command, Counts, State};
use crate::domain::{ExerciseId, ExerciseSeconds, Speed};
use crate::mqtt::{Credentials, Mqtt, MqttSettings};
use crate::report::run::{Report, summary};
use crate::runtime::run::{self as runner, Progress, RunOptions};
use crate::runtime::service::{CreateExercise, ExerciseInfo, ScenarioSource, Service};
use crate::scenario::{self, Scenario};
use crate::store::Store;

/// `validate FILE`: the summary and exit code 0, or every error and exit code 1.
pub fn validate(path: &Path, config: &Config) -> i32 {
    match load(path, config) {
        Ok(scenario) => {
            print!("{}", scenario::summary(&scenario));
            0
        }
        Err(errors) => {
            eprint!("{errors}");
            1
        }
    }
}

fn load(path: &Path, config: &Config) -> Result<Scenario, String> {
    scenario::load(
        path,
        &config.limits(),
        config.timeline_storage_path.as_deref(),
    )
    .map_err(|errors| {
        let mut out = format!(
            "{} is invalid: {} error{}\n",
            path.display(),
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        );
        for e in &errors {
            out.push_str(&format!("  {e}\n"));
        }
        out
    })
}

/// Arguments of `run`.
#[derive(Debug, Clone)]
pub struct RunArgs {
    pub scenario: PathBuf,
    pub exercise_id: Option<String>,
    pub speed: Speed,
    pub wait_for_start: bool,
    pub report: Option<PathBuf>,
    pub client_id: Option<String>,
}

/// `run FILE`: one exercise in the foreground.
pub async fn run(args: RunArgs, config: &Config) -> anyhow::Result<()> {
    let scenario = load(&args.scenario, config).map_err(anyhow::Error::msg)?;
    let exercise_id = match (&args.exercise_id, &scenario.exercise_id) {
        (Some(raw), _) => {
            ExerciseId::parse(raw).with_context(|| format!("--exercise-id {raw:?}"))?
        }
        (None, Some(id)) => id.clone(),
        (None, None) => {
            let millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let id = ExerciseId::generate(millis);
            println!("exercise id: {id}");
            id
        }
    };
    let policy = config.delivery_policy();
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| format!("scip-orchestrator-{exercise_id}"));
    let mqtt = connect_mqtt(
        config,
        config.mqtt_host(),
        config.mqtt_broker_port,
        client_id,
        config.mqtt_credentials()?,
    )
    .await?;
    info!(
        exercise_id = %exercise_id,
        broker = %format!("{}:{}", config.mqtt_host(), config.mqtt_broker_port),
        teams = scenario.teams.len(),
        deliveries = scenario.teams.iter().map(|t| t.timeline.injects.len()).sum::<usize>(),
        speed = args.speed.get(),
        "exercise loaded"
    );
    let scenario = Arc::new(scenario);
    let options = RunOptions {
        exercise_id,
        speed: args.speed,
        wait_for_start: args.wait_for_start,
        policy,
        feed_qos: config.feed_qos(),
        monitoring_every: Duration::from_secs(5),
        max_commands_per_minute: config.max_commands_per_minute,
    };
    let (progress_tx, progress_rx) = watch::channel(Progress {
        time: ExerciseSeconds::ZERO,
        total: scenario.duration,
        state: State::Initialized,
        counts: Counts::default(),
        connected: false,
    });
    let show = std::io::stderr().is_terminal();
    let renderer = show.then(|| tokio::spawn(render_progress(progress_rx)));
    let outcome = runner::run(
        scenario,
        options,
        mqtt.clone(),
        shutdown_signal(),
        progress_tx,
    )
    .await;
    if let Some(r) = renderer {
        r.abort();
        let _ = r.await;
        PROGRESS_LINE.store(false, Ordering::Relaxed);
        eprint!("\r\x1b[2K");
    }
    mqtt.close(Duration::from_secs(2)).await;
    if let Some(path) = &args.report {
        Report::new(&outcome)
            .write(path)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
        info!(path = %path.display(), "report written");
    }
    print!("{}", summary(&outcome));
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is
/// called, not when first polled: a signal during start-up still stops the
/// process cleanly once it serves.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (mut term, mut int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).expect("SIGTERM handler"),
            signal(SignalKind::interrupt()).expect("SIGINT handler"),
        )
    };
    async move {
        #[cfg(unix)]
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The live progress line: T+mm:ss of total, delivered, late, failed.
async fn render_progress(mut rx: watch::Receiver<Progress>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let p = *rx.borrow_and_update();
        let line = format!(
            "{} of {}  {:<11} delivered {}/{}  late {}  failed {}{}",
            p.time,
            p.total,
            p.state.as_str(),
            p.counts.delivered,
            p.counts.scheduled,
            p.counts.late,
            p.counts.failed,
            if p.connected {
                ""
            } else {
                "  (broker unreachable, injects wait)"
            }
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        PROGRESS_LINE.store(true, Ordering::Relaxed);
    }
}

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
    let ports = open_ports(&args.http_bind, args.public_url.as_deref(), config, false).await?;
    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| crate::store::default_sqlite_url(&args.data_dir));
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| format!("scip-orchestrator-serve-{}", ports.local.port()));
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

/// Arguments of `demo`.
#[derive(Debug, Clone)]
pub struct DemoArgs {
    pub http_bind: String,
    /// Holds the demo's database (`demo.db`, new at every run) and, unless
    /// MEDIA_STORAGE_PATH is set, the sample's folder under `media/`.
    pub data_dir: PathBuf,
    pub speed: Speed,
}

/// The folder name of the sample scenario, under MEDIA_STORAGE_PATH.
pub const SAMPLE_FOLDER: &str = "four-teams";

/// The sample scenario `examples/four-teams`, built into the binary: each
/// file's path in the scenario folder and its contents.
pub const SAMPLE_FILES: [(&str, &str); 5] = [
    (
        "scenario.json",
        include_str!("../../examples/four-teams/scenario.json"),
    ),
    (
        "timelines/blue-standard.json",
        include_str!("../../examples/four-teams/timelines/blue-standard.json"),
    ),
    (
        "timelines/red-aggressive.json",
        include_str!("../../examples/four-teams/timelines/red-aggressive.json"),
    ),
    (
        "timelines/timeline-orange.json",
        include_str!("../../examples/four-teams/timelines/timeline-orange.json"),
    ),
    (
        "timelines/timeline-green.json",
        include_str!("../../examples/four-teams/timelines/timeline-green.json"),
    ),
];

/// `demo`: the sample exercise with nothing but the binary: the embedded
/// broker (unless MQTT_BROKER_HOST is set), a fresh SQLite store, the HTTP
/// server and its pages. Prints where to look, starts the exercise at
/// `speed`, logs its progress and serves until SIGTERM or Ctrl-C.
pub async fn demo(args: DemoArgs, config: &Config) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    raise_open_file_limit();
    let package = sample_package()?;
    // Ports first: a taken one fails before anything is written.
    let ports = open_ports(&args.http_bind, None, config, true).await?;
    let mut config = config.clone();
    let mut source = ScenarioSource::Inline(package);
    if config.media_storage_path.is_none() {
        // The control room offers the sample for more exercises, and media
        // files put beside it are served: the exercise is the package's.
        let media = args.data_dir.join("media");
        write_sample(&media.join(SAMPLE_FOLDER))?;
        config.media_storage_path = Some(media);
        source = ScenarioSource::Folder(SAMPLE_FOLDER.to_owned());
    }
    // A fresh exercise at every run: nothing resumes from the last one.
    let database = args.data_dir.join("demo.db");
    remove_database(&database)?;
    let client_id = format!("scip-orchestrator-demo-{}", ports.local.port());
    let base = format!("http://{}", reachable(ports.local));
    let hosted = start_service(
        ports,
        &crate::store::sqlite_url(&database),
        client_id,
        base.clone(),
        config,
    )
    .await?;
    let service = &hosted.service;
    let exercise = service
        .create(CreateExercise {
            source,
            exercise_id: None,
            speed: Some(args.speed),
        })
        .await
        .context("cannot create the sample exercise")?;
    let (_, token) = service
        .issue_token(crate::access::tokens::Role::Controller, Some("demo".into()))
        .await
        .context("cannot issue the demo's controller token")?;
    print!("{}", demo_banner(&hosted.ports, &base, &exercise, &token));
    service
        .control(
            &exercise.id,
            Command::Start,
            Some("demo".into()),
            "demo".into(),
        )
        .await
        .context("cannot start the sample exercise")?;
    let total = exercise.snapshot().map_or(0, |s| s.total.get());
    println!(
        "exercise {} running at speed {}: {} exercise minutes in {:.0} s; Ctrl-C stops",
        exercise.id,
        args.speed,
        total / 60,
        f64::from(total) / args.speed.get()
    );
    let progress = tokio::spawn(log_progress(service.clone(), exercise.id.clone()));
    let result = hosted
        .serve_until_signal(
            shutdown,
            "demo stopped; its data is discarded at the next run",
        )
        .await;
    progress.abort();
    result
}

/// The listening side of `serve` and `demo`, opened first so that a taken
/// port fails before anything else happens.
struct Ports {
    listener: tokio::net::TcpListener,
    local: SocketAddr,
    /// Runs until the process exits.
    broker: Option<EmbeddedBroker>,
    /// Where the process's MQTT connection goes.
    mqtt_host: String,
    mqtt_port: u16,
}

impl Ports {
    /// The engine's login: MQTT_USERNAME when set, else the embedded
    /// broker's own login for the engine (rumqttd takes none without one).
    fn mqtt_credentials(&self, config: &Config) -> anyhow::Result<Option<Credentials>> {
        Ok(match config.mqtt_credentials()? {
            Some(credentials) => Some(credentials),
            None => self.broker.as_ref().map(|b| b.engine_login().clone()),
        })
    }
}

/// Binds the HTTP listener and picks the broker: MQTT_BROKER_HOST when set,
/// else the embedded one, started here. A build without it uses localhost
/// for `serve`, and fails when `need_broker` (`demo`).
async fn open_ports(
    http_bind: &str,
    public_url: Option<&str>,
    config: &Config,
    need_broker: bool,
) -> anyhow::Result<Ports> {
    let listener = bind_http(http_bind).await?;
    let local = listener.local_addr()?;
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
                ..BrokerOptions::default()
            };
            let broker =
                EmbeddedBroker::start_with(BrokerSettings::from_config(config), auth, options)
                    .await?;
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
fn raise_open_file_limit() -> Option<u64> {
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

/// The HTTP listener; a taken port names the flag that changes it.
async fn bind_http(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let port = addr.rsplit(':').next().unwrap_or(addr);
            bail!("port {port} is taken: choose another with --http-bind / HTTP_BIND")
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot listen on {addr} (HTTP_BIND / --http-bind)"))
        }
    }
}

/// What `serve` and `demo` run: the ports, the store and the service.
struct Hosted {
    ports: Ports,
    store: Store,
    service: Service,
}

/// Opens the store, connects to the broker and starts the service, which
/// restores every stored exercise.
async fn start_service(
    ports: Ports,
    database_url: &str,
    client_id: String,
    public_url: String,
    config: Config,
) -> anyhow::Result<Hosted> {
    let store = Store::connect(database_url)
        .await
        .with_context(|| format!("cannot open the database {}", redact(database_url)))?;
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
    let service = Service::start(store.clone(), mqtt, config, public_url)
        .await
        .context("cannot restore the stored exercises")?;
    if let Some(broker) = &ports.broker {
        service.watch_broker(broker.health());
    }
    Ok(Hosted {
        ports,
        store,
        service,
    })
}

impl Hosted {
    /// Serves HTTP until SIGTERM or Ctrl-C, then saves and ends every
    /// exercise and closes the store.
    async fn serve_until_signal(
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

/// The sample as one inline package: the scenario plus its timelines keyed
/// by path, which both team styles (`timeline_id`, `timeline_file`) resolve.
fn sample_package() -> anyhow::Result<serde_json::Value> {
    let mut package: serde_json::Value = serde_json::from_str(SAMPLE_FILES[0].1)
        .context("the embedded sample scenario is not JSON")?;
    let mut timelines = serde_json::Map::new();
    for (path, text) in &SAMPLE_FILES[1..] {
        let timeline = serde_json::from_str(text)
            .with_context(|| format!("the embedded sample timeline {path} is not JSON"))?;
        timelines.insert((*path).to_owned(), timeline);
    }
    package["timelines"] = serde_json::Value::Object(timelines);
    Ok(package)
}

/// Writes the sample's files to `folder` (replacing earlier copies).
fn write_sample(folder: &Path) -> anyhow::Result<()> {
    for (path, text) in SAMPLE_FILES {
        let file = folder.join(path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}

/// Deletes a SQLite database with its write-ahead log, if there.
fn remove_database(path: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot remove the last demo's {}",
                        Path::new(&file).display()
                    )
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// An address a browser on this machine can open: loopback for a listener
/// on every interface.
fn reachable(addr: SocketAddr) -> SocketAddr {
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

/// What `demo` prints before it starts the exercise: where to look.
fn demo_banner(ports: &Ports, base: &str, exercise: &ExerciseInfo, token: &str) -> String {
    let mut out = format!(
        "\nscip-orchestrator demo: {}\n\n",
        exercise.name.as_deref().unwrap_or(&exercise.id)
    );
    match &ports.broker {
        Some(broker) => {
            out.push_str(&format!("  MQTT broker:     {}\n", broker.mqtt_url()));
            out.push_str(&format!("  MQTT WebSocket:  {}\n", broker.ws_url()));
        }
        None => out.push_str(&format!(
            "  MQTT broker:     mqtt://{}:{} (external)\n",
            ports.mqtt_host, ports.mqtt_port
        )),
    }
    out.push_str(&format!("  control room:    {base}/#token={token}\n"));
    out.push_str(&format!("  API token:       {token} (controller)\n"));
    for team in &exercise.teams {
        out.push_str(&format!(
            "  team {:<11} {}\n",
            format!("{}:", team.id),
            team.dashboard_url
        ));
    }
    out.push_str(&format!(
        "\n  feeds: /exercise/{}/team/<team>/feed; clock: /exercise/{}/timer\n\n",
        exercise.id, exercise.id
    ));
    out
}

/// Logs the exercise's progress once per exercise minute and at every
/// change of state, until it is over.
async fn log_progress(service: Service, id: String) {
    let Ok(watch) = service.watch(&id).await else {
        return;
    };
    let mut snapshot = watch.snapshot;
    let mut last: Option<(State, u32)> = None;
    loop {
        let s = snapshot.borrow_and_update().clone();
        // Half-way through each minute: the minute's injects are counted.
        let now = (s.state, (s.time.get() + 30) / 60);
        if last != Some(now) {
            last = Some(now);
            info!(
                exercise_id = %id,
                "{} of {}  {}  delivered {}/{}  late {}  failed {}",
                s.time,
                s.total,
                s.state.as_str(),
                s.counts.delivered,
                s.counts.scheduled,
                s.counts.late,
                s.counts.failed
            );
            if matches!(s.state, State::Completed | State::Stopped) {
                info!("the exercise is over; the pages stay up until Ctrl-C");
                return;
            }
        }
        if snapshot.changed().await.is_err() {
            return;
        }
    }
}

/// The process's one MQTT connection.
async fn connect_mqtt(
    config: &Config,
    host: &str,
    port: u16,
    client_id: String,
    credentials: Option<Credentials>,
) -> anyhow::Result<Mqtt> {
    let mut settings = MqttSettings::new(host, port, client_id);
    settings.delivery_timeout = config.delivery_policy().timeout;
    settings.credentials = credentials;
    settings.tls = config.mqtt_tls_config()?;
    Ok(Mqtt::connect(settings).await?)
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// `import DIR`: a package folder into MEDIA_STORAGE_PATH, validated first.
pub fn import_package(
    dir: &Path,
    name: Option<&str>,
    replace: bool,
    config: &Config,
) -> anyhow::Result<()> {
    let root = package_root(config)?;
    let imported =
        crate::scenario::package::import_dir(dir, &root, name, replace, &config.limits())
            .with_context(|| format!("cannot import {}", dir.display()))?;
    print!("{}", crate::scenario::summary(&imported.scenario));
    println!(
        "\nImported as {:?} into {} ({} files, {} bytes).\nCreate an exercise from it: POST /api/v1/exercises {{\"scenario\": {:?}}}, or pick it in the control room.",
        imported.name,
        imported.path.display(),
        imported.files,
        imported.bytes,
        imported.name
    );
    Ok(())
}

/// `export NAME --to PATH`: a stored package to a new folder or a `.tar.gz`.
pub fn export_package(name: &str, to: &Path, config: &Config) -> anyhow::Result<()> {
    let root = package_root(config)?;
    let file_name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if file_name.ends_with(".tar.gz") || file_name.ends_with(".tgz") {
        if to.exists() {
            anyhow::bail!("{} exists already: export to a new file", to.display());
        }
        let archive = crate::scenario::package::export_archive(&root, name)?;
        std::fs::write(to, &archive).with_context(|| format!("cannot write {}", to.display()))?;
        println!(
            "Exported {name:?} to {} ({} bytes).",
            to.display(),
            archive.len()
        );
    } else {
        let files = crate::scenario::package::export_dir(&root, name, to)?;
        println!("Exported {name:?} to {} ({files} files).", to.display());
    }
    Ok(())
}

/// Arguments of `broker-acl`.
#[derive(Debug, Clone)]
pub struct BrokerAclArgs {
    pub exercise: String,
    pub scenario: Option<PathBuf>,
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub out: PathBuf,
    pub engine_user: Option<String>,
    pub force: bool,
}

/// `broker-acl EXERCISE`: Mosquitto password and ACL files for one
/// exercise, its teams from `--scenario` or from the stored exercise.
pub async fn broker_acl(args: BrokerAclArgs, config: &Config) -> anyhow::Result<()> {
    let exercise = ExerciseId::parse(&args.exercise)
        .with_context(|| format!("exercise id {:?}", args.exercise))?;
    let scenario = match &args.scenario {
        Some(path) => load(path, config).map_err(anyhow::Error::msg)?,
        None => {
            let url = match &args.database_url {
                Some(url) => url.clone(),
                None => {
                    // Opening would create an empty database.
                    let file = args.data_dir.join("scip.db");
                    if !file.exists() {
                        bail!(
                            "no database at {}: give the service's DATA_DIR or DATABASE_URL, or the exercise's scenario with --scenario",
                            file.display()
                        );
                    }
                    crate::store::default_sqlite_url(&args.data_dir)
                }
            };
            let store = Store::connect(&url)
                .await
                .with_context(|| format!("cannot open the database {}", redact(&url)))?;
            let row = store.get_exercise(exercise.as_str()).await;
            store.close().await;
            let row = row?.with_context(|| {
                format!(
                    "no exercise {:?} in {}: create it first, or give its scenario with --scenario",
                    exercise.as_str(),
                    redact(&url)
                )
            })?;
            let package: serde_json::Value = serde_json::from_str(&row.scenario_json)
                .with_context(|| format!("the stored scenario of {exercise} is not JSON"))?;
            scenario::load_inline(&package, &config.limits()).map_err(|errors| {
                anyhow::anyhow!(
                    "the stored scenario of {exercise} is invalid: {}",
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?
        }
    };
    let teams: Vec<_> = scenario.teams.iter().map(|t| t.id.clone()).collect();
    let plan = crate::mqtt::broker_files::plan(&exercise, &teams, args.engine_user.as_deref())?;
    let files = plan.write(&args.out, args.force)?;
    print!("{}", crate::mqtt::broker_files::summary(&plan, &files));
    Ok(())
}

fn package_root(config: &Config) -> anyhow::Result<PathBuf> {
    config.media_storage_path.clone().ok_or_else(|| {
        anyhow::anyhow!("packages live in MEDIA_STORAGE_PATH: set it (or --media-storage-path)")
    })
}

/// `hash-token`: the API_TOKENS entry of a token, or of a new one.
pub fn hash_token(token: Option<String>, new: bool, role: &str) -> anyhow::Result<()> {
    let role = crate::access::tokens::Role::parse(role).ok_or_else(|| {
        anyhow::anyhow!("--role {role:?}: expected observer, controller or admin")
    })?;
    let token = match (token, new) {
        (Some(_), true) => bail!("give a token or --new, not both"),
        (Some(token), false) => token,
        (None, true) => crate::access::tokens::generate(),
        (None, false) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the token from standard input")?;
            line.trim().to_owned()
        }
    };
    if token.is_empty() {
        bail!("the token is empty");
    }
    if new {
        println!("token:      {token}");
    }
    println!("API_TOKENS: {role}:{}", crate::access::tokens::hash(&token));
    Ok(())
}
