//! The inline form: a scenario as one JSON value with its timelines inside
//! it, as the API's create body carries it and as scenarios are stored.
//! [`load_inline`] reads it with the checks the file loader makes;
//! [`to_inline`] writes a scenario back as it.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::catalog::Catalog;
use super::fields::{Report, format_start_time, top_level_object};
use super::model::{Scenario, Timeline, ValidationError, inject_value};
use super::timeline::check_timeline;
use super::validation::{Resolved, check_timeline_id, read_header};
use crate::config::Limits;
use crate::domain::{ExerciseId, ExerciseSeconds};

/// The file name errors in an inline upload give for its scenario part; its
/// timelines are `<upload>/timelines/<id>` (or `<upload>/timelines/<key>` when
/// `"timelines"` is an object, `<upload>/timelines/#<index>` for an array entry
/// without a usable id).
pub const UPLOAD: &str = "<upload>";

/// Loads and validates a scenario uploaded as one JSON value, reporting every
/// problem at once, with the same checks and messages as [`load`](super::load).
///
/// The value is a scenario object as in a scenario file, plus `"timelines"`:
/// either an array of timeline objects, each with its `id`, or an object mapping a
/// key (a timeline id or a `timeline_file` path) to a timeline object.
///
/// - A team's `timeline_id` names the timeline with that id: in an array, the
///   entry with that `id`; in an object, the entry with that key, else the one
///   entry whose `id` (or, without one, whose key's file stem) is that id.
/// - A team's `timeline_file` names, in an object, the entry whose key is that path
///   (`.` steps aside); in an array, the entry whose `id` is the path's file stem
///   (its last step without `.json`).
///
/// Teams naming the same entry share its [`Arc`]. Timelines no team names are
/// allowed and not checked beyond what finding the others needs (array entries
/// must be objects with a unique, non-empty string `id`; object entries must be
/// objects). The result's paths are the pseudo-files errors name: [`UPLOAD`] for
/// the scenario and `<upload>/timelines/...` for its timelines.
///
/// Errors come out as [`load`](super::load)'s do: the scenario part first,
/// then problems with the `"timelines"` entries in upload order, then each
/// timeline the teams name in the order first named.
pub fn load_inline(package: &Value, limits: &Limits) -> Result<Scenario, Vec<ValidationError>> {
    let upload = Path::new(UPLOAD);
    let mut errors = Vec::new();
    let Some(root) = top_level_object(
        package,
        &mut Report {
            file: upload,
            errors: &mut errors,
        },
    ) else {
        return Err(errors);
    };
    let mut entry_errors = Vec::new();
    let catalog = Catalog::new(root.get("timelines"), &mut entry_errors);
    let mut used: Vec<usize> = Vec::new();
    let mut report = Report {
        file: upload,
        errors: &mut errors,
    };
    let header = read_header(root, limits, &mut report, |reference| match &catalog {
        Ok(catalog) => match catalog.resolve(reference) {
            Ok(entry) => {
                if !used.contains(&entry) {
                    used.push(entry);
                }
                Resolved::Found(entry)
            }
            Err(reason) => Resolved::NotFound(reason),
        },
        Err(_) => Resolved::Unavailable,
    });
    let catalog = match catalog {
        Ok(catalog) => catalog,
        Err(reason) => {
            report.error(None, reason);
            Catalog::default()
        }
    };
    errors.append(&mut entry_errors);

    let mut timelines: Vec<Option<Arc<Timeline>>> = vec![None; catalog.entries.len()];
    for index in used {
        let entry = &catalog.entries[index];
        timelines[index] = entry
            .fields
            .and_then(|fields| {
                check_timeline(
                    fields,
                    &entry.file,
                    Some(entry.id.clone()),
                    header.end(),
                    limits,
                    &mut errors,
                )
            })
            .map(Arc::new);
    }
    header.finish(upload, &timelines, errors, limits)
}

