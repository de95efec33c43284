//! `serve` killed with SIGKILL in the middle of an exercise and started again,
//! on SQLite and on PostgreSQL: the exercise resumes where it would have
//! been, what came due meanwhile goes out late, and nothing confirmed before
//! the kill is sent again. The other modules take the real process through
//! other failures: SIGTERM on due instants (`graceful`), a database that
//! refuses writes (`store_failure`), stored rows that cannot be restored
//! (`restore`), and floods and stalls that unbounded queues would not survive
//! (`queues`).

mod graceful;
mod play;
mod queues;
mod restore;
mod store_failure;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use scip_orchestrator::store::Store;
use scip_orchestrator::testing::{Lines, Mosquitto, PgDatabase, Subscriber};

const BIN: &str = env!("CARGO_BIN_EXE_scip-orchestrator");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_on_sqlite_loses_nothing_and_repeats_nothing_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("serve.db").display());
    kill_and_restart(&url, "crash-sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_on_postgres_loses_nothing_and_repeats_nothing_confirmed() {
    let db = PgDatabase::create("recovery").await;
    kill_and_restart(&db.url, "crash-postgres").await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_saves_state_and_the_next_start_resumes() {
    let broker = Mosquitto::start();
    let media = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("serve.db").display());
    let exercise = "graceful-1";
    let mut sub = Subscriber::connect(broker.port, &format!("/exercise/{exercise}/#")).await;
    let serve = Serve::start(None, broker.port, &url, media.path());
    let port = serve.port;
    let injects: Vec<Value> = (0..=6)
        .map(|t| json!({"id": format!("i-{t}"), "time": t * 10, "type": "news", "content": {}}))
        .collect();
    let package = json!({
        "id": exercise, "duration": 1,
        "teams": [{"id": "blue", "timeline_id": "t"}],
        "timelines": [{"id": "t", "injects": injects}],
    });
    let (status, body) = http(
        port,
        "POST",
        "/api/v1/exercises",
        Some(json!({"package": package, "speed": 10.0})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let base = format!("/api/v1/exercises/{exercise}");
    assert_eq!(
        http(port, "POST", &format!("{base}/start"), None).await.0,
        200
    );
    sub.collect_until(Duration::from_secs(10), |m| m.payload["id"] == "i-2")
        .await;
    let (status, _) = http(
        port,
        "POST",
        &format!("{base}/pause"),
        Some(json!({"reason": "lunch"})),
    )
    .await;
    assert_eq!(status, 200);
    let paused_at = http(port, "GET", &base, None).await.1["exercise_time"].clone();
    let link = http(port, "GET", &base, None).await.1["teams"][0]["dashboard_url"].clone();

    let code = serve.terminate();
    assert_eq!(code, Some(0), "serve exits 0 on SIGTERM");
    // Start again: the exercise is still paused at the same time, and its
    // history is there.
    let _serve = Serve::start(Some(port), broker.port, &url, media.path());
    let (_, again) = http(port, "GET", &base, None).await;
    assert_eq!(again["state"], "paused", "{again}");
    assert_eq!(again["exercise_time"], paused_at);
    // The team's link is the same and still opens its dashboard.
    assert_eq!(again["teams"][0]["dashboard_url"], link);
    let token = link.as_str().unwrap().split_once("?token=").unwrap().1;
    let (status, body) = http(
        port,
        "POST",
        &format!("{base}/teams/blue/receipts?token={token}"),
        Some(json!({"run": 1, "inject_ids": []})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, log) = http(port, "GET", &format!("{base}/control-log"), None).await;
    let commands: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["start", "pause"]);
    assert_eq!(log[1]["reason"], "lunch");
    // Resumed, it completes and delivers the rest exactly once.
    assert_eq!(
        http(port, "POST", &format!("{base}/resume"), None).await.0,
        200
    );
    let seen = sub
        .collect_until(Duration::from_secs(20), |m| {
            m.topic.ends_with("/status") && m.payload["status"] == "completed"
        })
        .await;
    let later: Vec<&str> = seen
        .iter()
        .filter(|m| m.topic.ends_with("/feed"))
        .map(|m| m.payload["id"].as_str().unwrap())
        .collect();
    assert_eq!(later, ["i-3", "i-4", "i-5", "i-6"]);
    let (_, deliveries) = http(port, "GET", &format!("{base}/deliveries"), None).await;
    assert!(
        deliveries
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "delivered" && d["late"] == false)
    );
}

async fn kill_and_restart(database_url: &str, exercise: &str) {
    let broker = Mosquitto::start();
    let media = tempfile::tempdir().unwrap();
    let mut sub =
        Subscriber::connect(broker.port, &format!("/exercise/{exercise}/team/+/feed")).await;
    let mut serve = Serve::start(None, broker.port, database_url, media.path());
    let port = serve.port;

    let injects: Vec<Value> = (0..=20)
        .map(|t| json!({"id": format!("i-{t:02}"), "time": t, "type": "news", "content": {"headline": format!("T+{t}")}}))
        .collect();
    let package = json!({
        "id": exercise, "name": "crash test", "duration": 20.0 / 60.0,
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
    let (status, body) = http(
        port,
        "POST",
        &format!("/api/v1/exercises/{exercise}/start"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let before = sub
        .collect_until(Duration::from_secs(20), |m| {
            m.payload["id"] == "i-05" && m.payload["team_id"] == "red"
        })
        .await;
    serve.kill_9();
    let killed = Instant::now();
    // What the store had confirmed when the process died.
    let store = Store::connect(database_url).await.unwrap();
    let confirmed: Vec<(String, String)> = store
        .deliveries(exercise, 1)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.status == "delivered")
        .map(|r| (r.team_id, r.inject_id))
        .collect();
    store.close().await;
    assert!(
        confirmed.len() >= 6,
        "the store had confirmed deliveries: {confirmed:?}"
    );
    // Down for three seconds: T+6 to T+8 come due meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let serve = Serve::start(Some(port), broker.port, database_url, media.path());
    let down = killed.elapsed();

    // The exercise continues where it would have been, and completes.
    let deadline = Instant::now() + Duration::from_secs(40);
    let exercise_state = loop {
        let (status, body) =
            http(port, "GET", &format!("/api/v1/exercises/{exercise}"), None).await;
        assert_eq!(status, 200, "{body}");
        if body["state"] == "completed" || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(exercise_state["state"], "completed", "{exercise_state}");

    let mut seen = before;
    seen.extend(
        sub.collect_until(Duration::from_secs(10), |m| {
            m.payload["id"] == "i-20" && m.payload["team_id"] == "red"
        })
        .await,
    );
    while let Some(m) = sub.next(Duration::from_millis(500)).await {
        seen.push(m);
    }
    let mut times: HashMap<(String, String), usize> = HashMap::new();
    for m in &seen {
        *times
            .entry((
                m.payload["team_id"].as_str().unwrap().to_owned(),
                m.payload["id"].as_str().unwrap().to_owned(),
            ))
            .or_default() += 1;
    }
    for team in ["blue", "red"] {
        for t in 0..=20 {
            let key = (team.to_owned(), format!("i-{t:02}"));
            let n = times.get(&key).copied().unwrap_or(0);
            assert!(n >= 1, "{key:?} never arrived");
            if confirmed.contains(&key) {
                assert_eq!(
                    n, 1,
                    "{key:?} was confirmed before the kill but arrived {n} times"
                );
            } else {
                assert!(n <= 2, "{key:?} arrived {n} times");
            }
        }
    }
    let (_, deliveries) = http(
        port,
        "GET",
        &format!("/api/v1/exercises/{exercise}/deliveries"),
        None,
    )
    .await;
    let deliveries = deliveries.as_array().expect("a list");
    assert_eq!(deliveries.len(), 42);
    assert!(
        deliveries.iter().all(|d| d["status"] == "delivered"),
        "{deliveries:?}"
    );
    let late: Vec<&Value> = deliveries.iter().filter(|d| d["late"] == true).collect();
    assert!(
        late.len() >= 4,
        "injects due while down are late: {}",
        late.len()
    );
    let worst = late
        .iter()
        .filter_map(|d| d["latency_ms"].as_f64())
        .fold(0.0, f64::max);
    assert!(
        worst >= (down.as_secs_f64() - 1.5) * 1000.0,
        "lateness {worst} ms against {down:?} down"
    );
    serve.terminate();
}

/// A `serve` process of our own.
struct Serve {
    child: Child,
    /// Where its HTTP API listens.
    port: u16,
}

impl Serve {
    /// `serve` on `port`, or with None on a port the system picks (read
    /// back from its log), which no other process can take first.
    fn start(port: Option<u16>, mqtt_port: u16, database_url: &str, media: &Path) -> Self {
        Self::start_with(port, mqtt_port, database_url, media, &[])
    }

    /// `serve` with these environment variables added; returns once it
    /// logged that it serves. A `port` given is one clients know from an
    /// earlier start: while another process holds it, it starts again.
    fn start_with(
        port: Option<u16>,
        mqtt_port: u16,
        database_url: &str,
        media: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = Command::new(BIN)
                .args([
                    "serve",
                    "--http-bind",
                    &format!("127.0.0.1:{}", port.unwrap_or(0)),
                    "--database-url",
                    database_url,
                ])
                .arg("--media-storage-path")
                .arg(media)
                .env("MQTT_BROKER_HOST", "127.0.0.1")
                .env("MQTT_BROKER_PORT", mqtt_port.to_string())
                .env(
                    "API_TOKENS",
                    format!("admin:{}", scip_orchestrator::access::tokens::hash(ADMIN)),
                )
                .env("RETRY_DELAY_SECONDS", "1")
                .env("LOG_FORMAT", "json")
                .env("RUST_LOG", "info")
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start serve");
            let mut log = Lines::read(child.stderr.take().expect("piped stderr"));
            let left = deadline.saturating_duration_since(Instant::now());
            match log.wait_for(&[r#""message":"serving""#, " is taken: "], left) {
                Some(line) if line.contains(" is taken: ") => {
                    let _ = child.wait();
                    assert!(
                        Instant::now() < deadline,
                        "port {port:?} stayed taken for 20 s"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
                Some(line) => {
                    let serving: Value = serde_json::from_str(&line).expect("a JSON log line");
                    let port = serving["http"]
                        .as_str()
                        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                        .unwrap_or_else(|| panic!("no HTTP address in {line}"))
                        .port();
                    return Self { child, port };
                }
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "serve did not start within 20 s; it logged:\n{}",
                        log.seen().join("\n")
                    );
                }
            }
        }
    }

    fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit code.
    fn terminate(mut self) -> Option<i32> {
        self.signal_term();
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// Sends SIGTERM at once (no `kill` process to start: the instant matters).
    fn signal_term(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to serve");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit on its own; its exit code.
    fn wait(mut self) -> Option<i32> {
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admin token of the `serve` under test.
const ADMIN: &str = "scip_recovery-test-admin-token";

/// One request to the `serve` on `port` as its admin: (status, JSON body,
/// Null when there is none).
async fn http(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    // No pooled connections: `serve` restarts on the same port.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client");
    let response = client
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(ADMIN)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.map(|b| b.to_string()).unwrap_or_default())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: no answer from serve: {e}"));
    let status = response.status().as_u16();
    let json = response.json().await.unwrap_or(Value::Null);
    (status, json)
}

/// Polls `check` until it gives a value; panics after `within`.
async fn wait_for<T>(within: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
