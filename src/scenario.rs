//! Scenario and timeline files (SPEC section 1): loading, validation, and the
//! validated in-memory form the engine runs.
//!
//! [`load`] never stops at the first problem: it reads the scenario and every
//! timeline it names and reports every error it finds, each naming the file, the
//! place in it (team, inject, or line and column) and the reason.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::Limits;
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
    /// In file order.
    pub teams: Vec<Team>,
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

impl Scenario {
    /// How many (team, inject) deliveries one run of this scenario makes.
    pub fn delivery_count(&self) -> usize {
        self.teams
            .iter()
            .map(|team| team.timeline.injects.len())
            .sum()
    }
}

/// Loads and validates a scenario and every timeline it names, reporting every
/// problem at once.
///
/// Errors come out grouped by file, the scenario file first and then each timeline
/// in the order teams first name it, and in file order within a file.
pub fn load(
    path: &Path,
    limits: &Limits,
    timeline_storage: Option<&Path>,
) -> Result<Scenario, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let Some(root) = read_json_object(path, &mut errors) else {
        return Err(errors);
    };
    let folder = path.parent().unwrap_or(Path::new(""));
    let mut report = Report {
        file: path,
        errors: &mut errors,
    };

    let exercise_id = report
        .check(None, optional_string(&root, "id"))
        .flatten()
        .and_then(|raw| {
            let parsed = ExerciseId::parse(&raw).map_err(|e| format!("invalid \"id\": {e}"));
            report.check(None, parsed)
        });
    let scenario_id = report
        .check(None, optional_string(&root, "scenario_id"))
        .flatten();
    let name = report.check(None, optional_string(&root, "name")).flatten();
    let description = report
        .check(None, optional_string(&root, "description"))
        .flatten();
    let duration = scenario_duration(&root, limits, &mut report);

    let raw_teams = report
        .check(
            None,
            required(&root, "teams").and_then(|v| as_array(v, "teams")),
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

    let mut sources = Sources::default();
    let mut specs = Vec::new();
    let mut first_index: HashMap<TeamId, usize> = HashMap::new();
    for (index, raw) in raw_teams.iter().enumerate() {
        if let Some(spec) = team_spec(
            index,
            raw,
            folder,
            timeline_storage,
            &mut first_index,
            &mut sources,
            &mut report,
        ) {
            specs.push(spec);
        }
    }

    let timelines: Vec<Option<Arc<Timeline>>> = sources
        .paths
        .iter()
        .map(|source| load_timeline(source, duration, limits, &mut errors).map(Arc::new))
        .collect();

    let Some(duration) = duration.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    let teams = specs
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
        exercise_id,
        scenario_id,
        name,
        description,
        duration,
        teams,
    })
}

