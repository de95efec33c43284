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
