//! What controllers and dashboards ask of a hosted exercise's actor: its
//! deliveries, edits to them, live follows and receipts.

use serde_json::Value;

use crate::core::engine::SeekMode;
use crate::domain::ExerciseSeconds;
use crate::runtime::exercise::{DeliveryKey, DeliveryView, Request};
use crate::scenario::{self, Inject};

use super::{ExerciseWatch, Service, ServiceError, TeamWatch};

impl Service {
    pub async fn deliveries(&self, id: &str) -> Result<Vec<DeliveryView>, ServiceError> {
        self.ask(id, |reply| Request::Deliveries { reply }).await
    }

    /// Retries one failed delivery, or every failed one (`key` None).
    pub async fn retry(
        &self,
        id: &str,
        key: Option<DeliveryKey>,
        source: String,
    ) -> Result<usize, ServiceError> {
        self.ask(id, |reply| Request::Retry { key, source, reply })
            .await
    }

    /// Sends a new inject (timeline form: id, type, content, optional fields;
    /// `time` ignored) to `teams`, now or at `at`.
    pub async fn send(
        &self,
        id: &str,
        teams: Vec<String>,
        inject: &Value,
        at: Option<u32>,
        source: String,
    ) -> Result<usize, ServiceError> {
        let inject = parse_live_inject(inject, at, self.inner.config.limits().max_inject_bytes)?;
        let at = at.map(ExerciseSeconds::new);
        self.ask(id, |reply| Request::Send {
            teams,
            inject,
            at,
            source,
            reply,
        })
        .await
    }

    pub async fn cancel(
        &self,
        id: &str,
        key: DeliveryKey,
        source: String,
    ) -> Result<(), ServiceError> {
        self.ask(id, |reply| Request::Cancel { key, source, reply })
            .await
    }

    pub async fn reschedule(
        &self,
        id: &str,
        key: DeliveryKey,
        at: u32,
        source: String,
    ) -> Result<(), ServiceError> {
        let at = ExerciseSeconds::new(at);
        self.ask(id, |reply| Request::Reschedule {
            key,
            at,
            source,
            reply,
        })
        .await
    }

    /// Jumps a paused exercise to T+`to`; what it passes over is delivered at
    /// once or recorded as skipped.
    pub async fn seek(
        &self,
        id: &str,
        to: u32,
        mode: SeekMode,
        source: String,
    ) -> Result<usize, ServiceError> {
        let to = ExerciseSeconds::new(to);
        self.ask(id, |reply| Request::Seek {
            to,
            mode,
            source,
            reply,
        })
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
            // The public channels this team sees, to post to.
            let channels: Vec<Value> = handle
                .scenario
                .channels
                .iter()
                .filter(|c| c.visible_to.iter().any(|t| t.as_str() == team))
                .map(|c| serde_json::json!({"id": c.id, "name": c.name, "kind": c.kind}))
                .collect();
            let mut names = serde_json::json!({
                "exercise": {"id": id, "name": handle.scenario.name},
                "team": {"id": team, "name": handle.scenario.teams[index].name},
                "channels": channels,
            });
            // The in-world time of day at T+0, when the scenario gives one.
            if let Some(start) = handle.scenario.start_time {
                names["exercise"]["start_time"] = crate::scenario::format_start_time(start).into();
            }
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
        let index = self.check_team_link(id, team, token)?;
        self.ask(id, |reply| Request::Receipts {
            team: index,
            run,
            inject_ids,
            reply,
        })
        .await
    }
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
