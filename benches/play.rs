//! Two-way play: from a team's answer arriving to its branch inject
//! acknowledged by the broker, with 10 teams answering at once.
//!
//! One `serve` (SQLite) on a private Mosquitto runs an exercise of 10 teams
//! sharing a timeline of `PLAY_BENCH_ROUNDS` (default 30) questions, one
//! every 3 s, each with a branch due the instant the answer is in
//! (`when: {after, outcome: "choice:A"}`, no delay). Each round, once every
//! team has the question, all ten answer at once: five on their MQTT
//! responses topic, five through their dashboard link (HTTP). Per answer:
//!
//! - answer sent to branch acknowledged by the broker (the record's
//!   `acknowledged_at`, wall clock, millisecond resolution);
//! - answer sent to branch seen by an independent MQTT subscriber;
//! - beside it, in the same run, the bare floor: ten messages published at
//!   once by the same client and seen by the same subscriber (one hop
//!   through the broker, nothing of ours), and the ratio to it.
//!
//! Ends with `RESULT play rounds=<n> teams=10: ...`. `cargo bench --bench
//! play` (release); `.ci/benches` runs a smoke size.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::time::Instant;

use common::Spread;
use scip_orchestrator::store::Store;
use scip_orchestrator::testing::{Lines, Mosquitto, Subscriber};

