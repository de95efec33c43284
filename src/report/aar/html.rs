//! The report as one self-contained HTML page.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::chart::team_chart;
use super::model::{
    AfterActionReport, ReportControlEntry, ReportDelivery, ReportStats, ReportSummary,
    exercise_time,
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
    use crate::report::aar::fixtures::{control, input, row};
    use crate::report::aar::model::build;

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
