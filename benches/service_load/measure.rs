//! One N measured in this process: set up as `serve` does, create and start
//! the exercises, measure the window, print what was seen.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use metrics_util::debugging::Snapshotter;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use scip_orchestrator::core::{Command, State};
use scip_orchestrator::domain::Speed;
use scip_orchestrator::mqtt::{Mqtt, MqttSettings};
use scip_orchestrator::runtime::service::{CreateExercise, ScenarioSource, Service};
use scip_orchestrator::store::{self, Store};
use scip_orchestrator::testing::Mosquitto;

use crate::common::{self, Spread, pass};
use crate::listing::{listing_windows, write_packages};
use crate::procfs::{
    Memory, dir_mb, fs_type, machine_cpu, mosquitto_pid, pid_cpu, process_cpu, thread_cpu,
    thread_shares,
};
use crate::recorders::{probe_timer, take_metrics};
use crate::report::{print_phases, print_row, print_worst_seconds};
use crate::watch::TimerWatch;
use crate::{
    CREATE_CONCURRENCY, DURATION_MIN, Flags, INJECT_EVERY_S, SETTLE, TARGET_RSS_MB,
    TARGET_TICK_P99_MS, TEAMS, WATCH_THREAD, env_f64, env_u64, ms,
};

pub async fn measure(n: usize, snapshotter: &Snapshotter) {
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
