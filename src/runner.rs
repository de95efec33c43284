//! The driver of one exercise: owns the real clock, the engine and the
//! channels to the MQTT connection, and turns the engine's outputs into
//! messages and log lines.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until};
use tracing::{error, info, warn};

use crate::config::DeliveryPolicy;
use crate::core::engine::ArchivedRun;
use crate::core::{
    Command, Counts, DeliveryRecord, DeliveryTag, Engine, Now, Output, State, Transition,
};
use crate::domain::{ExerciseId, ExerciseSeconds};
use crate::mqtt::{AckEvent, AckTo, Message, Mqtt, Received};
use crate::scenario::Scenario;
use crate::timer;
use crate::wire::{
    ANNOUNCEMENT_SOURCE, Announcement, ControlInput, FeedTemplate, MonitoringMessage,
    StatusMessage, TimerMessage, Topics, parse_control, timestamp,
};

/// How to run one exercise.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub exercise_id: ExerciseId,
    /// Exercise seconds per wall second.
    pub speed: f64,
    /// Wait for a start command on the control topic instead of starting at once.
    pub wait_for_start: bool,
    pub policy: DeliveryPolicy,
    pub feed_qos: QoS,
    pub monitoring_every: Duration,
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

/// What a finished run leaves behind.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub exercise_id: ExerciseId,
    pub scenario: Arc<Scenario>,
    pub state: State,
    pub run: u16,
    pub speed: f64,
    pub started_wall: Option<OffsetDateTime>,
    /// The monotonic instant of the (last) start: exercise second n was due
    /// at `started_at + n / speed` plus any time paused.
    pub started_at: Option<Instant>,
    pub records: Vec<DeliveryRecord>,
    pub archived: Vec<ArchivedRun>,
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
    let mut driver = Driver::new(scenario, options, mqtt);
    driver.run(shutdown, progress).await;
    driver.outcome()
}

struct Driver {
    scenario: Arc<Scenario>,
    options: RunOptions,
    mqtt: Mqtt,
    engine: Engine,
    topics: Topics,
    feeds: Vec<String>,
    templates: Vec<FeedTemplate>,
    acks: mpsc::UnboundedSender<AckEvent>,
    acks_rx: Option<mpsc::UnboundedReceiver<AckEvent>>,
    started_wall: Option<OffsetDateTime>,
}

impl Driver {
    fn new(scenario: Arc<Scenario>, options: RunOptions, mqtt: Mqtt) -> Self {
        let id = &options.exercise_id;
        let topics = Topics::new(id);
        let feeds = scenario.teams.iter().map(|t| topics.feed(&t.id)).collect();
        let templates = scenario
            .teams
            .iter()
            .flat_map(|t| {
                t.timeline
                    .injects
                    .iter()
                    .map(move |i| FeedTemplate::new(i, &t.id, id))
            })
            .collect();
        let engine = Engine::new(&scenario, options.speed, options.policy);
        let (acks, acks_rx) = mpsc::unbounded_channel();
        Self {
            scenario,
            options,
            mqtt,
            engine,
            topics,
            feeds,
            templates,
            acks,
            acks_rx: Some(acks_rx),
            started_wall: None,
        }
    }

    fn id(&self) -> &ExerciseId {
        &self.options.exercise_id
    }

    async fn run(&mut self, shutdown: impl Future<Output = ()>, progress: watch::Sender<Progress>) {
        let mut acks = self.acks_rx.take().expect("run once");
        let (control_tx, mut control) = mpsc::unbounded_channel();
        self.mqtt.subscribe(self.topics.control.clone(), control_tx);
        let mut connected = self.mqtt.connected();
        let up = *connected.borrow_and_update();
        self.engine.set_connected(up, now());
        self.publish_timer_now();
        let status = StatusMessage::new(
            self.id(),
            State::Initialized,
            "state_changed",
            ExerciseSeconds::ZERO,
            OffsetDateTime::now_utc(),
        );
        self.publish_status(&status);
        if self.options.wait_for_start {
            info!(exercise_id = %self.id(), topic = %self.topics.control, "waiting for a start command");
        } else {
            self.command(Command::Start, None);
        }
        let mut monitoring = interval(self.options.monitoring_every);
        monitoring.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut shown = interval(Duration::from_millis(100));
        shown.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut shutting_down: Option<Instant> = None;
        // One precise sleep per deadline, kept across loop passes.
        let mut sleep: Option<(Instant, Wake)> = None;
        loop {
            self.flush();
            if self.engine.state().is_over() && self.engine.is_settled() {
                break;
            }
            let wake = self.engine.poll_timeout();
            if sleep.as_ref().map(|(at, _)| *at) != wake {
                sleep =
                    wake.map(|at| (at, Box::pin(timer::global().sleep_until(at)) as Pin<Box<_>>));
            }
            let give_up = shutting_down.map(|at| at + self.options.policy.timeout);
            tokio::select! {
                biased;
                () = &mut shutdown, if shutting_down.is_none() => {
                    shutting_down = Some(Instant::now());
                    self.shut_down();
                }
                () = sleep_until(give_up.unwrap_or_else(Instant::now)), if give_up.is_some() => {
                    self.engine.abandon("stopped before the broker acknowledged");
                    self.flush();
                    break;
                }
                () = async { sleep.as_mut().expect("guarded").1.as_mut().await }, if sleep.is_some() => {
                    sleep = None;
                    self.engine.handle_timeout(now());
                }
                Some(event) = acks.recv() => self.on_ack(event),
                Ok(()) = connected.changed() => {
                    let up = *connected.borrow_and_update();
                    self.engine.set_connected(up, now());
                }
                Some(message) = control.recv() => self.on_control(message),
                _ = monitoring.tick() => self.publish_monitoring(),
                _ = shown.tick() => {
                    // Counting every record is O(n): ten times a second, not per event.
                    let _ = progress.send(self.progress(*connected.borrow()));
                }
            }
        }
        self.publish_monitoring();
        let _ = progress.send(self.progress(*connected.borrow()));
    }

