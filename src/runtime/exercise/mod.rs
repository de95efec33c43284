//! The actor of one exercise: owns its engine, the real clock and its
//! channels; turns the engine's outputs into MQTT messages, journal entries
//! and log lines; answers controllers' requests.
//!
//! `run` (one exercise in the foreground) and `serve` (many, persisted) both
//! use it; they differ in the [`Journal`] (publish directly, or store first)
//! and in whether the actor ends when the exercise is over.
//!
//! Its parts: the event loop (`event_loop`), controllers' requests
//! (`requests`), the control topic (`control`), what goes out to the broker,
//! the journal and followers (`outputs`), the scenario's entries by slot
//! (`entries`), the clock as stored values (`clock`) and two-way play:
//! answers, decisions and their announcements (`play`).

mod clock;
mod control;
mod entries;
mod event_loop;
mod outputs;
mod play;
mod posts;
mod requests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::access::ratelimit::RateLimit;
use crate::config::DeliveryPolicy;
use crate::core::engine::{ArchivedRun, EditError, SeekMode};
use crate::core::{Command, Counts, DeliveryRecord, Engine, Now, Refusal, State, Transition};
use crate::domain::{ExerciseId, ExerciseSeconds, Speed};
use crate::mqtt::wire::Topics;
use crate::mqtt::{AckEvent, Mqtt};
use crate::runtime::journal::{Journal, JournalError};
use crate::runtime::live::{LIVE_BUFFER, Live, Presence, Watch};
use crate::runtime::timer::Sleeper;
use crate::scenario::{Inject, Scenario};
use crate::store::{ClockRow, DeliveryRow};

pub use clock::{clock_row, from_wall_ms, stored_elapsed, wall_ms};
use entries::{Entry, scenario_entries};
pub use outputs::play_json;
pub use play::{MAX_BY_CHARS, MAX_RESPONSE_CHARS};
pub use play::{Score, ScoreTarget};
pub use posts::Author;

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
    /// Several nodes: this node's trust window. Outside it nothing goes out
    /// (due injects wait as they do for the broker). None: one node.
    pub trust: Option<crate::runtime::lease::Trust>,
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
    /// The counts of each team, by team index.
    pub teams: Arc<Vec<Counts>>,
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
    /// Why a conditional inject was skipped, in the scenario's names.
    pub skip_reason: Option<String>,
    /// What a conditional inject waits for, in the scenario's names.
    pub waits_for: Option<String>,
    /// The decision it waits for, when that is its condition.
    pub decision: Option<String>,
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
        /// Who asked, for the control log: `api:<ip>`.
        source: String,
        reply: Reply<usize>,
    },
    Send {
        teams: Vec<String>,
        inject: Inject,
        at: Option<ExerciseSeconds>,
        /// Who asked, for the control log: `api:<ip>`.
        source: String,
        reply: Reply<usize>,
    },
    Cancel {
        key: DeliveryKey,
        /// Who asked, for the control log: `api:<ip>`.
        source: String,
        reply: Reply<()>,
    },
    Reschedule {
        key: DeliveryKey,
        at: ExerciseSeconds,
        /// Who asked, for the control log: `api:<ip>`.
        source: String,
        reply: Reply<()>,
    },
    Seek {
        to: ExerciseSeconds,
        mode: SeekMode,
        /// Who asked, for the control log: `api:<ip>`.
        source: String,
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
    /// Team `team` answered an inject (from its dashboard or the API).
    Respond {
        team: usize,
        input: crate::mqtt::wire::ResponseIn,
        /// `dashboard` or `api:<ip>`.
        source: String,
        reply: Reply<crate::mqtt::wire::ResponseMessage>,
    },
    /// A post to a public channel, by a team or as a controller's persona.
    Post {
        author: Author,
        input: crate::mqtt::wire::PostIn,
        /// `dashboard` or `api:<ip>`.
        source: String,
        reply: Reply<crate::mqtt::wire::PostMessage>,
    },
    /// An evaluator scores a team on an inject or an objective.
    Score {
        score: Score,
        /// `api:<ip>`.
        source: String,
        reply: Reply<crate::mqtt::wire::ScoreMessage>,
    },
    /// A controller's decision, for `teams` (every team when None).
    Decide {
        decision: String,
        teams: Option<Vec<String>>,
        source: String,
        reply: Reply<crate::mqtt::wire::DecisionMessage>,
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
    counts: Option<(Counts, Arc<Vec<Counts>>)>,
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
    /// Answers per team (whatever their path).
    response_rate: RateLimit,
    /// Play rows (answers, posts, scores, decisions) to store with the
    /// records they changed, in one entry of the journal.
    plays: Vec<crate::store::PlayRow>,
    /// Being deleted: no command or edit is taken.
    closing: bool,
    /// Deleted: the loop ends, nothing more is written.
    closed: bool,
}

impl Actor {
    /// An initialized exercise.
    /// Writes through `journal` from now on (a new exercise's, once its
    /// lease exists).
    pub fn set_journal(&mut self, journal: Journal) {
        self.journal = journal;
    }

    /// Acts only while `trust` holds from now on (several nodes: its lease's).
    pub fn set_trust(&mut self, trust: crate::runtime::lease::Trust) {
        self.options.trust = Some(trust);
    }

    pub fn new(scenario: Arc<Scenario>, options: Options, mqtt: Mqtt, journal: Journal) -> Self {
        let engine = Engine::new(&scenario.plan(), options.speed, options.policy);
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
        let response_rate = RateLimit::per_minute(options.max_commands_per_minute);
        let snapshot = watch::channel(Snapshot {
            id: id.clone(),
            time: engine.exercise_time(Instant::now()),
            total: engine.duration(),
            state: engine.state(),
            run: engine.run(),
            speed: options.speed,
            counts: engine.counts(),
            teams: Arc::new(Counts::by_team(engine.records(), scenario.teams.len())),
            // As the connection is now, so that the first answer about a
            // new exercise (the create's) does not say "disconnected"
            // before the loop has run.
            connected: *mqtt.connected().borrow(),
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
            response_rate,
            plays: Vec::new(),
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
}

/// The monotonic and the wall clock, read now.
pub(crate) fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: OffsetDateTime::now_utc(),
    }
}
