//! MQTT topics and payloads of SPEC section 4: the compatibility promise to
//! dashboards and scripts. Domain types convert to these at the edge.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::core::{Command, Counts, State, TimerSnapshot};
use crate::domain::{ExerciseId, ExerciseSeconds, TeamId};
use crate::scenario::Inject;

/// Marks the engine's own announcements on the control topic.
pub const ANNOUNCEMENT_SOURCE: &str = "scip-orchestrator";

/// The topics of one exercise.
#[derive(Debug, Clone)]
pub struct Topics {
    pub control: String,
    pub timer: String,
    pub status: String,
    pub monitoring: String,
    /// Responses, posts, outcomes and decisions, as they happen.
    pub responses: String,
    /// Every team's responses topic, as one filter.
    pub team_responses: String,
    /// Every team's posts topic, as one filter.
    pub team_posts: String,
    base: String,
}

impl Topics {
    pub fn new(exercise: &ExerciseId) -> Self {
        let base = format!("/exercise/{exercise}");
        Self {
            control: format!("{base}/control"),
            timer: format!("{base}/timer"),
            status: format!("{base}/status"),
            monitoring: format!("{base}/monitoring"),
            responses: format!("{base}/responses"),
            team_responses: format!("{base}/team/+/responses"),
            team_posts: format!("{base}/team/+/posts"),
            base,
        }
    }

    pub fn feed(&self, team: &TeamId) -> String {
        format!("{}/team/{team}/feed", self.base)
    }

    /// The team a message on a team's responses topic came from, as the
    /// topic names it.
    pub fn responding_team<'a>(&self, topic: &'a str) -> Option<&'a str> {
        self.team_of(topic, "/responses")
    }

    /// The team a message on a team's posts topic came from.
    pub fn posting_team<'a>(&self, topic: &'a str) -> Option<&'a str> {
        self.team_of(topic, "/posts")
    }

    fn team_of<'a>(&self, topic: &'a str, suffix: &str) -> Option<&'a str> {
        topic
            .strip_prefix(self.base.as_str())?
            .strip_prefix("/team/")?
            .strip_suffix(suffix)
            .filter(|team| !team.contains('/'))
    }
}

/// UTC with milliseconds: `2024-01-15T10:05:32.123Z`.
pub fn timestamp(at: OffsetDateTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000Z"))
}

/// `/exercise/{id}/timer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerMessage {
    pub current: u32,
    pub elapsed: u32,
    pub total: u32,
    pub formatted: String,
    pub percentage: f64,
    pub status: String,
}

impl From<TimerSnapshot> for TimerMessage {
    fn from(t: TimerSnapshot) -> Self {
        let (current, total) = (t.current.get(), t.total.get());
        let percentage = if total == 0 {
            100.0
        } else {
            (f64::from(current) * 1000.0 / f64::from(total)).round() / 10.0
        };
        Self {
            current,
            elapsed: current,
            total,
            formatted: t.current.to_string(),
            percentage,
            status: t.state.as_str().to_owned(),
        }
    }
}

/// The part of a feed message that does not change between attempts; the
/// publish time and the exercise second it went out (`delivered_at`) are
/// appended when it goes out. `time` is the inject's due second, which the
/// earlier platform's dashboards show on every card.
#[derive(Debug, Clone)]
pub struct FeedTemplate {
    /// Serialized object without its closing brace.
    prefix: String,
}

impl FeedTemplate {
    /// The inject's part of its feed messages, shared by every team that
    /// gets it; team, exercise, publish time and `delivered_at` are added by
    /// [`Self::render`].
    pub fn new(inject: &Inject) -> Self {
        // Optional fields pass through; the fields SPEC defines win a clash.
        let mut m: Map<String, Value> = inject.extra.clone();
        for ours in ["timestamp", "team_id", "exercise_id", "delivered_at"] {
            m.remove(ours);
        }
        // The expected answer and the branches are not the team's to read.
        for hidden in crate::scenario::play::HIDDEN_FIELDS {
            m.remove(hidden);
        }
        m.insert("id".into(), inject.id.as_str().into());
        m.insert("exerciseTime".into(), inject.time.get().into());
        m.insert("time".into(), inject.time.get().into());
        m.insert("type".into(), inject.kind.clone().into());
        m.insert("content".into(), Value::Object(inject.content.clone()));
        let mut prefix = Value::Object(m).to_string();
        prefix.pop();
        Self { prefix }
    }

