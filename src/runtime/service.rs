//! The orchestration service behind `serve`: many exercises in one process,
//! each an [`Actor`] with its own clock, sharing one MQTT connection and one
//! store. Every exercise is stored before it runs and rebuilt from the store
//! when the process starts again.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::access::links::{LinkClaims, LinkError, LinkKey, LinkState};
use crate::config::Config;
use crate::core::engine::{Persisted, SeekMode};
use crate::core::{Command, DeliveryRecord, DeliveryStatus, Engine, State, Transition};
use crate::domain::{ExerciseId, ExerciseSeconds, InjectId, Speed};
use crate::mqtt::Mqtt;
use crate::runtime::exercise::{
    self, Actor, DeliveryKey, DeliveryView, Options, Outcome, Request, RequestError, Snapshot,
    from_wall_ms, stored_elapsed, wall_ms,
};
use crate::runtime::journal::Journal;
use crate::runtime::live::{Presence, Seat, Watch};
use crate::scenario::package::{self as packages, Imported, PackageError, is_plain_name};
use crate::scenario::{self, Inject, Scenario, ValidationError};
use crate::store::TeamLinkRow;
use crate::store::{ClockRow, ControlRow, DeliveryRow, ExerciseRow, Store, StoreError};

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

struct Handle {
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
    tasks: tokio::sync::Mutex<JoinSet<Outcome>>,
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
        let (journal, _writer) = Journal::spawn(store.clone(), mqtt.clone());
        let command_rate =
            crate::access::ratelimit::RateLimit::per_minute(config.max_commands_per_minute);
        let link_key = link_key(&store).await?;
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
        service.recover().await?;
        Ok(service)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Imports a scenario package sent as a `.tar.gz` archive into
    /// MEDIA_STORAGE_PATH, validated first; `replace` overwrites a stored
    /// package of the same name.
    pub async fn import_package(
        &self,
        archive: Vec<u8>,
        name: Option<String>,
        replace: bool,
    ) -> Result<Imported, ServiceError> {
        let root = self.package_root()?;
        let limits = self.inner.config.limits();
        let imported = tokio::task::spawn_blocking(move || {
            packages::import_archive(&archive, &root, name.as_deref(), replace, &limits)
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("the import failed: {e}")))??;
        info!(package = %imported.name, files = imported.files, bytes = imported.bytes, "package imported");
        Ok(imported)
    }

    /// Stored package `name` as a `.tar.gz` archive.
    pub async fn export_package(&self, name: String) -> Result<Vec<u8>, ServiceError> {
        let root = self.package_root()?;
        let archive = tokio::task::spawn_blocking(move || packages::export_archive(&root, &name))
            .await
            .map_err(|e| ServiceError::Internal(format!("the export failed: {e}")))??;
        Ok(archive)
    }

    fn package_root(&self) -> Result<std::path::PathBuf, ServiceError> {
        self.inner.config.media_storage_path.clone().ok_or_else(|| {
            ServiceError::Invalid(vec![
                "scenario packages need MEDIA_STORAGE_PATH to be set".into(),
            ])
        })
    }

    /// Issues `team`'s dashboard link again: a new token, valid for
    /// TEAM_LINK_TTL_HOURS; every earlier one stops working.
    pub async fn reissue_link(&self, id: &str, team: &str) -> Result<TeamLink, ServiceError> {
        self.move_link(id, team, false).await?;
        let info = self.get(id)?;
        info.teams
            .into_iter()
            .find(|t| t.id == team)
            .ok_or_else(|| ServiceError::NotFound(format!("no team {team:?} in exercise {id:?}")))
    }

    /// Revokes `team`'s dashboard link: no token opens it until re-issued.
    pub async fn revoke_link(&self, id: &str, team: &str) -> Result<(), ServiceError> {
        self.move_link(id, team, true).await
    }

    async fn move_link(&self, id: &str, team: &str, revoked: bool) -> Result<(), ServiceError> {
        let (links, index) = {
            let exercises = self.inner.exercises.read().expect("registry");
            let handle = exercises.get(id).ok_or_else(|| self.absent(id))?;
            let index = handle.team_index(id, team)?;
            (handle.links.clone(), index)
        };
        let next = {
            let current = links.borrow()[index];
            LinkState {
                generation: current.generation + 1,
                expires: self.link_expiry(),
                revoked,
            }
        };
        self.inner
            .store
            .put_team_link(&TeamLinkRow {
                exercise_id: id.to_owned(),
                team_id: team.to_owned(),
                generation: next.generation,
                expires_unix: next.expires,
                revoked,
            })
            .await?;
        links.send_modify(|links| links[index] = next);
        info!(
            exercise_id = id,
            team_id = team,
            revoked,
            generation = next.generation,
            "team link moved on"
        );
        Ok(())
    }

    /// The links of a new or restored exercise: the stored ones, and a
    /// fresh one (stored) for every team without.
    async fn issue_links(
        &self,
        id: &str,
        scenario: &Scenario,
        stored: Option<&[TeamLinkRow]>,
    ) -> Result<Vec<LinkState>, ServiceError> {
        let mut links = Vec::with_capacity(scenario.teams.len());
        for team in &scenario.teams {
            let found = stored
                .and_then(|rows| rows.iter().find(|r| r.team_id == team.id.as_str()))
                .map(|r| LinkState {
                    generation: r.generation,
                    expires: r.expires_unix,
                    revoked: r.revoked,
                });
            let link = match found {
                Some(link) => link,
                None => {
                    let link = LinkState {
                        generation: 1,
                        expires: self.link_expiry(),
                        revoked: false,
                    };
                    self.inner
                        .store
                        .put_team_link(&TeamLinkRow {
                            exercise_id: id.to_owned(),
                            team_id: team.id.to_string(),
                            generation: link.generation,
                            expires_unix: link.expires,
                            revoked: false,
                        })
                        .await?;
                    link
                }
            };
            links.push(link);
        }
        Ok(links)
    }

