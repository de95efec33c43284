//! Service load: N exercises running at once in one `serve` process, each of
//! 10 teams, at speed 1. For N = 100 and N = 1,000 (`SERVICE_LOAD_N`, e.g.
//! `1000` or `100,1000`, the default), each in a fresh child process so its
//! memory figures are its own:
//!
//! - set up as `serve` does: a private Mosquitto, a SQLite store in a temp
//!   dir (`SERVICE_LOAD_DIR` picks the parent folder), one `Mqtt`,
//!   `Service::start`, tokio's default multi-thread runtime (one worker per
//!   core), the Prometheus recorder with its upkeep thread, JSON logs at
//!   info level (to a file: the child's stderr; `SERVICE_LOAD_LOG=off` drops
//!   them);
//! - create N exercises from one inline package (10 teams sharing one
//!   timeline, 30 minutes, one inject every 60 s from T+0, i.e. 30 per team
//!   and 300 deliveries per exercise, content about 300 bytes), 8 at a time;
//! - start them paced evenly over `SERVICE_LOAD_START_SPREAD_S` (5 s), so
//!   their ticks fall at every phase of the second, as exercises started
//!   by different people would (0 starts them all at once);
//! - let them settle for 5 s, then measure `SERVICE_LOAD_WINDOW_S` (60 s):
//!   - process CPU (utime + stime of /proc/self/stat) as a share of one core
//!     and of the machine, by thread (/proc/self/task/*/schedstat), tokio's
//!     worker busy time, Mosquitto's CPU and everyone else's (/proc/stat);
//!   - resident memory: VmRSS sampled every second, VmHWM at the end;
//!   - tick error: every `scip_timer_tick_lateness_seconds` value recorded
//!     in the window (a debugging recorder beside the Prometheus one; the
//!     engine's own stamp: tick publish handed to the MQTT layer minus its
//!     due instant);
//!   - the same ticks as a subscriber on `/exercise/+/timer` sees them
//!     (its own thread and runtime): arrival minus (start + n s), where the
//!     start is the due wall time of the exercise's T+0 deliveries, mapped
//!     to the monotonic clock (exact to a few microseconds; the arrival
//!     includes the hop through Mosquitto);
//!   - a probe task sleeping on the same precise timer (`timer::global()`)
//!     at random instants: how late a bare wake-up is on this runtime;
//!   - inject deliveries in the window and their latency (acknowledged minus
//!     due, `scip_delivery_latency_seconds`).
//!
//! Ends with one line per N: `RESULT service_load N=<n>: tick p99 ..., max
//! ..., RSS <peak VmHWM> MB, CPU <process, less the bench's subscriber
//! thread>% of one core (target tick p99 <= 10 ms, RSS <= 500 MB): PASS|MISS`.
//!
//! `CARGO_TARGET_DIR=/tmp/load-target cargo bench --bench service_load`

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::layers::FanoutBuilder;
use rumqttc::{AsyncClient, Event, Incoming, QoS};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use common::{Spread, pass};
use scip_orchestrator::app::logging::{self, LogFormat};
use scip_orchestrator::config::Config;
use scip_orchestrator::core::{Command, State};
use scip_orchestrator::domain::Speed;
use scip_orchestrator::mqtt::{Mqtt, MqttSettings};
use scip_orchestrator::runtime::service::{CreateExercise, ScenarioSource, Service};
use scip_orchestrator::runtime::timer;
use scip_orchestrator::store::{self, Store};
use scip_orchestrator::testing::Mosquitto;

const TEAMS: [&str; 10] = [
    "blue", "red", "orange", "green", "yellow", "purple", "white", "black", "grey", "cyan",
];
const DURATION_MIN: u32 = 30;
const INJECT_EVERY_S: u32 = 60;
const CREATE_CONCURRENCY: usize = 8;
const SETTLE: Duration = Duration::from_secs(5);
const TARGET_TICK_P99_MS: f64 = 10.0;
const TARGET_RSS_MB: f64 = 500.0;
/// The name of the bench's own subscriber thread, left out of the service's CPU.
const WATCH_THREAD: &str = "timer-watch";

/// The configuration flags, parsed as `serve` parses them.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    config: Config,
}