const BIN: &str = env!("CARGO_BIN_EXE_scip-orchestrator");
const ADMIN: &str = "scip_play-bench-admin-token";
const TEAMS: usize = 10;

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("PLAY_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("play.db");
    let serve = Serve::start(broker.port, &db, dir.path());
    let store = Store::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let mut feeds = Subscriber::connect(broker.port, "/exercise/play/team/+/feed").await;
    let mut echo = Subscriber::connect(broker.port, "/bench/echo/+").await;
    let publisher = feeds.client.clone();

    let injects: Vec<Value> = (1..=rounds)
        .flat_map(|i| {
            [
                json!({"id": format!("q-{i}"), "time": 3 * i, "type": "email", "content": {},
                       "response": {"kind": "choice", "options": ["A", "B"]}}),
                json!({"id": format!("b-{i}"), "time": 0, "type": "news", "content": {},
                       "when": {"after": format!("q-{i}"), "outcome": "choice:A"}}),
            ]
        })
        .collect();
    let teams: Vec<Value> = (0..TEAMS)
        .map(|t| json!({"id": format!("t{t}"), "timeline_id": "line"}))
        .collect();
    let package = json!({
        "id": "play", "duration": (3 * rounds + 10) as f64 / 60.0,
        "teams": teams, "timelines": [{"id": "line", "injects": injects}],
    });
    let (status, created) = serve
        .request(
            "POST",
            "/api/v1/exercises",
            Some(json!({"package": package})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let links: Vec<String> = created["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let url = t["dashboard_url"].as_str().unwrap();
            url.split_once("?token=").unwrap().1.to_owned()
        })
        .collect();
    serve
        .request("POST", "/api/v1/exercises/play/start", None)
        .await;

    // When each (team, branch) answer was sent, and when its branch was seen.
    let mut sent: HashMap<(String, String), (Instant, OffsetDateTime, &str)> = HashMap::new();
    let mut seen: HashMap<(String, String), Instant> = HashMap::new();
    let mut bare = Vec::new();
    let http = reqwest::Client::new();
    for i in 1..=rounds {
        let question = format!("q-{i}");
        let mut got = 0;
        for m in feeds
            .collect_until(Duration::from_secs(20), |m| {
                got += usize::from(m.payload["id"] == question.as_str());
                got == TEAMS
            })
            .await
        {
            note_branch(&m, &mut seen);
        }
        // All ten at once: five on MQTT, five through the dashboard.
        let mut answers = Vec::new();
        for (t, link) in links.iter().enumerate() {
            let team = format!("t{t}");
            let body = json!({"inject_id": question, "choice": "A", "by": "bench"});
            let key = (team.clone(), format!("b-{i}"));
            if t < TEAMS / 2 {
                sent.insert(key, (Instant::now(), OffsetDateTime::now_utc(), "mqtt"));
                publish(
                    &publisher,
                    &format!("/exercise/play/team/{team}/responses"),
                    &body,
                )
                .await;
            } else {
                let url = format!(
                    "http://127.0.0.1:{}/api/v1/exercises/play/teams/{team}/responses?token={}",
                    serve.port, link
                );
                sent.insert(
                    key,
                    (Instant::now(), OffsetDateTime::now_utc(), "dashboard"),
                );
                answers.push(http.post(url).json(&body).send());
            }
        }
        for answer in futures_util::future::join_all(answers).await {
            assert_eq!(answer.unwrap().status(), 200);
        }
        // The bare floor: ten messages at once through the broker, nothing of ours.
        let start = Instant::now();
        for t in 0..TEAMS {
            publish(
                &publisher,
                &format!("/bench/echo/{t}"),
                &json!({"round": i}),
            )
            .await;
        }
        let mut echoed = 0;
        for m in echo
            .collect_until(Duration::from_secs(10), |_| {
                echoed += 1;
                echoed == TEAMS
            })
            .await
        {
            bare.push((m.at - start).as_secs_f64() * 1000.0);
        }
    }
    let branches = rounds * TEAMS;
    while seen.len() < branches {
        let m = feeds
            .next(Duration::from_secs(20))
            .await
            .expect("every branch goes out");
        note_branch(&m, &mut seen);
    }

    // The broker's acknowledgements as the journal stored them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let rows = store.deliveries("play", 1).await.unwrap();
        let stored = rows
            .iter()
            .filter(|r| sent.contains_key(&(r.team_id.clone(), r.inject_id.clone())))
            .filter(|r| r.acked_wall_ms.is_some())
            .count();
        if stored == branches {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "{stored} of {branches} acknowledgements stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut acked: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut arrived: HashMap<&str, Vec<f64>> = HashMap::new();
    for r in &rows {
        let key = (r.team_id.clone(), r.inject_id.clone());
        let Some(&(at, wall, path)) = sent.get(&key) else {
            continue;
        };
        let ack_ms = r.acked_wall_ms.expect("acknowledged") as f64;
        let sent_ms = (wall.unix_timestamp_nanos() / 1_000) as f64 / 1000.0;
        acked.entry(path).or_default().push(ack_ms - sent_ms);
        arrived
            .entry(path)
            .or_default()
            .push((seen[&key] - at).as_secs_f64() * 1000.0);
    }
    let bare = Spread::of(bare);
    println!("answer -> branch, {rounds} rounds of {TEAMS} teams answering at once:");
    println!(
        "  {:<10} {:>28} {:>34}",
        "path", "acknowledged p50 / p99 / max", "seen by a subscriber p50 / p99"
    );
    let mut line = Vec::new();
    for path in ["mqtt", "dashboard"] {
        let a = Spread::of(acked.remove(path).unwrap_or_default());
        let s = Spread::of(arrived.remove(path).unwrap_or_default());
        println!(
            "  {path:<10} {:>10.2} / {:>6.2} / {:>6.2} ms {:>16.2} / {:>6.2} ms ({:.1}x the bare hop at p50)",
            a.p50,
            a.p99,
            a.max,
            s.p50,
            s.p99,
            s.p50 / bare.p50
        );
        line.push(format!(
            "{path} acked p50 {:.2} p99 {:.2} ms, seen p50 {:.2} p99 {:.2} ms",
            a.p50, a.p99, s.p50, s.p99
        ));
    }
    println!(
        "  bare hop (publish to subscriber, same client): p50 {:.2} / p99 {:.2} ms",
        bare.p50, bare.p99
    );
    println!(
        "RESULT play rounds={rounds} teams={TEAMS}: {}; bare hop p50 {:.2} p99 {:.2} ms",
        line.join("; "),
        bare.p50,
        bare.p99
    );
    drop(serve);
}

fn note_branch(
    m: &scip_orchestrator::testing::Seen,
    seen: &mut HashMap<(String, String), Instant>,
) {
    let id = m.payload["id"].as_str().unwrap_or("");
    if id.starts_with("b-") {
        let team = m.payload["team_id"].as_str().unwrap_or("").to_owned();
        seen.entry((team, id.to_owned())).or_insert(m.at);
    }
}

async fn publish(client: &AsyncClient, topic: &str, body: &Value) {
    client
        .publish(topic, QoS::AtLeastOnce, false, body.to_string())
        .await
        .expect("queued");
}

struct Serve {
    child: Child,
    port: u16,
    _log: Lines,
}

impl Serve {
    fn start(mqtt_port: u16, db: &Path, media: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--http-bind", "127.0.0.1:0", "--database-url"])
            .arg(format!("sqlite://{}", db.display()))
            .arg("--media-storage-path")
            .arg(media)
            .env("MQTT_BROKER_HOST", "127.0.0.1")
            .env("MQTT_BROKER_PORT", mqtt_port.to_string())
            .env(
                "API_TOKENS",
                format!("admin:{}", scip_orchestrator::access::tokens::hash(ADMIN)),
            )
            .env("MAX_COMMANDS_PER_MINUTE", "100000")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,scip_orchestrator=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve");
        let mut log = Lines::read(child.stderr.take().expect("piped stderr"));
        let line = log
            .wait_for(&[r#""message":"serving""#], Duration::from_secs(30))
            .unwrap_or_else(|| panic!("serve did not start:\n{}", log.seen().join("\n")));
        let serving: Value = serde_json::from_str(&line).unwrap();
        let port = serving["http"]
            .as_str()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .unwrap()
            .port();
        Self {
            child,
            port,
            _log: log,
        }
    }

    async fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let response = reqwest::Client::new()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("http://127.0.0.1:{}{path}", self.port),
            )
            .bearer_auth(ADMIN)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.map(|b| b.to_string()).unwrap_or_default())
            .send()
            .await
            .expect("serve answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
