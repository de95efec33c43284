//! `serve` without a broker host: it starts the embedded broker, keeps
//! credentials out of its logs and lives through SIGHUP.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use scip_orchestrator::testing::{Subscriber, on_free_ports};

use crate::support::{BIN, DemoPorts, Proc};

/// The admin token of the `serve` under test.
const ADMIN: &str = "scip_demo-test-admin-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_a_broker_host_starts_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = format!("admin:{}", scip_orchestrator::access::tokens::hash(ADMIN));
    // Ports drawn again should another process take one before serve binds it.
    let (serve, ports) = on_free_ports(|ports| {
        let ports = DemoPorts::from(ports);
        let http = format!("127.0.0.1:{}", ports.http);
        let (mqtt, ws) = (ports.mqtt.to_string(), ports.ws.to_string());
        let mut serve = Proc::spawn(&[
            "serve",
            "--api-tokens",
            &tokens,
            "--http-bind",
            &http,
            "--broker-port",
            &mqtt,
            "--broker-ws-port",
            &ws,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ]);
        // Logged once every port is bound.
        let listening = serve
            .stderr
            .wait_for(&["embedded MQTT broker listening"], Duration::from_secs(20));
        if listening.is_some() {
            return Some((serve, ports));
        }
        let (status, stderr) = serve.finish();
        assert!(
            stderr.contains(" is taken: "),
            "serve ended at start ({status:?}):\n{stderr}"
        );
        None
    });
    let http = format!("127.0.0.1:{}", ports.http);
    let api = format!("http://{http}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("{api}/readyz")).await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "serve not ready within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An exercise created over the API publishes on the embedded broker.
    let mut sub = Subscriber::connect(ports.mqtt, "/exercise/embedded-1/#").await;
    let package = sample_package();
    let admin = ADMIN;
    let created = reqwest::Client::new()
        .post(format!("{api}/api/v1/exercises"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"package": package, "exercise_id": "embedded-1", "speed": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let started = reqwest::Client::new()
        .post(format!("{api}/api/v1/exercises/embedded-1/start"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200, "{}", started.text().await.unwrap());
    sub.collect_until(Duration::from_secs(20), |m| {
        m.topic == "/exercise/embedded-1/team/blue/feed" && m.payload["id"] == "blue-001"
    })
    .await;
    let (status, stderr) = serve.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// The sample as an inline package: the scenario plus its timelines by path.
fn sample_package() -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/four-teams");
    let read = |p: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(root.join(p)).unwrap()).unwrap()
    };
    let mut package = read("scenario.json");
    let mut timelines = serde_json::Map::new();
    for entry in std::fs::read_dir(root.join("timelines")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let path = format!("timelines/{name}");
        timelines.insert(path.clone(), read(&path));
    }
    package["timelines"] = Value::Object(timelines);
    package
}

/// `serve` on the embedded broker with debug logs, its stderr collected
/// line by line.
struct LoggedServe {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    api: String,
}

impl LoggedServe {
    fn start(dir: &Path) -> Self {
        // Ports drawn again should another process take one before serve
        // binds it.
        on_free_ports(|ports| Self::start_on(dir, &DemoPorts::from(ports)))
    }

    /// Serve on `ports` once every one is bound; None when it ended because
    /// one was taken.
    fn start_on(dir: &Path, ports: &DemoPorts) -> Option<Self> {
        let tokens = format!("admin:{}", scip_orchestrator::access::tokens::hash(ADMIN));
        let mut child = Command::new(BIN)
            .args(["serve", "--api-tokens", &tokens, "--http-bind"])
            .arg(format!("127.0.0.1:{}", ports.http))
            .args(["--broker-port", &ports.mqtt.to_string()])
            .args(["--broker-ws-port", &ports.ws.to_string()])
            .args(["--data-dir", dir.to_str().unwrap()])
            .env_remove("MQTT_BROKER_HOST")
            .env_remove("MEDIA_STORAGE_PATH")
            .env_remove("BROKER_PASSWORD_FILE")
            .env_remove("BROKER_ACL_FILE")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        let (tx, fresh) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match fresh.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                // Logged once every port is bound.
                Ok(line) if line.contains("embedded MQTT broker listening") => break,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = child.wait();
                    let log = log.lock().unwrap().join("\n");
                    assert!(log.contains(" is taken: "), "serve ended at start:\n{log}");
                    return None;
                }
                Err(e) => panic!("serve did not start its broker within 20 s: {e}"),
            }
        }
        Some(Self {
            child,
            log,
            api: format!("http://127.0.0.1:{}", ports.http),
        })
    }

    async fn ready(&self) -> bool {
        reqwest::get(format!("{}/readyz", self.api))
            .await
            .is_ok_and(|r| r.status() == 200)
    }

    /// Waits until a log line contains `needle`; panics after 20 s.
    async fn logged(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(Instant::now() < deadline, "no log line with {needle:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for LoggedServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_credentials_out_of_its_logs_and_lives_through_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = LoggedServe::start(dir.path());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !serve.ready().await {
        assert!(Instant::now() < deadline, "serve not ready within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Credentials in addresses, as browsers send them: the control room's
    // token, a team link, a media token.
    let link = "djIuZmFrZS1saW5rLXNlY3JldA.c2lnbmF0dXJlLXNlY3JldA";
    let media = "bTEuZmFrZS1tZWRpYS1zZWNyZXQ.bWVkaWEtc2lnbmF0dXJl";
    for path in [
        format!("/api/v1/exercises?access_token={ADMIN}"),
        format!("/api/v1/exercises/x/teams/blue/events?token={link}"),
        format!("/exercises/x/media/map.png?media={media}&run=1"),
    ] {
        let status = reqwest::get(format!("{}{path}", serve.api))
            .await
            .unwrap()
            .status();
        assert_ne!(status, 500, "{path}");
    }
    // Each request's debug span is logged, credentials blanked.
    let line = serve.logged("/exercises/x/media/map.png").await;
    assert!(line.contains("media=[redacted]&run=1"), "{line}");
    serve.logged("access_token=[redacted]").await;
    serve.logged("token=[redacted]").await;
    {
        let log = serve.log.lock().unwrap();
        for secret in [ADMIN, link, media, "c2lnbmF0dXJl", "bWVkaWEtc2lnbmF0dXJl"] {
            let leaks: Vec<&String> = log.iter().filter(|l| l.contains(secret)).collect();
            assert!(leaks.is_empty(), "{secret} logged: {leaks:#?}");
        }
    }

    // SIGHUP without broker files: logged, and the process serves on.
    let status = Command::new("kill")
        .args(["-HUP", &serve.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    serve.logged("SIGHUP: no broker password or ACL file").await;
    assert!(serve.child.try_wait().unwrap().is_none(), "serve ended");
    assert!(serve.ready().await, "serve is still ready");
    let kill = Command::new("kill")
        .args(["-TERM", &serve.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(serve.child.wait().unwrap().code(), Some(0));
}
