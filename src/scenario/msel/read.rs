//! Reading an MSEL: the sheets of a workbook or CSV file as cells, the
//! inject rows as a scenario package, checked as an uploaded one is.

use std::collections::HashMap;
use std::io::Cursor;

use calamine::{Data, Reader, Xlsx};
use serde_json::{Map, Value};

use super::csv;
use super::mapping::{Columns, Field, find_columns, has_header_row, letter};
use super::{Cell, Format, ImportOptions, MselError, Problem, SCENARIO_SHEET, TEAMS_SHEET};
use crate::config::Limits;
use crate::scenario::{Scenario, UPLOAD, load_inline};

/// A sheet: its name and its non-empty rows, each with its 1-based number.
pub(super) struct Sheet {
    pub name: String,
    pub rows: Vec<(u32, Vec<Cell>)>,
}

/// An imported MSEL: the scenario package (the API's inline form, with its
/// timelines inside) and the scenario it loads as.
#[derive(Debug, Clone)]
pub struct Imported {
    pub package: Value,
    pub scenario: Scenario,
}

/// Reads an MSEL from `bytes` into a validated scenario package; every
/// problem at once otherwise.
pub fn import(
    bytes: &[u8],
    options: &ImportOptions,
    limits: &Limits,
) -> Result<Imported, MselError> {
    let fail = |problems: Vec<Problem>| MselError { problems };
    let format = options.format.unwrap_or_else(|| Format::sniff(bytes));
    let sheets = match format {
        Format::Xlsx => read_xlsx(bytes),
        Format::Csv => csv::read(bytes, &csv_sheet_name(&options.file_name)),
    }
    .map_err(|reason| fail(vec![Problem::file(reason)]))?;

    let msel = match &options.sheet {
        Some(name) => sheets.iter().find(|s| s.name == *name).ok_or_else(|| {
            fail(vec![Problem::file(format!(
                "no sheet {name:?}; the sheets are {}",
                sheet_names(&sheets)
            ))])
        })?,
        None => sheets
            .iter()
            .filter(|s| s.name != TEAMS_SHEET && s.name != SCENARIO_SHEET)
            .find(|s| has_header_row(&s.rows, &options.mapping))
            .or_else(|| sheets.first())
            .ok_or_else(|| fail(vec![Problem::file("the workbook has no sheets")]))?,
    };
    let columns = find_columns(&msel.name, &msel.rows, &options.mapping).map_err(fail)?;

    let mut problems = Vec::new();
    let fields = match sheets.iter().find(|s| s.name == SCENARIO_SHEET) {
        Some(sheet) if sheet.name != msel.name => scenario_fields(sheet, &mut problems),
        _ => Map::new(),
    };
    let declared = match sheets.iter().find(|s| s.name == TEAMS_SHEET) {
        Some(sheet) if sheet.name != msel.name => Some(teams(sheet, &mut problems)),
        _ => None,
    };
    let mut rows = inject_rows(msel, &columns, &mut problems);
    let package = package(
        fields,
        declared,
        &mut rows,
        options,
        &msel.name,
        &mut problems,
    );
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    match load_inline(&package, limits) {
        Ok(scenario) => Ok(Imported { package, scenario }),
        Err(errors) => {
            let places: HashMap<(String, String), u32> = rows
                .iter()
                .flat_map(|row| {
                    row.timelines
                        .iter()
                        .map(|t| ((t.clone(), row.id.clone()), row.number))
                })
                .collect();
            let problems = errors
                .into_iter()
                .map(|e| {
                    let timeline = e
                        .file
                        .strip_prefix(UPLOAD)
                        .ok()
                        .and_then(|p| p.strip_prefix("timelines").ok())
                        .map(|p| p.to_string_lossy().into_owned());
                    let inject = e
                        .location
                        .as_deref()
                        .and_then(|l| l.strip_prefix("inject \""))
                        .and_then(|l| l.strip_suffix('"'));
                    match (timeline, inject) {
                        (Some(timeline), Some(inject)) => {
                            match places.get(&(timeline.clone(), inject.to_owned())) {
                                Some(row) => Problem::at_row(
                                    &msel.name,
                                    *row,
                                    format!(
                                        "inject {inject:?} of team timeline {timeline:?}: {}",
                                        e.reason
                                    ),
                                ),
                                None => Problem::file(e.to_string()),
                            }
                        }
                        _ => Problem::file(e.to_string()),
                    }
                })
                .collect();
            Err(fail(problems))
        }
    }
}

