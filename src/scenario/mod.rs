//! Scenario and timeline files (SPEC section 1): loading, validation, and the
//! validated in-memory form the engine runs.
//!
//! [`load`] never stops at the first problem: it reads the scenario and every
//! timeline it names and reports every error it finds, each naming the file, the
//! place in it (team, inject, or line and column) and the reason.
//!
//! [`load_inline`] does the same for a scenario uploaded as one JSON value, with
//! its timelines inside it, and [`to_inline`] turns a scenario back into such a
//! value. Both loaders share every check; only where the timelines come from
//! differs.

pub mod media;
pub mod package;
mod plan;

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::fs;
use std::path::{Component, Path, PathBuf};
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
    /// Set for a turn-based scenario (`turn_based: true`).
    pub turns: Option<Turns>,
    /// The package (folder under MEDIA_STORAGE_PATH) it came from, where its
    /// media is looked for first.
    pub package: Option<String>,
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
    load_from(path, limits, timeline_storage, Reach::Anywhere)
}

/// Like [`load`], for a scenario package (an upload, or a folder under
/// MEDIA_STORAGE_PATH): every `timeline_file` must lie inside the scenario's
/// folder, links followed. A path that leaves it (absolute, with `..`, or
/// through a link) is refused with one message whatever is there, and
/// nothing outside the package is read, so an upload learns nothing of the
/// server's files. `timeline_id`s also resolve in `timeline_storage`, the
/// operator's own folder.
pub fn load_package(
    path: &Path,
    limits: &Limits,
    timeline_storage: Option<&Path>,
) -> Result<Scenario, Vec<ValidationError>> {
    load_from(path, limits, timeline_storage, Reach::Package)
}

/// Where a scenario's timeline files may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// A file of the operator's: anywhere its paths lead.
    Anywhere,
    /// A package: inside the scenario's folder.
    Package,
}

fn load_from(
    path: &Path,
    limits: &Limits,
    timeline_storage: Option<&Path>,
    reach: Reach,
) -> Result<Scenario, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let Some(root) = read_json_object(path, limits.max_file_bytes, &mut errors) else {
        return Err(errors);
    };
    let folder = path.parent().unwrap_or(Path::new(""));
    let mut sources = Sources::default();
    let header = read_header(
        &root,
        limits,
        &mut Report {
            file: path,
            errors: &mut errors,
        },
        |reference| match timeline_path(reference, folder, timeline_storage, reach) {
            Ok(found) => Resolved::Found(sources.add(found)),
            Err(why) => Resolved::NotFound(why),
        },
    );
    let timelines: Vec<Option<Arc<Timeline>>> = sources
        .paths
        .iter()
        .map(|source| load_timeline(source, header.end(), limits, &mut errors).map(Arc::new))
        .collect();
    header.finish(path, &timelines, errors, limits)
}

/// The file name errors in an inline upload give for its scenario part; its
/// timelines are `<upload>/timelines/<id>` (or `<upload>/timelines/<key>` when
/// `"timelines"` is an object, `<upload>/timelines/#<index>` for an array entry
/// without a usable id).
pub const UPLOAD: &str = "<upload>";

/// Loads and validates a scenario uploaded as one JSON value, reporting every
/// problem at once, with the same checks and messages as [`load`].
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
/// Errors come out as [`load`]'s do: the scenario part first, then problems with
/// the `"timelines"` entries in upload order, then each timeline the teams name in
/// the order first named.
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
    if let Some(turns) = &scenario.turns {
        let starts: Vec<String> = turns
            .starts
            .iter()
            .map(|&s| ExerciseSeconds::new(s).to_string())
            .collect();
        let _ = writeln!(
            out,
            "Turns:     {} (turn-based; each starts on next_turn, at {})",
            turns.total(),
            starts.join(", ")
        );
    }
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

/// The scenario object, checked, before its timelines are loaded.
struct Header {
    exercise_id: Option<ExerciseId>,
    scenario_id: Option<String>,
    name: Option<String>,
    description: Option<String>,
    /// None when invalid (the error is recorded); injects are still checked.
    duration: Option<ExerciseSeconds>,
    /// No duration given: one follows from the injects.
    duration_missing: bool,
    turn_based: bool,
    total_turns: Option<u16>,
    package: Option<String>,
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
enum Resolved {
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
enum TimelineRef<'a> {
    /// `timeline_id`: topic-safe, no `..`, `/` or `\`.
    Id(&'a str),
    /// `timeline_file`: not empty.
    File(&'a str),
}

/// Checks the scenario object and its team list; `resolve` finds the timeline each
/// valid team reference names.
fn read_header(
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
        duration,
        duration_missing,
        turn_based,
        total_turns,
        package,
        specs,
    }
}

impl Header {
    /// The last second an inject's `time` may name: the duration, except in a
    /// turn-based scenario (times count from each turn's start, checked once
    /// every timeline is loaded) or when the duration follows from the injects.
    fn end(&self) -> Option<ExerciseSeconds> {
        if self.turn_based { None } else { self.duration }
    }