fn main() {
    let sizes = env_list("SERVICE_LOAD_N", &[100, 1000]);
    if std::env::var_os("SERVICE_LOAD_CHILD").is_some() {
        let [n] = sizes[..] else {
            panic!("a child measures one N, got {sizes:?}");
        };
        if std::env::var("SERVICE_LOAD_LOG").as_deref() != Ok("off") {
            // As `serve`: JSON lines on stderr (a file here), level info.
            logging::init(LogFormat::Json);
        }
        let snapshotter = install_recorder();
        // As `serve`: tokio's default runtime, one worker per core.
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        runtime.block_on(measure(n, &snapshotter));
        return;
    }
    let mut results = Vec::new();
    for n in sizes {
        results.extend(run_child(n));
    }
    println!("\n== summary ==");
    let mut failed = false;
    for line in results {
        println!("{line}");
        failed |= line.contains("the run failed");
    }
    // A run that no longer works fails CI's smoke run (.ci/benches).
    if failed {
        std::process::exit(1);
    }
}

/// Runs one N in a child process, echoing its output; returns its RESULT lines.
fn run_child(n: usize) -> Vec<String> {
    let log = std::env::temp_dir().join(format!("service_load-{n}.log"));
    let mut child = Process::new(std::env::current_exe().expect("own path"))
        .args(std::env::args().skip(1))
        .env("SERVICE_LOAD_CHILD", "1")
        .env("SERVICE_LOAD_N", n.to_string())
        .env("SERVICE_LOAD_LOG_PATH", &log)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start the child");
    let mut results = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.expect("child output");
        println!("{line}");
        if line.starts_with("RESULT") {
            results.push(line);
        }
    }
    let status = child.wait().expect("child exit");
    if let Ok(text) = std::fs::read_to_string(&log) {
        println!(
            "(the child's log: {}, {:.1} MB, {} lines)",
            log.display(),
            text.len() as f64 / 1e6,
            text.lines().count()
        );
    }
    if !status.success() || results.is_empty() {
        results.push(format!(
            "RESULT service_load N={n}: the run failed ({status}); see {}",
            log.display()
        ));
    }
    results
}

/// The Prometheus recorder as `serve` installs it, and beside it a debugging
/// recorder whose histograms the bench drains.
fn install_recorder() -> Snapshotter {
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("scip_delivery_latency_seconds".into()),
            &scip_orchestrator::http::LATENCY_BUCKETS,
        )
        .expect("buckets")
        .build_recorder();
    let handle = prometheus.handle();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                handle.run_upkeep();
            }
        })
        .expect("upkeep thread");
    let debugging = DebuggingRecorder::new();
    let snapshotter = debugging.snapshotter();
    let fanout = FanoutBuilder::default()
        .add_recorder(prometheus)
        .add_recorder(debugging)
        .build();
    metrics::set_global_recorder(fanout).expect("the first recorder");
    snapshotter
}