/// A one-screen summary of a valid scenario, for the `validate` command.
pub fn summary(scenario: &Scenario) -> String {
    let exercise_id = scenario
        .exercise_id
        .as_ref()
        .map_or_else(|| "(generated at start)".to_owned(), ToString::to_string);
    let secs = scenario.duration.get();
    let minutes = if secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        let text = format!("{:.2}", f64::from(secs) / 60.0);
        format!("{} min", text.trim_end_matches('0').trim_end_matches('.'))
    };

    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "Exercise:  {exercise_id}");
    if let Some(name) = &scenario.name {
        let _ = writeln!(out, "Name:      {name}");
    }
    let _ = writeln!(out, "Duration:  {} ({minutes})", scenario.duration);
    let _ = writeln!(
        out,
        "Teams:     {} ({} deliveries)",
        scenario.teams.len(),
        scenario.delivery_count()
    );
    let _ = writeln!(out);

    let rows: Vec<[String; 5]> = scenario
        .teams
        .iter()
        .map(|team| team_row(scenario, team))
        .collect();
    let mut widths = [0; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for [team, timeline, count, first, last] in &rows {
        let [w0, w1, w2, w3, _] = widths;
        let line = format!("  {team:w0$}  {timeline:w1$}  {count:>w2$}  {first:w3$}  {last}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// Inject fields that are not passed through in `extra`.
const INJECT_FIELDS: [&str; 4] = ["id", "time", "type", "content"];

/// Collects the errors of one file.
struct Report<'a> {
    file: &'a Path,
    errors: &'a mut Vec<ValidationError>,
}

impl Report<'_> {
    fn error(&mut self, location: Option<&str>, reason: impl Into<String>) {
        self.errors.push(ValidationError {
            file: self.file.to_owned(),
            location: location.map(str::to_owned),
            reason: reason.into(),
        });
    }

    /// The value, or None with the error recorded.
    fn check<T>(&mut self, location: Option<&str>, result: Result<T, String>) -> Option<T> {
        result.map_err(|reason| self.error(location, reason)).ok()
    }
}

/// What a valid team entry becomes before its timeline is loaded.
struct TeamSpec {
    id: TeamId,
    name: Option<String>,
    /// Index into [`Sources::paths`].
    source: usize,
}

/// The distinct timeline files named by the teams, in the order first named.
#[derive(Default)]
struct Sources {
    paths: Vec<PathBuf>,
    /// Canonical path to index in `paths`, so two spellings of one file load once.
    by_key: HashMap<PathBuf, usize>,
    /// Missing files already reported, so each is reported once.
    missing: HashSet<String>,
}

impl Sources {
    fn add(&mut self, path: PathBuf) -> usize {
        let key = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        *self.by_key.entry(key).or_insert_with(|| {
            self.paths.push(path);
            self.paths.len() - 1
        })
    }
}

fn team_spec(
    index: usize,
    raw: &Value,
    folder: &Path,
    timeline_storage: Option<&Path>,
    first_index: &mut HashMap<TeamId, usize>,
    sources: &mut Sources,
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
        .check(location, timeline_path(team, folder, timeline_storage))
        .and_then(|resolved| match resolved {
            Ok(path) => Some(sources.add(path)),
            Err(missing) => {
                if sources.missing.insert(missing.clone()) {
                    report.error(location, format!("timeline file not found: {missing}"));
                }
                None
            }
        });
    Some(TeamSpec {
        id: id?,
        name,
        source: source?,
    })
}

/// The timeline file a team names: `Ok(Ok(path))` when it exists, `Ok(Err(paths))`
/// with the paths tried when it does not, `Err` when the team entry is wrong.
fn timeline_path(
    team: &Map<String, Value>,
    folder: &Path,
    timeline_storage: Option<&Path>,
) -> Result<Result<PathBuf, String>, String> {
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
            let path = folder.join(file);
            if path.exists() {
                Ok(Ok(path))
            } else {
                Ok(Err(path.display().to_string()))
            }
        }
        (Some(id), None) => {
            let id = as_str(id, "timeline_id")?;
            check_timeline_id(id)?;
            let file = format!("{id}.json");
            let mut candidates = vec![folder.join("timelines").join(&file)];
            candidates.extend(timeline_storage.map(|storage| storage.join(&file)));
            if let Some(found) = candidates.iter().find(|path| path.exists()) {
                return Ok(Ok(found.clone()));
            }
            let tried: Vec<String> = candidates
                .iter()
                .map(|path| path.display().to_string())
                .collect();
            Ok(Err(tried.join(" or ")))
        }
    }
}

/// A timeline id becomes a file name: it must be topic-safe and stay in its folder.
fn check_timeline_id(id: &str) -> Result<(), String> {
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

/// `duration_minutes` or `duration`, in minutes; both may be given if they agree.
fn scenario_duration(
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

fn duration_secs(key: &str, value: &Value, limits: &Limits) -> Result<ExerciseSeconds, String> {
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
            "\"{key}\" {value} ({whole} s) is over the limit of {max} s"
        ));
    }
    // In range: 1 <= whole <= max, a whole number.
    Ok(ExerciseSeconds::new(whole as u32))
}

