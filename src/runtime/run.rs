//! `run`: one exercise in the foreground, nothing stored; it ends when the
//! exercise is over and every delivery settled.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use tokio::sync::{mpsc, watch};

use crate::config::DeliveryPolicy;
use crate::core::{Counts, State};
use crate::domain::{ExerciseId, ExerciseSeconds, Speed};
use crate::mqtt::Mqtt;
use crate::runtime::exercise::{Actor, Options, Snapshot};
use crate::runtime::journal::Journal;
use crate::runtime::timer::Sleeper;
use crate::scenario::Scenario;

pub use crate::runtime::exercise::Outcome;

/// How to run one exercise.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub exercise_id: ExerciseId,
    /// Exercise seconds per wall second.
    pub speed: Speed,
    /// Wait for a start command on the control topic instead of starting at once.
    pub wait_for_start: bool,
    pub policy: DeliveryPolicy,
    pub feed_qos: QoS,
    pub monitoring_every: Duration,
    /// Control-topic commands accepted per minute (MAX_COMMANDS_PER_MINUTE).
    pub max_commands_per_minute: u32,
}

/// Where a run stands, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub time: ExerciseSeconds,
    pub total: ExerciseSeconds,
    pub state: State,
    pub counts: Counts,
    pub connected: bool,
}

impl From<&Snapshot> for Progress {
    fn from(s: &Snapshot) -> Self {
        Self {
            time: s.time,
            total: s.total,
            state: s.state,
            counts: s.counts,
            connected: s.connected,
        }
    }
}

/// Runs one exercise to its end: completed, or stopped (by a control command
/// or by `shutdown` resolving), with every delivery settled.
pub async fn run(
    scenario: Arc<Scenario>,
    options: RunOptions,
    mqtt: Mqtt,
    shutdown: impl Future<Output = ()>,
    progress: watch::Sender<Progress>,
) -> Outcome {
    let actor = Actor::new(
        scenario,
        Options {
            exercise_id: options.exercise_id,
            speed: options.speed,
            policy: options.policy,
            feed_qos: options.feed_qos,
            monitoring_every: options.monitoring_every,
            max_commands_per_minute: options.max_commands_per_minute,
            exit_when_over: true,
            sleeper: Sleeper::Precise,
            trust: None,
        },
        mqtt.clone(),
        Journal::direct(mqtt),
    );
    let mut snapshots = actor.snapshots();
    // No requests under `run`: controllers use the control topic.
    let (_requests, requests_rx) = mpsc::channel(1);
    let forward = async {
        while snapshots.changed().await.is_ok() {
            let _ = progress.send(Progress::from(&*snapshots.borrow_and_update()));
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        biased;
        outcome = actor.run(!options.wait_for_start, requests_rx, shutdown) => outcome,
        () = forward => unreachable!("pending forever"),
    }
}
