//! The SVG chart of a team: each inject's lateness, on a scale of its own,
//! at the exercise time it was sent, with the control actions of the run.

use maud::{Markup, html as markup};

use super::model::{ReportControlEntry, ReportDelivery, exercise_time, planned};

/// The plot area of a team's chart: exercise time across, lateness up on a
/// logarithmic scale (so 3 ms and 3 s both show), one decade per gridline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chart {
    /// Exercise seconds at the right end of the x axis.
    pub x_max: f64,
    /// The power of ten (of milliseconds) at the bottom of the y axis;
    /// anything less is drawn on it.
    pub y_min_exp: i32,
    /// The power of ten (of milliseconds) at the top of the y axis.
    pub y_max_exp: i32,
}

impl Chart {
    pub const WIDTH: f64 = 640.0;
    pub const HEIGHT: f64 = 380.0;
    pub const LEFT: f64 = 72.0;
    pub const RIGHT: f64 = 604.0;
    pub const TOP: f64 = 40.0;
    pub const BOTTOM: f64 = 296.0;
    /// Where injects never delivered are marked, below the x axis.
    pub const STRIP: f64 = 336.0;
    /// The lowest lateness the y axis shows apart: 0.1 ms.
    pub const Y_MIN_EXP: i32 = -1;

    /// A chart of exercise times up to `x_extent` seconds (ending on a
    /// whole tick) and lateness up to `max_lateness_ms` (ending on a power
    /// of ten, at least 10 ms).
    pub fn new(x_extent: f64, max_lateness_ms: f64) -> Self {
        let x_max = round_up(x_extent.max(1.0));
        let top = max_lateness_ms.max(10.0).log10().ceil() as i32;
        Self {
            x_max,
            y_min_exp: Self::Y_MIN_EXP,
            y_max_exp: top.max(Self::Y_MIN_EXP + 1),
        }
    }

    /// The x coordinate of exercise second `secs`.
    pub fn x(&self, secs: f64) -> f64 {
        Self::LEFT + (Self::RIGHT - Self::LEFT) * (secs / self.x_max)
    }

    /// The y coordinate of a lateness of `ms` milliseconds.
    pub fn y(&self, ms: f64) -> f64 {
        let low = f64::from(self.y_min_exp);
        let span = f64::from(self.y_max_exp) - low;
        let v = ms.max(10f64.powi(self.y_min_exp)).log10();
        Self::BOTTOM - (Self::BOTTOM - Self::TOP) * ((v - low) / span).min(1.0)
    }
}

/// How an inject shows on the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Delivered within the precision: a green dot.
    OnTime,
    /// Delivered late: an orange dot.
    Late,
    /// Sent at once by a seek that passed over its due time: a diamond at
    /// the second the clock jumped to.
    Seek,
    /// On the strip below the axis, at its planned time.
    Failed,
    Cancelled,
    Outstanding,
}

impl Mark {
    fn class(self) -> &'static str {
        match self {
            Mark::OnTime => "ok",
            Mark::Late => "late",
            Mark::Seek => "seek",
            Mark::Failed => "failed",
            Mark::Cancelled => "cancelled",
            Mark::Outstanding => "outstanding",
        }
    }
}

/// One inject as the chart places it.
#[derive(Debug, Clone)]
pub struct ChartPoint<'a> {
    pub delivery: &'a ReportDelivery,
    /// Across: the exercise second it was delivered at, or for one never
    /// delivered, planned for.
    pub at: f64,
    /// Up: acknowledged minus due, for one delivered.
    pub lateness_ms: Option<f64>,
    pub mark: Mark,
}

/// Where each of `deliveries` goes on the chart.
pub fn points<'a>(deliveries: &[&'a ReportDelivery]) -> Vec<ChartPoint<'a>> {
    deliveries
        .iter()
        .map(|&d| match (d.status.as_str(), d.actual_exercise_time) {
            ("delivered", Some(actual)) => ChartPoint {
                delivery: d,
                at: actual,
                lateness_ms: Some(d.lateness_ms.unwrap_or(0.0).max(0.0)),
                mark: if d.delivered_by_seek {
                    Mark::Seek
                } else if d.late {
                    Mark::Late
                } else {
                    Mark::OnTime
                },
            },
            (status, _) => ChartPoint {
                delivery: d,
                at: d.due_exercise_time as f64,
                lateness_ms: None,
                mark: match status {
                    "failed" => Mark::Failed,
                    "cancelled" | "skipped" => Mark::Cancelled,
                    _ => Mark::Outstanding,
                },
            },
        })
        .collect()
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

/// A power of ten of milliseconds as the y axis labels it.
pub fn ms_label(exp: i32) -> String {
    match exp {
        ..0 => format!("{} ms", 10f64.powi(exp)),
        0..3 => format!("{} ms", 10i64.pow(exp as u32)),
        _ => format!("{} s", 10i64.pow(exp as u32 - 3)),
    }
}

