//! Requests the API cannot serve: malformed or oversized bodies, unknown
//! routes and exercises, each answered with a JSON error.

use reqwest::StatusCode;
use serde_json::{Value, json};

use scip_orchestrator::http;

use crate::support::*;

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
    // A body that is JSON but not an object says what was expected, not
    // which element of it did not fit.
    for (body, got) in [
        (json!([1, 2]), "got an array"),
        (json!("four-teams"), "got a string"),
        (json!(5), "got a number"),
        (json!(null), "got null"),
    ] {
        let reply = app.post(create, Some(body)).await;
        check(
            reply.clone(),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "expected a JSON object with \"scenario\"",
        );
        check(reply, StatusCode::BAD_REQUEST, "invalid_input", got);
    }
    // Other bodies name their own fields.
    check(
        app.post("/api/v1/exercises/any/seek", Some(json!([10, "skip"])))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "expected a JSON object with \"to\" and \"mode\", got an array",
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
