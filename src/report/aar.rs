//! The after-action report of one run of an exercise: every delivery with its
//! planned and actual times, a summary per team and overall, and the control
//! log; as JSON, as CSV (deliveries and control log, one table each) and as a
//! self-contained HTML page with a chart per team.
//!
//! Pure functions: [`build`] turns store rows and exercise metadata into an
//! [`AfterActionReport`]; [`deliveries_csv`], [`control_log_csv`] and [`html`]
//! render it. Nothing here reads a clock or does I/O.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;
use utoipa::ToSchema;

use crate::mqtt::wire::timestamp;
use crate::runtime::exercise::{DeliveryView, from_wall_ms, wall_ms};
use crate::scenario::Scenario;
use crate::store::{ControlRow, DeliveryRow};

/// The number of an exercise's first run; every accepted reset starts the next.
pub const FIRST_RUN: i64 = 1;

/// Percentile of lateness and receipt latency in the summaries.
pub const PERCENTILE: f64 = 95.0;

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

/// What a report is made of: the exercise as stored, the run's delivery rows
/// and the exercise's whole control log.
#[derive(Debug, Clone)]
pub struct Input {
    pub exercise_id: String,
    pub name: Option<String>,
    /// The exercise's state now.
    pub state: String,
    /// Exercise seconds per wall second.
    pub speed: f64,
    pub duration_secs: i64,
    pub current_run: i64,
    /// The run reported on.
    pub run: i64,
    /// In scenario order; a team without deliveries is listed too.
    pub teams: Vec<ReportTeam>,
    /// The run's delivery records.
    pub deliveries: Vec<Delivery>,
    /// Every command given to the exercise, every run, oldest first.
    pub control_log: Vec<ControlRow>,
    /// When the report is made.
    pub generated_wall_ms: i64,
}

/// A team of the scenario.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReportTeam {
    pub id: String,
    pub name: Option<String>,
}

/// One delivery row with what the store does not keep beside it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub row: DeliveryRow,
    /// The inject's `type`.
    pub kind: String,
    /// Sent live through the API rather than from the scenario.
    pub live: bool,
}

/// The report: JSON as it is, and what the CSV and HTML forms show.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AfterActionReport {
    pub exercise: ReportExercise,
    pub summary: ReportSummary,
    /// Every delivery record of the run, by planned time, then team (scenario
    /// order), then inject.
    pub deliveries: Vec<ReportDelivery>,
    /// The commands given during the run, oldest first; the reset that ended
    /// it included.
    pub control_log: Vec<ReportControlEntry>,
}

/// The exercise and the run reported on.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReportExercise {
    pub id: String,
    pub name: Option<String>,
    /// The exercise's state now (not necessarily the run's last state, for
    /// an archived run).
    pub state: String,
    /// Exercise seconds per wall second.
    pub speed: f64,
    /// Duration in exercise seconds.
    pub duration: i64,
    #[schema(example = "T+45:00")]
    pub duration_formatted: String,
    /// The run reported on.
    pub run: i64,
    /// The exercise's run now; earlier runs are archived.
    pub current_run: i64,
    /// The run was ended by a reset.
    pub archived: bool,
    pub teams: Vec<ReportTeam>,
    #[schema(format = DateTime)]
    pub generated_at: String,
}

/// Delivery counts and timings, overall and per team.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReportSummary {
    pub overall: ReportStats,
    pub teams: Vec<ReportTeamStats>,
}

/// One team's summary.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReportTeamStats {
    pub team_id: String,
    pub team_name: Option<String>,
    #[serde(flatten)]
    pub stats: ReportStats,
}

/// Counts by outcome and the spread of lateness and receipt latency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ReportStats {
    /// Delivery records.
    pub scheduled: usize,
    /// Acknowledged by the broker.
    pub delivered: usize,
    /// Delivered within TIMER_PRECISION_MS of due.
    pub on_time: usize,
    /// Delivered later than TIMER_PRECISION_MS after due.
    pub late: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub skipped: usize,
    /// Not final yet: pending or retrying.
    pub outstanding: usize,
    /// Shown on a team dashboard.
    pub received: usize,
    /// Acknowledged minus due over the delivered.
    pub lateness_ms: ReportSpread,
    /// Shown minus due over the received.
    pub receipt_latency_ms: ReportSpread,
}

/// Mean, 95th percentile (nearest rank) and maximum of some milliseconds;
/// null when there are none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ReportSpread {
    pub mean: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
}

/// One delivery record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReportDelivery {
    pub team_id: String,
    pub inject_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Exercise second it was planned for (due).
    pub due_exercise_time: i64,
    /// The same as `T+mm:ss`.
    #[schema(example = "T+05:32")]
    pub planned: String,
    /// UTC time it came due.
    #[schema(format = DateTime)]
    pub due_at: Option<String>,
    /// UTC time of the last publish.
    #[schema(format = DateTime)]
    pub published_at: Option<String>,
    /// UTC time the broker acknowledged it.
    #[schema(format = DateTime)]
    pub acknowledged_at: Option<String>,
    /// UTC time a team dashboard showed it.
    #[schema(format = DateTime)]
    pub received_at: Option<String>,
    /// Exercise time it was delivered, in seconds: due seconds plus
    /// (acknowledged minus due wall time) times the speed.
    pub actual_exercise_time: Option<f64>,
    /// Acknowledged minus due (`latency_ms` of the delivery listing).
    pub lateness_ms: Option<f64>,
    /// Shown on a dashboard minus due.
    pub receipt_latency_ms: Option<f64>,
    pub attempts: i64,
    /// pending, delivered, retrying, failed, cancelled or skipped.
    pub status: String,
    pub late: bool,
    pub last_error: Option<String>,
    pub live: bool,
}