    fn link_expiry(&self) -> i64 {
        let ttl = i64::from(self.inner.config.team_link_ttl_hours) * 3600;
        OffsetDateTime::now_utc().unix_timestamp() + ttl
    }

    fn dashboard_url(&self, id: &str, incarnation: &str, team: &str, link: LinkState) -> String {
        let base = format!(
            "{}/exercises/{}/teams/{}",
            self.inner.public_url,
            path_segment(id),
            path_segment(team)
        );
        if link.revoked {
            return base;
        }
        let token = self.inner.link_key.sign(&LinkClaims {
            exercise: id.to_owned(),
            incarnation: incarnation.to_owned(),
            team: team.to_owned(),
            generation: link.generation,
            expires: link.expires,
        });
        format!("{base}?token={token}")
    }

    fn check_link(
        &self,
        handle: &Handle,
        id: &str,
        team: &str,
        index: usize,
        token: Option<&str>,
    ) -> Result<LinkWatch, ServiceError> {
        let current = handle.links.borrow()[index];
        let now = OffsetDateTime::now_utc().unix_timestamp();
        self.inner
            .link_key
            .check(token, id, &handle.incarnation, team, &current, now)
            .map_err(|e| match e {
                LinkError::Missing => ServiceError::Unauthorized(e.to_string()),
                _ => ServiceError::Forbidden(e.to_string()),
            })?;
        Ok(LinkWatch {
            links: handle.links.subscribe(),
            index,
            opened: current,
            claims: LinkClaims {
                exercise: id.to_owned(),
                incarnation: handle.incarnation.clone(),
                team: team.to_owned(),
                generation: current.generation,
                expires: current.expires,
            },
        })
    }

    /// The URL (path and query) at which the dashboard of the link
    /// `claims` describes fetches media file `path` of its exercise: the
    /// file's route with a media token, valid while the link is.
    pub fn media_url(&self, claims: &LinkClaims, path: &str) -> String {
        let token = self.inner.link_key.sign_media(claims, path);
        let segments: Vec<String> = path.split('/').map(path_segment).collect();
        format!(
            "/exercises/{}/media/{}?media={token}",
            path_segment(&claims.exercise),
            segments.join("/")
        )
    }

    /// Checks a media token for file `path` of exercise `id`: signed for
    /// this file of this incarnation, by a team link that still opens its
    /// dashboard. 404 without the exercise, 403 otherwise.
    pub fn check_media_token(&self, id: &str, path: &str, token: &str) -> Result<(), ServiceError> {
        let exercises = self.inner.exercises.read().expect("registry");
        let handle = exercises.get(id).ok_or_else(|| not_found(id))?;
        let forbidden = |e: LinkError| ServiceError::Forbidden(e.to_string());
        let claims = self
            .inner
            .link_key
            .read_media(token, id, &handle.incarnation, path)
            .map_err(forbidden)?;
        let index = handle.team_index(id, &claims.team)?;
        let current = handle.links.borrow()[index];
        if current.revoked || current.generation != claims.generation {
            return Err(forbidden(LinkError::Revoked));
        }
        if OffsetDateTime::now_utc().unix_timestamp() >= claims.expires {
            return Err(forbidden(LinkError::Expired));
        }
        Ok(())
    }

    /// The API tokens the service accepts.
    pub fn tokens(&self) -> &crate::access::tokens::Tokens {
        &self.inner.tokens
    }

    /// Issues a token with `role`; the token in clear is returned once and
    /// never kept (only its hash).
    pub async fn issue_token(
        &self,
        role: crate::access::tokens::Role,
        name: Option<String>,
    ) -> Result<(crate::access::tokens::TokenEntry, String), ServiceError> {
        let token = crate::access::tokens::generate();
        let hash = crate::access::tokens::hash(&token);
        let id = format!("tok-{}", &hash[..12]);
        let created_wall_ms = wall_ms(OffsetDateTime::now_utc());
        self.inner
            .store
            .insert_token(&crate::store::TokenRow {
                id: id.clone(),
                name: name.clone(),
                role: role.as_str().to_owned(),
                hash: hash.clone(),
                created_wall_ms,
            })
            .await?;
        let entry = crate::access::tokens::TokenEntry {
            id,
            name,
            role,
            configured: false,
            created_wall_ms,
        };
        self.inner.tokens.add(hash, entry.clone());
        info!(token_id = %entry.id, role = %role, "API token issued");
        Ok((entry, token))
    }

    /// Revokes an issued token; configured ones are changed in API_TOKENS.
    pub async fn revoke_token(&self, id: &str) -> Result<(), ServiceError> {
        let entry = self
            .inner
            .tokens
            .get(id)
            .ok_or_else(|| ServiceError::NotFound(format!("no token {id:?}")))?;
        if entry.configured {
            return Err(ServiceError::Conflict(format!(
                "token {id} is configured in API_TOKENS: remove it there"
            )));
        }
        self.inner.store.delete_token(id).await?;
        self.inner.tokens.remove(id);
        info!(token_id = id, "API token revoked");
        Ok(())
    }

