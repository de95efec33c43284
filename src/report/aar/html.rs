//! The report as one self-contained HTML page, written with maud: every
//! string from the exercise is escaped unless marked otherwise.

use maud::{Markup, PreEscaped, html as markup};

use super::chart::team_chart;
use super::model::{
    AfterActionReport, ReportControlEntry, ReportDelivery, ReportStats, ReportSummary,
    exercise_time, planned,
};

/// A self-contained page: inline CSS, inline SVG, no script, nothing fetched;
/// every string from the exercise escaped.
pub fn html(report: &AfterActionReport) -> String {
    let e = &report.exercise;
    let title = format!(
        "After-action report: {} (run {})",
        e.name.as_deref().unwrap_or(&e.id),
        e.run
    );
    let run_note = if e.archived {
        format!(
            "{} (archived; the exercise is on run {})",
            e.run, e.current_run
        )
    } else {
        format!("{} (current)", e.run)
    };
    let speed = format!("×{}", e.speed);
    let meta = [
        ("Exercise", e.id.as_str()),
        ("Run", run_note.as_str()),
        ("State now", e.state.as_str()),
        ("Duration", e.duration_formatted.as_str()),
        ("Speed", speed.as_str()),
        ("Generated", e.generated_at.as_str()),
    ];
    let page = markup! {
        (PreEscaped("<!doctype html>\n"))
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                dl class="meta" {
                    @for (term, value) in meta {
                        div { dt { (term) } dd { (value) } }
                    }
                }
                (summary_table(&report.summary))
                h2 { "Lateness of each inject" }
                p class="note" {
                    "Each dot is an inject: across, the exercise time it was sent (the broker's \
                     acknowledgement); up, how late it was (acknowledged minus due) on a \
                     logarithmic scale of its own, so that milliseconds show beside seconds. \
                     A diamond is an inject a seek sent at once: it stands at the second the \
                     clock jumped to. Dashed lines are the control actions of the run. Injects \
                     never delivered are marked on the strip below the axis, at their planned \
                     time."
                }
                div class="charts" {
                    @for t in &e.teams {
                        @let points: Vec<&ReportDelivery> = report
                            .deliveries
                            .iter()
                            .filter(|d| d.team_id == t.id)
                            .collect();
                        @let label = match &t.name {
                            Some(name) => format!("{name} ({})", t.id),
                            None => t.id.clone(),
                        };
                        figure {
                            (team_chart(&label, &points, &report.control_log, e.duration))
                            figcaption { (label) }
                        }
                    }
                }
                p class="legend" {
                    span class="key ok" {} "on time "
                    span class="key late" {} "late "
                    span class="key seek" {} "delivered by a seek "
                    span class="key control" {} "control action "
                    span class="key failed" {} "failed "
                    span class="key cancelled" {} "cancelled or skipped "
                    span class="key outstanding" {} "not sent yet"
                }
                (super::play_html::play_sections(&report.play))
                (deliveries_table(&report.deliveries))
                (control_table(&report.control_log))
                p class="note" {
                    "Lateness: acknowledged by the broker minus due. Receipt latency: shown on \
                     a team dashboard minus due, only for injects sent while a dashboard of the \
                     team was open; the others are counted as not watched. p95: 95th \
                     percentile, nearest rank. Times are UTC."
                }
            }
        }
    };
    page.into_string()
}