/// Loads one timeline file; its errors name that file.
fn load_timeline(
    path: &Path,
    end: Option<ExerciseSeconds>,
    limits: &Limits,
    errors: &mut Vec<ValidationError>,
) -> Option<Timeline> {
    let root = read_json_object(path, errors)?;
    let mut report = Report { file: path, errors };
    let errors_before = report.errors.len();
    let id = report.check(None, optional_string(&root, "id")).flatten();
    let id = match id {
        Some(id) if id.is_empty() => {
            report.error(None, "\"id\" must not be empty");
            None
        }
        Some(id) => Some(id),
        None => path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned()),
    };
    let name = report.check(None, optional_string(&root, "name")).flatten();
    let raw_injects = report.check(
        None,
        required(&root, "injects").and_then(|v| as_array(v, "injects")),
    )?;
    if raw_injects.len() > limits.max_injects_per_timeline {
        report.error(
            None,
            format!(
                "too many injects: {}, the limit is {}",
                raw_injects.len(),
                limits.max_injects_per_timeline
            ),
        );
    }

    let mut first_index: HashMap<InjectId, usize> = HashMap::new();
    let injects: Vec<Inject> = raw_injects
        .iter()
        .enumerate()
        .filter_map(|(index, raw)| inject(index, raw, end, &mut first_index, &mut report))
        .collect();
    if report.errors.len() > errors_before {
        return None;
    }
    Some(Timeline {
        id: id?,
        name,
        path: path.to_owned(),
        injects,
    })
}

fn inject(
    index: usize,
    raw: &Value,
    end: Option<ExerciseSeconds>,
    first_index: &mut HashMap<InjectId, usize>,
    report: &mut Report<'_>,
) -> Option<Inject> {
    let index_location = format!("inject #{index}");
    let Value::Object(fields) = raw else {
        report.error(
            Some(&index_location),
            format!("inject must be an object, got {}", describe(raw)),
        );
        return None;
    };
    let id = required_id(fields, InjectId::parse);
    let location = match &id {
        Ok(id) => format!("inject {:?}", id.as_str()),
        Err(_) => index_location,
    };
    let location = Some(location.as_str());
    let mut id = report.check(location, id);
    if let Some(inject_id) = &id {
        if let Some(first) = first_index.get(inject_id) {
            report.error(
                location,
                format!("duplicate inject id (first at inject #{first})"),
            );
            id = None;
        } else {
            first_index.insert(inject_id.clone(), index);
        }
    }
    let time = report.check(location, inject_time(fields, end));
    let kind = report.check(location, inject_kind(fields));
    let content = report.check(
        location,
        required(fields, "content").and_then(|value| match value {
            Value::Object(content) => Ok(content.clone()),
            other => Err(format!(
                "\"content\" must be an object, got {}",
                describe(other)
            )),
        }),
    );
    let extra = fields
        .iter()
        .filter(|(key, _)| !INJECT_FIELDS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Some(Inject {
        id: id?,
        time: time?,
        kind: kind?,
        content: content?,
        extra,
    })
}

/// `time`: a JSON integer of seconds, 0 up to the end of the exercise. `3.0` is
/// refused like `1.5`: a time that is not written as an integer is a typo.
fn inject_time(
    fields: &Map<String, Value>,
    end: Option<ExerciseSeconds>,
) -> Result<ExerciseSeconds, String> {
    let value = required(fields, "time")?;
    let Value::Number(number) = value else {
        return Err(format!(
            "\"time\" must be a whole number of seconds, got {}",
            describe(value)
        ));
    };
    if let Some(secs) = number.as_u64() {
        if let Some(end) = end
            && secs > u64::from(end.get())
        {
            return Err(format!(
                "\"time\" {secs} is after the end of the exercise ({} s)",
                end.get()
            ));
        }
        return u32::try_from(secs)
            .map(ExerciseSeconds::new)
            .map_err(|_| format!("\"time\" {secs} is too large"));
    }
    if number.as_i64().is_some() || number.as_f64().is_some_and(|f| f < 0.0) {
        return Err(format!("\"time\" must not be negative, got {number}"));
    }
    Err(format!(
        "\"time\" must be a whole number of seconds, got {number}"
    ))
}

/// `type`: a lowercase word, `^[a-z][a-z0-9_-]*$`.
fn inject_kind(fields: &Map<String, Value>) -> Result<String, String> {
    let kind = as_str(required(fields, "type")?, "type")?;
    let mut chars = kind.chars();
    let word = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !word {
        return Err(format!(
            "\"type\" must be a lowercase word (a-z, 0-9, _ and -, starting with a letter), got {}",
            describe(&Value::String(kind.to_owned()))
        ));
    }
    Ok(kind.to_owned())
}

/// Reads a file that must hold a JSON object; every failure is recorded.
fn read_json_object(path: &Path, errors: &mut Vec<ValidationError>) -> Option<Map<String, Value>> {
    let mut report = Report { file: path, errors };
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            report.error(None, format!("cannot read file: {err}"));
            return None;
        }
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Some(map),
        Ok(other) => {
            report.error(
                None,
                format!(
                    "expected a JSON object at the top level, got {}",
                    describe(&other)
                ),
            );
            None
        }
        Err(err) => {
            // serde_json appends " at line L column C"; the location says that already.
            let message = err.to_string();
            let suffix = format!(" at line {} column {}", err.line(), err.column());
            let message = message.strip_suffix(&suffix).unwrap_or(&message);
            report.error(
                Some(&format!("line {}, column {}", err.line(), err.column())),
                format!("invalid JSON: {message}"),
            );
            None
        }
    }
}

