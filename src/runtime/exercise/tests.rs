//! The actor under tokio's paused clock, with the test playing the broker:
//! what goes out, at which instant, and what the actor leaves behind.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::QoS;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use super::{Actor, Options, Outcome, REQUEST_QUEUE, Request};
use crate::config::{DeliveryPolicy, Limits};
use crate::core::{DeliveryStatus, DeliveryTag, State};
use crate::domain::{ExerciseId, Speed};
use crate::mqtt::wire::Topics;
use crate::mqtt::{AckEvent, AckTo, Asked, Mqtt, PlayedBroker, PublishError, Received};
use crate::runtime::journal::Journal;
use crate::runtime::timer::Sleeper;
use crate::scenario::{self, Scenario};

const RETRY_DELAY: Duration = Duration::from_secs(5);
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Teams that all follow one timeline of (inject id, exercise second), over
/// `duration` seconds.
fn scenario(teams: &[&str], injects: &[(&str, u32)], duration: u32) -> Arc<Scenario> {
    let injects: Vec<Value> = injects
        .iter()
        .map(|(id, time)| json!({"id": id, "time": time, "type": "news", "content": {"text": id}}))
        .collect();
    let teams: Vec<Value> = teams
        .iter()
        .map(|id| json!({"id": id, "timeline_id": "shared"}))
        .collect();
    let package = json!({
        "duration_minutes": f64::from(duration) / 60.0,
        "teams": teams,
        "timelines": [{"id": "shared", "injects": injects}],
    });
    Arc::new(scenario::load_inline(&package, &Limits::default()).expect("a valid scenario"))
}

fn options(exit_when_over: bool) -> Options {
    Options {
        exercise_id: ExerciseId::parse("drill").unwrap(),
        speed: Speed::ONE,
        policy: DeliveryPolicy {
            timeout: ACK_TIMEOUT,
            retry_delay: RETRY_DELAY,
            max_attempts: 3,
            late_after: Duration::from_millis(100),
        },
        feed_qos: QoS::AtLeastOnce,
        monitoring_every: Duration::from_secs(5),
        max_commands_per_minute: 60,
        exit_when_over,
        sleeper: Sleeper::Tokio,
        trust: None,
    }
}

fn topics() -> Topics {
    Topics::new(&ExerciseId::parse("drill").unwrap())
}

/// What the played broker does with a feed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ack,
    /// Reports the attempt failed, at once.
    Fail,
    /// Keeps the acknowledgement until the test releases it.
    Hold,
}

/// One feed message as the broker got it.
#[derive(Debug, Clone, PartialEq)]
struct Feed {
    team: String,
    inject: String,
    attempt: u16,
    at: Instant,
}

/// What the played broker saw.
#[derive(Default)]
struct Log {
    feeds: Vec<Feed>,
    /// Every other message: topic, payload, when.
    others: Vec<(String, Value, Instant)>,
    /// Where messages on the control topic go.
    control: Option<mpsc::Sender<Received>>,
    /// Where messages on the teams' responses topics go.
    responses: Option<mpsc::Sender<Received>>,
    /// Acknowledgements held back (`Answer::Hold`).
    held: Vec<AckTo>,
}

impl Log {
    /// The messages on `topic`, with when they were published.
    fn on(&self, topic: &str) -> Vec<(Value, Instant)> {
        self.others
            .iter()
            .filter(|(t, ..)| t == topic)
            .map(|(_, body, at)| (body.clone(), *at))
            .collect()
    }
}

/// Plays the broker until every handle is dropped: records what is
/// published and answers each feed message as `answer` says.
fn play(
    mut broker: PlayedBroker,
    answer: impl Fn(&Feed) -> Answer + Send + 'static,
) -> (Arc<Mutex<Log>>, JoinHandle<()>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let shared = log.clone();
    let task = tokio::spawn(async move {
        while let Some(asked) = broker.next().await {
            let mut log = shared.lock().unwrap();
            match asked {
                Asked::Subscribe(topic, to) if topic == topics().team_responses => {
                    log.responses = Some(to);
                }
                Asked::Subscribe(topic, _) if topic == topics().team_posts => {}
                Asked::Subscribe(topic, to) => {
                    assert_eq!(topic, topics().control);
                    log.control = Some(to);
                }
                Asked::Publish(m) => {
                    let body: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
                    let Some(ack) = m.ack else {
                        log.others.push((m.topic, body, Instant::now()));
                        continue;
                    };
                    let feed = Feed {
                        team: body["team_id"].as_str().unwrap().to_owned(),
                        inject: body["id"].as_str().unwrap().to_owned(),
                        attempt: DeliveryTag::from_u64(ack.tag).attempt,
                        at: Instant::now(),
                    };
                    match answer(&feed) {
                        Answer::Ack => {
                            let _ = ack.to.send(AckEvent::Acked {
                                tag: ack.tag,
                                at: Instant::now(),
                            });
                        }
                        Answer::Fail => {
                            let _ = ack.to.send(AckEvent::Failed {
                                tag: ack.tag,
                                error: PublishError::NotAcknowledged(ACK_TIMEOUT.as_millis()),
                            });
                        }
                        Answer::Hold => log.held.push(ack),
                    }
                    log.feeds.push(feed);
                }
            }
        }
    });
    (log, task)
}