    /// The message for `team` of `exercise` as published at `at`, exercise
    /// second `delivered_at`.
    pub fn render(
        &self,
        team: &TeamId,
        exercise: &ExerciseId,
        at: OffsetDateTime,
        delivered_at: ExerciseSeconds,
    ) -> Vec<u8> {
        let ts = timestamp(at);
        let mut out = String::with_capacity(self.prefix.len() + ts.len() + 80);
        out.push_str(&self.prefix);
        out.push_str(",\"team_id\":");
        out.push_str(&Value::from(team.as_str()).to_string());
        out.push_str(",\"exercise_id\":");
        out.push_str(&Value::from(exercise.as_str()).to_string());
        out.push_str(",\"delivered_at\":");
        out.push_str(&delivered_at.get().to_string());
        out.push_str(",\"timestamp\":\"");
        out.push_str(&ts);
        out.push_str("\"}");
        out.into_bytes()
    }
}

/// A control message as it arrives (SPEC section 4).
#[derive(Debug, Clone, Deserialize)]
struct ControlIn {
    command: Value,
    #[serde(default)]
    reason: Option<Value>,
    #[serde(default)]
    source: Option<Value>,
    /// `decide`: the decision's name and, optionally, the teams it is for.
    #[serde(default)]
    decision: Option<Value>,
    #[serde(default)]
    teams: Option<Value>,
}

/// What a control-topic message turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlInput {
    Command {
        command: Command,
        reason: Option<String>,
    },
    /// `decide`: a controller's decision, for `teams` (None: every team).
    Decide {
        decision: String,
        teams: Option<Vec<String>>,
        reason: Option<String>,
    },
    /// One of the engine's own announcements: not a command.
    Announcement,
    Invalid(String),
}

/// Parses a control message; never fails, garbage becomes `Invalid`.
pub fn parse_control(payload: &[u8]) -> ControlInput {
    let value: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return ControlInput::Invalid(format!("not JSON: {e}")),
    };
    if !value.is_object() {
        return ControlInput::Invalid(format!(
            "not a control message: expected an object with a \"command\", got {}",
            truncate(&value.to_string(), 80)
        ));
    }
    let msg: ControlIn = match serde_json::from_value(value) {
        Ok(m) => m,
        Err(e) => return ControlInput::Invalid(format!("not a control message: {e}")),
    };
    if msg.source.as_ref().and_then(Value::as_str) == Some(ANNOUNCEMENT_SOURCE) {
        return ControlInput::Announcement;
    }
    let Some(name) = msg.command.as_str() else {
        return ControlInput::Invalid(format!("\"command\" must be a string, got {}", msg.command));
    };
    let reason = match msg.reason {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    };
    if name == "decide" {
        let Some(decision) = msg.decision.as_ref().and_then(Value::as_str) else {
            return ControlInput::Invalid(
                "\"decide\" needs \"decision\": the name of the decision".into(),
            );
        };
        let teams = match msg.teams {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                match items
                    .iter()
                    .map(|t| t.as_str().map(str::to_owned))
                    .collect()
                {
                    Some(teams) => Some(teams),
                    None => {
                        return ControlInput::Invalid(
                            "\"teams\" must be an array of team ids".into(),
                        );
                    }
                }
            }
            Some(_) => {
                return ControlInput::Invalid("\"teams\" must be an array of team ids".into());
            }
        };
        return ControlInput::Decide {
            decision: decision.to_owned(),
            teams,
            reason,
        };
    }
    let command = match name.parse::<Command>() {
        Ok(c) => c,
        Err(e) => return ControlInput::Invalid(format!("{e} (or decide)")),
    };
    ControlInput::Command { command, reason }
}