    /// The scenario, when no error was found; `timelines` by the loader's index.
    fn finish(
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
                        "no duration given, and the injects run to {} s: over the limit of {} s",
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
            duration,
            teams,
            turns,
            package: self.package,
        })
    }
}

/// Each inject's turn checked, and where each turn starts and ends: a turn
/// lasts as long as its latest inject, over every timeline.
fn turns(
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

/// The distinct timeline files named by the teams, in the order first named.
#[derive(Default)]
struct Sources {
    paths: Vec<PathBuf>,
    /// Canonical path to index in `paths`, so two spellings of one file load once.
    by_key: HashMap<PathBuf, usize>,
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

/// The timeline file a team names, or why there is none (the paths tried
/// when it does not exist).
fn timeline_path(
    reference: TimelineRef<'_>,
    folder: &Path,
    timeline_storage: Option<&Path>,
    reach: Reach,
) -> Result<PathBuf, String> {
    match (reference, reach) {
        (TimelineRef::File(file), Reach::Anywhere) => {
            let path = folder.join(file);
            if path.exists() {
                Ok(path)
            } else {
                Err(format!("timeline file not found: {}", path.display()))
            }
        }
        (TimelineRef::File(file), Reach::Package) => {
            let relative = Path::new(file);
            let lexically_inside = relative
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !lexically_inside {
                return Err(outside_the_package(file));
            }
            let path = folder.join(relative);
            match within(folder, &path) {
                Some(true) => Ok(path),
                Some(false) => Err(outside_the_package(file)),
                None => Err(format!("timeline file not found: {file}")),
            }
        }
        (TimelineRef::Id(id), reach) => {
            let file = format!("{id}.json");
            let own = folder.join("timelines").join(&file);
            match (reach, within(folder, &own)) {
                (_, Some(true)) => return Ok(own),
                (Reach::Package, Some(false)) => {
                    return Err(outside_the_package(&format!("timelines/{file}")));
                }
                (Reach::Anywhere, Some(false)) => return Ok(own),
                (_, None) => {}
            }
            let stored = timeline_storage.map(|storage| storage.join(&file));
            if let Some(stored) = stored.filter(|path| path.exists()) {
                return Ok(stored);
            }
            let tried = match (reach, timeline_storage) {
                (Reach::Anywhere, Some(storage)) => {
                    format!("{} or {}", own.display(), storage.join(&file).display())
                }
                (Reach::Anywhere, None) => own.display().to_string(),
                (Reach::Package, Some(_)) => {
                    format!("timelines/{file} or TIMELINE_STORAGE_PATH/{file}")
                }
                (Reach::Package, None) => format!("timelines/{file}"),
            };
            Err(format!("timeline file not found: {tried}"))
        }
    }
}

/// Whether `path`, once links are followed, lies inside `folder`; None when
/// there is nothing at `path`.
fn within(folder: &Path, path: &Path) -> Option<bool> {
    let target = fs::canonicalize(path).ok()?;
    let folder = fs::canonicalize(folder).ok()?;
    Some(target.starts_with(folder))
}

fn outside_the_package(file: &str) -> String {
    format!(
        "timeline file {file:?} is outside the package: a package's paths stay inside its folder"
    )
}

/// The `"timelines"` of an inline upload, indexed for the teams' references.
#[derive(Default)]
struct Catalog<'v> {
    entries: Vec<Entry<'v>>,
    /// An object (keys and ids) rather than an array (ids only).
    keyed: bool,
    /// Normalised key to entry (an object's entries).
    by_key: HashMap<PathBuf, usize>,
    /// Id to entries: exactly one each for an array, any number for an object.
    by_id: HashMap<String, Vec<usize>>,
}

/// One timeline of an inline upload.
struct Entry<'v> {
    /// The pseudo-file its errors name.
    file: PathBuf,
    /// Its `id` if that is a non-empty string, else (an object's entry) the file
    /// stem of its key.
    id: String,
    /// None when it is not an object (reported).
    fields: Option<&'v Map<String, Value>>,
    /// Its key in an object.
    key: Option<&'v str>,
}