/// One command as the audit log recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReportControlEntry {
    /// The run it was given in.
    pub run: i64,
    #[schema(format = DateTime)]
    pub at: String,
    pub command: String,
    pub reason: Option<String>,
    /// `api:<client ip>`, `mqtt`, `signal` or `start-up`.
    pub source: String,
    pub accepted: bool,
    /// Why it was refused.
    pub message: Option<String>,
}

/// The report of `input.run`.
pub fn build(input: &Input) -> AfterActionReport {
    let team_order: HashMap<&str, usize> = input
        .teams
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut rows: Vec<&Delivery> = input.deliveries.iter().collect();
    rows.sort_by_key(|d| {
        (
            d.row.due_secs,
            team_order
                .get(d.row.team_id.as_str())
                .copied()
                .unwrap_or(usize::MAX),
            d.row.position,
        )
    });
    let deliveries: Vec<ReportDelivery> = rows.iter().map(|d| delivery(d, input.speed)).collect();

    // Teams of the scenario first, then any a record names that it lacks.
    let mut teams = input.teams.clone();
    for d in &deliveries {
        if !teams.iter().any(|t| t.id == d.team_id) {
            teams.push(ReportTeam {
                id: d.team_id.clone(),
                name: None,
            });
        }
    }
    let summary = ReportSummary {
        overall: stats(deliveries.iter()),
        teams: teams
            .iter()
            .map(|t| ReportTeamStats {
                team_id: t.id.clone(),
                team_name: t.name.clone(),
                stats: stats(deliveries.iter().filter(|d| d.team_id == t.id)),
            })
            .collect(),
    };
    let runs = control_runs(&input.control_log);
    let control_log = input
        .control_log
        .iter()
        .zip(runs)
        .filter(|(_, run)| *run == input.run)
        .map(|(c, run)| ReportControlEntry {
            run,
            at: timestamp(from_wall_ms(c.at_wall_ms)),
            command: c.command.clone(),
            reason: c.reason.clone(),
            source: c.source.clone(),
            accepted: c.accepted,
            message: c.message.clone(),
        })
        .collect();
    AfterActionReport {
        exercise: ReportExercise {
            id: input.exercise_id.clone(),
            name: input.name.clone(),
            state: input.state.clone(),
            speed: input.speed,
            duration: input.duration_secs,
            duration_formatted: planned(input.duration_secs),
            run: input.run,
            current_run: input.current_run,
            archived: input.run < input.current_run,
            teams,
            generated_at: timestamp(from_wall_ms(input.generated_wall_ms)),
        },
        summary,
        deliveries,
        control_log,
    }
}

/// The run each control log entry was given in: the first is
/// [`FIRST_RUN`], and an accepted reset belongs to the run it ended.
pub fn control_runs(log: &[ControlRow]) -> Vec<i64> {
    let mut run = FIRST_RUN;
    log.iter()
        .map(|c| {
            let this = run;
            if c.accepted && c.command == "reset" {
                run += 1;
            }
            this
        })
        .collect()
}

/// The delivery of a live exercise's current run as a store row.
pub fn from_view(exercise_id: &str, run: i64, position: usize, v: DeliveryView) -> Delivery {
    let r = v.record;
    Delivery {
        row: DeliveryRow {
            exercise_id: exercise_id.to_owned(),
            run,
            team_id: v.team_id,
            inject_id: v.inject_id,
            due_secs: i64::from(r.due.get()),
            status: r.status.as_str().to_owned(),
            attempts: i64::from(r.attempts),
            due_wall_ms: r.due_wall.map(wall_ms),
            published_wall_ms: r.published_wall.map(wall_ms),
            acked_wall_ms: r.acked_wall.map(wall_ms),
            received_wall_ms: r.received_wall.map(wall_ms),
            latency_ms: r.latency.map(|l| l.as_secs_f64() * 1000.0),
            late: r.late,
            last_error: r.last_error,
            position: position as i64,
            inject_json: None,
        },
        kind: v.kind,
        live: v.live,
    }
}

/// A stored delivery row, its `type` taken from the inject stored with it
/// (sent live) or else from `kinds` (the scenario's).
pub fn from_row(row: DeliveryRow, kinds: &HashMap<(String, String), String>) -> Delivery {
    let stored_kind = row.inject_json.as_deref().and_then(|json| {
        serde_json::from_str::<serde_json::Value>(json)
            .ok()?
            .get("type")?
            .as_str()
            .map(str::to_owned)
    });
    let live = row.inject_json.is_some();
    let kind = stored_kind
        .or_else(|| {
            kinds
                .get(&(row.team_id.clone(), row.inject_id.clone()))
                .cloned()
        })
        .unwrap_or_default();
    Delivery { row, kind, live }
}