    /// Ctrl-C or SIGTERM: stop the exercise if it runs, give up on what waits.
    fn shut_down(&mut self) {
        info!(exercise_id = %self.id(), "shutdown requested");
        match self.engine.state() {
            State::Running | State::Paused => {
                self.command(Command::Stop, Some("orchestrator shut down".into()))
            }
            _ => self.engine.abandon("orchestrator shut down"),
        }
    }

    fn outcome(self) -> Outcome {
        Outcome {
            exercise_id: self.options.exercise_id.clone(),
            scenario: self.scenario,
            state: self.engine.state(),
            run: self.engine.run(),
            speed: self.options.speed,
            started_wall: self.started_wall,
            started_at: self.engine.started().map(|s| s.mono),
            records: self.engine.records().to_vec(),
            archived: self.engine.archived().to_vec(),
        }
    }

    fn progress(&self, connected: bool) -> Progress {
        let now = Instant::now();
        Progress {
            time: self.engine.exercise_time(now),
            total: self.engine.duration(),
            state: self.engine.state(),
            counts: self.engine.counts(),
            connected,
        }
    }

    fn command(&mut self, command: Command, reason: Option<String>) {
        match self.engine.handle_command(command, reason, now()) {
            Ok(_) => {}
            Err(refusal) => {
                warn!(exercise_id = %self.id(), %refusal, "command refused");
                let mut status = self.status_now("command_refused");
                status.command = Some(command.to_string());
                status.message = Some(refusal.to_string());
                self.publish_status(&status);
            }
        }
    }

    fn on_control(&mut self, message: Received) {
        if message.payload.is_empty() {
            // How MQTT clears a retained message: not a command.
            return;
        }
        if message.retain {
            warn!(exercise_id = %self.id(), "ignoring a retained message on the control topic: commands must be live");
            return;
        }
        match parse_control(&message.payload) {
            ControlInput::Command { command, reason } => {
                info!(exercise_id = %self.id(), %command, reason = reason.as_deref().unwrap_or(""), "control command");
                self.command(command, reason);
            }
            ControlInput::Announcement => {}
            ControlInput::Invalid(why) => {
                warn!(exercise_id = %self.id(), %why, "invalid control message");
                let mut status = self.status_now("invalid_command");
                status.message = Some(why);
                self.publish_status(&status);
            }
        }
    }

    fn on_ack(&mut self, event: AckEvent) {
        match event {
            AckEvent::Acked { tag, at } => {
                let tag = DeliveryTag::from_u64(tag);
                let wall_now = OffsetDateTime::now_utc();
                let now = Now {
                    mono: at,
                    wall: wall_now - Instant::now().saturating_duration_since(at),
                };
                let before = self.record(tag).map(|r| r.status);
                self.engine.on_acked(tag, now);
                if let Some(r) = self.record(tag)
                    && before != Some(r.status)
                {
                    let (team, inject) = self.names(r);
                    let latency_ms = r.latency.unwrap_or_default().as_secs_f64() * 1000.0;
                    info!(
                        exercise_id = %self.id(),
                        team_id = %team,
                        inject_id = %inject,
                        exercise_time = r.due.get(),
                        at = %r.due,
                        latency_ms = (latency_ms * 1000.0).round() / 1000.0,
                        attempt = tag.attempt,
                        late = r.late,
                        "inject delivered"
                    );
                }
            }
            AckEvent::Failed { tag, error } => {
                let tag = DeliveryTag::from_u64(tag);
                if let Some(r) = self.record(tag) {
                    let (team, inject) = self.names(r);
                    warn!(
                        exercise_id = %self.id(),
                        team_id = %team,
                        inject_id = %inject,
                        attempt = tag.attempt,
                        %error,
                        "delivery attempt failed"
                    );
                }
                self.engine.on_failed(tag, &error.to_string(), now());
            }
        }
    }

