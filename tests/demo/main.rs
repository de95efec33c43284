//! The embedded broker and `demo`: rumqttd in-process with our own MQTT
//! client and outside subscribers (TCP and WebSocket), and the binary's
//! `demo` and `serve` as a user runs them, on free ports.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, Transport};
use serde_json::Value;
use tokio::sync::mpsc as tokio_mpsc;

use scip_orchestrator::broker::{BrokerError, BrokerOptions, BrokerSettings, EmbeddedBroker};
use scip_orchestrator::mqtt::{AckEvent, AckTo, Message, Mqtt, MqttSettings};
use scip_orchestrator::testing::{
    Lines, Proxy, Seen, Subscriber, embedded_broker, on_free_ports, on_free_ports_async,
};

const BIN: &str = env!("CARGO_BIN_EXE_scip-orchestrator");
const EXERCISE: &str = "four-teams-demo";
/// The goal for `demo`, from process start to "exercise running".
const RUNNING_WITHIN: Duration = Duration::from_secs(5);

/// The embedded broker, open, on free loopback ports.
async fn loopback_broker() -> EmbeddedBroker {
    embedded_broker(None, BrokerOptions::default()).await
}

/// Waits for the outcome of the publish tagged `tag`.
async fn outcome(acks: &mut tokio_mpsc::UnboundedReceiver<AckEvent>, tag: u64) -> AckEvent {
    let event = tokio::time::timeout(Duration::from_secs(10), acks.recv())
        .await
        .expect("an outcome within 10 s")
        .expect("the client is alive");
    match &event {
        AckEvent::Acked { tag: t, .. } | AckEvent::Failed { tag: t, .. } => assert_eq!(*t, tag),
    }
    event
}