/// The teams of a scenario, and the `type` of each (team, inject) of it.
pub fn scenario_parts(scenario: &Scenario) -> (Vec<ReportTeam>, HashMap<(String, String), String>) {
    let teams = scenario
        .teams
        .iter()
        .map(|t| ReportTeam {
            id: t.id.to_string(),
            name: t.name.clone(),
        })
        .collect();
    let kinds = scenario
        .teams
        .iter()
        .flat_map(|t| {
            t.timeline
                .injects
                .iter()
                .map(move |i| ((t.id.to_string(), i.id.to_string()), i.kind.clone()))
        })
        .collect();
    (teams, kinds)
}

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

/// A self-contained page: inline CSS, inline SVG, no script, nothing fetched;
/// every string from the exercise escaped.
pub fn html(report: &AfterActionReport) -> String {
    let e = &report.exercise;
    let title = format!(
        "After-action report: {} (run {})",
        e.name.as_deref().unwrap_or(&e.id),
        e.run
    );
    let mut out = String::with_capacity(4096 + report.deliveries.len() * 600);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape_html(&title),
        escape_html(&title)
    );
    let run_note = if e.archived {
        format!(
            "{} (archived; the exercise is on run {})",
            e.run, e.current_run
        )
    } else {
        format!("{} (current)", e.run)
    };
    let _ = write!(out, "<dl class=\"meta\">");
    for (term, value) in [
        ("Exercise", e.id.as_str()),
        ("Run", run_note.as_str()),
        ("State now", e.state.as_str()),
        ("Duration", e.duration_formatted.as_str()),
        ("Speed", &format!("×{}", e.speed)),
        ("Generated", e.generated_at.as_str()),
    ] {
        let _ = write!(
            out,
            "<div><dt>{}</dt><dd>{}</dd></div>",
            escape_html(term),
            escape_html(value)
        );
    }
    out.push_str("</dl>\n");

    summary_table(&mut out, &report.summary);

    out.push_str(
        "<h2>Planned against actual delivery</h2>\n<p class=\"note\">Each dot is an inject: \
         across, the exercise time it was planned for; up, the exercise time the broker \
         acknowledged it (due time plus the wall-clock delay times the speed). On the dashed \
         diagonal it was on time; above it, late. Injects never delivered are marked on the \
         strip below the axis.</p>\n<div class=\"charts\">\n",
    );
    for t in &e.teams {
        let points: Vec<&ReportDelivery> = report
            .deliveries
            .iter()
            .filter(|d| d.team_id == t.id)
            .collect();
        let label = match &t.name {
            Some(name) => format!("{name} ({})", t.id),
            None => t.id.clone(),
        };
        let _ = write!(
            out,
            "<figure>\n{}<figcaption>{}</figcaption>\n</figure>\n",
            team_chart(&label, &points, e.duration),
            escape_html(&label)
        );
    }
    out.push_str(
        "</div>\n<p class=\"legend\"><span class=\"key ok\"></span>on time \
         <span class=\"key late\"></span>late <span class=\"key failed\"></span>failed \
         <span class=\"key cancelled\"></span>cancelled or skipped \
         <span class=\"key outstanding\"></span>not sent yet</p>\n",
    );

    deliveries_table(&mut out, &report.deliveries);
    control_table(&mut out, &report.control_log);
    out.push_str(
        "<p class=\"note\">Lateness: acknowledged by the broker minus due. Receipt latency: \
         shown on a team dashboard minus due. p95: 95th percentile, nearest rank. Times are \
         UTC.</p>\n</body>\n</html>\n",
    );
    out
}

/// `value` with `& < > " '` escaped, safe in HTML text and quoted attributes.
pub fn escape_html(value: &str) -> Cow<'_, str> {
    if !value.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 16);
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
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

/// The `p`th percentile of `values` by nearest rank (the smallest value with
/// at least p% of them at or below it); None when there are none.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The plot area of a team's chart and where exercise times fall on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chart {
    /// Planned exercise seconds at the right end of the x axis.
    pub x_max: f64,
    /// Delivery exercise seconds at the top of the y axis.
    pub y_max: f64,
}

impl Chart {
    pub const WIDTH: f64 = 640.0;
    pub const HEIGHT: f64 = 380.0;
    pub const LEFT: f64 = 72.0;
    pub const RIGHT: f64 = 604.0;
    pub const TOP: f64 = 16.0;
    pub const BOTTOM: f64 = 296.0;
    /// Where injects never delivered are marked, below the x axis.
    pub const STRIP: f64 = 336.0;

    /// A chart for injects planned up to `planned_max` and delivered up to
    /// `actual_max` exercise seconds, both axes ending on a whole tick.
    pub fn new(planned_max: f64, actual_max: f64) -> Self {
        let x_max = round_up(planned_max.max(1.0));
        let y_max = round_up(actual_max.max(x_max));
        Self { x_max, y_max }
    }

    /// The x coordinate of planned exercise second `secs`.
    pub fn x(&self, secs: f64) -> f64 {
        Self::LEFT + (Self::RIGHT - Self::LEFT) * (secs / self.x_max)
    }

    /// The y coordinate of delivery exercise second `secs`.
    pub fn y(&self, secs: f64) -> f64 {
        Self::BOTTOM - (Self::BOTTOM - Self::TOP) * (secs / self.y_max)
    }
}

