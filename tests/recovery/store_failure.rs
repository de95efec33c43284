//! The database refuses writes in the middle of an exercise (triggers that
//! raise, added from a connection of the test's own), then accepts them
//! again. Meanwhile feed messages go out on time, API calls that change
//! something answer 503, `/readyz` is unready, and status announcements are
//! held; once writes succeed again nothing is lost: the held announcements go
//! out in order and every row is stored.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use tokio::time::Instant;

use scip_orchestrator::store::Store;
use scip_orchestrator::testing::{Mosquitto, Subscriber};

use super::{PgDatabase, Serve, http, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_writes_are_not_announced_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("serve.db").display());
    refused_writes(&url, "refused-sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_writes_are_not_announced_on_postgres() {
    let db = PgDatabase::create("recovery").await;
    refused_writes(&db.url, "refused-postgres").await;
    db.drop().await;
}

const SQLITE_REFUSE: &[&str] = &[
    "CREATE TRIGGER refuse_1 BEFORE INSERT ON deliveries BEGIN SELECT RAISE(FAIL, 'writes refused by the test'); END",
    "CREATE TRIGGER refuse_2 BEFORE UPDATE ON deliveries BEGIN SELECT RAISE(FAIL, 'writes refused by the test'); END",
    "CREATE TRIGGER refuse_3 BEFORE UPDATE ON exercises BEGIN SELECT RAISE(FAIL, 'writes refused by the test'); END",
    "CREATE TRIGGER refuse_4 BEFORE INSERT ON control_log BEGIN SELECT RAISE(FAIL, 'writes refused by the test'); END",
];
const SQLITE_ALLOW: &[&str] = &[
    "DROP TRIGGER refuse_1",
    "DROP TRIGGER refuse_2",
    "DROP TRIGGER refuse_3",
    "DROP TRIGGER refuse_4",
];
const POSTGRES_REFUSE: &[&str] = &[
    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'writes refused by the test'; END $$",
    "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON deliveries FOR EACH STATEMENT EXECUTE FUNCTION refuse()",
    "CREATE TRIGGER refuse BEFORE UPDATE ON exercises FOR EACH STATEMENT EXECUTE FUNCTION refuse()",
    "CREATE TRIGGER refuse BEFORE INSERT ON control_log FOR EACH STATEMENT EXECUTE FUNCTION refuse()",
];
const POSTGRES_ALLOW: &[&str] = &["DROP FUNCTION refuse() CASCADE"];

