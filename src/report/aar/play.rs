//! Two-way play in the after-action report: every response with its
//! response time, every outcome and conditional inject, a scorecard per
//! team and objective, and the run's decisions and posts.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::core::{Gate, Outcome, PlayState, Skip};
use crate::mqtt::wire::timestamp;
use crate::runtime::exercise::from_wall_ms;

use super::model::{Delivery, Input};

/// What teams answered and posted, how they did, and how they were scored.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ReportPlay {
    /// Every answer, edits included, oldest first.
    pub responses: Vec<ReportResponse>,
    /// Every delivery that expects an answer or waits on a condition.
    pub outcomes: Vec<ReportOutcome>,
    /// Per team: outcome counts, mean response time, scores.
    pub scorecard: Vec<ReportScorecard>,
    pub decisions: Vec<ReportDecision>,
    pub posts: Vec<ReportPost>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReportResponse {
    pub team_id: String,
    pub inject_id: String,
    pub choice: Option<String>,
    pub text: Option<String>,
    pub by: Option<String>,
    /// `dashboard`, `mqtt` or `api:<ip>`.
    pub source: String,
    #[schema(format = DateTime)]
    pub at: String,
    pub exercise_time: i64,
    /// Exercise seconds from the inject coming due to this answer.
    pub response_time_s: Option<i64>,
    /// A later answer to the same inject.
    pub edit: bool,
    /// The outcome this answer gave (the first answer decides it).
    pub outcome: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReportOutcome {
    pub team_id: String,
    pub inject_id: String,
    /// `pending`, `met`, `late`, `wrong` or `missed`; null without `expect`.
    pub outcome: Option<String>,
    /// The exercise second the answer window closed.
    pub window_end: Option<u32>,
    /// The exercise second of the first answer, and its option.
    pub answered_at: Option<u32>,
    pub choice: Option<String>,
    /// `held`, `released` or `skipped`, for a conditional inject.
    pub condition: Option<String>,
    /// Why a skipped conditional inject never went out.
    pub skip_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReportScorecard {
    pub team_id: String,
    pub met: usize,
    pub late: usize,
    pub wrong: usize,
    pub missed: usize,
    pub pending: usize,
    /// Mean exercise seconds from an inject going out to the team's first
    /// answer.
    pub mean_response_time_s: Option<f64>,
    /// One line per scenario objective, then per scored inject.
    pub scores: Vec<ReportScoreLine>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReportScoreLine {
    /// `objective` or `inject`.
    pub target: String,
    pub target_id: String,
    /// The objective's title.
    pub title: Option<String>,
    /// The mean of each evaluator's latest score; null when unscored.
    pub score: Option<f64>,
    /// Each evaluator's latest score and note.
    pub by_evaluator: Vec<ReportScore>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReportScore {
    pub by: Option<String>,
    pub score: u8,
    pub note: Option<String>,
    pub exercise_time: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReportDecision {
    pub decision: String,
    /// Null: every team.
    pub teams: Option<Vec<String>>,
    /// `team/inject` of each inject it released.
    pub released: Vec<String>,
    pub source: String,
    pub exercise_time: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReportPost {
    pub channel: String,
    /// The team that posted; null for a controller's persona.
    pub author_team: Option<String>,
    pub persona: Option<String>,
    pub by: Option<String>,
    pub text: String,
    pub exercise_time: i64,
}

/// The play part of the report of `input`.
pub fn build_play(input: &Input) -> ReportPlay {
    let by_key: HashMap<(&str, &str), &Delivery> = input
        .deliveries
        .iter()
        .map(|d| ((d.row.team_id.as_str(), d.row.inject_id.as_str()), d))
        .collect();
    let by_slot: HashMap<i64, &str> = input
        .deliveries
        .iter()
        .map(|d| (d.row.position, d.row.inject_id.as_str()))
        .collect();
    let mut out = ReportPlay::default();
    for row in &input.plays {
        let body: Value = serde_json::from_str(&row.body).unwrap_or(Value::Null);
        let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
        match row.kind.as_str() {
            "response" => {
                let team = row.team_id.clone().unwrap_or_default();
                let inject = row.subject.clone().unwrap_or_default();
                // From the second it was due (a released branch: its due
                // second), never before the answer.
                let sent = by_key
                    .get(&(team.as_str(), inject.as_str()))
                    .map(|d| due_second(d));
                out.responses.push(ReportResponse {
                    response_time_s: sent.map(|s| (row.exercise_secs - s).max(0)),
                    team_id: team,
                    inject_id: inject,
                    choice: text("choice"),
                    text: text("text"),
                    by: row.by_name.clone(),
                    source: row.source.clone(),
                    at: timestamp(from_wall_ms(row.wall_ms)),
                    exercise_time: row.exercise_secs,
                    edit: body.get("edit").and_then(Value::as_bool).unwrap_or(false),
                    outcome: text("outcome"),
                });
            }
            "decision" => out.decisions.push(ReportDecision {
                decision: row.subject.clone().unwrap_or_default(),
                teams: serde_json::from_value(body["teams"].clone()).ok().flatten(),
                released: serde_json::from_value(body["released"].clone()).unwrap_or_default(),
                source: row.source.clone(),
                exercise_time: row.exercise_secs,
            }),
            "post" => out.posts.push(ReportPost {
                channel: row.subject.clone().unwrap_or_default(),
                author_team: row.team_id.clone(),
                persona: text("persona"),
                by: row.by_name.clone(),
                text: text("text").unwrap_or_default(),
                exercise_time: row.exercise_secs,
            }),
            _ => {}
        }
    }
    for d in &input.deliveries {
        let Some(play) = d
            .row
            .play
            .as_deref()
            .and_then(|json| serde_json::from_str::<PlayState>(json).ok())
        else {
            continue;
        };
        out.outcomes.push(ReportOutcome {
            team_id: d.row.team_id.clone(),
            inject_id: d.row.inject_id.clone(),
            outcome: play.outcome.map(|o| o.as_str().to_owned()),
            window_end: play.window_end,
            answered_at: play.answer.as_ref().map(|a| a.at),
            choice: play.answer.as_ref().and_then(|a| a.choice.clone()),
            condition: play.gate.as_ref().map(|g| g.as_str().to_owned()),
            skip_reason: match &play.gate {
                Some(Gate::Skipped { reason }) => Some(describe_skip(reason, &by_slot)),
                _ => None,
            },
        });
    }
    out.scorecard = scorecard(input, &out);
    out
}

/// The exercise second a delivery was due: a released conditional
/// inject's from its play state, else the plan's.
fn due_second(d: &Delivery) -> i64 {
    d.row
        .play
        .as_deref()
        .and_then(|json| serde_json::from_str::<PlayState>(json).ok())
        .and_then(|p| match p.gate {
            Some(Gate::Released { due, .. }) => Some(i64::from(due)),
            _ => None,
        })
        .unwrap_or(d.row.due_secs)
}

fn scorecard(input: &Input, play: &ReportPlay) -> Vec<ReportScorecard> {
    // The latest score of each (team, target, evaluator).
    let mut latest: BTreeMap<(String, String), BTreeMap<Option<String>, ReportScore>> =
        BTreeMap::new();
    for row in input.plays.iter().filter(|r| r.kind == "score") {
        let body: Value = serde_json::from_str(&row.body).unwrap_or(Value::Null);
        let Some(score) = body["score"].as_u64().and_then(|s| u8::try_from(s).ok()) else {
            continue;
        };
        let key = (
            row.team_id.clone().unwrap_or_default(),
            row.subject.clone().unwrap_or_default(),
        );
        latest.entry(key).or_default().insert(
            row.by_name.clone(),
            ReportScore {
                by: row.by_name.clone(),
                score,
                note: body["note"].as_str().map(str::to_owned),
                exercise_time: row.exercise_secs,
            },
        );
    }
    input
        .teams
        .iter()
        .map(|team| {
            let outcomes: Vec<&ReportOutcome> = play
                .outcomes
                .iter()
                .filter(|o| o.team_id == team.id)
                .collect();
            let count = |wanted: Outcome| {
                outcomes
                    .iter()
                    .filter(|o| o.outcome.as_deref() == Some(wanted.as_str()))
                    .count()
            };
            let times: Vec<f64> = play
                .responses
                .iter()
                .filter(|r| r.team_id == team.id && !r.edit)
                .filter_map(|r| r.response_time_s.map(|t| t as f64))
                .collect();
            let line = |target: &str, id: &str, title: Option<String>| {
                let scores: Vec<ReportScore> = latest
                    .get(&(team.id.clone(), format!("{target}:{id}")))
                    .map(|m| m.values().cloned().collect())
                    .unwrap_or_default();
                let score = (!scores.is_empty()).then(|| {
                    scores.iter().map(|s| f64::from(s.score)).sum::<f64>() / scores.len() as f64
                });
                ReportScoreLine {
                    target: target.to_owned(),
                    target_id: id.to_owned(),
                    title,
                    score,
                    by_evaluator: scores,
                }
            };
            let mut scores: Vec<ReportScoreLine> = input
                .objectives
                .iter()
                .map(|(id, title)| line("objective", id, Some(title.clone())))
                .collect();
            for (team_id, subject) in latest.keys() {
                if *team_id == team.id
                    && let Some(inject) = subject.strip_prefix("inject:")
                {
                    scores.push(line("inject", inject, None));
                }
            }
            ReportScorecard {
                team_id: team.id.clone(),
                met: count(Outcome::Met),
                late: count(Outcome::Late),
                wrong: count(Outcome::Wrong),
                missed: count(Outcome::Missed),
                pending: count(Outcome::Pending),
                mean_response_time_s: (!times.is_empty())
                    .then(|| times.iter().sum::<f64>() / times.len() as f64),
                scores,
            }
        })
        .collect()
}

/// Why a conditional inject was skipped, naming injects by id.
fn describe_skip(skip: &Skip, by_slot: &HashMap<i64, &str>) -> String {
    skip.describe(|slot| {
        by_slot
            .get(&(slot as i64))
            .copied()
            .unwrap_or("?")
            .to_owned()
    })
}