async fn measure(n: usize, snapshotter: &Snapshotter) {
    let window = Duration::from_secs(env_u64("SERVICE_LOAD_WINDOW_S", 60));
    let spread = Duration::from_secs_f64(env_f64("SERVICE_LOAD_START_SPREAD_S", 5.0));
    common::banner(&format!("service_load N={n}"));

    // ------------------------------------------------------------ set-up
    let broker = Mosquitto::start();
    let dir = match std::env::var_os("SERVICE_LOAD_DIR") {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let data = dir.path().join("data");
    let port = broker.port.to_string();
    let media = dir.path().join("media");
    let list_packages = env_u64("SERVICE_LOAD_LIST_PACKAGES", 50) as usize;
    write_packages(&media, list_packages);
    let config = Flags::try_parse_from([
        "scip-orchestrator",
        "--mqtt-broker-host",
        "127.0.0.1",
        "--mqtt-broker-port",
        &port,
        "--media-storage-path",
        media.to_str().expect("a UTF-8 temp dir"),
        // Every start comes from the bench, one client: the per-client
        // command limit is for people, not for this.
        "--max-commands-per-minute",
        "1000000",
    ])
    .expect("valid flags")
    .config;
    let store = Store::connect(&store::default_sqlite_url(&data))
        .await
        .expect("SQLite store");
    let mut settings = MqttSettings::new(
        "127.0.0.1",
        broker.port,
        format!("service-load-{}", std::process::id()),
    );
    settings.delivery_timeout = config.delivery_policy().timeout;
    let mqtt = Mqtt::connect(settings).await.expect("broker reachable");
    let service = Service::start(store, mqtt, config, "http://127.0.0.1:8080".into())
        .await
        .expect("service starts");
    let watch = TimerWatch::start(broker.port);
    let package = package();
    let package_bytes = package.to_string().len();
    println!(
        "set-up: Mosquitto 127.0.0.1:{} (pid {}), SQLite in {} ({}), tokio default runtime with {} workers, \
         Prometheus + debugging recorders, logs: {}",
        broker.port,
        mosquitto_pid().map_or_else(|| "?".into(), |p| p.to_string()),
        data.display(),
        fs_type(dir.path()),
        tokio::runtime::Handle::current().metrics().num_workers(),
        match std::env::var("SERVICE_LOAD_LOG").as_deref() {
            Ok("off") => "off".to_owned(),
            _ => format!(
                "JSON at info to {}",
                std::env::var("SERVICE_LOAD_LOG_PATH").unwrap_or_else(|_| "stderr".into())
            ),
        }
    );
    println!(
        "package: {} teams sharing one timeline, {DURATION_MIN} min, an inject every {INJECT_EVERY_S} s from T+0 \
         ({} per team, {} deliveries per exercise), {package_bytes} bytes of JSON",
        TEAMS.len(),
        DURATION_MIN * 60 / INJECT_EVERY_S,
        TEAMS.len() as u32 * DURATION_MIN * 60 / INJECT_EVERY_S,
    );
    let baseline = Memory::now();

    // ------------------------------------------------------------ create
    let ids: Vec<String> = (0..n).map(|i| format!("load-{i:04}")).collect();
    let began = Instant::now();
    let gate = Arc::new(Semaphore::new(CREATE_CONCURRENCY));
    let mut creating = JoinSet::new();
    for id in &ids {
        let (service, gate, package, id) =
            (service.clone(), gate.clone(), package.clone(), id.clone());
        creating.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            let t = Instant::now();
            service
                .create(CreateExercise {
                    source: ScenarioSource::Inline(package),
                    exercise_id: Some(id),
                    speed: Some(Speed::ONE),
                })
                .await
                .expect("exercise created");
            ms(t.elapsed())
        });
    }
    let create_ms = creating.join_all().await;
    let created_in = began.elapsed();
    let after_create = Memory::now();
    let c = Spread::of(create_ms);
    println!(
        "created {n} in {:.1} s ({CREATE_CONCURRENCY} at a time; each call p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms); \
         RSS {:.1} MB",
        created_in.as_secs_f64(),
        c.p50,
        c.p99,
        c.max,
        after_create.rss_mb
    );

    // ------------------------------------------------------------ start
    let began = Instant::now();
    let mut starting = JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let at = began + spread.mul_f64(i as f64 / n as f64);
        let (service, id) = (service.clone(), id.clone());
        starting.spawn(async move {
            tokio::time::sleep_until(at).await;
            let t = Instant::now();
            service
                .control(
                    &id,
                    Command::Start,
                    Some("load test".into()),
                    "bench".into(),
                )
                .await
                .expect("started");
            ms(t.elapsed())
        });
    }
    let start_ms = starting.join_all().await;
    let started_in = began.elapsed();
    let s = Spread::of(start_ms);
    let after_start = Memory::now();
    println!(
        "started {n} in {:.1} s (paced over {:.1} s; reply p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms); RSS {:.1} MB",
        started_in.as_secs_f64(),
        spread.as_secs_f64(),
        s.p50,
        s.p99,
        s.max,
        after_start.rss_mb
    );
    tokio::time::sleep(SETTLE).await;

    // Each exercise's start, from the due wall time of its T+0 deliveries.
    let (anchor_mono, anchor_wall) = (Instant::now(), OffsetDateTime::now_utc());
    let mut starts = Vec::with_capacity(n);
    for id in &ids {
        let views = service.deliveries(id).await.expect("deliveries");
        let wall = views
            .iter()
            .filter(|v| v.record.due.get() == 0)
            .find_map(|v| v.record.due_wall)
            .expect("a T+0 delivery with its due time");
        let behind = anchor_wall - wall;
        starts.push(anchor_mono - Duration::try_from(behind).expect("a start in the past"));
    }
    print_phases(&starts);

    // ------------------------------------------------------------ window
    let _ = take_metrics(snapshotter);
    let probe_stop = Arc::new(AtomicBool::new(false));
    let probe = tokio::spawn(probe_timer(probe_stop.clone()));
    let runtime = tokio::runtime::Handle::current().metrics();
    let busy0: Vec<Duration> = (0..runtime.num_workers())
        .map(|w| runtime.worker_total_busy_duration(w))
        .collect();
    let broker_pid = mosquitto_pid();
    let (cpu0, threads0, machine0) = (process_cpu(), thread_cpu(), machine_cpu());
    let broker0 = broker_pid.map(pid_cpu);
    let t0 = Instant::now();
    watch.recording.store(true, Ordering::Relaxed);
    let mut rss_max = 0.0f64;
    let mut queue_max = 0;
    for second in 1..=window.as_secs() {
        tokio::time::sleep_until(t0 + Duration::from_secs(second)).await;
        rss_max = rss_max.max(Memory::now().rss_mb);
        queue_max = queue_max.max(runtime.global_queue_depth());
    }
    watch.recording.store(false, Ordering::Relaxed);
    let wall = t0.elapsed().as_secs_f64();
    let (cpu1, threads1, machine1) = (process_cpu(), thread_cpu(), machine_cpu());
    let broker1 = broker_pid.map(pid_cpu);
    let busy1: Vec<Duration> = (0..runtime.num_workers())
        .map(|w| runtime.worker_total_busy_duration(w))
        .collect();
    let metrics = take_metrics(snapshotter);
    probe_stop.store(true, Ordering::Relaxed);
    let probe = probe.await.expect("probe");
    let end = Memory::now();
    let listed = service.list();

    // ------------------------------------------------------------ report
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    let by_thread = thread_shares(&threads0, &threads1, wall);
    let watch_share = by_thread
        .iter()
        .filter(|(name, _)| name.as_str() == WATCH_THREAD)
        .map(|(_, s)| s)
        .sum::<f64>();
    let process = (cpu1 - cpu0) / wall * 100.0;
    let service_cpu = process - watch_share;
    println!(
        "\nwindow: {:.1} s from {:.1} s after the last start",
        wall,
        SETTLE.as_secs_f64()
    );
    println!(
        "CPU, process: {process:.1}% of one core, {:.1}% of the machine ({cores} cores); less the bench's \
         subscriber thread: {service_cpu:.1}% of one core",
        process / cores
    );
    let threads: Vec<String> = by_thread
        .iter()
        .map(|(name, share)| format!("{name} {share:.1}%"))
        .collect();
    println!("  by thread (% of one core): {}", threads.join(", "));
    let busy: Vec<String> = busy0
        .iter()
        .zip(&busy1)
        .map(|(a, b)| format!("{:.1}%", (*b - *a).as_secs_f64() / wall * 100.0))
        .collect();
    println!(
        "  tokio workers busy: {}; alive tasks {}; global queue depth max {queue_max} (sampled each second)",
        busy.join(", "),
        runtime.num_alive_tasks()
    );
    let broker_share = match (broker0, broker1) {
        (Some(a), Some(b)) => (b - a) / wall * 100.0,
        _ => f64::NAN,
    };
    let machine_busy = (machine1.0 - machine0.0) / (machine1.1 - machine0.1) * cores * 100.0;
    println!(
        "  Mosquitto {broker_share:.1}% of one core; whole machine busy {machine_busy:.1}% of one core \
         (steal {:.1}%), so other processes about {:.0}%",
        (machine1.2 - machine0.2) / (machine1.1 - machine0.1) * cores * 100.0,
        (machine_busy - process - broker_share).max(0.0)
    );
    let per_exercise_kb = (after_start.rss_mb - baseline.rss_mb) * 1024.0 / n as f64;
    println!(
        "memory: VmRSS {:.1} MB at the end (max {rss_max:.1} MB in the window; {:.1} MB before creating, \
         {:.1} MB created, {:.1} MB started: {per_exercise_kb:.0} kB per exercise), VmHWM {:.1} MB, \
         RssAnon {:.1} MB; database {:.1} MB",
        end.rss_mb,
        baseline.rss_mb,
        after_create.rss_mb,
        after_start.rss_mb,
        end.hwm_mb,
        end.anon_mb,
        dir_mb(&data)
    );

    let expected_ticks = n as f64 * wall;
    let ticks = Spread::of(metrics.ticks.iter().copied());
    let over = metrics
        .ticks
        .iter()
        .filter(|&&t| t > TARGET_TICK_P99_MS)
        .count();
    println!(
        "\n{:<62} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "tick error (ms)", "n", "p50", "p90", "p99", "max"
    );
    print_row(
        "engine: tick publish - due (scip_timer_tick_lateness_seconds)",
        &metrics.ticks,
    );
    let arrivals = watch.finish();
    let timed: Vec<(u32, f64)> = arrivals
        .iter()
        .filter_map(|&(at, idx, current)| {
            let due = *starts.get(idx)? + Duration::from_secs(u64::from(current));
            Some((current, common::error_ms(at, due)))
        })
        .collect();
    let external: Vec<f64> = timed.iter().map(|t| t.1).collect();
    print_row(
        "subscriber: arrival - (start + n s), via Mosquitto",
        &external,
    );
    print_row("probe: bare timer::global() wake-up, same runtime", &probe);
    println!(
        "ticks recorded {} (expected about {expected_ticks:.0}), {over} over {TARGET_TICK_P99_MS} ms; \
         timer messages at the subscriber {}",
        ticks.n,
        external.len()
    );

    print_worst_seconds(&timed);

    let expected_injects = n as f64 * TEAMS.len() as f64 * wall / f64::from(INJECT_EVERY_S);
    println!(
        "\ninjects in the window: {} delivered (expected about {expected_injects:.0}), {} failed, \
         {} failed attempts",
        metrics.delivered, metrics.failed, metrics.attempts_failed
    );
    print_row(
        "inject latency: acknowledged - due (scip_delivery_latency_seconds)",
        &metrics.latency,
    );
    let running = listed
        .iter()
        .filter(|e| e.snapshot().is_some_and(|s| s.state == State::Running))
        .count();
    let (delivered, failed, scheduled) =
        listed
            .iter()
            .filter_map(|e| e.snapshot())
            .fold((0, 0, 0), |acc, s| {
                let c = &s.counts;
                (acc.0 + c.delivered, acc.1 + c.failed, acc.2 + c.scheduled)
            });
    println!(
        "exercises running at the end: {running}/{n}; their records: {delivered} delivered, {failed} failed, \
         {scheduled} scheduled"
    );

    if list_packages > 0 {
        listing_windows(
            &service,
            snapshotter,
            &media,
            list_packages,
            window,
            &metrics.ticks,
        )
        .await;
    }

    let t = Instant::now();
    service.shutdown().await;
    println!("shutdown took {:.1} s", t.elapsed().as_secs_f64());
    drop(broker);

    let rss = end.hwm_mb;
    let ok = ticks.p99 <= TARGET_TICK_P99_MS && rss <= TARGET_RSS_MB && running == n;
    println!(
        "RESULT service_load N={n}: tick p99 {:.3} ms, max {:.3} ms, RSS {rss:.0} MB, CPU {service_cpu:.0}% of one core \
         (target tick p99 <= {TARGET_TICK_P99_MS} ms, RSS <= {TARGET_RSS_MB} MB): {}",
        ticks.p99,
        ticks.max,
        pass(ok)
    );
}