impl<'v> Catalog<'v> {
    /// Indexes `"timelines"`; problems with its entries go to `errors`, a missing
    /// or wrongly typed `"timelines"` is the `Err`.
    fn new(
        timelines: Option<&'v Value>,
        errors: &mut Vec<ValidationError>,
    ) -> Result<Self, String> {
        let mut catalog = Self::default();
        let not_object =
            |value: &Value| format!("timeline must be an object, got {}", describe(value));
        match timelines {
            None => return Err("missing field \"timelines\"".to_owned()),
            Some(Value::Array(items)) => {
                let mut first_index: HashMap<&str, usize> = HashMap::new();
                for (index, item) in items.iter().enumerate() {
                    let by_index = PathBuf::from(format!("{UPLOAD}/timelines/#{index}"));
                    let mut report = Report {
                        file: &by_index,
                        errors,
                    };
                    let Value::Object(fields) = item else {
                        report.error(None, not_object(item));
                        continue;
                    };
                    let id = required(fields, "id").and_then(|id| as_str(id, "id"));
                    let Some(id) = report.check(None, id) else {
                        continue;
                    };
                    if id.is_empty() {
                        report.error(None, "\"id\" must not be empty");
                    } else if let Some(first) = first_index.get(id) {
                        report.error(
                            None,
                            format!("duplicate timeline id {id:?} (first at timeline #{first})"),
                        );
                    } else {
                        first_index.insert(id, index);
                        catalog.push(Entry {
                            file: PathBuf::from(format!("{UPLOAD}/timelines/{id}")),
                            id: id.to_owned(),
                            fields: Some(fields),
                            key: None,
                        });
                    }
                }
            }
            Some(Value::Object(items)) => {
                catalog.keyed = true;
                for (key, item) in items {
                    let file = PathBuf::from(format!("{UPLOAD}/timelines/{key}"));
                    let mut report = Report {
                        file: &file,
                        errors,
                    };
                    let normalised = normalise(key);
                    if normalised.as_os_str().is_empty() || key_stem(key).is_empty() {
                        report.error(None, format!("key {key:?} names no timeline"));
                        continue;
                    }
                    if let Some(&first) = catalog.by_key.get(&normalised) {
                        let first = catalog.entries[first].key.unwrap_or_default();
                        report.error(
                            None,
                            format!("key {key:?} names the same file as {first:?}"),
                        );
                        continue;
                    }
                    let fields = match item {
                        Value::Object(fields) => Some(fields),
                        other => {
                            report.error(None, not_object(other));
                            None
                        }
                    };
                    let id = fields
                        .and_then(|fields| fields.get("id"))
                        .and_then(Value::as_str)
                        .filter(|id| !id.is_empty())
                        .map_or_else(|| key_stem(key).to_owned(), str::to_owned);
                    catalog.by_key.insert(normalised, catalog.entries.len());
                    catalog.push(Entry {
                        file,
                        id,
                        fields,
                        key: Some(key),
                    });
                }
            }
            Some(other) => {
                return Err(format!(
                    "\"timelines\" must be an array or an object, got {}",
                    describe(other)
                ));
            }
        }
        Ok(catalog)
    }

    fn push(&mut self, entry: Entry<'v>) {
        let index = self.entries.len();
        self.by_id.entry(entry.id.clone()).or_default().push(index);
        self.entries.push(entry);
    }

    /// The entry a team's reference names, or why there is none.
    fn resolve(&self, reference: TimelineRef<'_>) -> Result<usize, String> {
        let by_id = |id: &str| self.by_id.get(id).map_or(&[][..], Vec::as_slice);
        match (self.keyed, reference) {
            (false, TimelineRef::Id(id)) => by_id(id)
                .first()
                .copied()
                .ok_or_else(|| format!("timeline not found: no timeline has the id {id:?}")),
            (false, TimelineRef::File(file)) => {
                let stem = key_stem(file);
                by_id(stem).first().copied().ok_or_else(|| {
                    format!(
                        "timeline not found: no timeline has the id {stem:?} (the file stem of {file:?})"
                    )
                })
            }
            (true, TimelineRef::File(file)) => self
                .by_key
                .get(&normalise(file))
                .copied()
                .ok_or_else(|| format!("timeline not found: \"timelines\" has no key {file:?}")),
            (true, TimelineRef::Id(id)) => {
                if let Some(&entry) = self.by_key.get(&normalise(id)) {
                    return Ok(entry);
                }
                match by_id(id) {
                    [] => Err(format!(
                        "timeline not found: \"timelines\" has no key or timeline id {id:?}"
                    )),
                    [entry] => Ok(*entry),
                    several => {
                        let keys: Vec<String> = several
                            .iter()
                            .map(|&entry| {
                                format!("{:?}", self.entries[entry].key.unwrap_or_default())
                            })
                            .collect();
                        Err(format!(
                            "timeline {id:?} is ambiguous: the timelines {} all have that id",
                            keys.join(", ")
                        ))
                    }
                }
            }
        }
    }
}

