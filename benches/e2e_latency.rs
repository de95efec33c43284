//! End-to-end inject latency: 10 teams, one inject per team every second
//! (T+0..=T+60), speed 1, a 60 s exercise. Latency = arrival at an
//! in-process subscriber (subscribed to the 10 feeds through Mosquitto)
//! minus the inject's due instant (`started_at + time`). Also the engine's
//! own view: acknowledged minus due (`DeliveryRecord::latency`).
//!
//! `CARGO_TARGET_DIR=/tmp/bench-target cargo bench --bench e2e_latency`

mod common;

use common::{Spread, Subscriber, feed_errors, feed_topic, pass};
use scip_orchestrator::core::DeliveryStatus;
use scip_orchestrator::testing::Mosquitto;

const TEAMS: usize = 10;
const TARGET_P99_MS: f64 = 5.0;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let broker = Mosquitto::start();
    let times: Vec<u32> = (0..=common::bench_seconds()).collect();
    let files = common::write_scenario(
        TEAMS,
        &times,
        f64::from(common::bench_seconds()) / 60.0,
        600,
    );
    let scenario = common::load(&files);
    let exercise = "e2e-latency";
    let feeds: Vec<String> = files
        .team_ids
        .iter()
        .map(|t| feed_topic(exercise, t))
        .collect();

    println!(
        "e2e_latency: {TEAMS} teams x {} injects (one per second, T+0..=T+{}), speed 1, QoS 1, \
         Mosquitto on 127.0.0.1:{}, no extra load",
        times.len(),
        common::bench_seconds(),
        broker.port
    );
    let subscriber = Subscriber::start(broker.port, "e2e-subscriber", &feeds).await;
    let outcome = common::run_engine(broker.port, "e2e-engine", exercise, scenario).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let arrivals = subscriber.finish().await;

    let start = outcome.started_at.expect("the exercise started");
    let expected = TEAMS * times.len();
    let arrived = feed_errors(&arrivals, start);
    let e2e = Spread::of(arrived.iter().map(|p| p.1));
    let delivered: Vec<_> = outcome
        .records
        .iter()
        .filter(|r| r.status == DeliveryStatus::Delivered)
        .collect();
    let acks = Spread::of(
        delivered
            .iter()
            .map(|r| r.latency.expect("latency").as_secs_f64() * 1000.0),
    );
    let min_e2e = arrived.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);

    println!();
    println!(
        "{:<44} {:>6} {:>9} {:>9} {:>9}",
        "latency (ms)", "n", "p50", "p99", "max"
    );
    println!(
        "{:<44} {:>6} {:>9.3} {:>9.3} {:>9.3}",
        "arrival at subscriber - due", e2e.n, e2e.p50, e2e.p99, e2e.max
    );
    println!(
        "{:<44} {:>6} {:>9.3} {:>9.3} {:>9.3}",
        "engine: PUBACK seen - due (record latency)", acks.n, acks.p50, acks.p99, acks.max
    );
    println!(
        "\narrived {}/{expected} (min latency {min_e2e:.3} ms: none early); delivered records {}/{expected}; final state {}",
        arrived.len(),
        delivered.len(),
        outcome.state.as_str()
    );

    let complete = arrived.len() == expected && delivered.len() == expected;
    println!(
        "RESULT e2e_latency: p99 {:.3} ms, p50 {:.3} ms, max {:.3} ms, {}/{expected} arrived (target p99 <= {TARGET_P99_MS} ms, all arrive): {}",
        e2e.p99,
        e2e.p50,
        e2e.max,
        arrived.len(),
        pass(complete && e2e.p99 <= TARGET_P99_MS)
    );
}