/// A scenario as one JSON value that [`load_inline`] loads back into the same
/// scenario: the same exercise id, metadata, duration, teams in order, timelines
/// shared by the same teams, and injects in order with every field.
///
/// Every team names its timeline by `timeline_id`, and `"timelines"` is an array
/// with one entry per distinct timeline, in the order teams first name them. A
/// timeline keeps its `id` unless an earlier timeline has it or it cannot be a
/// `timeline_id` (empty, `..`, `/`, `\`, `+`, `#` or control characters): then it
/// is renamed, the unusable characters replaced by `-`, and suffixed `-2`, `-3`,
/// ... until unique. The duration is `duration_minutes`: whole minutes as an
/// integer, otherwise a fraction that reads back as the same whole seconds.
/// Paths and the files' unknown fields are not part of a [`Scenario`] and are not
/// written.
pub fn to_inline(scenario: &Scenario) -> Value {
    let mut distinct: Vec<&Arc<Timeline>> = Vec::new();
    let mut team_timelines = Vec::with_capacity(scenario.teams.len());
    for team in &scenario.teams {
        let index = distinct
            .iter()
            .position(|seen| Arc::ptr_eq(seen, &team.timeline))
            .unwrap_or_else(|| {
                distinct.push(&team.timeline);
                distinct.len() - 1
            });
        team_timelines.push(index);
    }
    let ids = reference_ids(distinct.iter().map(|timeline| timeline.id.as_str()));

    let mut root = Map::new();
    let put = |fields: &mut Map<String, Value>, key: &str, value: Option<&str>| {
        if let Some(value) = value {
            fields.insert(key.to_owned(), Value::from(value));
        }
    };
    put(
        &mut root,
        "id",
        scenario.exercise_id.as_ref().map(ExerciseId::as_str),
    );
    put(&mut root, "scenario_id", scenario.scenario_id.as_deref());
    put(&mut root, "name", scenario.name.as_deref());
    put(&mut root, "description", scenario.description.as_deref());
    if let Some(start) = scenario.start_time {
        root.insert(
            "start_time".to_owned(),
            Value::from(format_start_time(start)),
        );
    }
    root.insert(
        "duration_minutes".to_owned(),
        duration_minutes(scenario.duration),
    );
    put(&mut root, "package", scenario.package.as_deref());
    if let Some(turns) = &scenario.turns {
        root.insert("turn_based".to_owned(), Value::Bool(true));
        root.insert("total_turns".to_owned(), Value::from(turns.total()));
    }
    let teams = scenario
        .teams
        .iter()
        .zip(team_timelines)
        .map(|(team, timeline)| {
            let mut fields = Map::new();
            put(&mut fields, "id", Some(team.id.as_str()));
            put(&mut fields, "name", team.name.as_deref());
            put(&mut fields, "timeline_id", Some(&ids[timeline]));
            Value::Object(fields)
        })
        .collect();
    root.insert("teams".to_owned(), Value::Array(teams));
    if !scenario.channels.is_empty() {
        let channels = scenario.channels.iter().map(|c| c.to_value()).collect();
        root.insert("channels".to_owned(), Value::Array(channels));
    }
    if !scenario.objectives.is_empty() {
        let objectives = scenario.objectives.iter().map(|o| o.to_value()).collect();
        root.insert("objectives".to_owned(), Value::Array(objectives));
    }
    let timelines = distinct
        .iter()
        .zip(&ids)
        .map(|(timeline, id)| {
            let mut fields = Map::new();
            put(&mut fields, "id", Some(id));
            put(&mut fields, "name", timeline.name.as_deref());
            let injects = timeline.injects.iter().map(inject_value).collect();
            fields.insert("injects".to_owned(), Value::Array(injects));
            Value::Object(fields)
        })
        .collect();
    root.insert("timelines".to_owned(), Value::Array(timelines));
    Value::Object(root)
}