    /// With no token known at all, issues an admin token and returns it in
    /// clear, to be shown once: a fresh `serve` is never open to anyone.
    pub async fn bootstrap_admin(&self) -> Result<Option<String>, ServiceError> {
        if !self.inner.tokens.is_empty() {
            return Ok(None);
        }
        let (_, token) = self
            .issue_token(
                crate::access::tokens::Role::Admin,
                Some("first admin".into()),
            )
            .await?;
        Ok(Some(token))
    }

    /// Ends every event stream, so the HTTP server can shut down gracefully.
    pub fn close_streams(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Turns true when event streams must end.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    /// The media file `path` of exercise `id` (as the media route names
    /// it): a file of the exercise's own package, as is or under its
    /// `media/`; a `path` starting with the package's name (`/media/<package>/x`
    /// in an inject) is also looked for without it. Never a scenario or
    /// timeline file (no `.json`, nothing under `timelines/`), nothing hidden
    /// (a `.` name), nothing outside the package once links are followed.
    /// None when there is no such file, or the exercise has no package (it
    /// was created from an inline one) or no MEDIA_STORAGE_PATH is set.
    pub async fn media_file(&self, id: &str, path: &str) -> Option<std::path::PathBuf> {
        let root = self.inner.config.media_storage_path.clone()?;
        let package = {
            let exercises = self.inner.exercises.read().expect("registry");
            exercises.get(id)?.scenario.package.clone()?
        };
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || crate::scenario::media::resolve(&root, &package, &path))
            .await
            .ok()
            .flatten()
    }

    /// Largest HTTP request body (MAX_REQUEST_BYTES).
    pub fn max_request_bytes(&self) -> usize {
        usize::try_from(self.inner.config.max_request_bytes).unwrap_or(usize::MAX)
    }

    pub fn mqtt(&self) -> &Mqtt {
        &self.inner.mqtt
    }

    /// Creates an exercise from a scenario; stored before it exists.
    pub async fn create(&self, request: CreateExercise) -> Result<ExerciseInfo, ServiceError> {
        let scenario = self.load_off_workers(request.source).await?;
        let speed = request.speed.unwrap_or(Speed::ONE);
        let id = match (&request.exercise_id, &scenario.exercise_id) {
            (Some(raw), _) => ExerciseId::parse(raw)
                .map_err(|e| ServiceError::Invalid(vec![format!("exercise_id: {e}")]))?,
            (None, Some(id)) => id.clone(),
            (None, None) => ExerciseId::generate(
                OffsetDateTime::now_utc().unix_timestamp_nanos() as u128 / 1_000_000,
            ),
        };
        let count = self.inner.exercises.read().expect("registry").len();
        let max = self.inner.config.max_exercises as usize;
        if count >= max {
            return Err(ServiceError::TooMany {
                message: format!(
                    "this service holds {count} exercises, its limit (MAX_EXERCISES): delete one first"
                ),
                retry_after: None,
            });
        }
        if self
            .inner
            .exercises
            .read()
            .expect("registry")
            .contains_key(id.as_str())
        {
            return Err(ServiceError::Conflict(format!(
                "exercise {id} already exists"
            )));
        }
        let scenario = Arc::new(scenario);
        let now = exercise::now();
        let actor = Actor::new(
            scenario.clone(),
            self.options(&id, speed),
            self.inner.mqtt.clone(),
            self.inner.journal.clone(),
        );
        let clock = actor.clock_row(now);
        let row = ExerciseRow {
            id: id.to_string(),
            name: scenario.name.clone(),
            scenario_json: scenario::to_inline(&scenario).to_string(),
            state: clock.state.clone(),
            run: clock.run,
            speed: speed.get(),
            duration_secs: i64::from(scenario.duration.get()),
            started_wall_ms: None,
            paused_total_ms: 0,
            paused_since_wall_ms: None,
            created_wall_ms: wall_ms(now.wall),
            updated_wall_ms: wall_ms(now.wall),
            owner: None,
            epoch: 0,
            turn: 0,
            incarnation: crate::access::links::new_incarnation(),
        };
        self.inner
            .store
            .insert_exercise(&row)
            .await
            .map_err(|e| match e {
                StoreError::Conflict { .. } => {
                    ServiceError::Conflict(format!("exercise {id} already exists"))
                }
                other => other.into(),
            })?;
        // The rest of what it is stored with; a failure takes the exercise
        // back out, so that a refused create leaves nothing behind.
        let links = async {
            self.inner
                .store
                .insert_deliveries(&actor.delivery_rows())
                .await?;
            self.issue_links(id.as_str(), &scenario, None).await
        }
        .await;
        let links = match links {
            Ok(links) => links,
            Err(e) => {
                if let Err(cleanup) = self.inner.store.delete_exercise(id.as_str()).await {
                    error!(exercise_id = %id, error = %cleanup, "cannot remove a half-created exercise; it is restored at the next start");
                }
                return Err(e);
            }
        };
        info!(exercise_id = %id, teams = scenario.teams.len(), speed = speed.get(), "exercise created");
        self.spawn(actor, scenario, row.created_wall_ms, row.incarnation, links)
            .await;
        self.get(id.as_str())
    }

    /// Every exercise, oldest first, those that could not be restored too.
    pub fn list(&self) -> Vec<ExerciseInfo> {
        let exercises = self.inner.exercises.read().expect("registry");
        let mut out: Vec<ExerciseInfo> = exercises.iter().map(|(id, h)| self.info(id, h)).collect();
        let unrestorable = self.inner.unrestorable.read().expect("registry");
        out.extend(unrestorable.iter().map(unrestorable_info));
        out.sort_by_key(|e| e.created_wall_ms);
        out
    }

