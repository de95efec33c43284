//! Turn-based exercises through the API and the control topic.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const SECS: Duration = Duration::from_secs(15);

fn turn_package() -> Value {
    let inject = |id: &str, turn: u32, time: u32| json!({"id": id, "turn": turn, "time": time, "type": "news", "content": {"headline": id}});
    json!({
        "name": "Turns",
        "turn_based": true,
        "total_turns": 2,
        "duration_minutes": 0.1,
        "teams": [{"id": "blue", "timeline_id": "t"}],
        "timelines": [{"id": "t", "injects": [
            inject("t1-a", 1, 0), inject("t1-b", 1, 2), inject("t2-a", 2, 0), inject("t2-b", 2, 1),
        ]}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_based_exercise_pauses_at_each_turn_end_and_goes_on_at_next_turn() {
    let app = spawn_app().await;
    let created = app.create("turns", 2.0, turn_package()).await;
    assert_eq!(created["turn"], 0);
    assert_eq!(created["total_turns"], 2);
    let mut feeds = app.feeds("turns").await;
    let mut status = subscribe(&app, "/exercise/turns/status").await;
    let (status_code, refused) = app.post("/api/v1/exercises/turns/next_turn", None).await;
    assert_eq!(
        status_code,
        StatusCode::OK,
        "next_turn also starts turn 1: {refused}"
    );

    // Turn 1 runs its two injects, then the exercise pauses itself.
    let paused = status
        .collect_until(SECS, |m| m.payload["status"] == "paused")
        .await;
    let reason = paused.last().unwrap().payload["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("turn 1 of 2 is over"), "{reason}");
    let info = app.get("/api/v1/exercises/turns").await.1;
    assert_eq!(info["state"], "paused");
    assert_eq!(info["turn"], 1);
    assert_eq!(info["exercise_time"], 2);
    let turn1 = feeds
        .collect_until(SECS, |m| m.payload["id"] == "t1-b")
        .await;
    let times: Vec<(&str, &Value)> = turn1
        .iter()
        .map(|m| {
            (
                m.payload["id"].as_str().unwrap(),
                &m.payload["exerciseTime"],
            )
        })
        .collect();
    assert_eq!(times, [("t1-a", &json!(0)), ("t1-b", &json!(2))]);
    assert_eq!(
        turn1[0].payload["turn"], 1,
        "the inject's turn passes through"
    );
    // Turn 2 has not started: its injects wait.
    assert!(feeds.next(Duration::from_millis(1500)).await.is_none());
    let (_, list) = app.get("/api/v1/exercises/turns/deliveries").await;
    assert_eq!(find(&list, "blue", "t2-a")["status"], "pending");
    assert_eq!(find(&list, "blue", "t2-a")["due_exercise_time"], 2);
    // Resume does not skip to the next turn.
    let reply = app.post("/api/v1/exercises/turns/resume", None).await;
    let error = assert_error(&reply, StatusCode::CONFLICT, "conflict");
    assert!(
        error["message"].as_str().unwrap().contains("next_turn"),
        "{error}"
    );

    // next_turn on the control topic starts turn 2, timed from T+00:02.
    let control = subscribe(&app, "/exercise/turns/control").await;
    control
        .client
        .publish(
            "/exercise/turns/control",
            rumqttc::QoS::AtLeastOnce,
            false,
            json!({"command": "next_turn", "timestamp": "2026-11-27T00:00:00Z"}).to_string(),
        )
        .await
        .unwrap();
    let turn2 = feeds
        .collect_until(SECS, |m| m.payload["id"] == "t2-b")
        .await;
    let times: Vec<(&str, &Value)> = turn2
        .iter()
        .map(|m| {
            (
                m.payload["id"].as_str().unwrap(),
                &m.payload["exerciseTime"],
            )
        })
        .collect();
    assert_eq!(times, [("t2-a", &json!(2)), ("t2-b", &json!(3))]);
    // The last turn runs on to the end of the exercise.
    let done = app
        .wait_for("/api/v1/exercises/turns", SECS, |e| {
            e["state"] == "completed"
        })
        .await;
    assert_eq!(done["turn"], 2);
    assert_eq!(done["counts"]["delivered"], 4);
    let (_, log) = app.get("/api/v1/exercises/turns/control-log").await;
    let commands: Vec<(&str, &str)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["command"].as_str().unwrap(),
                c["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(commands[0].0, "next_turn");
    assert!(commands.contains(&("next_turn", "mqtt")), "{commands:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_turn_is_refused_where_it_does_not_fit() {
    let app = spawn_app().await;
    app.create("plain", 1.0, package(60, &[("blue", &[("a", 30)])]))
        .await;
    let reply = app.post("/api/v1/exercises/plain/next_turn", None).await;
    let error = assert_error(&reply, StatusCode::CONFLICT, "conflict");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("not turn-based"),
        "{error}"
    );

    app.create("turns", 1.0, turn_package()).await;
    app.command("turns", "start").await;
    let reply = app.post("/api/v1/exercises/turns/next_turn", None).await;
    let error = assert_error(&reply, StatusCode::CONFLICT, "conflict");
    assert!(
        error["message"].as_str().unwrap().contains("under way"),
        "{error}"
    );
}
