//! The HTTP API of `serve` end to end: every endpoint, its errors, and what
//! reaches the teams' feeds, against a real Mosquitto and SQLite.

mod aar;
mod access;
mod dashboards;
mod hostile;
mod limits;
mod package_paths;
mod packages;
mod support;
mod turns;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;

use scip_orchestrator::http;

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
    assert_eq!(created["counts"]["scheduled"], 15);
    assert_eq!(created["counts"]["pending"], 15);
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

    let (status, mut one) = app.get("/api/v1/exercises/four-teams-demo").await;
    assert_eq!(status, StatusCode::OK);
    // Whether the actor has seen the broker connection yet is a race.
    assert!(one["connected"].is_boolean());
    one["connected"] = created["connected"].clone();
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
async fn malformed_requests_get_json_errors() {
    let app = spawn_app().await;
    let create = "/api/v1/exercises";
    let check = |reply: Reply, status: StatusCode, code: &str, needle: &str| {
        let error = assert_error(&reply, status, code);
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{needle:?} not in {error}"
        );
    };
    check(
        app.post_raw(create, Some("application/json"), "{\"scenario\": ")
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "EOF",
    );
    check(
        app.post_raw(create, Some("application/json"), "").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "JSON body",
    );
    check(
        app.post(create, Some(json!({"scenario": 5}))).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "scenario: invalid type",
    );
    check(
        app.post(
            create,
            Some(json!({"scenario": "four-teams", "speed": "fast"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "speed",
    );
    check(
        app.post(create, Some(json!({"scenario": "four-teams", "sped": 2})))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "unknown field `sped`",
    );
    check(
        app.post(create, Some(json!({}))).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "give \"scenario\"",
    );
    check(
        app.post(
            create,
            Some(json!({"scenario": "four-teams", "package": package(60, &[])})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "not both",
    );
    check(
        app.post(create, Some(json!({"scenario": "four-teams", "speed": 0})))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "speed",
    );
    check(
        app.post(
            create,
            Some(json!({"scenario": "four-teams", "exercise_id": "a/b"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "exercise_id",
    );
    check(
        app.post_raw(create, Some("text/plain"), "{\"scenario\": \"four-teams\"}")
            .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "application/json",
    );
    check(
        app.post_raw(create, None, "{\"scenario\": \"four-teams\"}")
            .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "none",
    );
    // Routing and method errors are JSON too.
    check(
        app.get("/api/v1/nothing-here").await,
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint",
    );
    let response = app.client.delete(app.url(create)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(response.headers().contains_key("allow"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    check(
        app.get("/api/v1/exercises/x/deliveries?status=failed&team")
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "x",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_with_a_json_error() {
    use tower::ServiceExt;
    let app = spawn_app().await;
    let big = format!("{{\"scenario\": \"{}\"}}", "x".repeat(http::MAX_BODY_BYTES));
    for declared in [true, false] {
        let mut request = axum::http::Request::post("/api/v1/exercises")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"));
        if declared {
            request = request.header("content-length", big.len());
        }
        let request = request.body(axum::body::Body::from(big.clone())).unwrap();
        let response = http::router(app.service.clone())
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "content-length {declared}"
        );
        assert_eq!(response.headers()["content-type"], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_exercise_is_not_found_everywhere() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/exercises/ghost",
        "/api/v1/exercises/ghost/deliveries",
        "/api/v1/exercises/ghost/deliveries?team=blue",
        "/api/v1/exercises/ghost/failures",
        "/api/v1/exercises/ghost/control-log",
    ] {
        let error = assert_error(&app.get(path).await, StatusCode::NOT_FOUND, "not_found");
        assert!(
            error["message"].as_str().unwrap().contains("ghost"),
            "{path}: {error}"
        );
    }
    let posts = [
        ("/api/v1/exercises/ghost/start", None),
        (
            "/api/v1/exercises/ghost/pause",
            Some(json!({"reason": "why"})),
        ),
        ("/api/v1/exercises/ghost/deliveries/retry", None),
        ("/api/v1/exercises/ghost/teams/blue/injects/b-1/retry", None),
        (
            "/api/v1/exercises/ghost/teams/blue/injects/b-1/cancel",
            None,
        ),
        (
            "/api/v1/exercises/ghost/teams/blue/injects/b-1/reschedule",
            Some(json!({"at": 10})),
        ),
        (
            "/api/v1/exercises/ghost/injects",
            Some(json!({"teams": ["blue"], "inject": {"id": "x", "type": "news", "content": {}}})),
        ),
        (
            "/api/v1/exercises/ghost/seek",
            Some(json!({"to": 10, "mode": "skip"})),
        ),
    ];
    for (path, body) in posts {
        let error = assert_error(
            &app.post(path, body).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
        assert!(
            error["message"].as_str().unwrap().contains("ghost"),
            "{path}: {error}"
        );
    }
}

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
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert!(error["message"].as_str().unwrap().contains("explode"));

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
    feeds
        .collect_until(SECS, |m| m.payload["id"] == "b-200")
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    assert_eq!(
        app.get("/healthz").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        app.get("/readyz").await,
        (StatusCode::OK, json!({"status": "ready"}))
    );

    let metrics = app.metrics().await;
    for state in ["initialized", "running", "paused", "stopped", "completed"] {
        assert!(
            metrics.contains(&format!("scip_exercises{{state=\"{state}\"}} 0\n")),
            "{metrics}"
        );
    }
    assert!(metrics.contains("# TYPE scip_exercises gauge"), "{metrics}");
    assert!(metrics.contains("scip_mqtt_connected 1\n"), "{metrics}");

    let id = "metered";
    app.create(id, 10.0, package(600, &[("blue", &[("b-0", 0)])]))
        .await;
    app.create("idle", 1.0, package(60, &[("blue", &[("b-0", 0)])]))
        .await;
    app.command(id, "start").await;
    app.wait_delivery(id, "blue", "b-0", "delivered").await;
    // The gauges count what GET shows.
    app.wait_for(&format!("/api/v1/exercises/{id}"), SECS, |e| {
        e["state"] == "running"
    })
    .await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("scip_exercises{state=\"running\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scip_exercises{state=\"initialized\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scip_deliveries_total{status=\"delivered\"}"),
        "{metrics}"
    );
    // Current records by status: "idle" has one pending, "metered" one delivered.
    assert!(
        metrics.contains("scip_deliveries{status=\"delivered\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scip_deliveries{status=\"pending\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scip_delivery_latency_seconds_bucket{le=\"0.001\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scip_delivery_latency_seconds_bucket{le=\"10\"}"),
        "{metrics}"
    );

    // The broker link goes: not ready, and the gauge says so.
    app.proxy.set_up(false);
    let deadline = tokio::time::Instant::now() + SECS;
    let error = loop {
        let reply = app.get("/readyz").await;
        if reply.0 == StatusCode::SERVICE_UNAVAILABLE {
            break assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(
        error["message"].as_str().unwrap().contains("MQTT"),
        "{error}"
    );
    assert!(app.metrics().await.contains("scip_mqtt_connected 0\n"));
    assert_eq!(app.get("/healthz").await.0, StatusCode::OK);
    app.proxy.set_up(true);
    app.wait_for("/readyz", SECS, |body| body["status"] == "ready")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_endpoint() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert_eq!(doc["info"]["title"], "scip-orchestrator");
    let mut listed = BTreeSet::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no response"
            );
            listed.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let served: BTreeSet<String> = [
        "POST /api/v1/exercises",
        "GET /api/v1/exercises",
        "GET /api/v1/exercises/{id}",
        "DELETE /api/v1/exercises/{id}",
        "POST /api/v1/exercises/{id}/{command}",
        "GET /api/v1/exercises/{id}/deliveries",
        "GET /api/v1/exercises/{id}/failures",
        "POST /api/v1/exercises/{id}/deliveries/retry",
        "POST /api/v1/exercises/{id}/teams/{team}/injects/{inject}/retry",
        "POST /api/v1/exercises/{id}/teams/{team}/injects/{inject}/cancel",
        "POST /api/v1/exercises/{id}/teams/{team}/injects/{inject}/reschedule",
        "POST /api/v1/exercises/{id}/injects",
        "POST /api/v1/exercises/{id}/seek",
        "GET /api/v1/exercises/{id}/control-log",
        "GET /api/v1/exercises/{id}/report",
        "GET /api/v1/exercises/{id}/report.csv",
        "GET /api/v1/exercises/{id}/report/control-log.csv",
        "GET /api/v1/exercises/{id}/report.html",
        "GET /api/v1/exercises/{id}/events",
        "GET /api/v1/exercises/{id}/teams/{team}/events",
        "POST /api/v1/exercises/{id}/teams/{team}/receipts",
        "POST /api/v1/exercises/{id}/teams/{team}/link",
        "DELETE /api/v1/exercises/{id}/teams/{team}/link",
        "GET /api/v1/scenarios",
        "POST /api/v1/packages",
        "GET /api/v1/tokens",
        "POST /api/v1/tokens",
        "DELETE /api/v1/tokens/{token}",
        "GET /api/v1/packages/{name}/archive",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /api/openapi.json",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(listed, served);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "ExerciseResponse",
        "DeliveryResponse",
        "TransitionResponse",
        "ControlLogEntry",
        "ErrorResponse",
        "CreateExerciseRequest",
        "SendInjectRequest",
        "SeekRequest",
        "ReceiptsRequest",
        "ScenarioResponse",
        "AfterActionReport",
    ] {
        assert!(schemas.contains_key(schema), "no schema {schema}");
    }
    // The document is what the router serves as well.
    assert_eq!(doc, serde_json::to_value(http::openapi_document()).unwrap());
}
