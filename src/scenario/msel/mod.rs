//! Spreadsheet MSELs (master scenario event lists): a scenario read from an
//! `.xlsx` workbook or a `.csv` file with one row per inject, and any
//! scenario written back as an `.xlsx` workbook.
//!
//! - `mapping`: which column holds which inject field ([`Field`],
//!   [`Mapping`]): common headers by default, or chosen explicitly.
//! - `read`: cells from `.xlsx` (calamine), rows turned into a scenario
//!   package; `csv`: a small reader of its own for `.csv` (quotes,
//!   embedded separators and newlines, a BOM, `;` files).
//! - `write`: a scenario as a workbook (rust_xlsxwriter).
//!
//! An import never stops at the first problem: every one is reported,
//! naming the sheet, the row as the spreadsheet numbers it and the column
//! (letter and header). The package it builds is then checked by
//! [`load_inline`](super::load_inline), and its errors are reported too,
//! with the row of the inject they concern.
//!
//! A workbook holds the injects in its `MSEL` sheet; an export adds a
//! `Teams` sheet (team, name, timeline, timeline name) and a `Scenario`
//! sheet (field, value: id, name, duration_minutes, ...), which an import
//! reads when present, so a scenario comes back as it went out.

mod csv;
mod mapping;
mod read;
mod write;

use std::fmt;

pub use mapping::{Field, Mapping};
pub use read::{Imported, import};
pub use write::{ExportError, export};

/// The sheet an export writes the injects to.
pub const MSEL_SHEET: &str = "MSEL";
/// The sheet of teams an export writes and an import reads when present.
pub const TEAMS_SHEET: &str = "Teams";
/// The sheet of scenario fields an export writes and an import reads.
pub const SCENARIO_SHEET: &str = "Scenario";

/// The kind of file an MSEL comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xlsx,
    Csv,
}

impl Format {
    /// By the file's first bytes: a zip archive is a workbook, anything
    /// else is read as CSV.
    pub fn sniff(bytes: &[u8]) -> Format {
        if bytes.starts_with(b"PK\x03\x04") {
            Format::Xlsx
        } else {
            Format::Csv
        }
    }

    pub fn parse(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "xlsx" => Some(Format::Xlsx),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// What an import is told besides the file.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The sheet of injects (default: the first with a recognised header
    /// row). A CSV file has one sheet, named after the file.
    pub sheet: Option<String>,
    pub mapping: Mapping,
    /// `scenario_id` and `name` of the scenario (default: the `Scenario`
    /// sheet's, else `file_name` without its extension).
    pub name: Option<String>,
    /// The file's name, for a CSV file's sheet name and the default name.
    pub file_name: String,
    /// Forced format (default: sniffed from the bytes).
    pub format: Option<Format>,
}

/// A spreadsheet cell, as far as an MSEL cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Empty,
    Text(String),
    Number(f64),
    Bool(bool),
    /// A time of day or duration cell, in seconds.
    Duration(f64),
}

impl Cell {
    /// The cell as text, as the spreadsheet would show it (roughly).
    pub fn text(&self) -> String {
        match self {
            Cell::Empty => String::new(),
            Cell::Text(s) => s.clone(),
            Cell::Number(n) => number_text(*n),
            Cell::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
            Cell::Duration(secs) => number_text(*secs),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Cell::Empty => true,
            Cell::Text(s) => s.trim().is_empty(),
            _ => false,
        }
    }
}

fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// One problem found in an MSEL: where (sheet, row, column) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub sheet: Option<String>,
    /// 1-based, as the spreadsheet shows it.
    pub row: Option<u32>,
    /// Letter and header: `C (Time)`.
    pub column: Option<String>,
    pub reason: String,
}

impl Problem {
    pub(crate) fn sheet(sheet: &str, reason: impl Into<String>) -> Problem {
        Problem {
            sheet: Some(sheet.to_owned()),
            row: None,
            column: None,
            reason: reason.into(),
        }
    }

    pub(crate) fn at_row(sheet: &str, row: u32, reason: impl Into<String>) -> Problem {
        Problem {
            row: Some(row),
            ..Problem::sheet(sheet, reason)
        }
    }

    pub(crate) fn at_cell(
        sheet: &str,
        row: u32,
        column: String,
        reason: impl Into<String>,
    ) -> Problem {
        Problem {
            column: Some(column),
            ..Problem::at_row(sheet, row, reason)
        }
    }

    pub(crate) fn file(reason: impl Into<String>) -> Problem {
        Problem {
            sheet: None,
            row: None,
            column: None,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    /// `Sheet "MSEL", row 7, column C (Time): REASON`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut place = Vec::new();
        if let Some(sheet) = &self.sheet {
            place.push(format!("Sheet {sheet:?}"));
        }
        if let Some(row) = self.row {
            place.push(format!("row {row}"));
        }
        if let Some(column) = &self.column {
            place.push(format!("column {column}"));
        }
        if !place.is_empty() {
            write!(f, "{}: ", place.join(", "))?;
        }
        f.write_str(&self.reason)
    }
}

/// Why an MSEL was not imported: every problem found, in sheet order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the MSEL is invalid: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct MselError {
    pub problems: Vec<Problem>,
}

#[cfg(test)]
mod tests;
