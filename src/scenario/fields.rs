//! Reading JSON fields with every problem recorded: the [`Report`] that
//! collects one file's errors, and the messages for a missing or wrongly
//! typed field.

use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

use super::model::ValidationError;

/// Collects the errors of one file.
pub(super) struct Report<'a> {
    pub(super) file: &'a Path,
    pub(super) errors: &'a mut Vec<ValidationError>,
}

impl Report<'_> {
    pub(super) fn error(&mut self, location: Option<&str>, reason: impl Into<String>) {
        self.errors.push(ValidationError {
            file: self.file.to_owned(),
            location: location.map(str::to_owned),
            reason: reason.into(),
        });
    }

    /// The value, or None with the error recorded.
    pub(super) fn check<T>(
        &mut self,
        location: Option<&str>,
        result: Result<T, String>,
    ) -> Option<T> {
        result.map_err(|reason| self.error(location, reason)).ok()
    }
}

/// The object a file or upload must hold at the top level.
pub(super) fn top_level_object<'v>(
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

pub(super) fn required<'m>(fields: &'m Map<String, Value>, key: &str) -> Result<&'m Value, String> {
    fields
        .get(key)
        .ok_or_else(|| format!("missing field \"{key}\""))
}

/// An optional string field; `null` counts as absent.
pub(super) fn optional_string(
    fields: &Map<String, Value>,
    key: &str,
) -> Result<Option<String>, String> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => as_str(value, key).map(|s| Some(s.to_owned())),
    }
}

/// The required `id` field, parsed into its id type.
pub(super) fn required_id<T, E: fmt::Display>(
    fields: &Map<String, Value>,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, String> {
    let raw = as_str(required(fields, "id")?, "id")?;
    parse(raw).map_err(|e| format!("invalid \"id\": {e}"))
}

pub(super) fn as_str<'v>(value: &'v Value, key: &str) -> Result<&'v str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("\"{key}\" must be a string, got {}", describe(value)))
}

pub(super) fn as_array<'v>(value: &'v Value, key: &str) -> Result<&'v Vec<Value>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("\"{key}\" must be an array, got {}", describe(value)))
}

/// `start_time`: the wall-clock time of day at T+0, "HH:MM" or "HH:MM:SS"
/// (24-hour, two digits each), as seconds after midnight.
pub(super) fn parse_start_time(text: &str) -> Result<u32, String> {
    let err = || {
        format!(
            "\"start_time\" must be a time of day as \"HH:MM\" or \"HH:MM:SS\" (24-hour), got {}",
            describe(&Value::from(text))
        )
    };
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(err());
    }
    let numbers: Vec<u32> = parts.iter().map(|p| p.parse().unwrap_or(99)).collect();
    let (h, m, s) = (numbers[0], numbers[1], numbers.get(2).copied().unwrap_or(0));
    if h > 23 || m > 59 || s > 59 {
        return Err(err());
    }
    Ok(h * 3600 + m * 60 + s)
}

/// Seconds after midnight as `start_time` writes them: "HH:MM", or
/// "HH:MM:SS" when the seconds are not zero.
pub fn format_start_time(secs: u32) -> String {
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if s == 0 {
        format!("{h:02}:{m:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// A wrong value as an error message shows it: scalars as JSON, containers by kind.
pub(super) fn describe(value: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_start_time_of_day() {
        assert_eq!(parse_start_time("09:42"), Ok(9 * 3600 + 42 * 60));
        assert_eq!(parse_start_time("23:59:59"), Ok(86_399));
        assert_eq!(parse_start_time("00:00"), Ok(0));
        for bad in [
            "9:42",
            "24:00",
            "12:60",
            "12:00:60",
            "12",
            "12:00:00:00",
            "ab:cd",
            "",
            "+1:00",
            "09:42 ",
        ] {
            let err = parse_start_time(bad).unwrap_err();
            assert!(
                err.contains("\"start_time\"") && err.contains("HH:MM"),
                "{bad}: {err}"
            );
        }
        assert_eq!(format_start_time(9 * 3600 + 42 * 60), "09:42");
        assert_eq!(format_start_time(86_399), "23:59:59");
    }
}
