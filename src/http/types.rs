//! The wire types several handlers share: an exercise, its teams and
//! counts, a delivery record, a transition, a control-log entry and a
//! scenario, with the names of states, commands and statuses, and their
//! conversions from the domain values. They are also the OpenAPI schemas.
//! A type only one resource uses sits with its handlers.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::core::{Command, Counts, DeliveryStatus, State as ExerciseState, Transition};
use crate::domain::ExerciseSeconds;
use crate::http::ApiError;
use crate::mqtt::wire::timestamp;
use crate::runtime::exercise::{DeliveryView, from_wall_ms};
use crate::runtime::service::{ExerciseInfo, Standing, TeamLink};
use crate::store::ControlRow;

/// An exercise and where it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExerciseResponse {
    pub id: String,
    pub name: Option<String>,
    pub state: StateName,
    /// Exercise seconds since T+0.
    pub exercise_time: u32,
    /// `T+mm:ss`.
    #[schema(example = "T+05:32")]
    pub formatted: String,
    /// Duration in exercise seconds.
    pub total: u32,
    pub speed: f64,
    /// Starts at 1; every reset begins a new run.
    pub run: u16,
    /// The broker connection is up.
    pub connected: bool,
    /// Teams with at least one dashboard open.
    pub teams_connected: usize,
    /// Turn-based exercises: the turn under way (or just over); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn: Option<u16>,
    /// Turn-based exercises: how many turns there are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_turns: Option<u16>,
    pub counts: CountsResponse,
    pub teams: Vec<TeamResponse>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// State `unrestorable`: why the stored exercise could not be brought
    /// back at start (it is listed, refuses commands, and can be deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_error: Option<String>,
    /// Two-way play: the scenario's objectives, which evaluators score.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objectives: Vec<ObjectiveResponse>,
    /// Two-way play: the scenario's public channels and who sees each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectiveResponse {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelResponse {
    pub id: String,
    /// The inject type its posts reach the feeds as.
    pub kind: String,
    pub name: Option<String>,
    pub visible_to: Vec<String>,
}

/// Delivery records of the current run by status.
#[derive(Debug, Serialize, ToSchema)]
pub struct CountsResponse {
    pub scheduled: usize,
    pub pending: usize,
    pub delivered: usize,
    /// Delivered later than TIMER_PRECISION_MS after due.
    pub late: usize,
    pub retrying: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub skipped: usize,
    /// Mean of acknowledged minus due over the delivered, in milliseconds.
    pub average_latency_ms: f64,
    /// Shown on a team dashboard.
    pub received: usize,
    /// Delivered and not yet shown on a team dashboard.
    pub unread: usize,
    /// Sent while no dashboard of the team was open: a later receipt does
    /// not count toward the receipt latency.
    pub not_watched: usize,
    /// Mean of shown minus due over the received that were sent while a
    /// dashboard of the team was open, in milliseconds.
    pub average_receipt_latency_ms: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamResponse {
    pub id: String,
    pub name: Option<String>,
    /// The team dashboard's address with its link's token (without one
    /// while the link is revoked). Null for observers: a working link is
    /// for controllers to hand out.
    pub dashboard_url: Option<String>,
    /// Dashboards of this team open now.
    pub dashboards: usize,
    /// When the dashboard link expires.
    #[schema(format = DateTime)]
    pub link_expires_at: String,
    /// Revoked and not re-issued: `dashboard_url` carries no token.
    pub link_revoked: bool,
    /// How the team is doing in the current run.
    pub summary: TeamSummary,
}

/// One team's part of the current run: what reached it, what its
/// dashboards showed, and whether it needs attention.
#[derive(Debug, Serialize, ToSchema)]
pub struct TeamSummary {
    /// Acknowledged by the broker.
    pub delivered: usize,
    /// Shown on a dashboard of the team (receipts).
    pub shown: usize,
    /// Delivered and not yet shown on a dashboard.
    pub unread: usize,
    /// Delivered later than TIMER_PRECISION_MS after due.
    pub late: usize,
    /// Every attempt failed.
    pub failed: usize,
    /// Sent while no dashboard of the team was open.
    pub not_watched: usize,
    /// Mean on-screen latency of what was sent while a dashboard was open
    /// (ms); null when no such inject was shown yet.
    pub average_receipt_latency_ms: Option<f64>,
    /// When a dashboard of the team was last seen: opened, closed or sent
    /// a receipt (null: not since the service started).
    #[schema(format = DateTime)]
    pub last_seen_at: Option<String>,
    /// Why the team needs attention (failed deliveries, unread injects with
    /// no dashboard open); empty when it does not.
    pub attention: Vec<String>,
}

/// The path of a team's routes: `/exercises/{id}/teams/{team}/...`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TeamPath {
    /// Exercise id
    pub id: String,
    /// Team id
    pub team: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScenarioResponse {
    /// The folder name under MEDIA_STORAGE_PATH, as `scenario` in a create request.
    #[schema(example = "four-teams")]
    pub name: String,
    pub title: Option<String>,
    pub teams: usize,
    pub injects: usize,
    /// Seconds.
    pub duration: u32,
    /// Why it cannot be used, when it is invalid.
    pub error: Option<String>,
}

/// A lifecycle change a command made.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransitionResponse {
    pub from: StateName,
    pub to: StateName,
    pub command: Option<CommandName>,
    pub reason: Option<String>,
    /// Exercise second at which it happened.
    pub exercise_time: u32,
}