/// `count` large scenario folders in `media` for the listing windows: 10
/// teams, each its own timeline of 1,000 injects (about 4 MB a folder).
fn write_packages(media: &Path, count: usize) {
    let body = "Port authorities report an unidentified vessel drifting towards the shipping \
                lane north of the harbour entrance. Coast guard units are on their way.";
    for p in 0..count {
        let folder = media.join(format!("large-{p:02}"));
        std::fs::create_dir_all(folder.join("timelines")).expect("package folder");
        for team in TEAMS {
            let injects: Vec<Value> = (0..1000)
                .map(|i| {
                    json!({"id": format!("{team}-{i:04}"), "time": i, "type": "news",
                           "content": {"headline": format!("Update #{i}"), "body": body}})
                })
                .collect();
            std::fs::write(
                folder.join(format!("timelines/{team}.json")),
                json!({"injects": injects}).to_string(),
            )
            .expect("timeline");
        }
        let teams: Vec<Value> = TEAMS
            .iter()
            .map(|t| json!({"id": t, "timeline_file": format!("timelines/{t}.json")}))
            .collect();
        std::fs::write(
            folder.join("scenario.json"),
            json!({"name": format!("Large {p}"), "duration_minutes": 30, "teams": teams})
                .to_string(),
        )
        .expect("scenario");
    }
}

