//! Writing a scenario as an MSEL workbook: the `MSEL` sheet with one row
//! per inject (teams sharing a timeline on one row), and the `Teams` and
//! `Scenario` sheets an import reads back.

use rust_xlsxwriter::{Format, Workbook, Worksheet, XlsxError};
use serde_json::{Map, Value};

use super::mapping::Field;
use super::{MSEL_SHEET, SCENARIO_SHEET, TEAMS_SHEET};
use crate::scenario::{Scenario, to_inline};

/// Why a workbook could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the workbook: {0}")]
pub struct ExportError(#[from] XlsxError);

/// `scenario` as an `.xlsx` workbook that [`import`](super::import) reads
/// back into the same scenario. Each inject's `title` and `body` (when
/// text) fill Title and Content, its `priority`, `media` and `action` their
/// columns, and every other field a JSON object in Details (content fields
/// under `"content"`). Times are written as `T+mm:ss`.
pub fn export(scenario: &Scenario) -> Result<Vec<u8>, ExportError> {
    let package = to_inline(scenario);
    let empty = Vec::new();
    let teams = package["teams"].as_array().unwrap_or(&empty);
    let timelines = package["timelines"].as_array().unwrap_or(&empty);
    let bold = Format::new().set_bold();
    let mut workbook = Workbook::new();

    let sheet = workbook.add_worksheet();
    sheet.set_name(MSEL_SHEET)?;
    for (column, field) in Field::ALL.into_iter().enumerate() {
        sheet.write_string_with_format(0, column as u16, field.header(), &bold)?;
    }
    sheet.set_freeze_panes(1, 0)?;
    for (column, width) in [10, 10, 18, 10, 40, 60, 10, 30, 30, 40]
        .into_iter()
        .enumerate()
    {
        sheet.set_column_width(column as u16, width)?;
    }
    let mut row: u32 = 1;
    for timeline in timelines {
        let id = timeline["id"].as_str().unwrap_or_default();
        let names: Vec<&str> = teams
            .iter()
            .filter(|t| t["timeline_id"].as_str() == Some(id))
            .filter_map(|t| t["id"].as_str())
            .collect();
        if names.is_empty() {
            continue;
        }
        for inject in timeline["injects"].as_array().unwrap_or(&empty) {
            if let Value::Object(inject) = inject {
                write_inject(sheet, row, inject, &names.join(", "))?;
                row += 1;
            }
        }
    }

    let sheet = workbook.add_worksheet();
    sheet.set_name(TEAMS_SHEET)?;
    for (column, header) in ["Team", "Name", "Timeline", "Timeline name"]
        .into_iter()
        .enumerate()
    {
        sheet.write_string_with_format(0, column as u16, header, &bold)?;
        sheet.set_column_width(column as u16, if column % 2 == 1 { 40 } else { 18 })?;
    }
    for (index, team) in teams.iter().enumerate() {
        let row = index as u32 + 1;
        let timeline_id = team["timeline_id"].as_str().unwrap_or_default();
        let timeline_name = timelines
            .iter()
            .find(|t| t["id"].as_str() == Some(timeline_id))
            .and_then(|t| t["name"].as_str());
        let cells = [
            team["id"].as_str(),
            team["name"].as_str(),
            Some(timeline_id),
            timeline_name,
        ];
        for (column, text) in cells.into_iter().enumerate() {
            if let Some(text) = text {
                sheet.write_string(row, column as u16, text)?;
            }
        }
    }

    let sheet = workbook.add_worksheet();
    sheet.set_name(SCENARIO_SHEET)?;
    sheet.write_string_with_format(0, 0, "Field", &bold)?;
    sheet.write_string_with_format(0, 1, "Value", &bold)?;
    sheet.set_column_width(0, 18)?;
    sheet.set_column_width(1, 60)?;
    let mut row = 1;
    if let Value::Object(root) = &package {
        for (key, value) in root {
            if key == "teams" || key == "timelines" {
                continue;
            }
            sheet.write_string(row, 0, key)?;
            match value {
                Value::Bool(b) => sheet.write_boolean(row, 1, *b)?,
                Value::Number(n) => sheet.write_number(row, 1, n.as_f64().unwrap_or_default())?,
                Value::String(s) => sheet.write_string(row, 1, s)?,
                other => sheet.write_string(row, 1, other.to_string())?,
            };
            row += 1;
        }
    }
    Ok(workbook.save_to_buffer()?)
}

/// Seconds as `T+mm:ss` (minutes may pass 59).
pub fn time_text(seconds: u64) -> String {
    format!("T+{:02}:{:02}", seconds / 60, seconds % 60)
}

fn write_inject(
    sheet: &mut Worksheet,
    row: u32,
    inject: &Map<String, Value>,
    teams: &str,
) -> Result<(), XlsxError> {
    let mut rest = inject.clone();
    let mut content = match rest.remove("content") {
        Some(Value::Object(content)) => content,
        _ => Map::new(),
    };
    let mut cells: Vec<(Field, String)> = vec![(Field::Team, teams.to_owned())];
    if let Some(Value::String(id)) = rest.remove("id") {
        cells.push((Field::Id, id));
    }
    if let Some(time) = rest.remove("time").and_then(|t| t.as_u64()) {
        cells.push((Field::Time, time_text(time)));
    }
    if let Some(Value::String(kind)) = rest.remove("type") {
        cells.push((Field::Type, kind));
    }
    for (field, key) in [(Field::Title, "title"), (Field::Content, "body")] {
        if let Some(text) = plain_text(content.get(key)) {
            cells.push((field, text));
            content.remove(key);
        }
    }
    for (field, key) in [(Field::Priority, "priority"), (Field::Action, "action")] {
        if let Some(text) = plain_text(rest.get(key)).filter(|t| t.trim() == t) {
            cells.push((field, text));
            rest.remove(key);
        }
    }
    if let Some(media) = media_text(rest.get("media")) {
        cells.push((Field::Media, media));
        rest.remove("media");
    }
    if !content.is_empty() {
        rest.insert("content".into(), Value::Object(content));
    }
    if !rest.is_empty() {
        cells.push((Field::Details, Value::Object(rest).to_string()));
    }
    for (field, text) in cells {
        let column = Field::ALL.iter().position(|f| *f == field).unwrap_or(0);
        sheet.write_string(row, column as u16, text)?;
    }
    Ok(())
}

/// A non-empty string an import reads back unchanged from a cell.
fn plain_text(value: Option<&Value>) -> Option<String> {
    match value {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Media references joined by `; `, when an import splits them back the
/// same.
fn media_text(value: Option<&Value>) -> Option<String> {
    let items = value?.as_array()?;
    let texts: Option<Vec<&str>> = items
        .iter()
        .map(|m| {
            m.as_str()
                .filter(|s| !s.is_empty() && s.trim() == *s && !s.contains([';', '\n']))
        })
        .collect();
    let texts = texts?;
    (!texts.is_empty()).then(|| texts.join("; "))
}
