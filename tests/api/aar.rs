//! The after-action report: JSON, CSV and HTML of a run, current and archived,
//! against the delivery records and the control log the API lists.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const SECS: Duration = Duration::from_secs(15);
const REASON: &str = "Broker hung <restarting it> & \"checking\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_of_a_run_lists_every_delivery_the_summary_and_the_control_log() {
    let _receipts = RECEIPT_METRICS.lock().await;
    let mut app = spawn_app_with(&[
        "--delivery-timeout-ms",
        "1000",
        "--max-retry-attempts",
        "1",
        "--retry-delay-seconds",
        "0",
    ])
    .await;
    let id = "aar";
    let base = format!("/api/v1/exercises/{id}");
    app.create(
        id,
        5.0,
        package(
            30,
            &[
                ("blue", &[("b-1", 20), ("b-2", 24)]),
                ("red", &[("r-1", 0), ("r-2", 27)]),
            ],
        ),
    )
    .await;

    // The broker hangs at the start: red's first inject fails (after 1 s,
    // at T+5), and the exercise is paused long before blue's first is due.
    app.proxy.set_stalled(true);
    app.command(id, "start").await;
    let failed = app.wait_delivery(id, "red", "r-1", "failed").await;
    let (status, body) = app
        .post(&format!("{base}/pause"), Some(json!({"reason": REASON})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("acknowledg"),
        "{failed}"
    );
    // A new broker: the hung publish is gone with the old session, so the
    // failure stays a failure.
    app.proxy.set_up(false);
    app.broker.restart();
    app.proxy.set_stalled(false);
    app.proxy.set_up(true);
    app.wait_for(&base, SECS, |e| e["connected"] == true).await;
    app.command(id, "resume").await;
    let refused = app.post(&format!("{base}/resume"), None).await;
    assert_error(&refused, StatusCode::CONFLICT, "conflict");

    // Blue's dashboard shows b-1.
    app.wait_delivery(id, "blue", "b-1", "delivered").await;
    let (status, body) = app
        .post(
            &team_path(&app, id, "blue", "receipts").await,
            Some(json!({"run": 1, "inject_ids": ["b-1"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recorded"], 1);
    app.wait_for(&base, Duration::from_secs(30), |e| {
        e["state"] == "completed"
    })
    .await;

    // JSON: record for record what GET deliveries lists.
    let (_, listed) = app.get(&format!("{base}/deliveries")).await;
    let (status, report) = app.get(&format!("{base}/report")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let exercise = &report["exercise"];
    assert_eq!(exercise["id"], id);
    assert_eq!(exercise["name"], "API test");
    assert_eq!(exercise["state"], "completed");
    assert_eq!(exercise["run"], 1);
    assert_eq!(exercise["current_run"], 1);
    assert_eq!(exercise["archived"], false);
    assert_eq!(exercise["speed"], 5.0);
    assert_eq!(exercise["duration"], 30);
    assert_eq!(exercise["duration_formatted"], "T+00:30");
    let deliveries = report["deliveries"].as_array().unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(deliveries.len(), 4);
    assert_eq!(deliveries.len(), listed.len());
    let order: Vec<&str> = deliveries
        .iter()
        .map(|d| d["inject_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["r-1", "b-1", "b-2", "r-2"], "by planned time");
    for d in listed {
        let team = d["team_id"].as_str().unwrap();
        let inject = d["inject_id"].as_str().unwrap();
        let r = find(&report["deliveries"], team, inject);
        for field in [
            "type",
            "due_exercise_time",
            "due_at",
            "published_at",
            "acknowledged_at",
            "received_at",
            "attempts",
            "status",
            "late",
            "last_error",
            "live",
        ] {
            assert_eq!(r[field], d[field], "{team}/{inject} {field}: {r} vs {d}");
        }
        assert_eq!(r["lateness_ms"], d["latency_ms"], "{team}/{inject}");
        // The report takes receipt latency from millisecond wall times.
        match (
            r["receipt_latency_ms"].as_f64(),
            d["receipt_latency_ms"].as_f64(),
        ) {
            (Some(a), Some(b)) => assert!((a - b).abs() <= 1.0, "{r} vs {d}"),
            (a, b) => assert_eq!(a, b, "{team}/{inject}"),
        }
        let due = d["due_exercise_time"].as_u64().unwrap();
        assert_eq!(r["planned"], format!("T+00:{due:02}"));
        match d["latency_ms"].as_f64() {
            Some(latency) => {
                let actual = r["actual_exercise_time"].as_f64().unwrap();
                let expected = due as f64 + latency / 1000.0 * 5.0;
                assert!((actual - expected).abs() < 0.02, "{r}");
            }
            None => assert_eq!(r["actual_exercise_time"], Value::Null, "{r}"),
        }
    }
    let r1 = find(&report["deliveries"], "red", "r-1");
    assert_eq!(r1["status"], "failed");
    assert_eq!(r1["attempts"], 1);
    assert!(r1["received_at"].is_null());
    let b1 = find(&report["deliveries"], "blue", "b-1");
    assert!(b1["received_at"].as_str().unwrap().ends_with('Z'), "{b1}");

    // The summary, overall and per team.
    let overall = &report["summary"]["overall"];
    for (field, n) in [
        ("scheduled", 4),
        ("delivered", 3),
        ("failed", 1),
        ("cancelled", 0),
        ("skipped", 0),
        ("outstanding", 0),
        ("received", 1),
    ] {
        assert_eq!(overall[field], n, "{field}: {overall}");
    }
    assert_eq!(
        overall["on_time"].as_u64().unwrap() + overall["late"].as_u64().unwrap(),
        3
    );
    let max = overall["lateness_ms"]["max"].as_f64().unwrap();
    let largest = listed
        .iter()
        .filter_map(|d| d["latency_ms"].as_f64())
        .fold(0.0, f64::max);
    assert_eq!(max, largest);
    assert!(overall["lateness_ms"]["p95"].as_f64().unwrap() <= max);
    // No dashboard was open as b-1 went out: shown, but no latency.
    assert!(overall["receipt_latency_ms"]["mean"].is_null(), "{overall}");
    let teams = report["summary"]["teams"].as_array().unwrap();
    assert_eq!(teams.len(), 2);
    assert_eq!(teams[0]["team_id"], "blue");
    assert_eq!(teams[0]["team_name"], "Team blue");
    assert_eq!(teams[0]["delivered"], 2);
    assert_eq!(teams[0]["received"], 1);
    assert_eq!(teams[0]["not_watched"], 2);
    assert_eq!(teams[1]["team_id"], "red");
    assert_eq!(teams[1]["delivered"], 1);
    assert_eq!(teams[1]["failed"], 1);
    assert!(teams[1]["receipt_latency_ms"]["mean"].is_null());

    // The control log, as GET control-log has it, refusals included.
    let (_, log) = app.get(&format!("{base}/control-log")).await;
    let entries = report["control_log"].as_array().unwrap();
    assert_eq!(entries.len(), log.as_array().unwrap().len());
    for (r, l) in entries.iter().zip(log.as_array().unwrap()) {
        for field in ["at", "command", "reason", "source", "accepted", "message"] {
            assert_eq!(r[field], l[field], "{field}: {r} vs {l}");
        }
        assert_eq!(r["run"], 1);
    }
    let commands: Vec<(&str, bool)> = entries
        .iter()
        .map(|c| {
            (
                c["command"].as_str().unwrap(),
                c["accepted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        commands,
        [
            ("start", true),
            ("pause", true),
            ("resume", true),
            ("resume", false)
        ]
    );
    assert_eq!(entries[1]["reason"], REASON);
    assert!(entries[3]["message"].as_str().unwrap().contains("running"));

    // CSV: a header and one row per delivery, the same values.
    let csv = download(
        &app,
        &format!("{base}/report.csv"),
        "text/csv; charset=utf-8",
    )
    .await;
    assert_eq!(
        csv.disposition,
        "attachment; filename=\"aar-run1-deliveries.csv\""
    );
    assert!(csv.body.starts_with('\u{feff}'), "a byte-order mark first");
    assert!(csv.body.ends_with("\r\n"));
    let table = parse_csv(&csv.body);
    let header = &table[0];
    assert_eq!(
        header,
        &[
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
        ]
    );
    assert_eq!(table.len(), 1 + deliveries.len());
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    for (row, d) in table[1..].iter().zip(deliveries) {
        assert_eq!(row.len(), header.len(), "{row:?}");
        let text = |field: &str| d[field].as_str().unwrap_or("").to_owned();
        assert_eq!(row[column("run")], "1");
        assert_eq!(row[column("team_id")], text("team_id"));
        assert_eq!(
            row[column("team_name")],
            format!("Team {}", text("team_id"))
        );
        assert_eq!(row[column("inject_id")], text("inject_id"));
        assert_eq!(row[column("type")], "news");
        assert_eq!(row[column("planned")], text("planned"));
        assert_eq!(
            row[column("due_exercise_seconds")],
            d["due_exercise_time"].to_string()
        );
        for field in ["due_at", "published_at", "acknowledged_at", "received_at"] {
            assert_eq!(row[column(field)], text(field), "{field}");
        }
        for (col, field) in [
            ("actual_exercise_seconds", "actual_exercise_time"),
            ("lateness_ms", "lateness_ms"),
            ("receipt_latency_ms", "receipt_latency_ms"),
        ] {
            match d[field].as_f64() {
                Some(v) => {
                    let parsed: f64 = row[column(col)].parse().unwrap();
                    assert!((parsed - v).abs() < 0.001, "{col}: {row:?} vs {d}");
                }
                None => assert_eq!(row[column(col)], "", "{col}"),
            }
        }
        assert_eq!(row[column("attempts")], d["attempts"].to_string());
        assert_eq!(row[column("status")], text("status"));
        assert_eq!(row[column("late")], d["late"].to_string());
        assert_eq!(row[column("last_error")], text("last_error"));
        assert_eq!(row[column("live")], "false");
    }
    let control = download(
        &app,
        &format!("{base}/report/control-log.csv"),
        "text/csv; charset=utf-8",
    )
    .await;
    assert_eq!(
        control.disposition,
        "attachment; filename=\"aar-run1-control-log.csv\""
    );
    let table = parse_csv(&control.body);
    assert_eq!(
        table[0],
        [
            "run", "at", "command", "reason", "source", "accepted", "message"
        ]
    );
    assert_eq!(table.len(), 1 + entries.len());
    assert_eq!(table[2][2], "pause");
    assert_eq!(table[2][3], REASON, "quotes and all, read back");
    assert_eq!(table[2][5], "true");
    assert_eq!(table[4][5], "false");
    assert_eq!(table[4][1], entries[3]["at"].as_str().unwrap());

    // HTML: one page with everything, escaped, a chart per team.
    let page = download(
        &app,
        &format!("{base}/report.html"),
        "text/html; charset=utf-8",
    )
    .await;
    assert_eq!(
        page.disposition,
        "inline; filename=\"aar-run1-report.html\""
    );
    assert!(page.csp.starts_with("default-src 'none'"), "{}", page.csp);
    let html = &page.body;
    for inject in ["b-1", "b-2", "r-1", "r-2"] {
        assert!(html.contains(&format!("<td>{inject}</td>")), "{inject}");
    }
    assert!(
        html.contains("Broker hung &lt;restarting it&gt; &amp; &quot;checking&quot;"),
        "the pause reason, escaped"
    );
    assert!(!html.contains("<restarting it>"));
    assert!(html.contains("<td>pause</td>") && html.contains("<td>resume</td>"));
    assert_eq!(html.matches("<svg").count(), 2, "one chart per team");
    assert!(html.contains("<path class=\"failed\""), "r-1 marked failed");
    assert!(!html.contains("<script") && !html.contains("src="));

    // A reset archives the run; it stays reachable with ?run=1.
    app.command(id, "reset").await;
    let (status, current) = app.get(&format!("{base}/report")).await;
    assert_eq!(status, StatusCode::OK, "{current}");
    assert_eq!(current["exercise"]["run"], 2);
    assert_eq!(current["exercise"]["archived"], false);
    assert_eq!(current["exercise"]["state"], "initialized");
    assert_eq!(current["summary"]["overall"]["outstanding"], 4);
    assert_eq!(current["control_log"], json!([]), "the reset ended run 1");
    let (status, archived) = app.get(&format!("{base}/report?run=1")).await;
    assert_eq!(status, StatusCode::OK, "{archived}");
    assert_eq!(archived["exercise"]["run"], 1);
    assert_eq!(archived["exercise"]["current_run"], 2);
    assert_eq!(archived["exercise"]["archived"], true);
    assert_eq!(
        archived["deliveries"], report["deliveries"],
        "the stored run is the run as it was"
    );
    assert_eq!(archived["summary"], report["summary"]);
    let log = archived["control_log"].as_array().unwrap();
    assert_eq!(log[..4], entries[..]);
    assert_eq!(log.len(), 5);
    assert_eq!(log[4]["command"], "reset");
    let csv = download(
        &app,
        &format!("{base}/report.csv?run=1"),
        "text/csv; charset=utf-8",
    )
    .await;
    assert_eq!(
        csv.disposition,
        "attachment; filename=\"aar-run1-deliveries.csv\""
    );
    assert_eq!(parse_csv(&csv.body).len(), 5);
    let page = download(
        &app,
        &format!("{base}/report.html?run=1"),
        "text/html; charset=utf-8",
    )
    .await;
    assert!(page.body.contains("archived"));
    assert!(page.body.contains("<td>reset</td>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_exercise_or_run_has_no_report() {
    let app = spawn_app().await;
    app.create("one", 1.0, package(60, &[("blue", &[("b-1", 10)])]))
        .await;
    for path in [
        "/api/v1/exercises/ghost/report",
        "/api/v1/exercises/ghost/report.csv",
        "/api/v1/exercises/ghost/report/control-log.csv",
        "/api/v1/exercises/ghost/report.html",
    ] {
        let error = assert_error(&app.get(path).await, StatusCode::NOT_FOUND, "not_found");
        assert!(
            error["message"].as_str().unwrap().contains("ghost"),
            "{path}: {error}"
        );
    }
    for path in [
        "/api/v1/exercises/one/report?run=2",
        "/api/v1/exercises/one/report?run=0",
        "/api/v1/exercises/one/report.csv?run=2",
        "/api/v1/exercises/one/report/control-log.csv?run=2",
        "/api/v1/exercises/one/report.html?run=9",
    ] {
        let error = assert_error(&app.get(path).await, StatusCode::NOT_FOUND, "not_found");
        assert!(
            error["message"].as_str().unwrap().contains("no run"),
            "{path}: {error}"
        );
    }
    for path in [
        "/api/v1/exercises/one/report?run=x",
        "/api/v1/exercises/one/report?run=-1",
        "/api/v1/exercises/one/report?team=blue",
    ] {
        assert_error(
            &app.get(path).await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        );
    }
    // The control room links the report.
    let room = app
        .client
        .get(app.url("/exercises/one"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(room.contains("id=\"report-links\""), "{room}");
    for target in ["report.html", "report.csv", "report/control-log.csv"] {
        assert!(
            room.contains(&format!("data-report=\"{target}\"")),
            "{target}"
        );
    }

    // Before anything happened: every delivery pending, nothing in the log.
    let (status, report) = app.get("/api/v1/exercises/one/report").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["summary"]["overall"]["scheduled"], 1);
    assert_eq!(report["summary"]["overall"]["outstanding"], 1);
    assert_eq!(
        report["summary"]["overall"]["lateness_ms"]["mean"],
        Value::Null
    );
    assert_eq!(report["deliveries"][0]["status"], "pending");
    assert_eq!(report["control_log"], json!([]));
}

/// A file the report serves, with the headers that matter.
struct Download {
    body: String,
    disposition: String,
    csp: String,
}

async fn download(app: &TestApp, path: &str, content_type: &str) -> Download {
    let response = app.client.get(app.url(path)).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(header("content-type"), content_type, "GET {path}");
    let disposition = header("content-disposition");
    let csp = header("content-security-policy");
    Download {
        body: response.text().await.expect("body"),
        disposition,
        csp,
    }
}

/// RFC 4180 records (a leading byte-order mark skipped), as a spreadsheet
/// reads them: quoted fields may hold commas, quotes (doubled) and line breaks.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted, "an unterminated quoted field");
    assert!(
        field.is_empty() && record.is_empty(),
        "the last record ends with a line break"
    );
    records
}

#[test]
fn the_test_csv_parser_reads_what_rfc_4180_writes() {
    let check = |text: &str, expected: &[&[&str]]| {
        assert_eq!(parse_csv(text), expected, "{text:?}");
    };
    check("a,b\r\n", &[&["a", "b"]]);
    check(
        "\u{feff}a,,c\r\n1,2,3\r\n",
        &[&["a", "", "c"], &["1", "2", "3"]],
    );
    check(
        "\"x, y\",\"say \"\"hi\"\"\",\"two\r\nlines\"\r\n",
        &[&["x, y", "say \"hi\"", "two\r\nlines"]],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_report_routes() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    for (path, content_type) in [
        ("/api/v1/exercises/{id}/report", "application/json"),
        ("/api/v1/exercises/{id}/report.csv", "text/csv"),
        ("/api/v1/exercises/{id}/report/control-log.csv", "text/csv"),
        ("/api/v1/exercises/{id}/report.html", "text/html"),
    ] {
        let get = &doc["paths"][path]["get"];
        assert_eq!(get["tags"], json!(["reports"]), "{path}");
        assert!(
            get["responses"]["200"]["content"][content_type].is_object(),
            "{path}: {get}"
        );
        assert!(get["responses"]["404"].is_object(), "{path}");
        let params: Vec<&str> = get["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(params, ["id", "run"], "{path}");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "AfterActionReport",
        "ReportExercise",
        "ReportSummary",
        "ReportDelivery",
        "ReportControlEntry",
    ] {
        assert!(schemas.contains_key(schema), "no schema {schema}");
    }
}
