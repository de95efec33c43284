//! `spawn_app()`: the whole `serve` stack on free ports (a private Mosquitto
//! behind a cuttable proxy, SQLite in a temp dir, the HTTP API on
//! 127.0.0.1:0), and a small JSON client for it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use clap::Parser;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::{Mutex, oneshot};

use scip_orchestrator::config::Config;
use scip_orchestrator::http;

/// Held by every test that posts receipts: the receipt latency histogram of
/// `/metrics` is the process's own (one recorder for every app of this test
/// binary), so a test that counts it must not share it with another that
/// adds to it meanwhile.
pub static RECEIPT_METRICS: Mutex<()> = Mutex::const_new(());
use scip_orchestrator::mqtt::{Mqtt, MqttSettings};
use scip_orchestrator::runtime::service::Service;
use scip_orchestrator::store::{self, Store};
use scip_orchestrator::testing::{Mosquitto, Proxy, Subscriber};

/// The configuration flags, parsed as `serve` parses them.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    config: Config,
}

/// The admin token every test app accepts (configured hashed, in API_TOKENS).
pub const ADMIN_TOKEN: &str = "scip_test-admin-token-for-the-test-suite";

/// A running API with its broker, store and media root.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// Sends the admin token with every request.
    pub client: reqwest::Client,
    /// Sends no token.
    pub anonymous: reqwest::Client,
    pub service: Service,
    pub broker: Mosquitto,
    /// Between the service and the broker: cut or stall it to play outages.
    pub proxy: Proxy,
    /// MEDIA_STORAGE_PATH, holding `four-teams/`.
    pub media: PathBuf,
    _dir: TempDir,
    _shutdown: oneshot::Sender<()>,
}

/// An app with the default configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// An app with extra configuration flags, such as `--max-retry-attempts 1`.
pub async fn spawn_app_with(flags: &[&str]) -> TestApp {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let media = dir.path().join("media");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/four-teams"),
        &media.join("four-teams"),
    );
    let port = proxy.port.to_string();
    let admin = format!(
        "admin:{}",
        scip_orchestrator::access::tokens::hash(ADMIN_TOKEN)
    );
    let mut args = vec![
        "scip-orchestrator",
        "--api-tokens",
        &admin,
        "--mqtt-broker-host",
        "127.0.0.1",
        "--mqtt-broker-port",
        &port,
        "--media-storage-path",
        media.to_str().expect("utf-8 temp dir"),
    ];
    args.extend_from_slice(flags);
    let config = Flags::try_parse_from(args).expect("valid flags").config;

    let store = Store::connect(&store::default_sqlite_url(&dir.path().join("data")))
        .await
        .expect("SQLite store");
    let client_id = format!(
        "api-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut settings = MqttSettings::new("127.0.0.1", proxy.port, client_id);
    settings.delivery_timeout = config.delivery_policy().timeout;
    let mqtt = Mqtt::connect(settings).await.expect("broker reachable");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the API");
    let address = format!("http://{}", listener.local_addr().unwrap());
    let service = Service::start(store, mqtt, config, address.clone())
        .await
        .expect("service starts");
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = service.clone();
    tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.await;
        };
        http::serve(listener, server, stop)
            .await
            .expect("API serves");
    });
    TestApp {
        address,
        client: authorized(ADMIN_TOKEN),
        anonymous: reqwest::Client::new(),
        service,
        broker,
        proxy,
        media,
        _dir: dir,
        _shutdown: shutdown,
    }
}

