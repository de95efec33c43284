//! Several `serve` processes on one PostgreSQL database and one Mosquitto
//! (SPEC section 8), killed, frozen and stopped for real: an exercise whose
//! node dies runs on another within seconds, what was confirmed before is
//! never sent again, a frozen owner publishes nothing once its lease is
//! gone, SIGTERM hands leases over without waiting for them to expire, and
//! what cannot work (two processes as one node, a second process on one
//! SQLite file, the embedded broker beside another node) is refused at start.

mod any_node;
mod cut;
mod play;
mod refusals;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use scip_orchestrator::store::Store;
use scip_orchestrator::testing::{Lines, Mosquitto, PgDatabase, Subscriber};

const BIN: &str = env!("CARGO_BIN_EXE_scip-orchestrator");
const ADMIN: &str = "scip_cluster-test-admin-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_busiest_node_moves_its_exercises_within_10_s_losing_nothing() {
    let db = PgDatabase::create("cluster").await;
    let broker = Mosquitto::start();
    let media = tempfile::tempdir().unwrap();
    let mut sub = Subscriber::connect(broker.port, "/exercise/+/team/+/feed").await;
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| Node::start(id, broker.port, &db.url, media.path(), &[]))
        .collect();
    // Thirty exercises asked of the nodes unevenly: placement spreads them.
    let mut exercises = Vec::new();
    for (i, count) in [12, 9, 9].into_iter().enumerate() {
        for k in 0..count {
            let id = format!("x-{}-{k:02}", nodes[i].id);
            create(nodes[i].port, &id, 30, 1).await;
            exercises.push((id, i));
        }
    }
    for (id, i) in &exercises {
        let (status, body) = http(
            nodes[*i].port,
            "POST",
            &format!("/api/v1/exercises/{id}/start"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let started = Instant::now();
    let view = cluster(nodes[1].port).await;
    let owned = |node: &str| -> Vec<String> {
        view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == node)
            .map(|n| {
                n["exercises"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e.as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let busiest = (0..3).max_by_key(|&i| owned(&nodes[i].id).len()).unwrap();
    let victims = owned(&nodes[busiest].id);
    assert_eq!(victims.len(), 10, "ten on each node: {view}");

    // Let every exercise deliver a few injects, then kill the busiest node.
    let mut seen = sub
        .collect_until(Duration::from_secs(20), |m| {
            m.payload["id"] == "i-08" && victims.iter().any(|v| m.topic.contains(v.as_str()))
        })
        .await;
    nodes[busiest].kill_9();
    let killed = Instant::now();
    let store = Store::connect(&db.url).await.unwrap();
    let mut confirmed = Vec::new();
    for v in &victims {
        for r in store.deliveries(v, 1).await.unwrap() {
            if r.status == "delivered" {
                confirmed.push((v.clone(), r.inject_id));
            }
        }
    }
    assert!(!confirmed.is_empty());

    // Each of its exercises publishes again, from another node, within 10 s.
    let mut back: BTreeMap<String, Duration> = BTreeMap::new();
    let deadline = killed + Duration::from_secs(30);
    while back.len() < victims.len() && Instant::now() < deadline {
        if let Some(m) = sub.next(Duration::from_millis(200)).await {
            let exercise = m.topic.split('/').nth(2).unwrap().to_owned();
            if victims.contains(&exercise) {
                back.entry(exercise).or_insert_with(|| killed.elapsed());
            }
            seen.push(m);
        }
    }
    assert_eq!(back.len(), victims.len(), "back: {back:?}");
    let slowest = back.values().max().unwrap();
    assert!(
        *slowest <= Duration::from_secs(10),
        "every exercise runs again within 10 s of the kill: {back:?}"
    );
    // Their clocks went on: each stands where its start put it.
    let view = cluster(nodes[(busiest + 1) % 3].port).await;
    let port_of: HashMap<&str, u16> = nodes.iter().map(|n| (n.id.as_str(), n.port)).collect();
    for v in &victims {
        let lease = view["leases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["exercise_id"] == v.as_str())
            .unwrap();
        let owner = lease["owner"].as_str().unwrap();
        assert_ne!(owner, nodes[busiest].id, "{lease}");
        assert!(lease["epoch"].as_i64().unwrap() >= 2, "{lease}");
        assert_eq!(lease["takeovers"], 1, "{lease}");
        let (_, body) = http(
            port_of[owner],
            "GET",
            &format!("/api/v1/exercises/{v}"),
            None,
        )
        .await;
        let at = body["exercise_time"].as_f64().unwrap();
        let expected = started.elapsed().as_secs_f64().min(30.0);
        assert!(
            (at - expected).abs() <= 3.0,
            "{v} at T+{at} after {expected:.1} s of wall time: {body}"
        );
    }

    // Everything completes; every inject arrived, and none confirmed before
    // the kill arrived twice.
    let mut running: HashSet<String> = exercises.iter().map(|(id, _)| id.clone()).collect();
    for m in &seen {
        if m.payload["id"] == "i-30" {
            running.remove(m.topic.split('/').nth(2).unwrap());
        }
    }
    if !running.is_empty() {
        seen.extend(
            sub.collect_until(Duration::from_secs(60), |m| {
                if m.payload["id"] == "i-30" {
                    running.remove(m.topic.split('/').nth(2).unwrap());
                }
                running.is_empty()
            })
            .await,
        );
    }
    // Stragglers: a second copy sent at the takeover may still be on its way.
    while let Some(m) = sub.next(Duration::from_millis(500)).await {
        seen.push(m);
    }
    let mut times: HashMap<(String, String), usize> = HashMap::new();
    for m in &seen {
        let exercise = m.topic.split('/').nth(2).unwrap().to_owned();
        *times
            .entry((exercise, m.payload["id"].as_str().unwrap().to_owned()))
            .or_default() += 1;
    }
    for (id, _) in &exercises {
        for t in 0..=30 {
            let key = (id.clone(), format!("i-{t:02}"));
            let n = times.get(&key).copied().unwrap_or(0);
            assert!(n >= 1, "{key:?} never arrived");
            if confirmed.contains(&key) {
                assert_eq!(
                    n, 1,
                    "{key:?} was confirmed before the kill but arrived {n} times"
                );
            }
        }
    }
    store.close().await;
    drop(nodes);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owner_publishes_nothing_once_its_lease_is_taken_over() {
    let db = PgDatabase::create("cluster").await;
    let broker = Mosquitto::start();
    let media = tempfile::tempdir().unwrap();
    let mut sub = Subscriber::connect(broker.port, "/exercise/frozen/#").await;
    let mut frozen = Node::start("f1", broker.port, &db.url, media.path(), &[]);
    let other = Node::start("f2", broker.port, &db.url, media.path(), &[]);
    create(frozen.port, "frozen", 40, 1).await;
    assert_eq!(
        http(frozen.port, "POST", "/api/v1/exercises/frozen/start", None)
            .await
            .0,
        200
    );
    let mut seen = sub
        .collect_until(Duration::from_secs(10), |m| m.payload["id"] == "i-03")
        .await;
    frozen.signal(libc::SIGSTOP);
    // The other node claims the lease once it expired.
    let lease = wait_for(Duration::from_secs(20), async || {
        let view = cluster(other.port).await;
        let lease = view["leases"][0].clone();
        (lease["owner"] == "f2").then_some(lease)
    })
    .await;
    assert_eq!(lease["epoch"], 2, "{lease}");
    // What it publishes from here is the new owner's: the frozen one, woken,
    // sees its trust window long closed and its lease gone.
    seen.extend(sub.drain());
    frozen.signal(libc::SIGCONT);
    let line = frozen.log.wait_for(
        &[
            "lease lost",
            "ownership lost",
            "write refused by the lease fence",
        ],
        Duration::from_secs(15),
    );
    assert!(
        line.is_some(),
        "the woken owner learns it lost the exercise: {:?}",
        frozen.log.seen()
    );
    seen.extend(
        sub.collect_until(Duration::from_secs(50), |m| {
            m.topic.ends_with("/status") && m.payload["status"] == "completed"
        })
        .await,
    );
    let mut times: HashMap<String, usize> = HashMap::new();
    for m in seen.iter().filter(|m| m.topic.ends_with("/feed")) {
        *times
            .entry(m.payload["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for t in 0..=40 {
        let id = format!("i-{t:02}");
        let n = times.get(&id).copied().unwrap_or(0);
        assert!(n >= 1, "{id} never arrived");
        // Only an inject in flight at the freeze may come twice; nothing
        // the frozen node had not sent before it stopped comes from it.
        assert!(n <= 2, "{id} arrived {n} times: {times:?}");
    }
    let twice = times.values().filter(|&&n| n == 2).count();
    assert!(
        twice <= 1,
        "at most the inject in flight at the freeze twice: {times:?}"
    );
    let (_, body) = http(other.port, "GET", "/api/v1/exercises/frozen", None).await;
    assert_eq!(body["state"], "completed", "{body}");
    drop(frozen);
    drop(other);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_leases_over_without_waiting_for_them_to_expire() {
    let db = PgDatabase::create("cluster").await;
    let broker = Mosquitto::start();
    let media = tempfile::tempdir().unwrap();
    let mut sub = Subscriber::connect(broker.port, "/exercise/+/team/+/feed").await;
    // Leases that would take a minute to expire: only a hand-over is fast.
    let slow = [("LEASE_TTL_MS", "60000")];
    let leaving = Node::start("d1", broker.port, &db.url, media.path(), &slow);
    // Created while it is the only node: all three run on it.
    for k in 0..3 {
        let id = format!("drain-{k}");
        create(leaving.port, &id, 20, 1).await;
        assert_eq!(
            http(
                leaving.port,
                "POST",
                &format!("/api/v1/exercises/{id}/start"),
                None
            )
            .await
            .0,
            200
        );
    }
    let staying = Node::start("d2", broker.port, &db.url, media.path(), &slow);
    sub.collect_until(Duration::from_secs(10), |m| m.payload["id"] == "i-02")
        .await;
    assert_eq!(leaving.terminate(), Some(0), "a drained node exits 0");
    let view = wait_for(Duration::from_secs(15), async || {
        let view = cluster(staying.port).await;
        let leases = view["leases"].as_array().unwrap();
        leases.iter().all(|l| l["owner"] == "d2").then_some(view)
    })
    .await;
    for lease in view["leases"].as_array().unwrap() {
        // Freed, not expired: a claim of a free lease is no takeover.
        assert_eq!(lease["takeovers"], 0, "{lease}");
        assert_eq!(lease["epoch"], 2, "{lease}");
    }
    let nodes: Vec<&str> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["d2"], "the drained node removed its heartbeat");
    for k in 0..3 {
        let (_, body) = http(
            staying.port,
            "GET",
            &format!("/api/v1/exercises/drain-{k}"),
            None,
        )
        .await;
        assert_eq!(body["state"], "running", "{body}");
    }
    drop(staying);
    db.drop().await;
}

/// Creates exercise `id`: one team, an inject every `every` seconds up to
/// `duration` seconds, at real time.
async fn create(port: u16, id: &str, duration: u32, every: u32) {
    let injects: Vec<Value> = (0..=duration / every)
        .map(|k| json!({"id": format!("i-{:02}", k * every), "time": k * every, "type": "news", "content": {}}))
        .collect();
    let package = json!({
        "id": id, "duration": f64::from(duration) / 60.0,
        "teams": [{"id": "blue", "timeline_id": "t"}],
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
}

async fn cluster(port: u16) -> Value {
    let (status, body) = http(port, "GET", "/api/v1/cluster", None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A `serve` process as node `id` of a cluster.
struct Node {
    id: String,
    child: Child,
    port: u16,
    log: Lines,
}

impl Node {
    fn start(
        id: &str,
        mqtt_port: u16,
        database_url: &str,
        media: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = serve_command(mqtt_port, database_url, media)
            .env("NODE_ID", id)
            .envs(env.iter().copied())
            .spawn()
            .expect("start serve");
        let mut log = Lines::read(child.stderr.take().expect("piped stderr"));
        let Some(line) = log.wait_for(&[r#""message":"serving""#], Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!(
                "node {id} did not start; it logged:\n{}",
                log.seen().join("\n")
            );
        };
        let serving: Value = serde_json::from_str(&line).expect("a JSON log line");
        let port = serving["http"]
            .as_str()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .unwrap_or_else(|| panic!("no HTTP address in {line}"))
            .port();
        Self {
            id: id.to_owned(),
            child,
            port,
            log,
        }
    }

    fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// SIGTERM, then the exit code.
    fn terminate(mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A frozen process would ignore SIGKILL's reaping otherwise.
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve` on a port of its own choosing against `database_url` and the
/// external broker on `mqtt_port`.
fn serve_command(mqtt_port: u16, database_url: &str, media: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--database-url", database_url])
        .env("HTTP_BIND", "127.0.0.1:0")
        .arg("--media-storage-path")
        .arg(media)
        .env("MQTT_BROKER_HOST", "127.0.0.1")
        .env("MQTT_BROKER_PORT", mqtt_port.to_string())
        .env(
            "API_TOKENS",
            format!("admin:{}", scip_orchestrator::access::tokens::hash(ADMIN)),
        )
        .env("RETRY_DELAY_SECONDS", "1")
        // Thirty exercises started at once from one address.
        .env("MAX_COMMANDS_PER_MINUTE", "6000")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// One request as the admin: (status, JSON body, Null when there is none).
async fn http(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
