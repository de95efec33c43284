//! The validated scenario the engine runs: its teams, their timelines and
//! injects, its turns, and the error a check reports.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::domain::{ExerciseId, ExerciseSeconds, InjectId, TeamId};

/// A scenario whose every team has a valid timeline.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The scenario file this was loaded from.
    pub path: PathBuf,
    /// `id` of the scenario file: the exercise id, when present.
    pub exercise_id: Option<ExerciseId>,
    pub scenario_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub duration: ExerciseSeconds,
    /// `start_time`: the in-world time of day at T+0, in seconds after
    /// midnight, shown beside the exercise clock.
    pub start_time: Option<u32>,
    /// In file order.
    pub teams: Vec<Team>,
    /// Set for a turn-based scenario (`turn_based: true`).
    pub turns: Option<Turns>,
    /// The package (folder under MEDIA_STORAGE_PATH) it came from, where its
    /// media is looked for first.
    pub package: Option<String>,
    /// Simulated public channels teams post to (two-way play).
    pub channels: Vec<super::play::Channel>,
    /// What evaluators score teams on.
    pub objectives: Vec<super::play::Objective>,
}

/// The turns of a turn-based scenario. Each inject names its `turn` and its
/// `time` counts from that turn's start; a turn ends when its last inject is
/// due, and the next starts there when a controller says so. Exercise time
/// stands still in between, so every turn's place on the exercise clock is
/// known in advance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turns {
    /// Exercise second each turn starts at, turn 1 first.
    pub starts: Vec<u32>,
    /// Exercise second each turn's last inject is due (its start when it has none).
    pub ends: Vec<u32>,
}

impl Turns {
    pub fn total(&self) -> u16 {
        self.starts.len() as u16
    }
}

#[derive(Debug, Clone)]
pub struct Team {
    pub id: TeamId,
    pub name: Option<String>,
    /// Shared between teams that name the same timeline.
    pub timeline: Arc<Timeline>,
}

#[derive(Debug, Clone)]
pub struct Timeline {
    /// The file's `id`, or its file stem when it has none.
    pub id: String,
    pub name: Option<String>,
    pub path: PathBuf,
    /// In file order (not sorted by time).
    pub injects: Vec<Inject>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Inject {
    pub id: InjectId,
    pub time: ExerciseSeconds,
    /// `type` in the file.
    pub kind: String,
    pub content: Map<String, Value>,
    /// Every other field of the inject (`priority`, `media`, `action`, ...),
    /// passed through to the feed message unchanged.
    pub extra: Map<String, Value>,
}

/// One problem found in a scenario or timeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub file: PathBuf,
    /// Where in the file: `line 3, column 7`, `team "red"`, `inject "inject-004"`,
    /// `inject #3` (0-based index when the inject has no usable id); None for the
    /// whole file.
    pub location: Option<String>,
    pub reason: String,
}

impl fmt::Display for ValidationError {
    /// `FILE: LOCATION: REASON`, or `FILE: REASON` for the whole file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ValidationError {}

/// The most turns a turn-based scenario may have, with or without
/// `total_turns`.
pub const MAX_TURNS: u16 = 1000;

impl Inject {
    /// The `turn` of an inject in a turn-based scenario (kept among the
    /// passed-through fields); None when absent or not a whole number from
    /// 1 to [`MAX_TURNS`].
    pub fn turn(&self) -> Option<u16> {
        self.extra
            .get("turn")
            .and_then(Value::as_u64)
            .filter(|t| (1..=u64::from(MAX_TURNS)).contains(t))
            .map(|t| t as u16)
    }
}

impl Scenario {
    /// The exercise second `inject` is due: its `time`, counted from the
    /// start of its turn in a turn-based scenario.
    pub fn due(&self, inject: &Inject) -> ExerciseSeconds {
        match (&self.turns, inject.turn()) {
            (Some(turns), Some(turn)) => {
                ExerciseSeconds::new(turns.starts[usize::from(turn) - 1] + inject.time.get())
            }
            _ => inject.time,
        }
    }

    /// How many (team, inject) deliveries one run of this scenario makes.
    pub fn delivery_count(&self) -> usize {
        self.teams
            .iter()
            .map(|team| team.timeline.injects.len())
            .sum()
    }
}

/// An inject as a timeline file holds it: its passed-through fields and its own.
pub fn inject_value(inject: &Inject) -> Value {
    let mut fields = inject.extra.clone();
    fields.insert("id".to_owned(), Value::from(inject.id.as_str()));
    fields.insert("time".to_owned(), Value::from(inject.time.get()));
    fields.insert("type".to_owned(), Value::from(inject.kind.as_str()));
    fields.insert("content".to_owned(), Value::Object(inject.content.clone()));
    Value::Object(fields)
}

/// The inverse of [`inject_value`], for stored injects that were validated
/// when they were first accepted; None when the value is not one.
pub fn inject_from_value(value: &Value) -> Option<Inject> {
    let mut m = value.as_object()?.clone();
    let id = InjectId::parse(m.remove("id")?.as_str()?).ok()?;
    let time = ExerciseSeconds::new(u32::try_from(m.remove("time")?.as_u64()?).ok()?);
    let kind = m.remove("type")?.as_str()?.to_owned();
    let Value::Object(content) = m.remove("content")? else {
        return None;
    };
    Some(Inject {
        id,
        time,
        kind,
        content,
        extra: m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inject_survives_its_stored_form() {
        let value = serde_json::json!({"id": "x-1", "time": 42, "type": "sms",
            "content": {"text": "hi"}, "priority": "high", "media": ["/m.jpg"]});
        let inject = inject_from_value(&value).unwrap();
        assert_eq!(inject_value(&inject), value);
        assert!(inject_from_value(&serde_json::json!({"id": "x", "time": -1})).is_none());
    }

    #[test]
    fn displays_errors_as_file_location_reason() {
        let error = ValidationError {
            file: PathBuf::from("timelines/t.json"),
            location: Some("inject \"i-4\"".to_owned()),
            reason: "duplicate inject id".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            r#"timelines/t.json: inject "i-4": duplicate inject id"#
        );
        let error = ValidationError {
            location: None,
            ..error
        };
        assert_eq!(error.to_string(), "timelines/t.json: duplicate inject id");
    }
}
