//! The orchestration service behind `serve`: many exercises in one process,
//! each an [`Actor`](crate::runtime::exercise::Actor) with its own clock,
//! sharing one MQTT connection and one store. Every exercise is stored
//! before it runs and rebuilt from the store when the process starts again.
//!
//! Its parts: the hosted exercises (`registry`), what is asked of their
//! actors (`requests`), bringing them back at start (`restore`), team links
//! (`links`), API tokens (`tokens`) and scenarios on disk (`scenarios`).

mod cluster;
mod links;
mod peers;
mod play;
mod registry;
mod requests;
mod restore;
mod scenarios;
mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::error;

use crate::access::links::{LinkClaims, LinkKey, LinkState};
use crate::config::Config;
use crate::domain::{ExerciseId, Speed};
use crate::mqtt::Mqtt;
use crate::runtime::exercise::DeliveryView;
use crate::runtime::exercise::{Options, Request, RequestError, Snapshot};
use crate::runtime::journal::Journal;
use crate::runtime::live::{Presence, Seat, Watch};
use crate::runtime::timer::Sleeper;
use crate::scenario::Scenario;
use crate::scenario::package::PackageError;
use crate::store::{ControlRow, DeliveryRow, ExerciseRow, Store, StoreError};

pub use cluster::NodeSettings;
use links::link_key;
pub use peers::{ClusterView, Owner, Peer};
use tokens::load_tokens;

/// Why a service call failed, split by what the caller (the API) answers.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Bad input; every problem listed.
    #[error("invalid request: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("{0}")]
    NotFound(String),
    /// Exists already, or does not fit the exercise's state.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The server's own failure (files, tasks); logged where it happens.
    #[error("{0}")]
    Internal(String),
    /// No credentials where they are needed.
    #[error("{0}")]
    Unauthorized(String),
    /// Credentials that do not open this.
    #[error("{0}")]
    Forbidden(String),
    /// Over a limit (MAX_EXERCISES, MAX_COMMANDS_PER_MINUTE); `retry_after`
    /// when waiting helps.
    #[error("{message}")]
    TooMany {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl From<PackageError> for ServiceError {
    fn from(e: PackageError) -> Self {
        match e {
            PackageError::Invalid(errors) => {
                ServiceError::Invalid(errors.iter().map(ToString::to_string).collect())
            }
            PackageError::NoScenario(_) | PackageError::Refused(_) => {
                ServiceError::Invalid(vec![e.to_string()])
            }
            PackageError::Exists(_) => ServiceError::Conflict(e.to_string()),
            PackageError::NotFound(_) => ServiceError::NotFound(e.to_string()),
            PackageError::Io { .. } => {
                error!(error = %e, "package storage failed");
                ServiceError::Internal(e.to_string())
            }
        }
    }
}

impl From<RequestError> for ServiceError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::NotFound(m) => ServiceError::NotFound(m),
            RequestError::Invalid(m) => ServiceError::Invalid(vec![m]),
            RequestError::Gone | RequestError::Unstored(_) => {
                ServiceError::Unavailable(e.to_string())
            }
            RequestError::Refused(_) | RequestError::Edit(_) | RequestError::Conflict(_) => {
                ServiceError::Conflict(e.to_string())
            }
        }
    }
}

/// Where a new exercise's scenario comes from.
#[derive(Debug, Clone)]
pub enum ScenarioSource {
    /// A folder name under MEDIA_STORAGE_PATH holding `scenario.json`.
    Folder(String),
    /// Scenario plus timelines in one JSON value.
    Inline(Value),
}

/// A request to create an exercise.
#[derive(Debug, Clone)]
pub struct CreateExercise {
    pub source: ScenarioSource,
    pub exercise_id: Option<String>,
    /// Real time when None.
    pub speed: Option<Speed>,
}

/// An exercise as listed.
#[derive(Debug, Clone)]
pub struct ExerciseInfo {
    pub id: String,
    pub name: Option<String>,
    pub standing: Standing,
    pub teams: Vec<TeamLink>,
    /// Teams with at least one dashboard open.
    pub teams_connected: usize,
    pub created_wall_ms: i64,
    /// The scenario of a hosted exercise (its objectives and channels).
    pub scenario: Option<Arc<Scenario>>,
}

impl ExerciseInfo {
    /// Where a hosted exercise stands; None for one that could not be restored.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        match &self.standing {
            Standing::Hosted(snapshot) => Some(snapshot),
            Standing::Unrestorable(_) => None,
        }
    }
}