/// Two more windows of the same length, tick lateness side by side with
/// the quiet one: first the control room's listing of `count` large
/// folders over and over, every folder changed before each listing (so
/// each is read and validated again: the worst case, off the workers, one
/// job at a time), then the same reading and validation done on the
/// runtime's workers, as listing did before it moved off them.
async fn listing_windows(
    service: &Service,
    snapshotter: &Snapshotter,
    media: &Path,
    count: usize,
    window: Duration,
    quiet: &[f64],
) {
    let touch = |round: usize| {
        for p in 0..count {
            let file = media.join(format!("large-{p:02}/scenario.json"));
            let mut text = std::fs::read_to_string(&file).expect("scenario");
            text.truncate(text.trim_end().len());
            text.push_str(&" ".repeat(round % 2 + 1));
            std::fs::write(&file, text).expect("scenario");
        }
    };
    let mut rows = vec![(
        "quiet (the window above)".to_owned(),
        quiet.to_vec(),
        0,
        0.0,
    )];
    for on_workers in [false, true] {
        let _ = take_metrics(snapshotter);
        let stop = Instant::now() + window;
        let mut listings = 0;
        let mut spent = Duration::ZERO;
        while Instant::now() < stop {
            touch(listings);
            let t = Instant::now();
            if on_workers {
                // As before: every folder read and validated in a task on
                // the workers, as the request handler did.
                let media = media.to_owned();
                let valid = tokio::spawn(async move {
                    let limits = scip_orchestrator::config::Limits::default();
                    (0..count)
                        .filter(|p| {
                            scip_orchestrator::scenario::load_package(
                                &media.join(format!("large-{p:02}/scenario.json")),
                                &limits,
                                None,
                            )
                            .is_ok()
                        })
                        .count()
                })
                .await
                .expect("the validating task");
                assert_eq!(valid, count, "the large folders are valid");
            } else {
                let listed = service.scenarios().await;
                assert!(
                    listed.iter().filter(|s| s.error.is_none()).count() >= count,
                    "the large folders are valid"
                );
            }
            spent += t.elapsed();
            listings += 1;
        }
        let ticks = take_metrics(snapshotter).ticks;
        let label = if on_workers {
            format!("{count} large folders validated on the workers, over and over")
        } else {
            format!("{count} large folders listed (GET /api/v1/scenarios), over and over")
        };
        let each = spent.as_secs_f64() * 1000.0 / listings.max(1) as f64;
        rows.push((label, ticks, listings, each));
    }
    let base = Spread::of(quiet.iter().copied());
    println!(
        "\n{:<78} {:>7} {:>8} {:>8} {:>8} {:>10}",
        "tick error (ms), engine's stamp", "n", "p50", "p99", "max", "p99 ratio"
    );
    for (label, ticks, listings, each) in &rows {
        let t = Spread::of(ticks.iter().copied());
        let label = if *listings > 0 {
            format!("{label} ({listings} listings, {each:.0} ms each)")
        } else {
            label.clone()
        };
        println!(
            "{label:<78} {:>7} {:>8.3} {:>8.3} {:>8.3} {:>9.2}x",
            t.n,
            t.p50,
            t.p99,
            t.max,
            t.p99 / base.p99
        );
    }
}

