//! The report's model: what it is made of ([`Input`]), what it says
//! ([`AfterActionReport`]) and how the one becomes the other.

use std::collections::HashMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::mqtt::wire::timestamp;
use crate::runtime::exercise::from_wall_ms;
use crate::store::{ControlRow, DeliveryRow, PlayRow};

use super::play::{ReportPlay, build_play};

/// The number of an exercise's first run; every accepted reset starts the next.
pub const FIRST_RUN: i64 = 1;

/// Percentile of lateness and receipt latency in the summaries.
pub const PERCENTILE: f64 = 95.0;

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
    /// The run's responses, posts, scores and decisions, oldest first.
    pub plays: Vec<PlayRow>,
    /// The scenario's objectives: (id, title).
    pub objectives: Vec<(String, String)>,
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
    /// Two-way play: responses, outcomes, the scorecard, decisions, posts.
    pub play: ReportPlay,
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
    /// Sent while no dashboard of the team was open: its receipt, if any,
    /// is not counted in the receipt latency.
    pub not_watched: usize,
    /// Acknowledged minus due over the delivered.
    pub lateness_ms: ReportSpread,
    /// Shown minus due over the received that were watched.
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
    /// Exercise time it was delivered, in seconds: due seconds (for one
    /// delivered by a seek, the second the seek jumped to) plus
    /// (acknowledged minus due wall time) times the speed.
    pub actual_exercise_time: Option<f64>,
    /// Sent at once by a seek that passed over its due time.
    pub delivered_by_seek: bool,
    /// Acknowledged minus due (`latency_ms` of the delivery listing).
    pub lateness_ms: Option<f64>,
    /// Whether a dashboard of the team was open when it first went out.
    pub watched: Option<bool>,
    /// Shown on a dashboard minus due; only for what was watched.
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
    /// Why it was refused, or what an edit did.
    pub message: Option<String>,
    /// The exercise second it took effect at (a seek: the second it jumped
    /// to); null for entries stored before it was kept.
    pub exercise_time: Option<i64>,
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
    let runs = control_runs(&input.control_log);
    let run_log: Vec<&ControlRow> = input
        .control_log
        .iter()
        .zip(&runs)
        .filter(|(_, run)| **run == input.run)
        .map(|(c, _)| c)
        .collect();
    let deliveries: Vec<ReportDelivery> = rows
        .iter()
        .map(|d| delivery(d, input.speed, seek_of(&d.row, &run_log)))
        .collect();

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
    let control_log = run_log
        .into_iter()
        .map(|c| ReportControlEntry {
            run: input.run,
            at: timestamp(from_wall_ms(c.at_wall_ms)),
            command: c.command.clone(),
            reason: c.reason.clone(),
            source: c.source.clone(),
            accepted: c.accepted,
            message: c.message.clone(),
            exercise_time: c.exercise_secs,
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
        play: build_play(input),
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

/// The exercise second an accepted seek of the run jumped to, when `r` was
/// sent by it: passed over (due before that second), and sent at that
/// second no earlier than the seek.
fn seek_of(r: &DeliveryRow, log: &[&ControlRow]) -> Option<i64> {
    log.iter().find_map(|c| {
        let to = c.exercise_secs?;
        let by_it = c.accepted
            && c.command == "seek"
            && r.due_secs < to
            && r.sent_secs == Some(to)
            && r.published_wall_ms.is_some_and(|sent| sent >= c.at_wall_ms);
        by_it.then_some(to)
    })
}

fn delivery(d: &Delivery, speed: f64, seek: Option<i64>) -> ReportDelivery {
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
        Some(seek.unwrap_or(r.due_secs) as f64 + delay_ms / 1000.0 * speed)
    });
    let receipt_latency_ms = r
        .received_wall_ms
        .filter(|_| r.watched == Some(true))
        .map(|shown| match r.due_wall_ms {
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
        delivered_by_seek: seek.is_some(),
        lateness_ms,
        watched: r.watched,
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
        s.received += usize::from(d.received_at.is_some());
        s.not_watched += usize::from(d.watched == Some(false));
        receipt.extend(d.receipt_latency_ms);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::aar::fixtures::{control, input, row};

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
        a.watched = Some(true);
        let mut b = row("blue", "b", 20, "delivered");
        b.due_wall_ms = Some(2_000_000);
        b.acked_wall_ms = Some(2_003_000);
        b.latency_ms = Some(3000.0);
        b.late = true;
        // Shown, but opened long after it went out: not a latency.
        b.received_wall_ms = Some(2_028_000);
        b.watched = Some(false);
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
        assert_eq!(b.receipt_latency_ms, None, "nobody watched it go out");
        assert!(!b.delivered_by_seek);

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
                received: 2,
                not_watched: 1,
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
    fn injects_a_seek_sent_are_placed_where_the_clock_jumped_to() {
        let mut seek = control("seek", true, None);
        seek.at_wall_ms = 5_000_000;
        seek.exercise_secs = Some(400);
        let mut pause = control("pause", true, None);
        pause.exercise_secs = Some(30);
        let passed = |inject: &str, due: i64| {
            let mut r = row("blue", inject, due, "delivered");
            r.due_wall_ms = Some(5_000_000);
            r.published_wall_ms = Some(5_000_000);
            r.acked_wall_ms = Some(5_000_003);
            r.latency_ms = Some(3.0);
            r.sent_secs = Some(400);
            r
        };
        let mut on_time = row("blue", "d", 10, "delivered");
        on_time.due_wall_ms = Some(1_000_000);
        on_time.published_wall_ms = Some(1_000_000);
        on_time.acked_wall_ms = Some(1_000_001);
        on_time.latency_ms = Some(1.0);
        on_time.sent_secs = Some(10);
        let report = build(&input(
            vec![passed("a", 60), passed("b", 120), passed("c", 300), on_time],
            vec![pause, seek],
        ));
        let by_id = |id: &str| {
            report
                .deliveries
                .iter()
                .find(|d| d.inject_id == id)
                .unwrap()
        };
        for id in ["a", "b", "c"] {
            let d = by_id(id);
            assert!(d.delivered_by_seek, "{id}");
            let actual = d.actual_exercise_time.unwrap();
            // 3 ms at speed 10: 30 ms of exercise time after T+6:40.
            assert!((actual - 400.03).abs() < 1e-9, "{id}: {actual}");
            assert_eq!(d.lateness_ms, Some(3.0));
        }
        let d = by_id("d");
        assert!(!d.delivered_by_seek);
        assert!((d.actual_exercise_time.unwrap() - 10.01).abs() < 1e-9);
        let commands: Vec<(&str, Option<i64>)> = report
            .control_log
            .iter()
            .map(|c| (c.command.as_str(), c.exercise_time))
            .collect();
        assert_eq!(commands, [("pause", Some(30)), ("seek", Some(400))]);
    }
}
