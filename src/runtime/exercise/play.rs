//! Two-way play in the actor (SPEC section 9): a team's answers (its
//! dashboard, its MQTT responses topic), controllers' decisions (API,
//! control topic), and what they announce on the responses topic. Each
//! is stored (a play row) before it is announced.

use std::sync::Arc;

use rumqttc::QoS;
use serde_json::json;
use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::{info, warn};

use super::clock::wall_ms;
use super::{Actor, RequestError};
use crate::core::{Gate, Now, PlayError, Skip};
use crate::domain::InjectId;
use crate::mqtt::Received;
use crate::mqtt::wire::{
    DecisionMessage, PlayMessage, RefusedMessage, ResponseIn, ResponseMessage, ScoreMessage,
    timestamp,
};
use crate::runtime::live::Live;
use crate::scenario::play::ResponseKind;
use crate::store::PlayRow;

/// The longest free-text answer, in characters.
pub const MAX_RESPONSE_CHARS: usize = 4000;
/// The longest name a responder gives (`by`).
pub const MAX_BY_CHARS: usize = 100;

/// What an evaluator scores a team on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScoreTarget {
    Inject(String),
    Objective(String),
}

/// An evaluator's score of a team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Score {
    pub team: String,
    pub target: ScoreTarget,
    /// 0 to 100.
    pub score: u8,
    pub note: Option<String>,
    /// The evaluator, as their token is named.
    pub by: Option<String>,
}

impl Actor {
    /// An evaluator's score of a team on one of its injects or a scenario
    /// objective: stored, announced and shown to the control room. Scores
    /// are taken while the exercise runs and after it ended (the debrief).
    pub(super) fn score(
        &mut self,
        score: Score,
        source: &str,
        now: Now,
    ) -> Result<ScoreMessage, RequestError> {
        let team = self
            .scenario
            .teams
            .iter()
            .position(|t| t.id.as_str() == score.team)
            .ok_or_else(|| {
                RequestError::NotFound(format!("no team {:?} in this exercise", score.team))
            })?;
        if score.score > 100 {
            return Err(RequestError::Invalid(format!(
                "a score is 0 to 100, not {}",
                score.score
            )));
        }
        let (target, target_id) = match &score.target {
            ScoreTarget::Inject(id) => {
                let known = InjectId::parse(id)
                    .ok()
                    .and_then(|id| self.slot_of(team, &id))
                    .is_some();
                if !known {
                    return Err(RequestError::NotFound(format!(
                        "no inject {id:?} for team {:?} in this run",
                        score.team
                    )));
                }
                ("inject", id.clone())
            }
            ScoreTarget::Objective(id) => {
                if !self.scenario.objectives.iter().any(|o| &o.id == id) {
                    return Err(RequestError::NotFound(format!(
                        "no objective {id:?} in this scenario"
                    )));
                }
                ("objective", id.clone())
            }
        };
        let note = bounded(score.note, MAX_RESPONSE_CHARS, "note")?;
        let by = bounded(score.by, MAX_BY_CHARS, "by")?;
        let at = self.engine.exercise_time(now.mono).get();
        self.plays.push(PlayRow {
            id: 0,
            exercise_id: self.id().to_string(),
            run: i64::from(self.engine.run()),
            kind: "score".into(),
            team_id: Some(score.team.clone()),
            subject: Some(format!("{target}:{target_id}")),
            body: json!({"score": score.score, "note": note}).to_string(),
            by_name: by.clone(),
            source: source.to_owned(),
            wall_ms: wall_ms(now.wall),
            exercise_secs: i64::from(at),
        });
        // Stored with the records it changed, before anything announces it.
        self.flush();
        let message = ScoreMessage {
            event: "score",
            exercise_id: self.id().to_string(),
            team_id: score.team,
            target,
            target_id,
            score: score.score,
            note,
            by,
            source: source.to_owned(),
            exercise_time: at,
            timestamp: timestamp(now.wall),
        };
        let topic = self.topics.responses.clone();
        self.publish_json(&topic, &message, QoS::AtLeastOnce, false);
        self.emit(|| Live::Score(Arc::new(message.clone())));
        Ok(message)
    }