/// The package every exercise is created from.
fn package() -> Value {
    const KINDS: [&str; 6] = ["news", "social", "email", "sms", "intel", "briefing"];
    let body = "Port authorities report an unidentified vessel drifting towards the shipping \
                lane north of the harbour entrance. Coast guard units are on their way; \
                ferry operators ask whether to hold departures. Local media are calling.";
    let injects: Vec<Value> = (0..DURATION_MIN * 60 / INJECT_EVERY_S)
        .map(|i| {
            json!({
                "id": format!("inject-{i:03}"),
                "time": i * INJECT_EVERY_S,
                "type": KINDS[i as usize % KINDS.len()],
                "priority": if i % 5 == 0 { "high" } else { "normal" },
                "content": {
                    "headline": format!("Update #{i}: vessel adrift near the harbour"),
                    "body": body,
                    "source": "Harbour Watch",
                },
            })
        })
        .collect();
    json!({
        "name": "Load test: maritime crisis",
        "duration_minutes": DURATION_MIN,
        "teams": TEAMS.iter().map(|t| json!({
            "id": t,
            "name": format!("Team {t}"),
            "timeline_id": "shared",
        })).collect::<Vec<_>>(),
        "timelines": [{"id": "shared", "name": "Shared timeline", "injects": injects}],
    })
}

