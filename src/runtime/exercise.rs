//! The actor of one exercise: owns its engine, the real clock and its
//! channels; turns the engine's outputs into MQTT messages, journal entries
//! and log lines; answers controllers' requests.
//!
//! `run` (one exercise in the foreground) and `serve` (many, persisted) both
//! use it; they differ in the [`Journal`] (publish directly, or store first)
//! and in whether the actor ends when the exercise is over.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until};
use tracing::{error, info, warn};

use crate::access::ratelimit::RateLimit;
use crate::config::DeliveryPolicy;
use crate::core::engine::{ArchivedRun, EditError, SeekMode};
use crate::core::{
    Command, Counts, DeliveryRecord, DeliveryTag, Engine, Now, Output, Refusal, State, Transition,
};
use crate::domain::{ExerciseId, ExerciseSeconds, InjectId, Speed};
use crate::mqtt::wire::{
    ANNOUNCEMENT_SOURCE, Announcement, ControlInput, FeedTemplate, MonitoringMessage,
    StatusMessage, TimerMessage, Topics, parse_control, timestamp,
};
use crate::mqtt::{AckEvent, AckTo, Message, Mqtt, Received};
use crate::runtime::journal::{Journal, JournalEntry, JournalError};
use crate::runtime::live::{FeedItem, LIVE_BUFFER, Live, LiveClock, Presence, Watch};
use crate::runtime::timer::{Sleeper, Wake};
use crate::scenario::{Inject, Scenario, Timeline};
use crate::store::{ClockRow, ControlRow, DeliveryRow};

/// Control-topic messages waiting for the actor; more are dropped (counted in
/// `scip_mqtt_received_dropped_total`): a flood is refused before it queues.
pub const CONTROL_QUEUE: usize = 64;
/// Controllers' requests waiting for the actor; a caller waits for room.
pub const REQUEST_QUEUE: usize = 256;

/// How to run one exercise.
#[derive(Debug, Clone)]
pub struct Options {
    pub exercise_id: ExerciseId,
    /// Exercise seconds per wall second.
    pub speed: Speed,
    pub policy: DeliveryPolicy,
    pub feed_qos: QoS,
    pub monitoring_every: Duration,
    /// Commands accepted per minute on the control topic.
    pub max_commands_per_minute: u32,
    /// End the actor once the exercise is over and every delivery settled
    /// (`run`); otherwise it lives until shut down (`serve`).
    pub exit_when_over: bool,
    /// What the actor waits on for its deadlines: the precise timer, or
    /// tokio's (paused) clock in tests.
    pub sleeper: Sleeper,
}

/// Where an exercise stands, as controllers and progress displays see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub id: ExerciseId,
    pub time: ExerciseSeconds,
    pub total: ExerciseSeconds,
    pub state: State,
    pub run: u16,
    pub speed: Speed,
    pub counts: Counts,
    pub connected: bool,
    /// Turn-based exercises: the turn under way (or just over) and how many.
    pub turn: Option<(u16, u16)>,
}

/// What an exercise leaves behind when its actor ends.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub exercise_id: ExerciseId,
    pub scenario: Arc<Scenario>,
    pub state: State,
    pub run: u16,
    pub speed: Speed,
    pub started_wall: Option<OffsetDateTime>,
    /// The monotonic instant of the (last) start: exercise second n was due
    /// at `started_at + n / speed` plus any time paused.
    pub started_at: Option<Instant>,
    pub records: Vec<DeliveryRecord>,
    /// Team id and inject id of each record, by slot.
    pub names: Vec<(String, String, String)>,
    pub archived: Vec<ArchivedRun>,
}

/// One delivery record as the API shows it.
#[derive(Debug, Clone)]
pub struct DeliveryView {
    pub team_id: String,
    pub inject_id: String,
    pub kind: String,
    pub record: DeliveryRecord,
    pub live: bool,
}

/// Why a controller's request was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the exercise is shutting down")]
    Gone,
    /// Done, but not stored (yet): held and written again.
    #[error(transparent)]
    Unstored(#[from] JournalError),
}

/// Which delivery a request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryKey {
    pub team_id: String,
    pub inject_id: String,
}

type Reply<T> = oneshot::Sender<Result<T, RequestError>>;