/// Seconds between ticks for an axis up to `max` seconds: at most 8 ticks.
pub fn tick_step(max: f64) -> f64 {
    const STEPS: [f64; 14] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    ];
    STEPS
        .into_iter()
        .find(|s| max / s <= 8.0)
        .unwrap_or_else(|| (max / 8.0 / 3600.0).ceil() * 3600.0)
}

/// `T+mm:ss` of whole seconds.
pub fn planned(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "+" };
    let secs = secs.unsigned_abs();
    format!("T{sign}{:02}:{:02}", secs / 60, secs % 60)
}

/// `T+mm:ss.mmm` of fractional seconds.
pub fn exercise_time(secs: f64) -> String {
    let ms = (secs * 1000.0).round() as i64;
    let sign = if ms < 0 { "-" } else { "+" };
    let ms = ms.unsigned_abs();
    format!(
        "T{sign}{:02}:{:02}.{:03}",
        ms / 60_000,
        ms / 1000 % 60,
        ms % 1000
    )
}

// ---------------------------------------------------------------------------
// Helpers

const STYLE: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2430;margin:24px auto;max-width:1200px;padding:0 16px}\
h1{font-size:1.5rem;margin:0 0 .5rem}h2{font-size:1.15rem;margin:1.6rem 0 .5rem;border-bottom:1px solid #d6dbe3;padding-bottom:.2rem}\
.meta{display:flex;flex-wrap:wrap;gap:.4rem 1.6rem;margin:0}.meta div{display:flex;gap:.4rem}.meta dt{color:#5b6678}.meta dd{margin:0;font-weight:600}\
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border:1px solid #d6dbe3;padding:3px 6px;text-align:left;vertical-align:top}\
th{background:#eef1f5}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}tr.total td{font-weight:600;background:#f6f8fa}\
.s-delivered{color:#1b7f3b}.s-late{color:#b35c00;font-weight:600}.s-failed{color:#b3261e;font-weight:600}.s-cancelled,.s-skipped{color:#6b7280}\
.refused{color:#b3261e}.note{color:#5b6678;font-size:12px}.charts{display:flex;flex-wrap:wrap;gap:12px}\
figure{margin:0;border:1px solid #d6dbe3;border-radius:6px;padding:6px;flex:1 1 460px;max-width:640px}figcaption{text-align:center;font-weight:600}\
svg{width:100%;height:auto;font:11px system-ui,sans-serif}svg .axis{stroke:#1d2430;stroke-width:1}svg .grid{stroke:#e3e7ed;stroke-width:1}\
svg .diag{stroke:#8a94a6;stroke-dasharray:5 4;stroke-width:1}svg text{fill:#1d2430}svg .tick{text-anchor:middle}svg .ytick{text-anchor:end}\
svg .ok{fill:#1b7f3b}svg .late{fill:#e07b00}svg .failed{stroke:#b3261e;stroke-width:2.2;fill:none}\
svg .cancelled{stroke:#6b7280;stroke-width:2;fill:none}svg .outstanding{stroke:#6b7280;stroke-width:1.5;fill:#fff}\
.legend .key{display:inline-block;width:10px;height:10px;border-radius:50%;margin:0 4px 0 12px;vertical-align:middle}\
.key.ok{background:#1b7f3b}.key.late{background:#e07b00}.key.failed{background:#b3261e;border-radius:0}.key.cancelled{background:#6b7280;border-radius:0}\
.key.outstanding{border:1.5px solid #6b7280}\
@media print{body{margin:0;max-width:none}figure{break-inside:avoid}}";

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

fn delivery(d: &Delivery, speed: f64) -> ReportDelivery {
    let r = &d.row;
    let lateness_ms = r
        .latency_ms
        .or_else(|| match (r.acked_wall_ms, r.due_wall_ms) {
            (Some(acked), Some(due)) => Some((acked - due) as f64),
            _ => None,
        });
    let actual_exercise_time = r.acked_wall_ms.and_then(|acked| {
        let delay_ms = match r.due_wall_ms {
            Some(due) => (acked - due) as f64,
            None => lateness_ms?,
        };
        Some(r.due_secs as f64 + delay_ms / 1000.0 * speed)
    });
    let receipt_latency_ms = r.received_wall_ms.map(|shown| match r.due_wall_ms {
        Some(due) => (shown - due).max(0) as f64,
        None => 0.0,
    });
    let at = |ms: Option<i64>| ms.map(|ms| timestamp(from_wall_ms(ms)));
    ReportDelivery {
        team_id: r.team_id.clone(),
        inject_id: r.inject_id.clone(),
        kind: d.kind.clone(),
        due_exercise_time: r.due_secs,
        planned: planned(r.due_secs),
        due_at: at(r.due_wall_ms),
        published_at: at(r.published_wall_ms),
        acknowledged_at: at(r.acked_wall_ms),
        received_at: at(r.received_wall_ms),
        actual_exercise_time,
        lateness_ms,
        receipt_latency_ms,
        attempts: r.attempts,
        status: r.status.clone(),
        late: r.late,
        last_error: r.last_error.clone(),
        live: d.live,
    }
}

fn stats<'a>(deliveries: impl Iterator<Item = &'a ReportDelivery>) -> ReportStats {
    let mut s = ReportStats::default();
    let mut lateness = Vec::new();
    let mut receipt = Vec::new();
    for d in deliveries {
        s.scheduled += 1;
        match d.status.as_str() {
            "delivered" => {
                s.delivered += 1;
                if d.late {
                    s.late += 1;
                } else {
                    s.on_time += 1;
                }
                lateness.extend(d.lateness_ms);
            }
            "failed" => s.failed += 1,
            "cancelled" => s.cancelled += 1,
            "skipped" => s.skipped += 1,
            _ => s.outstanding += 1,
        }
        if let Some(ms) = d.receipt_latency_ms {
            s.received += 1;
            receipt.push(ms);
        }
    }
    s.lateness_ms = spread(&lateness);
    s.receipt_latency_ms = spread(&receipt);
    s
}

fn spread(values: &[f64]) -> ReportSpread {
    if values.is_empty() {
        return ReportSpread::default();
    }
    ReportSpread {
        mean: Some(values.iter().sum::<f64>() / values.len() as f64),
        p95: percentile(values, PERCENTILE),
        max: values.iter().copied().reduce(f64::max),
    }
}

fn round_up(secs: f64) -> f64 {
    let step = tick_step(secs);
    (secs / step).ceil() * step
}

fn fmt_ms(ms: Option<f64>) -> String {
    ms.map_or_else(|| "–".to_owned(), |ms| format!("{ms:.1}"))
}

fn summary_table(out: &mut String, summary: &ReportSummary) {
    out.push_str(
        "<h2>Summary</h2>\n<table class=\"summary\">\n<thead><tr><th>Team</th>\
         <th class=\"num\">Scheduled</th><th class=\"num\">Delivered</th><th class=\"num\">On time</th>\
         <th class=\"num\">Late</th><th class=\"num\">Failed</th><th class=\"num\">Cancelled</th>\
         <th class=\"num\">Skipped</th><th class=\"num\">Not sent yet</th><th class=\"num\">Received</th>\
         <th class=\"num\">Mean lateness (ms)</th><th class=\"num\">p95 lateness (ms)</th>\
         <th class=\"num\">Max lateness (ms)</th><th class=\"num\">Mean receipt latency (ms)</th>\
         <th class=\"num\">p95 receipt latency (ms)</th><th class=\"num\">Max receipt latency (ms)</th>\
         </tr></thead>\n<tbody>\n",
    );
    let row = |out: &mut String, class: &str, label: &str, s: &ReportStats| {
        let _ = write!(out, "<tr class=\"{class}\"><td>{}</td>", escape_html(label));
        for n in [
            s.scheduled,
            s.delivered,
            s.on_time,
            s.late,
            s.failed,
            s.cancelled,
            s.skipped,
            s.outstanding,
            s.received,
        ] {
            let _ = write!(out, "<td class=\"num\">{n}</td>");
        }
        for ms in [
            s.lateness_ms.mean,
            s.lateness_ms.p95,
            s.lateness_ms.max,
            s.receipt_latency_ms.mean,
            s.receipt_latency_ms.p95,
            s.receipt_latency_ms.max,
        ] {
            let _ = write!(out, "<td class=\"num\">{}</td>", fmt_ms(ms));
        }
        out.push_str("</tr>\n");
    };
    for t in &summary.teams {
        let label = match &t.team_name {
            Some(name) => format!("{name} ({})", t.team_id),
            None => t.team_id.clone(),
        };
        row(out, "team", &label, &t.stats);
    }
    row(out, "total", "All teams", &summary.overall);
    out.push_str("</tbody>\n</table>\n");
}

fn team_chart(label: &str, deliveries: &[&ReportDelivery], duration: i64) -> String {
    let planned_max = deliveries
        .iter()
        .map(|d| d.due_exercise_time as f64)
        .fold(duration as f64, f64::max);
    let actual_max = deliveries
        .iter()
        .filter_map(|d| d.actual_exercise_time)
        .fold(0.0, f64::max);
    let c = Chart::new(planned_max, actual_max);
    let mut svg = String::with_capacity(2048 + deliveries.len() * 160);
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {} {}\" role=\"img\" \
         aria-label=\"{}\">",
        Chart::WIDTH,
        Chart::HEIGHT,
        escape_html(&format!(
            "{label}: planned against actual delivery exercise time"
        ))
    );
    // Grid, ticks and tick labels.
    let step = tick_step(c.x_max);
    let mut t = 0.0;
    while t <= c.x_max + 1e-9 {
        let x = c.x(t);
        let _ = writeln!(
            svg,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\">{}</text>",
            Chart::TOP,
            Chart::BOTTOM,
            Chart::BOTTOM + 16.0,
            planned(t as i64)
        );
        t += step;
    }
    let step = tick_step(c.y_max);
    let mut t = 0.0;
    while t <= c.y_max + 1e-9 {
        let y = c.y(t);
        let _ = writeln!(
            svg,
            "<line class=\"grid\" x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"ytick\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            Chart::LEFT,
            Chart::RIGHT,
            Chart::LEFT - 6.0,
            y + 4.0,
            planned(t as i64)
        );
        t += step;
    }
    // Axes, their titles, the on-time diagonal.
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{l}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>\
         <line class=\"axis\" x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{b}\"/>\n\
         <line class=\"diag\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>\n\
         <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\">Planned (exercise time)</text>\n\
         <text class=\"tick\" transform=\"translate(14 {:.1}) rotate(-90)\">Delivered (exercise time)</text>\n\
         <text class=\"ytick\" x=\"{:.1}\" y=\"{:.1}\">not sent</text>\n",
        c.x(0.0),
        c.y(0.0),
        c.x(c.x_max),
        c.y(c.x_max),
        (Chart::LEFT + Chart::RIGHT) / 2.0,
        Chart::HEIGHT - 6.0,
        (Chart::TOP + Chart::BOTTOM) / 2.0,
        Chart::LEFT - 10.0,
        Chart::STRIP + 4.0,
        l = Chart::LEFT,
        r = Chart::RIGHT,
        t = Chart::TOP,
        b = Chart::BOTTOM,
    );
    for d in deliveries {
        let x = c.x(d.due_exercise_time as f64);
        let lateness = d
            .lateness_ms
            .map_or_else(String::new, |ms| format!(", {ms:.1} ms late"));
        match (d.status.as_str(), d.actual_exercise_time) {
            ("delivered", Some(actual)) => {
                let tip = format!(
                    "{}: planned {}, delivered {}{lateness}",
                    d.inject_id,
                    d.planned,
                    exercise_time(actual)
                );
                let _ = writeln!(
                    svg,
                    "<circle class=\"{}\" cx=\"{x:.1}\" cy=\"{:.1}\" r=\"4\"><title>{}</title></circle>",
                    if d.late { "late" } else { "ok" },
                    c.y(actual),
                    escape_html(&tip)
                );
            }
            (status, _) => {
                let class = match status {
                    "failed" => "failed",
                    "cancelled" | "skipped" => "cancelled",
                    _ => "outstanding",
                };
                let error = d
                    .last_error
                    .as_deref()
                    .map_or_else(String::new, |e| format!(" ({e})"));
                let tip = format!("{}: planned {}, {status}{error}", d.inject_id, d.planned);
                let y = Chart::STRIP;
                if class == "outstanding" {
                    let _ = writeln!(
                        svg,
                        "<circle class=\"outstanding\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\"><title>{}</title></circle>",
                        escape_html(&tip)
                    );
                } else {
                    let _ = writeln!(
                        svg,
                        "<path class=\"{class}\" d=\"M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}\"><title>{}</title></path>",
                        x - 4.5,
                        y - 4.5,
                        x + 4.5,
                        y + 4.5,
                        x + 4.5,
                        y - 4.5,
                        x - 4.5,
                        y + 4.5,
                        escape_html(&tip)
                    );
                }
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn deliveries_table(out: &mut String, deliveries: &[ReportDelivery]) {
    out.push_str(
        "<h2>Deliveries</h2>\n<table class=\"deliveries\">\n<thead><tr><th>Planned</th><th>Team</th>\
         <th>Inject</th><th>Type</th><th>Status</th><th>Due at</th><th>Sent at</th>\
         <th>Acknowledged at</th><th>Received at</th><th>Delivered (exercise time)</th>\
         <th class=\"num\">Lateness (ms)</th><th class=\"num\">Receipt latency (ms)</th>\
         <th class=\"num\">Attempts</th><th>Last error</th></tr></thead>\n<tbody>\n",
    );
    for d in deliveries {
        let late = d.status == "delivered" && d.late;
        let status_class = if late { "late" } else { d.status.as_str() };
        let mut status = d.status.clone();
        if late {
            status.push_str(", late");
        }
        if d.live {
            status.push_str(" (live)");
        }
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"s-{}\">{}</td>\
             {}{}{}{}<td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape_html(&d.planned),
            escape_html(&d.team_id),
            escape_html(&d.inject_id),
            escape_html(&d.kind),
            escape_html(status_class),
            escape_html(&status),
            time_cell(d.due_at.as_deref()),
            time_cell(d.published_at.as_deref()),
            time_cell(d.acknowledged_at.as_deref()),
            time_cell(d.received_at.as_deref()),
            d.actual_exercise_time
                .map_or_else(|| "–".to_owned(), exercise_time),
            fmt_ms(d.lateness_ms),
            fmt_ms(d.receipt_latency_ms),
            d.attempts,
            escape_html(d.last_error.as_deref().unwrap_or("")),
        );
    }
    if deliveries.is_empty() {
        out.push_str("<tr><td colspan=\"14\">No deliveries in this run.</td></tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

fn control_table(out: &mut String, log: &[ReportControlEntry]) {
    out.push_str(
        "<h2>Control log</h2>\n<table class=\"control\">\n<thead><tr><th>At</th><th>Command</th>\
         <th>Reason</th><th>Source</th><th>Accepted</th><th>Message</th></tr></thead>\n<tbody>\n",
    );
    for c in log {
        let _ = writeln!(
            out,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if c.accepted { "" } else { " class=\"refused\"" },
            escape_html(&c.at),
            escape_html(&c.command),
            escape_html(c.reason.as_deref().unwrap_or("")),
            escape_html(&c.source),
            if c.accepted { "yes" } else { "no" },
            escape_html(c.message.as_deref().unwrap_or("")),
        );
    }
    if log.is_empty() {
        out.push_str("<tr><td colspan=\"6\">No commands in this run.</td></tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

/// A table cell showing the time of day of a UTC timestamp
/// (`10:05:32.123`), the whole timestamp in its tooltip.
fn time_cell(iso: Option<&str>) -> String {
    match iso {
        Some(iso) => {
            let short = iso
                .split_once('T')
                .map_or(iso, |(_, t)| t.trim_end_matches('Z'));
            format!(
                "<td title=\"{}\">{}</td>",
                escape_html(iso),
                escape_html(short)
            )
        }
        None => "<td>–</td>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(team: &str, inject: &str, due: i64, status: &str) -> DeliveryRow {
        DeliveryRow {
            exercise_id: "ex".into(),
            run: 1,
            team_id: team.into(),
            inject_id: inject.into(),
            due_secs: due,
            status: status.into(),
            attempts: 1,
            due_wall_ms: None,
            published_wall_ms: None,
            acked_wall_ms: None,
            received_wall_ms: None,
            latency_ms: None,
            late: false,
            last_error: None,
            position: 0,
            inject_json: None,
        }
    }

    fn control(command: &str, accepted: bool, reason: Option<&str>) -> ControlRow {
        ControlRow {
            id: 0,
            exercise_id: "ex".into(),
            at_wall_ms: 1_705_313_132_123,
            command: command.into(),
            reason: reason.map(Into::into),
            source: "api:127.0.0.1".into(),
            accepted,
            message: None,
        }
    }

    fn input(deliveries: Vec<DeliveryRow>, control_log: Vec<ControlRow>) -> Input {
        Input {
            exercise_id: "ex".into(),
            name: Some("Drill <1>".into()),
            state: "completed".into(),
            speed: 10.0,
            duration_secs: 600,
            current_run: 1,
            run: 1,
            teams: vec![
                ReportTeam {
                    id: "blue".into(),
                    name: Some("Blue & co".into()),
                },
                ReportTeam {
                    id: "red".into(),
                    name: None,
                },
            ],
            deliveries: deliveries
                .into_iter()
                .map(|row| Delivery {
                    row,
                    kind: "news".into(),
                    live: false,
                })
                .collect(),
            control_log,
            generated_wall_ms: 1_705_313_200_000,
        }
    }

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
    fn html_escapes_every_special_character() {
        let check =
            |input: &str, expected: &str| assert_eq!(escape_html(input), expected, "{input:?}");
        check("plain text", "plain text");
        check(
            "<script>alert(1)</script>",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
        );
        check("a & b", "a &amp; b");
        check("\"quoted\" 'single'", "&quot;quoted&quot; &#39;single&#39;");
        check("&amp;", "&amp;amp;");
        check("", "");
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let check = |values: &[f64], p: f64, expected: Option<f64>| {
            assert_eq!(percentile(values, p), expected, "{values:?} p{p}")
        };
        check(&[], 95.0, None);
        check(&[7.0], 95.0, Some(7.0));
        check(&[3.0, 1.0, 2.0], 50.0, Some(2.0));
        check(&[1.0, 2.0, 3.0, 4.0], 50.0, Some(2.0));
        let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        check(&hundred, 95.0, Some(95.0));
        check(&hundred, 100.0, Some(100.0));
        check(&hundred, 0.0, Some(1.0));
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        check(&twenty, 95.0, Some(19.0));
        check(
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 1000.0],
            95.0,
            Some(1000.0),
        );
    }

    #[test]
    fn chart_coordinates_put_exercise_times_on_the_plot_area() {
        let check = |chart: Chart, (planned, actual): (f64, f64), (x, y): (f64, f64)| {
            let got = (chart.x(planned), chart.y(actual));
            assert!(
                (got.0 - x).abs() < 1e-9 && (got.1 - y).abs() < 1e-9,
                "{chart:?} ({planned}, {actual}): got {got:?}, expected ({x}, {y})"
            );
        };
        let square = Chart::new(600.0, 600.0);
        assert_eq!(
            square,
            Chart {
                x_max: 600.0,
                y_max: 600.0
            }
        );
        check(square, (0.0, 0.0), (Chart::LEFT, Chart::BOTTOM));
        check(square, (600.0, 600.0), (Chart::RIGHT, Chart::TOP));
        check(square, (300.0, 300.0), (338.0, 156.0));
        check(square, (150.0, 450.0), (205.0, 86.0));
        // A delivery later than the end stretches the y axis to a whole tick.
        let tall = Chart::new(600.0, 1000.0);
        assert_eq!(
            tall,
            Chart {
                x_max: 600.0,
                y_max: 1200.0
            }
        );
        check(tall, (600.0, 600.0), (Chart::RIGHT, 156.0));
        // Axes end on whole ticks, and never at zero.
        assert_eq!(
            Chart::new(45.0, 0.0),
            Chart {
                x_max: 50.0,
                y_max: 50.0
            }
        );
        assert_eq!(
            Chart::new(0.0, 0.0),
            Chart {
                x_max: 1.0,
                y_max: 1.0
            }
        );
    }

    #[test]
    fn tick_steps_keep_axes_readable() {
        let check = |max: f64, expected: f64| assert_eq!(tick_step(max), expected, "{max}");
        check(1.0, 1.0);
        check(8.0, 1.0);
        check(9.0, 2.0);
        check(60.0, 10.0);
        check(600.0, 120.0);
        check(2700.0, 600.0);
        check(7200.0, 900.0);
        check(100_000.0, 14_400.0);
    }

    #[test]
    fn exercise_times_read_as_the_clock_does() {
        let check = |secs: i64, expected: &str| assert_eq!(planned(secs), expected);
        check(0, "T+00:00");
        check(332, "T+05:32");
        check(3900, "T+65:00");
        let check = |secs: f64, expected: &str| assert_eq!(exercise_time(secs), expected);
        check(332.0, "T+05:32.000");
        check(61.2346, "T+01:01.235");
        check(59.9996, "T+01:00.000");
    }

    #[test]
    fn deliveries_get_their_actual_exercise_time_and_the_summary_its_figures() {
        let mut a = row("blue", "a", 10, "delivered");
        a.due_wall_ms = Some(1_000_000);
        a.published_wall_ms = Some(1_000_001);
        a.acked_wall_ms = Some(1_000_002);
        a.latency_ms = Some(2.5);
        a.received_wall_ms = Some(1_000_040);
        let mut b = row("blue", "b", 20, "delivered");
        b.due_wall_ms = Some(2_000_000);
        b.acked_wall_ms = Some(2_003_000);
        b.latency_ms = Some(3000.0);
        b.late = true;
        let mut c = row("red", "c", 10, "failed");
        c.due_wall_ms = Some(1_000_000);
        c.attempts = 3;
        c.last_error = Some("no acknowledgement within 5000 ms".into());
        let d = row("red", "d", 30, "cancelled");
        let e = row("red", "e", 40, "pending");
        let report = build(&input(vec![e, d, c, b, a], vec![]));
        let ids: Vec<&str> = report
            .deliveries
            .iter()
            .map(|d| d.inject_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "c", "b", "d", "e"], "by due time, then team");
        let a = &report.deliveries[0];
        assert_eq!(a.planned, "T+00:10");
        assert_eq!(a.due_at.as_deref(), Some("1970-01-01T00:16:40.000Z"));
        let actual = a.actual_exercise_time.unwrap();
        assert!(
            (actual - 10.02).abs() < 1e-9,
            "2 ms late at speed 10: {actual}"
        );
        assert_eq!(a.lateness_ms, Some(2.5));
        assert_eq!(a.receipt_latency_ms, Some(40.0));
        let b = &report.deliveries[2];
        assert_eq!(b.actual_exercise_time, Some(50.0), "3 s late at speed 10");

        let blue = &report.summary.teams[0];
        assert_eq!(blue.team_id, "blue");
        assert_eq!(blue.team_name.as_deref(), Some("Blue & co"));
        assert_eq!(
            blue.stats,
            ReportStats {
                scheduled: 2,
                delivered: 2,
                on_time: 1,
                late: 1,
                received: 1,
                lateness_ms: ReportSpread {
                    mean: Some(1501.25),
                    p95: Some(3000.0),
                    max: Some(3000.0)
                },
                receipt_latency_ms: ReportSpread {
                    mean: Some(40.0),
                    p95: Some(40.0),
                    max: Some(40.0)
                },
                ..ReportStats::default()
            }
        );
        let red = &report.summary.teams[1].stats;
        assert_eq!(
            (red.scheduled, red.failed, red.cancelled, red.outstanding),
            (3, 1, 1, 1)
        );
        assert_eq!(red.lateness_ms, ReportSpread::default());
        let all = &report.summary.overall;
        assert_eq!((all.scheduled, all.delivered, all.late), (5, 2, 1));
    }

    #[test]
    fn control_entries_belong_to_the_run_they_were_given_in() {
        let log = vec![
            control("start", true, None),
            control("reset", false, None),
            control("pause", true, Some("coffee")),
            control("reset", true, Some("false start")),
            control("start", true, None),
            control("reset", true, None),
        ];
        assert_eq!(control_runs(&log), [1, 1, 1, 1, 2, 2]);
        let mut archived = input(vec![], log.clone());
        archived.current_run = 3;
        let report = build(&archived);
        assert!(report.exercise.archived);
        let commands: Vec<&str> = report
            .control_log
            .iter()
            .map(|c| c.command.as_str())
            .collect();
        assert_eq!(commands, ["start", "reset", "pause", "reset"]);
        assert_eq!(report.control_log[2].reason.as_deref(), Some("coffee"));
        assert_eq!(report.control_log[0].at, "2024-01-15T10:05:32.123Z");
        archived.run = 3;
        assert!(build(&archived).control_log.is_empty());
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

    #[test]
    fn html_is_self_contained_and_escaped() {
        let mut a = row("blue", "<b>a</b>", 10, "delivered");
        a.due_wall_ms = Some(1_000_000);
        a.acked_wall_ms = Some(1_000_001);
        a.latency_ms = Some(1.0);
        let b = row("red", "b", 20, "failed");
        let page = html(&build(&input(
            vec![a, b],
            vec![control("pause", true, Some("<script>x</script>"))],
        )));
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("Drill &lt;1&gt;"), "the title is escaped");
        assert!(page.contains("&lt;b&gt;a&lt;/b&gt;"));
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(!page.contains("<script"), "no script, and none smuggled in");
        assert!(!page.contains("<b>"));
        assert_eq!(page.matches("<svg").count(), 2, "one chart per team");
        assert!(page.contains("Planned (exercise time)"));
        assert!(page.contains("Delivered (exercise time)"));
        assert!(
            page.contains("<path class=\"failed\""),
            "a failed inject is marked"
        );
        for external in ["src=", "href=", "url(", "@import"] {
            assert!(
                !page.contains(external),
                "{external} in a self-contained page"
            );
        }
    }
}