/// An actor started at once, its requests, and the broker it publishes to.
struct Running {
    actor: JoinHandle<Outcome>,
    /// Kept open: under `serve` a closed request channel ends the actor.
    _requests: mpsc::Sender<Request>,
    stop: Option<oneshot::Sender<()>>,
    log: Arc<Mutex<Log>>,
    broker: JoinHandle<()>,
    /// Whether the played broker is connected.
    connected: tokio::sync::watch::Sender<bool>,
    /// The instant it started.
    t0: Instant,
}

fn start(
    scenario: Arc<Scenario>,
    options: Options,
    answer: impl Fn(&Feed) -> Answer + Send + 'static,
) -> Running {
    let (mqtt, broker) = Mqtt::played();
    let connected = broker.connected.clone();
    let (log, broker) = play(broker, answer);
    let actor = Actor::new(scenario, options, mqtt.clone(), Journal::direct(mqtt));
    let (requests, requests_rx) = mpsc::channel(REQUEST_QUEUE);
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let t0 = Instant::now();
    Running {
        actor: tokio::spawn(actor.run(true, requests_rx, shutdown)),
        _requests: requests,
        stop: Some(stop),
        log,
        broker,
        connected,
        t0,
    }
}

impl Running {
    /// Sends `body` on the control topic at `at`.
    async fn control_at(&self, at: Instant, body: Value) {
        sleep_until(at).await;
        let to = self
            .log
            .lock()
            .unwrap()
            .control
            .clone()
            .expect("subscribed");
        to.send(Received {
            topic: topics().control,
            payload: body.to_string().into_bytes(),
            retain: false,
        })
        .await
        .unwrap();
    }

    /// Waits for the actor to end: what it left, when it ended, and what
    /// the broker saw.
    async fn end(self) -> (Outcome, Instant, Log) {
        let outcome = self.actor.await.unwrap();
        let ended = Instant::now();
        drop(self.stop);
        self.broker.await.unwrap();
        let log = std::mem::take(&mut *self.log.lock().unwrap());
        (outcome, ended, log)
    }
}

/// (team, inject, attempt, offset from `t0`) of each feed message.
fn sent(log: &Log, t0: Instant) -> Vec<(&str, &str, u16, Duration)> {
    log.feeds
        .iter()
        .map(|f| (f.team.as_str(), f.inject.as_str(), f.attempt, f.at - t0))
        .collect()
}

fn record<'a>(outcome: &'a Outcome, team: &str, inject: &str) -> &'a crate::core::DeliveryRecord {
    let slot = outcome
        .names
        .iter()
        .position(|(t, i, _)| t == team && i == inject)
        .expect("a record");
    &outcome.records[slot]
}

#[tokio::test(start_paused = true)]
async fn injects_go_out_at_their_due_instants_in_order() {
    // Timeline order differs from time order; two injects share a second.
    let sc = scenario(
        &["alpha", "bravo"],
        &[("late", 3), ("early", 1), ("middle", 2), ("also-2", 2)],
        4,
    );
    let run = start(sc, options(true), |_| Answer::Ack);
    let t0 = run.t0;
    let (outcome, ended, log) = run.end().await;

    let s = Duration::from_secs;
    assert_eq!(
        sent(&log, t0),
        [
            ("alpha", "early", 1, s(1)),
            ("bravo", "early", 1, s(1)),
            ("alpha", "middle", 1, s(2)),
            ("alpha", "also-2", 1, s(2)),
            ("bravo", "middle", 1, s(2)),
            ("bravo", "also-2", 1, s(2)),
            ("alpha", "late", 1, s(3)),
            ("bravo", "late", 1, s(3)),
        ]
    );
    assert_eq!(outcome.state, State::Completed);
    assert_eq!(outcome.started_at, Some(t0));
    assert_eq!(ended, t0 + s(4), "ends when the clock reaches the end");
    for r in &outcome.records {
        assert_eq!(r.status, DeliveryStatus::Delivered);
        assert_eq!(r.attempts, 1);
        assert_eq!(r.latency, Some(Duration::ZERO));
        assert!(!r.late);
    }
    // The clock ticks on the timer topic, each second at its instant.
    let ticks = log.on(&topics().timer);
    for n in 0..=4u64 {
        let first = ticks
            .iter()
            .find(|(body, _)| body["current"] == n)
            .unwrap_or_else(|| panic!("no tick {n}"));
        assert_eq!(first.1, t0 + s(n), "tick {n}");
    }
}

