//! Bounded queues, measured on the real process: tens of thousands of
//! messages on a running exercise's control topic, with the store working
//! and with the store stalled by another connection's open write
//! transaction. Resident memory stays flat (the peak, VmHWM, against VmRSS
//! before), feed messages keep going out, and what was not reported is
//! counted in `/metrics`.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::time::Instant;

use scip_orchestrator::testing::{Mosquitto, Subscriber};

use super::{Serve, http, wait_for};

/// Messages in each flood, and the size of each.
const FLOOD: usize = 20_000;
const MESSAGE_BYTES: usize = 4_000;
/// Most the peak resident memory may grow over the flood. Everything the
/// flood carries is 80 MB; queued, its audit rows and reports would be
/// several times that.
const MAX_GROWTH_KB: u64 = 16 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_topic_flood_leaves_memory_flat() {
    let run = Running::start("flood-1").await;
    let before = vm(run.serve.pid(), "VmRSS");
    flood(run.broker.port, &run.control).await;
    run.sentinel().await;
    let (rss, peak) = (vm(run.serve.pid(), "VmRSS"), vm(run.serve.pid(), "VmHWM"));
    eprintln!(
        "control-topic flood of {FLOOD} x {MESSAGE_BYTES} B: VmRSS {before} kB before, {rss} kB after, VmHWM {peak} kB"
    );
    assert!(
        peak.saturating_sub(before) < MAX_GROWTH_KB,
        "resident memory grew from {before} kB to a peak of {peak} kB"
    );
    run.check_counted().await;
    run.check_delivered().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_leaves_memory_flat() {
    let mut run = Running::start("stall-1").await;
    let before = vm(run.serve.pid(), "VmRSS");
    // Another connection holds the database's write lock.
    let mut blocker = sqlx::SqliteConnection::connect(&run.url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let stalled = Instant::now();
    flood(run.broker.port, &run.control).await;
    run.sentinel().await;
    // Feed messages went on meanwhile.
    let fed = run
        .feed
        .collect_until(Duration::from_secs(10), |m| {
            m.at > stalled + Duration::from_secs(2)
        })
        .await;
    assert!(fed.iter().all(|m| m.topic.ends_with("/feed")));
    let (rss, peak) = (vm(run.serve.pid(), "VmRSS"), vm(run.serve.pid(), "VmHWM"));
    eprintln!(
        "stalled store and a control-topic flood of {FLOOD} x {MESSAGE_BYTES} B: VmRSS {before} kB before, {rss} kB during, VmHWM {peak} kB"
    );
    assert!(
        peak.saturating_sub(before) < MAX_GROWTH_KB,
        "resident memory grew from {before} kB to a peak of {peak} kB while the store stalled"
    );
    // Writes are stuck: not ready.
    wait_for(Duration::from_secs(20), async || {
        (http(run.port, "GET", "/readyz", None).await.0 == 503).then_some(())
    })
    .await;
    // The held pause goes out once stored.
    let mut status =
        Subscriber::connect(run.broker.port, &format!("/exercise/{}/status", run.id)).await;
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    blocker.close().await.unwrap();
    status
        .collect_until(Duration::from_secs(30), |m| {
            m.payload["event"] == "state_changed" && m.payload["reason"] == "sentinel"
        })
        .await;
    wait_for(Duration::from_secs(20), async || {
        (http(run.port, "GET", "/readyz", None).await.0 == 200).then_some(())
    })
    .await;
    run.check_counted().await;
    run.check_delivered().await;
}

/// A `serve` on SQLite with one running exercise of 10 teams, an inject a
/// second for each.
struct Running {
    broker: Mosquitto,
    serve: Serve,
    port: u16,
    url: String,
    id: String,
    control: String,
    feed: Subscriber,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(id: &str) -> Self {
        let broker = Mosquitto::start();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("serve.db").display());
        let serve = Serve::start(None, broker.port, &url, dir.path());
        let port = serve.port;
        let mut feed =
            Subscriber::connect(broker.port, &format!("/exercise/{id}/team/+/feed")).await;
        let injects: Vec<Value> = (0..120)
            .map(|t| json!({"id": format!("i-{t:03}"), "time": t, "type": "news", "content": {}}))
            .collect();
        let teams: Vec<Value> = (0..10)
            .map(|n| json!({"id": format!("t{n}"), "timeline_id": "t"}))
            .collect();
        let package = json!({
            "id": id, "duration": 2,
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
        let (status, body) =
            http(port, "POST", &format!("/api/v1/exercises/{id}/start"), None).await;
        assert_eq!(status, 200, "{body}");
        feed.collect_until(Duration::from_secs(10), |m| m.payload["id"] == "i-001")
            .await;
        Self {
            broker,
            serve,
            port,
            url,
            id: id.to_owned(),
            control: format!("/exercise/{id}/control"),
            feed,
            _dir: dir,
        }
    }

    /// Sends `pause` with the reason "sentinel" until the exercise is paused:
    /// the control queue is first in, first out, so the flood before it has
    /// been taken.
    async fn sentinel(&self) {
        let client = Publisher::connect(self.broker.port).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            client
                .publish(
                    &self.control,
                    json!({"command": "pause", "reason": "sentinel"}).to_string(),
                )
                .await;
            let (_, e) = http(
                self.port,
                "GET",
                &format!("/api/v1/exercises/{}", self.id),
                None,
            )
            .await;
            if e["state"] == "paused" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinel pause was not taken within 120 s: {e}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// What was not reported one by one is counted.
    async fn check_counted(&self) {
        let metrics = metrics(self.port).await;
        let suppressed = metric(&metrics, "scip_control_reports_suppressed_total");
        assert!(
            suppressed > 0.0,
            "refusals over the report rate are counted: {suppressed}"
        );
        assert!(
            metrics.contains("scip_mqtt_received_dropped_total"),
            "the control queue's drops are counted"
        );
    }

    /// Every inject due before the pause went out and was confirmed.
    async fn check_delivered(&self) {
        let (_, deliveries) = http(
            self.port,
            "GET",
            &format!("/api/v1/exercises/{}/deliveries", self.id),
            None,
        )
        .await;
        let (_, e) = http(
            self.port,
            "GET",
            &format!("/api/v1/exercises/{}", self.id),
            None,
        )
        .await;
        let now = e["exercise_time"].as_u64().unwrap();
        let due: Vec<&Value> = deliveries
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["due_exercise_time"].as_u64().unwrap_or(u64::MAX) < now)
            .collect();
        assert!(!due.is_empty());
        assert!(
            due.iter().all(|d| d["status"] == "delivered"),
            "{:?}",
            due.iter()
                .filter(|d| d["status"] != "delivered")
                .collect::<Vec<_>>()
        );
    }
}

/// `FLOOD` messages on `topic`, half of them commands the exercise refuses,
/// half not JSON at all; returns once the broker took them all.
async fn flood(port: u16, topic: &str) {
    let client = Publisher::connect(port).await;
    let filler = "x".repeat(MESSAGE_BYTES);
    for n in 0..FLOOD {
        let payload = if n % 2 == 0 {
            json!({"command": "start", "reason": format!("{filler}{n}")}).to_string()
        } else {
            format!("not json {n} {filler}")
        };
        client.publish(topic, payload).await;
    }
    client.flush().await;
}

/// An MQTT client publishing with QoS 1.
struct Publisher {
    client: AsyncClient,
    acked: tokio::sync::watch::Receiver<u64>,
    sent: std::sync::atomic::AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    async fn connect(port: u16) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!(
            "flood-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let (acked_tx, acked) = tokio::sync::watch::channel(0u64);
        let (up_tx, up) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut up_tx = Some(up_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        if let Some(up) = up_tx.take() {
                            let _ = up.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::PubAck(_))) => {
                        acked_tx.send_modify(|n| *n += 1);
                    }
                    Ok(_) => {}
                    Err(e) => panic!("flood publisher: {e}"),
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), up)
            .await
            .expect("publisher connected within 10 s")
            .unwrap();
        Self {
            client,
            acked,
            sent: std::sync::atomic::AtomicU64::new(0),
            task,
        }
    }

    async fn publish(&self, topic: &str, payload: String) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits until the broker acknowledged everything published.
    async fn flush(&self) {
        let sent = self.sent.load(std::sync::atomic::Ordering::Relaxed);
        let mut acked = self.acked.clone();
        tokio::time::timeout(Duration::from_secs(120), acked.wait_for(|&n| n >= sent))
            .await
            .expect("the broker took the flood within 120 s")
            .unwrap();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `VmRSS` or `VmHWM` figure of process `pid`, in kB.
fn vm(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

async fn metrics(port: u16) -> String {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .bearer_auth(super::ADMIN)
        .send()
        .await
        .expect("serve answers")
        .text()
        .await
        .expect("a text body")
}

/// The sum of every series of `name` in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