    /// A team's answer to an inject it was sent: checked against what the
    /// inject asks, given to the engine (outcome, branches), stored, then
    /// announced. An inject not (yet) sent to the team is refused as if it
    /// did not exist, so answering reveals nothing of the team's future.
    pub(super) fn respond(
        &mut self,
        team: usize,
        input: ResponseIn,
        source: &str,
        now: Now,
    ) -> Result<ResponseMessage, RequestError> {
        let team_id = self.scenario.teams[team].id.to_string();
        let not_sent = || {
            RequestError::NotFound(format!(
                "no inject {:?} has been sent to team {team_id:?}",
                input.inject_id
            ))
        };
        let id = InjectId::parse(&input.inject_id).map_err(|_| not_sent())?;
        let slot = self.slot_of(team, &id).ok_or_else(not_sent)?;
        if self.engine.records()[slot].published_wall.is_none() {
            return Err(not_sent());
        }
        if let Err(refused) = self.response_rate.check(&team_id, Instant::now()) {
            return Err(RequestError::Conflict(format!(
                "rate limited: {}",
                refused.describe("responses", "from this team")
            )));
        }
        let spec = self.entries[slot].inject().play().response.ok_or_else(|| {
            RequestError::Invalid(format!("inject {:?} asks for no response", id.as_str()))
        })?;
        let text = bounded(input.text, MAX_RESPONSE_CHARS, "text")?;
        let by = bounded(input.by, MAX_BY_CHARS, "by")?;
        let choice = match (spec.kind, input.choice) {
            (ResponseKind::Choice, Some(choice)) if spec.options.contains(&choice) => Some(choice),
            (ResponseKind::Choice, _) => {
                return Err(RequestError::Invalid(format!(
                    "choose one of the options: {}",
                    spec.options.join(", ")
                )));
            }
            (_, Some(_)) => {
                return Err(RequestError::Invalid(
                    "this inject offers no options to choose from".into(),
                ));
            }
            (_, None) => None,
        };
        if spec.kind == ResponseKind::Text && text.is_none() {
            return Err(RequestError::Invalid(
                "this inject asks for a text answer".into(),
            ));
        }
        let answered = self
            .engine
            .answer(slot, choice.clone(), now)
            .map_err(|e| play_error(e, not_sent))?;
        let outcome = answered.outcome.map(|o| o.as_str());
        self.plays.push(PlayRow {
            id: 0,
            exercise_id: self.id().to_string(),
            run: i64::from(self.engine.run()),
            kind: "response".into(),
            team_id: Some(team_id.clone()),
            subject: Some(id.to_string()),
            body:
                json!({"choice": choice, "text": text, "edit": answered.edit, "outcome": outcome})
                    .to_string(),
            by_name: by.clone(),
            source: source.to_owned(),
            wall_ms: wall_ms(now.wall),
            exercise_secs: i64::from(answered.at),
        });
        // Stored with the records it changed, before anything announces it.
        self.flush();
        let message = ResponseMessage {
            event: "response",
            exercise_id: self.id().to_string(),
            team_id,
            inject_id: id.to_string(),
            choice,
            text,
            by,
            source: source.to_owned(),
            edit: answered.edit,
            outcome,
            exercise_time: answered.at,
            timestamp: timestamp(now.wall),
        };
        info!(
            exercise_id = %self.id(),
            team_id = %message.team_id,
            inject_id = %message.inject_id,
            outcome = outcome.unwrap_or(""),
            edit = answered.edit,
            "response"
        );
        let topic = self.topics.responses.clone();
        self.publish_json(&topic, &message, QoS::AtLeastOnce, false);
        self.emit(|| Live::Response {
            team,
            message: Arc::new(message.clone()),
        });
        Ok(message)
    }

    /// A message on a team's responses topic: answered like one from the
    /// dashboard; what is refused is reported on the status topic.
    pub(super) fn on_mqtt_response(&mut self, message: Received) {
        if message.payload.is_empty() || message.retain {
            // A cleared or retained message is no live answer.
            return;
        }
        let Some(team) = self
            .topics
            .responding_team(&message.topic)
            .and_then(|t| self.scenario.teams.iter().position(|s| s.id.as_str() == t))
        else {
            return;
        };
        let result = serde_json::from_slice::<ResponseIn>(&message.payload)
            .map_err(|e| RequestError::Invalid(format!("not a response: {e}")))
            .and_then(|input| self.respond(team, input, "mqtt", super::now()));
        if let Err(refused) = result {
            self.report_refused("response", Some(team), &refused.to_string());
        }
    }

    /// Reports what a team's topic or the control topic brought and was not
    /// taken, on the controllers' responses topic (never the status topic
    /// every team reads), within the report rate.
    pub(super) fn report_refused(&mut self, what: &'static str, team: Option<usize>, why: &str) {
        let Some(unreported) = self.may_report() else {
            return;
        };
        let team_id = team.map(|t| self.scenario.teams[t].id.to_string());
        warn!(exercise_id = %self.id(), team_id = team_id.as_deref().unwrap_or(""), what, why, unreported, "refused");
        let message = RefusedMessage {
            event: "refused",
            exercise_id: self.id().to_string(),
            what,
            team_id,
            message: if unreported > 0 {
                format!("{why} ({unreported} more not reported)")
            } else {
                why.to_owned()
            },
            exercise_time: self.engine.exercise_time(Instant::now()).get(),
            timestamp: timestamp(OffsetDateTime::now_utc()),
        };
        let topic = self.topics.responses.clone();
        self.publish_json(&topic, &message, QoS::AtLeastOnce, false);
    }

