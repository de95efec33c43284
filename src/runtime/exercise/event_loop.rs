//! The actor's event loop: deadlines, acknowledgements, the connection,
//! the control topic, requests and shutdown, until the actor ends.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until};
use tracing::{info, warn};

use super::{Actor, CONTROL_QUEUE, Outcome, Request, Snapshot, now};
use crate::core::{Command, Counts, DeliveryRecord, DeliveryTag, Now, State};
use crate::mqtt::AckEvent;
use crate::runtime::timer::Wake;

impl Actor {
    /// Runs the exercise: applies `start` at once if asked, then serves
    /// events until it is over (with `exit_when_over`), `shutdown` resolves
    /// or the request channel closes.
    pub async fn run(
        mut self,
        start: bool,
        mut requests: mpsc::Receiver<Request>,
        shutdown: impl Future<Output = ()>,
    ) -> Outcome {
        let mut acks = self.acks_rx.take().expect("run once");
        let (control_tx, mut control) = mpsc::channel(CONTROL_QUEUE);
        self.mqtt.subscribe(self.topics.control.clone(), control_tx);
        let (responses_tx, mut responses) = mpsc::channel(CONTROL_QUEUE);
        self.mqtt
            .subscribe(self.topics.team_responses.clone(), responses_tx.clone());
        // Posts share the queue: the topic tells them apart.
        self.mqtt
            .subscribe(self.topics.team_posts.clone(), responses_tx);
        let mut connected = self.mqtt.connected();
        let up = *connected.borrow_and_update();
        self.engine.set_connected(up && self.trusted(), now());
        let mut trust = self.options.trust.as_ref().map(|t| t.watch());
        self.publish_timer_now();
        let status = self.status_now("state_changed");
        self.publish_status(&status);
        if start {
            self.command(Command::Start, None, "start-up".into(), None);
        } else if self.engine.state() == State::Initialized {
            info!(exercise_id = %self.id(), topic = %self.topics.control, "waiting for a start command");
        }
        let mut monitoring = interval(self.options.monitoring_every);
        monitoring.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut shown = interval(Duration::from_millis(250));
        shown.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut shutting_down: Option<Instant> = None;
        let mut requests_open = true;
        // One sleep per deadline, kept across loop passes.
        let mut sleep: Option<(Instant, Wake)> = None;
        // Set by the branches that change nothing, so counts can be reused.
        let mut quiet = false;
        loop {
            if !quiet {
                self.counts = None;
            }
            self.flush();
            if !quiet && self.engine.state() != State::Running {
                // Not running, the clock stands still: refresh on events only.
                self.publish_snapshot(*connected.borrow());
            }
            quiet = false;
            if self.options.exit_when_over
                && self.engine.state().is_over()
                && self.engine.is_settled()
            {
                break;
            }
            // `serve` stops without touching the exercise, but only once every
            // attempt in flight is confirmed and recorded: otherwise the next
            // start would send again what the broker already has.
            if shutting_down.is_some() && !self.options.exit_when_over && !self.engine.in_flight() {
                break;
            }
            // While `serve` drains, nothing new goes out: what comes due waits
            // for the next start.
            let clock_runs = shutting_down.is_none() || self.options.exit_when_over;
            let wake = self.engine.poll_timeout();
            if sleep.as_ref().map(|(at, _)| *at) != wake {
                sleep = wake.map(|at| (at, self.options.sleeper.sleep_until(at)));
            }
            let give_up = shutting_down.map(|at| at + self.options.policy.timeout);
            tokio::select! {
                biased;
                () = &mut shutdown, if shutting_down.is_none() => {
                    shutting_down = Some(Instant::now());
                    if self.options.exit_when_over {
                        self.shut_down();
                    }
                }
                () = sleep_until(give_up.unwrap_or_else(Instant::now)), if give_up.is_some() => {
                    if self.options.exit_when_over {
                        self.engine.abandon("stopped before the broker acknowledged");
                        self.mark_all_dirty();
                        self.flush();
                    } else {
                        warn!(exercise_id = %self.id(), "stopping with acknowledgements outstanding: those injects go out again at the next start");
                    }
                    break;
                }
                () = async { sleep.as_mut().expect("guarded").1.as_mut().await }, if sleep.is_some() && clock_runs => {
                    sleep = None;
                    self.check_trust(*connected.borrow());
                    self.engine.handle_timeout(now());
                }
                Some(event) = acks.recv() => {
                    self.on_ack(event);
                    // Take every acknowledgement already here in one pass.
                    while let Ok(event) = acks.try_recv() {
                        self.on_ack(event);
                    }
                }
                Ok(()) = connected.changed() => {
                    let up = *connected.borrow_and_update();
                    self.engine.set_connected(up && self.trusted(), now());
                }
                Ok(()) = async { trust.as_mut().expect("guarded").changed().await }, if trust.is_some() => {
                    // The window moved (a renewal) or closed.
                    let up = *connected.borrow();
                    self.engine.set_connected(up && self.trusted(), now());
                }
                Some(message) = control.recv(), if clock_runs => {
                    self.check_trust(*connected.borrow());
                    self.on_control(message);
                    self.counts = None;
                    self.publish_snapshot(*connected.borrow());
                }
                Some(message) = responses.recv(), if clock_runs && !self.closing => {
                    self.check_trust(*connected.borrow());
                    if self.topics.posting_team(&message.topic).is_some() {
                        self.on_mqtt_post(message);
                    } else {
                        self.on_mqtt_response(message);
                    }
                    self.counts = None;
                    self.publish_snapshot(*connected.borrow());
                }
                request = requests.recv(), if requests_open => match request {
                    Some(request) => {
                        self.check_trust(*connected.borrow());
                        self.on_request(request);
                        if self.closed {
                            return self.outcome();
                        }
                        // Readers of the snapshot see the change at once.
                        self.counts = None;
                        self.publish_snapshot(*connected.borrow());
                    }
                    None => {
                        requests_open = false;
                        if !self.options.exit_when_over {
                            break;
                        }
                    }
                },
                _ = monitoring.tick() => {
                    self.publish_monitoring();
                    quiet = true;
                }
                _ = shown.tick(), if self.engine.state() == State::Running => {
                    self.publish_snapshot(*connected.borrow());
                    quiet = true;
                }
            }
        }
        self.counts = None;
        self.flush();
        self.publish_monitoring();
        self.publish_snapshot(*connected.borrow());
        self.outcome()
    }

