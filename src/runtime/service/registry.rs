//! The exercises `serve` hosts: creating, listing, commanding and deleting
//! them, each with its actor task, and what a run leaves for its report.

use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::access::links::LinkState;
use crate::core::{Command, Transition};
use crate::domain::{ExerciseId, Speed};
use crate::runtime::exercise::{self, Actor, Request, wall_ms};
use crate::scenario::{self, Scenario};
use crate::store::{ControlRow, ExerciseRow, StoreError};

use super::{
    CreateExercise, ExerciseInfo, Handle, NotRestored, ReportSource, RunDeliveries, Service,
    ServiceError, Standing, TeamLink, not_found,
};

impl Service {
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
        let mut actor = Actor::new(
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
        // On several nodes, this node holds its lease from the start, stored
        // in the same transaction.
        let stored = match self.node() {
            Some(node) => self
                .inner
                .store
                .insert_exercise_leased(
                    &row,
                    &actor.delivery_rows(),
                    &node.settings.id,
                    node.settings.timing.ttl.as_millis() as i64,
                )
                .await
                .map(Some),
            None => self.inner.store.insert_exercise(&row).await.map(|()| None),
        };
        let epoch = stored.map_err(|e| match e {
            StoreError::Conflict { .. } => {
                ServiceError::Conflict(format!("exercise {id} already exists"))
            }
            other => other.into(),
        })?;
        // The rest of what it is stored with; a failure takes the exercise
        // back out, so that a refused create leaves nothing behind.
        let stored = async {
            if epoch.is_none() {
                self.inner
                    .store
                    .insert_deliveries(&actor.delivery_rows())
                    .await?;
            }
            let links = self.issue_links(id.as_str(), &scenario, None).await?;
            Ok::<_, ServiceError>((links, epoch))
        }
        .await;
        let (links, epoch) = match stored {
            Ok(stored) => stored,
            Err(e) => {
                if let Err(cleanup) = self.inner.store.delete_exercise(id.as_str()).await {
                    error!(exercise_id = %id, error = %cleanup, "cannot remove a half-created exercise; it is restored at the next start");
                }
                return Err(e);
            }
        };
        info!(exercise_id = %id, teams = scenario.teams.len(), speed = speed.get(), "exercise created");
        let (journal, lost) = self.journal_for(id.as_str(), &row.incarnation, epoch);
        actor.set_journal(journal);
        let lease = epoch.zip(lost);
        self.spawn(
            actor,
            scenario,
            row.created_wall_ms,
            row.incarnation,
            links,
            lease,
        )
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
    pub(super) fn absent(&self, id: &str) -> ServiceError {
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
        if let Err(refused) = self
            .inner
            .command_rate
            .check(&source, tokio::time::Instant::now())
        {
            warn!(exercise_id = id, %command, %source, "control command refused: rate limited");
            return Err(ServiceError::TooMany {
                message: refused.describe("control commands", &format!("from {source}")),
                retry_after: Some(refused.retry_after),
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
            self.delete_stored(id).await?;
            self.inner
                .unrestorable
                .write()
                .expect("registry")
                .remove(id);
            self.forget_journal(id);
            info!(
                exercise_id = id,
                "exercise that could not be restored deleted"
            );
            return Ok(());
        }
        // Stored and taking no more commands, deleted, then ended: a failure
        // on the way leaves the exercise as it was.
        let deleted = match self.ask(id, |reply| Request::Close { reply }).await {
            Ok(()) => self.delete_stored(id).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = deleted {
            let _ = self.ask(id, |reply| Request::Reopen { reply }).await;
            return Err(e);
        }
        let _ = self.ask(id, |reply| Request::End { reply }).await;
        self.inner.exercises.write().expect("registry").remove(id);
        self.forget_journal(id);
        reap(&mut *self.inner.tasks.lock().await);
        info!(exercise_id = id, "exercise deleted");
        Ok(())
    }

    /// Exercise actor tasks the service holds: running ones, and ended ones
    /// not yet reaped (each create and delete reaps those).
    pub async fn actor_tasks(&self) -> usize {
        self.inner.tasks.lock().await.len()
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
            plays: self.inner.store.play_events(id, run).await?,
        })
    }

    fn info(&self, id: &str, handle: &Handle) -> ExerciseInfo {
        let dashboards = handle.presence.dashboards();
        let links = handle.links.borrow().clone();
        let snapshot = handle.snapshot.borrow().clone();
        ExerciseInfo {
            id: id.to_owned(),
            name: handle.scenario.name.clone(),
            scenario: Some(handle.scenario.clone()),
            standing: Standing::Hosted(snapshot.clone()),
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
                    counts: snapshot.teams.get(i).copied().unwrap_or_default(),
                    last_seen_wall_ms: handle.presence.last_seen(i),
                })
                .collect(),
            teams_connected: dashboards.iter().filter(|&&n| n > 0).count(),
            created_wall_ms: handle.created_wall_ms,
        }
    }

    /// Runs `actor`; on several nodes under the lease held at `epoch`,
    /// ending at once when `lost` (the fence of its journal failed).
    pub(super) async fn spawn(
        &self,
        actor: Actor,
        scenario: Arc<Scenario>,
        created_wall_ms: i64,
        incarnation: String,
        links: Vec<LinkState>,
        lease: Option<(i64, watch::Receiver<bool>)>,
    ) {
        let id = actor.id().to_string();
        let (requests, requests_rx) = mpsc::channel(exercise::REQUEST_QUEUE);
        let snapshot = actor.snapshots();
        let presence = actor.presence();
        let mut stop = self.inner.stop.subscribe();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let mut tasks = self.inner.tasks.lock().await;
        reap(&mut tasks);
        let mut actor = actor;
        let (epoch, abort, trust) = match (lease, self.node()) {
            (Some((epoch, mut lost)), Some(node)) => {
                let trust = node.trust.for_exercise();
                actor.set_trust(trust.clone());
                let service = Arc::downgrade(&self.inner);
                let fenced_id = id.clone();
                let abort = tasks.spawn(async move {
                    tokio::select! {
                        _ = actor.run(false, requests_rx, shutdown) => {}
                        _ = lost.wait_for(|l| *l) => {
                            warn!(exercise_id = %fenced_id, epoch, "ownership lost (the fence refused a write): this node stops running the exercise");
                            if let Some(inner) = service.upgrade() {
                                Service { inner }.relinquish(&fenced_id, epoch);
                            }
                        }
                    }
                });
                (Some(epoch), Some(abort), Some(trust))
            }
            _ => {
                tasks.spawn(async move {
                    actor.run(false, requests_rx, shutdown).await;
                });
                (None, None, None)
            }
        };
        self.inner.exercises.write().expect("registry").insert(
            id,
            Handle {
                lease: epoch.zip(abort).zip(trust).map(|((epoch, abort), trust)| {
                    super::HeldLease {
                        epoch,
                        abort,
                        trust,
                    }
                }),
                requests,
                incarnation,
                snapshot,
                presence,
                scenario,
                created_wall_ms,
                links: Arc::new(watch::Sender::new(links)),
            },
        );
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
        scenario: None,
    }
}

/// Drops the outcomes of actors that have ended (deleted exercises): a
/// `JoinSet` keeps each finished task's output until it is joined, which held
/// about 100 KB per deleted exercise for the life of the process.
fn reap(tasks: &mut JoinSet<()>) {
    while let Some(ended) = tasks.try_join_next() {
        if let Err(e) = ended
            && e.is_panic()
        {
            error!(error = %e, "an exercise actor panicked");
        }
    }
}
