//! How long an exercise runs and where its turns fall: `duration_minutes`
//! (or `duration`) read as whole seconds, and each turn's start and end from
//! its injects.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::fields::{Report, describe};
use super::model::{MAX_TURNS, Timeline, Turns, ValidationError};
use crate::config::Limits;
use crate::domain::ExerciseSeconds;

/// Each inject's turn checked, and where each turn starts and ends: a turn
/// lasts as long as its latest inject, over every timeline.
pub(super) fn turns(
    timelines: &[&Arc<Timeline>],
    total: Option<u16>,
    errors: &mut Vec<ValidationError>,
) -> Option<Turns> {
    let mut longest: Vec<u32> = vec![0; usize::from(total.unwrap_or(0))];
    let before = errors.len();
    for timeline in timelines {
        for inject in &timeline.injects {
            let location = Some(format!("inject {:?}", inject.id.as_str()));
            let turn = match inject.extra.get("turn") {
                None => {
                    errors.push(ValidationError {
                        file: timeline.path.clone(),
                        location,
                        reason: "missing field \"turn\" (the scenario is turn-based)".into(),
                    });
                    continue;
                }
                Some(value) => match inject.turn() {
                    Some(turn) => turn,
                    None => {
                        errors.push(ValidationError {
                            file: timeline.path.clone(),
                            location,
                            reason: format!(
                                "\"turn\" must be a whole number from 1 to {MAX_TURNS}, got {}",
                                describe(value)
                            ),
                        });
                        continue;
                    }
                },
            };
            if let Some(total) = total
                && turn > total
            {
                errors.push(ValidationError {
                    file: timeline.path.clone(),
                    location,
                    reason: format!("\"turn\" {turn} is after the last turn ({total})"),
                });
                continue;
            }
            let index = usize::from(turn) - 1;
            if longest.len() <= index {
                longest.resize(index + 1, 0);
            }
            longest[index] = longest[index].max(inject.time.get());
        }
    }
    if errors.len() > before {
        return None;
    }
    let mut starts = Vec::with_capacity(longest.len());
    let mut ends = Vec::with_capacity(longest.len());
    let mut at = 0u32;
    for length in longest {
        starts.push(at);
        at = at.saturating_add(length);
        ends.push(at);
    }
    if starts.is_empty() {
        starts.push(0);
        ends.push(0);
    }
    Some(Turns { starts, ends })
}

/// `duration_minutes` or `duration`, in minutes; both may be given if they agree.
pub(super) fn scenario_duration(
    root: &Map<String, Value>,
    limits: &Limits,
    report: &mut Report<'_>,
) -> Option<ExerciseSeconds> {
    let given: Vec<(&str, &Value)> = ["duration_minutes", "duration"]
        .into_iter()
        .filter_map(|key| root.get(key).map(|value| (key, value)))
        .collect();
    if given.is_empty() {
        report.error(None, "missing field \"duration_minutes\" (or \"duration\")");
        return None;
    }
    let parsed: Vec<Option<ExerciseSeconds>> = given
        .iter()
        .map(|(key, value)| report.check(None, duration_secs(key, value, limits)))
        .collect();
    match parsed.as_slice() {
        [Some(a), Some(b)] if a != b => {
            report.error(
                None,
                format!(
                    "\"duration_minutes\" {} and \"duration\" {} disagree",
                    given[0].1, given[1].1
                ),
            );
            None
        }
        [Some(a), ..] => Some(*a),
        _ => None,
    }
}

