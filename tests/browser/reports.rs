//! The after-action report from the control room: each link saves the
//! report, fetched with the API token in a header, never in an address.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::chrome::Browser;
use crate::support::*;
use crate::{SECS, every_kind};

/// Waits until `dir` holds a finished download named `name` (Chromium
/// writes `<name>.crdownload` first) and returns its content.
async fn downloaded(dir: &Path, name: &str, within: Duration) -> Vec<u8> {
    let path: PathBuf = dir.join(name);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(bytes) = std::fs::read(&path) {
            return bytes;
        }
        let present: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} not downloaded within {within:?}; {} holds {present:?}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_links_save_the_report_without_a_token_in_any_address() {
    let app = spawn_app().await;
    app.create("aar", 4.0, every_kind(8, &[("blue", "Port Authority")]))
        .await;
    app.command("aar", "start").await;
    app.wait_for("/api/v1/exercises/aar", SECS, |e| e["state"] == "completed")
        .await;

    let control = Browser::start().await;
    control
        .open(&app.url(&format!("/exercises/aar#token={ADMIN_TOKEN}")))
        .await;
    control
        .wait(
            "the room shows the run completed",
            "document.querySelector('#state').textContent === 'completed'",
            SECS,
        )
        .await;
    let hrefs = control
        .eval(
            "return [...document.querySelectorAll('#report-links a[data-report]')].map(a => a.href)",
        )
        .await;
    let hrefs: Vec<&str> = hrefs
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(hrefs.len(), 4, "{hrefs:?}");
    for href in &hrefs {
        assert!(
            href.contains("/api/v1/exercises/aar/report") && !href.contains(ADMIN_TOKEN),
            "{href}"
        );
    }

    // Each link saves its file, under the server's name.
    let dir = control.downloads();
    control
        .click("#report-links a[data-report='report.html']")
        .await;
    let html = String::from_utf8(downloaded(&dir, "aar-run1-report.html", SECS).await).unwrap();
    assert!(
        html.contains("<title>After-action report: Browser test (run 1)</title>"),
        "{html}"
    );
    assert!(html.contains("Port Authority"), "the team's table");
    control
        .click("#report-links a[data-report='report.csv']")
        .await;
    let csv = downloaded(&dir, "aar-run1-deliveries.csv", SECS).await;
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.starts_with("\u{feff}run,team_id,team_name,"), "{csv}");
    assert_eq!(
        csv.matches(",Port Authority,").count(),
        6,
        "a row per inject: {csv}"
    );
    control
        .click("#report-links a[data-report='report/control-log.csv']")
        .await;
    let log = downloaded(&dir, "aar-run1-control-log.csv", SECS).await;
    let log = String::from_utf8(log).unwrap();
    assert!(log.starts_with("\u{feff}run,at,command,"), "{log}");
    assert!(log.contains(",start,"), "{log}");
    control.click("#report-links a[data-report='report']").await;
    let report: Value =
        serde_json::from_slice(&downloaded(&dir, "aar-report.json", SECS).await).unwrap();
    assert_eq!(report["exercise"]["id"], json!("aar"));
    assert_eq!(report["exercise"]["run"], json!(1));
    control
        .wait(
            "the room says what it saved",
            "document.querySelector('#message').textContent === 'Saved aar-report.json'",
            SECS,
        )
        .await;

    // Every request the room made: the reports fetched, and no address but
    // the event stream's carried the token.
    let requests = control
        .eval("return performance.getEntriesByType('resource').map(r => r.name)")
        .await;
    let requests: Vec<&str> = requests
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for what in ["report.html", "report.csv", "report/control-log.csv"] {
        assert!(
            requests
                .iter()
                .any(|r| r.ends_with(&format!("/api/v1/exercises/aar/{what}"))),
            "{what} not fetched: {requests:#?}"
        );
    }
    for request in &requests {
        assert!(
            !request.contains(ADMIN_TOKEN) || request.contains("/api/v1/exercises/aar/events?"),
            "the token in an address: {request}"
        );
    }
    control.assert_no_policy_violations("control room").await;
    control.quit().await;
}