    pub fn get(&self, id: &str) -> Result<ExerciseInfo, ServiceError> {
        let exercises = self.inner.exercises.read().expect("registry");
        match exercises.get(id) {
            Some(handle) => Ok(self.info(id, handle)),
            None => self
                .inner
                .unrestorable
                .read()
                .expect("registry")
                .get_key_value(id)
                .map(unrestorable_info)
                .ok_or_else(|| not_found(id)),
        }
    }

    /// Why exercise `id` has no actor: not found, or not restored (a
    /// conflict that says why).
    fn absent(&self, id: &str) -> ServiceError {
        match self.inner.unrestorable.read().expect("registry").get(id) {
            Some(not) => ServiceError::Conflict(format!(
                "exercise {id} could not be restored at start: {}; delete it, or repair its stored row and restart",
                not.detail.reason
            )),
            None => not_found(id),
        }
    }

    /// Start, pause, resume, stop or reset, with the same semantics as the
    /// control topic; `source` goes to the audit log and is the client the
    /// command rate is counted for.
    pub async fn control(
        &self,
        id: &str,
        command: Command,
        reason: Option<String>,
        source: String,
    ) -> Result<Transition, ServiceError> {
        if let Err(wait) = self
            .inner
            .command_rate
            .check(&source, tokio::time::Instant::now())
        {
            warn!(exercise_id = id, %command, %source, "control command refused: rate limited");
            return Err(ServiceError::TooMany {
                message: format!(
                    "more than {} control commands a minute from {source}; try again in {} s",
                    self.inner.config.max_commands_per_minute,
                    wait.as_secs_f64().ceil()
                ),
                retry_after: Some(wait),
            });
        }
        self.ask(id, |reply| Request::Control {
            command,
            reason,
            source,
            reply,
        })
        .await
    }

    /// Deletes an exercise that is not running or paused, with its delivery
    /// records and control log; its retained MQTT topics are cleared.
    pub async fn delete(&self, id: &str) -> Result<(), ServiceError> {
        if self
            .inner
            .unrestorable
            .read()
            .expect("registry")
            .contains_key(id)
        {
            self.inner.store.delete_exercise(id).await?;
            self.inner
                .unrestorable
                .write()
                .expect("registry")
                .remove(id);
            info!(
                exercise_id = id,
                "exercise that could not be restored deleted"
            );
            return Ok(());
        }
        // Stored and taking no more commands, deleted, then ended: a failure
        // on the way leaves the exercise as it was.
        let deleted = match self.ask(id, |reply| Request::Close { reply }).await {
            Ok(()) => self
                .inner
                .store
                .delete_exercise(id)
                .await
                .map_err(Into::into),
            Err(e) => Err(e),
        };
        if let Err(e) = deleted {
            let _ = self.ask(id, |reply| Request::Reopen { reply }).await;
            return Err(e);
        }
        let _ = self.ask(id, |reply| Request::End { reply }).await;
        self.inner.exercises.write().expect("registry").remove(id);
        reap(&mut *self.inner.tasks.lock().await);
        info!(exercise_id = id, "exercise deleted");
        Ok(())
    }

    /// Exercise actor tasks the service holds: running ones, and ended ones
    /// not yet reaped (each create and delete reaps those).
    pub async fn actor_tasks(&self) -> usize {
        self.inner.tasks.lock().await.len()
    }

    pub async fn deliveries(&self, id: &str) -> Result<Vec<DeliveryView>, ServiceError> {
        self.ask(id, |reply| Request::Deliveries { reply }).await
    }

    /// Retries one failed delivery, or every failed one (`key` None).
    pub async fn retry(&self, id: &str, key: Option<DeliveryKey>) -> Result<usize, ServiceError> {
        self.ask(id, |reply| Request::Retry { key, reply }).await
    }

    /// Sends a new inject (timeline form: id, type, content, optional fields;
    /// `time` ignored) to `teams`, now or at `at`.
    pub async fn send(
        &self,
        id: &str,
        teams: Vec<String>,
        inject: &Value,
        at: Option<u32>,
    ) -> Result<usize, ServiceError> {
        let inject = parse_live_inject(inject, at, self.inner.config.limits().max_inject_bytes)?;
        let at = at.map(ExerciseSeconds::new);
        self.ask(id, |reply| Request::Send {
            teams,
            inject,
            at,
            reply,
        })
        .await
    }

    pub async fn cancel(&self, id: &str, key: DeliveryKey) -> Result<(), ServiceError> {
        self.ask(id, |reply| Request::Cancel { key, reply }).await
    }

    pub async fn reschedule(
        &self,
        id: &str,
        key: DeliveryKey,
        at: u32,
    ) -> Result<(), ServiceError> {
        let at = ExerciseSeconds::new(at);
        self.ask(id, |reply| Request::Reschedule { key, at, reply })
            .await
    }

    /// Jumps a paused exercise to T+`to`; what it passes over is delivered at
    /// once or recorded as skipped.
    pub async fn seek(&self, id: &str, to: u32, mode: SeekMode) -> Result<usize, ServiceError> {
        let to = ExerciseSeconds::new(to);
        self.ask(id, |reply| Request::Seek { to, mode, reply })
            .await
    }

