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

#[path = "../common/mod.rs"]
mod common;
mod listing;
mod measure;
mod procfs;
mod recorders;
mod report;
mod watch;

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use clap::Parser;

use scip_orchestrator::app::logging::{self, LogFormat};
use scip_orchestrator::config::Config;

use measure::measure;
use recorders::install_recorder;

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