/// One (team, inject) pair of the current run.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryResponse {
    pub team_id: String,
    pub inject_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Exercise second it is due.
    pub due_exercise_time: u32,
    /// UTC time it came due.
    #[schema(format = DateTime)]
    pub due_at: Option<String>,
    /// UTC time of the last publish.
    #[schema(format = DateTime)]
    pub published_at: Option<String>,
    /// UTC time the broker acknowledged it.
    #[schema(format = DateTime)]
    pub acknowledged_at: Option<String>,
    pub attempts: u32,
    pub status: DeliveryStatusName,
    /// Acknowledged minus due.
    pub latency_ms: Option<f64>,
    pub late: bool,
    /// When a team dashboard showed it.
    #[schema(format = DateTime)]
    pub received_at: Option<String>,
    /// Shown minus due; only when a dashboard of the team was open as it
    /// went out (`watched`).
    pub receipt_latency_ms: Option<f64>,
    /// Whether a dashboard of the team was open when it first went out
    /// (null: not sent yet).
    pub watched: Option<bool>,
    pub last_error: Option<String>,
    /// Sent live through the API rather than from the scenario.
    pub live: bool,
    /// Two-way play: the team's outcome on an inject that expects an
    /// answer (`pending`, `met`, `late`, `wrong`, `missed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The exercise second its answer window closes, once it went out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_window_end: Option<u32>,
    /// The team's first answer: the exercise second and the option chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choice: Option<String>,
    /// A conditional inject: `held` (waiting for its condition),
    /// `released` (due at `due_exercise_time`) or `skipped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Why a skipped conditional inject will never go out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// What a conditional inject waits for, in words: `after q: choice:B
    /// (+5 s)` or `decision escalate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waits_for: Option<String>,
    /// The decision a conditional inject waits for, if that is its condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
}

