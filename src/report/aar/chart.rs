//! The SVG chart of a team: planned against actual delivery exercise time.

use maud::{Markup, html as markup};

use super::model::{ReportDelivery, exercise_time, planned};

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

/// The chart of one team's deliveries, as inline SVG.
pub(super) fn team_chart(label: &str, deliveries: &[&ReportDelivery], duration: i64) -> Markup {
    let planned_max = deliveries
        .iter()
        .map(|d| d.due_exercise_time as f64)
        .fold(duration as f64, f64::max);
    let actual_max = deliveries
        .iter()
        .filter_map(|d| d.actual_exercise_time)
        .fold(0.0, f64::max);
    let c = Chart::new(planned_max, actual_max);
    let (l, r, t, b) = (Chart::LEFT, Chart::RIGHT, Chart::TOP, Chart::BOTTOM);
    markup! {
        svg xmlns="http://www.w3.org/2000/svg"
            viewBox={ "0 0 " (Chart::WIDTH) " " (Chart::HEIGHT) }
            role="img"
            aria-label={ (label) ": planned against actual delivery exercise time" } {
            // Grid, ticks and tick labels.
            @for tick in ticks(c.x_max) {
                @let x = px(c.x(tick));
                line class="grid" x1=(x) y1=(px(t)) x2=(x) y2=(px(b)) {}
                text class="tick" x=(x) y=(px(b + 16.0)) { (planned(tick as i64)) }
            }
            @for tick in ticks(c.y_max) {
                @let y = c.y(tick);
                line class="grid" x1=(px(l)) y1=(px(y)) x2=(px(r)) y2=(px(y)) {}
                text class="ytick" x=(px(l - 6.0)) y=(px(y + 4.0)) { (planned(tick as i64)) }
            }
            // Axes, their titles, the on-time diagonal.
            line class="axis" x1=(l) y1=(b) x2=(r) y2=(b) {}
            line class="axis" x1=(l) y1=(t) x2=(l) y2=(b) {}
            line class="diag"
                x1=(px(c.x(0.0)))
                y1=(px(c.y(0.0)))
                x2=(px(c.x(c.x_max)))
                y2=(px(c.y(c.x_max))) {}
            text class="tick" x=(px((l + r) / 2.0)) y=(px(Chart::HEIGHT - 6.0)) {
                "Planned (exercise time)"
            }
            text class="tick" transform={ "translate(14 " (px((t + b) / 2.0)) ") rotate(-90)" } {
                "Delivered (exercise time)"
            }
            text class="ytick" x=(px(l - 10.0)) y=(px(Chart::STRIP + 4.0)) { "not sent" }
            @for d in deliveries {
                (point(&c, d))
            }
        }
    }
}

/// One delivery on the chart: a dot where it was delivered, or a mark on
/// the strip below the axis, with a tooltip.
fn point(c: &Chart, d: &ReportDelivery) -> Markup {
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
            let class = if d.late { "late" } else { "ok" };
            markup! {
                circle class=(class) cx=(px(x)) cy=(px(c.y(actual))) r="4" { title { (tip) } }
            }
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
                markup! {
                    circle class="outstanding" cx=(px(x)) cy=(px(y)) r="4" { title { (tip) } }
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
                markup! { path class=(class) d=(cross) { title { (tip) } } }
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
}