fn sheet_names(sheets: &[Sheet]) -> String {
    sheets
        .iter()
        .map(|s| format!("{:?}", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A CSV file's one sheet is named after the file, without `.csv`.
fn csv_sheet_name(file_name: &str) -> String {
    let name = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    let stem = name
        .strip_suffix(".csv")
        .or_else(|| name.strip_suffix(".CSV"))
        .unwrap_or(name);
    if stem.is_empty() { "MSEL" } else { stem }.to_owned()
}

/// The most a workbook may unpack to, by the sizes its archive declares:
/// far above any MSEL, far below what would strain the server. The
/// shared strings are read whole when the workbook opens, so a small
/// upload must not unpack to gigabytes.
pub(super) const MAX_UNPACKED_BYTES: u64 = 64 * 1024 * 1024;
/// The last row and column (1-based) a cell of an MSEL may be in. The
/// sheet is read cell by cell and never as one rectangle: a workbook with a
/// cell at A1 and another at XFD1048576 would otherwise ask for a grid of
/// 17 billion cells.
pub(super) const MAX_ROWS: u32 = 20_000;
pub(super) const MAX_COLUMNS: u32 = 64;

/// Every sheet of a workbook, in workbook order.
fn read_xlsx(bytes: &[u8]) -> Result<Vec<Sheet>, String> {
    check_archive(bytes, MAX_UNPACKED_BYTES)?;
    let mut workbook: Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(bytes))
        .map_err(|e| format!("not a readable .xlsx workbook: {e}"))?;
    let mut sheets = Vec::new();
    for name in workbook.sheet_names() {
        let unreadable = |e: calamine::XlsxError| format!("sheet {name:?} is unreadable: {e}");
        let mut reader = workbook.worksheet_cells_reader(&name).map_err(unreadable)?;
        let mut grid: std::collections::BTreeMap<u32, Vec<Cell>> = Default::default();
        while let Some(found) = reader.next_cell().map_err(unreadable)? {
            let (row, column) = found.get_position();
            if row >= MAX_ROWS || column >= MAX_COLUMNS {
                return Err(format!(
                    "sheet {name:?} has a cell at {}{}, beyond the {MAX_ROWS} rows and {MAX_COLUMNS} columns an MSEL may use",
                    letter(column as usize),
                    u64::from(row) + 1
                ));
            }
            let value = cell(&Data::from(found.get_value().clone()));
            if value.is_empty() {
                continue;
            }
            let cells = grid.entry(row + 1).or_default();
            let column = column as usize;
            if cells.len() <= column {
                cells.resize(column + 1, Cell::Empty);
            }
            cells[column] = value;
        }
        drop(reader);
        sheets.push(Sheet {
            name,
            rows: grid.into_iter().collect(),
        });
    }
    Ok(sheets)
}

/// Refuses a workbook whose archive declares more than `max` bytes in all,
/// before anything is unpacked (the zip reader then stops each entry at
/// its declared size).
pub(super) fn check_archive(bytes: &[u8], max: u64) -> Result<(), String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("not a readable .xlsx workbook: {e}"))?;
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| format!("not a readable .xlsx workbook: {e}"))?;
        total = total.saturating_add(entry.size());
    }
    if total > max {
        return Err(format!(
            "the workbook unpacks to {total} bytes, more than the {max} an MSEL may take"
        ));
    }
    Ok(())
}

fn cell(data: &Data) -> Cell {
    match data {
        Data::Empty => Cell::Empty,
        Data::String(s) => Cell::Text(s.clone()),
        Data::Int(i) => Cell::Number(*i as f64),
        Data::Float(f) => Cell::Number(*f),
        Data::Bool(b) => Cell::Bool(*b),
        // A time of day or a duration is a fraction of a day.
        Data::DateTime(t) => Cell::Duration((t.as_f64() * 86_400.0 * 1000.0).round() / 1000.0),
        Data::DateTimeIso(s) | Data::DurationIso(s) => Cell::Text(s.clone()),
        Data::Error(e) => Cell::Text(format!("#{e:?}")),
    }
}

/// One inject row, its fields read.
struct Row {
    number: u32,
    id: String,
    teams: Vec<String>,
    /// The timelines it goes to, set when the package is built.
    timelines: Vec<String>,
    inject: Map<String, Value>,
}

