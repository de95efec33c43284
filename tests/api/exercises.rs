//! Creating exercises, from a scenario folder under the media root or an
//! inline package, and listing them; an invalid scenario is refused whole.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const SECS: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_an_exercise_from_a_scenario_folder() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/v1/exercises"))
        .json(&json!({"scenario": "four-teams", "speed": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        response.headers()["location"],
        "/api/v1/exercises/four-teams-demo"
    );
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["id"], "four-teams-demo");
    assert_eq!(
        created["name"],
        "Port of Kestrel Bay: fire aboard MV Nordic Aurora"
    );
    assert_eq!(created["state"], "initialized");
    assert_eq!(created["exercise_time"], 0);
    assert_eq!(created["formatted"], "T+00:00");
    assert_eq!(created["total"], 720);
    assert_eq!(created["speed"], 10.0);
    assert_eq!(created["run"], 1);
    assert_eq!(created["counts"]["scheduled"], 23);
    assert_eq!(created["counts"]["pending"], 23);
    assert_eq!(created["counts"]["delivered"], 0);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    let teams: Vec<(&str, &str)> = created["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap(),
                // Without the link's token.
                t["dashboard_url"]
                    .as_str()
                    .unwrap()
                    .split_once("?token=")
                    .expect("a signed link")
                    .0,
            )
        })
        .collect();
    let dashboard = |team: &str| format!("{}/exercises/four-teams-demo/teams/{team}", app.address);
    assert_eq!(
        teams,
        [
            ("blue", dashboard("blue").as_str()),
            ("red", dashboard("red").as_str()),
            ("orange", dashboard("orange").as_str()),
            ("green", dashboard("green").as_str()),
        ]
    );

    // The connection as it is: the broker is up from the start.
    assert_eq!(created["connected"], true, "{created}");
    let (status, one) = app.get("/api/v1/exercises/four-teams-demo").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one, created);

    // The same folder again: the id is taken, unless another one is given.
    let again = app
        .post("/api/v1/exercises", Some(json!({"scenario": "four-teams"})))
        .await;
    let error = assert_error(&again, StatusCode::CONFLICT, "conflict");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("four-teams-demo")
    );
    let (status, second) = app
        .post(
            "/api/v1/exercises",
            Some(json!({"scenario": "four-teams", "exercise_id": "second"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["speed"], 1.0);

    let (status, list) = app.get("/api/v1/exercises").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["four-teams-demo", "second"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_scenario_folders_outside_the_media_root() {
    let app = spawn_app().await;
    std::fs::write(app.media.join("secret.json"), "{}").unwrap();
    for name in [
        "..",
        "../media/four-teams",
        "four-teams/../four-teams",
        "/etc",
        "a\\b",
        "",
    ] {
        let reply = app
            .post("/api/v1/exercises", Some(json!({"scenario": name})))
            .await;
        let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(
            error["message"].as_str().unwrap().contains("folder name"),
            "{name:?}: {error}"
        );
    }
    let reply = app
        .post("/api/v1/exercises", Some(json!({"scenario": "missing"})))
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    let (_, list) = app.get("/api/v1/exercises").await;
    assert_eq!(list, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_an_exercise_from_an_inline_package() {
    let app = spawn_app().await;
    let created = app
        .create(
            "inline-1",
            2.5,
            package(
                300,
                &[
                    ("blue", &[("b-1", 0), ("b-2", 120)]),
                    ("red", &[("r-1", 60)]),
                ],
            ),
        )
        .await;
    assert_eq!(created["id"], "inline-1");
    assert_eq!(created["name"], "API test");
    assert_eq!(created["total"], 300);
    assert_eq!(created["speed"], 2.5);
    assert_eq!(created["counts"]["scheduled"], 3);
    assert_eq!(created["teams"][0]["name"], "Team blue");
    assert_eq!(created["teams"][1]["id"], "red");

    let (status, deliveries) = app.get("/api/v1/exercises/inline-1/deliveries").await;
    assert_eq!(status, StatusCode::OK);
    let pairs: Vec<(&str, &str, u64)> = deliveries
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["team_id"].as_str().unwrap(),
                d["inject_id"].as_str().unwrap(),
                d["due_exercise_time"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [("blue", "b-1", 0), ("blue", "b-2", 120), ("red", "r-1", 60)]
    );
    let first = &deliveries[0];
    assert_eq!(first["status"], "pending");
    assert_eq!(first["type"], "news");
    assert_eq!(first["attempts"], 0);
    assert_eq!(first["live"], false);
    for field in [
        "due_at",
        "published_at",
        "acknowledged_at",
        "latency_ms",
        "last_error",
    ] {
        assert!(first[field].is_null(), "{field}: {first}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_scenario_is_refused_with_every_error() {
    let app = spawn_app().await;
    let package = json!({
        "duration_minutes": 1,
        "teams": [
            {"id": "blue", "timeline_id": "blue-line"},
            {"id": "blue", "timeline_id": "blue-line"},
            {"id": "red", "timeline_id": "nowhere"},
        ],
        "timelines": [{"id": "blue-line", "injects": [
            {"id": "early", "time": -5, "type": "news", "content": {}},
            {"id": "late", "time": 120, "type": "news", "content": {}},
            {"id": "typeless", "time": 10, "content": {}},
        ]}],
    });
    let reply = app
        .post("/api/v1/exercises", Some(json!({"package": package})))
        .await;
    let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
    let details: Vec<&str> = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(details.len() >= 5, "{details:#?}");
    assert_eq!(
        error["message"],
        format!("{} problems: see details", details.len())
    );
    for needle in ["duplicate", "nowhere", "early", "late", "typeless"] {
        assert!(
            details.iter().any(|d| d.contains(needle)),
            "no error mentions {needle:?}: {details:#?}"
        );
    }
    let (_, list) = app.get("/api/v1/exercises").await;
    assert_eq!(list, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_exercise_reports_the_broker_connection_as_it_is() {
    let app = spawn_app().await;
    let small = || package(60, &[("blue", &[("a", 30)])]);
    let up = app.create("while-up", 1.0, small()).await;
    assert_eq!(up["connected"], true, "{up}");

    // The broker link goes; once an exercise has seen it go, a new one is
    // created knowing it too.
    app.proxy.set_up(false);
    app.wait_for("/api/v1/exercises/while-up", SECS, |e| {
        e["connected"] == false
    })
    .await;
    let down = app.create("while-down", 1.0, small()).await;
    assert_eq!(down["connected"], false, "{down}");
    let (status, got) = app.get("/api/v1/exercises/while-down").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, down);

    app.proxy.set_up(true);
    app.wait_for("/api/v1/exercises/while-down", SECS, |e| {
        e["connected"] == true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_learns_the_scenarios_start_time_of_day() {
    let app = spawn_app().await;
    let (status, created) = app
        .post("/api/v1/exercises", Some(json!({"scenario": "four-teams"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let mut blue = EventStream::open(
        &app,
        &team_path(&app, "four-teams-demo", "blue", "events").await,
    )
    .await;
    let seen = blue.until(SECS, "names", |_| true).await;
    let names = &seen.last().expect("the names event").data;
    assert_eq!(names["exercise"]["start_time"], "09:42", "{names}");
}