/// A team's answer as it arrives on its responses topic (or from its
/// dashboard): unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResponseIn {
    pub inject_id: String,
    #[serde(default)]
    pub choice: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub by: Option<String>,
}

/// A team's post as it arrives on its posts topic (or from its dashboard).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PostIn {
    pub channel: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub by: Option<String>,
}

/// `/exercise/{id}/responses`, `event: "post"`: a post to a public
/// channel, and the teams whose feeds it reached.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PostMessage {
    pub event: &'static str,
    pub exercise_id: String,
    pub channel: String,
    /// The inject it reached the feeds as (`post-<n>`).
    pub inject_id: String,
    /// The team that posted; absent for a controller's post.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author_team: Option<String>,
    /// The persona a controller posted as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persona: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub text: String,
    pub reached: Vec<String>,
    pub source: String,
    #[serde(rename = "exerciseTime")]
    pub exercise_time: u32,
    pub timestamp: String,
}

/// `/exercise/{id}/responses`, `event: "score"`: an evaluator scored a
/// team on an inject or an objective.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScoreMessage {
    pub event: &'static str,
    pub exercise_id: String,
    pub team_id: String,
    /// `inject` or `objective`.
    pub target: &'static str,
    /// The inject's or the objective's id.
    pub target_id: String,
    /// 0 to 100.
    pub score: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub source: String,
    #[serde(rename = "exerciseTime")]
    pub exercise_time: u32,
    pub timestamp: String,
}

/// `/exercise/{id}/responses`, `event: "refused"`: an answer or post on a
/// team's topic, or a decision on the control topic, that was not taken.
/// On the controllers' topic, not the status topic every team reads: a
/// refusal may name another team's options or a branch.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RefusedMessage {
    pub event: &'static str,
    pub exercise_id: String,
    /// `response`, `post` or `decide`.
    pub what: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    pub message: String,
    #[serde(rename = "exerciseTime")]
    pub exercise_time: u32,
    pub timestamp: String,
}

/// `/exercise/{id}/responses`, `event: "response"`: a team answered.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResponseMessage {
    pub event: &'static str,
    pub exercise_id: String,
    pub team_id: String,
    pub inject_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choice: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// `dashboard`, `mqtt` or `api`.
    pub source: String,
    /// A later answer to the same inject: kept, the outcome unchanged.
    pub edit: bool,
    /// The team's outcome on the inject, when it expects an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    #[serde(rename = "exerciseTime")]
    pub exercise_time: u32,
    pub timestamp: String,
}

/// `/exercise/{id}/responses`, `event: "play"`: where a team's inject
/// stands in two-way play: its outcome, or its condition (held, released,
/// skipped and why).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlayMessage {
    pub event: &'static str,
    pub exercise_id: String,
    pub team_id: String,
    pub inject_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// The exercise second the answer window closes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_end: Option<u32>,
    /// `held`, `released` or `skipped`, for a conditional inject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<&'static str>,
    /// The second a released inject is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<u32>,
    /// Why a skipped inject will never go out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(rename = "exerciseTime")]
    pub exercise_time: u32,
    pub timestamp: String,
}

/// `/exercise/{id}/responses`, `event: "decision"`: a controller decided.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DecisionMessage {
    pub event: &'static str,
    pub exercise_id: String,
    pub decision: String,
    /// The teams it is for; every team when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teams: Option<Vec<String>>,
    /// How many injects it released.
    pub released: usize,
    pub source: String,
    #[serde(rename = "exerciseTime")]
    pub exercise_time: u32,
    pub timestamp: String,
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// The engine's announcement of its own transition on the control topic, in
/// the shape of a command.
#[derive(Debug, Clone, Serialize)]
pub struct Announcement {
    /// The command applied, or `complete` when the clock ran out.
    pub command: String,
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub source: &'static str,
    pub state: &'static str,
    #[serde(rename = "exerciseTime")]
    pub exercise_time: u32,
}

