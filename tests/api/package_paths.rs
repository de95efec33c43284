//! What a package can reach: every path it names stays inside it, and an
//! upload cannot make the server read, or say anything about, its other
//! files. (What an archive can cost in memory: `tests/hostile`.)

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::packages::archive;
use crate::support::*;

/// Imports `body` as the package `probe`, replacing an earlier one.
async fn import(app: &TestApp, body: Vec<u8>) -> Reply {
    crate::packages::import(app, "?name=probe&replace=true", body, "application/gzip").await
}

/// A package whose one team's timeline is `timeline_file`.
fn package(dir: &Path, timeline_file: &str) {
    std::fs::create_dir_all(dir.join("timelines")).unwrap();
    std::fs::write(
        dir.join("scenario.json"),
        json!({"duration_minutes": 5,
               "teams": [{"id": "blue", "timeline_file": timeline_file}]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("timelines/own.json"),
        json!({"injects": [{"id": "i1", "time": 0, "type": "news", "content": {}}]}).to_string(),
    )
    .unwrap();
}

/// The import's errors, as one text.
fn errors(body: &Value) -> String {
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_names_only_files_inside_it() {
    let app = spawn_app().await;
    // Files outside any package, one with a marker an echo would show.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("secret.json"),
        json!({"injects": [{"id": "SECRET-MARKER", "time": "SECRET-VALUE"}]}).to_string(),
    )
    .unwrap();
    let secret = outside.path().join("secret.json").display().to_string();
    std::fs::write(app.media.join("other.json"), "{\"injects\": []}").unwrap();

    // Whatever is (or is not) there, a path that leaves the package gets
    // the same refusal, naming only the path the package gave.
    let refusals = [
        secret.as_str(),
        "/etc/shadow",
        "/root",
        "/no/such/file.json",
        "../other.json",
        "../four-teams/timelines/blue-standard.json",
        "timelines/../../other.json",
        "timelines/../own.json",
    ];
    let mut messages = Vec::new();
    for path in refusals {
        let dir = tempfile::tempdir().unwrap();
        package(dir.path(), path);
        let (status, body) = import(&app, archive(dir.path(), "")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        let text = errors(&body);
        assert!(
            !text.contains("SECRET"),
            "{path}: outside content echoed: {text}"
        );
        assert!(text.contains("is outside the package"), "{path}: {text}");
        messages.push(
            text.replace(&format!("{path:?}"), "PATH")
                .replace(path, "PATH"),
        );
    }
    assert!(
        messages.windows(2).all(|w| w[0] == w[1]),
        "the refusals differ, so they tell what is there: {messages:#?}"
    );

    // A folder's errors name its files as under MEDIA_STORAGE_PATH.
    std::fs::create_dir_all(app.media.join("broken")).unwrap();
    std::fs::write(app.media.join("broken/scenario.json"), "{").unwrap();
    let (status, body) = app
        .post("/api/v1/exercises", Some(json!({"scenario": "broken"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("broken/scenario.json"), "{body}");
    assert!(
        !body.to_string().contains(&app.media.display().to_string()),
        "server paths shown: {body}"
    );

    // Inside, a missing file is named as the package names it.
    let dir = tempfile::tempdir().unwrap();
    package(dir.path(), "timelines/gone.json");
    let (status, body) = import(&app, archive(dir.path(), "")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let text = errors(&body);
    assert!(
        text.contains("timeline file not found: timelines/gone.json"),
        "{text}"
    );
    assert!(
        !text.contains(&app.media.display().to_string()),
        "server paths shown: {text}"
    );

    // And inside is fine, `./` included.
    let dir = tempfile::tempdir().unwrap();
    package(dir.path(), "./timelines/own.json");
    let (status, body) = import(&app, archive(dir.path(), "")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A folder placed under MEDIA_STORAGE_PATH by hand may hold links: one
/// that leads out of the package is refused like any path that leaves it.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_out_of_a_package_folder_is_refused() {
    let app = spawn_app().await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("secret.json"),
        json!({"injects": [{"id": "SECRET-MARKER", "time": 0, "type": "news", "content": {}}]})
            .to_string(),
    )
    .unwrap();
    let folder = app.media.join("linked");
    package(&folder, "timelines/linked.json");
    std::os::unix::fs::symlink(
        outside.path().join("secret.json"),
        folder.join("timelines/linked.json"),
    )
    .unwrap();
    let (status, body) = app
        .post(
            "/api/v1/exercises",
            Some(json!({"scenario": "linked", "exercise_id": "linked"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let text = body.to_string();
    assert!(text.contains("is outside the package"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");

    // A link inside the package is fine.
    std::fs::remove_file(folder.join("timelines/linked.json")).unwrap();
    std::os::unix::fs::symlink("own.json", folder.join("timelines/linked.json")).unwrap();
    let (status, body) = app
        .post(
            "/api/v1/exercises",
            Some(json!({"scenario": "linked", "exercise_id": "linked"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Listing the scenario folders reads and validates files: that happens off
/// the runtime's workers, which also wake the exercises and answer every
/// other request. Here a timeline is a named pipe, so reading it blocks
/// until the test writes it; meanwhile, on a runtime with one worker, the
/// service still answers. A folder is validated again only when its files
/// change.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn listing_scenarios_does_not_hold_up_the_service() {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt;

    let app = spawn_app().await;
    let folder = app.media.join("slow");
    package(&folder, "timelines/pipe.json");
    let pipe = folder.join("timelines/pipe.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");

    let listing = {
        let client = app.client.clone();
        let url = app.url("/api/v1/scenarios");
        tokio::spawn(async move { client.get(url).send().await.unwrap().json::<Value>().await })
    };
    let address = app.address.trim_start_matches("http://").to_owned();
    let side = std::thread::spawn(move || {
        // Once the listing reads the pipe (it has a reader)...
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let mut writer = loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc_nonblock())
                .open(&pipe)
            {
                Ok(writer) => break writer,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => panic!("the listing never read the timeline: {e}"),
            }
        };
        // ...the service answers another request.
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let health = stream.read_to_end(&mut answer).map(|_| answer);
        writer
            .write_all(
                json!({"injects": [{"id": "p1", "time": 0, "type": "news", "content": {}}]})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap();
        drop(writer);
        health
    });
    let health = tokio::task::spawn_blocking(move || side.join().unwrap())
        .await
        .unwrap();
    let answer =
        String::from_utf8_lossy(&health.expect("an answer while the listing reads")).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let listed = listing.await.unwrap().unwrap();
    let slow = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "slow")
        .cloned()
        .unwrap_or_default();
    assert!(slow["error"].is_null(), "{listed}");
    assert_eq!(slow["injects"], 1, "{listed}");

    // Unchanged folders come from the last listing. The pipe becomes a
    // file; once listed, it is overwritten with an invalid timeline of the
    // same size and modification time, which a listing that read it again
    // would report.
    let timeline = folder.join("timelines/pipe.json");
    std::fs::remove_file(&timeline).unwrap();
    let valid =
        json!({"injects": [{"id": "p1", "time": 0, "type": "news", "content": {}}]}).to_string();
    std::fs::write(&timeline, &valid).unwrap();
    let (_, listed) = app.get("/api/v1/scenarios").await;
    let modified = std::fs::metadata(&timeline).unwrap().modified().unwrap();
    let invalid = format!("{{\"injects\": {}}}", " ".repeat(valid.len() - 14) + "3");
    assert_eq!(invalid.len(), valid.len());
    std::fs::write(&timeline, &invalid).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&timeline)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let (status, again) = app.get("/api/v1/scenarios").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, listed, "validated again though nothing changed");
    // A changed folder is validated again.
    std::fs::write(&timeline, "{\"injects\": 3}").unwrap();
    let (_, changed) = app.get("/api/v1/scenarios").await;
    let slow = changed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "slow")
        .cloned()
        .unwrap();
    assert!(!slow["error"].is_null(), "{changed}");
}

/// O_NONBLOCK: opening a pipe for writing fails until it has a reader.
#[cfg(unix)]
fn libc_nonblock() -> i32 {
    0o4000
}

/// A timeline is never media, whatever its name: `timeline_file` may name
/// `teams/red.timeline`, which the media route would otherwise serve with
/// red's future injects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeline_file_is_never_media_whatever_its_name() {
    let app = spawn_app().await;
    let write = |path: &str, text: String| {
        let file = app.media.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    };
    write(
        "plans/scenario.json",
        json!({"duration_minutes": 30, "teams": [
            {"id": "blue", "timeline_file": "timelines/blue.json"},
            {"id": "red", "timeline_file": "teams/red.timeline"}]})
        .to_string(),
    );
    write(
        "plans/timelines/blue.json",
        json!({"id": "blue", "injects": [
            {"id": "b-1", "time": 0, "type": "news", "content": {"headline": "Now"},
             "media": ["teams/red.timeline", "map.png"]}]})
        .to_string(),
    );
    write(
        "plans/teams/red.timeline",
        format!(
            "  \n{}",
            json!({"id": "red", "injects": [
                {"id": "r-1", "time": 1200, "type": "news",
                 "content": {"headline": "what red will be told at T+20"}}]})
        ),
    );
    std::fs::write(app.media.join("plans/map.png"), b"\x89PNG").unwrap();
    let (status, body) = app
        .post(
            "/api/v1/exercises",
            Some(json!({"scenario": "plans", "exercise_id": "plans"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (path, want) in [
        ("teams/red.timeline", StatusCode::NOT_FOUND),
        ("timelines/blue.json", StatusCode::NOT_FOUND),
        ("map.png", StatusCode::OK),
    ] {
        let response = app
            .client
            .get(app.url(&format!("/exercises/plans/media/{path}")))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, want, "{path}: {text}");
        assert!(!text.contains("T+20"), "{path}: {text}");
    }
}

/// Archive entries that would mislead whoever unpacks an export elsewhere,
/// or that contradict each other, are refused as bad input (400), not as
/// the server's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_archive_paths_are_refused_as_bad_input() {
    let app = spawn_app().await;
    let build = |entries: &[(&str, &[u8])]| {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    };
    let scenario =
        json!({"duration_minutes": 1, "teams": [{"id": "blue", "timeline_file": "t.json"}]})
            .to_string();
    let timeline = "{\"injects\": []}";
    for (name, odd) in [
        ("a backslash", "..\\..\\bs.txt"),
        ("a colon", "c:evil.txt"),
        ("inside a file", "scenario.json/x"),
    ] {
        let body = build(&[
            ("scenario.json", scenario.as_bytes()),
            ("t.json", timeline.as_bytes()),
            (odd, b"x"),
        ]);
        let (status, reply) = import(&app, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {reply}");
    }
}
