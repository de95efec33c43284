//! SIGTERM timed onto due instants: the injects in flight when the signal
//! lands are confirmed and recorded before the process exits, so the next
//! start sends none of them again. Many teams get an inject every second;
//! `serve` reaches the broker through a proxy that hands it acknowledgements
//! 50 ms late (a long link), so that injects are in flight for a while after
//! each due instant; the signal lands on the instant and up to 20 ms after
//! it, over several restarts; an independent subscriber (straight on the
//! broker) counts what the feeds carried across every lifetime of the process.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use scip_orchestrator::testing::{Mosquitto, Proxy, Subscriber};

use super::{PgDatabase, Serve, http};

const TEAMS: usize = 40;
/// Injects at T+0 ..= T+LAST, one a second, for every team; the rounds use
/// the first seconds, a seek sends the rest.
const LAST: u32 = 59;
/// Where each SIGTERM lands, from the instant its inject second was due
/// (microseconds; the first arrival of T+0 marks T+0).
const OFFSETS_US: [u64; 5] = [0, 1_000, 3_000, 8_000, 20_000];
/// How late the proxy hands `serve` what the broker sends.
const ACK_DELAY: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_due_instants_sends_nothing_twice_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("serve.db").display());
    sigterm_on_due_instants(&url, "term-sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_due_instants_sends_nothing_twice_on_postgres() {
    let db = PgDatabase::create("recovery").await;
    sigterm_on_due_instants(&db.url, "term-postgres").await;
    db.drop().await;
}

async fn sigterm_on_due_instants(database_url: &str, exercise: &str) {
    let broker = Mosquitto::start();
    let media = tempfile::tempdir().unwrap();
    let teams = TEAMS.to_string();
    let env = [("MAX_TEAMS_PER_EXERCISE", teams.as_str())];
    let mut sub = Subscriber::connect(broker.port, &format!("/exercise/{exercise}/#")).await;
    let link = Proxy::start(broker.port).await;
    link.set_delay(ACK_DELAY);
    let mut serve = Serve::start_with(None, link.port, database_url, media.path(), &env);
    let port = serve.port;

    let injects: Vec<Value> = (0..=LAST)
        .map(|t| json!({"id": format!("i-{t:02}"), "time": t, "type": "news", "content": {}}))
        .collect();
    let teams: Vec<Value> = (0..TEAMS)
        .map(|n| json!({"id": format!("t{n:02}"), "timeline_id": "t"}))
        .collect();
    let package = json!({
        "id": exercise, "duration": f64::from(LAST + 1) / 60.0,
        "teams": teams,
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
        .collect_until(Duration::from_secs(10), |m| m.payload["id"] == "i-00")
        .await;
    // T+0 went out the instant the exercise started.
    let origin = seen.last().expect("T+0").at;
    for offset in OFFSETS_US {
        // The next due second at least 300 ms away, and the signal on it.
        let ahead = origin.elapsed().as_secs_f64() + 0.3;
        let second = ahead.ceil() as u64;
        assert!(
            second < u64::from(LAST) - 5,
            "the rounds outran the scenario (T+{second})"
        );
        let due = origin + Duration::from_secs(second);
        let at = due + Duration::from_micros(offset);
        // Sleep to just before it, then spin: a timer alone misses by a
        // millisecond or more.
        tokio::time::sleep_until(at - Duration::from_millis(3)).await;
        while Instant::now() < at {
            std::hint::spin_loop();
        }
        serve.signal_term();
        let code = tokio::task::spawn_blocking(move || serve.wait())
            .await
            .unwrap();
        assert_eq!(
            code,
            Some(0),
            "serve exits 0 on SIGTERM (offset {offset} µs)"
        );
        serve = Serve::start_with(Some(port), link.port, database_url, media.path(), &env);
    }
    // The last start runs the exercise to its end: what is left goes out at
    // once (seek, delivering what it passes over).
    let (status, body) = http(port, "POST", &format!("{base}/pause"), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        port,
        "POST",
        &format!("{base}/seek"),
        Some(json!({"to": LAST, "mode": "deliver"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(port, "POST", &format!("{base}/resume"), None).await;
    assert_eq!(status, 200, "{body}");
    seen.extend(
        sub.collect_until(Duration::from_secs(40), |m| {
            m.topic.ends_with("/status") && m.payload["status"] == "completed"
        })
        .await,
    );
    let mut times: HashMap<(String, String), usize> = HashMap::new();
    for m in seen.iter().filter(|m| m.topic.ends_with("/feed")) {
        *times
            .entry((
                m.payload["team_id"].as_str().unwrap().to_owned(),
                m.payload["id"].as_str().unwrap().to_owned(),
            ))
            .or_default() += 1;
    }
    let mut wrong = Vec::new();
    for team in 0..TEAMS {
        for t in 0..=LAST {
            let key = (format!("t{team:02}"), format!("i-{t:02}"));
            let n = times.get(&key).copied().unwrap_or(0);
            if n != 1 {
                wrong.push(format!("{}/{}: {n} times", key.0, key.1));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "every inject exactly once across {} graceful restarts; {} were not: {:?}",
        OFFSETS_US.len(),
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
    let (_, deliveries) = http(port, "GET", &format!("{base}/deliveries"), None).await;
    let deliveries = deliveries.as_array().expect("a list");
    assert_eq!(deliveries.len(), TEAMS * (LAST as usize + 1));
    assert!(
        deliveries.iter().all(|d| d["status"] == "delivered"),
        "every record delivered"
    );
    serve.terminate();
}