/// A status and a JSON body (Null when the body is not JSON).
pub type Reply = (StatusCode, Value);

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> Reply {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        reply(response).await
    }

    /// A POST with a JSON body, or with none.
    pub async fn post(&self, path: &str, body: Option<Value>) -> Reply {
        let mut request = self.client.post(self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        reply(request.send().await.expect("POST")).await
    }

    /// A POST with a body as given.
    pub async fn post_raw(&self, path: &str, content_type: Option<&str>, body: &str) -> Reply {
        let mut request = self.client.post(self.url(path)).body(body.to_owned());
        if let Some(t) = content_type {
            request = request.header("content-type", t);
        }
        reply(request.send().await.expect("POST")).await
    }

    /// GET /metrics as text.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        response.text().await.expect("metrics text")
    }

    /// Creates an exercise from an inline package; panics unless 201.
    pub async fn create(&self, id: &str, speed: f64, package: Value) -> Value {
        let (status, body) = self
            .post(
                "/api/v1/exercises",
                Some(json!({"package": package, "exercise_id": id, "speed": speed})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Gives a command; panics unless 200.
    pub async fn command(&self, id: &str, command: &str) -> Value {
        let (status, body) = self
            .post(&format!("/api/v1/exercises/{id}/{command}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{command}: {body}");
        body
    }

    /// Polls GET `path` until `done` holds for its 200 body; panics after `within`.
    pub async fn wait_for(
        &self,
        path: &str,
        within: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (status, body) = self.get(path).await;
            if status == StatusCode::OK && done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "GET {path} did not get there within {within:?}; last: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the delivery of `inject` to `team` has `status`; returns it.
    pub async fn wait_delivery(&self, id: &str, team: &str, inject: &str, status: &str) -> Value {
        let path = format!("/api/v1/exercises/{id}/deliveries?team={team}");
        let list = self
            .wait_for(&path, Duration::from_secs(15), |list| {
                find(list, team, inject)["status"] == status
            })
            .await;
        find(&list, team, inject).clone()
    }

    /// A subscriber to every feed of exercise `id`, straight on the broker.
    pub async fn feeds(&self, id: &str) -> Subscriber {
        Subscriber::connect(self.broker.port, &format!("/exercise/{id}/team/+/feed")).await
    }
}

/// The record of `inject` for `team` in a delivery list (Null when absent).
pub fn find<'a>(list: &'a Value, team: &str, inject: &str) -> &'a Value {
    list.as_array()
        .expect("a list")
        .iter()
        .find(|d| d["team_id"] == team && d["inject_id"] == inject)
        .unwrap_or(&Value::Null)
}

/// An inline package: `duration` seconds, one timeline per team named
/// `<team>-line`, each inject a news item with a priority to pass through.
pub fn package(duration: u32, teams: &[(&str, &[(&str, u32)])]) -> Value {
    let team_list: Vec<Value> = teams
        .iter()
        .map(|(team, _)| json!({"id": team, "name": format!("Team {team}"), "timeline_id": format!("{team}-line")}))
        .collect();
    let timelines: Vec<Value> = teams
        .iter()
        .map(|(team, injects)| {
            let injects: Vec<Value> = injects
                .iter()
                .map(|(id, time)| {
                    json!({"id": id, "time": time, "type": "news", "priority": "high",
                           "content": {"headline": format!("{id} for {team}")}})
                })
                .collect();
            json!({"id": format!("{team}-line"), "injects": injects})
        })
        .collect();
    json!({
        "name": "API test",
        "duration_minutes": f64::from(duration) / 60.0,
        "teams": team_list,
        "timelines": timelines,
    })
}

/// Asserts an error envelope with `status` and `code`; returns its body.
#[track_caller]
pub fn assert_error(reply: &Reply, status: StatusCode, code: &str) -> Value {
    let (got, body) = reply;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["details"].is_array(), "{body}");
    body["error"].clone()
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let text = response.text().await.expect("response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// A server-sent event stream, read as the browser's EventSource reads it.
pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

/// One server-sent event: its name and its data as JSON.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: String,
    pub data: Value,
}

impl EventStream {
    /// Opens GET `path`; panics unless it answers 200 text/event-stream.
    pub async fn open(app: &TestApp, path: &str) -> Self {
        let response = app
            .client
            .get(app.url(path))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("stream opens");
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Self {
            response,
            buffer: Vec::new(),
        }
    }

    /// A stream already requested (with some other client or token).
    pub fn from_response(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        Self {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next event with data; panics after `within`.
    pub async fn next(&mut self, within: Duration) -> Sse {
        tokio::time::timeout(within, self.read())
            .await
            .unwrap_or_else(|_| panic!("no event within {within:?}"))
    }

    /// Events until one named `event` matches `until` (included); panics
    /// after `within`.
    pub async fn until(
        &mut self,
        within: Duration,
        event: &str,
        mut until: impl FnMut(&Value) -> bool,
    ) -> Vec<Sse> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = tokio::time::timeout(left, self.read())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {event} event as awaited within {within:?}; saw {:?}",
                        seen.iter().map(|e: &Sse| &e.event).collect::<Vec<_>>()
                    )
                });
            let done = e.event == event && until(&e.data);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }

    /// Reads until a keep-alive comment (a `:` line) arrives; panics if
    /// none does within `within`, or the stream ends.
    pub async fn keep_alive(&mut self, within: Duration) {
        tokio::time::timeout(within, async {
            loop {
                let chunk = self
                    .response
                    .chunk()
                    .await
                    .expect("stream readable")
                    .expect("stream still open");
                if chunk
                    .split(|b| *b == b'\n')
                    .any(|line| line.starts_with(b":"))
                {
                    return;
                }
                self.buffer.extend_from_slice(&chunk);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no keep-alive comment within {within:?}"));
    }

    /// Reads until the server ends the stream; panics if it is still open
    /// after `within`.
    pub async fn ends(&mut self, within: Duration) {
        tokio::time::timeout(within, async {
            while let Some(chunk) = self.response.chunk().await.expect("stream readable") {
                self.buffer.extend_from_slice(&chunk);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the stream is still open after {within:?}"));
    }

    async fn read(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("UTF-8 events");
                let mut event = "message".to_owned();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data.is_empty() {
                    // retry: and keep-alive comments carry no data.
                    continue;
                }
                let data = serde_json::from_str(&data.join("\n")).expect("event data is JSON");
                return Sse { event, data };
            }
            let chunk = self
                .response
                .chunk()
                .await
                .expect("stream readable")
                .expect("stream still open");
            self.buffer.extend_from_slice(&chunk);
        }
    }
}

/// A subscriber to `filter` straight on the app's broker.
pub async fn subscribe(app: &TestApp, filter: &str) -> Subscriber {
    Subscriber::connect(app.broker.port, filter).await
}

/// `/api/v1/exercises/{id}/teams/{team}/{what}` with the token of the team's
/// current dashboard link, as the dashboard itself asks.
pub async fn team_path(app: &TestApp, id: &str, team: &str, what: &str) -> String {
    let (_, exercise) = app.get(&format!("/api/v1/exercises/{id}")).await;
    let url = exercise["teams"]
        .as_array()
        .expect("teams")
        .iter()
        .find(|t| t["id"] == team)
        .and_then(|t| t["dashboard_url"].as_str())
        .unwrap_or_else(|| panic!("no team {team} in {exercise}"))
        .to_owned();
    let query = url.split_once('?').map_or("", |(_, q)| q);
    format!("/api/v1/exercises/{id}/teams/{team}/{what}?{query}")
}

/// A client that sends `token` as its bearer token with every request.
pub fn authorized(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a client")
}
