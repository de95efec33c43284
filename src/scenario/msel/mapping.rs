//! Which column of an MSEL sheet holds which inject field: the header
//! synonyms recognised by default, explicit `field=Header` choices, and
//! finding the header row.

use std::fmt;

use super::{Cell, Problem};

/// An inject field an MSEL column can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Id,
    Time,
    Team,
    Type,
    Title,
    Content,
    Priority,
    Media,
    Action,
    Details,
}

impl Field {
    /// Every field, in the column order an export writes.
    pub const ALL: [Field; 10] = [
        Field::Id,
        Field::Time,
        Field::Team,
        Field::Type,
        Field::Title,
        Field::Content,
        Field::Priority,
        Field::Media,
        Field::Action,
        Field::Details,
    ];

    /// The fields a header row must have.
    pub const REQUIRED: [Field; 3] = [Field::Time, Field::Team, Field::Type];

    /// The field's name in a `field=Header` mapping.
    pub fn key(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::Time => "time",
            Field::Team => "team",
            Field::Type => "type",
            Field::Title => "title",
            Field::Content => "content",
            Field::Priority => "priority",
            Field::Media => "media",
            Field::Action => "action",
            Field::Details => "details",
        }
    }

    /// The header an export writes.
    pub fn header(self) -> &'static str {
        match self {
            Field::Id => "ID",
            Field::Time => "Time",
            Field::Team => "Team",
            Field::Type => "Type",
            Field::Title => "Title",
            Field::Content => "Content",
            Field::Priority => "Priority",
            Field::Media => "Media",
            Field::Action => "Action",
            Field::Details => "Details",
        }
    }

    /// Headers recognised by default, lowercase, spaces collapsed.
    pub fn synonyms(self) -> &'static [&'static str] {
        match self {
            Field::Id => &["id", "inject id", "ref", "reference"],
            Field::Time => &[
                "time",
                "t+",
                "offset",
                "exercise time",
                "seconds",
                "time (s)",
            ],
            Field::Team => &[
                "team",
                "teams",
                "team(s)",
                "recipient",
                "recipients",
                "recipient(s)",
                "to",
            ],
            Field::Type => &["type", "channel", "inject type"],
            Field::Title => &["title", "subject", "headline"],
            Field::Content => &["content", "body", "message", "text", "description"],
            Field::Priority => &["priority"],
            Field::Media => &[
                "media",
                "attachment",
                "attachments",
                "attachment(s)",
                "file",
            ],
            Field::Action => &["action", "expected action"],
            Field::Details => &["details", "fields"],
        }
    }

    pub fn parse(key: &str) -> Option<Field> {
        Field::ALL
            .into_iter()
            .find(|f| f.key().eq_ignore_ascii_case(key.trim()))
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Explicit `field=Header` choices; every other field is found by its
/// synonyms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    explicit: Vec<(Field, String)>,
}

impl Mapping {
    /// Parses `field=Header` choices (as `--column` and `?column=` give
    /// them), every bad one reported.
    pub fn parse<S: AsRef<str>>(choices: &[S]) -> Result<Mapping, Vec<String>> {
        let mut mapping = Mapping::default();
        let mut errors = Vec::new();
        for choice in choices {
            let choice = choice.as_ref();
            let Some((key, header)) = choice.split_once('=') else {
                errors.push(format!(
                    "column mapping {choice:?}: expected FIELD=HEADER, e.g. time=Offset"
                ));
                continue;
            };
            let Some(field) = Field::parse(key) else {
                errors.push(format!(
                    "column mapping {choice:?}: unknown field {key:?}; the fields are {}",
                    Field::ALL.map(Field::key).join(", ")
                ));
                continue;
            };
            if header.trim().is_empty() {
                errors.push(format!("column mapping {choice:?}: the header is empty"));
            } else if mapping.explicit.iter().any(|(f, _)| *f == field) {
                errors.push(format!(
                    "column mapping {choice:?}: {field} is mapped twice"
                ));
            } else {
                mapping.explicit.push((field, header.trim().to_owned()));
            }
        }
        if errors.is_empty() {
            Ok(mapping)
        } else {
            Err(errors)
        }
    }

    pub fn with(mut self, field: Field, header: &str) -> Mapping {
        self.explicit.retain(|(f, _)| *f != field);
        self.explicit.push((field, header.to_owned()));
        self
    }
}

/// The header row of a sheet and the column (0-based) of each field found.
#[derive(Debug, Clone)]
pub struct Columns {
    /// Index into the sheet's rows.
    pub header_row: usize,
    pub found: Vec<(Field, usize)>,
    pub headers: Vec<String>,
}

impl Columns {
    pub fn get(&self, field: Field) -> Option<usize> {
        self.found
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, c)| *c)
    }

    /// `C (Time)`: a column's letter and header.
    pub fn describe(&self, column: usize) -> String {
        let header = self.headers.get(column).map_or("", String::as_str);
        format!("{} ({header})", letter(column))
    }
}

/// How many rows from the top a header row is looked for in.
const HEADER_SEARCH_ROWS: usize = 20;