pub(super) fn duration_secs(
    key: &str,
    value: &Value,
    limits: &Limits,
) -> Result<ExerciseSeconds, String> {
    let Some(minutes) = value.as_f64().filter(|_| value.is_number()) else {
        return Err(format!(
            "\"{key}\" must be a number of minutes, got {}",
            describe(value)
        ));
    };
    if minutes <= 0.0 {
        return Err(format!("\"{key}\" must be greater than 0, got {value}"));
    }
    let secs = minutes * 60.0;
    let whole = secs.round();
    if (secs - whole).abs() > 1e-6 {
        return Err(format!(
            "\"{key}\" {value} is not a whole number of seconds"
        ));
    }
    if whole < 1.0 {
        return Err(format!("\"{key}\" {value} is shorter than one second"));
    }
    let max = limits.max_duration_secs;
    if whole > f64::from(max) {
        return Err(format!(
            "\"{key}\" {value} ({whole} s) is over the limit of {max} s (MAX_EXERCISE_DURATION; raise it to allow longer exercises)"
        ));
    }
    // In range: 1 <= whole <= max, a whole number.
    Ok(ExerciseSeconds::new(whole as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::fixtures::*;
    use crate::scenario::{load_inline, to_inline};

    #[test]
    fn reads_duration_in_minutes() {
        let check_duration = |field: &str, secs: u32| {
            let (_dir, loaded) = load_ok(&[
                (
                    "scenario.json",
                    &format!(r#"{{{field}, "teams": [{{"id": "blue", "timeline_id": "t"}}]}}"#),
                ),
                ("timelines/t.json", &timeline(&[BRIEFING])),
            ]);
            assert_eq!(loaded.duration, ExerciseSeconds::new(secs), "{field}");
        };
        check_duration(r#""duration_minutes": 45"#, 2700);
        check_duration(r#""duration_minutes": 0.5"#, 30);
        check_duration(r#""duration": 1.25"#, 75);
        check_duration(r#""duration_minutes": 120"#, 7200);
        check_duration(r#""duration_minutes": 2, "duration": 2.0"#, 120);
        // 0.1 minutes is 6.000000000000001 s in binary floating point.
        check_duration(r#""duration_minutes": 0.1"#, 6);
    }

    #[test]
    fn loads_an_earlier_platform_package_as_it_is() {
        // timeline_file paths, no duration, turns, extra metadata.
        let (_dir, scenario) = load_ok(&[
            (
                "scenario.json",
                r#"{"scenario_id": "legacy-7", "name": "Legacy", "turn_based": true,
                    "total_turns": 2, "author": "someone",
                    "teams": [{"id": "blue", "timeline_file": "timelines/blue.json"},
                              {"id": "red", "timeline_file": "./timelines/red.json"}]}"#,
            ),
            (
                "timelines/blue.json",
                r#"{"injects": [
                    {"id": "b1", "turn": 1, "time": 0, "type": "news", "content": {}},
                    {"id": "b2", "turn": 1, "time": 90, "type": "news", "content": {}},
                    {"id": "b3", "turn": 2, "time": 30, "type": "email", "content": {}}]}"#,
            ),
            (
                "timelines/red.json",
                r#"{"injects": [
                    {"id": "r1", "turn": 2, "time": 0, "type": "sms", "content": {}},
                    {"id": "r2", "turn": 2, "time": 45, "type": "sms", "content": {}}]}"#,
            ),
        ]);
        let turns = scenario.turns.clone().expect("turn-based");
        assert_eq!(
            (turns.starts.clone(), turns.ends.clone()),
            (vec![0, 90], vec![90, 135])
        );
        assert_eq!(
            scenario.duration.get(),
            240,
            "135 s of turns, plus a minute, on a minute"
        );
        let due: Vec<u32> = scenario
            .teams
            .iter()
            .flat_map(|t| t.timeline.injects.iter().map(|i| scenario.due(i).get()))
            .collect();
        assert_eq!(due, [0, 90, 120, 90, 135]);
        // It survives its inline form.
        let again = load_inline(&to_inline(&scenario), &Limits::default()).unwrap();
        assert_eq!(again.turns, scenario.turns);
        assert_eq!(again.duration, scenario.duration);

        // Without turns and without a duration: a minute after the last inject.
        let (_dir, plain) = load_ok(&[
            (
                "scenario.json",
                r#"{"teams": [{"id": "blue", "timeline_id": "t"}]}"#,
            ),
            (
                "timelines/t.json",
                &timeline(&[
                    BRIEFING,
                    r#"{"id": "i-2", "time": 600, "type": "news", "content": {}}"#,
                ]),
            ),
        ]);
        assert_eq!(plain.duration.get(), 660);
        assert_eq!(plain.turns, None);
    }

    #[test]
    fn refuses_bad_turns() {
        let files = |scenario_extra: &str, injects: &[&str]| {
            vec![
                (
                    "scenario.json".to_owned(),
                    format!(
                        r#"{{"turn_based": true, {scenario_extra} "teams": [{{"id": "blue", "timeline_id": "t"}}]}}"#
                    ),
                ),
                ("timelines/t.json".to_owned(), timeline(injects)),
            ]
        };
        let run = |scenario_extra: &str, injects: &[&str], expected: &[&str]| {
            let owned = files(scenario_extra, injects);
            let borrowed: Vec<(&str, &str)> = owned
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            check(&borrowed, expected);
        };
        run(
            "",
            &[BRIEFING],
            &[
                r#"timelines/t.json: inject "i-1": missing field "turn" (the scenario is turn-based)"#,
            ],
        );
        run(
            r#""total_turns": 2,"#,
            &[
                r#"{"id": "a", "turn": 3, "time": 0, "type": "news", "content": {}}"#,
                r#"{"id": "b", "turn": "one", "time": 0, "type": "news", "content": {}}"#,
            ],
            &[
                r#"timelines/t.json: inject "a": "turn" 3 is after the last turn (2)"#,
                r#"timelines/t.json: inject "b": "turn" must be a whole number from 1 to 1000, got "one""#,
            ],
        );
        run(
            r#""total_turns": 0,"#,
            &[r#"{"id": "a", "turn": 1, "time": 0, "type": "news", "content": {}}"#],
            &[r#"scenario.json: "total_turns" must be a whole number from 1 to 1000, got 0"#],
        );
        run(
            r#""duration_minutes": 1,"#,
            &[
                r#"{"id": "a", "turn": 1, "time": 50, "type": "news", "content": {}}"#,
                r#"{"id": "b", "turn": 2, "time": 50, "type": "news", "content": {}}"#,
            ],
            &["scenario.json: the turns run to 100 s, after the end of the exercise (60 s)"],
        );
        run(
            r#""turn_based": "yes","#,
            &[BRIEFING],
            &[r#"scenario.json: "turn_based" must be true or false, got "yes""#],
        );
    }

    #[test]
    fn refuses_bad_durations() {
        let check_duration = |field: &str, expected: &str| {
            check(
                &[
                    (
                        "scenario.json",
                        &format!(r#"{{{field}"teams": [{{"id": "blue", "timeline_id": "t"}}]}}"#),
                    ),
                    ("timelines/t.json", &timeline(&[BRIEFING])),
                ],
                &[expected],
            );
        };
        check_duration(
            r#""duration_minutes": "45", "#,
            r#"scenario.json: "duration_minutes" must be a number of minutes, got "45""#,
        );
        check_duration(
            r#""duration": null, "#,
            r#"scenario.json: "duration" must be a number of minutes, got null"#,
        );
        check_duration(
            r#""duration_minutes": 0, "#,
            r#"scenario.json: "duration_minutes" must be greater than 0, got 0"#,
        );
        check_duration(
            r#""duration_minutes": -5, "#,
            r#"scenario.json: "duration_minutes" must be greater than 0, got -5"#,
        );
        check_duration(
            r#""duration_minutes": 0.51, "#,
            r#"scenario.json: "duration_minutes" 0.51 is not a whole number of seconds"#,
        );
        check_duration(
            r#""duration_minutes": 1e-9, "#,
            r#"scenario.json: "duration_minutes" 1e-9 is shorter than one second"#,
        );
        check_duration(
            r#""duration_minutes": 121, "#,
            r#"scenario.json: "duration_minutes" 121 (7260 s) is over the limit of 7200 s (MAX_EXERCISE_DURATION; raise it to allow longer exercises)"#,
        );
        check_duration(
            r#""duration_minutes": 45, "duration": 30, "#,
            r#"scenario.json: "duration_minutes" 45 and "duration" 30 disagree"#,
        );
    }

    #[test]
    fn checks_inject_times_even_when_the_duration_is_invalid() {
        check(
            &[
                ("scenario.json", &scenario("\"long\"", &[("blue", "t")])),
                (
                    "timelines/t.json",
                    &timeline(&[r#"{"id": "i-1", "time": -1, "type": "news", "content": {}}"#]),
                ),
            ],
            &[
                r#"scenario.json: "duration_minutes" must be a number of minutes, got "long""#,
                r#"timelines/t.json: inject "i-1": "time" must not be negative, got -1"#,
            ],
        );
    }
}
