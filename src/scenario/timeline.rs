//! A timeline object checked: its id and name, and each inject's id, time,
//! type and content, every other field passed through.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::fields::{Report, as_array, as_str, describe, optional_string, required, required_id};
use super::model::{Inject, Timeline, ValidationError};
use super::play::check_inject_play;
use crate::config::Limits;
use crate::domain::{ExerciseSeconds, InjectId};

/// Inject fields that are not passed through in `extra`.
const INJECT_FIELDS: [&str; 4] = ["id", "time", "type", "content"];

/// Checks one timeline object; its errors name `file`, which becomes its path. A
/// timeline without an `id` takes `default_id`.
pub(super) fn check_timeline(
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
    let extra: Map<String, Value> = fields
        .iter()
        .filter(|(key, _)| !INJECT_FIELDS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if let Err(reasons) = check_inject_play(&extra) {
        for reason in reasons {
            report.error(location, reason);
        }
        return None;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::fixtures::*;

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
}