/// `/exercise/{id}/status`: the current state and what just happened.
#[derive(Debug, Clone, Serialize)]
pub struct StatusMessage {
    pub exercise_id: String,
    pub status: &'static str,
    /// `state_changed`, `command_refused`, `invalid_command` or `delivery_failed`.
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inject_id: Option<String>,
    #[serde(rename = "exerciseTime")]
    pub exercise_time: u32,
    pub formatted: String,
    pub timestamp: String,
}

impl StatusMessage {
    pub fn new(
        exercise: &ExerciseId,
        status: State,
        event: &'static str,
        at: ExerciseSeconds,
        wall: OffsetDateTime,
    ) -> Self {
        Self {
            exercise_id: exercise.to_string(),
            status: status.as_str(),
            event,
            previous: None,
            command: None,
            reason: None,
            message: None,
            team_id: None,
            inject_id: None,
            exercise_time: at.get(),
            formatted: at.to_string(),
            timestamp: timestamp(wall),
        }
    }
}

/// `/exercise/{id}/monitoring`: the SPEC fields first, then more detail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitoringMessage {
    pub injects_scheduled: usize,
    pub injects_delivered: usize,
    pub injects_failed: usize,
    pub teams_connected: usize,
    /// Milliseconds.
    pub average_delivery_latency: f64,
    /// Exercise seconds elapsed.
    pub exercise_duration: u32,
    pub exercise_id: String,
    pub status: String,
    pub injects_pending: usize,
    pub injects_retrying: usize,
    pub injects_late: usize,
    pub injects_cancelled: usize,
    /// Shown on a team dashboard.
    pub injects_received: usize,
    /// Milliseconds from due to shown on a dashboard.
    pub average_receipt_latency: f64,
    pub timestamp: String,
}

