//! The report as CSV: the deliveries and the control log, one table each,
//! for spreadsheets.

use std::borrow::Cow;
use std::collections::HashMap;

use super::model::AfterActionReport;

/// The columns of [`deliveries_csv`], in order.
pub const DELIVERY_COLUMNS: [&str; 19] = [
    "run",
    "team_id",
    "team_name",
    "inject_id",
    "type",
    "planned",
    "due_exercise_seconds",
    "due_at",
    "published_at",
    "acknowledged_at",
    "received_at",
    "actual_exercise_seconds",
    "lateness_ms",
    "receipt_latency_ms",
    "attempts",
    "status",
    "late",
    "last_error",
    "live",
];

/// The columns of [`control_log_csv`], in order.
pub const CONTROL_COLUMNS: [&str; 7] = [
    "run", "at", "command", "reason", "source", "accepted", "message",
];

/// One row per delivery, with [`DELIVERY_COLUMNS`] as header: UTF-8 with a
/// byte-order mark (so that spreadsheets read non-ASCII text right), CRLF
/// line ends, RFC 4180 quoting. Times are UTC ISO 8601 with milliseconds,
/// durations milliseconds, booleans `true`/`false`, absent values empty.
pub fn deliveries_csv(report: &AfterActionReport) -> String {
    let names: HashMap<&str, Option<&str>> = report
        .exercise
        .teams
        .iter()
        .map(|t| (t.id.as_str(), t.name.as_deref()))
        .collect();
    let mut out = String::from("\u{feff}");
    csv_record(&mut out, DELIVERY_COLUMNS.iter().map(|c| Cell::Plain(c)));
    let run = report.exercise.run.to_string();
    for d in &report.deliveries {
        let due = d.due_exercise_time.to_string();
        let actual = d.actual_exercise_time.map(|s| format!("{s:.3}"));
        let lateness = d.lateness_ms.map(|ms| format!("{ms:.3}"));
        let receipt = d.receipt_latency_ms.map(|ms| format!("{ms:.3}"));
        let attempts = d.attempts.to_string();
        let team_name = names.get(d.team_id.as_str()).copied().flatten();
        csv_record(
            &mut out,
            [
                Cell::Plain(&run),
                Cell::Text(&d.team_id),
                Cell::Text(team_name.unwrap_or("")),
                Cell::Text(&d.inject_id),
                Cell::Text(&d.kind),
                Cell::Plain(&d.planned),
                Cell::Plain(&due),
                Cell::Plain(d.due_at.as_deref().unwrap_or("")),
                Cell::Plain(d.published_at.as_deref().unwrap_or("")),
                Cell::Plain(d.acknowledged_at.as_deref().unwrap_or("")),
                Cell::Plain(d.received_at.as_deref().unwrap_or("")),
                Cell::Plain(actual.as_deref().unwrap_or("")),
                Cell::Plain(lateness.as_deref().unwrap_or("")),
                Cell::Plain(receipt.as_deref().unwrap_or("")),
                Cell::Plain(&attempts),
                Cell::Plain(&d.status),
                Cell::Plain(bool_text(d.late)),
                Cell::Text(d.last_error.as_deref().unwrap_or("")),
                Cell::Plain(bool_text(d.live)),
            ],
        );
    }
    out
}

/// One row per command of the run, with [`CONTROL_COLUMNS`] as header; the
/// same form as [`deliveries_csv`].
pub fn control_log_csv(report: &AfterActionReport) -> String {
    let mut out = String::from("\u{feff}");
    csv_record(&mut out, CONTROL_COLUMNS.iter().map(|c| Cell::Plain(c)));
    for c in &report.control_log {
        let run = c.run.to_string();
        csv_record(
            &mut out,
            [
                Cell::Plain(&run),
                Cell::Plain(&c.at),
                Cell::Text(&c.command),
                Cell::Text(c.reason.as_deref().unwrap_or("")),
                Cell::Text(&c.source),
                Cell::Plain(bool_text(c.accepted)),
                Cell::Text(c.message.as_deref().unwrap_or("")),
            ],
        );
    }
    out
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote, a line
/// break or leading or trailing spaces, quotes doubled.
pub fn csv_field(value: &str) -> Cow<'_, str> {
    let needs_quotes =
        value.contains([',', '"', '\r', '\n']) || value.starts_with(' ') || value.ends_with(' ');
    if needs_quotes {
        Cow::Owned(format!("\"{}\"", value.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(value)
    }
}

/// Free text as a spreadsheet must show it rather than evaluate it: a value
/// starting with `=`, `+`, `-`, `@`, a tab or a carriage return gets a
/// leading `'` (OWASP's advice against formula injection).
pub fn spreadsheet_text(value: &str) -> Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// A CSV cell: our own text as it is, or text from outside (ids, reasons,
/// errors) guarded against formula injection.
enum Cell<'a> {
    Plain(&'a str),
    Text(&'a str),
}

fn csv_record<'a>(out: &mut String, cells: impl IntoIterator<Item = Cell<'a>>) {
    for (i, cell) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match cell {
            Cell::Plain(v) => out.push_str(&csv_field(v)),
            Cell::Text(v) => out.push_str(&csv_field(&spreadsheet_text(v))),
        }
    }
    out.push_str("\r\n");
}

fn bool_text(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::aar::fixtures::{control, input, row};
    use crate::report::aar::model::build;

    #[test]
    fn csv_fields_are_quoted_as_rfc_4180_says() {
        let check =
            |input: &str, expected: &str| assert_eq!(csv_field(input), expected, "{input:?}");
        check("plain", "plain");
        check("", "");
        check("a,b", "\"a,b\"");
        check("say \"hi\"", "\"say \"\"hi\"\"\"");
        check("two\nlines", "\"two\nlines\"");
        check("cr\r\nlf", "\"cr\r\nlf\"");
        check(" padded", "\" padded\"");
        check("T+05:32", "T+05:32");
        check("ünïcødé", "ünïcødé");
    }

    #[test]
    fn spreadsheet_text_never_starts_a_formula() {
        let check = |input: &str, expected: &str| {
            assert_eq!(spreadsheet_text(input), expected, "{input:?}")
        };
        check("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")");
        check("+1", "'+1");
        check("-2", "'-2");
        check("@SUM(A1)", "'@SUM(A1)");
        check("\tx", "'\tx");
        check("inject-001", "inject-001");
        check("a=b", "a=b");
    }

    #[test]
    fn csv_has_a_header_and_one_guarded_row_per_delivery() {
        let mut a = row("blue", "a", 10, "failed");
        a.last_error = Some("=cmd|' /C calc'!A0, \"quoted\"".into());
        let report = build(&input(
            vec![a],
            vec![control("pause", true, Some("line\nbreak"))],
        ));
        let csv = deliveries_csv(&report);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines.len(), 3, "{csv:?}");
        assert_eq!(lines[0], format!("\u{feff}{}", DELIVERY_COLUMNS.join(",")));
        assert_eq!(
            lines[1],
            "1,blue,Blue & co,a,news,T+00:10,10,,,,,,,,1,failed,false,\
             \"'=cmd|' /C calc'!A0, \"\"quoted\"\"\",false"
        );
        assert_eq!(lines[2], "");
        let log = control_log_csv(&report);
        assert_eq!(
            log,
            "\u{feff}run,at,command,reason,source,accepted,message\r\n\
             1,2024-01-15T10:05:32.123Z,pause,\"line\nbreak\",api:127.0.0.1,true,\r\n"
        );
    }
}
