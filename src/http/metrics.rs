//! Prometheus metrics: the process's recorder (counters and histograms the
//! engine records as it goes) and the gauges `/metrics` adds from the
//! service's exercises.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::warn;

use crate::core::State as ExerciseState;
use crate::runtime::service::Service;

/// Buckets of `scip_delivery_latency_seconds`: millisecond precision is the
/// interesting range, seconds mean a broker outage.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process's Prometheus recorder once (the first call wins) and
/// returns its handle; None when another recorder was installed first.
/// [`router`] calls it; call it earlier to count deliveries made before the
/// API is up.
pub fn install_metrics() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("scip_delivery_latency_seconds".into()),
                    &LATENCY_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("scip_receipt_latency_seconds".into()),
                        &LATENCY_BUCKETS,
                    )
                })
                .expect("latency buckets are not empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    describe_metrics();
                    let upkeep = handle.clone();
                    // Drains histogram samples between scrapes, so they
                    // cannot pile up when nobody scrapes.
                    let spawned = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(Duration::from_secs(5));
                                upkeep.run_upkeep();
                            }
                        });
                    if let Err(e) = spawned {
                        warn!(error = %e, "cannot start the metrics upkeep thread");
                    }
                    Some(handle)
                }
                Err(e) => {
                    warn!(error = %e, "a metrics recorder is already installed; /metrics shows only the service gauges");
                    None
                }
            }
        })
        .as_ref()
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((
        status = 200,
        description = "Prometheus text exposition: scip_deliveries{status}, scip_deliveries_total{status}, scip_delivery_latency_seconds, scip_timer_tick_lateness_seconds, scip_receipts_total, scip_receipt_latency_seconds, scip_receipts_not_watched_total, scip_exercises{state}, scip_teams_connected, scip_mqtt_connected, scip_store_write_failures_total, scip_store_entries_dropped_total, scip_announcements_dropped_total, scip_mqtt_received_dropped_total, scip_control_reports_suppressed_total",
        body = String,
        content_type = "text/plain; version=0.0.4"
    ))
)]
pub(super) async fn metrics(State(service): State<Service>) -> impl IntoResponse {
    let mut body = install_metrics()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    if !body.is_empty() && !body.ends_with('\n') {
        body.push('\n');
    }
    let exercises = service.list();
    gauge_header(
        &mut body,
        "scip_exercises",
        "Exercises in this process by lifecycle state",
    );
    for state in ExerciseState::ALL {
        let n = exercises
            .iter()
            .filter(|e| e.snapshot().is_some_and(|s| s.state == state))
            .count();
        let _ = writeln!(body, "scip_exercises{{state=\"{}\"}} {n}", state.as_str());
    }
    let unrestorable = exercises.iter().filter(|e| e.snapshot().is_none()).count();
    let _ = writeln!(
        body,
        "scip_exercises{{state=\"unrestorable\"}} {unrestorable}"
    );
    gauge_header(
        &mut body,
        "scip_deliveries",
        "Delivery records of the current runs by status",
    );
    let mut by_status = [0usize; 6];
    for c in exercises
        .iter()
        .filter_map(|e| e.snapshot())
        .map(|s| &s.counts)
    {
        for (slot, n) in by_status.iter_mut().zip([
            c.pending,
            c.delivered,
            c.retrying,
            c.failed,
            c.cancelled,
            c.skipped,
        ]) {
            *slot += n;
        }
    }
    for (status, n) in [
        "pending",
        "delivered",
        "retrying",
        "failed",
        "cancelled",
        "skipped",
    ]
    .into_iter()
    .zip(by_status)
    {
        let _ = writeln!(body, "scip_deliveries{{status=\"{status}\"}} {n}");
    }
    let teams: usize = exercises.iter().map(|e| e.teams_connected).sum();
    gauge_header(
        &mut body,
        "scip_teams_connected",
        "Teams with at least one dashboard open, over every exercise",
    );
    let _ = writeln!(body, "scip_teams_connected {teams}");
    let connected = *service.mqtt().connected().borrow();
    gauge_header(
        &mut body,
        "scip_mqtt_connected",
        "1 while the connection to the MQTT broker is up",
    );
    let _ = writeln!(body, "scip_mqtt_connected {}", u8::from(connected));
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
}

/// The `# HELP` and `# TYPE` lines of the gauge `name`.
fn gauge_header(body: &mut String, name: &str, help: &str) {
    let _ = writeln!(body, "# HELP {name} {help}");
    let _ = writeln!(body, "# TYPE {name} gauge");
}

fn describe_metrics() {
    metrics::describe_counter!(
        "scip_deliveries_total",
        "Deliveries that reached a final status, by status"
    );
    metrics::describe_histogram!(
        "scip_delivery_latency_seconds",
        metrics::Unit::Seconds,
        "Broker acknowledgement minus due time of delivered injects"
    );
    metrics::describe_counter!(
        "scip_receipts_total",
        "Injects a team dashboard confirmed it showed (first receipt of each)"
    );
    metrics::describe_histogram!(
        "scip_receipt_latency_seconds",
        metrics::Unit::Seconds,
        "Shown on a team dashboard minus due time, for injects sent while a dashboard of the team was open"
    );
    metrics::describe_counter!(
        "scip_receipts_not_watched_total",
        "Receipts of injects sent while no dashboard of the team was open (not counted in the latency)"
    );
    metrics::describe_counter!(
        "scip_store_write_failures_total",
        "Journal batches the database did not store; each is held and written again"
    );
    metrics::describe_counter!(
        "scip_store_entries_dropped_total",
        "Journal entries the database refused for their content (a constraint), dropped"
    );
    metrics::describe_counter!(
        "scip_announcements_dropped_total",
        "Held announcements dropped, oldest first, over the 10,000 kept while writes fail"
    );
    metrics::describe_counter!(
        "scip_mqtt_received_dropped_total",
        "Messages on a subscribed (control) topic dropped because its queue was full"
    );
    metrics::describe_counter!(
        "scip_control_reports_suppressed_total",
        "Refused or invalid control-topic messages counted instead of reported one by one (over the report rate)"
    );
    // Counters of what should not happen are shown from the start, at 0.
    for name in [
        "scip_store_write_failures_total",
        "scip_store_entries_dropped_total",
        "scip_announcements_dropped_total",
        "scip_mqtt_received_dropped_total",
        "scip_control_reports_suppressed_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}