    /// Ctrl-C or SIGTERM under `run`: stop the exercise if it runs, give up
    /// on what waits.
    fn shut_down(&mut self) {
        info!(exercise_id = %self.id(), "shutdown requested");
        match self.engine.state() {
            State::Running | State::Paused => self.command(
                Command::Stop,
                Some("orchestrator shut down".into()),
                "signal".into(),
                None,
            ),
            _ => {
                self.engine.abandon("orchestrator shut down");
                self.mark_all_dirty();
            }
        }
    }

    fn outcome(self) -> Outcome {
        let names = self
            .entries
            .iter()
            .map(|e| {
                (
                    self.scenario.teams[e.team].id.to_string(),
                    e.inject().id.to_string(),
                    e.inject().kind.clone(),
                )
            })
            .collect();
        Outcome {
            exercise_id: self.options.exercise_id.clone(),
            scenario: self.scenario,
            state: self.engine.state(),
            run: self.engine.run(),
            speed: self.options.speed,
            started_wall: self.engine.started().map(|s| s.wall),
            started_at: self.engine.started().map(|s| s.mono),
            records: self.engine.records().to_vec(),
            names,
            archived: self.engine.archived().to_vec(),
        }
    }

    /// Whether this node may act on the exercise now: always on one node;
    /// on several, while its trust window is open.
    pub(super) fn trusted(&self) -> bool {
        self.options.trust.as_ref().is_none_or(|t| t.holds())
    }

    /// Before anything may go out: a trust window that closed while the
    /// actor waited (a frozen process that woke, a renewal that hangs)
    /// holds the injects back at once, as a lost broker does.
    /// One node (no trust): nothing to do, the connection alone decides.
    fn check_trust(&mut self, broker_up: bool) {
        if self.options.trust.is_none() {
            return;
        }
        let up = broker_up && self.trusted();
        if up != self.engine.is_connected() {
            self.engine.set_connected(up, now());
        }
    }

    fn publish_snapshot(&mut self, connected: bool) {
        let now = Instant::now();
        // Counting every record is O(n): ten times a second, not per event.
        let (counts, teams) = self.counts_now();
        self.snapshot.send_replace(Snapshot {
            id: self.options.exercise_id.clone(),
            time: self.engine.exercise_time(now),
            total: self.engine.duration(),
            state: self.engine.state(),
            run: self.engine.run(),
            speed: self.options.speed,
            counts,
            teams,
            connected,
            turn: self.engine.turn(),
        });
    }

    /// The counts overall and by team, counted again only when a record
    /// may have changed since.
    pub(super) fn counts_now(&mut self) -> (Counts, Arc<Vec<Counts>>) {
        let teams = self.scenario.teams.len();
        let engine = &self.engine;
        self.counts
            .get_or_insert_with(|| {
                let by_team = Counts::by_team(engine.records(), teams);
                (engine.counts(), Arc::new(by_team))
            })
            .clone()
    }

    fn on_ack(&mut self, event: AckEvent) {
        match event {
            AckEvent::Acked { tag, at } => {
                let tag = DeliveryTag::from_u64(tag);
                let now = Now {
                    mono: at,
                    wall: OffsetDateTime::now_utc() - Instant::now().saturating_duration_since(at),
                };
                let before = self.record(tag).map(|r| r.status);
                self.engine.on_acked(tag, now);
                if let Some(r) = self.record(tag)
                    && before != Some(r.status)
                {
                    let (team, inject) = self.names(tag.slot as usize);
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
                    metrics::counter!("scip_deliveries_total", "status" => "delivered")
                        .increment(1);
                    metrics::histogram!("scip_delivery_latency_seconds")
                        .record(r.latency.unwrap_or_default().as_secs_f64());
                    self.dirty.push(tag.slot as usize);
                }
            }
            AckEvent::Failed { tag, error } => {
                metrics::counter!("scip_delivery_attempts_failed_total").increment(1);
                let tag = DeliveryTag::from_u64(tag);
                if self.record(tag).is_some() {
                    let (team, inject) = self.names(tag.slot as usize);
                    warn!(
                        exercise_id = %self.id(),
                        team_id = %team,
                        inject_id = %inject,
                        attempt = tag.attempt,
                        %error,
                        "delivery attempt failed"
                    );
                    self.dirty.push(tag.slot as usize);
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

    pub(super) fn names(&self, slot: usize) -> (String, String) {
        let e = &self.entries[slot];
        (
            self.scenario.teams[e.team].id.to_string(),
            e.inject().id.to_string(),
        )
    }
}
