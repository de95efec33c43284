//! Scenario packages: imported by API as archives, validated first, stored
//! under MEDIA_STORAGE_PATH, exported back unchanged.

use std::io::Read;
use std::path::Path;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::*;

/// A package in the earlier platform's layout, as it comes: the scenario in
/// `exercise.json` naming `timeline_file` paths, turn-based, no duration,
/// extra metadata, and a media folder.
pub fn legacy_package(dir: &Path) {
    let write = |path: &str, body: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    };
    write(
        "exercise.json",
        r#"{"scenario_id": "harbour-legacy", "name": "Harbour (SCIP v3)", "version": "3.2",
            "turn_based": true, "total_turns": 2,
            "teams": [{"id": "blue", "name": "Blue", "timeline_file": "timelines/blue.json"},
                      {"id": "red", "timeline_file": "timelines/red.json"}]}"#,
    );
    write(
        "timelines/blue.json",
        r#"{"id": "blue", "injects": [
            {"id": "b1", "turn": 1, "time": 0, "type": "news", "content": {"headline": "Fog"}, "media": ["/media/briefing.svg"]},
            {"id": "b2", "turn": 2, "time": 30, "type": "email", "content": {"subject": "Tug"}}]}"#,
    );
    write(
        "timelines/red.json",
        r#"{"injects": [{"id": "r1", "turn": 1, "time": 10, "type": "sms", "content": {"text": "Go"}}]}"#,
    );
    write(
        "media/briefing.svg",
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>"#,
    );
}

/// `dir` as a `.tar.gz` with `top` as its top folder ("" for none).
pub fn archive(dir: &Path, top: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    builder.append_dir_all(top, dir).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

/// Every file of a `.tar.gz`, by path, with its bytes.
pub fn unpack(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut files = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            files.push((path, bytes));
        }
    }
    files.sort();
    files
}

