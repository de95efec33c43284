//! Scenario and timeline files on disk: where the file a team's timeline
//! reference names is, what a package may reach, and reading a file that
//! must hold one JSON object within the limits.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::fields::{Report, top_level_object};
use super::model::{Scenario, Timeline, ValidationError};
use super::timeline::check_timeline;
use super::validation::{Resolved, TimelineRef, read_header};
use crate::config::Limits;
use crate::domain::ExerciseSeconds;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ExerciseId;
    use crate::scenario::fixtures::*;

    #[test]
    fn loads_both_team_styles_and_shares_timelines() {
        let (_dir, loaded) = load_ok(&[
            (
                "scenario.json",
                r#"{
                    "id": "maritime-crisis-01", "scenario_id": "mc-1", "name": "Maritime Crisis",
                    "description": "Fire at berth 7", "duration_minutes": 45,
                    "start_time": "09:42",
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
        assert_eq!(loaded.start_time, Some(9 * 3600 + 42 * 60));
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
    fn reports_a_start_time_that_is_no_time_of_day() {
        check(
            &[(
                "scenario.json",
                r#"{"duration_minutes": 45, "start_time": "9.42", "teams": [{"id": "blue", "timeline_id": "gone"}]}"#,
            )],
            &[
                r#"scenario.json: "start_time" must be a time of day as "HH:MM" or "HH:MM:SS" (24-hour), got "9.42""#,
                r#"scenario.json: team "blue": timeline file not found: timelines/gone.json or storage/gone.json"#,
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
                // The original schedule: what goes out whatever the teams do.
                let mut injects: Vec<(u32, &str)> = team
                    .timeline
                    .injects
                    .iter()
                    .filter(|inject| {
                        let play = inject.play();
                        play.response.is_none() && play.when.is_none()
                    })
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
        // Two-way play on top: a decision with a branch per choice and one
        // for silence, a statement, an acknowledgement, an escalation that
        // waits for the controllers, a social network and two objectives.
        assert_eq!(loaded.delivery_count(), 23);
        assert_eq!(loaded.channels.len(), 1);
        assert_eq!(loaded.objectives.len(), 2);
    }
}