#[tokio::test(start_paused = true)]
async fn pause_and_resume_shift_what_is_due() {
    let sc = scenario(&["alpha"], &[("one", 1), ("three", 3)], 4);
    let run = start(sc, options(true), |_| Answer::Ack);
    let t0 = run.t0;
    run.control_at(
        t0 + secs(1.5),
        json!({"command": "pause", "reason": "drill"}),
    )
    .await;
    run.control_at(t0 + secs(4.5), json!({"command": "resume"}))
        .await;
    let (outcome, ended, log) = run.end().await;

    // Paused three seconds: what was due after T+1.5 comes three seconds later.
    assert_eq!(
        sent(&log, t0),
        [
            ("alpha", "one", 1, secs(1.0)),
            ("alpha", "three", 1, secs(6.0)),
        ]
    );
    assert_eq!(outcome.state, State::Completed);
    assert_eq!(ended, t0 + secs(7.0));
    let announced: Vec<(String, u64, Duration)> = log
        .on(&topics().control)
        .into_iter()
        .map(|(body, at)| {
            (
                body["state"].as_str().unwrap().to_owned(),
                body["exerciseTime"].as_u64().unwrap(),
                at - t0,
            )
        })
        .collect();
    assert_eq!(
        announced,
        [
            ("running".to_owned(), 0, secs(0.0)),
            ("paused".to_owned(), 1, secs(1.5)),
            ("running".to_owned(), 1, secs(4.5)),
            ("completed".to_owned(), 4, secs(7.0)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_publish_is_retried_after_the_retry_delay() {
    let sc = scenario(&["alpha"], &[("flaky", 1), ("steady", 2)], 3);
    let run = start(sc, options(true), |f| {
        if f.inject == "flaky" && f.attempt < 3 {
            Answer::Fail
        } else {
            Answer::Ack
        }
    });
    let t0 = run.t0;
    let (outcome, ended, log) = run.end().await;

    assert_eq!(
        sent(&log, t0),
        [
            ("alpha", "flaky", 1, secs(1.0)),
            ("alpha", "steady", 1, secs(2.0)),
            ("alpha", "flaky", 2, secs(1.0) + RETRY_DELAY),
            ("alpha", "flaky", 3, secs(1.0) + 2 * RETRY_DELAY),
        ]
    );
    let flaky = record(&outcome, "alpha", "flaky");
    assert_eq!(flaky.status, DeliveryStatus::Delivered);
    assert_eq!(flaky.attempts, 3);
    assert_eq!(flaky.latency, Some(2 * RETRY_DELAY));
    assert!(flaky.late);
    assert_eq!(outcome.state, State::Completed);
    // Over at T+3, but the actor waits for the last attempt to settle.
    assert_eq!(ended, t0 + secs(1.0) + 2 * RETRY_DELAY);
}

#[tokio::test(start_paused = true)]
async fn a_publish_failing_every_attempt_is_reported_failed() {
    let sc = scenario(&["alpha"], &[("doomed", 1)], 2);
    let run = start(sc, options(true), |_| Answer::Fail);
    let t0 = run.t0;
    let (outcome, ended, log) = run.end().await;

    let attempts: Vec<(u16, Duration)> = log.feeds.iter().map(|f| (f.attempt, f.at - t0)).collect();
    assert_eq!(
        attempts,
        [
            (1, secs(1.0)),
            (2, secs(1.0) + RETRY_DELAY),
            (3, secs(1.0) + 2 * RETRY_DELAY)
        ]
    );
    let doomed = record(&outcome, "alpha", "doomed");
    assert_eq!(doomed.status, DeliveryStatus::Failed);
    assert_eq!(doomed.attempts, 3);
    let failed: Vec<Instant> = log
        .on(&topics().status)
        .into_iter()
        .filter(|(body, _)| body["event"] == "delivery_failed")
        .map(|(body, at)| {
            assert_eq!(body["inject_id"], "doomed");
            at
        })
        .collect();
    assert_eq!(failed, [t0 + secs(1.0) + 2 * RETRY_DELAY]);
    assert_eq!(ended, t0 + secs(1.0) + 2 * RETRY_DELAY);
}

#[tokio::test(start_paused = true)]
async fn shutdown_under_serve_drains_what_is_in_flight_and_sends_nothing_new() {
    let sc = scenario(&["alpha"], &[("first", 1), ("second", 3)], 4);
    let mut run = start(sc, options(false), |_| Answer::Hold);
    let t0 = run.t0;
    sleep_until(t0 + secs(2.0)).await;
    let _ = run.stop.take().unwrap().send(());
    sleep_until(t0 + secs(2.5)).await;
    let held = run.log.lock().unwrap().held.pop().expect("first in flight");
    held.to
        .send(AckEvent::Acked {
            tag: held.tag,
            at: Instant::now(),
        })
        .unwrap();
    let (outcome, ended, log) = run.end().await;

    assert_eq!(ended, t0 + secs(2.5), "ends once the last ack is in");
    assert_eq!(sent(&log, t0), [("alpha", "first", 1, secs(1.0))]);
    // The exercise is left as it was: it goes on at the next start.
    assert_eq!(outcome.state, State::Running);
    let first = record(&outcome, "alpha", "first");
    assert_eq!(first.status, DeliveryStatus::Delivered);
    assert_eq!(first.latency, Some(secs(1.5)));
    let second = record(&outcome, "alpha", "second");
    assert_eq!(second.status, DeliveryStatus::Pending);
    assert_eq!(second.attempts, 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_under_serve_gives_up_on_acks_after_the_delivery_timeout() {
    let sc = scenario(&["alpha"], &[("first", 1), ("second", 3)], 4);
    let mut run = start(sc, options(false), |_| Answer::Hold);
    let t0 = run.t0;
    sleep_until(t0 + secs(2.0)).await;
    let _ = run.stop.take().unwrap().send(());
    let (outcome, ended, log) = run.end().await;

    assert_eq!(ended, t0 + secs(2.0) + ACK_TIMEOUT);
    assert_eq!(sent(&log, t0), [("alpha", "first", 1, secs(1.0))]);
    assert_eq!(outcome.state, State::Running);
    let first = record(&outcome, "alpha", "first");
    assert_eq!(first.attempts, 1);
    assert_eq!(first.status, DeliveryStatus::Pending);
}

#[tokio::test(start_paused = true)]
async fn shutdown_under_run_stops_the_exercise_and_settles_its_deliveries() {
    let sc = scenario(&["alpha"], &[("first", 1), ("second", 3)], 4);
    let mut run = start(sc, options(true), |_| Answer::Ack);
    let t0 = run.t0;
    sleep_until(t0 + secs(2.0)).await;
    let _ = run.stop.take().unwrap().send(());
    let (outcome, ended, log) = run.end().await;

    assert_eq!(ended, t0 + secs(2.0));
    assert_eq!(sent(&log, t0), [("alpha", "first", 1, secs(1.0))]);
    assert_eq!(outcome.state, State::Stopped);
    assert_eq!(
        record(&outcome, "alpha", "second").status,
        DeliveryStatus::Cancelled
    );
}

#[tokio::test(start_paused = true)]
async fn what_comes_due_while_the_broker_is_away_goes_out_when_it_is_back() {
    let sc = scenario(&["alpha"], &[("one", 1), ("three", 3)], 4);
    let run = start(sc, options(true), |_| Answer::Ack);
    let t0 = run.t0;
    sleep_until(t0 + secs(0.5)).await;
    run.connected.send_replace(false);
    sleep_until(t0 + secs(2.5)).await;
    run.connected.send_replace(true);
    let (outcome, ended, log) = run.end().await;

    assert_eq!(
        sent(&log, t0),
        [
            ("alpha", "one", 1, secs(2.5)),
            ("alpha", "three", 1, secs(3.0)),
        ]
    );
    let one = record(&outcome, "alpha", "one");
    assert_eq!(one.status, DeliveryStatus::Delivered);
    assert_eq!(one.latency, Some(secs(1.5)));
    assert!(one.late);
    assert_eq!(outcome.state, State::Completed);
    assert_eq!(ended, t0 + secs(4.0));
}