/// Whether an exercise runs in this process.
#[derive(Debug, Clone)]
pub enum Standing {
    /// Its actor runs it; where it stands.
    Hosted(Snapshot),
    /// Stored, but its row could not be brought back at start: listed with
    /// the reason, refused every command, and deletable.
    Unrestorable(Unrestorable),
}

/// A stored exercise that could not be restored, and why.
#[derive(Debug, Clone)]
pub struct Unrestorable {
    pub reason: String,
    /// The stored values, as they are.
    pub run: i64,
    pub speed: f64,
    pub duration_secs: i64,
}

/// A team with the URL of its dashboard.
#[derive(Debug, Clone)]
pub struct TeamLink {
    pub id: String,
    pub name: Option<String>,
    pub dashboard_url: String,
    /// Dashboards of this team open now.
    pub dashboards: usize,
    /// When the dashboard link expires (unix seconds).
    pub link_expires: i64,
    /// The link was revoked and not re-issued.
    pub link_revoked: bool,
    /// This team's delivery records of the current run, counted.
    pub counts: crate::core::Counts,
    /// When a dashboard of this team was last seen (opened, closed, sent a
    /// receipt), in unix milliseconds; `None` for never since the start.
    pub last_seen_wall_ms: Option<i64>,
}

/// A scenario folder under MEDIA_STORAGE_PATH that exercises can be created from.
#[derive(Debug, Clone)]
pub struct ScenarioEntry {
    /// The folder name, as `CreateExercise` takes it.
    pub name: String,
    pub title: Option<String>,
    pub teams: usize,
    pub injects: usize,
    pub duration_secs: u32,
    /// Why it cannot be used, when it is invalid.
    pub error: Option<String>,
}

/// What the after-action report of one run is made of, as the service
/// holds it.
#[derive(Debug, Clone)]
pub struct ReportSource {
    /// The exercise as stored.
    pub exercise: ExerciseRow,
    /// The exercise's state now.
    pub state: String,
    /// The exercise's run now; earlier runs are archived.
    pub current_run: i64,
    /// The run asked for: the current one when none was named.
    pub run: i64,
    /// The actor's scenario, or else the stored one if it still loads.
    pub scenario: Option<Arc<Scenario>>,
    /// The delivery records of `run`.
    pub deliveries: RunDeliveries,
    /// Every command given to the exercise, every run, oldest first.
    pub control_log: Vec<ControlRow>,
    /// The responses, posts, scores and decisions of `run`, as stored.
    pub plays: Vec<crate::store::PlayRow>,
}

/// The delivery records of one run.
#[derive(Debug, Clone)]
pub enum RunDeliveries {
    /// The current run of a hosted exercise, as its actor holds them.
    Hosted(Vec<DeliveryView>),
    /// An archived run, or any run of an exercise not hosted, as stored.
    Stored(Vec<DeliveryRow>),
}

/// A team dashboard's subscription: counted as open while held.
pub struct TeamWatch {
    pub watch: Watch,
    pub team: usize,
    /// `{"exercise": {"id", "name"}, "team": {"id", "name"}}`, for the page's header.
    pub names: Value,
    /// The link the stream was opened with.
    pub link: LinkWatch,
    _seat: Seat,
}

/// The dashboard link a team stream was opened with, watched: re-issuing or
/// revoking it, or its expiry, ends the stream (the page then learns why
/// when it tries to reconnect).
pub struct LinkWatch {
    links: watch::Receiver<Vec<LinkState>>,
    index: usize,
    opened: LinkState,
    /// What the link says: the media tokens handed out on the stream name
    /// it, so they stop working with it.
    pub claims: LinkClaims,
}

impl LinkWatch {
    /// Resolves once the link no longer opens the stream.
    pub async fn ended(&mut self) {
        let expires =
            std::time::UNIX_EPOCH + Duration::from_secs(self.opened.expires.max(0) as u64);
        let left = expires
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        let (index, opened) = (self.index, self.opened);
        tokio::select! {
            _ = self.links.wait_for(|links| links.get(index) != Some(&opened)) => {}
            () = tokio::time::sleep(left) => {}
        }
    }
}

