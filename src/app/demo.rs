//! `demo`: the built-in sample scenario on embedded defaults, its links and
//! tokens printed, its progress logged.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use tracing::info;

use super::serve::{Listen, Ports, open_ports, raise_open_file_limit, reachable, start_service};
use super::shutdown_signal;
use crate::broker::MovablePorts;
use crate::config::{Config, DEFAULT_BROKER_PORT, DEFAULT_BROKER_WS_PORT};
use crate::core::{Command, State};
use crate::domain::Speed;
use crate::runtime::service::{CreateExercise, ExerciseInfo, ScenarioSource, Service};

/// Arguments of `demo`.
#[derive(Debug, Clone)]
pub struct DemoArgs {
    /// HTTP_BIND, when given: then a taken port is an error.
    pub http_bind: Option<String>,
    /// The ports used when none is given; each moves when taken.
    pub defaults: DemoDefaults,
    /// Holds the demo's database (`demo.db`, new at every run) and, unless
    /// MEDIA_STORAGE_PATH is set, the sample's folder under `media/`.
    pub data_dir: PathBuf,
    pub speed: Speed,
    /// Leave the exercise initialized until someone starts it: Enter on the
    /// terminal, the control room, the API or the control topic.
    pub wait_for_start: bool,
}

/// The ports `demo` listens on when no flag or variable gives them: the
/// HTTP address, and the embedded broker's MQTT and WebSocket ports. When
/// one is taken (a Mosquitto on 1883, say), a free port replaces it and
/// `demo` prints where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoDefaults {
    pub http: SocketAddr,
    pub mqtt: u16,
    pub ws: u16,
}

impl Default for DemoDefaults {
    /// 127.0.0.1:8080, 1883 and 8083.
    fn default() -> Self {
        Self {
            http: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 8080),
            mqtt: DEFAULT_BROKER_PORT,
            ws: DEFAULT_BROKER_WS_PORT,
        }
    }
}

impl FromStr for DemoDefaults {
    type Err = String;

    /// `HTTP,MQTT,WS`: three ports, the HTTP one on 127.0.0.1.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ports: Vec<u16> = s
            .split(',')
            .map(|p| p.trim().parse::<u16>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{s:?}: {e}"))?;
        match ports[..] {
            [http, mqtt, ws] if !ports.contains(&0) => Ok(Self {
                http: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), http),
                mqtt,
                ws,
            }),
            _ => Err(format!("{s:?}: expected three ports HTTP,MQTT,WS, none 0")),
        }
    }
}

/// Where `demo` listens: each port given by flag or variable stays (taken,
/// it is an error naming the flag); each default moves when taken.
fn listen(args: &DemoArgs, config: &Config) -> Listen {
    Listen {
        http_bind: args
            .http_bind
            .clone()
            .unwrap_or_else(|| args.defaults.http.to_string()),
        http_movable: args.http_bind.is_none(),
        mqtt: config.broker_port.unwrap_or(args.defaults.mqtt),
        ws: config.broker_ws_port.unwrap_or(args.defaults.ws),
        broker_movable: MovablePorts {
            mqtt: config.broker_port.is_none(),
            ws: config.broker_ws_port.is_none(),
        },
    }
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

/// The sample's media, built into the binary beside [`SAMPLE_FILES`]: each
/// file's path in the scenario folder and its bytes. Small, self-made
/// pictures, clips and attachments (`examples/make_four_teams_media.py`
/// makes them), one for every media reference of the sample's injects.
pub const SAMPLE_MEDIA: [(&str, &[u8]); 12] = [
    (
        "media/bay-plan-34.pdf",
        include_bytes!("../../examples/four-teams/media/bay-plan-34.pdf"),
    ),
    (
        "media/berth7-site-map.png",
        include_bytes!("../../examples/four-teams/media/berth7-site-map.png"),
    ),
    (
        "media/bodycam-bay34.webm",
        include_bytes!("../../examples/four-teams/media/bodycam-bay34.webm"),
    ),
    (
        "media/drone-plume-eastharbour-still.jpg",
        include_bytes!("../../examples/four-teams/media/drone-plume-eastharbour-still.jpg"),
    ),
    (
        "media/drone-plume-eastharbour.webm",
        include_bytes!("../../examples/four-teams/media/drone-plume-eastharbour.webm"),
    ),
    (
        "media/inbound-traffic-1000.pdf",
        include_bytes!("../../examples/four-teams/media/inbound-traffic-1000.pdf"),
    ),
    (
        "media/nordic-aurora-dg-manifest.pdf",
        include_bytes!("../../examples/four-teams/media/nordic-aurora-dg-manifest.pdf"),
    ),
    (
        "media/psc-inspection-screenshot.png",
        include_bytes!("../../examples/four-teams/media/psc-inspection-screenshot.png"),
    ),
    (
        "media/psc-report-march.pdf",
        include_bytes!("../../examples/four-teams/media/psc-report-march.pdf"),
    ),
    (
        "media/smoke-over-terminal.jpg",
        include_bytes!("../../examples/four-teams/media/smoke-over-terminal.jpg"),
    ),
    (
        "media/st-brendan-location.png",
        include_bytes!("../../examples/four-teams/media/st-brendan-location.png"),
    ),
    (
        "media/vts-traffic-picture.png",
        include_bytes!("../../examples/four-teams/media/vts-traffic-picture.png"),
    ),
];

/// `demo`: the sample exercise with nothing but the binary: the embedded
/// broker (unless MQTT_BROKER_HOST is set), a fresh SQLite store, the HTTP
/// server and its pages. A default port that is taken moves to a free one.
/// Prints where to look, starts the exercise at `speed` (or, with
/// `wait_for_start`, waits for a start), logs its progress and serves until
/// SIGTERM or Ctrl-C.
pub async fn demo(args: DemoArgs, config: &Config) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    raise_open_file_limit();
    let package = sample_package()?;
    // Ports first: a taken one fails (or moves) before anything is written.
    let ports = open_ports(&listen(&args, config), None, config, true).await?;
    for line in &ports.moved {
        println!("{line}");
    }
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
    let client_id = super::serve::ClientId {
        given: None,
        default: format!("scip-orchestrator-demo-{}", ports.local.port()),
    };
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
    let progress = tokio::spawn(log_progress(service.clone(), exercise.id.clone()));
    let waiting = if args.wait_for_start {
        println!("{}", start_hint(&base, &exercise.id, &token));
        Some(tokio::spawn(wait_for_start(
            service.clone(),
            exercise.id.clone(),
        )))
    } else {
        start(service, &exercise.id, "demo").await?;
        None
    };
    let total = exercise.snapshot().map_or(0, |s| s.total.get());
    println!(
        "exercise {} {} at speed {}: {} exercise minutes in {:.0} s; Ctrl-C stops",
        exercise.id,
        if args.wait_for_start {
            "runs, once started,"
        } else {
            "running"
        },
        args.speed,
        total / 60,
        f64::from(total) / args.speed.get()
    );
    let result = hosted
        .serve_until_signal(
            shutdown,
            "demo stopped; its data is discarded at the next run",
        )
        .await;
    progress.abort();
    if let Some(waiting) = waiting {
        waiting.abort();
    }
    result
}

