//! The scenario object checked: its fields, its teams and the timeline each
//! names, and, once every timeline is checked, the [`Scenario`] built when
//! nothing was wrong. Every check records its error and goes on, so one
//! run reports every problem.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::fields::{
    Report, as_array, as_str, describe, optional_string, parse_start_time, required, required_id,
};
use super::model::{MAX_TURNS, Scenario, Team, Timeline, ValidationError};
use super::play::{
    Channel, Objective, check_channel_teams, check_channels, check_objectives, check_timeline_play,
};
use super::timing::{scenario_duration, turns};
use crate::config::Limits;
use crate::domain::{ExerciseId, ExerciseSeconds, TeamId};

/// The scenario object, checked, before its timelines are loaded.
pub(super) struct Header {
    exercise_id: Option<ExerciseId>,
    scenario_id: Option<String>,
    name: Option<String>,
    description: Option<String>,
    start_time: Option<u32>,
    /// None when invalid (the error is recorded); injects are still checked.
    duration: Option<ExerciseSeconds>,
    /// No duration given: one follows from the injects.
    duration_missing: bool,
    turn_based: bool,
    total_turns: Option<u16>,
    package: Option<String>,
    channels: Vec<Channel>,
    objectives: Vec<Objective>,
    /// The valid team entries.
    specs: Vec<TeamSpec>,
}

/// What a valid team entry becomes before its timeline is loaded.
struct TeamSpec {
    id: TeamId,
    name: Option<String>,
    /// The loader's index of its timeline.
    source: usize,
}

/// How a team's timeline reference turned out.
pub(super) enum Resolved {
    /// The loader's index of the timeline.
    Found(usize),
    /// Why there is no such timeline; reported once per scenario however many teams
    /// name it.
    NotFound(String),
    /// No timeline can be found, for a reason reported elsewhere.
    Unavailable,
}

