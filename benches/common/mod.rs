//! Shared pieces of the benchmarks: scenario files, the engine set up as
//! `app::run` does, an in-process MQTT subscriber that timestamps arrivals,
//! a background CPU load, and the statistics the benches print.

// Each bench binary uses a different subset.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, NetworkOptions, QoS};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use scip_orchestrator::config::{DeliveryPolicy, Limits};
use scip_orchestrator::core::{Counts, State};
use scip_orchestrator::domain::{ExerciseId, ExerciseSeconds, Speed};
use scip_orchestrator::mqtt::{Mqtt, MqttSettings};
use scip_orchestrator::runtime::run::{self as runner, Outcome, Progress, RunOptions};
use scip_orchestrator::scenario::{self, Scenario};

// ---------------------------------------------------------------- scenarios

/// Scenario and timeline files in a temporary folder (deleted on drop).
pub struct ScenarioFiles {
    pub dir: tempfile::TempDir,
    pub scenario: PathBuf,
    /// One timeline file per team, in team order.
    pub timelines: Vec<PathBuf>,
    pub team_ids: Vec<String>,
}

/// `teams` teams, each with its own timeline of one inject per entry of
/// `times`, every inject carrying a body of about `body_bytes` bytes.
pub fn write_scenario(
    teams: usize,
    times: &[u32],
    duration_minutes: f64,
    body_bytes: usize,
) -> ScenarioFiles {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("timelines")).expect("timelines dir");
    let team_ids: Vec<String> = (0..teams).map(|t| format!("team-{t:02}")).collect();
    let mut timelines = Vec::new();
    for team in &team_ids {
        let injects: Vec<Value> = times
            .iter()
            .enumerate()
            .map(|(i, &time)| inject_json(team, i, time, body_bytes))
            .collect();
        let timeline = json!({"id": format!("tl-{team}"), "name": "bench", "injects": injects});
        let path = dir.path().join("timelines").join(format!("{team}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&timeline).unwrap()).unwrap();
        timelines.push(path);
    }
    let scenario = json!({
        "id": "bench",
        "name": "Benchmark scenario",
        "duration_minutes": duration_minutes,
        "teams": team_ids.iter().map(|t| json!({
            "id": t,
            "name": format!("Team {t}"),
            "timeline_file": format!("timelines/{t}.json"),
        })).collect::<Vec<_>>(),
    });
    let path = dir.path().join("scenario.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&scenario).unwrap()).unwrap();
    ScenarioFiles {
        dir,
        scenario: path,
        timelines,
        team_ids,
    }
}

/// A plausible inject: a news item, tweet or email with a body of about `body_bytes`.
fn inject_json(team: &str, index: usize, time: u32, body_bytes: usize) -> Value {
    const KINDS: [&str; 6] = ["news", "social", "email", "sms", "intel", "briefing"];
    let sentence = "Port authorities report an unidentified vessel drifting towards the \
                    shipping lane; coast guard units are on their way. ";
    let body: String = sentence.chars().cycle().take(body_bytes).collect();
    json!({
        "id": format!("inject-{index:04}"),
        "time": time,
        "type": KINDS[index % KINDS.len()],
        "priority": if index.is_multiple_of(5) { "high" } else { "normal" },
        "content": {
            "headline": format!("{team}: update #{index} at T+{time}"),
            "body": body,
            "author": "Maritime News Network",
        },
        "media": [format!("/media/{team}/image-{index}.jpg")],
    })
}

pub fn load(files: &ScenarioFiles) -> Arc<Scenario> {
    let s = scenario::load(&files.scenario, &Limits::default(), None)
        .unwrap_or_else(|errors| panic!("bench scenario invalid: {errors:?}"));
    Arc::new(s)
}

// ---------------------------------------------------------------- the engine

/// Connects as `app::run` does (own client id) and runs one exercise to its
/// end, starting at once, with a shutdown that never comes.
pub async fn run_engine(
    port: u16,
    client_id: &str,
    exercise_id: &str,
    scenario: Arc<Scenario>,
) -> Outcome {
    let mqtt = connect_engine(port, client_id).await;
    let outcome = run_connected(&mqtt, exercise_id, scenario).await;
    mqtt.close(Duration::from_secs(2)).await;
    outcome
}

pub async fn connect_engine(port: u16, client_id: &str) -> Mqtt {
    let policy = DeliveryPolicy::default();
    let mut settings = MqttSettings::new("127.0.0.1", port, client_id);
    settings.delivery_timeout = policy.timeout;
    Mqtt::connect(settings).await.expect("engine connects")
}

pub async fn run_connected(mqtt: &Mqtt, exercise_id: &str, scenario: Arc<Scenario>) -> Outcome {
    let options = RunOptions {
        exercise_id: ExerciseId::parse(exercise_id).expect("exercise id"),
        speed: Speed::ONE,
        wait_for_start: false,
        policy: DeliveryPolicy::default(),
        feed_qos: QoS::AtLeastOnce,
        monitoring_every: Duration::from_secs(5),
        max_commands_per_minute: 60,
    };
    let (progress_tx, _progress_rx) = watch::channel(Progress {
        time: ExerciseSeconds::ZERO,
        total: scenario.duration,
        state: State::Initialized,
        counts: Counts::default(),
        connected: false,
    });
    runner::run(
        scenario,
        options,
        mqtt.clone(),
        std::future::pending(),
        progress_tx,
    )
    .await
}

pub fn feed_topic(exercise_id: &str, team: &str) -> String {
    format!("/exercise/{exercise_id}/team/{team}/feed")
}

pub fn timer_topic(exercise_id: &str) -> String {
    format!("/exercise/{exercise_id}/timer")
}

// ---------------------------------------------------------------- MQTT

/// rumqttc options as the benches use them: TCP_NODELAY, large packets.
pub fn client_options(client_id: &str, port: u16) -> (MqttOptions, NetworkOptions) {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5))
        .set_clean_session(true)
        .set_max_packet_size(8 * 1024 * 1024, 8 * 1024 * 1024);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    (o, net)
}