const STYLE: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2430;margin:24px auto;max-width:1200px;padding:0 16px}\
h1{font-size:1.5rem;margin:0 0 .5rem}h2{font-size:1.15rem;margin:1.6rem 0 .5rem;border-bottom:1px solid #d6dbe3;padding-bottom:.2rem}\
.meta{display:flex;flex-wrap:wrap;gap:.4rem 1.6rem;margin:0}.meta div{display:flex;gap:.4rem}.meta dt{color:#5b6678}.meta dd{margin:0;font-weight:600}\
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border:1px solid #d6dbe3;padding:3px 6px;text-align:left;vertical-align:top}\
th{background:#eef1f5}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}tr.total td{font-weight:600;background:#f6f8fa}\
.s-delivered{color:#1b7f3b}.s-late{color:#b35c00;font-weight:600}.s-failed{color:#b3261e;font-weight:600}.s-cancelled,.s-skipped{color:#6b7280}\
.refused{color:#b3261e}.note{color:#5b6678;font-size:12px}.o-met{color:#1b7f3b}.o-late{color:#b35c00}.o-wrong,.o-missed{color:#b3261e;font-weight:600}.charts{display:flex;flex-wrap:wrap;gap:12px}\
figure{margin:0;border:1px solid #d6dbe3;border-radius:6px;padding:6px;flex:1 1 460px;max-width:640px}figcaption{text-align:center;font-weight:600}\
svg{width:100%;height:auto;font:11px system-ui,sans-serif}svg .axis{stroke:#1d2430;stroke-width:1}svg .grid{stroke:#e3e7ed;stroke-width:1}\
svg .diag{stroke:#8a94a6;stroke-dasharray:5 4;stroke-width:1}svg text{fill:#1d2430}svg .tick{text-anchor:middle}svg .ytick{text-anchor:end}\
svg .ok{fill:#1b7f3b}svg .late{fill:#e07b00}svg .seek{fill:#6a3fb5}\
svg .control line{stroke:#2458b3;stroke-dasharray:3 3;stroke-width:1}svg .control text{fill:#2458b3;font-size:10px}\
svg .control.refused line{stroke:#b3261e}svg .control.refused text{fill:#b3261e}svg .failed{stroke:#b3261e;stroke-width:2.2;fill:none}\
svg .cancelled{stroke:#6b7280;stroke-width:2;fill:none}svg .outstanding{stroke:#6b7280;stroke-width:1.5;fill:#fff}\
.legend .key{display:inline-block;width:10px;height:10px;border-radius:50%;margin:0 4px 0 12px;vertical-align:middle}\
.key.ok{background:#1b7f3b}.key.late{background:#e07b00}.key.failed{background:#b3261e;border-radius:0}.key.cancelled{background:#6b7280;border-radius:0}\
.key.outstanding{border:1.5px solid #6b7280}\
.key.seek{background:#6a3fb5;border-radius:0;transform:rotate(45deg)}.key.control{border-left:2px dashed #2458b3;border-radius:0;width:0}\
@media print{body{margin:0;max-width:none}figure{break-inside:avoid}}";

fn fmt_ms(ms: Option<f64>) -> String {
    ms.map_or_else(|| "–".to_owned(), |ms| format!("{ms:.1}"))
}

fn summary_table(summary: &ReportSummary) -> Markup {
    let row = |class: &str, label: &str, s: &ReportStats| {
        let counts = [
            s.scheduled,
            s.delivered,
            s.on_time,
            s.late,
            s.failed,
            s.cancelled,
            s.skipped,
            s.outstanding,
            s.received,
            s.not_watched,
        ];
        let timings = [
            s.lateness_ms.mean,
            s.lateness_ms.p95,
            s.lateness_ms.max,
            s.receipt_latency_ms.mean,
            s.receipt_latency_ms.p95,
            s.receipt_latency_ms.max,
        ];
        markup! {
            tr class=(class) {
                td { (label) }
                @for n in counts { td class="num" { (n) } }
                @for ms in timings { td class="num" { (fmt_ms(ms)) } }
            }
        }
    };
    markup! {
        h2 { "Summary" }
        table class="summary" {
            thead {
                tr {
                    th { "Team" }
                    @for heading in [
                        "Scheduled",
                        "Delivered",
                        "On time",
                        "Late",
                        "Failed",
                        "Cancelled",
                        "Skipped",
                        "Not sent yet",
                        "Received",
                        "Not watched",
                        "Mean lateness (ms)",
                        "p95 lateness (ms)",
                        "Max lateness (ms)",
                        "Mean receipt latency (ms)",
                        "p95 receipt latency (ms)",
                        "Max receipt latency (ms)",
                    ] {
                        th class="num" { (heading) }
                    }
                }
            }
            tbody {
                @for t in &summary.teams {
                    @let label = match &t.team_name {
                        Some(name) => format!("{name} ({})", t.team_id),
                        None => t.team_id.clone(),
                    };
                    (row("team", &label, &t.stats))
                }
                (row("total", "All teams", &summary.overall))
            }
        }
    }
}

fn deliveries_table(deliveries: &[ReportDelivery]) -> Markup {
    markup! {
        h2 { "Deliveries" }
        table class="deliveries" {
            thead {
                tr {
                    th { "Planned" }
                    th { "Team" }
                    th { "Inject" }
                    th { "Type" }
                    th { "Status" }
                    th { "Due at" }
                    th { "Sent at" }
                    th { "Acknowledged at" }
                    th { "Received at" }
                    th { "Delivered (exercise time)" }
                    th class="num" { "Lateness (ms)" }
                    th class="num" { "Receipt latency (ms)" }
                    th class="num" { "Attempts" }
                    th { "Last error" }
                }
            }
            tbody {
                @for d in deliveries {
                    @let late = d.status == "delivered" && d.late;
                    @let status_class = if late { "late" } else { d.status.as_str() };
                    tr {
                        td { (d.planned) }
                        td { (d.team_id) }
                        td { (d.inject_id) }
                        td { (d.kind) }
                        td class={ "s-" (status_class) } {
                            (d.status)
                            @if late { ", late" }
                            @if d.live { " (live)" }
                        }
                        (time_cell(d.due_at.as_deref()))
                        (time_cell(d.published_at.as_deref()))
                        (time_cell(d.acknowledged_at.as_deref()))
                        (time_cell(d.received_at.as_deref()))
                        td {
                            (d.actual_exercise_time.map_or_else(|| "–".to_owned(), exercise_time))
                        }
                        td class="num" { (fmt_ms(d.lateness_ms)) }
                        td class="num" { (fmt_ms(d.receipt_latency_ms)) }
                        td class="num" { (d.attempts) }
                        td { (d.last_error.as_deref().unwrap_or("")) }
                    }
                }
                @if deliveries.is_empty() {
                    tr { td colspan="14" { "No deliveries in this run." } }
                }
            }
        }
    }
}

fn control_table(log: &[ReportControlEntry]) -> Markup {
    markup! {
        h2 { "Control log" }
        table class="control" {
            thead {
                tr {
                    th { "At" }
                    th { "Exercise time" }
                    th { "Command" }
                    th { "Reason" }
                    th { "Source" }
                    th { "Accepted" }
                    th { "Message" }
                }
            }
            tbody {
                @for c in log {
                    tr class=[(!c.accepted).then_some("refused")] {
                        td { (c.at) }
                        td { (c.exercise_time.map_or_else(|| "–".to_owned(), planned)) }
                        td { (c.command) }
                        td { (c.reason.as_deref().unwrap_or("")) }
                        td { (c.source) }
                        td { (if c.accepted { "yes" } else { "no" }) }
                        td { (c.message.as_deref().unwrap_or("")) }
                    }
                }
                @if log.is_empty() {
                    tr { td colspan="7" { "No commands in this run." } }
                }
            }
        }
    }
}

/// A table cell showing the time of day of a UTC timestamp
/// (`10:05:32.123`), the whole timestamp in its tooltip.
fn time_cell(iso: Option<&str>) -> Markup {
    match iso {
        Some(iso) => {
            let short = iso
                .split_once('T')
                .map_or(iso, |(_, t)| t.trim_end_matches('Z'));
            markup! { td title=(iso) { (short) } }
        }
        None => markup! { td { "–" } },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::aar::fixtures::{control, input, row};
    use crate::report::aar::model::build;

    #[test]
    fn html_escapes_every_special_character() {
        // As text and as an attribute value, which the page always quotes
        // with `"`: a `'` cannot end it, so it is left as it is.
        let check = |input: &str, expected: &str| {
            assert_eq!(markup! { (input) }.into_string(), expected, "{input:?}");
            assert_eq!(
                markup! { td title=(input) {} }.into_string(),
                format!("<td title=\"{expected}\"></td>"),
                "{input:?}"
            );
        };
        check("plain text", "plain text");
        check(
            "<script>alert(1)</script>",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
        );
        check("a & b", "a &amp; b");
        check("\"quoted\" 'single'", "&quot;quoted&quot; 'single'");
        check("&amp;", "&amp;amp;");
        check("", "");
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
        assert!(page.contains("Sent (exercise time)"));
        assert!(page.contains("Lateness (log scale)"));
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
