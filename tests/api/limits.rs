//! Limits: over any of them is a clear 413, 429 or validation error, and
//! nothing changes.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

const SECS: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_commands_are_rate_limited_per_client_and_per_control_topic() {
    // Six a minute: bursts of five.
    let app = spawn_app_with(&["--max-commands-per-minute", "6"]).await;
    app.create("rate", 1.0, package(600, &[("blue", &[("a", 300)])]))
        .await;
    app.command("rate", "start").await;
    for command in ["pause", "resume", "pause", "resume"] {
        app.command("rate", command).await;
    }
    let response = app
        .client
        .post(app.url("/api/v1/exercises/rate/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("6 control commands a minute"), "{body}");
    assert!(
        message.contains("more than a burst of 5 control commands"),
        "the burst tripped, not the rate: {body}"
    );
    let (_, info) = app.get("/api/v1/exercises/rate").await;
    assert_eq!(
        info["state"], "running",
        "the refused pause changed nothing"
    );

    // The control topic has its own budget, per exercise.
    let mut status = subscribe(&app, "/exercise/rate/status").await;
    let control = subscribe(&app, "/exercise/rate/control").await;
    for n in 0..6 {
        let command = if n % 2 == 0 { "pause" } else { "resume" };
        control
            .client
            .publish(
                "/exercise/rate/control",
                rumqttc::QoS::AtLeastOnce,
                false,
                json!({"command": command}).to_string(),
            )
            .await
            .unwrap();
    }
    let seen = status
        .collect_until(SECS, |m| {
            m.payload["event"] == "command_refused"
                && m.payload["message"]
                    .as_str()
                    .is_some_and(|s| s.contains("rate limited"))
        })
        .await;
    assert!(!seen.is_empty());
    let (_, log) = app.get("/api/v1/exercises/rate/control-log").await;
    let refused: Vec<&serde_json::Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["source"] == "mqtt" && c["accepted"] == false)
        .collect();
    assert_eq!(refused.len(), 1, "{log}");
    let message = refused[0]["message"].as_str().unwrap();
    assert!(message.contains("rate limited"), "{message}");
    assert!(
        message.contains("more than a burst of 5 commands on the control topic"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_number_of_exercises_is_limited_and_deleting_one_makes_room() {
    let app = spawn_app_with(&["--max-exercises", "2"]).await;
    let small = || package(60, &[("blue", &[("a", 30)])]);
    app.create("one", 1.0, small()).await;
    app.create("two", 1.0, small()).await;
    let reply = app
        .post(
            "/api/v1/exercises",
            Some(json!({"package": small(), "exercise_id": "three"})),
        )
        .await;
    let error = assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, "limit_reached");
    assert!(
        error["message"].as_str().unwrap().contains("MAX_EXERCISES"),
        "{error}"
    );

    // A running exercise is stopped before it is deleted.
    app.command("one", "start").await;
    let delete = |id: &str| {
        app.client
            .delete(app.url(&format!("/api/v1/exercises/{id}")))
            .send()
    };
    let response = delete("one").await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    app.command("one", "stop").await;
    let mut retained = subscribe(&app, "/exercise/one/status").await;
    retained
        // Retained when stored before we subscribed, live otherwise.
        .collect_until(SECS, |m| m.payload["status"] == "stopped")
        .await;
    drop(retained);
    let response = delete("one").await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, _) = app.get("/api/v1/exercises/one").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.service.store().get_exercise("one").await.unwrap(), None);
    assert_eq!(delete("one").await.unwrap().status(), StatusCode::NOT_FOUND);
    // Its retained status is cleared: a new subscriber gets nothing, while
    // the other exercise's still comes.
    let mut gone = subscribe(&app, "/exercise/+/status").await;
    let first = gone
        .next(Duration::from_secs(3))
        .await
        .expect("two's status");
    assert_eq!(first.payload["exercise_id"], "two");
    assert!(gone.next(Duration::from_millis(500)).await.is_none());
    app.create("three", 1.0, small()).await;
    // The deleted exercise's actor, ended seconds ago, is let go of by the
    // next create (a finished task was kept, with its outcome, for the life
    // of the process): two remain, two's and three's.
    assert_eq!(app.service.actor_tasks().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_injects_are_refused() {
    let app = spawn_app_with(&["--max-request-bytes", "4096", "--max-inject-bytes", "600"]).await;
    let big = package(
        60,
        &[("blue", &(0..60).map(|n| ("i", n)).collect::<Vec<_>>())],
    );
    let reply = app
        .post("/api/v1/exercises", Some(json!({"package": big})))
        .await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    let mut package = package(60, &[("blue", &[("a", 10)])]);
    package["timelines"][0]["injects"][0]["content"]["body"] = json!("x".repeat(700));
    let reply = app
        .post(
            "/api/v1/exercises",
            Some(json!({"package": package, "exercise_id": "fat"})),
        )
        .await;
    let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("MAX_INJECT_BYTES"),
        "{error}"
    );

    app.create("live", 1.0, package_small()).await;
    let reply = app
        .post(
            "/api/v1/exercises/live/injects",
            Some(
                json!({"teams": ["blue"], "inject": {"id": "big", "type": "news",
                        "content": {"body": "y".repeat(700)}}}),
            ),
        )
        .await;
    let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("MAX_INJECT_BYTES"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_over_the_duration_limit_is_told_the_setting_that_admits_it() {
    // The earlier platform's key: "duration", in minutes; five hours.
    let mut long = package(60, &[("blue", &[("a", 30)])]);
    let fields = long.as_object_mut().unwrap();
    fields.remove("duration_minutes");
    fields.insert("duration".into(), json!(300));
    let create = json!({"package": long, "exercise_id": "long"});

    let app = spawn_app().await;
    let reply = app.post("/api/v1/exercises", Some(create.clone())).await;
    let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("\"duration\" 300 (18000 s) is over the limit of 7200 s"),
        "{error}"
    );
    assert!(message.contains("MAX_EXERCISE_DURATION"), "{error}");

    let app = spawn_app_with(&["--max-exercise-duration", "18000"]).await;
    let (status, created) = app.post("/api/v1/exercises", Some(create)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["total"], 18000);
}

fn package_small() -> serde_json::Value {
    package(60, &[("blue", &[("a", 30)])])
}