/// One message as a subscriber saw it, stamped in the task that polls its
/// event loop as soon as `poll` yielded it.
pub struct Arrival {
    pub at: Instant,
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Arrival {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).expect("JSON payload")
    }
}

/// An in-process subscriber recording every arrival until `finish`.
pub struct Subscriber {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<Arrival>>,
}

impl Subscriber {
    /// Connects and subscribes (QoS 1) to `topics`; returns once the broker
    /// has acknowledged every subscription.
    pub async fn start(port: u16, client_id: &str, topics: &[String]) -> Self {
        let (options, net) = client_options(client_id, port);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        eventloop.set_network_options(net);
        for topic in topics {
            client
                .subscribe(topic, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        let mut acked = 0;
        while acked < topics.len() {
            match eventloop.poll().await.expect("subscriber connects") {
                Event::Incoming(Incoming::SubAck(_)) => acked += 1,
                _ => continue,
            }
        }
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(record(client, eventloop, stopped));
        Self { stop, task }
    }

    pub async fn finish(self) -> Vec<Arrival> {
        let _ = self.stop.send(());
        self.task.await.expect("subscriber task")
    }
}

async fn record(
    client: AsyncClient,
    mut eventloop: EventLoop,
    mut stop: oneshot::Receiver<()>,
) -> Vec<Arrival> {
    let mut arrivals = Vec::with_capacity(4096);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Incoming::Publish(p))) => arrivals.push(Arrival {
                    at: Instant::now(),
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                }),
                Ok(_) => {}
                Err(e) => panic!("subscriber lost its connection: {e}"),
            },
        }
    }
    let _ = client.disconnect().await;
    arrivals
}

/// Signed `at - due` in milliseconds.
pub fn error_ms(at: Instant, due: Instant) -> f64 {
    if at >= due {
        (at - due).as_secs_f64() * 1000.0
    } else {
        -(due - at).as_secs_f64() * 1000.0
    }
}

/// (exercise second, arrival - (start + n s)) of every timer message with
/// status "running", one per second. T+0 comes twice: the timer of the
/// state change to running and the T+0 tick, published one after the other
/// in the same flush; the later one (the tick) is kept.
pub fn timer_errors(arrivals: &[Arrival], topic: &str, start: Instant) -> Vec<(u32, f64)> {
    let mut by_second = std::collections::BTreeMap::new();
    for a in arrivals.iter().filter(|a| a.topic == topic) {
        let v = a.json();
        if v["status"] != "running" {
            continue;
        }
        let n = v["current"].as_u64().expect("timer current") as u32;
        by_second.insert(n, error_ms(a.at, due(start, n)));
    }
    by_second.into_iter().collect()
}

/// (exerciseTime, arrival - (start + exerciseTime s)) of every feed message.
pub fn feed_errors(arrivals: &[Arrival], start: Instant) -> Vec<(u32, f64)> {
    arrivals
        .iter()
        .filter(|a| a.topic.ends_with("/feed"))
        .map(|a| {
            let n = a.json()["exerciseTime"].as_u64().expect("exerciseTime") as u32;
            (n, error_ms(a.at, due(start, n)))
        })
        .collect()
}

pub fn due(start: Instant, second: u32) -> Instant {
    start + Duration::from_secs(u64::from(second))
}

// ---------------------------------------------------------------- CPU load