/// One command as the audit log recorded it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlLogEntry {
    #[schema(format = DateTime)]
    pub at: String,
    pub command: String,
    pub reason: Option<String>,
    /// `api:<client ip>`, `mqtt`, `signal` or `start-up`.
    pub source: String,
    pub accepted: bool,
    /// Why it was refused, or what an edit did (a seek: from where to
    /// where, how many injects it passed over).
    pub message: Option<String>,
    /// The exercise second it took effect at (a seek: the second it jumped
    /// to); null for entries stored before it was kept.
    pub exercise_time: Option<i64>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    Initialized,
    Running,
    Paused,
    Stopped,
    Completed,
    /// Stored, but it could not be restored at start: see `restore_error`.
    Unrestorable,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CommandName {
    Start,
    Pause,
    Resume,
    Stop,
    Reset,
    #[serde(rename = "next_turn")]
    NextTurn,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatusName {
    Pending,
    Delivered,
    Retrying,
    Failed,
    Cancelled,
    Skipped,
}

pub(super) fn parse_status(raw: &str) -> Result<DeliveryStatus, ApiError> {
    DeliveryStatus::parse(raw).ok_or_else(|| {
        ApiError::invalid(format!(
            "status {raw:?}: expected pending, delivered, retrying, failed, cancelled or skipped"
        ))
    })
}

pub(super) fn wall(ms: i64) -> String {
    timestamp(from_wall_ms(ms))
}

fn opt_timestamp(at: Option<OffsetDateTime>) -> Option<String> {
    at.map(timestamp)
}

impl From<ExerciseInfo> for ExerciseResponse {
    fn from(e: ExerciseInfo) -> Self {
        let (s, restore_error) = match e.standing {
            Standing::Hosted(s) => (s, None),
            Standing::Unrestorable(u) => {
                return Self {
                    id: e.id,
                    name: e.name,
                    state: StateName::Unrestorable,
                    exercise_time: 0,
                    formatted: ExerciseSeconds::ZERO.to_string(),
                    total: u32::try_from(u.duration_secs).unwrap_or(0),
                    // As stored: NaN and infinities are written as null.
                    speed: u.speed,
                    run: u16::try_from(u.run).unwrap_or(0),
                    connected: false,
                    teams_connected: 0,
                    turn: None,
                    total_turns: None,
                    counts: Counts::default().into(),
                    teams: Vec::new(),
                    created_at: wall(e.created_wall_ms),
                    restore_error: Some(u.reason),
                    objectives: Vec::new(),
                    channels: Vec::new(),
                };
            }
        };
        Self {
            id: e.id,
            name: e.name,
            state: s.state.into(),
            exercise_time: s.time.get(),
            formatted: s.time.to_string(),
            total: s.total.get(),
            speed: s.speed.get(),
            run: s.run,
            connected: s.connected,
            teams_connected: e.teams_connected,
            turn: s.turn.map(|(turn, _)| turn),
            total_turns: s.turn.map(|(_, total)| total),
            counts: s.counts.into(),
            restore_error,
            teams: e.teams.into_iter().map(TeamResponse::from).collect(),
            created_at: wall(e.created_wall_ms),
            objectives: e.scenario.as_deref().map_or_else(Vec::new, |s| {
                s.objectives
                    .iter()
                    .map(|o| ObjectiveResponse {
                        id: o.id.clone(),
                        title: o.title.clone(),
                        description: o.description.clone(),
                    })
                    .collect()
            }),
            channels: e.scenario.as_deref().map_or_else(Vec::new, |s| {
                s.channels
                    .iter()
                    .map(|c| ChannelResponse {
                        id: c.id.clone(),
                        kind: c.kind.clone(),
                        name: c.name.clone(),
                        visible_to: c.visible_to.iter().map(ToString::to_string).collect(),
                    })
                    .collect()
            }),
        }
    }
}

impl ExerciseResponse {
    /// The exercise as a caller with `role` may see it: the teams' signed
    /// dashboard links only for controllers and admins (who may also
    /// re-issue them), never for observers.
    pub fn for_caller(info: ExerciseInfo, role: Option<crate::access::tokens::Role>) -> Self {
        let mut response = Self::from(info);
        if role.is_none_or(|r| r < crate::access::tokens::Role::Controller) {
            for team in &mut response.teams {
                team.dashboard_url = None;
            }
        }
        response
    }
}

impl From<TeamLink> for TeamResponse {
    fn from(t: TeamLink) -> Self {
        Self {
            id: t.id,
            name: t.name,
            dashboard_url: Some(t.dashboard_url),
            dashboards: t.dashboards,
            link_expires_at: timestamp(
                OffsetDateTime::from_unix_timestamp(t.link_expires)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            ),
            link_revoked: t.link_revoked,
            summary: TeamSummary::new(&t.counts, t.dashboards, t.last_seen_wall_ms),
        }
    }
}

impl TeamSummary {
    fn new(c: &Counts, dashboards: usize, last_seen_wall_ms: Option<i64>) -> Self {
        let mut attention = Vec::new();
        if c.failed > 0 {
            attention.push(format!("{} failed", c.failed));
        }
        if dashboards == 0 && c.unread > 0 {
            attention.push(format!("{} unread, no dashboard open", c.unread));
        }
        Self {
            delivered: c.delivered,
            shown: c.received,
            unread: c.unread,
            late: c.late,
            failed: c.failed,
            not_watched: c.not_watched,
            average_receipt_latency_ms: (c.watched_received > 0)
                .then_some(c.average_receipt_latency_ms),
            last_seen_at: last_seen_wall_ms.map(wall),
            attention,
        }
    }
}

impl From<Counts> for CountsResponse {
    fn from(c: Counts) -> Self {
        Self {
            scheduled: c.scheduled,
            pending: c.pending,
            delivered: c.delivered,
            late: c.late,
            retrying: c.retrying,
            failed: c.failed,
            cancelled: c.cancelled,
            skipped: c.skipped,
            average_latency_ms: c.average_latency_ms,
            received: c.received,
            unread: c.unread,
            not_watched: c.not_watched,
            average_receipt_latency_ms: c.average_receipt_latency_ms,
        }
    }
}

impl From<Transition> for TransitionResponse {
    fn from(t: Transition) -> Self {
        Self {
            from: t.from.into(),
            to: t.to.into(),
            command: t.command.map(Into::into),
            reason: t.reason,
            exercise_time: t.at.get(),
        }
    }
}

impl From<DeliveryView> for DeliveryResponse {
    fn from(v: DeliveryView) -> Self {
        let r = v.record;
        Self {
            team_id: v.team_id,
            inject_id: v.inject_id,
            kind: v.kind,
            due_exercise_time: r.due.get(),
            due_at: opt_timestamp(r.due_wall),
            published_at: opt_timestamp(r.published_wall),
            acknowledged_at: opt_timestamp(r.acked_wall),
            attempts: r.attempts,
            status: r.status.into(),
            latency_ms: r.latency.map(|l| l.as_secs_f64() * 1000.0),
            late: r.late,
            received_at: opt_timestamp(r.received_wall),
            receipt_latency_ms: r.receipt_latency.map(|l| l.as_secs_f64() * 1000.0),
            watched: r.watched,
            last_error: r.last_error,
            live: v.live,
            outcome: r.play.outcome.map(|o| o.as_str().to_owned()),
            answer_window_end: r.play.window_end,
            answered_at: r.play.answer.as_ref().map(|a| a.at),
            choice: r.play.answer.and_then(|a| a.choice),
            condition: r.play.gate.as_ref().map(|g| g.as_str().to_owned()),
            skip_reason: v.skip_reason,
            waits_for: v.waits_for,
            decision: v.decision,
        }
    }
}

impl From<ControlRow> for ControlLogEntry {
    fn from(r: ControlRow) -> Self {
        Self {
            at: wall(r.at_wall_ms),
            command: r.command,
            reason: r.reason,
            source: r.source,
            accepted: r.accepted,
            message: r.message,
            exercise_time: r.exercise_secs,
        }
    }
}

impl From<ExerciseState> for StateName {
    fn from(s: ExerciseState) -> Self {
        match s {
            ExerciseState::Initialized => StateName::Initialized,
            ExerciseState::Running => StateName::Running,
            ExerciseState::Paused => StateName::Paused,
            ExerciseState::Stopped => StateName::Stopped,
            ExerciseState::Completed => StateName::Completed,
        }
    }
}

impl From<Command> for CommandName {
    fn from(c: Command) -> Self {
        match c {
            Command::Start => CommandName::Start,
            Command::Pause => CommandName::Pause,
            Command::Resume => CommandName::Resume,
            Command::Stop => CommandName::Stop,
            Command::Reset => CommandName::Reset,
            Command::NextTurn => CommandName::NextTurn,
        }
    }
}

impl From<DeliveryStatus> for DeliveryStatusName {
    fn from(s: DeliveryStatus) -> Self {
        match s {
            DeliveryStatus::Pending => DeliveryStatusName::Pending,
            DeliveryStatus::Delivered => DeliveryStatusName::Delivered,
            DeliveryStatus::Retrying => DeliveryStatusName::Retrying,
            DeliveryStatus::Failed => DeliveryStatusName::Failed,
            DeliveryStatus::Cancelled => DeliveryStatusName::Cancelled,
            DeliveryStatus::Skipped => DeliveryStatusName::Skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_and_status_has_a_wire_name() {
        for state in ExerciseState::ALL {
            let wire = serde_json::to_value(StateName::from(state)).unwrap();
            assert_eq!(wire, state.as_str());
        }
        for status in [
            "pending",
            "delivered",
            "retrying",
            "failed",
            "cancelled",
            "skipped",
        ] {
            let parsed = parse_status(status).unwrap();
            assert_eq!(
                serde_json::to_value(DeliveryStatusName::from(parsed)).unwrap(),
                status
            );
        }
        assert!(parse_status("lost").is_err());
        for command in Command::ALL {
            assert_eq!(
                serde_json::to_value(CommandName::from(command)).unwrap(),
                command.as_str()
            );
        }
    }
}