fn required<'m>(fields: &'m Map<String, Value>, key: &str) -> Result<&'m Value, String> {
    fields
        .get(key)
        .ok_or_else(|| format!("missing field \"{key}\""))
}

/// An optional string field; `null` counts as absent.
fn optional_string(fields: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => as_str(value, key).map(|s| Some(s.to_owned())),
    }
}

/// The required `id` field, parsed into its id type.
fn required_id<T, E: fmt::Display>(
    fields: &Map<String, Value>,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, String> {
    let raw = as_str(required(fields, "id")?, "id")?;
    parse(raw).map_err(|e| format!("invalid \"id\": {e}"))
}

fn as_str<'v>(value: &'v Value, key: &str) -> Result<&'v str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("\"{key}\" must be a string, got {}", describe(value)))
}

fn as_array<'v>(value: &'v Value, key: &str) -> Result<&'v Vec<Value>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("\"{key}\" must be an array, got {}", describe(value)))
}

/// A wrong value as an error message shows it: scalars as JSON, containers by kind.
fn describe(value: &Value) -> String {
    const MAX_CHARS: usize = 40;
    match value {
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        Value::String(s) if s.chars().count() > MAX_CHARS => {
            let head: String = s.chars().take(MAX_CHARS).collect();
            format!("{}...", Value::String(head))
        }
        scalar => scalar.to_string(),
    }
}

/// Team, timeline (and who shares it), inject count, first and last inject.
fn team_row(scenario: &Scenario, team: &Team) -> [String; 5] {
    let injects = &team.timeline.injects;
    let sharing: Vec<&str> = scenario
        .teams
        .iter()
        .filter(|other| other.id != team.id && Arc::ptr_eq(&other.timeline, &team.timeline))
        .map(|other| other.id.as_str())
        .collect();
    let timeline = if sharing.is_empty() {
        team.timeline.id.clone()
    } else {
        format!("{} (shared with {})", team.timeline.id, sharing.join(", "))
    };
    // Injects need not be sorted: first and last are by time, ties in file order.
    let by_time = |(index, inject): (usize, &Inject)| (inject.time, index);
    let first = injects.iter().enumerate().min_by_key(|&pair| by_time(pair));
    let last = injects.iter().enumerate().max_by_key(|&pair| by_time(pair));
    let show = |label: &str, inject: Option<(usize, &Inject)>| {
        inject.map_or_else(String::new, |(_, inject)| {
            format!("{label} {} {}", inject.time, inject.id)
        })
    };
    [
        team.id.to_string(),
        timeline,
        inject_count(injects.len()),
        show("first", first),
        show("last", last),
    ]
}

