//! Each team's summary in the exercise (delivered, shown, unread, last
//! seen, late, failed, not watched) and receipts of injects no dashboard
//! watched go out.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

const SECS: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_team_has_a_summary_and_unwatched_receipts_have_no_latency() {
    let _receipts = RECEIPT_METRICS.lock().await;
    let app = spawn_app().await;
    let package = package(
        60,
        &[
            ("blue", &[("a", 0), ("b", 1)]),
            ("red", &[("r", 0), ("s", 1)]),
        ],
    );
    app.create("ex-teams", 1.0, package).await;
    let base = "/api/v1/exercises/ex-teams";
    // Blue has its dashboard open from the start; red has none.
    let mut blue =
        EventStream::open(&app, &team_path(&app, "ex-teams", "blue", "events").await).await;
    let before = app
        .wait_for(base, SECS, |e| e["teams_connected"] == 1)
        .await;
    assert!(before["teams"][0]["summary"]["last_seen_at"].is_string());
    assert!(before["teams"][1]["summary"]["last_seen_at"].is_null());
    app.command("ex-teams", "start").await;
    blue.until(SECS, "inject", |d| d["message"]["id"] == "b")
        .await;
    for (team, inject) in [("blue", "a"), ("blue", "b"), ("red", "r"), ("red", "s")] {
        app.wait_delivery("ex-teams", team, inject, "delivered")
            .await;
    }
    let not_watched_before = not_watched_count(&app.metrics().await);
    let blue_receipts = team_path(&app, "ex-teams", "blue", "receipts").await;
    let (status, body) = app
        .post(&blue_receipts, Some(json!({"run": 1, "inject_ids": ["a"]})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let info = app
        .wait_for(base, SECS, |e| e["teams"][0]["summary"]["shown"] == 1)
        .await;
    let blue_summary = &info["teams"][0]["summary"];
    let red_summary = &info["teams"][1]["summary"];
    for (field, blue, red) in [
        ("delivered", 2, 2),
        ("shown", 1, 0),
        ("unread", 1, 2),
        ("late", 0, 0),
        ("failed", 0, 0),
        ("not_watched", 0, 2),
    ] {
        assert_eq!(blue_summary[field], blue, "blue {field}: {blue_summary}");
        assert_eq!(red_summary[field], red, "red {field}: {red_summary}");
    }
    assert_eq!(
        blue_summary["attention"],
        json!([]),
        "its dashboard is open"
    );
    assert_eq!(
        red_summary["attention"],
        json!(["2 unread, no dashboard open"])
    );
    assert!(red_summary["last_seen_at"].is_null());
    assert_eq!(info["counts"]["unread"], 3);
    assert_eq!(info["counts"]["not_watched"], 2);

    // Red opens its dashboard 28 s late in a real room: its receipt says it
    // was shown, but is no measure of how fast.
    let red = EventStream::open(&app, &team_path(&app, "ex-teams", "red", "events").await).await;
    let red_receipts = team_path(&app, "ex-teams", "red", "receipts").await;
    let (status, body) = app
        .post(
            &red_receipts,
            Some(json!({"run": 1, "inject_ids": ["r", "s"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recorded"], 2);
    let (_, list) = app.get(&format!("{base}/deliveries")).await;
    let a = find(&list, "blue", "a");
    assert_eq!(a["watched"], true);
    let a_latency = a["receipt_latency_ms"].as_f64().unwrap();
    let r = find(&list, "red", "r");
    assert_eq!(r["watched"], false);
    assert!(r["received_at"].is_string(), "{r}");
    assert!(r["receipt_latency_ms"].is_null(), "{r}");
    let info = app
        .wait_for(base, SECS, |e| e["teams"][1]["summary"]["shown"] == 2)
        .await;
    let red_summary = &info["teams"][1]["summary"];
    assert_eq!(red_summary["not_watched"], 2);
    assert_eq!(red_summary["unread"], 0);
    assert_eq!(red_summary["attention"], json!([]));
    assert!(red_summary["last_seen_at"].is_string());
    // Red's receipts measure nothing: it has no on-screen latency, blue has
    // its one receipt's.
    assert!(
        red_summary["average_receipt_latency_ms"].is_null(),
        "{red_summary}"
    );
    let blue_average = info["teams"][0]["summary"]["average_receipt_latency_ms"]
        .as_f64()
        .unwrap();
    assert!(
        (blue_average - a_latency).abs() < 1e-6,
        "{blue_average} vs {a_latency}"
    );
    assert_eq!(info["counts"]["received"], 3);
    let average = info["counts"]["average_receipt_latency_ms"]
        .as_f64()
        .unwrap();
    assert!(
        (average - a_latency).abs() < 1e-6,
        "only the watched receipt counts: {average} vs {a_latency}"
    );
    // The counter is the process's: other tests' receipts may add to it.
    let not_watched_after = not_watched_count(&app.metrics().await);
    assert!(
        not_watched_after >= not_watched_before + 2,
        "{not_watched_before} -> {not_watched_after}"
    );
    drop(red);
}

fn not_watched_count(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("scip_receipts_not_watched_total "))
        .map_or(0, |n| n.trim().parse().unwrap())
}