/// A background thread that spins for `busy`, sleeps for `idle`, repeat:
/// about busy / (busy + idle) of one core.
pub struct CpuLoad {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Duration, Duration)>,
}

impl CpuLoad {
    pub fn start(busy: Duration, idle: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let began = std::time::Instant::now();
            let mut spun = Duration::ZERO;
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            while !flag.load(Ordering::Relaxed) {
                let t = std::time::Instant::now();
                while t.elapsed() < busy {
                    for _ in 0..1000 {
                        x = std::hint::black_box(x.rotate_left(5) ^ x.wrapping_mul(31));
                    }
                }
                spun += t.elapsed();
                std::thread::sleep(idle);
            }
            (spun, began.elapsed())
        });
        Self { stop, thread }
    }

    /// Stops the load; returns the share of one core it used.
    pub fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let (spun, wall) = self.thread.join().expect("load thread");
        spun.as_secs_f64() / wall.as_secs_f64()
    }
}

/// The floor any tokio-timer-driven design inherits: how late
/// `sleep_until(t0 + n s)` wakes, for n = 1..=count, on the current runtime.
pub async fn sleep_lateness(count: u32) -> Vec<(u32, f64)> {
    let t0 = Instant::now();
    let mut late = Vec::new();
    for n in 1..=count {
        let at = due(t0, n) + Duration::from_micros(u64::from(n) * 7919 % 1000);
        tokio::time::sleep_until(at).await;
        late.push((n, error_ms(Instant::now(), at)));
    }
    late
}

/// What a driver could get instead: `sleep_until(t - early)`, then yield
/// until the clock reaches `t` (at most `early` of CPU per wake).
pub async fn early_wake_lateness(count: u32, early: Duration) -> Vec<(u32, f64)> {
    let t0 = Instant::now() + Duration::from_millis(500);
    let mut late = Vec::new();
    for n in 1..=count {
        let at = due(t0, n) + Duration::from_micros(u64::from(n) * 7919 % 1000);
        tokio::time::sleep_until(at - early).await;
        while Instant::now() < at {
            tokio::task::yield_now().await;
        }
        late.push((n, error_ms(Instant::now(), at)));
    }
    late
}

/// `name` from the environment as milliseconds, else `default`.
/// A whole number from the environment (a bench's size), else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |v| v.parse().expect("a whole number"))
}

/// The exercise length of the timed benches: BENCH_SECONDS (default 60; CI
/// runs them for a few seconds to see that they still run).
#[allow(dead_code)]
pub fn bench_seconds() -> u32 {
    static SECONDS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *SECONDS.get_or_init(|| env_usize("BENCH_SECONDS", 60).clamp(2, 7200) as u32)
}

pub fn env_ms(name: &str, default: Duration) -> Duration {
    match std::env::var(name) {
        Ok(v) => Duration::from_secs_f64(v.parse::<f64>().expect("a number of ms") / 1000.0),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------- statistics

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sorted(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    v
}

pub fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// p50/p99/max of some values (of |error| or of latencies), in ms.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let s = sorted(values);
        Self {
            n: s.len(),
            p50: percentile(&s, 50.0),
            p99: percentile(&s, 99.0),
            max: s.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// How a signed error evolves over an exercise of `duration` seconds.
#[derive(Debug, Clone, Copy)]
pub struct Trend {
    /// Mean error of the first 10 exercise seconds (0..10).
    pub first10: f64,
    /// Mean error of the last 10 exercise seconds (duration-9..=duration).
    pub last10: f64,
    /// Least-squares slope of error against exercise time, ms per minute.
    pub slope_per_min: f64,
}

impl Trend {
    pub fn of(points: &[(u32, f64)], duration: u32) -> Self {
        let window = |lo: u32, hi: u32| {
            mean(
                points
                    .iter()
                    .filter(|(n, _)| (lo..=hi).contains(n))
                    .map(|p| p.1),
            )
        };
        Self {
            first10: window(0, 9),
            last10: window(duration.saturating_sub(9), duration),
            slope_per_min: slope(points) * 60.0,
        }
    }

    pub fn growth(&self) -> f64 {
        self.last10 - self.first10
    }
}

/// Least-squares slope of y (ms) against x (s): ms per second.
fn slope(points: &[(u32, f64)]) -> f64 {
    let mx = mean(points.iter().map(|p| f64::from(p.0)));
    let my = mean(points.iter().map(|p| p.1));
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), &(x, y)| {
        let dx = f64::from(x) - mx;
        (num + dx * (y - my), den + dx * dx)
    });
    if den == 0.0 { f64::NAN } else { num / den }
}

pub fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

pub fn banner(title: &str) {
    println!("\n== {title} ==");
}
