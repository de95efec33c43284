//! Helpers: scenario files, exercises on a real broker, message filters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use scip_orchestrator::config::{DeliveryPolicy, Limits};
use scip_orchestrator::core::{Counts, State};
use scip_orchestrator::domain::{ExerciseId, ExerciseSeconds, Speed};
use scip_orchestrator::mqtt::{Mqtt, MqttSettings};
use scip_orchestrator::runtime::run::{self as runner, Outcome, Progress, RunOptions};
use scip_orchestrator::scenario;
use scip_orchestrator::testing::{Seen, Subscriber};

/// An inject as (id, time, type).
pub type InjectSpec<'a> = (&'a str, u32, &'a str);

/// Writes a scenario of `duration` seconds with teams naming timelines by id;
/// each inject gets content, a priority and media to pass through.
pub fn write_scenario(
    dir: &Path,
    duration: u32,
    teams: &[(&str, &str)],
    timelines: &[(&str, &[InjectSpec])],
) -> PathBuf {
    std::fs::create_dir_all(dir.join("timelines")).unwrap();
    for (id, injects) in timelines {
        let injects: Vec<Value> = injects
            .iter()
            .map(|(iid, time, kind)| {
                json!({"id": iid, "time": time, "type": kind, "priority": "high",
                       "content": {"text": format!("{iid} says hello")},
                       "media": [format!("/media/{iid}.jpg")]})
            })
            .collect();
        let body = json!({"id": id, "injects": injects});
        std::fs::write(dir.join(format!("timelines/{id}.json")), body.to_string()).unwrap();
    }
    let teams: Vec<Value> = teams
        .iter()
        .map(|(id, timeline)| json!({"id": id, "timeline_id": timeline}))
        .collect();
    let scenario =
        json!({"name": "test", "duration_minutes": f64::from(duration) / 60.0, "teams": teams});
    let path = dir.join("scenario.json");
    std::fs::write(&path, scenario.to_string()).unwrap();
    path
}

/// An exercise running in this process.
pub struct Exercise {
    handle: JoinHandle<Outcome>,
    stop: Option<oneshot::Sender<()>>,
    progress: watch::Receiver<Progress>,
}

impl Exercise {
    /// Waits until the run's progress (its counts, state, link) satisfies
    /// `done`; panics after `within`.
    pub async fn progress_until(
        &mut self,
        within: Duration,
        done: impl FnMut(&Progress) -> bool,
    ) -> Progress {
        if let Ok(reached) = tokio::time::timeout(within, self.progress.wait_for(done)).await {
            return *reached.expect("the run is alive");
        }
        panic!(
            "not so within {within:?}; last progress: {:?}",
            *self.progress.borrow()
        );
    }

    /// Waits for the run to end by itself.
    pub async fn finish(mut self) -> Outcome {
        let outcome = tokio::time::timeout(Duration::from_secs(60), &mut self.handle)
            .await
            .expect("the exercise ends within 60 s")
            .expect("runner did not panic");
        drop(self.stop.take());
        outcome
    }
}

pub async fn start(port: u16, path: &Path, id: &str, speed: f64, wait_for_start: bool) -> Exercise {
    let policy = DeliveryPolicy {
        timeout: Duration::from_secs(2),
        retry_delay: Duration::from_millis(500),
        ..DeliveryPolicy::default()
    };
    start_with(
        port,
        path,
        id,
        speed,
        wait_for_start,
        policy,
        QoS::AtLeastOnce,
    )
    .await
}

pub async fn start_with(
    port: u16,
    path: &Path,
    id: &str,
    speed: f64,
    wait_for_start: bool,
    policy: DeliveryPolicy,
    feed_qos: QoS,
) -> Exercise {
    let scenario = scenario::load(path, &Limits::default(), None).expect("valid scenario");
    let mut settings = MqttSettings::new("127.0.0.1", port, format!("engine-{id}"));
    settings.delivery_timeout = policy.timeout;
    let mqtt = Mqtt::connect(settings).await.expect("broker reachable");
    let options = RunOptions {
        exercise_id: ExerciseId::parse(id).unwrap(),
        speed: Speed::new(speed).expect("a valid speed"),
        wait_for_start,
        policy,
        feed_qos,
        monitoring_every: Duration::from_secs(5),
        max_commands_per_minute: 60,
    };
    let (progress, progress_rx) = watch::channel(Progress {
        time: ExerciseSeconds::ZERO,
        total: scenario.duration,
        state: State::Initialized,
        counts: Counts::default(),
        connected: false,
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        // Resolves only when the test asks (the sender sends), not on drop.
        if stopped.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let handle = tokio::spawn(async move {
        let outcome = runner::run(
            Arc::new(scenario),
            options,
            mqtt.clone(),
            shutdown,
            progress,
        )
        .await;
        mqtt.close(Duration::from_secs(2)).await;
        outcome
    });
    Exercise {
        handle,
        stop: Some(stop),
        progress: progress_rx,
    }
}

pub async fn control(sub: &Subscriber, exercise: &str, body: Value) {
    let topic = format!("/exercise/{exercise}/control");
    publish(sub, &topic, body.to_string().as_bytes(), false).await;
}

pub async fn publish(sub: &Subscriber, topic: &str, payload: &[u8], retain: bool) {
    sub.client
        .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
        .await
        .expect("test publish");
}

pub fn is_status(m: &Seen, status: &str) -> bool {
    m.topic.ends_with("/status")
        && m.payload["status"] == status
        && m.payload["event"] == "state_changed"
}

/// The monitoring message published when the run is over.
pub fn is_final_monitoring(m: &Seen, status: &str) -> bool {
    m.topic.ends_with("/monitoring")
        && m.payload["status"] == status
        && m.payload["injects_pending"] == 0
        && m.payload["injects_retrying"] == 0
}

pub fn feeds_by_team(seen: &[Seen]) -> BTreeMap<String, Vec<Seen>> {
    let mut out: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
    for m in seen.iter().filter(|m| m.topic.ends_with("/feed")) {
        let team = m.topic.split('/').nth(4).unwrap().to_owned();
        out.entry(team).or_default().push(m.clone());
    }
    out
}

pub fn ids(messages: &[Seen]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.payload["id"].as_str().unwrap().to_owned())
        .collect()
}

pub fn counts(outcome: &Outcome) -> Counts {
    Counts::of(&outcome.records)
}