    /// Follows one team's feed; the dashboard counts as open while the
    /// returned value is held.
    pub async fn watch_team(
        &self,
        id: &str,
        team: &str,
        token: Option<&str>,
    ) -> Result<TeamWatch, ServiceError> {
        let (index, presence, names, link) = {
            let exercises = self.inner.exercises.read().expect("registry");
            let handle = exercises.get(id).ok_or_else(|| self.absent(id))?;
            let index = handle.team_index(id, team)?;
            let link = self.check_link(handle, id, team, index, token)?;
            let names = serde_json::json!({
                "exercise": {"id": id, "name": handle.scenario.name},
                "team": {"id": team, "name": handle.scenario.teams[index].name},
            });
            (index, handle.presence.clone(), names, link)
        };
        let seat = presence.join(index);
        let watch = self
            .ask(id, |reply| Request::Watch {
                team: Some(index),
                reply,
            })
            .await?;
        Ok(TeamWatch {
            watch,
            team: index,
            names,
            link,
            _seat: seat,
        })
    }

    /// Follows every delivery of an exercise, its clock and its dashboards.
    pub async fn watch(&self, id: &str) -> Result<ExerciseWatch, ServiceError> {
        let (snapshot, presence) = {
            let exercises = self.inner.exercises.read().expect("registry");
            let handle = exercises.get(id).ok_or_else(|| self.absent(id))?;
            (handle.snapshot.clone(), handle.presence.subscribe())
        };
        let watch = self
            .ask(id, |reply| Request::Watch { team: None, reply })
            .await?;
        Ok(ExerciseWatch {
            watch,
            snapshot,
            presence,
        })
    }

    /// Checks a team link token for `team` of exercise `id`, as its stream
    /// and receipts do; 401 without one, 403 for one that does not open it.
    pub fn check_team_link(
        &self,
        id: &str,
        team: &str,
        token: Option<&str>,
    ) -> Result<(), ServiceError> {
        let exercises = self.inner.exercises.read().expect("registry");
        let handle = exercises.get(id).ok_or_else(|| not_found(id))?;
        let index = handle.team_index(id, team)?;
        self.check_link(handle, id, team, index, token).map(drop)
    }

    /// Records that a dashboard of `team` showed these injects of `run`;
    /// answers how many receipts were new.
    pub async fn receipts(
        &self,
        id: &str,
        team: &str,
        token: Option<&str>,
        run: u16,
        inject_ids: Vec<String>,
    ) -> Result<usize, ServiceError> {
        let index = {
            let exercises = self.inner.exercises.read().expect("registry");
            let handle = exercises.get(id).ok_or_else(|| self.absent(id))?;
            let index = handle.team_index(id, team)?;
            self.check_link(handle, id, team, index, token)?;
            index
        };
        self.ask(id, |reply| Request::Receipts {
            team: index,
            run,
            inject_ids,
            reply,
        })
        .await
    }

    /// The scenario folders under MEDIA_STORAGE_PATH, by name; an invalid
    /// one is listed with its first problems.
    /// Every scenario folder under MEDIA_STORAGE_PATH, validated. The files
    /// are read on a blocking thread, one such job at a time, and a folder
    /// is validated again only when one of its files changed, so listing
    /// does not hold up the workers that wake the exercises.
    pub async fn scenarios(&self) -> Vec<ScenarioEntry> {
        let _turn = self.inner.file_work.acquire().await;
        let service = self.clone();
        tokio::task::spawn_blocking(move || service.scenarios_now())
            .await
            .unwrap_or_else(|e| {
                error!(error = %e, "listing the scenario folders failed");
                Vec::new()
            })
    }