/// The inject rows below the header row; problems recorded.
fn inject_rows(sheet: &Sheet, columns: &Columns, problems: &mut Vec<Problem>) -> Vec<Row> {
    let mut rows = Vec::new();
    for (number, cells) in &sheet.rows[columns.header_row + 1..] {
        let get = |field: Field| {
            columns
                .get(field)
                .map(|c| (c, cells.get(c).cloned().unwrap_or(Cell::Empty)))
        };
        let mapped = columns
            .found
            .iter()
            .any(|(_, c)| cells.get(*c).is_some_and(|cell| !cell.is_empty()));
        if !mapped {
            continue;
        }
        let mut bad = |column: usize, reason: String| {
            problems.push(Problem::at_cell(
                &sheet.name,
                *number,
                columns.describe(column),
                reason,
            ));
        };
        let mut inject = Map::new();
        let id = match get(Field::Id) {
            Some((_, c)) if !c.is_empty() => c.text().trim().to_owned(),
            _ => format!("inject-{number:03}"),
        };
        inject.insert("id".into(), Value::from(id.clone()));
        if let Some((column, c)) = get(Field::Time) {
            match seconds(&c) {
                Ok(secs) => {
                    inject.insert("time".into(), Value::from(secs));
                }
                Err(reason) => bad(column, reason),
            }
        }
        let mut teams = Vec::new();
        if let Some((column, c)) = get(Field::Team) {
            teams = c
                .text()
                .split([',', ';', '\n'])
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
            if teams.is_empty() {
                bad(
                    column,
                    "no team: name one or more, separated by , or ;, or \"all\"".into(),
                );
            }
        }
        if let Some((column, c)) = get(Field::Type) {
            let kind = c.text().trim().to_lowercase();
            if kind.is_empty() {
                bad(
                    column,
                    "no type: news, social, email, sms, video, intel, briefing, ...".into(),
                );
            }
            inject.insert("type".into(), Value::from(kind));
        }
        let mut content = Map::new();
        for (field, key) in [(Field::Title, "title"), (Field::Content, "body")] {
            if let Some((_, c)) = get(field)
                && !c.is_empty()
            {
                content.insert(key.into(), Value::from(c.text()));
            }
        }
        for (field, key) in [(Field::Priority, "priority"), (Field::Action, "action")] {
            if let Some((_, c)) = get(field)
                && !c.is_empty()
            {
                inject.insert(key.into(), Value::from(c.text().trim()));
            }
        }
        if let Some((_, c)) = get(Field::Media)
            && !c.is_empty()
        {
            let media: Vec<Value> = c
                .text()
                .split([';', '\n'])
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(Value::from)
                .collect();
            inject.insert("media".into(), Value::Array(media));
        }
        if let Some((column, c)) = get(Field::Details)
            && !c.is_empty()
        {
            match serde_json::from_str::<Value>(&c.text()) {
                Ok(Value::Object(details)) => {
                    for (key, value) in details {
                        if key == "content" {
                            match value {
                                Value::Object(more) => {
                                    for (key, value) in more {
                                        if content.contains_key(&key) {
                                            bad(column, format!("content field {key:?} is given twice (here and in its own column)"));
                                        }
                                        content.insert(key, value);
                                    }
                                }
                                _ => bad(column, "\"content\" here must be a JSON object".into()),
                            }
                        } else if inject.contains_key(&key) {
                            bad(column, format!("field {key:?} is given twice (here and in its own column)"));
                        } else {
                            inject.insert(key, value);
                        }
                    }
                }
                _ => bad(
                    column,
                    "expected a JSON object of further fields, e.g. {\"turn\": 2, \"content\": {\"from\": \"...\"}}".into(),
                ),
            }
        }
        inject.insert("content".into(), Value::Object(content));
        rows.push(Row {
            number: *number,
            id,
            teams,
            timelines: Vec::new(),
            inject,
        });
    }
    if rows.is_empty() && problems.is_empty() {
        problems.push(Problem::sheet(
            &sheet.name,
            "no injects below the header row",
        ));
    }
    rows
}

