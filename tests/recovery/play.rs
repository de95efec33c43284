//! Two-way play across `kill -9`: what waits for a condition, an open
//! answer window and a branch already taken all come back; nothing is
//! sent twice and nothing that waits is lost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use scip_orchestrator::store::Store;
use scip_orchestrator::testing::{Mosquitto, PgDatabase, Subscriber};

use super::{Serve, http, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_pending_conditions_and_open_windows_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("serve.db").display());
    kill_mid_play(&url, "play-sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_pending_conditions_and_open_windows_on_postgres() {
    let db = PgDatabase::create("play").await;
    kill_mid_play(&db.url, "play-postgres").await;
    db.drop().await;
}

async fn kill_mid_play(database_url: &str, exercise: &str) {
    let broker = Mosquitto::start();
    let media = tempfile::tempdir().unwrap();
    let mut feeds =
        Subscriber::connect(broker.port, &format!("/exercise/{exercise}/team/+/feed")).await;
    let mut serve = Serve::start(None, broker.port, database_url, media.path());
    let port = serve.port;
    // The question at T+1, answered within 12 s (B expected); a branch for
    // B, a fallback when it is missed, and an inject waiting for a decision.
    let injects = json!([
        {"id": "q", "time": 1, "type": "email", "content": {},
         "response": {"kind": "choice", "options": ["A", "B"]}, "expect": {"within": 12, "choice": "B"}},
        {"id": "b", "time": 0, "type": "news", "content": {}, "when": {"after": "q", "outcome": "choice:B"}},
        {"id": "fallback", "time": 0, "type": "sms", "content": {}, "when": {"after": "q", "outcome": "missed"}},
        {"id": "esc", "time": 0, "type": "news", "content": {}, "when": {"decision": "escalate"}},
    ]);
    let package = json!({
        "id": exercise, "duration": 0.5,
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
    let blue_link = body["teams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "blue")
        .and_then(|t| t["dashboard_url"].as_str())
        .unwrap()
        .to_owned();
    let token = blue_link.split_once("?token=").unwrap().1.to_owned();
    assert_eq!(
        http(port, "POST", &format!("{base}/start"), None).await.0,
        200
    );
    let mut seen = feeds
        .collect_until(Duration::from_secs(10), |m| {
            m.payload["id"] == "q" && m.payload["team_id"] == "red"
        })
        .await;
    if !seen
        .iter()
        .any(|m| m.payload["id"] == "q" && m.payload["team_id"] == "blue")
    {
        seen.extend(
            feeds
                .collect_until(Duration::from_secs(10), |m| {
                    m.payload["id"] == "q" && m.payload["team_id"] == "blue"
                })
                .await,
        );
    }
    // Blue answers B: its branch goes out, and is stored as delivered.
    let (status, body) = http(
        port,
        "POST",
        &format!("{base}/teams/blue/responses?token={token}"),
        Some(json!({"inject_id": "q", "choice": "B", "by": "Ana"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let store = Store::connect(database_url).await.unwrap();
    wait_for(Duration::from_secs(10), async || {
        let rows = store.deliveries(exercise, 1).await.unwrap();
        rows.iter()
            .any(|r| r.team_id == "blue" && r.inject_id == "b" && r.status == "delivered")
            .then_some(())
    })
    .await;
    store.close().await;
    serve.kill_9();
    let killed = Instant::now();
    let serve = Serve::start(Some(port), broker.port, database_url, media.path());
    assert!(
        killed.elapsed() < Duration::from_secs(8),
        "restarted before red's window closes"
    );

    // Red's window (T+1 to T+13) is still open after the restart: it closes
    // on time and red's fallback goes out; blue's was skipped by its answer.
    seen.extend(
        feeds
            .collect_until(Duration::from_secs(20), |m| {
                m.payload["id"] == "fallback" && m.payload["team_id"] == "red"
            })
            .await,
    );
    // The decision still finds what waits for it, for both teams.
    let (status, body) = http(
        port,
        "POST",
        &format!("{base}/decisions"),
        Some(json!({"decision": "escalate"})),
    )
    .await;
    assert_eq!((status, &body["released"]), (200, &json!(2)), "{body}");
    let mut esc = 0;
    seen.extend(
        feeds
            .collect_until(Duration::from_secs(10), |m| {
                esc += usize::from(m.payload["id"] == "esc");
                esc == 2
            })
            .await,
    );
    let (_, list) = http(port, "GET", &format!("{base}/deliveries"), None).await;
    let record = |team: &str, inject: &str| -> Value {
        list.as_array()
            .unwrap()
            .iter()
            .find(|d| d["team_id"] == team && d["inject_id"] == inject)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(record("blue", "q")["outcome"], "met");
    assert_eq!(record("blue", "q")["choice"], "B");
    assert_eq!(record("red", "q")["outcome"], "missed");
    assert_eq!(record("blue", "fallback")["status"], "skipped");
    assert_eq!(
        record("red", "b")["condition"],
        "held",
        "red may still answer B, late"
    );
    let (_, rows) = http(port, "GET", &format!("{base}/responses"), None).await;
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{rows}");

    // Each went out exactly once (anything sent twice would be in by now:
    // a repeat goes out at the restart, before the fallback).
    let mut count: HashMap<(String, String), usize> = HashMap::new();
    for m in &seen {
        let key = (
            m.payload["team_id"].as_str().unwrap_or("").to_owned(),
            m.payload["id"].as_str().unwrap_or("").to_owned(),
        );
        *count.entry(key).or_default() += 1;
    }
    let sent = |team: &str, inject: &str| count.get(&(team.into(), inject.into())).copied();
    assert_eq!(sent("blue", "b"), Some(1), "{count:?}");
    assert_eq!(sent("blue", "fallback"), None);
    assert_eq!(sent("red", "fallback"), Some(1));
    assert_eq!(sent("red", "b"), None);
    assert_eq!(sent("blue", "esc"), Some(1));
    assert_eq!(sent("red", "esc"), Some(1));
    drop(serve);
}
