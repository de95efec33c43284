//! Stored rows that cannot be restored: `serve` still starts, reports each
//! one (API state `unrestorable` with the reason) and runs every other
//! exercise.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;

use scip_orchestrator::testing::{Mosquitto, Subscriber};

use super::{PgDatabase, Serve, http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stored_speeds_are_reported_and_the_rest_start_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("serve.db").display());
    // SQLite keeps no NaN (it reads back as NULL, which the column refuses).
    let bad = [("zero", "0"), ("infinite", "9e999"), ("negative", "-2")];
    bad_rows(&url, &bad).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stored_speeds_are_reported_and_the_rest_start_on_postgres() {
    let db = PgDatabase::create("recovery").await;
    let bad = [
        ("zero", "0"),
        ("infinite", "'Infinity'"),
        ("nan", "'NaN'"),
        ("negative", "-2"),
    ];
    bad_rows(&db.url, &bad).await;
    db.drop().await;
}

async fn bad_rows(database_url: &str, bad: &[(&str, &str)]) {
    let broker = Mosquitto::start();
    let media = tempfile::tempdir().unwrap();
    let serve = Serve::start(None, broker.port, database_url, media.path());
    let port = serve.port;
    let package = |id: &str| {
        json!({
            "id": id, "duration": 10,
            "teams": [{"id": "blue", "timeline_id": "t"}],
            "timelines": [{"id": "t", "injects": [
                {"id": "a", "time": 0, "type": "news", "content": {}},
                {"id": "b", "time": 2, "type": "news", "content": {}},
            ]}],
        })
    };
    let mut ids = vec!["good"];
    ids.extend(bad.iter().map(|(id, _)| *id));
    for id in &ids {
        let (status, body) = http(
            port,
            "POST",
            "/api/v1/exercises",
            Some(json!({"package": package(id), "speed": 1.0})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) =
            http(port, "POST", &format!("/api/v1/exercises/{id}/start"), None).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(serve.terminate(), Some(0));

    // Damage the rows as a bad migration or a hand edit would.
    for (id, speed) in bad {
        execute(
            database_url,
            &format!("UPDATE exercises SET speed = {speed} WHERE id = '{id}'"),
        )
        .await;
    }

    let mut sub = Subscriber::connect(broker.port, "/exercise/good/team/+/feed").await;
    let _serve = Serve::start(Some(port), broker.port, database_url, media.path());
    // The good exercise runs on: its T+2 inject goes out.
    sub.collect_until(Duration::from_secs(20), |m| m.payload["id"] == "b")
        .await;
    let (status, list) = http(port, "GET", "/api/v1/exercises", None).await;
    assert_eq!(status, 200, "{list}");
    let by_id = |id: &str| -> Value {
        list.as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} listed: {list}"))
    };
    assert_eq!(by_id("good")["state"], "running", "{list}");
    assert!(by_id("good").get("restore_error").is_none(), "{list}");
    for (id, speed) in bad {
        let e = by_id(id);
        assert_eq!(e["state"], "unrestorable", "{id} (speed {speed}): {e}");
        let why = e["restore_error"].as_str().unwrap_or_default();
        assert!(
            why.contains("speed"),
            "{id}: the reason names the speed: {why:?}"
        );
        let (status, one) = http(port, "GET", &format!("/api/v1/exercises/{id}"), None).await;
        assert_eq!(status, 200, "{one}");
        assert_eq!(one["state"], "unrestorable");
        // Commands are refused with the reason; deleting it is allowed.
        let (status, body) =
            http(port, "POST", &format!("/api/v1/exercises/{id}/pause"), None).await;
        assert_eq!(status, 409, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("speed"),
            "{body}"
        );
    }
    let (id, _) = bad[0];
    let (status, body) = http(port, "DELETE", &format!("/api/v1/exercises/{id}"), None).await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = http(port, "GET", &format!("/api/v1/exercises/{id}"), None).await;
    assert_eq!(status, 404);
}

/// Runs one statement on the database behind `url`, from a connection of its own.
async fn execute(url: &str, sql: &str) {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }
}
