//! Burst throughput: 10 teams x 1000 injects all due at T+0 (QoS 1), time
//! from due until the broker has acknowledged all 10,000, against a bare
//! rumqttc client publishing the same 10,000 payloads (same topics but for
//! the exercise id, same sizes, QoS 1, inflight 1000, request channel
//! 16 Ki, TCP_NODELAY) on the same broker. Three trials each, alternating.
//!
//! The exercise lasts 3 s (duration_minutes 0.05): the runner returns once
//! it completes and every delivery is settled; only the records' timestamps
//! are used.
//!
//! `CARGO_TARGET_DIR=/tmp/bench-target cargo bench --bench burst`

mod common;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, Outgoing, QoS};
use time::OffsetDateTime;
use tokio::time::Instant;

use common::{pass, sorted};
use scip_orchestrator::core::{Counts, DeliveryStatus};
use scip_orchestrator::domain::TeamId;
use scip_orchestrator::domain::{ExerciseId, ExerciseSeconds};
use scip_orchestrator::mqtt::wire::FeedTemplate;
use scip_orchestrator::scenario::Scenario;
use scip_orchestrator::testing::Mosquitto;

const TEAMS: usize = 10;
/// Injects per team (BENCH_PER_TEAM, default 1,000).
fn per_team() -> usize {
    common::env_usize("BENCH_PER_TEAM", 1000)
}

fn total() -> usize {
    TEAMS * per_team()
}

/// Trials each (BENCH_TRIALS, default 3).
fn trials() -> usize {
    common::env_usize("BENCH_TRIALS", 3)
}
/// The engine's burst rate must be at least this share of the bare client's.
const TARGET_SHARE: f64 = 0.8;

/// One trial: how long until all were acknowledged.
struct Trial {
    first_ack: Duration,
    all_acked: Duration,
    acked: usize,
}