/// The `timeline_id` each of `ids` goes by in a package, in order: its own id
/// when that is usable as a `timeline_id` and no earlier one has it; else a usable
/// form of it, suffixed `-2`, `-3`, ... until it is taken by no other.
fn reference_ids<'a>(ids: impl Iterator<Item = &'a str> + Clone) -> Vec<String> {
    let mut taken: HashSet<&str> = HashSet::new();
    let keeps: Vec<bool> = ids
        .clone()
        .map(|id| check_timeline_id(id).is_ok() && taken.insert(id))
        .collect();
    let mut taken: HashSet<String> = taken.into_iter().map(str::to_owned).collect();
    ids.zip(keeps)
        .map(|(id, keep)| {
            if keep {
                return id.to_owned();
            }
            let base = usable_timeline_id(id);
            let mut candidate = base.clone();
            let mut suffix = 2;
            while taken.contains(&candidate) {
                candidate = format!("{base}-{suffix}");
                suffix += 1;
            }
            taken.insert(candidate.clone());
            candidate
        })
        .collect()
}

/// `id` with what [`check_timeline_id`] refuses replaced: unsafe characters by
/// `-`, `..` by `.`, nothing by `timeline`.
fn usable_timeline_id(id: &str) -> String {
    let mut usable: String = id
        .chars()
        .map(|c| {
            if matches!(c, '/' | '\\' | '+' | '#') || c.is_control() {
                '-'
            } else {
                c
            }
        })
        .collect();
    while usable.contains("..") {
        usable = usable.replace("..", ".");
    }
    if usable.is_empty() {
        usable.push_str("timeline");
    }
    usable
}