async fn start(service: &Service, id: &str, source: &str) -> anyhow::Result<()> {
    service
        .control(id, Command::Start, Some("demo".into()), source.into())
        .await
        .context("cannot start the sample exercise")?;
    Ok(())
}

/// How to start an exercise the demo holds at T+0.
fn start_hint(base: &str, id: &str, token: &str) -> String {
    let mut out = format!(
        "exercise {id} waits for a start (dashboards can join now); start it
"
    );
    if std::io::stdin().is_terminal() {
        out.push_str(
            "  - here: press Enter
",
        );
    }
    out.push_str(&format!(
        "  - in the control room: {base}/#token={token}
"
    ));
    out.push_str(&format!(
        "  - with the API: curl -X POST -H 'Authorization: Bearer {token}' {base}/api/v1/exercises/{id}/start
"
    ));
    out.push_str(&format!(
        "  - over MQTT: mosquitto_pub -t /exercise/{id}/control -m '{{\"command\":\"start\"}}'
"
    ));
    out
}

/// Starts the exercise when Enter is pressed on the terminal, unless a
/// controller started it first; returns once it has left `initialized`.
async fn wait_for_start(service: Service, id: String) {
    let Ok(watch) = service.watch(&id).await else {
        return;
    };
    let mut snapshot = watch.snapshot;
    let enter = async {
        if !std::io::stdin().is_terminal() {
            return std::future::pending().await;
        }
        let line = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|n| n > 0)
        })
        .await;
        if !matches!(line, Ok(Ok(true))) {
            // Stdin closed: only a controller can start it now.
            std::future::pending::<()>().await;
        }
    };
    let started = async {
        let _ = snapshot
            .wait_for(|s| s.state != State::Initialized)
            .await
            .map(|_| ());
    };
    let pressed = tokio::select! {
        () = enter => true,
        () = started => false,
    };
    if pressed && let Err(e) = start(&service, &id, "terminal").await {
        tracing::warn!("{e:#}");
    }
    info!(exercise_id = %id, "the exercise has started");
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

/// Writes the sample's files and media to `folder` (replacing earlier
/// copies).
fn write_sample(folder: &Path) -> anyhow::Result<()> {
    let texts = SAMPLE_FILES
        .iter()
        .map(|(path, text)| (*path, text.as_bytes()));
    for (path, bytes) in texts.chain(SAMPLE_MEDIA) {
        let file = folder.join(path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&file, bytes).with_context(|| format!("cannot write {}", file.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_read_as_http_mqtt_ws() {
        let check = |text: &str, expected: Option<[u16; 3]>| {
            let read = text.parse::<DemoDefaults>().ok();
            let expected = expected.map(|[http, mqtt, ws]| DemoDefaults {
                http: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), http),
                mqtt,
                ws,
            });
            assert_eq!(read, expected, "{text:?}");
        };
        check("8080,1883,8083", Some([8080, 1883, 8083]));
        check(" 1, 2 ,3", Some([1, 2, 3]));
        check("8080,1883", None);
        check("8080,1883,8083,1", None);
        check("0,1883,8083", None);
        check("8080,x,8083", None);
        assert_eq!(
            "8080,1883,8083".parse::<DemoDefaults>(),
            Ok(DemoDefaults::default())
        );
    }
}