/// The control room's subscription.
pub struct ExerciseWatch {
    pub watch: Watch,
    /// Changes with the exercise's state and clock.
    pub snapshot: watch::Receiver<Snapshot>,
    /// Changes when a dashboard opens or closes.
    pub presence: watch::Receiver<u64>,
}

impl Handle {
    /// The index of `team` in exercise `id`'s scenario.
    fn team_index(&self, id: &str, team: &str) -> Result<usize, ServiceError> {
        self.scenario
            .teams
            .iter()
            .position(|t| t.id.as_str() == team)
            .ok_or_else(|| ServiceError::NotFound(format!("no team {team:?} in exercise {id:?}")))
    }
}

/// The lease an exercise is run under (several nodes).
struct HeldLease {
    epoch: i64,
    /// Ends the actor's task at once when the lease is lost.
    abort: tokio::task::AbortHandle,
    /// Revoked first: the actor publishes nothing more even before it ends.
    trust: crate::runtime::lease::Trust,
}

struct Handle {
    /// Several nodes: the lease this node runs the exercise under.
    lease: Option<HeldLease>,
    /// Bounded (REQUEST_QUEUE): a caller waits for room.
    requests: mpsc::Sender<Request>,
    /// Which life of the id this is; team links name it.
    incarnation: String,
    snapshot: watch::Receiver<Snapshot>,
    scenario: Arc<Scenario>,
    presence: Arc<Presence>,
    created_wall_ms: i64,
    /// Each team's dashboard link, by team index; open dashboard streams
    /// watch it and end when their link moves on.
    links: Arc<watch::Sender<Vec<LinkState>>>,
}

/// A stored exercise left out at start, as it is listed.
struct NotRestored {
    name: Option<String>,
    created_wall_ms: i64,
    detail: Unrestorable,
}

struct Inner {
    store: Store,
    mqtt: Mqtt,
    journal: Journal,
    config: Config,
    public_url: String,
    monitoring_every: Duration,
    exercises: RwLock<BTreeMap<String, Handle>>,
    /// Stored exercises that could not be restored at start.
    unrestorable: RwLock<BTreeMap<String, NotRestored>>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    /// Several nodes: this node, its trust and its journals; None on one.
    node: Option<cluster::Node>,
    /// How `GET /api/v1/cluster` names a single node.
    node_name: String,
    stop: watch::Sender<bool>,
    command_rate: crate::access::ratelimit::RateLimit,
    link_key: LinkKey,
    tokens: crate::access::tokens::Tokens,
    /// Set when the HTTP server shuts down: event streams end.
    closing: watch::Sender<bool>,
    /// File work (reading and validating scenarios) goes one job at a time.
    file_work: tokio::sync::Semaphore,
    /// What the last listing found per scenario folder, and the fingerprint
    /// of the folder's files then.
    scenario_cache: std::sync::Mutex<HashMap<String, (u64, ScenarioEntry)>>,
    /// The embedded broker's health, when the service uses it.
    broker_health: std::sync::OnceLock<watch::Receiver<Result<(), String>>>,
}