fn inject_count(n: usize) -> String {
    match n {
        1 => "1 inject".to_owned(),
        n => format!("{n} injects"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scenario of `minutes` with one team per `(team id, timeline_id)`.
    fn scenario(minutes: &str, teams: &[(&str, &str)]) -> String {
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
    fn timeline(injects: &[&str]) -> String {
        format!(r#"{{"injects": [{}]}}"#, injects.join(",\n"))
    }

    /// Writes `files` into a fresh folder and loads its `scenario.json`, with the
    /// folder's `storage/` as timeline storage.
    fn load_files(
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

    fn load_ok(files: &[(&str, &str)]) -> (tempfile::TempDir, Scenario) {
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
    fn shown(dir: &tempfile::TempDir, errors: &[ValidationError]) -> Vec<String> {
        let prefix = format!("{}/", dir.path().display());
        errors
            .iter()
            .map(|error| error.to_string().replace(&prefix, ""))
            .collect()
    }

    fn check(files: &[(&str, &str)], expected: &[&str]) {
        check_with(&Limits::default(), files, expected);
    }

    fn check_with(limits: &Limits, files: &[(&str, &str)], expected: &[&str]) {
        let (dir, result) = load_files(files, limits);
        match result {
            Ok(_) => panic!("expected errors {expected:#?}, but the scenario loaded"),
            Err(errors) => assert_eq!(shown(&dir, &errors), expected),
        }
    }

    /// One team "blue" on timeline "t" holding `injects`, in a 45-minute exercise.
    fn check_injects(injects: &[&str], expected: &[&str]) {
        check(
            &[
                ("scenario.json", &scenario("45", &[("blue", "t")])),
                ("timelines/t.json", &timeline(injects)),
            ],
            expected,
        );
    }

    const BRIEFING: &str =
        r#"{"id": "i-1", "time": 0, "type": "briefing", "content": {"title": "T"}}"#;

    #[test]
    fn loads_both_team_styles_and_shares_timelines() {
        let (_dir, loaded) = load_ok(&[
            (
                "scenario.json",
                r#"{
                    "id": "maritime-crisis-01", "scenario_id": "mc-1", "name": "Maritime Crisis",
                    "description": "Fire at berth 7", "duration_minutes": 45,
                    "teams": [
                        {"id": "blue", "name": "Blue Team", "timeline_id": "blue-standard"},
                        {"id": "orange", "timeline_id": "blue-standard"},
                        {"id": "red", "timeline_file": "timelines/timeline-red.json"},
                        {"id": "green", "timeline_file": "./timelines/blue-standard.json"}
                    ]
                }"#,
            ),
            (
                "timelines/blue-standard.json",
                r#"{"id": "blue-standard", "name": "Standard", "injects": [
                    {"id": "b-2", "time": 120, "type": "email", "content": {"subject": "S"}},
                    {"id": "b-1", "time": 0, "type": "news", "content": {"headline": "H"}}
                ]}"#,
            ),
            ("timelines/timeline-red.json", &timeline(&[BRIEFING])),
        ]);
        assert_eq!(
            loaded.exercise_id.as_ref().map(ExerciseId::as_str),
            Some("maritime-crisis-01")
        );
        assert_eq!(loaded.scenario_id.as_deref(), Some("mc-1"));
        assert_eq!(loaded.name.as_deref(), Some("Maritime Crisis"));
        assert_eq!(loaded.description.as_deref(), Some("Fire at berth 7"));
        assert_eq!(loaded.duration, ExerciseSeconds::new(2700));
        let ids: Vec<&str> = loaded.teams.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["blue", "orange", "red", "green"]);
        assert_eq!(loaded.teams[0].name.as_deref(), Some("Blue Team"));
        assert_eq!(loaded.teams[1].name, None);

        let [blue, orange, red, green] = &loaded.teams[..] else {
            panic!("four teams");
        };
        assert!(Arc::ptr_eq(&blue.timeline, &orange.timeline));
        assert!(
            Arc::ptr_eq(&blue.timeline, &green.timeline),
            "same file, other style"
        );
        assert!(!Arc::ptr_eq(&blue.timeline, &red.timeline));
        assert_eq!(blue.timeline.id, "blue-standard");
        assert_eq!(blue.timeline.name.as_deref(), Some("Standard"));
        // Timelines keep file order; without an `id` the file stem names them.
        let injects: Vec<(&str, u32)> = blue
            .timeline
            .injects
            .iter()
            .map(|i| (i.id.as_str(), i.time.get()))
            .collect();
        assert_eq!(injects, [("b-2", 120), ("b-1", 0)]);
        assert_eq!(red.timeline.id, "timeline-red");
        assert_eq!(loaded.delivery_count(), 2 + 2 + 1 + 2);
    }

    #[test]
    fn timeline_ids_fall_back_to_timeline_storage() {
        let named = |name: &str| format!(r#"{{"name": "{name}", "injects": [{BRIEFING}]}}"#);
        let (_dir, loaded) = load_ok(&[
            (
                "scenario.json",
                &scenario("10", &[("blue", "local"), ("red", "stored")]),
            ),
            ("timelines/local.json", &named("from the scenario folder")),
            ("storage/local.json", &named("from storage")),
            ("storage/stored.json", &named("from storage")),
        ]);
        let names: Vec<Option<&str>> = loaded
            .teams
            .iter()
            .map(|t| t.timeline.name.as_deref())
            .collect();
        assert_eq!(
            names,
            [Some("from the scenario folder"), Some("from storage")]
        );
        assert!(
            loaded.teams[1]
                .timeline
                .path
                .ends_with("storage/stored.json")
        );
    }

    #[test]
    fn passes_optional_inject_fields_through_and_ignores_unknown_fields() {
        let (_dir, loaded) = load_ok(&[
            (
                "scenario.json",
                r#"{"duration": 30, "package_version": "3.1", "teams": [
                    {"id": "blue", "timeline_id": "t", "colour": "navy"}]}"#,
            ),
            (
                "timelines/t.json",
                r#"{"id": "t", "author": "exercise control", "injects": [
                    {"id": "i-1", "time": 90, "type": "social", "priority": "high",
                     "media": ["/media/a.jpg"], "action": "respond",
                     "x_custom": {"nested": [1, 2]},
                     "content": {"platform": "twitter", "likes": 3}}
                ]}"#,
            ),
        ]);
        assert_eq!(loaded.exercise_id, None);
        assert_eq!(loaded.duration, ExerciseSeconds::new(1800));
        let inject = &loaded.teams[0].timeline.injects[0];
        assert_eq!(inject.kind, "social");
        assert_eq!(inject.time, ExerciseSeconds::new(90));
        assert_eq!(
            Value::Object(inject.content.clone()),
            serde_json::json!({"platform": "twitter", "likes": 3})
        );
        assert_eq!(
            Value::Object(inject.extra.clone()),
            serde_json::json!({
                "priority": "high",
                "media": ["/media/a.jpg"],
                "action": "respond",
                "x_custom": {"nested": [1, 2]}
            })
        );
    }

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
            "",
            r#"scenario.json: missing field "duration_minutes" (or "duration")"#,
        );
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
            r#"scenario.json: "duration_minutes" 121 (7260 s) is over the limit of 7200 s"#,
        );
        check_duration(
            r#""duration_minutes": 45, "duration": 30, "#,
            r#"scenario.json: "duration_minutes" 45 and "duration" 30 disagree"#,
        );
    }

    #[test]
    fn refuses_bad_inject_times() {
        let at = |time: &str| {
            format!(r#"{{"id": "i-1", "time": {time}, "type": "news", "content": {{}}}}"#)
        };
        let check_time = |time: &str, reason: &str| {
            check_injects(
                &[&at(time)],
                &[&format!(r#"timelines/t.json: inject "i-1": {reason}"#)],
            );
        };
        check_time("-5", r#""time" must not be negative, got -5"#);
        check_time("-0.5", r#""time" must not be negative, got -0.5"#);
        check_time(
            "1.5",
            r#""time" must be a whole number of seconds, got 1.5"#,
        );
        check_time(
            "3.0",
            r#""time" must be a whole number of seconds, got 3.0"#,
        );
        check_time(
            r#""10""#,
            r#""time" must be a whole number of seconds, got "10""#,
        );
        check_time(
            "null",
            r#""time" must be a whole number of seconds, got null"#,
        );
        check_time(
            "[1]",
            r#""time" must be a whole number of seconds, got an array"#,
        );
        check_time(
            "2701",
            r#""time" 2701 is after the end of the exercise (2700 s)"#,
        );
        // The last second of the exercise is still inside it.
        let (_dir, loaded) = load_ok(&[
            ("scenario.json", &scenario("45", &[("blue", "t")])),
            ("timelines/t.json", &timeline(&[&at("2700")])),
        ]);
        assert_eq!(
            loaded.teams[0].timeline.injects[0].time,
            ExerciseSeconds::new(2700)
        );
    }

    #[test]
    fn refuses_missing_and_wrongly_typed_inject_fields() {
        check_injects(
            &[
                r#"{"id": "i-1", "type": "news", "content": {}}"#,
                r#"{"id": "i-2", "time": 0, "content": {}}"#,
                r#"{"id": "i-3", "time": 0, "type": "news"}"#,
                r#"{"time": 0, "type": "news", "content": {}}"#,
                r#"{"id": 5, "time": 0, "type": "news", "content": {}}"#,
                r#"{"id": "a/b", "time": 0, "type": "news", "content": {}}"#,
                r#"{"id": "", "time": 0, "type": "news", "content": {}}"#,
                r#"{"id": "i-8", "time": 0, "type": "Social", "content": {}}"#,
                r#"{"id": "i-9", "time": 0, "type": 3, "content": {}}"#,
                r#"{"id": "i-10", "time": 0, "type": "news", "content": "text"}"#,
                r#"["not", "an", "inject"]"#,
            ],
            &[
                r#"timelines/t.json: inject "i-1": missing field "time""#,
                r#"timelines/t.json: inject "i-2": missing field "type""#,
                r#"timelines/t.json: inject "i-3": missing field "content""#,
                r#"timelines/t.json: inject #3: missing field "id""#,
                r#"timelines/t.json: inject #4: "id" must be a string, got 5"#,
                r#"timelines/t.json: inject #5: invalid "id": id "a/b" contains '/', which is not allowed in an MQTT topic"#,
                r#"timelines/t.json: inject #6: invalid "id": id is empty"#,
                r#"timelines/t.json: inject "i-8": "type" must be a lowercase word (a-z, 0-9, _ and -, starting with a letter), got "Social""#,
                r#"timelines/t.json: inject "i-9": "type" must be a string, got 3"#,
                r#"timelines/t.json: inject "i-10": "content" must be an object, got "text""#,
                r#"timelines/t.json: inject #10: inject must be an object, got an array"#,
            ],
        );
    }

    #[test]
    fn refuses_duplicate_inject_ids_within_a_timeline() {
        check_injects(
            &[
                BRIEFING,
                r#"{"id": "i-2", "time": 5, "type": "news", "content": {}}"#,
                r#"{"id": "i-1", "time": 9, "type": "news", "content": {}}"#,
            ],
            &[r#"timelines/t.json: inject "i-1": duplicate inject id (first at inject #0)"#],
        );
        // The same id in two timelines is fine.
        let (_dir, loaded) = load_ok(&[
            (
                "scenario.json",
                &scenario("45", &[("blue", "a"), ("red", "b")]),
            ),
            ("timelines/a.json", &timeline(&[BRIEFING])),
            ("timelines/b.json", &timeline(&[BRIEFING])),
        ]);
        assert_eq!(loaded.delivery_count(), 2);
    }

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
    fn reports_a_missing_timeline_once_per_file() {
        check(
            &[(
                "scenario.json",
                r#"{"duration_minutes": 45, "teams": [
                        {"id": "blue", "timeline_id": "gone"},
                        {"id": "orange", "timeline_id": "gone"},
                        {"id": "red", "timeline_file": "timelines/red.json"},
                        {"id": "green", "timeline_file": "timelines/red.json"}
                    ]}"#,
            )],
            &[
                r#"scenario.json: team "blue": timeline file not found: timelines/gone.json or storage/gone.json"#,
                r#"scenario.json: team "red": timeline file not found: timelines/red.json"#,
            ],
        );
    }

    #[test]
    fn reports_json_syntax_errors_with_line_and_column() {
        check(
            &[(
                "scenario.json",
                "{\n  \"duration_minutes\": 45,\n  \"teams\": [}\n",
            )],
            &["scenario.json: line 3, column 13: invalid JSON: expected value"],
        );
        check(
            &[
                ("scenario.json", &scenario("45", &[("blue", "t")])),
                (
                    "timelines/t.json",
                    "{\"injects\": [\n  {\"id\": \"i-1\",}\n]}",
                ),
            ],
            &["timelines/t.json: line 2, column 16: invalid JSON: trailing comma"],
        );
        check(
            &[("scenario.json", "")],
            &["scenario.json: line 1, column 0: invalid JSON: EOF while parsing a value"],
        );
        check(
            &[("scenario.json", "[]")],
            &["scenario.json: expected a JSON object at the top level, got an array"],
        );
    }

    #[test]
    fn reports_unreadable_files() {
        let (dir, result) = load_files(&[], &Limits::default());
        let errors = shown(&dir, &result.expect_err("no scenario file"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("scenario.json: cannot read file: "),
            "{errors:?}"
        );

        // A timeline path that is a folder exists but cannot be read.
        let (dir, result) = load_files(
            &[
                ("scenario.json", &scenario("45", &[("blue", "t.json")])),
                ("timelines/t.json.json/placeholder", ""),
            ],
            &Limits::default(),
        );
        let errors = shown(&dir, &result.expect_err("timeline is a folder"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("timelines/t.json.json: cannot read file: "),
            "{errors:?}"
        );
    }

    #[test]
    fn refuses_timeline_files_without_an_inject_list() {
        check(
            &[
                (
                    "scenario.json",
                    &scenario("45", &[("blue", "a"), ("red", "b"), ("green", "c")]),
                ),
                ("timelines/a.json", r#"{"id": "a"}"#),
                (
                    "timelines/b.json",
                    r#"{"id": 3, "name": ["x"], "injects": {}}"#,
                ),
                ("timelines/c.json", r#"{"id": "", "injects": []}"#),
            ],
            &[
                r#"timelines/a.json: missing field "injects""#,
                r#"timelines/b.json: "id" must be a string, got 3"#,
                r#"timelines/b.json: "name" must be a string, got an array"#,
                r#"timelines/b.json: "injects" must be an array, got an object"#,
                r#"timelines/c.json: "id" must not be empty"#,
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

    #[test]
    fn enforces_configured_limits() {
        let limits = Limits {
            max_duration_secs: 600,
            max_teams: 2,
            max_injects_per_timeline: 2,
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
                r#"scenario.json: "duration_minutes" 11 (660 s) is over the limit of 600 s"#,
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

    #[test]
    fn summarises_teams_timelines_and_first_and_last_injects() {
        let (_dir, loaded) = load_ok(&[
            (
                "scenario.json",
                &scenario(
                    "0.5",
                    &[("blue", "shared"), ("red", "solo"), ("orange", "shared")],
                ),
            ),
            (
                "timelines/shared.json",
                &timeline(&[
                    r#"{"id": "late", "time": 25, "type": "news", "content": {}}"#,
                    r#"{"id": "early", "time": 3, "type": "news", "content": {}}"#,
                    r#"{"id": "also-late", "time": 25, "type": "news", "content": {}}"#,
                ]),
            ),
            ("timelines/solo.json", &timeline(&[BRIEFING])),
        ]);
        assert_eq!(
            summary(&loaded),
            "\
Exercise:  (generated at start)
Name:      Test
Duration:  T+00:30 (0.5 min)
Teams:     3 (7 deliveries)

  blue    shared (shared with orange)  3 injects  first T+00:03 early  last T+00:25 also-late
  red     solo                          1 inject  first T+00:00 i-1    last T+00:00 i-1
  orange  shared (shared with blue)    3 injects  first T+00:03 early  last T+00:25 also-late
"
        );
    }

    #[test]
    fn loads_the_four_teams_example_with_the_original_schedule() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/four-teams/scenario.json");
        let loaded = match load(&path, &Limits::default(), None) {
            Ok(scenario) => scenario,
            Err(errors) => panic!(
                "{}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        };
        assert_eq!(
            loaded.exercise_id.as_ref().map(ExerciseId::as_str),
            Some("four-teams-demo")
        );
        assert_eq!(loaded.duration, ExerciseSeconds::new(12 * 60));
        let schedule: Vec<(&str, Vec<(u32, &str)>)> = loaded
            .teams
            .iter()
            .map(|team| {
                let mut injects: Vec<(u32, &str)> = team
                    .timeline
                    .injects
                    .iter()
                    .map(|inject| (inject.time.get(), inject.kind.as_str()))
                    .collect();
                injects.sort_unstable();
                (team.id.as_str(), injects)
            })
            .collect();
        assert_eq!(
            schedule,
            [
                (
                    "blue",
                    vec![
                        (0, "briefing"),
                        (60, "social"),
                        (120, "email"),
                        (300, "sms"),
                        (600, "video")
                    ]
                ),
                ("red", vec![(0, "briefing"), (60, "social"), (120, "email")]),
                (
                    "orange",
                    vec![
                        (0, "briefing"),
                        (120, "email"),
                        (300, "sms"),
                        (600, "video")
                    ]
                ),
                ("green", vec![(0, "briefing"), (120, "email"), (300, "sms")]),
            ]
        );
        assert_eq!(loaded.delivery_count(), 15);
    }
}