/// A duration in minutes as JSON: an integer when whole, else the nearest `f64`,
/// which [`duration_secs`] reads back as the same whole seconds.
fn duration_minutes(duration: ExerciseSeconds) -> Value {
    let secs = duration.get();
    if secs.is_multiple_of(60) {
        Value::from(secs / 60)
    } else {
        Value::from(f64::from(secs) / 60.0)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::domain::{InjectId, TeamId};
    use crate::scenario::fixtures::*;
    use crate::scenario::load;
    use crate::scenario::model::{Inject, Team};
    use crate::scenario::timing::duration_secs;

    fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name)
            .join("scenario.json")
    }

    #[test]
    fn round_trips_the_examples_through_inline_packages() {
        for (name, expected_sharing, timeline_ids) in [
            (
                "four-teams",
                vec![0, 1, 2, 3],
                vec![
                    "blue-standard",
                    "red-aggressive",
                    "orange-operations",
                    "green-city",
                ],
            ),
            (
                "shared-timeline",
                vec![0, 0, 2],
                vec!["night-shift", "night-shift", "red-shipping-line"],
            ),
        ] {
            let from_files = expect_valid(load(&example(name), &Limits::default(), None));
            let package = to_inline(&from_files);
            // Through text, as an upload arrives.
            let text = serde_json::to_string_pretty(&package).expect("serialise");
            let uploaded: Value = serde_json::from_str(&text).expect("parse");
            let inline = expect_valid(load_inline(&uploaded, &Limits::default()));

            assert_same(&inline, &from_files);
            assert_eq!(sharing(&inline), expected_sharing, "{name}");
            let ids: Vec<&str> = inline
                .teams
                .iter()
                .map(|t| t.timeline.id.as_str())
                .collect();
            assert_eq!(ids, timeline_ids, "{name}");
            assert!(
                inline
                    .teams
                    .iter()
                    .any(|t| t.timeline.injects.iter().any(|i| !i.extra.is_empty())),
                "{name}: the examples pass fields through"
            );
            assert_eq!(inline.path, Path::new("<upload>"));
            assert_eq!(
                inline.teams[0].timeline.path,
                PathBuf::from(format!("<upload>/timelines/{}", timeline_ids[0]))
            );
            // One timeline entry per distinct timeline, and a second trip changes nothing.
            let distinct = expected_sharing
                .iter()
                .enumerate()
                .filter(|&(team, &first)| team == first)
                .count();
            assert_eq!(
                package["timelines"].as_array().map(Vec::len),
                Some(distinct)
            );
            assert_eq!(to_inline(&inline), package, "{name}");
        }
    }

    #[test]
    fn inline_errors_are_reported_all_at_once_naming_the_upload() {
        let check_inline = |package: &str, expected: &[&str]| {
            let package: Value = serde_json::from_str(package).expect("test package");
            assert_eq!(inline_errors(&package, &Limits::default()), expected);
        };
        check_inline(
            r#"{"id": "a/b", "name": 3, "duration_minutes": 1, "teams": [
                {"id": "blue", "timeline_id": "t"},
                {"id": "red", "timeline_id": "missing"},
                {"id": "green", "timeline_file": "timelines/other.json"},
                {"id": "orange", "timeline_id": "missing"},
                {"id": "blue", "timeline_id": "t"}
            ], "timelines": [
                {"id": "t", "injects": [
                    {"id": "i-1", "time": 61, "type": "news", "content": {}},
                    {"id": "i-2", "time": 1.5, "type": "news"}
                ]},
                {"id": "other", "injects": {}},
                "loose",
                {"name": "no id", "injects": []},
                {"id": "t", "injects": []},
                {"id": "", "injects": []},
                {"id": 4, "injects": []}
            ]}"#,
            &[
                r#"<upload>: invalid "id": id "a/b" contains '/', which is not allowed in an MQTT topic"#,
                r#"<upload>: "name" must be a string, got 3"#,
                r#"<upload>: team "red": timeline not found: no timeline has the id "missing""#,
                r#"<upload>: team "blue": duplicate team id (first at team #0)"#,
                r#"<upload>/timelines/#2: timeline must be an object, got "loose""#,
                r#"<upload>/timelines/#3: missing field "id""#,
                r#"<upload>/timelines/#4: duplicate timeline id "t" (first at timeline #0)"#,
                r#"<upload>/timelines/#5: "id" must not be empty"#,
                r#"<upload>/timelines/#6: "id" must be a string, got 4"#,
                r#"<upload>/timelines/t: inject "i-1": "time" 61 is after the end of the exercise (60 s)"#,
                r#"<upload>/timelines/t: inject "i-2": "time" must be a whole number of seconds, got 1.5"#,
                r#"<upload>/timelines/t: inject "i-2": missing field "content""#,
                r#"<upload>/timelines/other: "injects" must be an array, got an object"#,
            ],
        );
        // Keys listed in sorted order, so the order of a JSON object does not matter.
        check_inline(
            r#"{"duration_minutes": 1, "teams": [
                {"id": "blue", "timeline_file": "timelines/gone.json"},
                {"id": "red", "timeline_id": "dup"},
                {"id": "green", "timeline_id": "x"},
                {"id": "orange", "timeline_id": "nothing"},
                {"id": "white", "timeline_file": "a.json"},
                {"id": "black", "timeline_id": "named"}
            ], "timelines": {
                "": {"injects": []},
                "./a.json": {"id": "dup", "injects": [{"id": "i-1"}]},
                "a.json": {"injects": []},
                "b.json": {"id": "dup", "injects": []},
                "named": {"id": 3, "injects": []},
                "x": [1]
            }}"#,
            &[
                r#"<upload>: team "blue": timeline not found: "timelines" has no key "timelines/gone.json""#,
                r#"<upload>: team "red": timeline "dup" is ambiguous: the timelines "./a.json", "b.json" all have that id"#,
                r#"<upload>: team "orange": timeline not found: "timelines" has no key or timeline id "nothing""#,
                r#"<upload>/timelines/: key "" names no timeline"#,
                r#"<upload>/timelines/a.json: key "a.json" names the same file as "./a.json""#,
                r#"<upload>/timelines/x: timeline must be an object, got an array"#,
                r#"<upload>/timelines/./a.json: inject "i-1": missing field "time""#,
                r#"<upload>/timelines/./a.json: inject "i-1": missing field "type""#,
                r#"<upload>/timelines/./a.json: inject "i-1": missing field "content""#,
                r#"<upload>/timelines/named: "id" must be a string, got 3"#,
            ],
        );
        for (package, expected) in [
            (
                "[]",
                "<upload>: expected a JSON object at the top level, got an array",
            ),
            // A missing "timelines" is one error, not one per team.
            (
                r#"{"duration_minutes": 1, "teams": [{"id": "blue", "timeline_id": "t"},
                    {"id": "red", "timeline_id": "u"}]}"#,
                r#"<upload>: missing field "timelines""#,
            ),
            (
                r#"{"duration_minutes": 1, "teams": [{"id": "blue", "timeline_id": "t"}],
                    "timelines": "t"}"#,
                r#"<upload>: "timelines" must be an array or an object, got "t""#,
            ),
            (
                r#"{"duration_minutes": 1, "timelines": []}"#,
                r#"<upload>: missing field "teams""#,
            ),
            (
                r#"{"duration_minutes": 1, "teams": [{"id": "blue", "timeline_id": "../t"}],
                    "timelines": {"../t": {"injects": []}}}"#,
                r#"<upload>: team "blue": "timeline_id" "../t" contains "..", which is not allowed in a timeline id"#,
            ),
            (
                r#"{"duration_minutes": 1, "teams": [{"id": "blue", "timeline_file": "t.json"}],
                    "timelines": [{"id": "t", "injects": [{"id": "i-1", "time": 60,
                        "type": "news", "content": {}}, {"id": "i-1", "time": 0,
                        "type": "news", "content": {}}]}]}"#,
                r#"<upload>/timelines/t: inject "i-1": duplicate inject id (first at inject #0)"#,
            ),
        ] {
            check_inline(package, &[expected]);
        }
    }

    #[test]
    fn inline_uploads_and_files_get_the_same_checks() {
        // (scenario, timeline "t" without its id, limits): each through both loaders.
        let small = Limits {
            max_duration_secs: 600,
            max_teams: 2,
            max_injects_per_timeline: 2,
            max_inject_bytes: 262_144,
            max_file_bytes: 67_108_864,
        };
        let news = |id: &str, time: &str| {
            format!(r#"{{"id": "{id}", "time": {time}, "type": "news", "content": {{}}}}"#)
        };
        let cases: Vec<(String, String, Limits)> = vec![
            (
                scenario("\"45\"", &[("blue", "t")]),
                timeline(&[BRIEFING]),
                Limits::default(),
            ),
            (
                scenario("0.51", &[("blue", "t"), ("blue", "t"), ("a+b", "t")]),
                timeline(&[&news("i-1", "-1"), &news("i-1", "3.0"), "[]"]),
                Limits::default(),
            ),
            (
                r#"{"duration": 10, "teams": [{"id": "blue", "timeline_id": "t"},
                    {"id": "red", "timeline_id": "t", "timeline_file": "t.json"}, "green",
                    {"id": "t1", "timeline_id": "a/b"}, {"id": "t2", "timeline_file": ""},
                    {"id": "t3", "name": 7}]}"#
                    .to_owned(),
                timeline(&[
                    r#"{"id": "i-1", "time": 0, "type": "Social", "content": "x"}"#,
                    r#"{"time": 0, "type": 3, "content": {}}"#,
                ]),
                Limits::default(),
            ),
            (
                scenario("11", &[("blue", "t"), ("red", "t"), ("green", "t")]),
                timeline(&[&news("i-1", "1"), &news("i-2", "2"), &news("i-3", "700")]),
                small,
            ),
            (
                r#"{"duration_minutes": 10, "teams": []}"#.to_owned(),
                r#"{"name": ["x"], "injects": []}"#.to_owned(),
                small,
            ),
        ];
        for (scenario_text, timeline_text, limits) in cases {
            let (dir, from_files) = load_files(
                &[
                    ("scenario.json", &scenario_text),
                    ("timelines/t.json", &timeline_text),
                ],
                &limits,
            );
            let file_errors: Vec<String> = shown(&dir, &from_files.expect_err("invalid"))
                .iter()
                .map(|error| {
                    error
                        .replace("scenario.json", "<upload>")
                        .replace("timelines/t.json", "<upload>/timelines/t")
                })
                .collect();
            let mut package: Value = serde_json::from_str(&scenario_text).expect("scenario");
            package["timelines"] = serde_json::json!({
                "t": serde_json::from_str::<Value>(&timeline_text).expect("timeline"),
            });
            assert!(!file_errors.is_empty());
            assert_eq!(
                inline_errors(&package, &limits),
                file_errors,
                "{scenario_text}"
            );
        }
    }

    #[test]
    fn limits_apply_to_inline_uploads() {
        let limits = Limits {
            max_duration_secs: 600,
            max_teams: 2,
            max_injects_per_timeline: 2,
            max_inject_bytes: 262_144,
            max_file_bytes: 67_108_864,
        };
        let inject = |n: u32| serde_json::json!({"id": format!("i-{n}"), "time": n, "type": "news", "content": {}});
        let upload = |minutes: u32, teams: &[(&str, &str)]| {
            let teams: Vec<Value> = teams
                .iter()
                .map(|(id, timeline)| serde_json::json!({"id": id, "timeline_id": timeline}))
                .collect();
            serde_json::json!({
                "duration_minutes": minutes,
                "teams": teams,
                "timelines": [
                    {"id": "two", "injects": [inject(1), inject(2)]},
                    {"id": "three", "injects": [inject(1), inject(2), inject(3)]},
                ],
            })
        };
        assert_eq!(
            inline_errors(
                &upload(11, &[("blue", "two"), ("red", "three"), ("green", "two")]),
                &limits
            ),
            [
                r#"<upload>: "duration_minutes" 11 (660 s) is over the limit of 600 s (MAX_EXERCISE_DURATION; raise it to allow longer exercises)"#,
                "<upload>: too many teams: 3, the limit is 2",
                "<upload>/timelines/three: too many injects: 3, the limit is 2",
            ]
        );
        // At the limits everything loads; the unused timeline over them is no matter.
        let loaded = expect_valid(load_inline(
            &upload(10, &[("blue", "two"), ("red", "two")]),
            &limits,
        ));
        assert_eq!(loaded.delivery_count(), 4);
        assert_eq!(loaded.duration, ExerciseSeconds::new(600));
    }

    fn built_timeline(id: &str, inject_ids: &[&str]) -> Arc<Timeline> {
        Arc::new(Timeline {
            id: id.to_owned(),
            name: None,
            path: PathBuf::from(format!("built/{id}.json")),
            injects: inject_ids
                .iter()
                .enumerate()
                .map(|(n, inject_id)| Inject {
                    id: InjectId::parse(inject_id).expect("inject id"),
                    time: ExerciseSeconds::new(u32::try_from(n).expect("small")),
                    kind: "news".to_owned(),
                    content: Map::new(),
                    extra: Map::new(),
                })
                .collect(),
        })
    }

    fn built_scenario(teams: &[(&str, &Arc<Timeline>)]) -> Scenario {
        Scenario {
            path: PathBuf::from("built.json"),
            exercise_id: None,
            scenario_id: None,
            name: None,
            description: None,
            start_time: None,
            duration: ExerciseSeconds::new(90),
            teams: teams
                .iter()
                .map(|(id, timeline)| Team {
                    id: TeamId::parse(id).expect("team id"),
                    name: None,
                    timeline: Arc::clone(timeline),
                })
                .collect(),
            turns: None,
            package: None,
            channels: Vec::new(),
            objectives: Vec::new(),
        }
    }

    #[test]
    fn writes_packages_with_unique_usable_timeline_ids() {
        let first = built_timeline("t", &["a"]);
        let same_id = built_timeline("t", &["b"]);
        let taken = built_timeline("t-2", &["c"]);
        let slashed = built_timeline("a/b", &["d"]);
        let dots = built_timeline("..", &["e"]);
        let original = built_scenario(&[
            ("blue", &first),
            ("red", &same_id),
            ("green", &taken),
            ("orange", &first),
            ("white", &slashed),
            ("black", &dots),
        ]);
        let package = to_inline(&original);
        let refs: Vec<&str> = package["teams"]
            .as_array()
            .expect("teams")
            .iter()
            .map(|team| team["timeline_id"].as_str().expect("timeline_id"))
            .collect();
        assert_eq!(refs, ["t", "t-3", "t-2", "t", "a-b", "."]);
        let ids: Vec<&str> = package["timelines"]
            .as_array()
            .expect("timelines")
            .iter()
            .map(|timeline| timeline["id"].as_str().expect("id"))
            .collect();
        assert_eq!(ids, ["t", "t-3", "t-2", "a-b", "."]);

        let loaded = expect_valid(load_inline(&package, &Limits::default()));
        assert_eq!(sharing(&loaded), sharing(&original));
        assert_eq!(sharing(&loaded), [0, 1, 2, 0, 4, 5]);
        for (loaded, original) in loaded.teams.iter().zip(&original.teams) {
            assert_eq!(loaded.timeline.injects, original.timeline.injects);
        }
    }

    #[test]
    fn writes_packages_as_scenario_and_timeline_files_hold_them() {
        let mut inject = built_timeline("t", &["i-1"]).injects[0].clone();
        inject
            .content
            .insert("headline".to_owned(), Value::from("H"));
        inject
            .extra
            .insert("priority".to_owned(), Value::from("high"));
        inject
            .extra
            .insert("media".to_owned(), serde_json::json!(["/m.jpg"]));
        let timeline = Arc::new(Timeline {
            id: "t".to_owned(),
            name: Some("Timeline".to_owned()),
            path: PathBuf::new(),
            injects: vec![inject],
        });
        let mut scenario = built_scenario(&[("blue", &timeline), ("red", &timeline)]);
        scenario.exercise_id = ExerciseId::parse("ex-1").ok();
        scenario.name = Some("Name".to_owned());
        scenario.start_time = Some(9 * 3600 + 42 * 60);
        scenario.teams[0].name = Some("Blue".to_owned());
        assert_eq!(
            to_inline(&scenario),
            serde_json::json!({
                "id": "ex-1",
                "name": "Name",
                "start_time": "09:42",
                "duration_minutes": 1.5,
                "teams": [
                    {"id": "blue", "name": "Blue", "timeline_id": "t"},
                    {"id": "red", "timeline_id": "t"}
                ],
                "timelines": [{"id": "t", "name": "Timeline", "injects": [{
                    "id": "i-1", "time": 0, "type": "news", "priority": "high",
                    "media": ["/m.jpg"], "content": {"headline": "H"}
                }]}]
            })
        );
        scenario.duration = ExerciseSeconds::new(7200);
        assert_eq!(
            to_inline(&scenario)["duration_minutes"],
            serde_json::json!(120)
        );
    }

    #[test]
    fn durations_survive_the_trip_through_minutes() {
        let limits = Limits {
            max_duration_secs: u32::MAX,
            ..Limits::default()
        };
        let large = [86_399, 1_000_003, 4_000_000_001, u32::MAX - 1, u32::MAX];
        for secs in (1..=20_000).chain(large) {
            let text = duration_minutes(ExerciseSeconds::new(secs)).to_string();
            let value: Value = serde_json::from_str(&text).expect("a JSON number");
            assert_eq!(
                duration_secs("duration_minutes", &value, &limits),
                Ok(ExerciseSeconds::new(secs)),
                "{secs} s written as {text}"
            );
        }
    }
}