    fn record(&self, tag: DeliveryTag) -> Option<&DeliveryRecord> {
        if tag.run != self.engine.run() {
            return None;
        }
        self.engine.records().get(tag.slot as usize)
    }

    fn names(&self, r: &DeliveryRecord) -> (String, String) {
        let team = &self.scenario.teams[r.team];
        (
            team.id.to_string(),
            team.timeline.injects[r.inject].id.to_string(),
        )
    }

    /// Acts on everything the engine asked for, in order.
    fn flush(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Timer(t) => self.publish_json(
                    &self.topics.timer.clone(),
                    &TimerMessage::from(t),
                    QoS::AtMostOnce,
                    true,
                    None,
                ),
                Output::Deliver(tag) => self.deliver(tag),
                Output::StateChanged(t) => self.announce(t),
                Output::DeliveryFailed { slot } => {
                    let r = self.engine.records()[slot].clone();
                    let (team, inject) = self.names(&r);
                    error!(
                        exercise_id = %self.id(),
                        team_id = %team,
                        inject_id = %inject,
                        attempts = r.attempts,
                        error = r.last_error.as_deref().unwrap_or(""),
                        "delivery failed"
                    );
                    let mut status = self.status_now("delivery_failed");
                    status.team_id = Some(team);
                    status.inject_id = Some(inject);
                    status.message = r.last_error.clone();
                    self.publish_status(&status);
                    self.publish_monitoring();
                }
            }
        }
    }

    fn deliver(&mut self, tag: DeliveryTag) {
        let record = &self.engine.records()[tag.slot as usize];
        let payload = self.templates[tag.slot as usize].render(OffsetDateTime::now_utc());
        self.mqtt.publish(Message {
            topic: self.feeds[record.team].clone(),
            payload,
            qos: self.options.feed_qos,
            retain: false,
            ack: Some(AckTo {
                tag: tag.to_u64(),
                to: self.acks.clone(),
            }),
        });
    }

    fn announce(&mut self, t: Transition) {
        let wall = OffsetDateTime::now_utc();
        if t.to == State::Running && t.from == State::Initialized {
            self.started_wall = Some(wall);
        }
        info!(
            exercise_id = %self.id(),
            from = %t.from,
            to = %t.to,
            at = %t.at,
            reason = t.reason.as_deref().unwrap_or(""),
            "exercise {}", t.to
        );
        let mut status = StatusMessage::new(self.id(), t.to, "state_changed", t.at, wall);
        status.previous = Some(t.from.as_str());
        status.command = t.command.map(|c| c.to_string());
        status.reason = t.reason.clone();
        self.publish_status(&status);
        let announcement = Announcement {
            command: t
                .command
                .map_or_else(|| "complete".to_owned(), |c| c.to_string()),
            timestamp: timestamp(wall),
            reason: t.reason,
            source: ANNOUNCEMENT_SOURCE,
            state: t.to.as_str(),
            exercise_time: t.at.get(),
        };
        self.publish_json(
            &self.topics.control.clone(),
            &announcement,
            QoS::AtLeastOnce,
            false,
            None,
        );
    }

    fn status_now(&self, event: &'static str) -> StatusMessage {
        StatusMessage::new(
            self.id(),
            self.engine.state(),
            event,
            self.engine.exercise_time(Instant::now()),
            OffsetDateTime::now_utc(),
        )
    }

    fn publish_status(&self, status: &StatusMessage) {
        self.publish_json(&self.topics.status, status, QoS::AtLeastOnce, true, None);
    }

    fn publish_timer_now(&self) {
        let t = TimerMessage::from(self.engine.timer(Instant::now()));
        self.publish_json(&self.topics.timer, &t, QoS::AtMostOnce, true, None);
    }

    fn publish_monitoring(&self) {
        let m = MonitoringMessage::new(
            self.id(),
            self.engine.state(),
            &self.engine.counts(),
            self.engine.exercise_time(Instant::now()),
            OffsetDateTime::now_utc(),
        );
        self.publish_json(&self.topics.monitoring, &m, QoS::AtLeastOnce, true, None);
    }

    fn publish_json(
        &self,
        topic: &str,
        body: &impl serde::Serialize,
        qos: QoS,
        retain: bool,
        ack: Option<AckTo>,
    ) {
        let payload = serde_json::to_vec(body).expect("wire types serialize");
        self.mqtt.publish(Message {
            topic: topic.to_owned(),
            payload,
            qos,
            retain,
            ack,
        });
    }
}

/// A pending precise wake-up.
type Wake = Pin<Box<dyn Future<Output = ()> + Send>>;

fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: OffsetDateTime::now_utc(),
    }
}