impl Trial {
    fn rate(&self) -> f64 {
        self.acked as f64 / self.all_acked.as_secs_f64()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let broker = Mosquitto::start();
    let files = common::write_scenario(TEAMS, &vec![0; per_team()], 0.05, 600);
    let scenario = common::load(&files);
    let payload_bytes = FeedTemplate::new(&scenario.teams[0].timeline.injects[0])
        .render(
            &scenario.teams[0].id,
            &ExerciseId::parse("burst-eng-0").unwrap(),
            OffsetDateTime::now_utc(),
            ExerciseSeconds::new(0),
        )
        .len();
    println!(
        "burst: {TEAMS} teams x {} injects due at T+0 = {} QoS 1 publishes of ~{payload_bytes} B, \
         Mosquitto 127.0.0.1:{}, {} trials each, alternating engine / bare rumqttc",
        per_team(),
        total(),
        broker.port,
        trials()
    );

    let mut engine = Vec::new();
    let mut bare = Vec::new();
    println!(
        "\n{:<8} {:>5} {:>8} {:>14} {:>16} {:>12}",
        "who", "trial", "acked", "first ack ms", "all acked ms", "msgs/s"
    );
    for i in 0..trials() {
        let e = engine_trial(broker.port, i, scenario.clone()).await;
        show("engine", i, &e);
        engine.push(e);
        let b = bare_trial(broker.port, i, &scenario).await;
        show("bare", i, &b);
        bare.push(b);
    }

    let (e_best, e_median) = best_and_median(&engine);
    let (b_best, b_median) = best_and_median(&bare);
    println!("\n{:<8} {:>14} {:>16}", "msgs/s", "best", "median");
    println!("{:<8} {:>14.0} {:>16.0}", "engine", e_best, e_median);
    println!("{:<8} {:>14.0} {:>16.0}", "bare", b_best, b_median);
    println!(
        "engine / bare: best {:.1}%, median {:.1}%",
        e_best / b_best * 100.0,
        e_median / b_median * 100.0
    );
    driver_overhead(&scenario);

    let complete = engine.iter().chain(&bare).all(|t| t.acked == total());
    let share = e_median / b_median;
    println!(
        "RESULT burst: engine {:.0} msgs/s vs bare {:.0} msgs/s (medians; best {:.0} vs {:.0}) = {:.1}%, \
         all {} acknowledged in every trial: {} (target >= {:.0}% of bare): {}",
        e_median,
        b_median,
        e_best,
        b_best,
        share * 100.0,
        total(),
        complete,
        TARGET_SHARE * 100.0,
        pass(complete && share >= TARGET_SHARE)
    );
}

fn show(who: &str, i: usize, t: &Trial) {
    println!(
        "{:<8} {:>5} {:>8} {:>14.3} {:>16.3} {:>12.0}",
        who,
        i + 1,
        t.acked,
        t.first_ack.as_secs_f64() * 1000.0,
        t.all_acked.as_secs_f64() * 1000.0,
        t.rate()
    );
}

fn best_and_median(trials: &[Trial]) -> (f64, f64) {
    let rates = sorted(trials.iter().map(Trial::rate));
    (rates[rates.len() - 1], rates[rates.len() / 2])
}

/// The engine: from the due instant (`started_at`, T+0) to the last PUBACK.
async fn engine_trial(port: u16, i: usize, scenario: Arc<Scenario>) -> Trial {
    let outcome = common::run_engine(
        port,
        &format!("burst-engine-{i}"),
        &format!("burst-eng-{i}"),
        scenario,
    )
    .await;
    let start = outcome.started_at.expect("started");
    let acked: Vec<Instant> = outcome
        .records
        .iter()
        .filter(|r| r.status == DeliveryStatus::Delivered)
        .filter_map(|r| r.acked_at)
        .collect();
    Trial {
        first_ack: acked.iter().min().map_or(Duration::ZERO, |&a| a - start),
        all_acked: acked.iter().max().map_or(Duration::ZERO, |&a| a - start),
        acked: acked.len(),
    }
}

/// A bare rumqttc client: one task publishes (rendering each payload as the
/// engine does), the polling loop counts PUBACKs.
async fn bare_trial(port: u16, i: usize, scenario: &Scenario) -> Trial {
    let exercise = ExerciseId::parse(&format!("burst-raw-{i}")).unwrap();
    let messages: Vec<(String, FeedTemplate, TeamId)> = scenario
        .teams
        .iter()
        .flat_map(|team| {
            let topic = common::feed_topic(exercise.as_str(), team.id.as_str());
            team.timeline
                .injects
                .iter()
                .map(move |inject| (topic.clone(), FeedTemplate::new(inject), team.id.clone()))
        })
        .collect();
    let (mut options, net) = common::client_options(&format!("burst-bare-{i}"), port);
    options.set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(options, 16 * 1024);
    eventloop.set_network_options(net);
    loop {
        if let Event::Incoming(Incoming::ConnAck(_)) = eventloop.poll().await.expect("connect") {
            break;
        }
    }
    let start = Instant::now();
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            for (topic, template, team) in messages {
                let payload = template.render(
                    &team,
                    &exercise,
                    OffsetDateTime::now_utc(),
                    ExerciseSeconds::new(0),
                );
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .expect("publish");
            }
        })
    };
    let mut acked = 0;
    let mut first_ack = None;
    let all_acked = tokio::time::timeout(Duration::from_secs(30), async {
        while acked < total() {
            if let Event::Incoming(Incoming::PubAck(_)) = eventloop.poll().await.expect("poll") {
                acked += 1;
                first_ack.get_or_insert_with(Instant::now);
            }
        }
        Instant::now()
    })
    .await
    .unwrap_or_else(|_| Instant::now());
    publisher.await.unwrap();
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while !matches!(
            eventloop.poll().await,
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)
        ) {}
    })
    .await;
    Trial {
        first_ack: first_ack.map_or(Duration::ZERO, |a| a - start),
        all_acked: all_acked - start,
        acked,
    }
}

/// The runner recomputes `Counts::of(all records)` for its progress watch on
/// every pass of its loop, i.e. once per acknowledgement: what that costs
/// over a burst of this size.
fn driver_overhead(scenario: &Scenario) {
    use scip_orchestrator::core::DeliveryRecord;
    use scip_orchestrator::domain::ExerciseSeconds;
    let records: Vec<DeliveryRecord> = (0..scenario.delivery_count())
        .map(|i| DeliveryRecord::new(i / per_team(), i % per_team(), ExerciseSeconds::ZERO))
        .collect();
    let rounds = 2000;
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(Counts::of(std::hint::black_box(&records)));
    }
    let each = t.elapsed() / rounds;
    println!(
        "driver cost: Counts::of over {} records takes {:.1} us; once per acknowledgement that is ~{:.0} ms per {}-inject burst",
        records.len(),
        each.as_secs_f64() * 1e6,
        each.as_secs_f64() * 1000.0 * total() as f64,
        total()
    );
}
