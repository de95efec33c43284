//! The `"timelines"` of an inline upload, an array or an object, indexed so
//! each team's `timeline_id` or `timeline_file` finds its entry.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use super::fields::{Report, as_str, describe, required};
use super::inline::UPLOAD;
use super::model::ValidationError;
use super::validation::TimelineRef;

/// The `"timelines"` of an inline upload, indexed for the teams' references.
#[derive(Default)]
pub(super) struct Catalog<'v> {
    pub(super) entries: Vec<Entry<'v>>,
    /// An object (keys and ids) rather than an array (ids only).
    keyed: bool,
    /// Normalised key to entry (an object's entries).
    by_key: HashMap<PathBuf, usize>,
    /// Id to entries: exactly one each for an array, any number for an object.
    by_id: HashMap<String, Vec<usize>>,
}

/// One timeline of an inline upload.
pub(super) struct Entry<'v> {
    /// The pseudo-file its errors name.
    pub(super) file: PathBuf,
    /// Its `id` if that is a non-empty string, else (an object's entry) the file
    /// stem of its key.
    pub(super) id: String,
    /// None when it is not an object (reported).
    pub(super) fields: Option<&'v Map<String, Value>>,
    /// Its key in an object.
    key: Option<&'v str>,
}

impl<'v> Catalog<'v> {
    /// Indexes `"timelines"`; problems with its entries go to `errors`, a missing
    /// or wrongly typed `"timelines"` is the `Err`.
    pub(super) fn new(
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
    pub(super) fn resolve(&self, reference: TimelineRef<'_>) -> Result<usize, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::scenario::fixtures::*;
    use crate::scenario::load_inline;

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
}
