//! The subcommands, called by `main` once the command line is parsed.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;
use tracing::info;

use crate::config::Config;
use crate::core::{Counts, State};
use crate::domain::{ExerciseId, ExerciseSeconds};
use crate::logging::PROGRESS_LINE;
use crate::mqtt::{Mqtt, MqttSettings};
use crate::report::{Report, summary};
use crate::runner::{self, Progress, RunOptions};
use crate::scenario::{self, Scenario};

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
    pub speed: f64,
    pub wait_for_start: bool,
    pub report: Option<PathBuf>,
    pub client_id: Option<String>,
}

/// `run FILE`: one exercise in the foreground.
pub async fn run(args: RunArgs, config: &Config) -> anyhow::Result<()> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed must be a positive number, got {}", args.speed);
    }
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
    let mqtt = connect_mqtt(config, client_id).await?;
    info!(
        exercise_id = %exercise_id,
        broker = %format!("{}:{}", config.mqtt_broker_host, config.mqtt_broker_port),
        teams = scenario.teams.len(),
        deliveries = scenario.teams.iter().map(|t| t.timeline.injects.len()).sum::<usize>(),
        speed = args.speed,
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

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
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
pub async fn serve(args: ServeArgs, config: &Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.http_bind)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (HTTP_BIND / --http-bind)",
                args.http_bind
            )
        })?;
    let local = listener.local_addr()?;
    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| crate::store::default_sqlite_url(&args.data_dir));
    let store = crate::store::Store::connect(&database_url)
        .await
        .with_context(|| format!("cannot open the database {}", redact(&database_url)))?;
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| format!("scip-orchestrator-serve-{}", local.port()));
    let mqtt = connect_mqtt(config, client_id).await?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    // Before the restored exercises start counting deliveries.
    crate::http::install_metrics();
    let service = crate::service::Service::start(store.clone(), mqtt, config.clone(), public_url)
        .await
        .context("cannot restore the stored exercises")?;
    info!(
        http = %local,
        database = store.backend(),
        exercises = service.list().len(),
        "serving"
    );
    crate::http::serve(listener, service.clone(), shutdown_signal()).await?;
    info!("shutting down: exercises are saved and resume at the next start");
    service.shutdown().await;
    store.close().await;
    Ok(())
}

/// The process's one MQTT connection, as configured.
async fn connect_mqtt(config: &Config, client_id: String) -> anyhow::Result<Mqtt> {
    let mut settings = MqttSettings::new(
        config.mqtt_broker_host.clone(),
        config.mqtt_broker_port,
        client_id,
    );
    settings.delivery_timeout = config.delivery_policy().timeout;
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