pub async fn import(app: &TestApp, query: &str, body: Vec<u8>, content_type: &str) -> Reply {
    let response = app
        .client
        .post(app.url(&format!("/api/v1/packages{query}")))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// What MEDIA_STORAGE_PATH holds, hidden staging folders included.
fn stored(app: &TestApp) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&app.media)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_imports_as_it_comes_runs_and_exports_unchanged() {
    let app = spawn_app().await;
    let source = tempfile::tempdir().unwrap();
    legacy_package(source.path());
    let (status, body) = import(
        &app,
        "",
        archive(source.path(), "harbour"),
        "application/gzip",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "harbour-legacy", "named by its scenario_id");
    assert_eq!(body["teams"], 2);
    assert_eq!(body["injects"], 3);
    assert_eq!(
        body["duration"], 120,
        "40 s of turns, plus a minute, on a minute"
    );
    assert_eq!(
        stored(&app),
        ["four-teams", "harbour-legacy"],
        "nothing else left behind"
    );
    let (_, scenarios) = app.get("/api/v1/scenarios").await;
    assert!(
        scenarios
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "harbour-legacy" && s["error"].is_null()),
        "{scenarios}"
    );

    // An exercise from it runs its turns.
    let (status, created) = app
        .post(
            "/api/v1/exercises",
            Some(serde_json::json!({"scenario": "harbour-legacy", "exercise_id": "legacy", "speed": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["total_turns"], 2);
    app.command("legacy", "start").await;
    let paused = app
        .wait_for(
            "/api/v1/exercises/legacy",
            std::time::Duration::from_secs(15),
            |e| e["state"] == "paused",
        )
        .await;
    assert_eq!(
        paused["exercise_time"], 10,
        "turn 1 ends with red's inject at +10"
    );
    // Its media is served from the package: "/media/briefing.svg" in an
    // inject is the package's media/briefing.svg.
    for path in [
        "/exercises/legacy/media/briefing.svg",
        "/exercises/legacy/media/media/briefing.svg",
        "/exercises/legacy/media/harbour-legacy/briefing.svg",
    ] {
        let media = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(media.status(), StatusCode::OK, "{path}");
        assert_eq!(media.headers()["content-type"], "image/svg+xml", "{path}");
        // SVG can hold scripts: a download, never a page of this origin.
        assert_eq!(
            media.headers()["content-disposition"],
            "attachment; filename=\"briefing.svg\"",
            "{path}"
        );
    }
    for path in [
        "/media/harbour-legacy/media/briefing.svg",
        "/exercises/legacy/media/scenario.json",
        "/exercises/legacy/media/nope.svg",
        "/exercises/legacy/media/..%2F..%2Fdata%2Fscip.db",
        "/exercises/nope/media/briefing.svg",
    ] {
        let (status, _) = app.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }

    // Exported, it is the same files, the scenario under its stored name.
    let response = app
        .client
        .get(app.url("/api/v1/packages/harbour-legacy/archive"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/gzip");
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("harbour-legacy.tar.gz")
    );
    let exported = unpack(&response.bytes().await.unwrap());
    let read = |p: &str| std::fs::read(source.path().join(p)).unwrap();
    let expected: Vec<(String, Vec<u8>)> = vec![
        (
            "harbour-legacy/media/briefing.svg".into(),
            read("media/briefing.svg"),
        ),
        ("harbour-legacy/scenario.json".into(), read("exercise.json")),
        (
            "harbour-legacy/timelines/blue.json".into(),
            read("timelines/blue.json"),
        ),
        (
            "harbour-legacy/timelines/red.json".into(),
            read("timelines/red.json"),
        ),
    ];
    assert_eq!(exported, expected);

    // Once stored, a second import of that name needs replace=true.
    let again = import(&app, "", archive(source.path(), ""), "application/gzip").await;
    assert_error(&again, StatusCode::CONFLICT, "conflict");
    let (status, body) = import(
        &app,
        "?replace=true",
        archive(source.path(), ""),
        "application/gzip",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = import(
        &app,
        "?name=copy",
        archive(source.path(), ""),
        "application/gzip",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "copy");
    assert_eq!(stored(&app), ["copy", "four-teams", "harbour-legacy"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_package_is_refused_with_every_problem_and_leaves_nothing() {
    let app = spawn_app().await;
    let source = tempfile::tempdir().unwrap();
    legacy_package(source.path());
    // A timeline missing, and a turn out of range.
    std::fs::remove_file(source.path().join("timelines/red.json")).unwrap();
    std::fs::write(
        source.path().join("timelines/blue.json"),
        r#"{"injects": [{"id": "b1", "turn": 3, "time": 0, "type": "news", "content": {}}]}"#,
    )
    .unwrap();
    let reply = import(&app, "", archive(source.path(), "h"), "application/gzip").await;
    let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
    let details: Vec<&str> = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("timelines/red.json") && d.contains("not found")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("blue.json") && d.contains("after the last turn")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .all(|d| d.starts_with("<archive>/harbour-legacy/")),
        "{details:?}"
    );

    // Hostile archives: a path leaving the package, a link, not gzip at all.
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut header = tar::Header::new_gnu();
    let body = br#"{"teams": []}"#;
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    // `append_data` refuses `..`; write the raw name as a hostile tool would.
    header.as_gnu_mut().unwrap().name[..15].copy_from_slice(b"../scenario.jso");
    header.set_cksum();
    builder.append(&header, &body[..]).unwrap();
    let escaping = builder.into_inner().unwrap().finish().unwrap();
    let reply = import(&app, "?name=evil", escaping, "application/gzip").await;
    let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("leaves the package"),
        "{error}"
    );

    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    builder
        .append_link(&mut header, "scenario.json", "/etc/passwd")
        .unwrap();
    let linked = builder.into_inner().unwrap().finish().unwrap();
    let reply = import(&app, "?name=link", linked, "application/gzip").await;
    let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("not a plain file"),
        "{error}"
    );

    let reply = import(&app, "?name=junk", b"not gzip".to_vec(), "application/gzip").await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
    let reply = import(&app, "", b"{}".to_vec(), "application/json").await;
    assert_error(
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let reply = import(
        &app,
        "?name=../up",
        archive(source.path(), ""),
        "application/gzip",
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(
        stored(&app),
        ["four-teams"],
        "nothing stored, nothing left behind"
    );

    let (status, _) = app.get("/api/v1/packages/nope/archive").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/api/v1/packages/..%2Fdata/archive").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
