//! Scenario and timeline texts for the tests of this folder, written to a
//! temporary folder or given inline, and the checks they share.

use std::fs;
use std::sync::Arc;

use serde_json::Value;

use super::{Scenario, ValidationError, load, load_inline};
use crate::config::Limits;

/// A scenario of `minutes` with one team per `(team id, timeline_id)`.
pub(super) fn scenario(minutes: &str, teams: &[(&str, &str)]) -> String {
    let teams: Vec<String> = teams
        .iter()
        .map(|(id, timeline)| format!(r#"{{"id": "{id}", "timeline_id": "{timeline}"}}"#))
        .collect();
    format!(
        r#"{{"name": "Test", "duration_minutes": {minutes}, "teams": [{}]}}"#,
        teams.join(", ")
    )
}

/// A timeline file holding `injects`, each a JSON object as text.
pub(super) fn timeline(injects: &[&str]) -> String {
    format!(r#"{{"injects": [{}]}}"#, injects.join(",\n"))
}

/// Writes `files` into a fresh folder and loads its `scenario.json`, with the
/// folder's `storage/` as timeline storage.
pub(super) fn load_files(
    files: &[(&str, &str)],
    limits: &Limits,
) -> (tempfile::TempDir, Result<Scenario, Vec<ValidationError>>) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().expect("parent")).expect("create folder");
        fs::write(&path, text).expect("write file");
    }
    let storage = dir.path().join("storage");
    let result = load(&dir.path().join("scenario.json"), limits, Some(&storage));
    (dir, result)
}

pub(super) fn load_ok(files: &[(&str, &str)]) -> (tempfile::TempDir, Scenario) {
    let (dir, result) = load_files(files, &Limits::default());
    match result {
        Ok(scenario) => (dir, scenario),
        Err(errors) => panic!(
            "expected a valid scenario, got {}",
            shown(&dir, &errors).join("\n")
        ),
    }
}

/// The errors as `validate` prints them, paths relative to the temp folder.
pub(super) fn shown(dir: &tempfile::TempDir, errors: &[ValidationError]) -> Vec<String> {
    let prefix = format!("{}/", dir.path().display());
    errors
        .iter()
        .map(|error| error.to_string().replace(&prefix, ""))
        .collect()
}

pub(super) fn check(files: &[(&str, &str)], expected: &[&str]) {
    check_with(&Limits::default(), files, expected);
}

pub(super) fn check_with(limits: &Limits, files: &[(&str, &str)], expected: &[&str]) {
    let (dir, result) = load_files(files, limits);
    match result {
        Ok(_) => panic!("expected errors {expected:#?}, but the scenario loaded"),
        Err(errors) => assert_eq!(shown(&dir, &errors), expected),
    }
}

/// One team "blue" on timeline "t" holding `injects`, in a 45-minute exercise.
pub(super) fn check_injects(injects: &[&str], expected: &[&str]) {
    check(
        &[
            ("scenario.json", &scenario("45", &[("blue", "t")])),
            ("timelines/t.json", &timeline(injects)),
        ],
        expected,
    );
}

pub(super) const BRIEFING: &str =
    r#"{"id": "i-1", "time": 0, "type": "briefing", "content": {"title": "T"}}"#;

pub(super) fn expect_valid(result: Result<Scenario, Vec<ValidationError>>) -> Scenario {
    result.unwrap_or_else(|errors| {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("expected a valid scenario, got\n{}", errors.join("\n"))
    })
}

/// The errors `load_inline` reports for `package`, as `validate` prints them.
pub(super) fn inline_errors(package: &Value, limits: &Limits) -> Vec<String> {
    match load_inline(package, limits) {
        Ok(_) => panic!("expected errors, but {package} loaded"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// For each team, the index of the first team on the same timeline.
pub(super) fn sharing(scenario: &Scenario) -> Vec<usize> {
    let teams = &scenario.teams;
    teams
        .iter()
        .map(|team| {
            teams
                .iter()
                .position(|other| Arc::ptr_eq(&other.timeline, &team.timeline))
                .expect("the team itself")
        })
        .collect()
}

/// Everything but the paths is equal, which teams share a timeline included.
pub(super) fn assert_same(actual: &Scenario, expected: &Scenario) {
    assert_eq!(actual.exercise_id, expected.exercise_id);
    assert_eq!(actual.scenario_id, expected.scenario_id);
    assert_eq!(actual.name, expected.name);
    assert_eq!(actual.description, expected.description);
    assert_eq!(actual.start_time, expected.start_time);
    assert_eq!(actual.duration, expected.duration);
    assert_eq!(actual.teams.len(), expected.teams.len());
    for (a, e) in actual.teams.iter().zip(&expected.teams) {
        assert_eq!(a.id, e.id);
        assert_eq!(a.name, e.name, "team {}", e.id);
        assert_eq!(a.timeline.id, e.timeline.id, "team {}", e.id);
        assert_eq!(a.timeline.name, e.timeline.name, "team {}", e.id);
        assert_eq!(a.timeline.injects, e.timeline.injects, "team {}", e.id);
    }
    assert_eq!(sharing(actual), sharing(expected));
}