/// What controllers can ask of a running exercise actor.
pub enum Request {
    Control {
        command: Command,
        reason: Option<String>,
        source: String,
        reply: Reply<Transition>,
    },
    Deliveries {
        reply: Reply<Vec<DeliveryView>>,
    },
    Retry {
        key: Option<DeliveryKey>,
        reply: Reply<usize>,
    },
    Send {
        teams: Vec<String>,
        inject: Inject,
        at: Option<ExerciseSeconds>,
        reply: Reply<usize>,
    },
    Cancel {
        key: DeliveryKey,
        reply: Reply<()>,
    },
    Reschedule {
        key: DeliveryKey,
        at: ExerciseSeconds,
        reply: Reply<()>,
    },
    Seek {
        to: ExerciseSeconds,
        mode: SeekMode,
        reply: Reply<usize>,
    },
    /// Follow the exercise live: a team's feed (`team` Some) or every
    /// delivery (None).
    Watch {
        team: Option<usize>,
        reply: Reply<Watch>,
    },
    /// Make ready to delete the exercise: refused while it is running or
    /// paused; answered once its writes are stored. From then on it takes no
    /// command or edit, until `End` or `Reopen`.
    Close {
        reply: Reply<()>,
    },
    /// The exercise was not deleted after all: take commands again.
    Reopen {
        reply: Reply<()>,
    },
    /// The exercise is deleted: clear its retained topics and end the actor,
    /// writing nothing more.
    End {
        reply: Reply<()>,
    },
    /// A team dashboard showed these injects of `run`; answers how many
    /// receipts were new.
    Receipts {
        team: usize,
        run: u16,
        inject_ids: Vec<String>,
        reply: Reply<usize>,
    },
}

/// One (team, inject) of the current run, by slot. Small: the inject and its
/// feed template are shared with every team and run that has it.
#[derive(Debug, Clone)]
struct Entry {
    team: usize,
    source: Source,
    /// Sent live by a controller (not in the scenario).
    live: bool,
}

#[derive(Debug, Clone)]
enum Source {
    /// Inject `index` of a scenario timeline, with the timeline's templates.
    Timeline {
        timeline: Arc<Timeline>,
        templates: Arc<[FeedTemplate]>,
        index: usize,
    },
    /// An inject of its own: sent live, or rescheduled.
    Own {
        inject: Arc<Inject>,
        template: Arc<FeedTemplate>,
    },
}

impl Entry {
    fn own(team: usize, inject: Inject, live: bool) -> Self {
        Self {
            team,
            source: Source::Own {
                template: Arc::new(FeedTemplate::new(&inject)),
                inject: Arc::new(inject),
            },
            live,
        }
    }

    fn inject(&self) -> &Inject {
        match &self.source {
            Source::Timeline {
                timeline, index, ..
            } => &timeline.injects[*index],
            Source::Own { inject, .. } => inject,
        }
    }

    fn template(&self) -> &FeedTemplate {
        match &self.source {
            Source::Timeline {
                templates, index, ..
            } => &templates[*index],
            Source::Own { template, .. } => template,
        }
    }
}

/// The scenario's entries, by slot: team by team, each timeline's injects in
/// order; one set of templates per distinct timeline.
fn scenario_entries(scenario: &Scenario) -> Vec<Entry> {
    let mut templates: Vec<(*const Timeline, Arc<[FeedTemplate]>)> = Vec::new();
    let mut out = Vec::new();
    for (team, t) in scenario.teams.iter().enumerate() {
        let key = Arc::as_ptr(&t.timeline);
        let shared = match templates.iter().find(|(k, _)| *k == key) {
            Some((_, shared)) => shared.clone(),
            None => {
                // A feed message says when the inject was due on the
                // exercise clock: in a turn-based scenario, after its turn's start.
                let made: Arc<[FeedTemplate]> = t
                    .timeline
                    .injects
                    .iter()
                    .map(|i| match scenario.turns {
                        Some(_) => FeedTemplate::new(&Inject {
                            time: scenario.due(i),
                            ..i.clone()
                        }),
                        None => FeedTemplate::new(i),
                    })
                    .collect();
                templates.push((key, made.clone()));
                made
            }
        };
        out.extend((0..t.timeline.injects.len()).map(|index| Entry {
            team,
            source: Source::Timeline {
                timeline: t.timeline.clone(),
                templates: shared.clone(),
                index,
            },
            live: false,
        }));
    }
    out
}

/// The exercise actor.
pub struct Actor {
    scenario: Arc<Scenario>,
    options: Options,
    mqtt: Mqtt,
    journal: Journal,
    engine: Engine,
    topics: Topics,
    feeds: Vec<String>,
    /// The scenario's entries; every run starts from these.
    base: Vec<Entry>,
    /// This run's entries, by slot: the base plus injects added live.
    entries: Vec<Entry>,
    acks: mpsc::UnboundedSender<AckEvent>,
    acks_rx: Option<mpsc::UnboundedReceiver<AckEvent>>,
    snapshot: watch::Sender<Snapshot>,
    /// Records changed since they were last journaled.
    dirty: Vec<usize>,
    dirty_all: bool,
    clock_dirty: bool,
    /// The counts of the last snapshot, while no record has changed since.
    counts: Option<Counts>,
    /// Followers: dashboards and control rooms.
    live: broadcast::Sender<Live>,
    presence: Arc<Presence>,
    /// Why the exercise last paused or stopped, for dashboards' banners.
    last_reason: Option<String>,
    /// Commands on the control topic (whoever sends them).
    control_rate: RateLimit,
    /// Reports of refused and invalid control messages.
    report_rate: RateLimit,
    /// Refused or invalid control messages not reported since the last report.
    unreported: u64,
    /// Being deleted: no command or edit is taken.
    closing: bool,
    /// Deleted: the loop ends, nothing more is written.
    closed: bool,
}

