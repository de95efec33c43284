//! What the browser pages use: the team and control-room event streams,
//! receipts, the embedded pages and the media folder.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const SECS: Duration = Duration::from_secs(15);

fn ids(items: &Value) -> Vec<&str> {
    items
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| i["message"]["id"].as_str().expect("an id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_stream_replays_history_then_follows_the_feed_live() {
    let _receipts = RECEIPT_METRICS.lock().await;
    let app = spawn_app().await;
    let package = package(
        60,
        &[
            ("blue", &[("a", 0), ("b", 1), ("c", 40)]),
            ("red", &[("r", 1)]),
        ],
    );
    app.create("ex-sse", 2.0, package).await;
    let mut blue =
        EventStream::open(&app, &team_path(&app, "ex-sse", "blue", "events").await).await;
    let first = blue.next(SECS).await;
    assert_eq!(first.event, "clock", "{first:?}");
    assert_eq!(first.data["status"], "initialized");
    assert_eq!(first.data["formatted"], "T+00:00");
    assert_eq!(first.data["total"], 60);
    assert_eq!(first.data["run"], 1);
    let names = blue.next(SECS).await;
    assert_eq!(names.event, "names");
    assert_eq!(
        names.data["exercise"],
        json!({"id": "ex-sse", "name": "API test"})
    );
    assert_eq!(
        names.data["team"],
        json!({"id": "blue", "name": "Team blue"})
    );
    let history = blue.next(SECS).await;
    assert_eq!(history.event, "history");
    assert_eq!(history.data, json!({"run": 1, "injects": []}));
    // An open dashboard counts its team as connected.
    let info = app
        .wait_for("/api/v1/exercises/ex-sse", SECS, |e| {
            e["teams_connected"] == 1
        })
        .await;
    assert_eq!(info["teams"][0]["dashboards"], 1);
    assert_eq!(info["teams"][1]["dashboards"], 0);

    app.command("ex-sse", "start").await;
    let seen = blue
        .until(SECS, "inject", |d| d["message"]["id"] == "b")
        .await;
    let injects: Vec<&Value> = seen
        .iter()
        .filter(|e| e.event == "inject")
        .map(|e| &e.data)
        .collect();
    assert_eq!(
        injects
            .iter()
            .map(|d| &d["message"]["id"])
            .collect::<Vec<_>>(),
        ["a", "b"],
        "blue gets its own injects in order, and never red's"
    );
    let a = &injects[0]["message"];
    assert_eq!(a["team_id"], "blue");
    assert_eq!(a["exercise_id"], "ex-sse");
    assert_eq!(a["exerciseTime"], 0);
    assert_eq!(a["priority"], "high");
    assert_eq!(a["content"]["headline"], "a for blue");
    assert!(a["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(injects[0]["received"], false);
    assert!(
        seen.iter()
            .any(|e| e.event == "clock" && e.data["status"] == "running"),
        "{seen:?}"
    );

    // A late join (or a reload) starts with everything delivered so far.
    let mut late =
        EventStream::open(&app, &team_path(&app, "ex-sse", "blue", "events").await).await;
    assert_eq!(late.next(SECS).await.event, "clock");
    assert_eq!(late.next(SECS).await.event, "names");
    let history = late.next(SECS).await;
    assert_eq!(history.event, "history");
    assert_eq!(history.data["run"], 1);
    assert_eq!(ids(&history.data["injects"]), ["a", "b"]);
    assert_eq!(
        history.data["injects"][1]["message"]["content"]["headline"],
        "b for blue"
    );

    // Receipts: recorded once, visible in the records, counts and metrics.
    // The histogram is the process's (every app of this binary), so count
    // from what it held before; `RECEIPT_METRICS` keeps others out meanwhile.
    let receipts_before = receipt_count(&app.metrics().await);
    let receipts = &team_path(&app, "ex-sse", "blue", "receipts").await;
    let (status, body) = app
        .post(receipts, Some(json!({"run": 1, "inject_ids": ["a", "b"]})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recorded"], 2);
    let (_, again) = app
        .post(receipts, Some(json!({"run": 1, "inject_ids": ["a"]})))
        .await;
    assert_eq!(again["recorded"], 0, "a repeated receipt changes nothing");
    let (_, list) = app.get("/api/v1/exercises/ex-sse/deliveries").await;
    for inject in ["a", "b"] {
        let d = find(&list, "blue", inject);
        assert!(d["received_at"].as_str().unwrap().ends_with('Z'), "{d}");
        let latency = d["receipt_latency_ms"].as_f64().unwrap();
        assert!(latency >= 0.0, "{d}");
    }
    assert_eq!(find(&list, "blue", "c")["received_at"], Value::Null);
    let info = app.get("/api/v1/exercises/ex-sse").await.1;
    assert_eq!(info["counts"]["received"], 2);
    assert!(
        info["counts"]["average_receipt_latency_ms"]
            .as_f64()
            .unwrap()
            >= 0.0
    );
    let metrics = app.metrics().await;
    assert_eq!(
        receipt_count(&metrics),
        receipts_before + 2,
        "two receipts more in the histogram: {metrics}"
    );
    assert!(metrics.contains("scip_teams_connected 1"), "{metrics}");
    // The next page load knows what was confirmed.
    let mut third =
        EventStream::open(&app, &team_path(&app, "ex-sse", "blue", "events").await).await;
    third.next(SECS).await;
    third.next(SECS).await;
    let history = third.next(SECS).await;
    assert_eq!(history.data["injects"][0]["received"], true);
    drop(third);

    // Monitoring messages carry the receipts and the connected teams.
    let mut monitoring = crate::support::subscribe(&app, "/exercise/ex-sse/monitoring").await;
    monitoring
        .collect_until(SECS, |m| {
            m.payload["teams_connected"] == 1 && m.payload["injects_received"] == 2
        })
        .await;

    // A pause shows on the dashboard with its reason.
    let (status, _) = app
        .post(
            "/api/v1/exercises/ex-sse/pause",
            Some(json!({"reason": "Fire alarm in the building"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let paused = blue.until(SECS, "clock", |d| d["status"] == "paused").await;
    let clock = &paused.last().unwrap().data;
    assert_eq!(clock["reason"], "Fire alarm in the building");
    // A reset starts the feed over.
    app.command("ex-sse", "reset").await;
    let reset = blue.until(SECS, "history", |d| d["run"] == 2).await;
    assert_eq!(reset.last().unwrap().data["injects"], json!([]));
    let clock = blue.until(SECS, "clock", |d| d["run"] == 2).await;
    assert_eq!(clock.last().unwrap().data["status"], "initialized");

    // Closed dashboards stop counting.
    drop(blue);
    drop(late);
    app.wait_for("/api/v1/exercises/ex-sse", SECS, |e| {
        e["teams_connected"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_and_streams_refuse_what_does_not_exist() {
    let app = spawn_app().await;
    app.create("ex-r", 1.0, package(60, &[("blue", &[("a", 30)])]))
        .await;
    for path in [
        "/api/v1/exercises/nope/teams/blue/events",
        "/api/v1/exercises/ex-r/teams/green/events",
        "/api/v1/exercises/nope/events",
    ] {
        assert_error(&app.get(path).await, StatusCode::NOT_FOUND, "not_found");
    }
    let receipts = &team_path(&app, "ex-r", "blue", "receipts").await;
    let cases = [
        (
            "/api/v1/exercises/ex-r/teams/green/receipts",
            json!({"run": 1, "inject_ids": ["a"]}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            receipts,
            json!({"run": 1, "inject_ids": ["zz"]}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            receipts,
            json!({"run": 1, "inject_ids": ["a/b"]}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            receipts,
            json!({"inject_ids": ["a"]}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
    ];
    for (path, body, status, code) in cases {
        let reply = app.post(path, Some(body.clone())).await;
        assert_error(&reply, status, code);
    }
    // Not sent yet: the same as no such inject (a receipt must not tell a
    // team what its future holds).
    assert_error(
        &app.post(receipts, Some(json!({"run": 1, "inject_ids": ["a"]})))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // Of another run: nothing to confirm, and no error.
    let (status, body) = app
        .post(receipts, Some(json!({"run": 7, "inject_ids": ["a"]})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recorded"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_stream_follows_the_exercise_and_its_deliveries() {
    let app = spawn_app().await;
    app.create(
        "ex-ctl",
        2.0,
        package(60, &[("blue", &[("a", 1)]), ("red", &[("r", 2)])]),
    )
    .await;
    let mut control = EventStream::open(&app, "/api/v1/exercises/ex-ctl/events").await;
    let first = control.next(SECS).await;
    assert_eq!(first.event, "exercise");
    assert_eq!(first.data["id"], "ex-ctl");
    assert_eq!(first.data["state"], "initialized");
    let all = control.next(SECS).await;
    assert_eq!(all.event, "deliveries");
    assert_eq!(all.data.as_array().unwrap().len(), 2);
    assert_eq!(find(&all.data, "red", "r")["status"], "pending");

    app.command("ex-ctl", "start").await;
    control
        .until(SECS, "exercise", |e| e["state"] == "running")
        .await;
    control
        .until(SECS, "delivery", |d| {
            d["team_id"] == "red" && d["inject_id"] == "r" && d["status"] == "delivered"
        })
        .await;
    // A dashboard opening shows in the control room.
    let _blue = EventStream::open(&app, &team_path(&app, "ex-ctl", "blue", "events").await).await;
    control
        .until(SECS, "exercise", |e| e["teams_connected"] == 1)
        .await;
    // A receipt updates its record.
    let (status, _) = app
        .post(
            &team_path(&app, "ex-ctl", "red", "receipts").await,
            Some(json!({"run": 1, "inject_ids": ["r"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    control
        .until(SECS, "delivery", |d| {
            d["inject_id"] == "r" && d["received_at"].is_string()
        })
        .await;
    // A reset replaces the whole table.
    app.command("ex-ctl", "reset").await;
    let reset = control
        .until(SECS, "deliveries", |list| {
            list.as_array()
                .unwrap()
                .iter()
                .all(|d| d["status"] == "pending")
        })
        .await;
    assert_eq!(reset.last().unwrap().data.as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_assets_and_media_are_served_from_the_binary_and_the_media_root() {
    let app = spawn_app().await;
    std::fs::write(app.media.join("four-teams/map.png"), b"\x89PNG fake").unwrap();
    for (path, kind, marker) in [
        ("/", "text/html", "/assets/control.js"),
        ("/exercises/anything", "text/html", "/assets/control.js"),
        ("/exercises/ex/teams/blue", "text/html", "/assets/team.js"),
        ("/assets/app.css", "text/css", ""),
        ("/assets/common.js", "text/javascript", ""),
        ("/assets/team.js", "text/javascript", "receipts"),
        ("/assets/control.js", "text/javascript", "events"),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        let body = response.text().await.unwrap();
        assert!(body.contains(marker), "{path} lacks {marker:?}");
    }
    // Media are an exercise's, from its package (tests/api/access.rs has
    // who may fetch them); the media folder itself is not served.
    let (status, body) = app
        .post(
            "/api/v1/exercises",
            Some(json!({"scenario": "four-teams", "exercise_id": "ex-media"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let media = app
        .client
        .get(app.url("/exercises/ex-media/media/four-teams/map.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(media.status(), StatusCode::OK);
    assert_eq!(media.headers()["content-type"], "image/png");
    assert_eq!(&media.bytes().await.unwrap()[..], b"\x89PNG fake");
    for missing in [
        "/assets/nope.js",
        "/media/four-teams/map.png",
        "/exercises/ex-media/media/four-teams/nope.png",
        "/media/../data/scip.db",
        "/media/%2e%2e/data/scip.db",
    ] {
        let (status, _) = app.get(missing).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    }
    let (_, scenarios) = app.get("/api/v1/scenarios").await;
    assert_eq!(scenarios[0]["name"], "four-teams");
    assert_eq!(scenarios[0]["teams"], 4);
    assert_eq!(scenarios[0]["injects"], 23);
    assert_eq!(scenarios[0]["duration"], 720);
    assert_eq!(scenarios[0]["error"], Value::Null);
    // A broken folder is listed with why.
    std::fs::create_dir_all(app.media.join("broken")).unwrap();
    std::fs::write(app.media.join("broken/scenario.json"), "{\"teams\": 3").unwrap();
    let (_, scenarios) = app.get("/api/v1/scenarios").await;
    assert_eq!(scenarios[0]["name"], "broken");
    assert!(
        scenarios[0]["error"]
            .as_str()
            .unwrap()
            .contains("scenario.json"),
        "{scenarios}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_do_not_hold_up_a_graceful_shutdown() {
    let app = spawn_app().await;
    app.create("ex-down", 1.0, package(60, &[("blue", &[("a", 30)])]))
        .await;
    // A second server on the same service, to shut down.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(scip_orchestrator::http::serve(
        listener,
        app.service.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut streams = Vec::new();
    for path in [
        team_path(&app, "ex-down", "blue", "events").await,
        "/api/v1/exercises/ex-down/events".to_owned(),
    ] {
        let response = app
            .client
            .get(format!("{address}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response);
    }
    let _ = stop.send(());
    tokio::time::timeout(SECS, server)
        .await
        .expect("the server shut down with streams open")
        .unwrap()
        .unwrap();
    // Each stream ended rather than being cut.
    for mut stream in streams {
        while let Some(chunk) = tokio::time::timeout(SECS, stream.chunk())
            .await
            .expect("the stream ends")
            .expect("a clean end")
        {
            assert!(!chunk.is_empty());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_links_open_their_own_team_only_until_revoked() {
    let app = spawn_app().await;
    app.create(
        "ex-l",
        1.0,
        package(60, &[("blue", &[("a", 30)]), ("red", &[("r", 30)])]),
    )
    .await;
    let blue_events = team_path(&app, "ex-l", "blue", "events").await;
    let red_events = team_path(&app, "ex-l", "red", "events").await;
    let token = |path: &str| path.split_once("token=").unwrap().1.to_owned();
    let blue_token = token(&blue_events);
    let base = "/api/v1/exercises/ex-l/teams";
    let receipt = json!({"run": 1, "inject_ids": []});

    // No token, another team's, a tampered one.
    let reply = app.get(&format!("{base}/blue/events")).await;
    let error = assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        error["message"].as_str().unwrap().contains("token"),
        "{error}"
    );
    assert_error(
        &app.post(&format!("{base}/blue/receipts"), Some(receipt.clone()))
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let red_on_blue = format!("{base}/blue/events?token={}", token(&red_events));
    let error = assert_error(
        &app.get(&red_on_blue).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert!(
        error["message"].as_str().unwrap().contains("another"),
        "{error}"
    );
    let mut tampered = blue_token.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [
        tampered.as_str(),
        "x",
        "",
        "a.b",
        &blue_token[..blue_token.len() - 1],
    ] {
        let reply = app.get(&format!("{base}/blue/events?token={bad}")).await;
        assert!(
            matches!(reply.0, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED),
            "{bad:?}: {reply:?}"
        );
    }
    // The right one opens the stream and takes receipts.
    let mut open_before = EventStream::open(&app, &blue_events).await;
    open_before.next(SECS).await;
    let (status, _) = app
        .post(
            &team_path(&app, "ex-l", "blue", "receipts").await,
            Some(receipt.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Re-issued: the old link stops working (replaying it fails), the new one works.
    let (status, reissued) = app.post(&format!("{base}/blue/link"), None).await;
    assert_eq!(status, StatusCode::OK, "{reissued}");
    let new_url = reissued["dashboard_url"].as_str().unwrap();
    assert_ne!(token(new_url), blue_token);
    assert_eq!(reissued["link_revoked"], false);
    assert!(reissued["link_expires_at"].as_str().unwrap().ends_with('Z'));
    let error = assert_error(
        &app.get(&blue_events).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert!(
        error["message"].as_str().unwrap().contains("revoked"),
        "{error}"
    );
    // A stream opened with the old link ends at once.
    open_before.ends(SECS).await;
    let mut blue_stream =
        EventStream::open(&app, &team_path(&app, "ex-l", "blue", "events").await).await;
    blue_stream.next(SECS).await;
    // Red's link is untouched, and so is its open stream.
    let mut red_stream = EventStream::open(&app, &red_events).await;
    red_stream.next(SECS).await;

    // Revoked: no token at all in its URL, nothing opens it, until re-issued.
    let current = team_path(&app, "ex-l", "blue", "events").await;
    let response = app
        .client
        .delete(app.url(&format!("{base}/blue/link")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (_, info) = app.get("/api/v1/exercises/ex-l").await;
    assert_eq!(info["teams"][0]["link_revoked"], true);
    assert!(
        !info["teams"][0]["dashboard_url"]
            .as_str()
            .unwrap()
            .contains("token")
    );
    assert_error(&app.get(&current).await, StatusCode::FORBIDDEN, "forbidden");
    // The stream opened with the revoked link ends too; red's runs on (it
    // shows the start).
    blue_stream.ends(SECS).await;
    let (status, _) = app.post("/api/v1/exercises/ex-l/start", None).await;
    assert_eq!(status, StatusCode::OK);
    red_stream
        .until(SECS, "clock", |c| c["status"] == "running")
        .await;
    app.post(&format!("{base}/blue/link"), None).await;
    EventStream::open(&app, &team_path(&app, "ex-l", "blue", "events").await).await;
    assert_error(
        &app.post(&format!("{base}/green/link"), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_links_die_with_their_exercise() {
    let app = spawn_app().await;
    let teams = package(60, &[("blue", &[("a", 30)]), ("red", &[("r", 30)])]);
    app.create("ex-again", 1.0, teams.clone()).await;
    let base = "/api/v1/exercises/ex-again/teams";
    // Blue's first link, then its re-issued one, revoked; red's current one.
    let blue_first = team_path(&app, "ex-again", "blue", "events").await;
    let (status, _) = app.post(&format!("{base}/blue/link"), None).await;
    assert_eq!(status, StatusCode::OK);
    let blue_revoked = team_path(&app, "ex-again", "blue", "events").await;
    let response = app
        .client
        .delete(app.url(&format!("{base}/blue/link")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let red_live = team_path(&app, "ex-again", "red", "events").await;
    let old = [blue_first, blue_revoked, red_live];
    EventStream::open(&app, &old[2]).await.next(SECS).await;

    // Deleted and created again under the same id: its links start over at
    // generation 1, as the first blue link and red's did.
    let response = app
        .client
        .delete(app.url("/api/v1/exercises/ex-again"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    app.create("ex-again", 1.0, teams).await;
    for path in &old {
        let receipts = path.replace("/events?", "/receipts?");
        let error = assert_error(
            &app.post(&receipts, Some(json!({"run": 1, "inject_ids": []})))
                .await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
        assert!(
            error["message"].as_str().unwrap().contains("deleted"),
            "{path}: {error}"
        );
        // The stream is refused too (its status, without reading a body
        // that would never end were it opened).
        let response = app.anonymous.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // The new exercise's own links work.
    for team in ["blue", "red"] {
        let path = team_path(&app, "ex-again", team, "events").await;
        assert!(!old.contains(&path), "{team}'s link is new");
        EventStream::open(&app, &path).await.next(SECS).await;
    }
}

/// Sends a request's head and the first `sent` bytes of a body announced as
/// `length` bytes, never the rest; the status of the answer the server gives
/// meanwhile (None when it waits for the body instead).
async fn status_before_the_body(
    app: &TestApp,
    head: &str,
    length: usize,
    sent: usize,
) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.address.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "{head} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    socket.write_all(&vec![b'['; sent]).await.unwrap();
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), socket.read(&mut answer))
        .await
        .ok()?
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..read]).into_owned();
    text.split(' ').nth(1).and_then(|code| code.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_check_the_link_before_reading_a_bounded_body() {
    let app = spawn_app().await;
    app.create("ex-rb", 1.0, package(60, &[("blue", &[("a", 30)])]))
        .await;
    let base = "/api/v1/exercises/ex-rb/teams/blue/receipts";
    // No token and a bad body: the missing credentials are what is wrong.
    let reply = app
        .post_raw(base, Some("application/json"), "{nonsense")
        .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    let reply = app
        .post_raw(
            &format!("{base}?token=bogus"),
            Some("text/plain"),
            "{nonsense",
        )
        .await;
    assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
    // A 12 MB body that never arrives in full: the refusal comes first.
    const BIG: usize = 12 * 1024 * 1024;
    assert_eq!(
        status_before_the_body(&app, &format!("POST {base}"), BIG, 64 * 1024).await,
        Some(401)
    );
    assert_eq!(
        status_before_the_body(
            &app,
            &format!("POST {base}?token=bogus.token"),
            BIG,
            64 * 1024
        )
        .await,
        Some(403)
    );
    // With its link, a receipt is read, up to 1 MiB.
    let receipts = team_path(&app, "ex-rb", "blue", "receipts").await;
    let (status, body) = app
        .post(&receipts, Some(json!({"run": 1, "inject_ids": []})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<String> = (0..60_000).map(|n| format!("inject-{n:08}")).collect();
    let reply = app
        .post(&receipts, Some(json!({"run": 1, "inject_ids": ids})))
        .await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let reply = app
        .post_raw(&receipts, Some("application/json"), "{nonsense")
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
}

/// Reads from `socket` until the server closes it; the bytes it sent
/// first. Panics if it is still open after `within`.
async fn closed_by_the_server(
    socket: &mut tokio::net::TcpStream,
    within: std::time::Duration,
) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the connection is still open after {within:?}"));
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_event_streams_are_not() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    app.create("ex-idle", 1.0, package(60, &[("blue", &[("a", 30)])]))
        .await;
    // A server with short timeouts, on the same service.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let timeouts = scip_orchestrator::http::Timeouts {
        request_head: std::time::Duration::from_secs(1),
        body_idle: std::time::Duration::from_secs(1),
    };
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(scip_orchestrator::http::serve_with(
        listener,
        app.service.clone(),
        async move {
            let _ = stopped.await;
        },
        timeouts,
    ));
    let within = std::time::Duration::from_secs(10);
    let connect = || tokio::net::TcpStream::connect(address);

    // Connected, nothing sent.
    let mut silent = connect().await.unwrap();
    closed_by_the_server(&mut silent, within).await;
    // A request head sent a byte at a time, never finished.
    let mut slow = connect().await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed_by_the_server(&mut slow, within).await;
    // A keep-alive connection after its answer.
    let mut kept = connect().await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_by_the_server(&mut kept, within).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A body that stops coming: refused, and the connection closed.
    let mut stalled = connect().await.unwrap();
    let head = format!(
        "POST /api/v1/exercises HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"package\": "
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let answer = closed_by_the_server(&mut stalled, within).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );

    // An event stream outlives the timeouts: its keep-alive comments flow.
    let path = team_path(&app, "ex-idle", "blue", "events").await;
    let response = reqwest::Client::new()
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .unwrap();
    let mut stream = EventStream::from_response(response);
    stream.next(within).await;
    let opened = tokio::time::Instant::now();
    // The next bytes are a keep-alive comment, 5 s later: far past the
    // 1 s timeouts, the stream is open.
    stream.keep_alive(within).await;
    assert!(opened.elapsed() > timeouts.request_head);
}

/// `scip_receipt_latency_seconds_count` in a `/metrics` text (0 before the
/// first receipt of the process).
fn receipt_count(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("scip_receipt_latency_seconds_count "))
        .map_or(0, |n| n.trim().parse().unwrap())
}
