//! Live injects: sent now or at a later exercise time, to the teams' feeds.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const SECS: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_injects_reach_the_feeds_now_and_later() {
    let app = spawn_app().await;
    let id = "live";
    app.create(
        id,
        10.0,
        package(600, &[("blue", &[("b-1", 500)]), ("red", &[("r-1", 500)])]),
    )
    .await;
    let base = format!("/api/v1/exercises/{id}");
    let mut feeds = app.feeds(id).await;
    app.command(id, "start").await;
    // Past T+0, so "now" has a time of its own.
    let deadline = tokio::time::Instant::now() + SECS;
    while app.get(&base).await.1["exercise_time"].as_u64() < Some(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the clock does not move"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, sent) = app
        .post(
            &format!("{base}/injects"),
            Some(json!({"teams": ["blue"], "inject": {
                "id": "live-now", "type": "social", "priority": "critical",
                "content": {"text": "Breaking"}, "media": ["/media/x.jpg"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    assert_eq!(sent, json!({"scheduled": 1}));
    let seen = feeds
        .collect_until(SECS, |m| m.payload["id"] == "live-now")
        .await;
    let message = seen.last().unwrap();
    assert_eq!(message.topic, format!("/exercise/{id}/team/blue/feed"));
    assert_eq!(message.payload["type"], "social");
    assert_eq!(message.payload["priority"], "critical");
    assert_eq!(message.payload["content"]["text"], "Breaking");
    assert_eq!(message.payload["media"], json!(["/media/x.jpg"]));
    let now = app.wait_delivery(id, "blue", "live-now", "delivered").await;
    // Its feed message says when it was due: the moment it was sent.
    assert_eq!(message.payload["exerciseTime"], now["due_exercise_time"]);
    assert!(message.payload["exerciseTime"].as_u64().unwrap() > 0);
    assert_eq!(now["live"], true);
    assert_eq!(now["type"], "social");

    // Two exercise seconds ahead at 10x: 200 ms from now.
    let (_, exercise) = app.get(&base).await;
    let at = exercise["exercise_time"].as_u64().unwrap() + 2;
    let (status, sent) = app
        .post(
            &format!("{base}/injects"),
            Some(json!({"teams": ["blue", "red"], "at": at, "inject": {
                "id": "live-later", "type": "email", "content": {"subject": "Later"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    assert_eq!(sent, json!({"scheduled": 2}));
    let mut teams = BTreeSet::new();
    feeds
        .collect_until(SECS, |m| {
            if m.payload["id"] == "live-later" {
                assert_eq!(m.payload["exerciseTime"], at, "{:?}", m.payload);
                teams.insert(m.payload["team_id"].as_str().unwrap().to_owned());
            }
            teams.len() == 2
        })
        .await;
    for team in ["blue", "red"] {
        let d = app.wait_delivery(id, team, "live-later", "delivered").await;
        assert_eq!(d["due_exercise_time"], at);
        assert_eq!(d["live"], true);
    }

    let injects = format!("{base}/injects");
    let send = |body: Value| app.post(&injects, Some(body));
    let inject = json!({"id": "live-now", "type": "news", "content": {}});
    let error = assert_error(
        &send(json!({"teams": ["blue"], "inject": inject})).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert!(error["message"].as_str().unwrap().contains("live-now"));
    let fresh = json!({"id": "fresh", "type": "news", "content": {}});
    assert_error(
        &send(json!({"teams": ["purple"], "inject": fresh})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &send(json!({"teams": [], "inject": fresh})).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    assert_error(
        &send(json!({"teams": ["blue"], "at": 0, "inject": fresh})).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert_error(
        &send(json!({"teams": ["blue"], "at": 601, "inject": fresh})).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    let error = assert_error(
        &send(json!({"teams": ["blue"], "inject": {"id": "a/b", "content": 5}})).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    assert!(
        error["details"].as_array().unwrap().len() >= 2,
        "every problem with the inject: {error}"
    );
    assert_error(
        &send(json!({"teams": ["blue"], "at": -3, "inject": fresh})).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
}
