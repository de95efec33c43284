//! `run`: one exercise in the foreground, nothing stored, with a progress line,
//! a report and a summary.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tracing::info;

use super::{connect_mqtt, load, shutdown_signal};
use crate::app::logging::PROGRESS_LINE;
use crate::config::Config;
use crate::core::{Counts, State};
use crate::domain::{ExerciseId, ExerciseSeconds, Speed};
use crate::report::run::{Report, summary};
use crate::runtime::run::{self as runner, Progress, RunOptions};

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