    /// A controller's decision for `teams` (every team when None): what
    /// waits for it is scheduled. Deciding again releases nothing more.
    pub(super) fn decide(
        &mut self,
        decision: &str,
        teams: Option<Vec<String>>,
        source: &str,
        now: Now,
    ) -> Result<DecisionMessage, RequestError> {
        let indices = match &teams {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|name| {
                        self.scenario
                            .teams
                            .iter()
                            .position(|t| t.id.as_str() == name)
                            .ok_or_else(|| {
                                RequestError::NotFound(format!("no team {name:?} in this exercise"))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let released = self
            .engine
            .decide(decision, indices.as_deref(), now)
            .map_err(|e| play_error(e, || RequestError::NotFound(String::new())))?;
        let at = self.engine.exercise_time(now.mono).get();
        let names: Vec<String> = released
            .iter()
            .map(|&slot| {
                let (team, inject) = self.names(slot);
                format!("{team}/{inject}")
            })
            .collect();
        self.plays.push(PlayRow {
            id: 0,
            exercise_id: self.id().to_string(),
            run: i64::from(self.engine.run()),
            kind: "decision".into(),
            team_id: None,
            subject: Some(decision.to_owned()),
            body: json!({"teams": teams, "released": names}).to_string(),
            by_name: None,
            source: source.to_owned(),
            wall_ms: wall_ms(now.wall),
            exercise_secs: i64::from(at),
        });
        // Stored with the records it changed, before anything announces it.
        self.flush();
        let message = DecisionMessage {
            event: "decision",
            exercise_id: self.id().to_string(),
            decision: decision.to_owned(),
            teams,
            released: released.len(),
            source: source.to_owned(),
            exercise_time: at,
            timestamp: timestamp(now.wall),
        };
        info!(exercise_id = %self.id(), decision, released = released.len(), "decision");
        let topic = self.topics.responses.clone();
        self.publish_json(&topic, &message, QoS::AtLeastOnce, false);
        Ok(message)
    }

    /// Announces where the record in `slot` stands in two-way play.
    pub(super) fn announce_play(&mut self, slot: usize) {
        let record = &self.engine.records()[slot];
        let (team_id, inject_id) = self.names(slot);
        let gate = record.play.gate.as_ref();
        let condition = gate.map(Gate::as_str);
        let (due, reason) = match gate {
            Some(Gate::Released { due, .. }) => (Some(*due), None),
            Some(Gate::Skipped { reason }) => (None, Some(self.skip_reason(reason))),
            _ => (None, None),
        };
        let message = PlayMessage {
            event: "play",
            exercise_id: self.id().to_string(),
            team_id,
            inject_id,
            outcome: record.play.outcome.map(|o| o.as_str()),
            window_end: record.play.window_end,
            condition,
            due,
            reason,
            exercise_time: self.engine.exercise_time(Instant::now()).get(),
            timestamp: timestamp(OffsetDateTime::now_utc()),
        };
        let topic = self.topics.responses.clone();
        self.publish_json(&topic, &message, QoS::AtLeastOnce, false);
    }

    /// A condition in words, in the scenario's names.
    pub(super) fn describe_condition(&self, condition: &crate::core::Condition) -> String {
        let what = match &condition.trigger {
            crate::core::Trigger::After { slot, on } => format!(
                "after {}: {on}",
                self.entries
                    .get(*slot)
                    .map_or_else(String::new, |e| e.inject().id.to_string())
            ),
            crate::core::Trigger::Decision(name) => format!("decision {name}"),
        };
        match condition.delay {
            0 => what,
            delay => format!("{what} (+{delay} s)"),
        }
    }

    /// Why a conditional inject was skipped, in the scenario's names.
    pub(super) fn skip_reason(&self, skip: &Skip) -> String {
        skip.describe(|slot| {
            self.entries
                .get(slot)
                .map_or_else(String::new, |e| e.inject().id.to_string())
        })
    }
}

/// An optional text, trimmed; empty reads as absent.
pub(super) fn bounded(
    value: Option<String>,
    max: usize,
    field: &str,
) -> Result<Option<String>, RequestError> {
    let Some(value) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > max {
        return Err(RequestError::Invalid(format!(
            "\"{field}\" is at most {max} characters"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(RequestError::Invalid(format!(
            "\"{field}\" must not hold control characters"
        )));
    }
    Ok(Some(value))
}

fn play_error(error: PlayError, not_sent: impl FnOnce() -> RequestError) -> RequestError {
    match error {
        PlayError::NotSent | PlayError::UnknownDelivery(_) => not_sent(),
        PlayError::UnknownDecision(_) => RequestError::NotFound(error.to_string()),
        PlayError::NotStarted | PlayError::Over(_) => RequestError::Conflict(error.to_string()),
    }
}