/// A path without its `.` steps, so `./timelines/a.json` is `timelines/a.json`.
fn normalise(path: &str) -> PathBuf {
    Path::new(path)
        .components()
        .filter(|component| !matches!(component, Component::CurDir))
        .collect()
}

/// The file stem of a key or `timeline_file` path: the last `/` step without
/// `.json`.
fn key_stem(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.strip_suffix(".json").unwrap_or(name)
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
    let root = read_json_object(path, limits.max_file_bytes, errors)?;
    let stem = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned());
    check_timeline(&root, path, stem, end, limits, errors)
}

/// Checks one timeline object; its errors name `file`, which becomes its path. A
/// timeline without an `id` takes `default_id`.
fn check_timeline(
    root: &Map<String, Value>,
    file: &Path,
    default_id: Option<String>,
    end: Option<ExerciseSeconds>,
    limits: &Limits,
    errors: &mut Vec<ValidationError>,
) -> Option<Timeline> {
    let mut report = Report { file, errors };
    let errors_before = report.errors.len();
    let id = report.check(None, optional_string(root, "id")).flatten();
    let id = match id {
        Some(id) if id.is_empty() => {
            report.error(None, "\"id\" must not be empty");
            None
        }
        Some(id) => Some(id),
        None => default_id,
    };
    let name = report.check(None, optional_string(root, "name")).flatten();
    let raw_injects = report.check(
        None,
        required(root, "injects").and_then(|v| as_array(v, "injects")),
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
        .filter_map(|(index, raw)| {
            inject(
                index,
                raw,
                end,
                limits.max_inject_bytes,
                &mut first_index,
                &mut report,
            )
        })
        .collect();
    if report.errors.len() > errors_before {
        return None;
    }
    Some(Timeline {
        id: id?,
        name,
        path: file.to_owned(),
        injects,
    })
}

fn inject(
    index: usize,
    raw: &Value,
    end: Option<ExerciseSeconds>,
    max_bytes: usize,
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
    let size = serde_json::to_vec(raw).map_or(0, |bytes| bytes.len());
    if size > max_bytes {
        report.error(
            location,
            format!(
                "the inject is {size} bytes of JSON, over the limit of {max_bytes} (MAX_INJECT_BYTES)"
            ),
        );
        return None;
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

/// Reads a file that must hold a JSON object, of at most `max_bytes`;
/// every failure is recorded.
fn read_json_object(
    path: &Path,
    max_bytes: u64,
    errors: &mut Vec<ValidationError>,
) -> Option<Map<String, Value>> {
    use std::io::Read as _;
    let mut report = Report { file: path, errors };
    // Read through `take`, so a file that grows (or never ends, as a device
    // would) stops at the limit too.
    let mut bytes = Vec::new();
    let read = fs::File::open(path).and_then(|file| {
        file.take(max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
    });
    if let Err(err) = read {
        report.error(None, format!("cannot read file: {err}"));
        return None;
    }
    if bytes.len() as u64 > max_bytes {
        report.error(
            None,
            format!("the file is over the limit of {max_bytes} bytes (MAX_SCENARIO_FILE_BYTES)"),
        );
        return None;
    }
    if !within_value_limit(&bytes) {
        report.error(
            None,
            format!(
                "the file holds more than {MAX_JSON_VALUES} JSON values (numbers, strings, keys, arrays, objects): no scenario needs so many"
            ),
        );
        return None;
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Some(map),
        Ok(other) => {
            top_level_object(&other, &mut report);
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

/// Most JSON values (each number, string, key, array and object counts) a
/// scenario or timeline file may hold. A parsed value takes tens of bytes
/// whatever its text took, so a file of nothing but `0,` would take sixteen
/// times its size in memory; counting first, without building anything,
/// keeps what a file can cost bounded. A thousand injects of fifty values
/// each are 50,000.
pub const MAX_JSON_VALUES: u64 = 1_000_000;

/// Whether `bytes` holds at most [`MAX_JSON_VALUES`] JSON values; true too
/// when it is not JSON at all (the parse that follows says where).
fn within_value_limit(bytes: &[u8]) -> bool {
    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};
    use std::cell::Cell;

    const TOO_MANY: &str = "too many JSON values";

    #[derive(Clone, Copy)]
    struct Count<'a>(&'a Cell<u64>);

    impl Count<'_> {
        fn tick<E: Error>(self) -> Result<(), E> {
            let n = self.0.get() + 1;
            self.0.set(n);
            if n > MAX_JSON_VALUES {
                return Err(E::custom(TOO_MANY));
            }
            Ok(())
        }
    }

    impl<'de> DeserializeSeed<'de> for Count<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Count<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: Error>(self, _: bool) -> Result<(), E> {
            self.tick()
        }
        fn visit_i64<E: Error>(self, _: i64) -> Result<(), E> {
            self.tick()
        }
        fn visit_u64<E: Error>(self, _: u64) -> Result<(), E> {
            self.tick()
        }
        fn visit_f64<E: Error>(self, _: f64) -> Result<(), E> {
            self.tick()
        }
        fn visit_str<E: Error>(self, _: &str) -> Result<(), E> {
            self.tick()
        }
        fn visit_unit<E: Error>(self) -> Result<(), E> {
            self.tick()
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            self.tick()?;
            while seq.next_element_seed(self)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            self.tick()?;
            while map.next_key_seed(self)?.is_some() {
                map.next_value_seed(self)?;
            }
            Ok(())
        }
    }

    let seen = Cell::new(0);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match Count(&seen).deserialize(&mut deserializer) {
        Ok(()) => true,
        Err(e) => !e.to_string().starts_with(TOO_MANY),
    }
}

/// The object a file or upload must hold at the top level.
fn top_level_object<'v>(
    value: &'v Value,
    report: &mut Report<'_>,
) -> Option<&'v Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        other => {
            report.error(
                None,
                format!(
                    "expected a JSON object at the top level, got {}",
                    describe(other)
                ),
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
    let by_time = |(index, inject): (usize, &Inject)| (scenario.due(inject), index);
    let first = injects.iter().enumerate().min_by_key(|&pair| by_time(pair));
    let last = injects.iter().enumerate().max_by_key(|&pair| by_time(pair));
    let show = |label: &str, inject: Option<(usize, &Inject)>| {
        inject.map_or_else(String::new, |(_, inject)| {
            format!("{label} {} {}", scenario.due(inject), inject.id)
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

    // Inline uploads.

    fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name)
            .join("scenario.json")
    }

    fn expect_valid(result: Result<Scenario, Vec<ValidationError>>) -> Scenario {
        result.unwrap_or_else(|errors| {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("expected a valid scenario, got\n{}", errors.join("\n"))
        })
    }

    /// The errors `load_inline` reports for `package`, as `validate` prints them.
    fn inline_errors(package: &Value, limits: &Limits) -> Vec<String> {
        match load_inline(package, limits) {
            Ok(_) => panic!("expected errors, but {package} loaded"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    /// For each team, the index of the first team on the same timeline.
    fn sharing(scenario: &Scenario) -> Vec<usize> {
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
    fn assert_same(actual: &Scenario, expected: &Scenario) {
        assert_eq!(actual.exercise_id, expected.exercise_id);
        assert_eq!(actual.scenario_id, expected.scenario_id);
        assert_eq!(actual.name, expected.name);
        assert_eq!(actual.description, expected.description);
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

    /// One package's parts: blue and orange share "std", red names "red" by file.
    const STD: &str = r#"{"name": "Standard", "injects": [
        {"id": "s-2", "time": 90, "type": "email", "priority": "low", "content": {"subject": "S"}},
        {"id": "s-1", "time": 0, "type": "news", "media": ["/m.jpg"], "content": {"headline": "H"}}
    ]}"#;
    const RED: &str = r#"{"injects": [
        {"id": "r-1", "time": 30, "type": "sms", "content": {"text": "T"}}
    ]}"#;
    const TEAMS: &str = r#"{"id": "ex-9", "name": "N", "duration_minutes": 2, "teams": [
        {"id": "blue", "name": "Blue", "timeline_id": "std"},
        {"id": "orange", "timeline_id": "std"},
        {"id": "red", "timeline_file": "timelines/red.json"}
    ]}"#;

    /// `TEAMS` with `"timelines"` set to `timelines` (`{std}` and `{red}` standing
    /// for the timeline objects, given `"id"` fields when `with_ids`).
    fn package(timelines: &str, with_ids: bool) -> Value {
        let with_id = |id: &str, timeline: &str| -> String {
            if with_ids {
                timeline.replacen('{', &format!(r#"{{"id": "{id}", "#), 1)
            } else {
                timeline.to_owned()
            }
        };
        let timelines = timelines
            .replace("{std}", &with_id("std", STD))
            .replace("{red}", &with_id("red", RED));
        let mut package: Value = serde_json::from_str(TEAMS).expect("teams");
        package["timelines"] = serde_json::from_str(&timelines).expect("timelines");
        package
    }

    #[test]
    fn inline_timelines_may_be_an_array_or_an_object() {
        // The same scenario as files, for comparison.
        let (_dir, from_files) = load_ok(&[
            ("scenario.json", TEAMS),
            ("timelines/std.json", STD),
            ("timelines/red.json", RED),
        ]);
        assert_eq!(sharing(&from_files), [0, 0, 2]);
        assert_eq!(from_files.teams[0].timeline.id, "std");
        assert_eq!(from_files.teams[2].timeline.id, "red");

        for (timelines, with_ids) in [
            // An array: by id, and by the file stem for `timeline_file`; unused
            // timelines are not checked.
            (r#"[{std}, {red}, {"id": "unused", "injects": "no"}]"#, true),
            (r#"[{"id": "unused", "injects": []}, {red}, {std}]"#, true),
            // An object keyed by timeline id and by file path.
            (r#"{"std": {std}, "timelines/red.json": {red}}"#, true),
            // Without ids, the keys' file stems name them; `./` steps aside.
            (
                r#"{"timelines/std.json": {std}, "./timelines/red.json": {red}}"#,
                false,
            ),
            (
                r#"{"std": {std}, "timelines/red.json": {red}, "odd": {"injects": 7}}"#,
                false,
            ),
            // An object's key wins over another timeline's id.
            (
                r#"{"std": {std}, "other": {"id": "std", "injects": 7}, "timelines/red.json": {red}}"#,
                false,
            ),
        ] {
            let inline = expect_valid(load_inline(
                &package(timelines, with_ids),
                &Limits::default(),
            ));
            assert_same(&inline, &from_files);
        }

        // Timeline paths are the pseudo-files errors name.
        let inline = expect_valid(load_inline(
            &package(r#"{"std": {std}, "./timelines/red.json": {red}}"#, false),
            &Limits::default(),
        ));
        let paths: Vec<&Path> = inline
            .teams
            .iter()
            .map(|t| t.timeline.path.as_path())
            .collect();
        assert_eq!(
            paths,
            [
                Path::new("<upload>/timelines/std"),
                Path::new("<upload>/timelines/std"),
                Path::new("<upload>/timelines/./timelines/red.json"),
            ]
        );
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
    fn a_file_over_the_size_limit_is_not_read() {
        let long = format!(
            r#"{{"id": "i-2", "time": 1, "type": "news", "content": {{"body": "{}"}}}}"#,
            "x".repeat(2000)
        );
        let timeline_text = timeline(&[BRIEFING, &long]);
        let limits = Limits {
            max_file_bytes: timeline_text.len() as u64 - 1,
            ..Limits::default()
        };
        let scenario_text = scenario("45", &[("blue", "t")]);
        assert!((scenario_text.len() as u64) <= limits.max_file_bytes);
        check_with(
            &limits,
            &[
                ("scenario.json", &scenario_text),
                ("timelines/t.json", &timeline_text),
            ],
            &[&format!(
                "timelines/t.json: the file is over the limit of {} bytes (MAX_SCENARIO_FILE_BYTES)",
                limits.max_file_bytes
            )],
        );
        // At the limit it loads.
        let limits = Limits {
            max_file_bytes: timeline_text.len() as u64,
            ..limits
        };
        let (_dir, loaded) = load_files(
            &[
                ("scenario.json", &scenario_text),
                ("timelines/t.json", &timeline_text),
            ],
            &limits,
        );
        assert!(loaded.is_ok(), "{loaded:?}");
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
                r#"<upload>: "duration_minutes" 11 (660 s) is over the limit of 600 s"#,
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
        scenario.teams[0].name = Some("Blue".to_owned());
        assert_eq!(
            to_inline(&scenario),
            serde_json::json!({
                "id": "ex-1",
                "name": "Name",
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
