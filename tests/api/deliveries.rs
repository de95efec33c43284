//! Delivery records: listed and filtered, failed ones retried, pending ones
//! cancelled or rescheduled.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const SECS: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_listed_and_filtered() {
    let app = spawn_app().await;
    let id = "listed";
    app.create(
        id,
        60.0,
        package(
            120,
            &[
                ("blue", &[("b-1", 0), ("b-2", 30)]),
                ("red", &[("r-1", 60)]),
            ],
        ),
    )
    .await;
    app.command(id, "start").await;
    let exercise = app
        .wait_for(&format!("/api/v1/exercises/{id}"), SECS, |e| {
            e["state"] == "completed" && e["counts"]["delivered"] == 3
        })
        .await;
    assert_eq!(exercise["exercise_time"], 120);
    assert!(exercise["counts"]["average_latency_ms"].as_f64().unwrap() >= 0.0);

    let base = format!("/api/v1/exercises/{id}");
    let (status, all) = app.get(&format!("{base}/deliveries")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all.as_array().unwrap().len(), 3);
    for d in all.as_array().unwrap() {
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["live"], false, "{d}");
        assert!(d["latency_ms"].as_f64().unwrap() >= 0.0, "{d}");
        assert!(d["last_error"].is_null(), "{d}");
        for field in ["due_at", "published_at", "acknowledged_at"] {
            let at = d[field].as_str().unwrap();
            assert!(at.ends_with('Z') && at.len() == 24, "{field}: {at}");
        }
    }
    let b2 = find(&all, "blue", "b-2");
    assert_eq!(b2["due_exercise_time"], 30);

    let inject_ids = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|d| d["inject_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, blue) = app.get(&format!("{base}/deliveries?team=blue")).await;
    assert_eq!(inject_ids(&blue), ["b-1", "b-2"]);
    let (_, delivered) = app
        .get(&format!("{base}/deliveries?team=red&status=delivered"))
        .await;
    assert_eq!(inject_ids(&delivered), ["r-1"]);
    let (_, pending) = app.get(&format!("{base}/deliveries?status=pending")).await;
    assert_eq!(pending, json!([]));
    let (status, failures) = app.get(&format!("{base}/failures")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(failures, json!([]));

    let error = assert_error(
        &app.get(&format!("{base}/deliveries?status=lost")).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    assert!(error["message"].as_str().unwrap().contains("skipped"));
    let error = assert_error(
        &app.get(&format!("{base}/deliveries?team=purple")).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    assert!(error["message"].as_str().unwrap().contains("blue, red"));
    assert_error(
        &app.get(&format!("{base}/failures?team=purple")).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    // The run is over: nothing to retry until a reset.
    let error = assert_error(
        &app.post(&format!("{base}/deliveries/retry"), None).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert!(error["message"].as_str().unwrap().contains("completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_listed_and_retried() {
    let app = spawn_app_with(&[
        "--delivery-timeout-ms",
        "1500",
        "--max-retry-attempts",
        "1",
        "--retry-delay-seconds",
        "0",
    ])
    .await;
    let id = "flaky";
    app.create(
        id,
        1.0,
        package(
            600,
            &[
                ("blue", &[("b-1", 0), ("b-2", 500)]),
                ("red", &[("r-1", 0)]),
            ],
        ),
    )
    .await;
    let base = format!("/api/v1/exercises/{id}");
    // Only failed deliveries can be retried.
    let error = assert_error(
        &app.post(&format!("{base}/teams/blue/injects/b-2/retry"), None)
            .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert!(
        error["message"].as_str().unwrap().contains("not failed"),
        "{error}"
    );

    // The broker hangs: nothing is acknowledged, both first injects fail.
    app.proxy.set_stalled(true);
    app.command(id, "start").await;
    let failures = app
        .wait_for(&format!("{base}/failures"), SECS, |list| {
            list.as_array().unwrap().len() == 2
        })
        .await;
    for d in failures.as_array().unwrap() {
        assert_eq!(d["status"], "failed", "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
        assert!(
            d["last_error"].as_str().unwrap().contains("acknowledg"),
            "{d}"
        );
    }
    let (_, red) = app.get(&format!("{base}/failures?team=red")).await;
    assert_eq!(red.as_array().unwrap().len(), 1);
    assert_eq!(red[0]["inject_id"], "r-1");

    // Retried while the broker still hangs: in flight again (the hung
    // broker's late acknowledgements would otherwise settle them first).
    let (status, retried) = app
        .post(&format!("{base}/teams/blue/injects/b-1/retry"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried, json!({"retried": 1}));
    let (_, failures) = app.get(&format!("{base}/failures")).await;
    assert_eq!(failures.as_array().unwrap().len(), 1, "{failures}");
    assert_eq!(failures[0]["inject_id"], "r-1");
    let (_, blue) = app.get(&format!("{base}/deliveries?team=blue")).await;
    assert_eq!(find(&blue, "blue", "b-1")["status"], "retrying");
    assert_error(
        &app.post(&format!("{base}/teams/blue/injects/b-1/retry"), None)
            .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    let (status, retried) = app.post(&format!("{base}/deliveries/retry"), None).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried, json!({"retried": 1}));
    let (_, failures) = app.get(&format!("{base}/failures")).await;
    assert_eq!(failures, json!([]));
    let (_, retried) = app.post(&format!("{base}/deliveries/retry"), None).await;
    assert_eq!(retried, json!({"retried": 0}));

    // The broker recovers: both reach their teams, late.
    let mut feeds = app.feeds(id).await;
    app.proxy.set_stalled(false);
    for (team, inject) in [("blue", "b-1"), ("red", "r-1")] {
        let d = app.wait_delivery(id, team, inject, "delivered").await;
        assert_eq!(d["late"], true, "{d}");
    }
    let mut teams = BTreeSet::new();
    feeds
        .collect_until(SECS, |m| {
            teams.insert(m.payload["team_id"].as_str().unwrap().to_owned());
            teams.len() == 2
        })
        .await;

    assert_error(
        &app.post(&format!("{base}/teams/blue/injects/nope/retry"), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.post(&format!("{base}/teams/purple/injects/b-1/retry"), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_not_yet_due_can_be_cancelled_and_rescheduled() {
    let app = spawn_app().await;
    let id = "edits";
    app.create(
        id,
        10.0,
        package(600, &[("blue", &[("b-0", 0), ("b-1", 300), ("b-2", 400)])]),
    )
    .await;
    let base = format!("/api/v1/exercises/{id}");
    let inject = |i: &str, action: &str| format!("{base}/teams/blue/injects/{i}/{action}");

    let (status, cancelled) = app.post(&inject("b-1", "cancel"), None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["inject_id"], "b-1");
    assert_eq!(cancelled["status"], "cancelled");
    assert_error(
        &app.post(&inject("b-1", "cancel"), None).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert_error(
        &app.post(&inject("nope", "cancel"), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let (status, moved) = app
        .post(&inject("b-2", "reschedule"), Some(json!({"at": 5})))
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["due_exercise_time"], 5);
    assert_eq!(moved["status"], "pending");
    assert_error(
        &app.post(&inject("b-2", "reschedule"), Some(json!({"at": 601})))
            .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert_error(
        &app.post(&inject("b-2", "reschedule"), Some(json!({"at": "soon"})))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    assert_error(
        &app.post(&inject("b-2", "reschedule"), None).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    assert_error(
        &app.post(&inject("nope", "reschedule"), Some(json!({"at": 10})))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let mut feeds = app.feeds(id).await;
    app.command(id, "start").await;
    let b2 = app.wait_delivery(id, "blue", "b-2", "delivered").await;
    assert_eq!(b2["due_exercise_time"], 5);
    let seen = feeds
        .collect_until(SECS, |m| m.payload["id"] == "b-2")
        .await;
    let ids: Vec<&str> = seen
        .iter()
        .map(|m| m.payload["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b-0", "b-2"]);
    // Delivered is final: neither cancelled nor moved any more.
    assert_error(
        &app.post(&inject("b-2", "cancel"), None).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert_error(
        &app.post(&inject("b-2", "reschedule"), Some(json!({"at": 500})))
            .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    let (_, all) = app.get(&format!("{base}/deliveries")).await;
    assert_eq!(find(&all, "blue", "b-1")["status"], "cancelled");
}
