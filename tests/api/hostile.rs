//! Hostile input: each gets a clear answer and changes nothing.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

async fn raw(app: &TestApp, method: &str, path: &str, body: Vec<u8>) -> Reply {
    let request = match method {
        "POST" => app.client.post(app.url(path)),
        _ => app.client.get(app.url(path)),
    };
    let response = request
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_and_ids_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    app.create("target", 1.0, package(60, &[("blue", &[("a", 30)])]))
        .await;

    // Deeply nested JSON: refused, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for path in ["/api/v1/exercises", "/api/v1/exercises/target/injects"] {
        let reply = raw(&app, "POST", path, deep.clone().into_bytes()).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
    }
    let nested_package = format!(
        r#"{{"package": {{"teams": [{{"id": "blue", "timeline_id": "t"}}], "duration": 1,
            "timelines": [{{"id": "t", "injects": [{{"id": "a", "time": 0, "type": "news",
            "content": {{"x": {}1{}}}}}]}}]}}}}"#,
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    let reply = raw(
        &app,
        "POST",
        "/api/v1/exercises",
        nested_package.into_bytes(),
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");

    // Invalid UTF-8 in a JSON body and in a control message.
    let mut bad = br#"{"reason": ""#.to_vec();
    bad.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    bad.extend_from_slice(br#""}"#);
    let reply = raw(&app, "POST", "/api/v1/exercises/target/start", bad.clone()).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
    let mut status = subscribe(&app, "/exercise/target/status").await;
    let control = subscribe(&app, "/exercise/target/control").await;
    control
        .client
        .publish(
            "/exercise/target/control",
            rumqttc::QoS::AtLeastOnce,
            false,
            bad,
        )
        .await
        .unwrap();
    status
        .collect_until(std::time::Duration::from_secs(15), |m| {
            m.payload["event"] == "invalid_command"
        })
        .await;

    // Wildcards, separators and control characters in ids.
    // Text-direction controls, invisible characters and surrounding spaces
    // make ids that read as something else, or two that look alike.
    for id in [
        "a+b",
        "a#",
        "a/b",
        "..",
        "tab\tid",
        "nul\u{0}id",
        "",
        "target\u{202E}",
        "ex\u{2066}1",
        "ex\u{200B}1",
        " target",
        "target ",
    ] {
        let reply = app
            .post(
                "/api/v1/exercises",
                Some(json!({"package": package(60, &[("blue", &[("a", 30)])]), "exercise_id": id})),
            )
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
    }
    for team in [
        "blue+",
        "#",
        "re/d",
        "a\u{1}",
        "blue\u{202E}",
        " blue",
        "blue\u{A0}",
    ] {
        let reply = app
            .post(
                "/api/v1/exercises",
                Some(
                    json!({"package": package(60, &[(team, &[("a", 30)])]), "exercise_id": "wild"}),
                ),
            )
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
    }
    let reply = app
        .post(
            "/api/v1/exercises/target/injects",
            Some(
                json!({"teams": ["blue"], "inject": {"id": "x/+#", "type": "news", "content": {}}}),
            ),
        )
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");

    // Path traversal in scenario folder names and media paths.
    for name in [
        "../four-teams",
        "..",
        "/etc",
        "four-teams/../four-teams",
        ".hidden",
    ] {
        let reply = app
            .post("/api/v1/exercises", Some(json!({"scenario": name})))
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
    }
    for path in [
        "/media/..%2F..%2Fetc%2Fpasswd",
        "/exercises/target/media/..%2F..%2Fetc%2Fpasswd",
        "/exercises/target/media/%2Fetc%2Fpasswd",
    ] {
        let (status, _) = app.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }

    // Nothing changed.
    let (_, list) = app.get("/api/v1/exercises").await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["target"]);
    let (_, target) = app.get("/api/v1/exercises/target").await;
    assert_eq!(target["state"], "initialized");
    assert_eq!(target["counts"]["scheduled"], 1);
}