/// Whole seconds from T+0: a number, `T+mm:ss`, `mm:ss`, `h:mm:ss`, or a
/// time cell.
pub(super) fn seconds(c: &Cell) -> Result<u64, String> {
    let whole = |n: f64| -> Result<u64, String> {
        if n < 0.0 || n.fract() != 0.0 || n > f64::from(u32::MAX) {
            Err(format!("{} is not whole seconds from T+0", c.text()))
        } else {
            Ok(n as u64)
        }
    };
    match c {
        Cell::Number(n) | Cell::Duration(n) => whole(*n),
        Cell::Empty => Err("no time: give seconds or T+mm:ss".into()),
        other => {
            let text = other.text();
            let raw = text.trim();
            let shown = format!("{raw:?} is not seconds or T+mm:ss");
            let rest = raw
                .strip_prefix("T+")
                .or_else(|| raw.strip_prefix("t+"))
                .unwrap_or(raw)
                .trim();
            if !rest.contains(':') {
                return rest
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s <= u64::from(u32::MAX))
                    .ok_or(shown);
            }
            let parts: Vec<&str> = rest.split(':').collect();
            let numbers: Option<Vec<u64>> = parts
                .iter()
                .map(|p| {
                    (!p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| p.parse().ok())
                        .flatten()
                })
                .collect();
            match numbers.as_deref() {
                Some([m, s]) if *s < 60 && parts[1].len() == 2 => Ok(m * 60 + s),
                Some([h, m, s])
                    if *m < 60 && *s < 60 && parts[1].len() == 2 && parts[2].len() == 2 =>
                {
                    Ok(h * 3600 + m * 60 + s)
                }
                _ => Err(shown),
            }
        }
    }
}

/// The `Scenario` sheet's fields: column A the field, B its value.
fn scenario_fields(sheet: &Sheet, problems: &mut Vec<Problem>) -> Map<String, Value> {
    let mut fields = Map::new();
    for (number, cells) in &sheet.rows {
        let key = cells.first().map(Cell::text).unwrap_or_default();
        let key = key.trim();
        if key.eq_ignore_ascii_case("field") && *number == sheet.rows[0].0 {
            continue;
        }
        if key.is_empty() {
            continue;
        }
        if key == "teams" || key == "timelines" {
            problems.push(Problem::at_cell(
                &sheet.name,
                *number,
                format!("{} ({key})", letter(0)),
                format!(
                    "{key:?} come from the {TEAMS_SHEET} sheet and the MSEL rows, not from here"
                ),
            ));
            continue;
        }
        let value = match cells.get(1).unwrap_or(&Cell::Empty) {
            Cell::Empty => continue,
            // Lists (two-way play's channels and objectives) are written as JSON.
            Cell::Text(s) if matches!(key, "channels" | "objectives") => {
                serde_json::from_str(s).unwrap_or_else(|_| Value::from(s.clone()))
            }
            Cell::Text(s) => Value::from(s.clone()),
            Cell::Bool(b) => Value::from(*b),
            Cell::Number(n) | Cell::Duration(n) => number_value(*n),
        };
        fields.insert(key.to_owned(), value);
    }
    fields
}

fn number_value(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        Value::from(n as i64)
    } else {
        Value::from(n)
    }
}

/// A team of the `Teams` sheet.
struct DeclaredTeam {
    id: String,
    name: Option<String>,
    timeline: String,
    timeline_name: Option<String>,
}

/// The `Teams` sheet: Team, Name, Timeline, Timeline name (A to D), below
/// a header row.
fn teams(sheet: &Sheet, problems: &mut Vec<Problem>) -> Vec<DeclaredTeam> {
    let text = |cells: &[Cell], i: usize| {
        cells
            .get(i)
            .map(|c| c.text().trim().to_owned())
            .filter(|t| !t.is_empty())
    };
    let mut teams: Vec<DeclaredTeam> = Vec::new();
    for (number, cells) in sheet.rows.iter().skip(1) {
        let Some(id) = text(cells, 0) else {
            problems.push(Problem::at_cell(
                &sheet.name,
                *number,
                "A (Team)".into(),
                "no team id",
            ));
            continue;
        };
        if teams.iter().any(|t| t.id == id) {
            problems.push(Problem::at_cell(
                &sheet.name,
                *number,
                "A (Team)".into(),
                format!("team {id:?} is listed twice"),
            ));
            continue;
        }
        teams.push(DeclaredTeam {
            timeline: text(cells, 2).unwrap_or_else(|| id.clone()),
            name: text(cells, 1),
            timeline_name: text(cells, 3),
            id,
        });
    }
    teams
}