/// The chart of one team's deliveries and the run's control actions, as
/// inline SVG.
pub(super) fn team_chart(
    label: &str,
    deliveries: &[&ReportDelivery],
    control: &[ReportControlEntry],
    duration: i64,
) -> Markup {
    let points = points(deliveries);
    let x_extent = points
        .iter()
        .map(|p| p.at)
        .chain(
            control
                .iter()
                .filter_map(|c| c.exercise_time)
                .map(|t| t as f64),
        )
        .fold(duration as f64, f64::max);
    let max_lateness = points
        .iter()
        .filter_map(|p| p.lateness_ms)
        .fold(0.0, f64::max);
    let c = Chart::new(x_extent, max_lateness);
    let (l, r, t, b) = (Chart::LEFT, Chart::RIGHT, Chart::TOP, Chart::BOTTOM);
    markup! {
        svg xmlns="http://www.w3.org/2000/svg"
            viewBox={ "0 0 " (Chart::WIDTH) " " (Chart::HEIGHT) }
            role="img"
            aria-label={ (label) ": lateness of each inject at the exercise time it was sent" } {
            // Grid, ticks and tick labels.
            @for tick in ticks(c.x_max) {
                @let x = px(c.x(tick));
                line class="grid" x1=(x) y1=(px(t)) x2=(x) y2=(px(b)) {}
                text class="tick" x=(x) y=(px(b + 16.0)) { (planned(tick as i64)) }
            }
            @for exp in c.y_min_exp..=c.y_max_exp {
                @let y = c.y(10f64.powi(exp));
                line class="grid" x1=(px(l)) y1=(px(y)) x2=(px(r)) y2=(px(y)) {}
                text class="ytick" x=(px(l - 6.0)) y=(px(y + 4.0)) { (ms_label(exp)) }
            }
            line class="axis" x1=(l) y1=(b) x2=(r) y2=(b) {}
            line class="axis" x1=(l) y1=(t) x2=(l) y2=(b) {}
            text class="tick" x=(px((l + r) / 2.0)) y=(px(Chart::HEIGHT - 6.0)) {
                "Sent (exercise time)"
            }
            text class="tick" transform={ "translate(14 " (px((t + b) / 2.0)) ") rotate(-90)" } {
                "Lateness (log scale)"
            }
            text class="ytick" x=(px(l - 10.0)) y=(px(Chart::STRIP + 4.0)) { "not sent" }
            // The control actions: a dashed line at the second each took effect.
            @for (i, entry) in control.iter().enumerate() {
                @if let Some(at) = entry.exercise_time {
                    (control_marker(&c, i, at, entry))
                }
            }
            @for p in &points {
                (point(&c, p))
            }
        }
    }
}

/// A control action on the chart: a vertical line with its command above.
fn control_marker(c: &Chart, i: usize, at: i64, entry: &ReportControlEntry) -> Markup {
    let x = c.x(at as f64);
    let class = if entry.accepted {
        "control"
    } else {
        "control refused"
    };
    let mut tip = format!("{} at {}", entry.command, planned(at));
    if !entry.accepted {
        tip.push_str(" (refused)");
    }
    for extra in [&entry.reason, &entry.message].into_iter().flatten() {
        tip.push_str(": ");
        tip.push_str(extra);
    }
    // Labels of actions close together are staggered over three rows.
    let label_y = Chart::TOP - 26.0 + 9.0 * (i % 3) as f64;
    markup! {
        g class=(class) data-command=(entry.command) data-at=(at) {
            title { (tip) }
            line x1=(px(x)) y1=(px(Chart::TOP - 2.0)) x2=(px(x)) y2=(px(Chart::BOTTOM)) {}
            text x=(px(x + 2.0)) y=(px(label_y + 6.0)) { (entry.command) }
        }
    }
}

/// One inject on the chart: a dot (a diamond for one a seek sent) at its
/// lateness, or a mark on the strip below the axis, with a tooltip.
fn point(c: &Chart, p: &ChartPoint) -> Markup {
    let d = p.delivery;
    let x = c.x(p.at);
    let class = p.mark.class();
    match p.lateness_ms {
        Some(ms) => {
            let y = c.y(ms);
            let mut tip = format!(
                "{}: planned {}, sent {}, {ms:.1} ms late",
                d.inject_id,
                d.planned,
                exercise_time(p.at)
            );
            if p.mark == Mark::Seek {
                tip.push_str(" (delivered by the seek)");
            }
            let lateness = format!("{ms:.3}");
            if p.mark == Mark::Seek {
                let diamond = format!(
                    "M{:.1} {:.1}L{:.1} {:.1}L{:.1} {:.1}L{:.1} {:.1}Z",
                    x,
                    y - 5.5,
                    x + 5.5,
                    y,
                    x,
                    y + 5.5,
                    x - 5.5,
                    y
                );
                markup! {
                    path class=(class) d=(diamond) data-inject=(d.inject_id) data-lateness-ms=(lateness) {
                        title { (tip) }
                    }
                }
            } else {
                markup! {
                    circle class=(class) cx=(px(x)) cy=(px(y)) r="4"
                        data-inject=(d.inject_id) data-lateness-ms=(lateness) {
                        title { (tip) }
                    }
                }
            }
        }
        None => {
            let error = d
                .last_error
                .as_deref()
                .map_or_else(String::new, |e| format!(" ({e})"));
            let tip = format!(
                "{}: planned {}, {}{error}",
                d.inject_id, d.planned, d.status
            );
            let y = Chart::STRIP;
            if p.mark == Mark::Outstanding {
                markup! {
                    circle class=(class) cx=(px(x)) cy=(px(y)) r="4" data-inject=(d.inject_id) {
                        title { (tip) }
                    }
                }
            } else {
                let cross = format!(
                    "M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}",
                    x - 4.5,
                    y - 4.5,
                    x + 4.5,
                    y + 4.5,
                    x + 4.5,
                    y - 4.5,
                    x - 4.5,
                    y + 4.5,
                );
                markup! {
                    path class=(class) d=(cross) data-inject=(d.inject_id) { title { (tip) } }
                }
            }
        }
    }
}