/// The header row among the first rows of `rows` (a row where every
/// required field is found), or why there is none.
pub fn find_columns(
    sheet: &str,
    rows: &[(u32, Vec<Cell>)],
    mapping: &Mapping,
) -> Result<Columns, Vec<Problem>> {
    let mut first_try: Option<Vec<Problem>> = None;
    for (index, (number, cells)) in rows.iter().take(HEADER_SEARCH_ROWS).enumerate() {
        let headers: Vec<String> = cells.iter().map(Cell::text).collect();
        if headers.iter().all(|h| h.trim().is_empty()) {
            continue;
        }
        match columns_of(sheet, *number, &headers, mapping) {
            Ok(found) => {
                return Ok(Columns {
                    header_row: index,
                    found,
                    headers,
                });
            }
            Err(problems) => {
                first_try.get_or_insert(problems);
            }
        }
    }
    Err(first_try.unwrap_or_else(|| {
        vec![Problem::sheet(
            sheet,
            "the sheet is empty: expected a header row (Time, Team, Type, Title, Content, ...)",
        )]
    }))
}

/// Whether `rows` has a header row the default mapping recognises.
pub fn has_header_row(rows: &[(u32, Vec<Cell>)], mapping: &Mapping) -> bool {
    find_columns("", rows, mapping).is_ok()
}

fn columns_of(
    sheet: &str,
    row: u32,
    headers: &[String],
    mapping: &Mapping,
) -> Result<Vec<(Field, usize)>, Vec<Problem>> {
    let normal: Vec<String> = headers.iter().map(|h| normalize(h)).collect();
    let mut found: Vec<(Field, usize)> = Vec::new();
    let mut problems = Vec::new();
    for (field, header) in &mapping.explicit {
        match normal.iter().position(|h| *h == normalize(header)) {
            Some(column) => found.push((*field, column)),
            None => problems.push(Problem::at_row(
                sheet,
                row,
                format!(
                    "no column {header:?} for {field}; the headers are {}",
                    shown_headers(headers)
                ),
            )),
        }
    }
    for field in Field::ALL {
        if found.iter().any(|(f, _)| *f == field) {
            continue;
        }
        let matches: Vec<usize> = normal
            .iter()
            .enumerate()
            .filter(|(column, h)| {
                field.synonyms().contains(&h.as_str()) && !found.iter().any(|(_, c)| c == column)
            })
            .map(|(column, _)| column)
            .collect();
        match matches.as_slice() {
            [] => {}
            [column] => found.push((field, *column)),
            several => problems.push(Problem::at_row(
                sheet,
                row,
                format!(
                    "columns {} all look like {field}: choose one with {field}=HEADER",
                    several
                        .iter()
                        .map(|c| format!("{} ({})", letter(*c), headers[*c]))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
    for field in Field::REQUIRED {
        if !found.iter().any(|(f, _)| *f == field) {
            problems.push(Problem::at_row(
                sheet,
                row,
                format!(
                    "no {field} column: name one {} (or map it with {field}=HEADER); the headers are {}",
                    field
                        .synonyms()
                        .iter()
                        .map(|s| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    shown_headers(headers)
                ),
            ));
        }
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems)
    }
}

fn shown_headers(headers: &[String]) -> String {
    headers
        .iter()
        .filter(|h| !h.trim().is_empty())
        .map(|h| format!("{:?}", h.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lowercase, trimmed, inner white space one space, a trailing `:` dropped.
fn normalize(header: &str) -> String {
    let words: Vec<&str> = header.split_whitespace().collect();
    let joined = words.join(" ").to_lowercase();
    joined.trim_end_matches(':').trim_end().to_owned()
}

/// The spreadsheet letter of a 0-based column: A, ..., Z, AA, ...
pub fn letter(column: usize) -> String {
    let mut n = column + 1;
    let mut out = Vec::new();
    while n > 0 {
        let rem = (n - 1) % 26;
        out.push(b'A' + rem as u8);
        n = (n - 1) / 26;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_have_letters() {
        for (index, want) in [(0, "A"), (2, "C"), (25, "Z"), (26, "AA"), (701, "ZZ")] {
            assert_eq!(letter(index), want);
        }
    }

    fn headers(names: &[&str]) -> Vec<(u32, Vec<Cell>)> {
        vec![(1, names.iter().map(|n| Cell::Text((*n).into())).collect())]
    }

    #[test]
    fn recognises_synonyms_and_explicit_choices() {
        let rows = headers(&[
            "Exercise Time",
            "Recipient(s)",
            "Channel",
            "Subject",
            "Body",
        ]);
        let columns = find_columns("S", &rows, &Mapping::default()).unwrap();
        assert_eq!(columns.get(Field::Time), Some(0));
        assert_eq!(columns.get(Field::Team), Some(1));
        assert_eq!(columns.get(Field::Content), Some(4));
        assert_eq!(columns.describe(2), "C (Channel)");

        let rows = headers(&["When", "Sent to", "Type"]);
        let problems = find_columns("S", &rows, &Mapping::default()).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        let mapping = Mapping::parse(&["time=when", "team=Sent to"]).unwrap();
        let columns = find_columns("S", &rows, &mapping).unwrap();
        assert_eq!(columns.get(Field::Team), Some(1));

        let rows = headers(&["Time", "Team", "To", "Type"]);
        let problems = find_columns("S", &rows, &Mapping::default()).unwrap_err();
        assert!(
            problems[0].to_string().contains("B (Team), C (To)"),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_mappings_are_all_reported() {
        let errors =
            Mapping::parse(&["time", "when=Offset", "team=", "type=A", "type=B"]).unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
    }
}