/// How evenly the exercises' ticks fall over the second.
fn print_phases(starts: &[Instant]) {
    let first = *starts.iter().min().expect("exercises");
    let mut bins = [0usize; 100];
    for s in starts {
        let phase = (*s - first).as_secs_f64().fract();
        bins[((phase * 100.0) as usize).min(99)] += 1;
    }
    let max = bins.iter().max().copied().unwrap_or(0);
    let last = *starts.iter().max().expect("exercises");
    println!(
        "tick phases: starts span {:.2} s; most ticks due in one 10 ms slot of the second: {max} (even: {:.1})",
        (last - first).as_secs_f64(),
        starts.len() as f64 / 100.0
    );
}

/// The exercise seconds whose timer messages reached the subscriber latest.
fn print_worst_seconds(timed: &[(u32, f64)]) {
    let mut by_second: BTreeMap<u32, (f64, usize, usize)> = BTreeMap::new();
    for &(second, error) in timed {
        let e = by_second.entry(second).or_insert((f64::MIN, 0, 0));
        e.0 = e.0.max(error);
        e.1 += 1;
        e.2 += usize::from(error > TARGET_TICK_P99_MS);
    }
    let mut worst: Vec<(u32, (f64, usize, usize))> = by_second.into_iter().collect();
    worst.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    let shown: Vec<String> = worst
        .iter()
        .take(3)
        .map(|(second, (max, n, over))| {
            format!("T+{second}: max {max:.1} ms, {over}/{n} over {TARGET_TICK_P99_MS} ms")
        })
        .collect();
    println!("worst seconds at the subscriber: {}", shown.join("; "));
}

fn print_row(label: &str, values: &[f64]) {
    let s = Spread::of(values.iter().copied());
    let p90 = common::percentile(&common::sorted(values.iter().copied()), 90.0);
    println!(
        "{label:<62} {:>7} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
        s.n, s.p50, p90, s.p99, s.max
    );
}

// ---------------------------------------------------------------- metrics

/// What the debugging recorder collected since it was last drained.
#[derive(Default)]
struct Window {
    /// Tick lateness, ms.
    ticks: Vec<f64>,
    /// Delivery latency, ms.
    latency: Vec<f64>,
    delivered: u64,
    failed: u64,
    attempts_failed: u64,
}

fn take_metrics(snapshotter: &Snapshotter) -> Window {
    let mut w = Window::default();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let status = key
            .key()
            .labels()
            .find(|l| l.key() == "status")
            .map(|l| l.value().to_owned());
        match (key.key().name(), value) {
            ("scip_timer_tick_lateness_seconds", DebugValue::Histogram(v)) => {
                w.ticks.extend(v.iter().map(|x| x.into_inner() * 1000.0))
            }
            ("scip_delivery_latency_seconds", DebugValue::Histogram(v)) => {
                w.latency.extend(v.iter().map(|x| x.into_inner() * 1000.0))
            }
            ("scip_deliveries_total", DebugValue::Counter(c)) => match status.as_deref() {
                Some("delivered") => w.delivered += c,
                Some("failed") => w.failed += c,
                _ => {}
            },
            ("scip_delivery_attempts_failed_total", DebugValue::Counter(c)) => {
                w.attempts_failed += c
            }
            _ => {}
        }
    }
    w
}

/// Lateness (ms) of sleeps on the exercises' precise timer, at random
/// instants 20 to 100 ms ahead, until `stop`.
async fn probe_timer(stop: Arc<AtomicBool>) -> Vec<f64> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut late = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = Instant::now() + Duration::from_micros(20_000 + x % 80_000);
        timer::global().sleep_until(at).await;
        late.push(common::error_ms(Instant::now(), at));
    }
    late
}

// ---------------------------------------------------------------- subscriber

/// A subscriber to every exercise's timer on a thread and runtime of its
/// own: (arrival, exercise index, `current`) of each "running" timer
/// message that arrives while `recording`.
struct TimerWatch {
    recording: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: std::thread::JoinHandle<Vec<(Instant, usize, u32)>>,
}