/// The ticks of an axis up to `max` seconds, [`tick_step`] apart.
fn ticks(max: f64) -> Vec<f64> {
    let step = tick_step(max);
    let mut ticks = Vec::new();
    let mut t = 0.0;
    while t <= max + 1e-9 {
        ticks.push(t);
        t += step;
    }
    ticks
}

/// A coordinate as the chart writes it: to a tenth.
fn px(v: f64) -> String {
    format!("{v:.1}")
}

fn round_up(secs: f64) -> f64 {
    let step = tick_step(secs);
    (secs / step).ceil() * step
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::aar::fixtures::{control, input, row};
    use crate::report::aar::model::build;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn lateness_has_a_logarithmic_scale_of_its_own() {
        // A 12-minute exercise whose worst inject was 3 ms late.
        let c = Chart::new(720.0, 3.0);
        assert_eq!(
            c,
            Chart {
                x_max: 720.0,
                y_min_exp: -1,
                y_max_exp: 1
            }
        );
        assert!(close(c.x(0.0), Chart::LEFT));
        assert!(close(c.x(720.0), Chart::RIGHT));
        assert!(close(c.y(0.1), Chart::BOTTOM));
        assert!(close(c.y(10.0), Chart::TOP));
        assert!(close(c.y(1.0), (Chart::TOP + Chart::BOTTOM) / 2.0));
        // 3 ms stands far above the axis: log10(30) of two decades.
        let height = Chart::BOTTOM - Chart::TOP;
        assert!(close(
            Chart::BOTTOM - c.y(3.0),
            height * 30f64.log10() / 2.0
        ));
        assert!(Chart::BOTTOM - c.y(3.0) > 150.0);
        // On time to the microsecond sits on the axis, never below it.
        assert!(close(c.y(0.0), Chart::BOTTOM));
        // Seconds late stretch the scale to the next power of ten.
        let slow = Chart::new(45.0, 3000.0);
        assert_eq!((slow.x_max, slow.y_min_exp, slow.y_max_exp), (50.0, -1, 4));
        assert!(slow.y(3.0) < slow.y(0.1) - 50.0, "3 ms is still visible");
        assert!(close(slow.y(10_000.0), Chart::TOP));
        assert!(close(slow.y(1e9), Chart::TOP), "capped at the top");
        let check = |exp: i32, expected: &str| assert_eq!(ms_label(exp), expected);
        check(-1, "0.1 ms");
        check(0, "1 ms");
        check(2, "100 ms");
        check(3, "1 s");
        check(4, "10 s");
    }

    #[test]
    fn points_put_each_inject_at_the_time_it_was_sent() {
        let mut seek = control("seek", true, None);
        seek.at_wall_ms = 5_000_000;
        seek.exercise_secs = Some(400);
        let mut a = row("blue", "a", 60, "delivered");
        a.due_wall_ms = Some(5_000_000);
        a.published_wall_ms = Some(5_000_000);
        a.acked_wall_ms = Some(5_000_003);
        a.latency_ms = Some(3.0);
        a.sent_secs = Some(400);
        let mut b = row("blue", "b", 10, "delivered");
        b.due_wall_ms = Some(1_000_000);
        b.acked_wall_ms = Some(1_000_250);
        b.latency_ms = Some(250.0);
        b.late = true;
        let c = row("blue", "c", 20, "failed");
        let report = build(&input(vec![a, b, c], vec![seek]));
        let deliveries: Vec<&ReportDelivery> = report.deliveries.iter().collect();
        let got: Vec<(&str, f64, Option<f64>, Mark)> = points(&deliveries)
            .iter()
            .map(|p| {
                let at = (p.at * 1000.0).round() / 1000.0;
                (p.delivery.inject_id.as_str(), at, p.lateness_ms, p.mark)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("b", 12.5, Some(250.0), Mark::Late),
                ("c", 20.0, None, Mark::Failed),
                ("a", 400.03, Some(3.0), Mark::Seek),
            ]
        );
        let svg = team_chart("Blue", &deliveries, &report.control_log, 720).into_string();
        assert!(
            svg.contains(r#"class="control" data-command="seek" data-at="400""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="seek""#)
                && svg.contains(r#"data-inject="a" data-lateness-ms="3.000""#)
        );
        assert!(svg.contains("(delivered by the seek)"));
        assert!(svg.contains("Lateness (log scale)"));
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
}