    fn scenarios_now(&self) -> Vec<ScenarioEntry> {
        let Some(root) = &self.inner.config.media_storage_path else {
            return Vec::new();
        };
        let Ok(dir) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(Result::ok)
            .filter(|e| e.path().join("scenario.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| is_plain_name(name))
            .collect();
        names.sort();
        let storage = self
            .inner
            .config
            .timeline_storage_path
            .as_deref()
            .map(|path| fingerprint(path, false))
            .unwrap_or_default();
        let mut cache = self
            .inner
            .scenario_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cache.retain(|name, _| names.contains(name));
        names
            .into_iter()
            .map(|name| {
                let print = fingerprint(&root.join(&name), true) ^ storage;
                if let Some((seen, entry)) = cache.get(&name)
                    && *seen == print
                {
                    return entry.clone();
                }
                let entry = self.scenario_entry(name.clone());
                cache.insert(name, (print, entry.clone()));
                entry
            })
            .collect()
    }

    fn scenario_entry(&self, name: String) -> ScenarioEntry {
        match self.load(&ScenarioSource::Folder(name.clone())) {
            Ok(s) => ScenarioEntry {
                title: s.name.clone(),
                teams: s.teams.len(),
                injects: s.teams.iter().map(|t| t.timeline.injects.len()).sum(),
                duration_secs: s.duration.get(),
                error: None,
                name,
            },
            Err(e) => ScenarioEntry {
                name,
                title: None,
                teams: 0,
                injects: 0,
                duration_secs: 0,
                error: Some(e.to_string()),
            },
        }
    }

    /// Loads a scenario on a blocking thread (files, parsing, validation),
    /// one such job at a time.
    async fn load_off_workers(&self, source: ScenarioSource) -> Result<Scenario, ServiceError> {
        let _turn = self.inner.file_work.acquire().await;
        let service = self.clone();
        tokio::task::spawn_blocking(move || service.load(&source))
            .await
            .map_err(|e| ServiceError::Internal(format!("loading the scenario failed: {e}")))?
    }

    pub async fn control_log(&self, id: &str) -> Result<Vec<ControlRow>, ServiceError> {
        self.get(id)?;
        Ok(self.inner.store.control_log(id).await?)
    }

    /// What the after-action report of run `run` of exercise `id` (its
    /// current run when None) is made of. Archived runs come from the
    /// store; the current run of a hosted exercise from its actor, the
    /// records GET deliveries lists (the store may be a batch behind them).
    /// Whether the exercise had run `run` is for the report to judge.
    pub async fn report_source(
        &self,
        id: &str,
        run: Option<u32>,
    ) -> Result<ReportSource, ServiceError> {
        let row = self
            .inner
            .store
            .get_exercise(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let hosted = {
            let exercises = self.inner.exercises.read().expect("registry");
            exercises
                .get(id)
                .map(|h| (h.snapshot.borrow().clone(), h.scenario.clone()))
        };
        let is_hosted = hosted.is_some();
        let (state, current_run, scenario) = match hosted {
            Some((snapshot, scenario)) => (
                snapshot.state.as_str().to_owned(),
                i64::from(snapshot.run),
                Some(scenario),
            ),
            None => {
                let stored = serde_json::from_str(&row.scenario_json)
                    .ok()
                    .and_then(|v| scenario::load_inline(&v, &self.inner.config.limits()).ok());
                (row.state.clone(), row.run, stored.map(Arc::new))
            }
        };
        let run = run.map_or(current_run, i64::from);
        let deliveries = if is_hosted && run == current_run {
            RunDeliveries::Hosted(self.deliveries(id).await?)
        } else {
            RunDeliveries::Stored(self.inner.store.deliveries(id, run).await?)
        };
        Ok(ReportSource {
            exercise: row,
            state,
            current_run,
            run,
            scenario,
            deliveries,
            control_log: self.inner.store.control_log(id).await?,
        })
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
        self.inner.stop.send_replace(true);
        let mut tasks = self.inner.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
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
        }
    }

    fn load(&self, source: &ScenarioSource) -> Result<Scenario, ServiceError> {
        let limits = self.inner.config.limits();
        let result = match source {
            ScenarioSource::Inline(value) => scenario::load_inline(value, &limits),
            ScenarioSource::Folder(name) => {
                let Some(root) = &self.inner.config.media_storage_path else {
                    return Err(ServiceError::Invalid(vec![
                        "scenario folders need MEDIA_STORAGE_PATH to be set".into(),
                    ]));
                };
                if !is_plain_name(name) {
                    return Err(ServiceError::Invalid(vec![format!(
                        "scenario {name:?}: a folder name under MEDIA_STORAGE_PATH, without / or .."
                    )]));
                }
                let path = root.join(name).join("scenario.json");
                if !path.exists() {
                    return Err(ServiceError::NotFound(format!(
                        "no scenario folder {name:?}"
                    )));
                }
                scenario::load_package(
                    &path,
                    &limits,
                    self.inner.config.timeline_storage_path.as_deref(),
                )
                .map(|mut scenario| {
                    scenario.package = Some(name.clone());
                    scenario
                })
                .map_err(|errors| {
                    // Named as under MEDIA_STORAGE_PATH (`four-teams/...`),
                    // not where the server keeps it.
                    errors
                        .into_iter()
                        .map(|mut e| {
                            if let Ok(inside) = e.file.strip_prefix(root) {
                                e.file = inside.to_owned();
                            }
                            e
                        })
                        .collect()
                })
            }
        };
        result.map_err(|errors| {
            ServiceError::Invalid(errors.iter().map(ValidationError::to_string).collect())
        })
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

    fn info(&self, id: &str, handle: &Handle) -> ExerciseInfo {
        let dashboards = handle.presence.dashboards();
        let links = handle.links.borrow().clone();
        ExerciseInfo {
            id: id.to_owned(),
            name: handle.scenario.name.clone(),
            standing: Standing::Hosted(handle.snapshot.borrow().clone()),
            teams: handle
                .scenario
                .teams
                .iter()
                .enumerate()
                .map(|(i, t)| TeamLink {
                    id: t.id.to_string(),
                    name: t.name.clone(),
                    dashboard_url: self.dashboard_url(
                        id,
                        &handle.incarnation,
                        t.id.as_str(),
                        links[i],
                    ),
                    dashboards: dashboards.get(i).copied().unwrap_or(0),
                    link_expires: links[i].expires,
                    link_revoked: links[i].revoked,
                })
                .collect(),
            teams_connected: dashboards.iter().filter(|&&n| n > 0).count(),
            created_wall_ms: handle.created_wall_ms,
        }
    }

    async fn spawn(
        &self,
        actor: Actor,
        scenario: Arc<Scenario>,
        created_wall_ms: i64,
        incarnation: String,
        links: Vec<LinkState>,
    ) {
        let id = actor.id().to_string();
        let (requests, requests_rx) = mpsc::channel(exercise::REQUEST_QUEUE);
        let snapshot = actor.snapshots();
        self.inner.exercises.write().expect("registry").insert(
            id,
            Handle {
                requests,
                incarnation,
                snapshot,
                presence: actor.presence(),
                scenario,
                created_wall_ms,
                links: Arc::new(watch::Sender::new(links)),
            },
        );
        let mut stop = self.inner.stop.subscribe();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let mut tasks = self.inner.tasks.lock().await;
        reap(&mut tasks);
        tasks.spawn(actor.run(false, requests_rx, shutdown));
    }

    async fn recover(&self) -> Result<(), ServiceError> {
        let rows = self.inner.store.list_exercises().await?;
        for row in rows {
            let id = row.id.clone();
            let mut listed = NotRestored {
                name: row.name.clone(),
                created_wall_ms: row.created_wall_ms,
                detail: Unrestorable {
                    reason: String::new(),
                    run: row.run,
                    speed: row.speed,
                    duration_secs: row.duration_secs,
                },
            };
            match self.restore(row).await {
                Ok(()) => {}
                // The database failing says nothing about the exercise:
                // serve does not start.
                Err(ServiceError::Store(e)) if e.is_transient() => return Err(e.into()),
                Err(e) => {
                    // One bad row costs its own exercise only: it is listed
                    // with the reason, and every other exercise starts.
                    error!(exercise_id = %id, error = %e, "cannot restore exercise; it stays stored, listed as unrestorable");
                    listed.detail.reason = e.to_string();
                    self.inner
                        .unrestorable
                        .write()
                        .expect("registry")
                        .insert(id, listed);
                }
            }
        }
        Ok(())
    }

    async fn restore(&self, row: ExerciseRow) -> Result<(), ServiceError> {
        let speed = Speed::new(row.speed)
            .map_err(|e| ServiceError::Invalid(vec![format!("stored {e}")]))?;
        let package: Value = serde_json::from_str(&row.scenario_json)
            .map_err(|e| ServiceError::Invalid(vec![format!("stored scenario: {e}")]))?;
        let scenario =
            scenario::load_inline(&package, &self.inner.config.limits()).map_err(|errors| {
                ServiceError::Invalid(errors.iter().map(ValidationError::to_string).collect())
            })?;
        let id =
            ExerciseId::parse(&row.id).map_err(|e| ServiceError::Invalid(vec![e.to_string()]))?;
        let state = parse_state(&row.state)?;
        let stored_rows = self.inner.store.deliveries(&row.id, row.run).await?;
        let (records, live) = records_from_rows(&scenario, &stored_rows)?;
        let now = exercise::now();
        let clock = ClockRow {
            state: row.state.clone(),
            run: row.run,
            started_wall_ms: row.started_wall_ms,
            paused_total_ms: row.paused_total_ms,
            paused_since_wall_ms: row.paused_since_wall_ms,
            updated_wall_ms: row.updated_wall_ms,
            turn: row.turn,
        };
        let elapsed = stored_elapsed(&clock, speed, wall_ms(now.wall));
        let engine = Engine::restore(
            &scenario,
            speed,
            self.inner.config.delivery_policy(),
            Persisted {
                state,
                run: u16::try_from(row.run).unwrap_or(1),
                elapsed,
                started_wall: row.started_wall_ms.map(from_wall_ms),
                turn: u16::try_from(row.turn).unwrap_or(0),
                records,
            },
            now,
        );
        info!(
            exercise_id = %id,
            state = %state,
            at = %engine.exercise_time(now.mono),
            "exercise restored"
        );
        let scenario = Arc::new(scenario);
        let actor = Actor::restored(
            scenario.clone(),
            self.options(&id, speed),
            self.inner.mqtt.clone(),
            self.inner.journal.clone(),
            engine,
            live,
        );
        let stored = self.inner.store.team_links(id.as_str()).await?;
        let links = self
            .issue_links(id.as_str(), &scenario, Some(&stored))
            .await?;
        let incarnation = if row.incarnation.is_empty() {
            // Stored before incarnations existed: its links, which named
            // none, stop working; the new ones name this.
            let drawn = crate::access::links::new_incarnation();
            self.inner
                .store
                .set_incarnation(id.as_str(), &drawn)
                .await?;
            drawn
        } else {
            row.incarnation
        };
        self.spawn(actor, scenario, row.created_wall_ms, incarnation, links)
            .await;
        Ok(())
    }
}

/// How an exercise that could not be restored is listed.
fn unrestorable_info((id, not): (&String, &NotRestored)) -> ExerciseInfo {
    ExerciseInfo {
        id: id.clone(),
        name: not.name.clone(),
        standing: Standing::Unrestorable(not.detail.clone()),
        teams: Vec::new(),
        teams_connected: 0,
        created_wall_ms: not.created_wall_ms,
    }
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("no exercise {id:?}"))
}

fn parse_state(s: &str) -> Result<State, ServiceError> {
    State::parse(s)
        .ok_or_else(|| ServiceError::Invalid(vec![format!("stored state {s:?} is unknown")]))
}

/// An inject sent live: the timeline form, validated like a timeline's.
fn parse_live_inject(
    value: &Value,
    at: Option<u32>,
    max_inject_bytes: usize,
) -> Result<Inject, ServiceError> {
    let mut value = value.clone();
    if let Some(m) = value.as_object_mut() {
        m.insert("time".into(), at.unwrap_or(0).into());
    }
    let package = serde_json::json!({
        "duration": 1e6,
        "teams": [{"id": "t", "timeline_id": "live"}],
        "timelines": [{"id": "live", "injects": [value]}],
    });
    let limits = crate::config::Limits {
        max_duration_secs: u32::MAX,
        max_teams: 1,
        max_injects_per_timeline: 1,
        max_inject_bytes,
        max_file_bytes: 0,
    };
    let scenario = scenario::load_inline(&package, &limits).map_err(|errors| {
        ServiceError::Invalid(errors.iter().map(|e| e.reason.clone()).collect())
    })?;
    Ok(scenario.teams[0].timeline.injects[0].clone())
}

/// Injects sent live, with the index of their team.
type LiveInjects = Vec<(usize, Inject)>;

/// Delivery records from stored rows, in slot order, with the injects that
/// were sent live.
fn records_from_rows(
    scenario: &Scenario,
    rows: &[DeliveryRow],
) -> Result<(Vec<DeliveryRecord>, LiveInjects), ServiceError> {
    let mut records = Vec::with_capacity(rows.len());
    let mut live = Vec::new();
    for (slot, row) in rows.iter().enumerate() {
        let team = scenario
            .teams
            .iter()
            .position(|t| t.id.as_str() == row.team_id)
            .ok_or_else(|| {
                ServiceError::Invalid(vec![format!(
                    "stored team {:?} is not in the scenario",
                    row.team_id
                )])
            })?;
        let inject = match &row.inject_json {
            Some(json) => {
                let inject = serde_json::from_str(json)
                    .ok()
                    .and_then(|v| scenario::inject_from_value(&v))
                    .ok_or_else(|| {
                        ServiceError::Invalid(vec![format!(
                            "stored live inject {:?} is unreadable",
                            row.inject_id
                        )])
                    })?;
                live.push((team, inject));
                slot
            }
            None => {
                let id = InjectId::parse(&row.inject_id)
                    .map_err(|e| ServiceError::Invalid(vec![e.to_string()]))?;
                scenario.teams[team]
                    .timeline
                    .injects
                    .iter()
                    .position(|i| i.id == id)
                    .ok_or_else(|| {
                        ServiceError::Invalid(vec![format!(
                            "stored inject {:?} is not in the timeline",
                            row.inject_id
                        )])
                    })?
            }
        };
        let mut record = DeliveryRecord::new(
            team,
            inject,
            ExerciseSeconds::new(row.due_secs.max(0) as u32),
        );
        if scenario.turns.is_some() && row.inject_json.is_none() {
            record.turn = scenario.teams[team].timeline.injects[inject]
                .turn()
                .unwrap_or(1);
        }
        record.status = DeliveryStatus::parse(&row.status).unwrap_or(DeliveryStatus::Pending);
        record.attempts = row.attempts.max(0) as u32;
        record.due_wall = row.due_wall_ms.map(from_wall_ms);
        record.published_wall = row.published_wall_ms.map(from_wall_ms);
        record.acked_wall = row.acked_wall_ms.map(from_wall_ms);
        // A latency that is not a number of milliseconds is dropped, not fatal.
        record.latency = row
            .latency_ms
            .and_then(|ms| Duration::try_from_secs_f64(ms.max(0.0) / 1000.0).ok());
        record.late = row.late;
        record.received_wall = row.received_wall_ms.map(from_wall_ms);
        record.receipt_latency = record
            .received_wall
            .map(|shown| crate::core::engine::receipt_latency(record.due_wall, shown));
        record.last_error = row.last_error.clone();
        records.push(record);
    }
    if records.is_empty() {
        warn!("restored an exercise with no delivery records");
    }
    Ok((records, live))
}

/// The configured tokens and the issued (stored) ones.
async fn load_tokens(
    store: &Store,
    config: &Config,
) -> Result<crate::access::tokens::Tokens, ServiceError> {
    use crate::access::tokens::{Role, TokenEntry, Tokens, parse_configured};
    let tokens = Tokens::default();
    for (n, raw) in config
        .api_tokens
        .iter()
        .filter(|r| !r.trim().is_empty())
        .enumerate()
    {
        let (role, hash) = parse_configured(raw)
            .map_err(|e| ServiceError::Invalid(vec![format!("API_TOKENS: {e}")]))?;
        tokens.add(
            hash,
            TokenEntry {
                id: format!("config-{}", n + 1),
                name: Some("API_TOKENS".into()),
                role,
                configured: true,
                created_wall_ms: 0,
            },
        );
    }
    for row in store.tokens().await? {
        let Some(role) = Role::parse(&row.role) else {
            warn!(token_id = %row.id, role = %row.role, "stored token with an unknown role is ignored");
            continue;
        };
        tokens.add(
            row.hash,
            TokenEntry {
                id: row.id,
                name: row.name,
                role,
                configured: false,
                created_wall_ms: row.created_wall_ms,
            },
        );
    }
    Ok(tokens)
}

/// Drops the outcomes of actors that have ended (deleted exercises): a
/// `JoinSet` keeps each finished task's output until it is joined, which held
/// about 100 KB per deleted exercise for the life of the process.
fn reap(tasks: &mut JoinSet<Outcome>) {
    while let Some(ended) = tasks.try_join_next() {
        if let Err(e) = ended
            && e.is_panic()
        {
            error!(error = %e, "an exercise actor panicked");
        }
    }
}

/// The key team links are signed with: the stored secret, or a new one
/// stored now (so links outlive restarts).
async fn link_key(store: &Store) -> Result<LinkKey, ServiceError> {
    use base64::Engine as _;
    let fresh = base64::engine::general_purpose::STANDARD.encode(LinkKey::new_secret());
    let stored = store.setting_or_insert("team_link_secret", &fresh).await?;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(stored)
        .map_err(|e| {
            ServiceError::Internal(format!("the stored team link secret is unreadable: {e}"))
        })?;
    Ok(LinkKey::from_secret(&secret))
}

/// An id as one URL path segment: ids may hold spaces, `?` or `%`.
fn path_segment(id: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}

/// A hash of the names, sizes and modification times of the files in
/// `folder` (and, with `deep`, in its folders): changes when a file does.
fn fingerprint(folder: &Path, deep: bool) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut pending = vec![folder.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let Ok(meta) = std::fs::metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                if deep {
                    pending.push(entry.path());
                }
                continue;
            }
            entry.path().hash(&mut hasher);
            meta.len().hash(&mut hasher);
            meta.modified().ok().hash(&mut hasher);
        }
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_folder_names_cannot_escape_the_media_root() {
        for (name, ok) in [
            ("maritime", true),
            ("four-teams", true),
            ("..", false),
            ("../etc", false),
            ("a/b", false),
            ("/abs", false),
            ("", false),
            (".", false),
            ("a\\b", false),
        ] {
            assert_eq!(is_plain_name(name), ok, "{name:?}");
        }
    }
}
