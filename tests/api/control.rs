//! Control commands: the lifecycle from start to reset, the control log that
//! records them, and seeking a paused exercise.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const SECS: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_follow_the_lifecycle_and_are_audited() {
    let app = spawn_app().await;
    let id = "life";
    app.create(
        id,
        10.0,
        package(600, &[("blue", &[("b-1", 0), ("b-2", 500)])]),
    )
    .await;
    let command = |name: &str| format!("/api/v1/exercises/{id}/{name}");

    let started = app.command(id, "start").await;
    assert_eq!(
        started,
        json!({"from": "initialized", "to": "running", "command": "start", "reason": null, "exercise_time": 0})
    );
    app.wait_for(&format!("/api/v1/exercises/{id}"), SECS, |e| {
        e["state"] == "running" && e["exercise_time"].as_u64() >= Some(1)
    })
    .await;

    let (status, paused) = app
        .post(
            &command("pause"),
            Some(json!({"reason": "Technical issue with Team Green"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["from"], "running");
    assert_eq!(paused["to"], "paused");
    assert_eq!(paused["command"], "pause");
    assert_eq!(paused["reason"], "Technical issue with Team Green");
    assert!(paused["exercise_time"].as_u64().unwrap() >= 1);

    let refused = assert_error(
        &app.post(&command("pause"), None).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("already paused"),
        "{refused}"
    );
    app.wait_for(&format!("/api/v1/exercises/{id}"), SECS, |e| {
        e["state"] == "paused"
    })
    .await;

    // An empty body, a JSON null reason and no content type all work.
    let (status, resumed) = app
        .post_raw(
            &command("resume"),
            Some("application/json"),
            "{\"reason\": null}",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["to"], "running");
    assert_error(
        &app.post_raw(&command("stop"), Some("text/plain"), "").await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_error(
        &app.post(&command("stop"), Some(json!({"reason": 5}))).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    let stopped = app.command(id, "stop").await;
    assert_eq!(
        (&stopped["from"], &stopped["to"]),
        (&json!("running"), &json!("stopped"))
    );
    let refused = assert_error(
        &app.post(&command("start"), None).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("reset it first")
    );
    let error = assert_error(
        &app.post(&command("explode"), None).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("explode"), "{message}");
    for valid in ["start", "pause", "resume", "stop", "reset", "next_turn"] {
        assert!(message.contains(valid), "{message} lists {valid}");
    }
    // A valid command for an exercise that does not exist stays a 404.
    assert_error(
        &app.post("/api/v1/exercises/no-such-exercise/pause", None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let reset = app.command(id, "reset").await;
    assert_eq!(
        (&reset["from"], &reset["to"]),
        (&json!("stopped"), &json!("initialized"))
    );
    let exercise = app
        .wait_for(&format!("/api/v1/exercises/{id}"), SECS, |e| {
            e["state"] == "initialized" && e["run"] == 2
        })
        .await;
    assert_eq!(exercise["exercise_time"], 0);
    assert_eq!(exercise["counts"]["pending"], 2);

    let (status, log) = app
        .get(&format!("/api/v1/exercises/{id}/control-log"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let rows: Vec<(&str, bool, Option<&str>)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["source"], "api:127.0.0.1", "{r}");
            assert!(r["at"].as_str().unwrap().ends_with('Z'), "{r}");
            (
                r["command"].as_str().unwrap(),
                r["accepted"].as_bool().unwrap(),
                r["reason"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("start", true, None),
            ("pause", true, Some("Technical issue with Team Green")),
            ("pause", false, None),
            ("resume", true, None),
            ("stop", true, None),
            ("start", false, None),
            ("reset", true, None),
        ]
    );
    let refusal = &log[2];
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains("already paused"),
        "{refusal}"
    );
    assert!(log[0]["message"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_exercise_seeks_forward_delivering_or_skipping() {
    let app = spawn_app().await;
    let id = "seeker";
    app.create(
        id,
        1.0,
        package(
            600,
            &[(
                "blue",
                &[("b-0", 0), ("b-100", 100), ("b-200", 200), ("b-300", 300)],
            )],
        ),
    )
    .await;
    let base = format!("/api/v1/exercises/{id}");
    let seek_path = format!("{base}/seek");
    let seek = |body: Value| app.post(&seek_path, Some(body));
    let error = assert_error(
        &seek(json!({"to": 100, "mode": "skip"})).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert!(error["message"].as_str().unwrap().contains("paused"));
    app.command(id, "start").await;
    app.wait_delivery(id, "blue", "b-0", "delivered").await;
    assert_error(
        &seek(json!({"to": 100, "mode": "skip"})).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    app.command(id, "pause").await;

    let (status, skipped) = seek(json!({"to": 150, "mode": "skip"})).await;
    assert_eq!(status, StatusCode::OK, "{skipped}");
    assert_eq!(skipped, json!({"passed_over": 1}));
    let (_, all) = app.get(&format!("{base}/deliveries")).await;
    assert_eq!(find(&all, "blue", "b-100")["status"], "skipped");

    let mut feeds = app.feeds(id).await;
    let (status, delivered) = seek(json!({"to": 250, "mode": "deliver"})).await;
    assert_eq!(status, StatusCode::OK, "{delivered}");
    assert_eq!(delivered, json!({"passed_over": 1}));
    app.wait_delivery(id, "blue", "b-200", "delivered").await;
    // Sent as the clock jumped: at the second it jumped to.
    feeds
        .collect_until(SECS, |m| {
            m.payload["id"] == "b-200" && m.payload["delivered_at"] == 250
        })
        .await;
    let exercise = app
        .wait_for(&base, SECS, |e| {
            e["state"] == "paused" && e["exercise_time"] == 250
        })
        .await;
    assert_eq!(exercise["counts"]["skipped"], 1);
    assert_eq!(find(&all, "blue", "b-300")["status"], "pending");

    assert_error(
        &seek(json!({"to": 100, "mode": "deliver"})).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert_error(
        &seek(json!({"to": 601, "mode": "deliver"})).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    let error = assert_error(
        &seek(json!({"to": 400, "mode": "sideways"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    assert!(error["message"].as_str().unwrap().contains("mode"));
    assert_error(
        &seek(json!({"mode": "skip"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );

    // Every seek the exercise was asked for is in the control log, refused
    // ones included; an accepted one with the second it jumped to and what
    // it passed over.
    let (status, log) = app.get(&format!("{base}/control-log")).await;
    assert_eq!(status, StatusCode::OK);
    let log = log.as_array().unwrap();
    let commands: Vec<(&str, bool)> = log
        .iter()
        .map(|r| {
            (
                r["command"].as_str().unwrap(),
                r["accepted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        commands,
        [
            ("seek", false),
            ("start", true),
            ("seek", false),
            ("pause", true),
            ("seek", true),
            ("seek", true),
            ("seek", false),
            ("seek", false),
        ]
    );
    assert!(
        log.iter().all(|r| r["source"] == "api:127.0.0.1"),
        "{log:?}"
    );
    assert_eq!(log[1]["exercise_time"], 0, "start at T+0");
    let (skip, deliver) = (&log[4], &log[5]);
    assert_eq!(skip["exercise_time"], 150);
    let message = skip["message"].as_str().unwrap();
    assert!(
        message.ends_with("to T+02:30: 1 passed over, skipped"),
        "{message}"
    );
    assert_eq!(deliver["exercise_time"], 250);
    assert_eq!(
        deliver["message"],
        "from T+02:30 to T+04:10: 1 passed over, sent"
    );
    let refused = log[6]["message"].as_str().unwrap();
    assert!(refused.contains("T+01:40"), "{refused}");
}
