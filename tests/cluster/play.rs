//! Two-way play across a takeover: the owner of an exercise dies (`kill -9`)
//! after a team answered; the node that takes it over keeps the branch
//! taken, closes the other team's open window on time and fires its
//! fallback, and still finds what waits for a decision. Answers and
//! decisions go through a node that does not run the exercise.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use scip_orchestrator::store::Store;
use scip_orchestrator::testing::{Mosquitto, PgDatabase, Subscriber};

use super::{Node, cluster, http, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_keeps_branches_windows_and_what_waits_for_a_decision() {
    let db = PgDatabase::create("cluster").await;
    let broker = Mosquitto::start();
    let media = tempfile::tempdir().unwrap();
    let mut feeds = Subscriber::connect(broker.port, "/exercise/tw/team/+/feed").await;
    let mut owner = Node::start("p1", broker.port, &db.url, media.path(), &[]);
    let injects = json!([
        {"id": "q", "time": 1, "type": "email", "content": {},
         "response": {"kind": "choice", "options": ["A", "B"]}, "expect": {"within": 12}},
        {"id": "b", "time": 0, "type": "news", "content": {}, "when": {"after": "q", "outcome": "choice:B"}},
        {"id": "f", "time": 0, "type": "sms", "content": {}, "when": {"after": "q", "outcome": "missed"}},
        {"id": "esc", "time": 0, "type": "news", "content": {}, "when": {"decision": "escalate"}},
    ]);
    let package = json!({
        "id": "tw", "duration": 1.0,
        "teams": [{"id": "blue", "timeline_id": "t"}, {"id": "red", "timeline_id": "t"}],
        "timelines": [{"id": "t", "injects": injects}],
    });
    let (status, body) = http(
        owner.port,
        "POST",
        "/api/v1/exercises",
        Some(json!({"package": package, "speed": 1.0})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let token = body["teams"][0]["dashboard_url"]
        .as_str()
        .and_then(|u| u.split_once("?token="))
        .unwrap()
        .1
        .to_owned();
    let other = Node::start("p2", broker.port, &db.url, media.path(), &[]);
    assert_eq!(
        http(owner.port, "POST", "/api/v1/exercises/tw/start", None)
            .await
            .0,
        200
    );
    let mut seen = feeds
        .collect_until(Duration::from_secs(10), |m| {
            m.payload["id"] == "q" && m.payload["team_id"] == "red"
        })
        .await;
    // Blue answers B through the node that does not run the exercise.
    let (status, body) = http(
        other.port,
        "POST",
        &format!("/api/v1/exercises/tw/teams/blue/responses?token={token}"),
        Some(json!({"inject_id": "q", "choice": "B"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    seen.extend(
        feeds
            .collect_until(Duration::from_secs(10), |m| m.payload["id"] == "b")
            .await,
    );
    // Killed once the branch's delivery is stored: what a crash leaves sent
    // but not recorded goes out again, by design; this is not that case.
    let store = Store::connect(&db.url).await.unwrap();
    wait_for(Duration::from_secs(10), async || {
        let rows = store.deliveries("tw", 1).await.unwrap();
        rows.iter()
            .any(|r| r.team_id == "blue" && r.inject_id == "b" && r.status == "delivered")
            .then_some(())
    })
    .await;
    store.close().await;
    owner.kill_9();
    wait_for(Duration::from_secs(20), async || {
        let view = cluster(other.port).await;
        (view["leases"][0]["owner"] == "p2").then_some(())
    })
    .await;
    // Red's window (T+1 to T+13) closes on the new owner: its fallback goes out.
    seen.extend(
        feeds
            .collect_until(Duration::from_secs(20), |m| {
                m.payload["id"] == "f" && m.payload["team_id"] == "red"
            })
            .await,
    );
    let (status, body) = http(
        other.port,
        "POST",
        "/api/v1/exercises/tw/decisions",
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
    assert_eq!(sent("red", "b"), None, "{count:?}");
    assert_eq!(sent("blue", "f"), None, "{count:?}");
    assert_eq!(sent("red", "f"), Some(1), "{count:?}");
    assert_eq!(sent("blue", "esc"), Some(1), "{count:?}");
    assert_eq!(sent("red", "esc"), Some(1), "{count:?}");
    let (_, list) = http(other.port, "GET", "/api/v1/exercises/tw/deliveries", None).await;
    let outcome = |team: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|d| d["team_id"] == team && d["inject_id"] == "q")
            .map(|d| d["outcome"].clone())
    };
    assert_eq!(outcome("blue"), Some(json!("met")));
    assert_eq!(outcome("red"), Some(json!("missed")));
    drop(other);
    db.drop().await;
}