/// The scenario package of the rows: one timeline per team (or per
/// timeline of the `Teams` sheet, shared by its teams), injects in row
/// order.
fn package(
    mut root: Map<String, Value>,
    declared: Option<Vec<DeclaredTeam>>,
    rows: &mut [Row],
    options: &ImportOptions,
    sheet: &str,
    problems: &mut Vec<Problem>,
) -> Value {
    let named_by_rows = |rows: &[Row]| {
        let mut teams: Vec<String> = Vec::new();
        for row in rows {
            for team in &row.teams {
                if !team.eq_ignore_ascii_case("all") && !teams.contains(team) {
                    teams.push(team.clone());
                }
            }
        }
        teams
            .into_iter()
            .map(|id| DeclaredTeam {
                timeline: id.clone(),
                id,
                name: None,
                timeline_name: None,
            })
            .collect::<Vec<_>>()
    };
    let declared_sheet = declared.is_some();
    let teams = match declared {
        Some(teams) => teams,
        None => named_by_rows(rows),
    };
    let mut timelines: Vec<(String, Option<String>, Vec<Value>)> = Vec::new();
    for team in &teams {
        if !timelines.iter().any(|(id, _, _)| *id == team.timeline) {
            timelines.push((
                team.timeline.clone(),
                team.timeline_name.clone(),
                Vec::new(),
            ));
        }
    }
    let team_column = "Team";
    for row in rows.iter_mut() {
        let all = row.teams.iter().any(|t| t.eq_ignore_ascii_case("all"));
        let mut targets: Vec<String> = Vec::new();
        for name in &row.teams {
            if name.eq_ignore_ascii_case("all") {
                continue;
            }
            match teams.iter().find(|t| t.id == *name) {
                Some(team) => {
                    if !targets.contains(&team.timeline) {
                        targets.push(team.timeline.clone());
                    }
                }
                None => problems.push(Problem::at_row(
                    sheet,
                    row.number,
                    format!("{team_column} {name:?} is not in the {TEAMS_SHEET} sheet"),
                )),
            }
        }
        if all {
            targets = timelines.iter().map(|(id, _, _)| id.clone()).collect();
        }
        // A shared timeline reaches all its teams: a row names all or none.
        if declared_sheet && !all {
            for timeline in &targets {
                let missing: Vec<&str> = teams
                    .iter()
                    .filter(|t| t.timeline == *timeline && !row.teams.contains(&t.id))
                    .map(|t| t.id.as_str())
                    .collect();
                if !missing.is_empty() {
                    problems.push(Problem::at_row(
                        sheet,
                        row.number,
                        format!(
                            "teams share timeline {timeline:?}: name {} too, or give them timelines of their own in the {TEAMS_SHEET} sheet",
                            missing.join(", ")
                        ),
                    ));
                }
            }
        }
        for (id, _, injects) in &mut timelines {
            if targets.contains(id) {
                injects.push(Value::Object(row.inject.clone()));
            }
        }
        row.timelines = targets;
    }
    if let Some(name) = &options.name {
        root.insert("scenario_id".into(), Value::from(name.clone()));
        root.insert("name".into(), Value::from(name.clone()));
    } else if !root.contains_key("scenario_id") && !root.contains_key("name") {
        let stem = options
            .file_name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or_default();
        let stem = stem.rsplit_once('.').map_or(stem, |(s, _)| s);
        if !stem.is_empty() {
            root.insert("scenario_id".into(), Value::from(stem));
            root.insert("name".into(), Value::from(stem));
        }
    }
    if !root.contains_key("duration_minutes") && !root.contains_key("duration") {
        // Long enough for the last inject: whole minutes, at least one.
        let last = rows
            .iter()
            .filter_map(|r| r.inject.get("time").and_then(Value::as_u64))
            .max()
            .unwrap_or(0);
        root.insert(
            "duration_minutes".into(),
            Value::from(last.div_ceil(60).max(1)),
        );
    }
    let teams_value = teams
        .iter()
        .map(|t| {
            let mut team = Map::new();
            team.insert("id".into(), Value::from(t.id.clone()));
            if let Some(name) = &t.name {
                team.insert("name".into(), Value::from(name.clone()));
            }
            team.insert("timeline_id".into(), Value::from(t.timeline.clone()));
            Value::Object(team)
        })
        .collect();
    root.insert("teams".into(), Value::Array(teams_value));
    let timelines_value = timelines
        .into_iter()
        .map(|(id, name, injects)| {
            let mut timeline = Map::new();
            timeline.insert("id".into(), Value::from(id));
            if let Some(name) = name {
                timeline.insert("name".into(), Value::from(name));
            }
            timeline.insert("injects".into(), Value::Array(injects));
            Value::Object(timeline)
        })
        .collect();
    root.insert("timelines".into(), Value::Array(timelines_value));
    Value::Object(root)
}