impl Actor {
    /// An initialized exercise.
    pub fn new(scenario: Arc<Scenario>, options: Options, mqtt: Mqtt, journal: Journal) -> Self {
        let engine = Engine::new(&scenario, options.speed, options.policy);
        Self::restored(scenario, options, mqtt, journal, engine, Vec::new())
    }

    /// An exercise rebuilt after a restart; `live` are the injects added
    /// during the run, by slot beyond the scenario's own.
    pub fn restored(
        scenario: Arc<Scenario>,
        options: Options,
        mqtt: Mqtt,
        journal: Journal,
        engine: Engine,
        live: Vec<(usize, Inject)>,
    ) -> Self {
        let id = options.exercise_id.clone();
        let topics = Topics::new(&id);
        let feeds = scenario.teams.iter().map(|t| topics.feed(&t.id)).collect();
        let base = scenario_entries(&scenario);
        let mut entries = base.clone();
        entries.extend(
            live.into_iter()
                .map(|(team, inject)| Entry::own(team, inject, true)),
        );
        // Bounded by what this actor publishes (see `mqtt::AckTo`).
        let (acks, acks_rx) = mpsc::unbounded_channel();
        let presence = Presence::new(scenario.teams.len());
        let control_rate = RateLimit::per_minute(options.max_commands_per_minute);
        let report_rate = RateLimit::per_minute(options.max_commands_per_minute);
        let snapshot = watch::channel(Snapshot {
            id: id.clone(),
            time: engine.exercise_time(Instant::now()),
            total: engine.duration(),
            state: engine.state(),
            run: engine.run(),
            speed: options.speed,
            counts: engine.counts(),
            connected: false,
            turn: engine.turn(),
        })
        .0;
        Self {
            scenario,
            options,
            mqtt,
            journal,
            engine,
            topics,
            feeds,
            base,
            entries,
            acks,
            acks_rx: Some(acks_rx),
            snapshot,
            dirty: Vec::new(),
            dirty_all: false,
            clock_dirty: false,
            counts: None,
            live: broadcast::channel(LIVE_BUFFER).0,
            presence,
            last_reason: None,
            control_rate,
            report_rate,
            unreported: 0,
            closing: false,
            closed: false,
        }
    }

    pub fn id(&self) -> &ExerciseId {
        &self.options.exercise_id
    }

    /// Follows the exercise's state: four times a second while running, and on
    /// every event.
    pub fn snapshots(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.subscribe()
    }

    /// The dashboards open on this exercise, by team.
    pub fn presence(&self) -> Arc<Presence> {
        self.presence.clone()
    }

    /// The delivery rows of the current run, as they stand (for the store).
    pub fn delivery_rows(&self) -> Vec<DeliveryRow> {
        (0..self.engine.records().len())
            .map(|slot| self.row(slot))
            .collect()
    }

