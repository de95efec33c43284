//! What a run leaves behind: the delivery records as JSON (`--report`) and a
//! per-team summary for the terminal.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::core::{Counts, DeliveryRecord};
use crate::mqtt::wire::timestamp;
use crate::runtime::run::Outcome;

/// The `--report` file.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub exercise_id: &'a str,
    pub scenario: Option<&'a str>,
    pub state: &'static str,
    pub speed: f64,
    pub duration: u32,
    pub started_at: Option<String>,
    pub run: u16,
    pub counts: Counts,
    pub deliveries: Vec<DeliveryRow<'a>>,
    /// Runs before a reset.
    pub archived_runs: Vec<ArchivedRunRow<'a>>,
}

#[derive(Debug, Serialize)]
pub struct ArchivedRunRow<'a> {
    pub run: u16,
    pub deliveries: Vec<DeliveryRow<'a>>,
}

/// One delivery record.
#[derive(Debug, Serialize)]
pub struct DeliveryRow<'a> {
    pub team_id: &'a str,
    pub inject_id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub due_exercise_time: u32,
    pub due_formatted: String,
    pub due_at: Option<String>,
    pub status: &'static str,
    pub attempts: u32,
    pub published_at: Option<String>,
    pub acknowledged_at: Option<String>,
    pub latency_ms: Option<f64>,
    pub late: bool,
    pub last_error: Option<&'a str>,
}

impl<'a> Report<'a> {
    pub fn new(outcome: &'a Outcome) -> Self {
        // Slots of the scenario's own injects are the same in every run;
        // injects sent live are named only for the current run.
        let base = outcome
            .scenario
            .teams
            .iter()
            .map(|t| t.timeline.injects.len())
            .sum::<usize>();
        let rows = |records: &'a [DeliveryRecord], current: bool| -> Vec<DeliveryRow<'a>> {
            let mut rows: Vec<_> = records
                .iter()
                .enumerate()
                .map(|(slot, r)| {
                    let names = match outcome.names.get(slot) {
                        Some(n) if current || slot < base => n,
                        _ => &UNKNOWN,
                    };
                    row(names, r)
                })
                .collect();
            rows.sort_by_key(|r| r.due_exercise_time);
            rows
        };
        Self {
            exercise_id: outcome.exercise_id.as_str(),
            scenario: outcome.scenario.name.as_deref(),
            state: outcome.state.as_str(),
            speed: outcome.speed.get(),
            duration: outcome.scenario.duration.get(),
            started_at: outcome.started_wall.map(timestamp),
            run: outcome.run,
            counts: Counts::of(&outcome.records),
            deliveries: rows(&outcome.records, true),
            archived_runs: outcome
                .archived
                .iter()
                .map(|a| ArchivedRunRow {
                    run: a.run,
                    deliveries: rows(&a.records, false),
                })
                .collect(),
        }
    }

    /// Writes the report atomically: a temporary file renamed into place.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, path)
    }
}

fn row<'a>(names: &'a (String, String, String), r: &'a DeliveryRecord) -> DeliveryRow<'a> {
    DeliveryRow {
        team_id: &names.0,
        inject_id: &names.1,
        kind: &names.2,
        due_exercise_time: r.due.get(),
        due_formatted: r.due.to_string(),
        due_at: r.due_wall.map(timestamp),
        status: r.status.as_str(),
        attempts: r.attempts,
        published_at: r.published_wall.map(timestamp),
        acknowledged_at: r.acked_wall.map(timestamp),
        latency_ms: r.latency.map(|l| (l.as_secs_f64() * 1e6).round() / 1000.0),
        late: r.late,
        last_error: r.last_error.as_deref(),
    }
}

static UNKNOWN: (String, String, String) = (String::new(), String::new(), String::new());

/// A table of deliveries per team.
pub fn summary(outcome: &Outcome) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "exercise {} {}: {} deliveries",
        outcome.exercise_id,
        outcome.state,
        outcome.records.len()
    );
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>10} {:>6} {:>7} {:>10} {:>9} {:>12} {:>12}",
        "team",
        "injects",
        "delivered",
        "late",
        "failed",
        "cancelled",
        "pending",
        "avg ms",
        "max ms"
    );
    for (i, team) in outcome.scenario.teams.iter().enumerate() {
        let records: Vec<&DeliveryRecord> =
            outcome.records.iter().filter(|r| r.team == i).collect();
        let c = Counts::of(records.iter().copied());
        let max = records
            .iter()
            .filter_map(|r| r.latency)
            .max()
            .map_or(0.0, |l| l.as_secs_f64() * 1000.0);
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:>10} {:>6} {:>7} {:>10} {:>9} {:>12.3} {:>12.3}",
            team.id.as_str(),
            c.scheduled,
            c.delivered,
            c.late,
            c.failed,
            c.cancelled,
            c.pending + c.retrying,
            c.average_latency_ms,
            max
        );
    }
    out
}