impl MonitoringMessage {
    pub fn new(
        exercise: &ExerciseId,
        status: State,
        counts: &Counts,
        teams_connected: usize,
        elapsed: ExerciseSeconds,
        wall: OffsetDateTime,
    ) -> Self {
        Self {
            injects_scheduled: counts.scheduled,
            injects_delivered: counts.delivered,
            injects_failed: counts.failed,
            teams_connected,
            average_delivery_latency: (counts.average_latency_ms * 10.0).round() / 10.0,
            exercise_duration: elapsed.get(),
            exercise_id: exercise.to_string(),
            status: status.as_str().to_owned(),
            injects_pending: counts.pending,
            injects_retrying: counts.retrying,
            injects_late: counts.late,
            injects_cancelled: counts.cancelled,
            injects_received: counts.received,
            average_receipt_latency: (counts.average_receipt_latency_ms * 10.0).round() / 10.0,
            timestamp: timestamp(wall),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::InjectId;
    use serde_json::json;

    #[test]
    fn timer_matches_the_spec_example() {
        let t = TimerMessage::from(TimerSnapshot {
            current: ExerciseSeconds::new(332),
            total: ExerciseSeconds::new(2700),
            state: State::Running,
        });
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            json!({"current":332,"elapsed":332,"total":2700,"formatted":"T+05:32","percentage":12.3,"status":"running"})
        );
    }

    #[test]
    fn feed_message_carries_spec_fields_and_passthrough() {
        let mut extra = Map::new();
        extra.insert("priority".into(), json!("high"));
        extra.insert("media".into(), json!(["/media/a.jpg"]));
        extra.insert("team_id".into(), json!("spoofed"));
        extra.insert("delivered_at".into(), json!(1));
        // Two-way play: the question reaches the team; the expected answer,
        // the branches and the objectives never do.
        extra.insert(
            "response".into(),
            json!({"kind": "choice", "options": ["A", "B"]}),
        );
        extra.insert("expect".into(), json!({"within": 60, "choice": "B"}));
        extra.insert("when".into(), json!({"after": "q", "outcome": "choice:A"}));
        extra.insert("objectives".into(), json!(["comms"]));
        let inject = Inject {
            id: InjectId::parse("inject-042").unwrap(),
            time: ExerciseSeconds::new(332),
            kind: "social".into(),
            content: json!({"text": "BREAKING"}).as_object().unwrap().clone(),
            extra,
        };
        let template = FeedTemplate::new(&inject);
        let at = OffsetDateTime::from_unix_timestamp(1_705_313_132).unwrap();
        let v: Value = serde_json::from_slice(&template.render(
            &TeamId::parse("blue").unwrap(),
            &ExerciseId::parse("ex-1").unwrap(),
            at,
            ExerciseSeconds::new(335),
        ))
        .unwrap();
        assert_eq!(
            v,
            json!({"id":"inject-042","timestamp":"2024-01-15T10:05:32.000Z","exerciseTime":332,
                   "time":332,"delivered_at":335,"type":"social","content":{"text":"BREAKING"},"team_id":"blue","exercise_id":"ex-1",
                   "priority":"high","media":["/media/a.jpg"],
                   "response":{"kind":"choice","options":["A","B"]}})
        );
    }

    #[test]
    fn control_messages_parse_or_say_why_not() {
        let check = |raw: &str, want: ControlInput| {
            assert_eq!(parse_control(raw.as_bytes()), want, "{raw}")
        };
        check(
            r#"{"command":"pause","timestamp":"2024-01-15T10:05:45Z","reason":"Technical issue with Team Green"}"#,
            ControlInput::Command {
                command: Command::Pause,
                reason: Some("Technical issue with Team Green".into()),
            },
        );
        check(
            r#"{"command":"start"}"#,
            ControlInput::Command {
                command: Command::Start,
                reason: None,
            },
        );
        check(
            &format!(r#"{{"command":"start","source":"{ANNOUNCEMENT_SOURCE}"}}"#),
            ControlInput::Announcement,
        );
        let invalid = |raw: &str, needle: &str| match parse_control(raw.as_bytes()) {
            ControlInput::Invalid(why) => assert!(why.contains(needle), "{raw}: {why}"),
            other => panic!("{raw}: {other:?}"),
        };
        invalid("not json at all", "not JSON");
        invalid("\u{0}\u{1}\u{2}", "not JSON");
        invalid(r#"{"cmd":"start"}"#, "missing field `command`");
        invalid(r#"{"command":"launch"}"#, "unknown command \"launch\"");
        invalid(r#"{"command":7}"#, "must be a string");
        invalid("[1,2,3]", "not a control message");
        check(
            r#"{"command":"decide","decision":"escalate","teams":["blue"],"reason":"drill"}"#,
            ControlInput::Decide {
                decision: "escalate".into(),
                teams: Some(vec!["blue".into()]),
                reason: Some("drill".into()),
            },
        );
        check(
            r#"{"command":"decide","decision":"escalate"}"#,
            ControlInput::Decide {
                decision: "escalate".into(),
                teams: None,
                reason: None,
            },
        );
        invalid(r#"{"command":"decide"}"#, "needs \"decision\"");
        invalid(
            r#"{"command":"decide","decision":"x","teams":"blue"}"#,
            "array of team ids",
        );
        invalid(
            r#"{"command":"decide","decision":"x","teams":[1]}"#,
            "array of team ids",
        );
    }

    #[test]
    fn a_team_is_read_from_its_responses_topic_only() {
        let topics = Topics::new(&ExerciseId::parse("ex-1").unwrap());
        assert_eq!(topics.team_responses, "/exercise/ex-1/team/+/responses");
        assert_eq!(
            topics.posting_team("/exercise/ex-1/team/red/posts"),
            Some("red")
        );
        assert_eq!(
            topics.posting_team("/exercise/ex-1/team/red/responses"),
            None
        );
        assert_eq!(
            topics.responding_team("/exercise/ex-1/team/blue/responses"),
            Some("blue")
        );
        for other in [
            "/exercise/ex-1/team/blue/feed",
            "/exercise/ex-2/team/blue/responses",
            "/exercise/ex-1/team/a/b/responses",
            "/exercise/ex-1/responses",
        ] {
            assert_eq!(topics.responding_team(other), None, "{other}");
        }
    }
}