/// The service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl Service {
    /// Starts the service and brings back every stored exercise: a running
    /// one continues at the exercise time it would have reached had the
    /// process never stopped.
    pub async fn start(
        store: Store,
        mqtt: Mqtt,
        config: Config,
        public_url: String,
    ) -> Result<Self, ServiceError> {
        Self::start_node(store, mqtt, config, public_url, None).await
    }

    /// [`Self::start`], as one node of several when `node` is given: it
    /// claims its share of the exercises' leases instead of restoring every
    /// stored exercise, and keeps claiming and renewing until it stops.
    pub async fn start_node(
        store: Store,
        mqtt: Mqtt,
        config: Config,
        public_url: String,
        node: Option<(NodeSettings, crate::store::NodeLock)>,
    ) -> Result<Self, ServiceError> {
        let (journal, _writer) = Journal::spawn(store.clone(), mqtt.clone());
        let command_rate =
            crate::access::ratelimit::RateLimit::per_minute(config.max_commands_per_minute);
        let link_key = link_key(&store).await?;
        let node_name = config
            .node_id
            .clone()
            .unwrap_or_else(|| "single".to_owned());
        let tokens = load_tokens(&store, &config).await?;
        let service = Self {
            inner: Arc::new(Inner {
                store,
                mqtt,
                journal,
                config,
                public_url: public_url.trim_end_matches('/').to_owned(),
                monitoring_every: Duration::from_secs(5),
                exercises: RwLock::new(BTreeMap::new()),
                unrestorable: RwLock::new(BTreeMap::new()),
                tasks: tokio::sync::Mutex::new(JoinSet::new()),
                node_name,
                node: node.map(|(settings, lock)| cluster::Node::new(settings, lock)),
                stop: watch::channel(false).0,
                command_rate,
                link_key,
                tokens,
                closing: watch::channel(false).0,
                broker_health: std::sync::OnceLock::new(),
                file_work: tokio::sync::Semaphore::new(1),
                scenario_cache: std::sync::Mutex::default(),
            }),
        };
        if service.node().is_some() {
            service.join().await?;
            service.spawn_lease_task();
        } else {
            service.recover().await?;
        }
        Ok(service)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn mqtt(&self) -> &Mqtt {
        &self.inner.mqtt
    }

    /// Ends every event stream, so the HTTP server can shut down gracefully.
    pub fn close_streams(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Turns true when event streams must end.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    /// Largest HTTP request body (MAX_REQUEST_BYTES).
    pub fn max_request_bytes(&self) -> usize {
        usize::try_from(self.inner.config.max_request_bytes).unwrap_or(usize::MAX)
    }

    /// Makes readiness follow the embedded broker's health (see
    /// `EmbeddedBroker::health`): unready while it refuses connections.
    pub fn watch_broker(&self, health: watch::Receiver<Result<(), String>>) {
        let _ = self.inner.broker_health.set(health);
    }

    /// The database answers and takes writes, the broker is connected, and
    /// the embedded broker (when used) accepts connections.
    pub async fn ready(&self) -> Result<(), String> {
        if let Some(health) = self.inner.broker_health.get()
            && let Err(e) = &*health.borrow()
        {
            return Err(format!("embedded MQTT broker: {e}"));
        }
        self.inner.journal.health()?;
        self.journals_health()?;
        self.inner
            .store
            .ping()
            .await
            .map_err(|e| format!("database: {e}"))?;
        if !*self.inner.mqtt.connected().borrow() {
            return Err("MQTT broker not connected".into());
        }
        Ok(())
    }

    /// Ends every actor without touching its exercise (a running one goes on
    /// at the next start), lets the journal finish, closes MQTT.
    pub async fn shutdown(&self) {
        self.begin_drain().await;
        self.inner.stop.send_replace(true);
        {
            let mut tasks = self.inner.tasks.lock().await;
            while tasks.join_next().await.is_some() {}
        }
        // Everything the actors journaled is written before the journal's
        // last reply runs; while the database refuses it, a little longer.
        let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (tx, rx) = oneshot::channel();
            self.inner.journal.reply(move |stored| {
                let _ = tx.send(stored);
            });
            match rx.await {
                Ok(Ok(())) | Err(_) => break,
                Ok(Err(e)) if tokio::time::Instant::now() >= give_up => {
                    error!(error = %e, "stopping with changes the database did not take: they are lost");
                    break;
                }
                Ok(Err(_)) => {}
            }
        }
        self.hand_over().await;
        self.inner.mqtt.close(Duration::from_secs(2)).await;
    }

    fn options(&self, id: &ExerciseId, speed: Speed) -> Options {
        Options {
            exercise_id: id.clone(),
            speed,
            policy: self.inner.config.delivery_policy(),
            feed_qos: self.inner.config.feed_qos(),
            monitoring_every: self.inner.monitoring_every,
            max_commands_per_minute: self.inner.config.max_commands_per_minute,
            exit_when_over: false,
            sleeper: Sleeper::Precise,
            trust: self.node().map(|n| n.trust.clone()),
        }
    }

    async fn ask<T>(
        &self,
        id: &str,
        request: impl FnOnce(oneshot::Sender<Result<T, RequestError>>) -> Request,
    ) -> Result<T, ServiceError> {
        let sender = {
            let exercises = self.inner.exercises.read().expect("registry");
            exercises
                .get(id)
                .ok_or_else(|| self.absent(id))?
                .requests
                .clone()
        };
        let (tx, rx) = oneshot::channel();
        sender
            .send(request(tx))
            .await
            .map_err(|_| ServiceError::Unavailable(format!("exercise {id} is shutting down")))?;
        let result = rx
            .await
            .map_err(|_| ServiceError::Unavailable(format!("exercise {id} is shutting down")))?;
        Ok(result?)
    }
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("no exercise {id:?}"))
}