/// A team's valid timeline reference.
#[derive(Debug, Clone, Copy)]
pub(super) enum TimelineRef<'a> {
    /// `timeline_id`: topic-safe, no `..`, `/` or `\`.
    Id(&'a str),
    /// `timeline_file`: not empty.
    File(&'a str),
}

/// Checks the scenario object and its team list; `resolve` finds the timeline each
/// valid team reference names.
pub(super) fn read_header(
    root: &Map<String, Value>,
    limits: &Limits,
    report: &mut Report<'_>,
    mut resolve: impl FnMut(TimelineRef<'_>) -> Resolved,
) -> Header {
    let exercise_id = report
        .check(None, optional_string(root, "id"))
        .flatten()
        .and_then(|raw| {
            let parsed = ExerciseId::parse(&raw).map_err(|e| format!("invalid \"id\": {e}"));
            report.check(None, parsed)
        });
    let scenario_id = report
        .check(None, optional_string(root, "scenario_id"))
        .flatten();
    let name = report.check(None, optional_string(root, "name")).flatten();
    let description = report
        .check(None, optional_string(root, "description"))
        .flatten();
    let start_time = report
        .check(None, optional_string(root, "start_time"))
        .flatten()
        .and_then(|raw| report.check(None, parse_start_time(&raw)));
    let duration_missing = !root.contains_key("duration_minutes") && !root.contains_key("duration");
    let duration = if duration_missing {
        None
    } else {
        scenario_duration(root, limits, report)
    };
    let turn_based = report
        .check(
            None,
            match root.get("turn_based") {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(format!(
                    "\"turn_based\" must be true or false, got {}",
                    describe(other)
                )),
            },
        )
        .unwrap_or(false);
    let total_turns = match root.get("total_turns") {
        None | Some(Value::Null) => None,
        Some(value) => report.check(
            None,
            value
                .as_u64()
                .filter(|&n| (1..=u64::from(MAX_TURNS)).contains(&n))
                .map(|n| n as u16)
                .ok_or_else(|| {
                    format!(
                        "\"total_turns\" must be a whole number from 1 to {MAX_TURNS}, got {}",
                        describe(value)
                    )
                }),
        ),
    };

    // Written by `to_inline` for a scenario from a package; a plain folder
    // name or nothing.
    let package = root
        .get("package")
        .and_then(Value::as_str)
        .filter(|name| crate::scenario::package::is_plain_name(name))
        .map(str::to_owned);
    let channels = check_channels(root, report);
    let objectives = check_objectives(root, report);
    let raw_teams = report
        .check(
            None,
            required(root, "teams").and_then(|v| as_array(v, "teams")),
        )
        .map_or(&[][..], Vec::as_slice);
    if raw_teams.is_empty() && root.get("teams").is_some_and(Value::is_array) {
        report.error(None, "\"teams\" must not be empty");
    }
    if raw_teams.len() > limits.max_teams {
        report.error(
            None,
            format!(
                "too many teams: {}, the limit is {}",
                raw_teams.len(),
                limits.max_teams
            ),
        );
    }

    let mut first_index: HashMap<TeamId, usize> = HashMap::new();
    let mut not_found = HashSet::new();
    let specs = raw_teams
        .iter()
        .enumerate()
        .filter_map(|(index, raw)| {
            team_spec(
                index,
                raw,
                &mut first_index,
                &mut not_found,
                &mut resolve,
                report,
            )
        })
        .collect();
    Header {
        exercise_id,
        scenario_id,
        name,
        description,
        start_time,
        duration,
        duration_missing,
        turn_based,
        total_turns,
        package,
        channels,
        objectives,
        specs,
    }
}

impl Header {
    /// The last second an inject's `time` may name: the duration, except in a
    /// turn-based scenario (times count from each turn's start, checked once
    /// every timeline is loaded) or when the duration follows from the injects.
    pub(super) fn end(&self) -> Option<ExerciseSeconds> {
        if self.turn_based { None } else { self.duration }
    }

    /// The scenario, when no error was found; `timelines` by the loader's index.
    pub(super) fn finish(
        self,
        path: &Path,
        timelines: &[Option<Arc<Timeline>>],
        mut errors: Vec<ValidationError>,
        limits: &Limits,
    ) -> Result<Scenario, Vec<ValidationError>> {
        let loaded: Vec<&Arc<Timeline>> = timelines.iter().flatten().collect();
        let turns = if self.turn_based {
            turns(&loaded, self.total_turns, &mut errors)
        } else {
            None
        };
        // Without a duration, the exercise ends a minute after its last
        // inject, on a whole minute.
        let last = match &turns {
            Some(turns) => turns.ends.last().copied().unwrap_or(0),
            None => loaded
                .iter()
                .flat_map(|t| t.injects.iter().map(|i| i.time.get()))
                .max()
                .unwrap_or(0),
        };
        let duration = if self.duration_missing {
            // In u64: a last inject near u32::MAX must not wrap around.
            // (Capped at the limit, which only the injects themselves may pass.)
            let secs = (u64::from(last) + 60).div_ceil(60) * 60;
            let secs = if u64::from(last) > u64::from(limits.max_duration_secs) {
                errors.push(ValidationError {
                    file: path.to_owned(),
                    location: None,
                    reason: format!(
                        "no duration given, and the injects run to {} s: over the limit of {} s (MAX_EXERCISE_DURATION; raise it to allow longer exercises)",
                        last, limits.max_duration_secs
                    ),
                });
                limits.max_duration_secs
            } else {
                secs.min(u64::from(limits.max_duration_secs)) as u32
            };
            Some(ExerciseSeconds::new(secs))
        } else {
            self.duration
        };
        if let (Some(_), Some(duration)) = (&turns, duration)
            && last > duration.get()
            && !self.duration_missing
        {
            errors.push(ValidationError {
                file: path.to_owned(),
                location: None,
                reason: format!(
                    "the turns run to {last} s, after the end of the exercise ({} s)",
                    duration.get()
                ),
            });
        }
        if let Some(duration) = duration {
            let mut seen: Vec<&Arc<Timeline>> = Vec::new();
            for timeline in &loaded {
                if !seen.iter().any(|s| Arc::ptr_eq(s, timeline)) {
                    seen.push(timeline);
                    check_timeline_play(
                        timeline,
                        &self.objectives,
                        self.turn_based,
                        duration,
                        &mut errors,
                    );
                }
            }
        }
        let team_ids: Vec<TeamId> = self.specs.iter().map(|s| s.id.clone()).collect();
        check_channel_teams(
            &self.channels,
            &team_ids,
            &mut Report {
                file: path,
                errors: &mut errors,
            },
        );
        let Some(duration) = duration.filter(|_| errors.is_empty()) else {
            return Err(errors);
        };
        let teams = self
            .specs
            .into_iter()
            .filter_map(|spec| {
                let timeline = timelines.get(spec.source)?.clone()?;
                Some(Team {
                    id: spec.id,
                    name: spec.name,
                    timeline,
                })
            })
            .collect();
        Ok(Scenario {
            path: path.to_owned(),
            exercise_id: self.exercise_id,
            scenario_id: self.scenario_id,
            name: self.name,
            description: self.description,
            start_time: self.start_time,
            duration,
            teams,
            turns,
            package: self.package,
            channels: self.channels,
            objectives: self.objectives,
        })
    }
}

fn team_spec(
    index: usize,
    raw: &Value,
    first_index: &mut HashMap<TeamId, usize>,
    not_found: &mut HashSet<String>,
    resolve: &mut dyn FnMut(TimelineRef<'_>) -> Resolved,
    report: &mut Report<'_>,
) -> Option<TeamSpec> {
    let index_location = format!("team #{index}");
    let Value::Object(team) = raw else {
        report.error(
            Some(&index_location),
            format!("team must be an object, got {}", describe(raw)),
        );
        return None;
    };
    let id = required_id(team, TeamId::parse);
    let location = match &id {
        Ok(id) => format!("team {:?}", id.as_str()),
        Err(_) => index_location,
    };
    let location = Some(location.as_str());
    let mut id = report.check(location, id);
    if let Some(team_id) = &id {
        if let Some(first) = first_index.get(team_id) {
            report.error(
                location,
                format!("duplicate team id (first at team #{first})"),
            );
            id = None;
        } else {
            first_index.insert(team_id.clone(), index);
        }
    }
    let name = report
        .check(location, optional_string(team, "name"))
        .flatten();
    let source = report
        .check(location, timeline_ref(team))
        .and_then(|reference| match resolve(reference) {
            Resolved::Found(source) => Some(source),
            Resolved::NotFound(reason) => {
                if not_found.insert(reason.clone()) {
                    report.error(location, reason);
                }
                None
            }
            Resolved::Unavailable => None,
        });
    Some(TeamSpec {
        id: id?,
        name,
        source: source?,
    })
}

/// The team's `timeline_id` or `timeline_file`, exactly one of them, checked.
fn timeline_ref(team: &Map<String, Value>) -> Result<TimelineRef<'_>, String> {
    match (team.get("timeline_id"), team.get("timeline_file")) {
        (Some(_), Some(_)) => {
            Err("give either \"timeline_id\" or \"timeline_file\", not both".to_owned())
        }
        (None, None) => Err("missing field \"timeline_id\" (or \"timeline_file\")".to_owned()),
        (None, Some(file)) => {
            let file = as_str(file, "timeline_file")?;
            if file.is_empty() {
                return Err("\"timeline_file\" must not be empty".to_owned());
            }
            Ok(TimelineRef::File(file))
        }
        (Some(id), None) => {
            let id = as_str(id, "timeline_id")?;
            check_timeline_id(id)?;
            Ok(TimelineRef::Id(id))
        }
    }
}

/// A timeline id becomes a file name: it must be topic-safe and stay in its folder.
pub(super) fn check_timeline_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("\"timeline_id\" must not be empty".to_owned());
    }
    if id.contains("..") {
        return Err(format!(
            "\"timeline_id\" {id:?} contains \"..\", which is not allowed in a timeline id"
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| matches!(c, '/' | '\\' | '+' | '#') || c.is_control())
    {
        return Err(format!(
            "\"timeline_id\" {id:?} contains {c:?}, which is not allowed in a timeline id"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::fixtures::*;

    #[test]
    fn refuses_bad_teams() {
        let limits = Limits {
            max_teams: 20,
            ..Limits::default()
        };
        check_with(
            &limits,
            &[
                (
                    "scenario.json",
                    r#"{"duration_minutes": 45, "teams": [
                        {"id": "blue", "timeline_id": "t"},
                        {"id": "blue", "timeline_id": "t"},
                        {"id": "a+b", "timeline_id": "t"},
                        {"timeline_id": "t"},
                        "red",
                        {"id": "red", "name": 7, "timeline_id": "t"},
                        {"id": "green", "timeline_id": "t", "timeline_file": "timelines/t.json"},
                        {"id": "orange"},
                        {"id": "t1", "timeline_id": "../secret"},
                        {"id": "t2", "timeline_id": "a/b"},
                        {"id": "t3", "timeline_id": "a\\b"},
                        {"id": "t4", "timeline_id": ""},
                        {"id": "t5", "timeline_id": 7},
                        {"id": "t6", "timeline_file": ""}
                    ]}"#,
                ),
                ("timelines/t.json", &timeline(&[BRIEFING])),
            ],
            &[
                r#"scenario.json: team "blue": duplicate team id (first at team #0)"#,
                r#"scenario.json: team #2: invalid "id": id "a+b" contains '+', which is not allowed in an MQTT topic"#,
                r#"scenario.json: team #3: missing field "id""#,
                r#"scenario.json: team #4: team must be an object, got "red""#,
                r#"scenario.json: team "red": "name" must be a string, got 7"#,
                r#"scenario.json: team "green": give either "timeline_id" or "timeline_file", not both"#,
                r#"scenario.json: team "orange": missing field "timeline_id" (or "timeline_file")"#,
                r#"scenario.json: team "t1": "timeline_id" "../secret" contains "..", which is not allowed in a timeline id"#,
                r#"scenario.json: team "t2": "timeline_id" "a/b" contains '/', which is not allowed in a timeline id"#,
                r#"scenario.json: team "t3": "timeline_id" "a\\b" contains '\\', which is not allowed in a timeline id"#,
                r#"scenario.json: team "t4": "timeline_id" must not be empty"#,
                r#"scenario.json: team "t5": "timeline_id" must be a string, got 7"#,
                r#"scenario.json: team "t6": "timeline_file" must not be empty"#,
            ],
        );
    }

    #[test]
    fn refuses_missing_empty_and_wrongly_typed_team_lists() {
        let check_teams = |teams: &str, expected: &str| {
            check(
                &[(
                    "scenario.json",
                    &format!(r#"{{"duration_minutes": 45{teams}}}"#),
                )],
                &[expected],
            );
        };
        check_teams("", r#"scenario.json: missing field "teams""#);
        check_teams(
            r#", "teams": []"#,
            r#"scenario.json: "teams" must not be empty"#,
        );
        check_teams(
            r#", "teams": {"blue": "t"}"#,
            r#"scenario.json: "teams" must be an array, got an object"#,
        );
    }

    #[test]
    fn refuses_ids_with_text_direction_controls_or_surrounding_whitespace() {
        check(
            &[
                (
                    "scenario.json",
                    "{\"id\": \"ex-1\\u202e\", \"duration_minutes\": 45, \"teams\": [
                        {\"id\": \"blue\\u202etxt.exe\", \"timeline_id\": \"t\"},
                        {\"id\": \" red\", \"timeline_id\": \"t\"},
                        {\"id\": \"green\", \"timeline_id\": \"t\"}
                    ]}",
                ),
                (
                    "timelines/t.json",
                    &timeline(&[
                        BRIEFING,
                        r#"{"id": "i-2\u200b", "time": 0, "type": "news", "content": {}}"#,
                        r#"{"id": "i-3 ", "time": 0, "type": "news", "content": {}}"#,
                    ]),
                ),
            ],
            &[
                r#"scenario.json: invalid "id": id "ex-1\u{202e}" contains U+202E, an invisible or text-direction character"#,
                r#"scenario.json: team #0: invalid "id": id "blue\u{202e}txt.exe" contains U+202E, an invisible or text-direction character"#,
                r#"scenario.json: team #1: invalid "id": id " red" starts or ends with whitespace"#,
                r#"timelines/t.json: inject #1: invalid "id": id "i-2\u{200b}" contains U+200B, an invisible or text-direction character"#,
                r#"timelines/t.json: inject #2: invalid "id": id "i-3 " starts or ends with whitespace"#,
            ],
        );
    }

    #[test]
    fn reports_every_error_at_once_in_file_order() {
        check(
            &[
                (
                    "scenario.json",
                    r#"{"id": "a/b", "name": 3, "duration_minutes": 1, "teams": [
                        {"id": "blue", "timeline_id": "t"},
                        {"id": "red", "timeline_id": "missing"},
                        {"id": "green", "timeline_file": "other.json"}
                    ]}"#,
                ),
                (
                    "timelines/t.json",
                    &timeline(&[
                        r#"{"id": "i-1", "time": 61, "type": "news", "content": {}}"#,
                        r#"{"id": "i-2", "time": 1.5, "type": "news"}"#,
                    ]),
                ),
                ("other.json", "{\"injects\": [}"),
            ],
            &[
                r#"scenario.json: invalid "id": id "a/b" contains '/', which is not allowed in an MQTT topic"#,
                r#"scenario.json: "name" must be a string, got 3"#,
                r#"scenario.json: team "red": timeline file not found: timelines/missing.json or storage/missing.json"#,
                r#"timelines/t.json: inject "i-1": "time" 61 is after the end of the exercise (60 s)"#,
                r#"timelines/t.json: inject "i-2": "time" must be a whole number of seconds, got 1.5"#,
                r#"timelines/t.json: inject "i-2": missing field "content""#,
                "other.json: line 1, column 14: invalid JSON: expected value",
            ],
        );
    }

    #[test]
    fn enforces_configured_limits() {
        let limits = Limits {
            max_duration_secs: 600,
            max_teams: 2,
            max_injects_per_timeline: 2,
            max_inject_bytes: 262_144,
            max_file_bytes: 67_108_864,
        };
        let inject =
            |n: u32| format!(r#"{{"id": "i-{n}", "time": {n}, "type": "news", "content": {{}}}}"#);
        let two = timeline(&[&inject(1), &inject(2)]);
        let three = timeline(&[&inject(1), &inject(2), &inject(3)]);
        check_with(
            &limits,
            &[
                (
                    "scenario.json",
                    &scenario("11", &[("blue", "two"), ("red", "three"), ("green", "two")]),
                ),
                ("timelines/two.json", &two),
                ("timelines/three.json", &three),
            ],
            &[
                r#"scenario.json: "duration_minutes" 11 (660 s) is over the limit of 600 s (MAX_EXERCISE_DURATION; raise it to allow longer exercises)"#,
                "scenario.json: too many teams: 3, the limit is 2",
                "timelines/three.json: too many injects: 3, the limit is 2",
            ],
        );
        // At the limits everything loads.
        let (_dir, result) = load_files(
            &[
                (
                    "scenario.json",
                    &scenario("10", &[("blue", "two"), ("red", "two")]),
                ),
                ("timelines/two.json", &two),
            ],
            &limits,
        );
        assert_eq!(result.map(|s| s.delivery_count()).ok(), Some(4));
    }
}