impl TimerWatch {
    fn start(port: u16) -> Self {
        let recording = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let flag = recording.clone();
        let thread = std::thread::Builder::new()
            .name(WATCH_THREAD.into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("subscriber runtime");
                runtime.block_on(watch_timers(port, flag, stopped, ready_tx))
            })
            .expect("subscriber thread");
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the timer subscriber is subscribed");
        Self {
            recording,
            stop: Some(stop),
            thread,
        }
    }

    fn finish(mut self) -> Vec<(Instant, usize, u32)> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.join().expect("subscriber thread")
    }
}

async fn watch_timers(
    port: u16,
    recording: Arc<AtomicBool>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<()>,
) -> Vec<(Instant, usize, u32)> {
    #[derive(serde::Deserialize)]
    struct Timer {
        current: u32,
        status: String,
    }
    let (options, net) =
        common::client_options(&format!("timer-watch-{}", std::process::id()), port);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    eventloop.set_network_options(net);
    client
        .subscribe("/exercise/+/timer", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    loop {
        if let Event::Incoming(Incoming::SubAck(_)) =
            eventloop.poll().await.expect("subscriber connects")
        {
            break;
        }
    }
    let _ = ready.send(());
    let mut seen = Vec::with_capacity(1 << 16);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let at = Instant::now();
                    if !recording.load(Ordering::Relaxed) {
                        continue;
                    }
                    let index = p
                        .topic
                        .strip_prefix("/exercise/load-")
                        .and_then(|t| t.strip_suffix("/timer"))
                        .and_then(|i| i.parse().ok());
                    if let (Some(index), Ok(t)) = (index, serde_json::from_slice::<Timer>(&p.payload))
                        && t.status == "running"
                    {
                        seen.push((at, index, t.current));
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("the timer subscriber lost its connection: {e}"),
            },
        }
    }
    let _ = client.disconnect().await;
    seen
}

// ---------------------------------------------------------------- /proc

/// Resident memory, MB.
struct Memory {
    rss_mb: f64,
    hwm_mb: f64,
    anon_mb: f64,
}

impl Memory {
    fn now() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or(f64::NAN, |kb| kb / 1024.0)
        };
        Self {
            rss_mb: field("VmRSS:"),
            hwm_mb: field("VmHWM:"),
            anon_mb: field("RssAnon:"),
        }
    }
}

/// utime + stime of a process, seconds.
fn stat_cpu(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name, which is in parentheses: state is 3, utime 14.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / clock_ticks(),
        _ => f64::NAN,
    }
}

fn process_cpu() -> f64 {
    stat_cpu("/proc/self/stat")
}

fn pid_cpu(pid: u32) -> f64 {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

fn clock_ticks() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        Process::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Our Mosquitto: a child process of ours named `mosquitto`.
fn mosquitto_pid() -> Option<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        let ppid = rest.split_whitespace().nth(1)?;
        (head.ends_with("(mosquitto") && ppid == me).then_some(pid)
    })
}

/// CPU time of each live thread: tid -> (name, ns).
fn thread_cpu() -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        out.insert(tid, (name.trim().to_owned(), ns));
    }
    out
}

/// Share of one core by thread name (numbered threads summed), highest first.
fn thread_shares(
    before: &HashMap<u32, (String, u64)>,
    after: &HashMap<u32, (String, u64)>,
    wall: f64,
) -> Vec<(String, f64)> {
    let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
    for (tid, (name, ns)) in after {
        let was = before.get(tid).map_or(0, |b| b.1);
        let name = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        *by_name.entry(name.to_owned()).or_default() +=
            ns.saturating_sub(was) as f64 / 1e9 / wall * 100.0;
    }
    let mut shares: Vec<(String, f64)> = by_name.into_iter().filter(|(_, s)| *s >= 0.05).collect();
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    shares
}

/// Machine-wide (busy, total, steal) jiffies from /proc/stat.
fn machine_cpu() -> (f64, f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle, total, v.get(7).copied().unwrap_or(0.0))
}

fn fs_type(path: &Path) -> String {
    Process::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}

fn dir_mb(dir: &Path) -> f64 {
    std::fs::read_dir(dir).map_or(f64::NAN, |entries| {
        entries
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len() as f64)
            .sum::<f64>()
            / 1e6
    })
}

// ---------------------------------------------------------------- misc

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .split(',')
            .map(|x| x.trim().parse().expect("a list of numbers"))
            .collect(),
        Err(_) => default.to_vec(),
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
}
