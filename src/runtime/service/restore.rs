//! Bringing stored exercises back when `serve` starts: a running one goes on
//! at the exercise time it would have reached; a row that cannot be restored
//! is listed with why.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::{error, info, warn};

use crate::core::engine::Persisted;
use crate::core::{DeliveryRecord, DeliveryStatus, Engine, State};
use crate::domain::{ExerciseId, ExerciseSeconds, InjectId, Speed};
use crate::runtime::exercise::{self, Actor, from_wall_ms, stored_elapsed, wall_ms};
use crate::scenario::{self, Inject, Scenario, ValidationError};
use crate::store::{ClockRow, DeliveryRow, ExerciseRow};

use super::{NotRestored, Service, ServiceError, Unrestorable};

impl Service {
    pub(super) async fn recover(&self) -> Result<(), ServiceError> {
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
            match self.restore(row, None).await {
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

    /// Lists exercise `id`, which this node holds but cannot run, with why.
    pub(super) async fn list_unrestorable(&self, id: &str, reason: String) {
        // Listed even when its row cannot be read now: a held exercise that
        // is nowhere would answer neither requests nor a delete.
        let row = self.inner.store.get_exercise(id).await.ok().flatten();
        self.inner.unrestorable.write().expect("registry").insert(
            id.to_owned(),
            NotRestored {
                name: row.as_ref().and_then(|r| r.name.clone()),
                created_wall_ms: row.as_ref().map_or(0, |r| r.created_wall_ms),
                detail: Unrestorable {
                    reason,
                    run: row.as_ref().map_or(0, |r| r.run),
                    speed: row.as_ref().map_or(0.0, |r| r.speed),
                    duration_secs: row.as_ref().map_or(0, |r| r.duration_secs),
                },
            },
        );
    }

    /// Rebuilds the actor of a stored exercise; on several nodes, under the
    /// lease just claimed at `epoch`.
    pub(super) async fn restore(
        &self,
        row: ExerciseRow,
        epoch: Option<i64>,
    ) -> Result<(), ServiceError> {
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
            &scenario.plan(),
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
        let (journal, lost) = self.journal_for(id.as_str(), &incarnation, epoch);
        let actor = Actor::restored(
            scenario.clone(),
            self.options(&id, speed),
            self.inner.mqtt.clone(),
            journal,
            engine,
            live,
        );
        self.spawn(
            actor,
            scenario,
            row.created_wall_ms,
            incarnation,
            links,
            epoch.zip(lost),
        )
        .await;
        Ok(())
    }
}

fn parse_state(s: &str) -> Result<State, ServiceError> {
    State::parse(s)
        .ok_or_else(|| ServiceError::Invalid(vec![format!("stored state {s:?} is unknown")]))
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
        record.watched = row.watched;
        record.published_at = row
            .sent_secs
            .map(|s| ExerciseSeconds::new(s.clamp(0, i64::from(u32::MAX)) as u32));
        // Only a receipt of what a dashboard watched go out measures latency.
        record.receipt_latency = record
            .received_wall
            .filter(|_| record.watched == Some(true))
            .map(|shown| crate::core::engine::receipt_latency(record.due_wall, shown));
        record.last_error = row.last_error.clone();
        // Unreadable play state reads as none: the plan's starting state.
        record.play = row
            .play
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        records.push(record);
    }
    if records.is_empty() {
        warn!("restored an exercise with no delivery records");
    }
    Ok((records, live))
}