async fn refused_writes(database_url: &str, exercise: &str) {
    let sqlite = database_url.starts_with("sqlite:");
    let broker = Mosquitto::start();
    let media = tempfile::tempdir().unwrap();
    let mut sub = Subscriber::connect(broker.port, &format!("/exercise/{exercise}/#")).await;
    let serve = Serve::start(None, broker.port, database_url, media.path());
    let port = serve.port;
    let injects: Vec<Value> = (0..=12)
        .map(|t| json!({"id": format!("i-{t:02}"), "time": t, "type": "news", "content": {}}))
        .collect();
    let package = json!({
        "id": exercise, "duration": 0.25,
        "teams": [{"id": "blue", "timeline_id": "t"}, {"id": "red", "timeline_id": "t"}],
        "timelines": [{"id": "t", "injects": injects}],
    });
    let (status, body) = http(
        port,
        "POST",
        "/api/v1/exercises",
        Some(json!({"package": package, "speed": 1.0})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let base = format!("/api/v1/exercises/{exercise}");
    assert_eq!(
        http(port, "POST", &format!("{base}/start"), None).await.0,
        200
    );
    let mut seen = sub
        .collect_until(Duration::from_secs(10), |m| {
            m.payload["id"] == "i-01" && m.payload["team_id"] == "red"
        })
        .await;
    assert_eq!(http(port, "GET", "/readyz", None).await.0, 200);

    // The database refuses every write of an exercise from now on.
    let refuse = if sqlite {
        SQLITE_REFUSE
    } else {
        POSTGRES_REFUSE
    };
    execute(database_url, refuse).await;
    // Feed messages keep their schedule.
    seen.extend(
        sub.collect_until(Duration::from_secs(10), |m| {
            m.payload["id"] == "i-03" && m.payload["team_id"] == "red"
        })
        .await,
    );
    // Their records cannot be stored: not ready.
    let unready = wait_for(Duration::from_secs(10), async || {
        let (status, body) = http(port, "GET", "/readyz", None).await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(
        unready["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("database"),
        "{unready}"
    );
    // A command is applied but cannot be stored: 503, and not announced.
    let (status, body) = http(
        port,
        "POST",
        &format!("{base}/pause"),
        Some(json!({"reason": "while refused"})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let (status, body) = http(port, "POST", &format!("{base}/resume"), None).await;
    assert_eq!(status, 503, "{body}");
    // A create that cannot be stored whole leaves nothing behind.
    let other = json!({"package": {
        "id": "other", "duration": 1,
        "teams": [{"id": "blue", "timeline_id": "t"}],
        "timelines": [{"id": "t", "injects": [{"id": "a", "time": 5, "type": "news", "content": {}}]}],
    }});
    let (status, body) = http(port, "POST", "/api/v1/exercises", Some(other.clone())).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert_eq!(
        http(port, "GET", "/api/v1/exercises/other", None).await.0,
        404
    );
    // The clock goes on: feed messages still go out.
    seen.extend(
        sub.collect_until(Duration::from_secs(10), |m| {
            m.payload["id"] == "i-06" && m.payload["team_id"] == "red"
        })
        .await,
    );
    let announced_early: Vec<&Value> = seen
        .iter()
        .filter(|m| m.topic.ends_with("/status") && m.payload["status"] == "paused")
        .map(|m| &m.payload)
        .collect();
    assert!(
        announced_early.is_empty(),
        "a pause that is not stored is not announced: {announced_early:?}"
    );

    // Writes succeed again.
    let allowed = Instant::now();
    let allow = if sqlite { SQLITE_ALLOW } else { POSTGRES_ALLOW };
    execute(database_url, allow).await;
    let after = sub
        .collect_until(Duration::from_secs(20), |m| {
            m.topic.ends_with("/status")
                && m.payload["event"] == "state_changed"
                && m.payload["status"] == "running"
                && m.payload["command"] == "resume"
        })
        .await;
    wait_for(Duration::from_secs(10), async || {
        (http(port, "GET", "/readyz", None).await.0 == 200).then_some(())
    })
    .await;
    let (status, body) = http(port, "POST", "/api/v1/exercises", Some(other)).await;
    assert_eq!(status, 201, "the refused create left no trace: {body}");
    // The held announcements, in order, only now.
    let changes: Vec<(&Value, Instant)> = after
        .iter()
        .filter(|m| m.topic.ends_with("/status") && m.payload["event"] == "state_changed")
        .map(|m| (&m.payload, m.at))
        .collect();
    let order: Vec<&str> = changes
        .iter()
        .map(|(p, _)| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["paused", "running"], "{changes:?}");
    assert!(changes.iter().all(|(_, at)| *at >= allowed));
    assert_eq!(changes[0].0["reason"], "while refused");
    seen.extend(after);

    // Everything is stored: the commands, and every record delivered so far.
    let (_, log) = http(port, "GET", &format!("{base}/control-log"), None).await;
    let commands: Vec<(&str, bool)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["command"].as_str().unwrap(), r["accepted"] == true))
        .collect();
    assert_eq!(
        commands,
        [("start", true), ("pause", true), ("resume", true)],
        "{log}"
    );
    seen.extend(
        sub.collect_until(Duration::from_secs(30), |m| {
            m.topic.ends_with("/status") && m.payload["status"] == "completed"
        })
        .await,
    );
    let mut feeds: Vec<String> = seen
        .iter()
        .filter(|m| m.topic.ends_with("/feed"))
        .map(|m| format!("{}/{}", m.payload["team_id"], m.payload["id"]))
        .collect();
    feeds.sort();
    assert_eq!(feeds.len(), 26, "every inject once: {feeds:?}");
    assert_eq!(serve.terminate(), Some(0));
    let store = Store::connect(database_url).await.unwrap();
    let row = store.get_exercise(exercise).await.unwrap().unwrap();
    assert_eq!(row.state, "completed");
    let rows = store.deliveries(exercise, 1).await.unwrap();
    assert_eq!(rows.len(), 26);
    assert!(
        rows.iter().all(|r| r.status == "delivered"),
        "{:?}",
        rows.iter()
            .map(|r| (&r.team_id, &r.inject_id, &r.status))
            .collect::<Vec<_>>()
    );
    store.close().await;
}

/// Runs `statements` on the database behind `url`, from a connection of its own.
async fn execute(url: &str, statements: &[&str]) {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        for sql in statements {
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
        c.close().await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        for sql in statements {
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
        c.close().await.unwrap();
    }
}