fn message(topic: &str, payload: Vec<u8>, retain: bool, tag: u64, to: &AckTo) -> Message {
    Message {
        topic: topic.to_owned(),
        payload,
        qos: QoS::AtLeastOnce,
        retain,
        ack: Some(AckTo {
            tag,
            to: to.to.clone(),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_keeps_retained_messages_and_carries_1_mib() {
    let broker = loopback_broker().await;
    assert_eq!(
        broker.mqtt_url(),
        format!("mqtt://127.0.0.1:{}", broker.settings().port)
    );
    assert_eq!(
        broker.ws_url(),
        format!("ws://127.0.0.1:{}/mqtt", broker.settings().ws_port)
    );
    // The engine's client: a clean-session probe, then a persistent session.
    let mqtt = Mqtt::connect(MqttSettings::new(
        broker.client_host(),
        broker.settings().port,
        "engine-under-test",
    ))
    .await
    .unwrap();
    let (tx, mut acks) = tokio_mpsc::unbounded_channel();
    let to = AckTo { tag: 0, to: tx };

    // Retained, on a topic with a leading "/", before anyone subscribes.
    let timer = br#"{"current":5,"formatted":"T+00:05"}"#.to_vec();
    mqtt.publish(message("/exercise/b1/timer", timer.clone(), true, 1, &to));
    assert!(matches!(
        outcome(&mut acks, 1).await,
        AckEvent::Acked { .. }
    ));
    let mut late = Subscriber::connect(broker.settings().port, "/exercise/b1/#").await;
    let seen = late
        .next(Duration::from_secs(10))
        .await
        .expect("the retained timer reaches a late subscriber");
    assert_eq!(seen.topic, "/exercise/b1/timer");
    assert_eq!(seen.raw, timer);
    assert!(seen.retain, "delivered as retained");

    // A long inject: 1 MiB, acknowledged and delivered intact.
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    mqtt.publish(message(
        "/exercise/b1/team/blue/feed",
        big.clone(),
        false,
        2,
        &to,
    ));
    assert!(matches!(
        outcome(&mut acks, 2).await,
        AckEvent::Acked { .. }
    ));
    let seen = late
        .next(Duration::from_secs(10))
        .await
        .expect("the 1 MiB message arrives");
    assert_eq!(seen.topic, "/exercise/b1/team/blue/feed");
    assert_eq!(seen.raw.len(), big.len());
    assert!(seen.raw == big, "payload intact");
    assert!(!seen.retain);
    mqtt.close(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_client_resumes_its_session_with_the_embedded_broker() {
    let broker = loopback_broker().await;
    let proxy = Proxy::start(broker.settings().port).await;
    let mut sub = Subscriber::connect(broker.settings().port, "/exercise/b2/#").await;
    let mqtt = Mqtt::connect(MqttSettings::new("127.0.0.1", proxy.port, "engine-resumes"))
        .await
        .unwrap();
    let mut connected = mqtt.connected();
    let (tx, mut acks) = tokio_mpsc::unbounded_channel();
    let to = AckTo { tag: 0, to: tx };

    // Sent into a stalled link and lost with it: rumqttc resends it on the
    // resumed session. Had rumqttd forgotten the session (CONNACK without
    // session present), the client would report it failed instead.
    proxy.set_stalled(true);
    mqtt.publish(message(
        "/exercise/b2/team/red/feed",
        b"during the outage".to_vec(),
        false,
        7,
        &to,
    ));
    proxy.set_up(false);
    tokio::time::timeout(Duration::from_secs(20), connected.wait_for(|c| !*c))
        .await
        .expect("the cut is noticed")
        .unwrap();
    proxy.set_stalled(false);
    proxy.set_up(true);
    let event = outcome(&mut acks, 7).await;
    assert!(matches!(event, AckEvent::Acked { .. }), "{event:?}");
    let seen = sub
        .collect_until(Duration::from_secs(10), |m| {
            m.topic == "/exercise/b2/team/red/feed"
        })
        .await;
    assert_eq!(seen.last().unwrap().raw, b"during the outage");
    mqtt.close(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_names_a_taken_port_and_its_flag() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for flag in [
        "--broker-port / BROKER_PORT",
        "--broker-ws-port / BROKER_WS_PORT",
    ] {
        // The other port is drawn free; should another process take it
        // first, the error names that one: then another.
        let err = on_free_ports_async(async |[other]| {
            let (port, ws_port) = match flag {
                "--broker-port / BROKER_PORT" => (port, other),
                _ => (other, port),
            };
            let settings = BrokerSettings {
                bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
                ws_port,
            };
            match EmbeddedBroker::start(settings).await.unwrap_err() {
                BrokerError::PortTaken { port: p, .. } if p == other => None,
                err => Some(err),
            }
        })
        .await;
        assert!(matches!(err, BrokerError::PortTaken { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("port {port} is taken: choose another with {flag}")
        );
    }
}

/// A `demo` or `serve` process of our own, its stdout read line by line.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: Lines,
    /// When it was started.
    spawned: Instant,
}

impl Proc {
    fn spawn(args: &[&str]) -> Self {
        let spawned = Instant::now();
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("MQTT_BROKER_HOST")
            .env_remove("MEDIA_STORAGE_PATH")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the binary");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Lines::read(child.stderr.take().unwrap());
        Self {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
            spawned,
        }
    }

    /// Reads stdout until a line contains `ready` (true), or the process
    /// ends first (false); panics after 20 s.
    fn started(&mut self, ready: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    let done = line.contains(ready);
                    self.stdout.push(line);
                    if done {
                        return true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                Err(e) => panic!(
                    "no line with {ready:?} within 20 s ({e}); stdout:\n{}",
                    self.stdout.join("\n")
                ),
            }
        }
    }

    /// The URL on the banner line labelled `label`.
    fn url(&self, label: &str) -> String {
        self.stdout
            .iter()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{}", self.stdout.join("\n")))
            .trim()
            .to_owned()
    }

    /// SIGTERM, then the exit status and stderr.
    fn terminate(self) -> (ExitStatus, String) {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        self.finish()
    }

    /// Waits for the exit; the exit status and stderr.
    fn finish(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().unwrap();
        let err = self.stderr.until_closed(Duration::from_secs(20)).join("\n");
        (status, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct DemoPorts {
    http: u16,
    mqtt: u16,
    ws: u16,
}

impl DemoPorts {
    fn from([http, mqtt, ws]: [u16; 3]) -> Self {
        Self { http, mqtt, ws }
    }
}

/// `demo` on `ports`, once it runs its exercise; None when it ended
/// because one of them was taken.
fn start_demo(ports: &DemoPorts, data_dir: &Path, speed: &str) -> Option<Proc> {
    let mut demo = spawn_demo(ports, data_dir, speed);
    if demo.started(&format!(" running at speed {speed}")) {
        return Some(demo);
    }
    let (status, stderr) = demo.finish();
    assert!(
        stderr.contains(" is taken: "),
        "demo ended at start ({status:?}):\n{stderr}"
    );
    None
}

fn spawn_demo(ports: &DemoPorts, data_dir: &Path, speed: &str) -> Proc {
    let http = format!("127.0.0.1:{}", ports.http);
    let (mqtt, ws) = (ports.mqtt.to_string(), ports.ws.to_string());
    Proc::spawn(&[
        "demo",
        "--http-bind",
        &http,
        "--broker-port",
        &mqtt,
        "--broker-ws-port",
        &ws,
        "--speed",
        speed,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
}

/// An outside MQTT client over WebSocket, as a browser connects; records
/// every message on `filter`.
async fn websocket_subscriber(
    ws_url: &str,
    ws_port: u16,
    filter: &str,
) -> (AsyncClient, tokio_mpsc::UnboundedReceiver<Seen>) {
    let mut opts = MqttOptions::new(format!("ws-test-{}", std::process::id()), ws_url, ws_port);
    opts.set_transport(Transport::Ws)
        .set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(8 << 20, 8 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let (tx, rx) = tokio_mpsc::unbounded_channel();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let sub_client = client.clone();
    let filter = filter.to_owned();
    tokio::spawn(async move {
        let mut subscribed = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let (c, f) = (sub_client.clone(), filter.clone());
                    tokio::spawn(async move { c.subscribe(f, QoS::AtLeastOnce).await });
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let seen = Seen {
                        topic: p.topic,
                        payload: serde_json::from_slice(&p.payload).unwrap_or(Value::Null),
                        raw: p.payload.to_vec(),
                        retain: p.retain,
                        at: tokio::time::Instant::now(),
                    };
                    if tx.send(seen).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("WebSocket MQTT client failed: {e}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .expect("subscribed over WebSocket within 10 s")
        .unwrap();
    (client, rx)
}

/// Messages until `until` matches one (returned); panics after `within`.
async fn wait_for(
    rx: &mut tokio_mpsc::UnboundedReceiver<Seen>,
    within: Duration,
    mut until: impl FnMut(&Seen) -> bool,
) -> Seen {
    let deadline = tokio::time::Instant::now() + within;
    let mut count = 0;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) if until(&m) => return m,
            Ok(Some(_)) => count += 1,
            _ => panic!("the awaited message did not arrive within {within:?} ({count} others)"),
        }
    }
}

fn is_timer(m: &Seen) -> bool {
    m.topic == format!("/exercise/{EXERCISE}/timer") && m.payload["formatted"].is_string()
}

fn is_feed_message(m: &Seen) -> bool {
    m.topic.starts_with(&format!("/exercise/{EXERCISE}/team/"))
        && m.topic.ends_with("/feed")
        && m.payload["exercise_id"] == EXERCISE
        && m.payload["id"].is_string()
}

async fn exercises(api: &str, token: &str) -> Vec<Value> {
    let body: Value = reqwest::Client::new()
        .get(format!("{api}/api/v1/exercises"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    body.as_array().expect("a list").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_the_sample_on_the_embedded_broker_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // Ports drawn again should another process take one before demo binds it.
    let (demo, ports) = on_free_ports(|ports| {
        let ports = DemoPorts::from(ports);
        start_demo(&ports, dir.path(), "30").map(|demo| (demo, ports))
    });
    let to_running = demo.spawned.elapsed();
    eprintln!("demo: process start to exercise running in {to_running:?}");
    assert!(
        to_running < RUNNING_WITHIN,
        "running after {to_running:?}, the goal is {RUNNING_WITHIN:?}"
    );
    let mqtt_url = demo.url("MQTT broker:");
    let ws_url = demo.url("MQTT WebSocket:");
    // The control room's address signs in with the demo's controller token.
    let signed_in = demo.url("control room:");
    let (control_room, hash_token) = signed_in.split_once("#token=").expect("a token");
    let control_room = control_room.to_owned();
    let token = demo
        .url("API token:")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(hash_token, token);
    assert_eq!(mqtt_url, format!("mqtt://127.0.0.1:{}", ports.mqtt));
    assert_eq!(ws_url, format!("ws://127.0.0.1:{}/mqtt", ports.ws));
    assert_eq!(control_room, format!("http://127.0.0.1:{}/", ports.http));
    for team in ["blue", "red", "orange", "green"] {
        // Each team's signed dashboard link.
        let url = demo.url(&format!("team {team}:"));
        let (page, token) = url.split_once("?token=").expect("a signed link");
        assert_eq!(
            page,
            format!(
                "http://127.0.0.1:{}/exercises/{EXERCISE}/teams/{team}",
                ports.http
            )
        );
        assert!(token.len() > 40, "{url}");
    }

    // Outside clients of the embedded broker, over TCP and over WebSocket.
    let filter = format!("/exercise/{EXERCISE}/#");
    let mut tcp = Subscriber::connect(ports.mqtt, &filter).await;
    let (_ws_client, mut ws) = websocket_subscriber(&ws_url, ports.ws, &filter).await;
    let within = Duration::from_secs(20);
    tcp.collect_until(within, is_timer).await;
    wait_for(&mut ws, within, is_timer).await;
    // T+1:00 (blue and red) comes 2 s after the start at speed 30.
    let feed = tcp.collect_until(within, is_feed_message).await;
    let feed = feed.last().unwrap();
    let over_ws = wait_for(&mut ws, within, is_feed_message).await;
    assert!(!feed.retain && !over_ws.retain);
    assert!(
        feed.payload["exerciseTime"].as_u64().is_some(),
        "{}",
        feed.payload
    );

    // The pages and the API.
    let page = reqwest::get(&control_room).await.unwrap();
    assert_eq!(page.status(), 200);
    let content_type = page.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let api = control_room.trim_end_matches('/');
    let listed = exercises(api, &token).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], EXERCISE);
    assert_eq!(listed[0]["state"], "running");
    assert_eq!(listed[0]["speed"], 30.0);

    let (status, stderr) = demo.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("inject delivered"), "{stderr}");
    assert!(
        !stderr.contains("rumqttd"),
        "the embedded broker's own logs stay quiet:\n{stderr}"
    );

    // A second run on the same data dir starts afresh.
    // On the same ports, which another process may hold for a moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    let again = loop {
        if let Some(again) = start_demo(&ports, dir.path(), "30") {
            break again;
        }
        assert!(Instant::now() < deadline, "the ports stayed taken for 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A fresh run has a fresh token.
    let token = again
        .url("API token:")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let listed = exercises(api, &token).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "running");
    assert_eq!(listed[0]["run"], 1);
    let (status, stderr) = again.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn demo_names_a_taken_port_and_the_flag_that_changes_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    for (flag, env) in [
        ("--http-bind", "HTTP_BIND"),
        ("--broker-port", "BROKER_PORT"),
        ("--broker-ws-port", "BROKER_WS_PORT"),
    ] {
        // The other ports are drawn free; should another process take one
        // first, the error names that one: then others.
        let (status, stderr) = on_free_ports(|drawn| {
            let mut ports = DemoPorts::from(drawn);
            match flag {
                "--http-bind" => ports.http = port,
                "--broker-port" => ports.mqtt = port,
                _ => ports.ws = port,
            }
            let (status, stderr) = spawn_demo(&ports, dir.path(), "5").finish();
            let other = drawn
                .iter()
                .any(|p| stderr.contains(&format!("port {p} is taken")));
            (!other).then_some((status, stderr))
        });
        assert!(!status.success(), "{flag}: exit {status:?}");
        assert!(
            stderr.contains(&format!(
                "port {port} is taken: choose another with {flag} / {env}"
            )),
            "{flag}: {stderr}"
        );
    }
    // Nothing was started, so nothing was written.
    assert!(!dir.path().join("demo.db").exists());
}

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
