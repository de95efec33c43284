//! The recorders as `serve` installs them, what the debugging one collected
//! in a window, and a probe of the precise timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::layers::FanoutBuilder;
use tokio::time::Instant;

use scip_orchestrator::runtime::timer;

use crate::common;

/// The Prometheus recorder as `serve` installs it, and beside it a debugging
/// recorder whose histograms the bench drains.
pub fn install_recorder() -> Snapshotter {
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

/// What the debugging recorder collected since it was last drained.
#[derive(Default)]
pub struct Window {
    /// Tick lateness, ms.
    pub ticks: Vec<f64>,
    /// Delivery latency, ms.
    pub latency: Vec<f64>,
    pub delivered: u64,
    pub failed: u64,
    pub attempts_failed: u64,
}

pub fn take_metrics(snapshotter: &Snapshotter) -> Window {
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
pub async fn probe_timer(stop: Arc<AtomicBool>) -> Vec<f64> {
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