    /// The clock as stored values.
    pub fn clock_row(&self, now: Now) -> ClockRow {
        clock_row(&self.engine, now)
    }

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
        let mut connected = self.mqtt.connected();
        let up = *connected.borrow_and_update();
        self.engine.set_connected(up, now());
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
                    self.engine.set_connected(up, now());
                }
                Some(message) = control.recv(), if clock_runs => {
                    self.on_control(message);
                    self.counts = None;
                    self.publish_snapshot(*connected.borrow());
                }
                request = requests.recv(), if requests_open => match request {
                    Some(request) => {
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

    fn publish_snapshot(&mut self, connected: bool) {
        let now = Instant::now();
        let counts = *self.counts.get_or_insert_with(|| self.engine.counts());
        // Counting every record is O(n): ten times a second, not per event.
        self.snapshot.send_replace(Snapshot {
            id: self.options.exercise_id.clone(),
            time: self.engine.exercise_time(now),
            total: self.engine.duration(),
            state: self.engine.state(),
            run: self.engine.run(),
            speed: self.options.speed,
            counts,
            connected,
            turn: self.engine.turn(),
        });
    }

    /// Applies a command from the control topic, the API or a signal; the
    /// audit row and new state are journaled before anything is announced.
    fn command(
        &mut self,
        command: Command,
        reason: Option<String>,
        source: String,
        reply: Option<Reply<Transition>>,
    ) {
        let now = now();
        let run_before = self.engine.run();
        let result = self.engine.handle_command(command, reason.clone(), now);
        let audit = ControlRow {
            id: 0,
            exercise_id: self.id().to_string(),
            at_wall_ms: wall_ms(now.wall),
            command: command.to_string(),
            reason,
            source,
            accepted: result.is_ok(),
            message: result.as_ref().err().map(|r| r.to_string()),
        };
        self.journal.write(JournalEntry::Control(audit));
        match &result {
            Ok(_) => {
                if self.engine.run() != run_before {
                    // A reset: the new run's records are stored fresh.
                    self.entries = self.base.clone();
                    self.dirty.clear();
                    self.dirty_all = false;
                    self.journal.write(JournalEntry::NewRun {
                        exercise_id: self.id().to_string(),
                        rows: self.delivery_rows(),
                    });
                    self.emit(|| Live::Reload);
                } else if command == Command::Stop {
                    self.mark_all_dirty();
                }
                self.clock_dirty = true;
            }
            Err(refusal) => {
                warn!(exercise_id = %self.id(), %refusal, "command refused");
                let mut status = self.status_now("command_refused");
                status.command = Some(command.to_string());
                status.message = Some(refusal.to_string());
                self.publish_status(&status);
            }
        }
        if let Some(reply) = reply {
            // Answered once what it did is stored: a command that is not is
            // not confirmed (it stands, and is stored once the store takes it).
            self.sync_journal();
            self.journal.reply(move |stored| {
                let _ = reply.send(
                    stored
                        .map_err(RequestError::from)
                        .and(result.map_err(RequestError::from)),
                );
            });
        }
    }

    fn on_request(&mut self, request: Request) {
        let now = now();
        let request = match request {
            Request::Control { reply, .. } if self.closing => {
                let _ = reply.send(Err(self.being_deleted()));
                return;
            }
            Request::Cancel { reply, .. } | Request::Reschedule { reply, .. } if self.closing => {
                let _ = reply.send(Err(self.being_deleted()));
                return;
            }
            Request::Retry { reply, .. }
            | Request::Send { reply, .. }
            | Request::Seek { reply, .. }
            | Request::Receipts { reply, .. }
                if self.closing =>
            {
                let _ = reply.send(Err(self.being_deleted()));
                return;
            }
            other => other,
        };
        match request {
            Request::Control {
                command,
                reason,
                source,
                reply,
            } => self.command(command, reason, source, Some(reply)),
            Request::Deliveries { reply } => {
                let _ = reply.send(Ok(self.views()));
            }
            Request::Retry { key, reply } => {
                let result = match key {
                    Some(key) => self
                        .slot(&key)
                        .and_then(|slot| self.engine.retry(slot, now).map_err(Into::into))
                        .map(|()| 1),
                    None => self.engine.retry_all_failed(now).map_err(Into::into),
                };
                self.answer(result, reply);
            }
            Request::Send {
                teams,
                inject,
                at,
                reply,
            } => {
                let result = self.send(teams, inject, at, now);
                self.answer(result, reply);
            }
            Request::Cancel { key, reply } => {
                let result = self
                    .slot(&key)
                    .and_then(|slot| self.engine.cancel(slot).map_err(Into::into));
                self.answer(result, reply);
            }
            Request::Reschedule { key, at, reply } => {
                let result = self.slot(&key).and_then(|slot| {
                    self.engine
                        .reschedule(slot, at, now)
                        .map_err(Into::into)
                        .map(|()| self.retime(slot, at))
                });
                self.answer(result, reply);
            }
            Request::Close { reply } => {
                let state = self.engine.state();
                if matches!(state, State::Running | State::Paused) {
                    let _ = reply.send(Err(RequestError::Conflict(format!(
                        "exercise {} is {state}: stop it before deleting it",
                        self.id()
                    ))));
                    return;
                }
                self.flush();
                self.closing = true;
                self.journal.reply(move |stored| {
                    let _ = reply.send(stored.map_err(RequestError::from));
                });
            }
            Request::Reopen { reply } => {
                self.closing = false;
                let _ = reply.send(Ok(()));
            }
            Request::End { reply } => {
                for topic in [
                    &self.topics.timer,
                    &self.topics.status,
                    &self.topics.monitoring,
                ] {
                    // An empty retained message clears the topic; after
                    // everything the exercise announced, held or not.
                    self.journal.publish(Message {
                        topic: topic.clone(),
                        payload: Vec::new(),
                        qos: QoS::AtLeastOnce,
                        retain: true,
                        ack: None,
                    });
                }
                self.closed = true;
                let _ = reply.send(Ok(()));
            }
            Request::Watch { team, reply } => {
                let _ = reply.send(Ok(self.watch(team)));
            }
            Request::Receipts {
                team,
                run,
                inject_ids,
                reply,
            } => {
                let result = self.receipts(team, run, &inject_ids, now);
                // Answered once stored, without rewriting every record.
                self.flush();
                self.journal.reply(move |stored| {
                    let _ = reply.send(stored.map_err(RequestError::from).and(result));
                });
            }
            Request::Seek { to, mode, reply } => {
                let result = self.engine.seek(to, mode, now).map_err(RequestError::from);
                if result.is_ok() {
                    self.mark_all_dirty();
                    self.clock_dirty = true;
                }
                self.answer(result, reply);
            }
        }
    }

    /// Replies once the request's effects are stored.
    fn answer<T: Send + 'static>(&mut self, result: Result<T, RequestError>, reply: Reply<T>) {
        if result.is_ok() {
            self.mark_all_dirty();
        }
        self.flush();
        self.journal.reply(move |stored| {
            let _ = reply.send(stored.map_err(RequestError::from).and(result));
        });
    }

    fn being_deleted(&self) -> RequestError {
        RequestError::Conflict(format!("exercise {} is being deleted", self.id()))
    }

    fn send(
        &mut self,
        teams: Vec<String>,
        inject: Inject,
        at: Option<ExerciseSeconds>,
        now: Now,
    ) -> Result<usize, RequestError> {
        if teams.is_empty() {
            return Err(RequestError::Invalid("name at least one team".into()));
        }
        let mut indices = Vec::new();
        for team in &teams {
            let index = self
                .scenario
                .teams
                .iter()
                .position(|t| t.id.as_str() == team)
                .ok_or_else(|| {
                    RequestError::NotFound(format!("no team {team:?} in this exercise"))
                })?;
            if self.slot_of(index, &inject.id).is_some() {
                return Err(RequestError::Conflict(format!(
                    "team {team:?} already has an inject {:?} in this run",
                    inject.id.as_str()
                )));
            }
            indices.push(index);
        }
        let mut inject = inject;
        // The feed message says when it was due: at T+x, or now.
        inject.time = at.unwrap_or_else(|| self.engine.exercise_time(now.mono));
        for team in indices {
            let slot = self.engine.add(team, self.entries.len(), at, now)?;
            debug_assert_eq!(slot, self.entries.len());
            self.entries.push(Entry::own(team, inject.clone(), true));
            self.journal.write(JournalEntry::NewRows {
                rows: vec![self.row(slot)],
            });
        }
        Ok(teams.len())
    }

    /// Where things stand for a new follower, and its subscription.
    fn watch(&self, team: Option<usize>) -> Watch {
        let events = self.live.subscribe();
        let (history, deliveries) = match team {
            Some(team) => {
                let mut sent: Vec<usize> = (0..self.entries.len())
                    .filter(|&slot| {
                        self.entries[slot].team == team
                            && self.engine.records()[slot].published_wall.is_some()
                    })
                    .collect();
                sent.sort_by_key(|&slot| (self.engine.records()[slot].due, slot));
                let items = sent.into_iter().map(|slot| Arc::new(self.feed_item(slot)));
                (items.collect(), Vec::new())
            }
            None => (Vec::new(), self.views()),
        };
        Watch {
            clock: Arc::new(self.live_clock(self.engine.timer(Instant::now()).into())),
            history,
            deliveries,
            events,
        }
    }

    fn receipts(
        &mut self,
        team: usize,
        run: u16,
        inject_ids: &[String],
        now: Now,
    ) -> Result<usize, RequestError> {
        if run != self.engine.run() {
            // A page still showing an earlier run: nothing of this run to confirm.
            return Ok(0);
        }
        let mut slots = Vec::with_capacity(inject_ids.len());
        for id in inject_ids {
            let inject = InjectId::parse(id)
                .map_err(|e| RequestError::Invalid(format!("inject_ids: {e}")))?;
            let slot = self.slot_of(team, &inject).ok_or_else(|| {
                RequestError::NotFound(format!(
                    "no inject {id:?} for team {:?} in this run",
                    self.scenario.teams[team].id.as_str()
                ))
            })?;
            slots.push(slot);
        }
        let mut recorded = 0;
        for slot in slots {
            if self.engine.on_received(slot, now.wall) {
                recorded += 1;
                self.dirty.push(slot);
                let latency = self.engine.records()[slot]
                    .receipt_latency
                    .unwrap_or_default();
                metrics::counter!("scip_receipts_total").increment(1);
                metrics::histogram!("scip_receipt_latency_seconds").record(latency.as_secs_f64());
            }
        }
        Ok(recorded)
    }

    /// The inject in `slot` as its team's feed got it (last publish time).
    fn feed_item(&self, slot: usize) -> FeedItem {
        let e = &self.entries[slot];
        let r = &self.engine.records()[slot];
        let at = r.published_wall.unwrap_or_else(OffsetDateTime::now_utc);
        let message = e.template().render(
            &self.scenario.teams[e.team].id,
            &self.options.exercise_id,
            at,
        );
        FeedItem {
            team: e.team,
            run: self.engine.run(),
            received: r.received_wall.is_some(),
            message: String::from_utf8(message).expect("rendered from strings"),
        }
    }

    fn live_clock(&self, timer: TimerMessage) -> LiveClock {
        let stopped = matches!(self.engine.state(), State::Paused | State::Stopped);
        LiveClock {
            timer,
            run: self.engine.run(),
            speed: self.options.speed.get(),
            turn: self.engine.turn().map(|(turn, _)| turn),
            total_turns: self.engine.turn().map(|(_, total)| total),
            reason: if stopped {
                self.last_reason.clone()
            } else {
                None
            },
        }
    }

    /// Sends to followers, building the event only when someone follows.
    fn emit(&self, event: impl FnOnce() -> Live) {
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(event());
        }
    }

    /// A rescheduled inject's feed message carries its new time.
    fn retime(&mut self, slot: usize, at: ExerciseSeconds) {
        let entry = &self.entries[slot];
        let mut inject = entry.inject().clone();
        inject.time = at;
        self.entries[slot] = Entry::own(entry.team, inject, entry.live);
        self.dirty.push(slot);
    }

    fn slot(&self, key: &DeliveryKey) -> Result<usize, RequestError> {
        let team = self
            .scenario
            .teams
            .iter()
            .position(|t| t.id.as_str() == key.team_id)
            .ok_or_else(|| {
                RequestError::NotFound(format!("no team {:?} in this exercise", key.team_id))
            })?;
        let inject =
            InjectId::parse(&key.inject_id).map_err(|e| RequestError::Invalid(e.to_string()))?;
        self.slot_of(team, &inject).ok_or_else(|| {
            RequestError::NotFound(format!(
                "no inject {:?} for team {:?} in this run",
                key.inject_id, key.team_id
            ))
        })
    }

    fn slot_of(&self, team: usize, inject: &InjectId) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.team == team && e.inject().id == *inject)
    }

    fn views(&self) -> Vec<DeliveryView> {
        (0..self.engine.records().len())
            .map(|slot| self.view(slot))
            .collect()
    }

    fn view(&self, slot: usize) -> DeliveryView {
        let e = &self.entries[slot];
        DeliveryView {
            team_id: self.scenario.teams[e.team].id.to_string(),
            inject_id: e.inject().id.to_string(),
            kind: e.inject().kind.clone(),
            record: self.engine.records()[slot].clone(),
            live: e.live,
        }
    }

    fn on_control(&mut self, message: Received) {
        if message.payload.is_empty() {
            // How MQTT clears a retained message: not a command.
            return;
        }
        if message.retain {
            if let Some(unreported) = self.may_report() {
                warn!(exercise_id = %self.id(), unreported, "ignoring a retained message on the control topic: commands must be live");
            }
            return;
        }
        match parse_control(&message.payload) {
            ControlInput::Command { command, reason } if self.closing => {
                let why = format!("exercise {} is being deleted", self.id());
                self.refuse_control(command, reason, why);
            }
            ControlInput::Command { command, reason } => {
                if let Err(wait) = self.control_rate.check("mqtt", Instant::now()) {
                    let why = format!(
                        "rate limited: more than {} commands a minute on the control topic; try again in {} s",
                        self.options.max_commands_per_minute,
                        wait.as_secs_f64().ceil()
                    );
                    self.refuse_control(command, reason, why);
                    return;
                }
                info!(exercise_id = %self.id(), %command, reason = reason.as_deref().unwrap_or(""), "control command");
                self.command(command, reason, "mqtt".into(), None);
            }
            ControlInput::Announcement => {}
            ControlInput::Invalid(why) => {
                let Some(unreported) = self.may_report() else {
                    return;
                };
                warn!(exercise_id = %self.id(), %why, unreported, "invalid control message");
                let mut status = self.status_now("invalid_command");
                status.message = Some(with_unreported(why, unreported));
                self.publish_status(&status);
            }
        }
    }

    /// A control-topic command not taken: logged, audited and reported on
    /// the status topic, within the report rate.
    fn refuse_control(&mut self, command: Command, reason: Option<String>, why: String) {
        let Some(unreported) = self.may_report() else {
            return;
        };
        warn!(exercise_id = %self.id(), %command, %why, unreported, "control command refused");
        let why = with_unreported(why, unreported);
        self.journal.write(JournalEntry::Control(ControlRow {
            id: 0,
            exercise_id: self.id().to_string(),
            at_wall_ms: wall_ms(OffsetDateTime::now_utc()),
            command: command.to_string(),
            reason,
            source: "mqtt".into(),
            accepted: false,
            message: Some(why.clone()),
        }));
        let mut status = self.status_now("command_refused");
        status.command = Some(command.to_string());
        status.message = Some(why);
        self.publish_status(&status);
    }

    /// Whether a refused or invalid control message may be reported one by
    /// one (log line, status message, audit row): no more often than
    /// commands are accepted, so a flood costs neither memory nor disk.
    /// Beyond that it is counted (`scip_control_reports_suppressed_total`),
    /// and the next report says how many went unreported: Some(that many).
    fn may_report(&mut self) -> Option<u64> {
        if self.report_rate.check("reports", Instant::now()).is_ok() {
            Some(std::mem::take(&mut self.unreported))
        } else {
            self.unreported += 1;
            metrics::counter!("scip_control_reports_suppressed_total").increment(1);
            None
        }
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

    fn names(&self, slot: usize) -> (String, String) {
        let e = &self.entries[slot];
        (
            self.scenario.teams[e.team].id.to_string(),
            e.inject().id.to_string(),
        )
    }

    fn mark_all_dirty(&mut self) {
        self.dirty_all = true;
    }

    /// Acts on everything the engine asked for, in order: feed messages go
    /// out at once (their timing matters, and a crash before their record is
    /// stored only means they are sent again); changed records and the clock
    /// are journaled, then announcements follow them.
    fn flush(&mut self) {
        let mut announcements = Vec::new();
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Deliver(tag) => {
                    self.deliver(tag);
                    self.dirty.push(tag.slot as usize);
                }
                // A tick announces nothing to store: straight out, on time.
                Output::Timer(t) if t.state == State::Running => {
                    if let Some(due) = self.engine.clock().deadline(t.current.get()) {
                        let late = Instant::now().saturating_duration_since(due);
                        metrics::histogram!("scip_timer_tick_lateness_seconds")
                            .record(late.as_secs_f64());
                    }
                    let timer = TimerMessage::from(t);
                    let payload = serde_json::to_vec(&timer).expect("wire types serialize");
                    self.emit(|| Live::Clock(Arc::new(self.live_clock(timer))));
                    self.mqtt.publish(Message {
                        topic: self.topics.timer.clone(),
                        payload,
                        qos: QoS::AtMostOnce,
                        retain: true,
                        ack: None,
                    });
                }
                other => announcements.push(other),
            }
        }
        if !announcements.is_empty() {
            self.clock_dirty = true;
        }
        self.sync_journal();
        for output in announcements {
            match output {
                Output::Timer(t) => {
                    let topic = self.topics.timer.clone();
                    let timer = TimerMessage::from(t);
                    self.publish_json(&topic, &timer, QoS::AtMostOnce, true);
                    self.emit(|| Live::Clock(Arc::new(self.live_clock(timer))));
                }
                Output::StateChanged(t) => {
                    self.last_reason = t.reason.clone();
                    self.announce(t);
                }
                Output::DeliveryFailed { slot } => {
                    metrics::counter!("scip_deliveries_total", "status" => "failed").increment(1);
                    let r = self.engine.records()[slot].clone();
                    let (team, inject) = self.names(slot);
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
                Output::Deliver(_) => unreachable!("sent above"),
            }
        }
    }

    /// Tells followers which records changed since the last call.
    fn emit_changes(&mut self) {
        if self.live.receiver_count() == 0 {
            return;
        }
        if self.dirty_all {
            let _ = self.live.send(Live::Reload);
            return;
        }
        self.dirty.sort_unstable();
        self.dirty.dedup();
        for &slot in &self.dirty {
            let view = self.view(slot);
            let _ = self.live.send(Live::Delivery(Arc::new(view)));
        }
    }

    /// Journals the clock and the records changed since the last call.
    fn sync_journal(&mut self) {
        if !self.journal.is_stored() {
            self.emit_changes();
            self.dirty.clear();
            self.dirty_all = false;
            self.clock_dirty = false;
            return;
        }
        if self.clock_dirty {
            self.clock_dirty = false;
            self.journal.write(JournalEntry::Clock {
                exercise_id: self.id().to_string(),
                row: clock_row(&self.engine, now()),
            });
        }
        self.emit_changes();
        let rows = if self.dirty_all {
            self.dirty.clear();
            self.dirty_all = false;
            self.delivery_rows()
        } else if !self.dirty.is_empty() {
            let mut slots = std::mem::take(&mut self.dirty);
            slots.sort_unstable();
            slots.dedup();
            slots.into_iter().map(|s| self.row(s)).collect()
        } else {
            return;
        };
        self.journal.write(JournalEntry::Deliveries(rows));
    }

    fn row(&self, slot: usize) -> DeliveryRow {
        let r = &self.engine.records()[slot];
        let e = &self.entries[slot];
        DeliveryRow {
            exercise_id: self.id().to_string(),
            run: i64::from(self.engine.run()),
            team_id: self.scenario.teams[e.team].id.to_string(),
            inject_id: e.inject().id.to_string(),
            due_secs: i64::from(r.due.get()),
            status: r.status.as_str().to_owned(),
            attempts: i64::from(r.attempts),
            due_wall_ms: r.due_wall.map(wall_ms),
            published_wall_ms: r.published_wall.map(wall_ms),
            acked_wall_ms: r.acked_wall.map(wall_ms),
            received_wall_ms: r.received_wall.map(wall_ms),
            latency_ms: r.latency.map(|l| l.as_secs_f64() * 1000.0),
            late: r.late,
            last_error: r.last_error.clone(),
            position: slot as i64,
            inject_json: e
                .live
                .then(|| crate::scenario::inject_value(e.inject()).to_string()),
        }
    }

    fn deliver(&mut self, tag: DeliveryTag) {
        let e = &self.entries[tag.slot as usize];
        let team = &self.scenario.teams[e.team].id;
        let payload =
            e.template()
                .render(team, &self.options.exercise_id, OffsetDateTime::now_utc());
        if self.live.receiver_count() > 0 {
            let item = FeedItem {
                team: e.team,
                run: self.engine.run(),
                received: self.engine.records()[tag.slot as usize]
                    .received_wall
                    .is_some(),
                message: String::from_utf8_lossy(&payload).into_owned(),
            };
            let _ = self.live.send(Live::Feed(Arc::new(item)));
        }
        self.mqtt.publish(Message {
            topic: self.feeds[e.team].clone(),
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
        let topic = self.topics.control.clone();
        self.publish_json(&topic, &announcement, QoS::AtLeastOnce, false);
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
        self.publish_json(&self.topics.status, status, QoS::AtLeastOnce, true);
    }

    fn publish_timer_now(&self) {
        let t = TimerMessage::from(self.engine.timer(Instant::now()));
        self.publish_json(&self.topics.timer, &t, QoS::AtMostOnce, true);
    }

    fn publish_monitoring(&mut self) {
        let counts = *self.counts.get_or_insert_with(|| self.engine.counts());
        let m = MonitoringMessage::new(
            self.id(),
            self.engine.state(),
            &counts,
            self.presence.teams_connected(),
            self.engine.exercise_time(Instant::now()),
            OffsetDateTime::now_utc(),
        );
        self.publish_json(&self.topics.monitoring, &m, QoS::AtLeastOnce, true);
    }

    /// Announcements go through the journal: after what they announce is
    /// stored. The timer and monitoring messages are snapshots: while held,
    /// only the newest of each matters.
    fn publish_json(&self, topic: &str, body: &impl serde::Serialize, qos: QoS, retain: bool) {
        let payload = serde_json::to_vec(body).expect("wire types serialize");
        let message = Message {
            topic: topic.to_owned(),
            payload,
            qos,
            retain,
            ack: None,
        };
        if topic == self.topics.timer || topic == self.topics.monitoring {
            self.journal.publish_latest(message);
        } else {
            self.journal.publish(message);
        }
    }
}

/// The clock of `engine` as stored values: wall-clock start, signed total
/// of time not run (pauses, less any seek forward), and when it last stopped
/// running (while paused, stopped or completed).
pub fn clock_row(engine: &Engine, now: Now) -> ClockRow {
    let started = engine.started().map(|s| s.wall);
    let elapsed = engine.clock().elapsed(now.mono);
    let running = engine.state() == State::Running;
    let paused_total_ms = started.map_or(0, |start| {
        let since_start_ms = (now.wall - start).whole_milliseconds() as f64;
        let run_ms = elapsed.as_secs_f64() * 1000.0 / engine.clock().speed();
        (since_start_ms - run_ms).round() as i64
    });
    ClockRow {
        state: engine.state().as_str().to_owned(),
        run: i64::from(engine.run()),
        started_wall_ms: started.map(wall_ms),
        paused_total_ms,
        paused_since_wall_ms: (started.is_some() && !running).then(|| wall_ms(now.wall)),
        updated_wall_ms: wall_ms(now.wall),
        turn: engine.turn().map_or(0, |(turn, _)| i64::from(turn)),
    }
}

/// Exercise time from stored clock values at wall time `now_ms`. Any stored
/// values give a time (at worst zero or the longest `Duration`), never a panic.
pub fn stored_elapsed(row: &ClockRow, speed: Speed, now_ms: i64) -> Duration {
    let Some(start) = row.started_wall_ms else {
        return Duration::ZERO;
    };
    let until = row.paused_since_wall_ms.unwrap_or(now_ms);
    let run_ms = until
        .saturating_sub(start)
        .saturating_sub(row.paused_total_ms)
        .max(0) as f64;
    Duration::try_from_secs_f64(run_ms * speed.get() / 1000.0).unwrap_or(Duration::MAX)
}

pub fn wall_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn from_wall_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `why`, and how many refused or invalid control messages before it went
/// unreported.
fn with_unreported(why: String, unreported: u64) -> String {
    if unreported == 0 {
        why
    } else {
        format!(
            "{why} ({unreported} more refused or invalid control messages before this one were not reported)"
        )
    }
}

pub(crate) fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: OffsetDateTime::now_utc(),
    }
}
