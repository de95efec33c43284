//! A small CSV reader for MSELs: UTF-8 with or without a BOM, `,` or `;`
//! separated, `"` quoting, rows numbered as a spreadsheet opening the file
//! numbers them (one per record: a cell's line breaks stay in the cell).

use super::Cell;
use super::read::{MAX_COLUMNS, MAX_ROWS, Sheet};

/// A CSV file as one sheet: UTF-8 (a BOM is skipped), fields separated by
/// `,` or, when the first line has more of them outside quotes, by `;`
/// (as spreadsheets write it where `,` is the decimal mark); `"` quotes a
/// field, which may then hold separators, newlines and `""`.
pub(super) fn read(bytes: &[u8], name: &str) -> Result<Vec<Sheet>, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("the CSV file is not UTF-8 text (save it as \"CSV UTF-8\"): {e}"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let separator = separator(text);
    let mut rows = Vec::new();
    let mut row: Vec<Cell> = Vec::new();
    let mut field = String::new();
    let mut row_line: u32 = 1;
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = text.chars().peekable();
    let finish_field = |field: &mut String, row: &mut Vec<Cell>, was_quoted: &mut bool| {
        let text = std::mem::take(field);
        row.push(if text.is_empty() && !*was_quoted {
            Cell::Empty
        } else {
            Cell::Text(text)
        });
        *was_quoted = false;
    };
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\r' if chars.peek() == Some(&'\n') => {}
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            c if c == separator => {
                finish_field(&mut field, &mut row, &mut was_quoted);
                if row.len() >= MAX_COLUMNS as usize {
                    return Err(beyond(name, row_line));
                }
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            // A lone CR ends a line too (old Mac files).
            '\n' | '\r' => {
                if row_line > MAX_ROWS {
                    return Err(beyond(name, row_line));
                }
                finish_field(&mut field, &mut row, &mut was_quoted);
                push_row(&mut rows, row_line, std::mem::take(&mut row));
                row_line += 1;
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err(format!(
            "Sheet {name:?}, row {row_line}: a quoted field is not closed (a \" is missing)"
        ));
    }
    if !field.is_empty() || was_quoted || !row.is_empty() {
        if row_line > MAX_ROWS {
            return Err(beyond(name, row_line));
        }
        finish_field(&mut field, &mut row, &mut was_quoted);
        push_row(&mut rows, row_line, row);
    }
    Ok(vec![Sheet {
        name: name.to_owned(),
        rows,
    }])
}

fn beyond(name: &str, row: u32) -> String {
    format!(
        "Sheet {name:?}, row {row}: beyond the {MAX_ROWS} rows and {MAX_COLUMNS} columns an MSEL may use"
    )
}

fn push_row(rows: &mut Vec<(u32, Vec<Cell>)>, number: u32, row: Vec<Cell>) {
    if row.iter().any(|c| !c.is_empty()) {
        rows.push((number, row));
    }
}

fn separator(text: &str) -> char {
    let (mut commas, mut semicolons, mut quoted) = (0, 0, false);
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => commas += 1,
            ';' if !quoted => semicolons += 1,
            '\n' if !quoted => break,
            _ => {}
        }
    }
    if semicolons > commas { ';' } else { ',' }
}
