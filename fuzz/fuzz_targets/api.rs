//! The HTTP API in-process: the real router (`http::router`) over a real
//! `Service` (an in-memory SQLite store, the embedded MQTT broker on free
//! loopback ports), one request per input, through `tower::ServiceExt::oneshot`
//! as axum serves it.
//!
//! Set `SCIP_FUZZ_VERBOSE=1` to see each request and its answer on stderr.
//!
//! Input: byte 0 picks the endpoint; byte 1 the exercise (bits 0-1), the
//! Content-Type (bits 2-4), whether the path's ids come from the input (0x20:
//! the body's first line gives `{id}/{team}/{inject}`, percent-encoded as
//! needed) and which credentials go along (0x40: no API token, 0x80: no team
//! link token); the rest is the body (a query string for GET endpoints).
//!
//! Requests carry an admin API token (`API_TOKENS`) and, to a team's
//! receipts, the token of that team's dashboard link, so they reach the
//! handlers; builds without API tokens ignore both.
//!
//! Found: a panic anywhere in the process (libFuzzer's hook aborts before
//! `CatchPanicLayer` can turn a handler's panic into a 500), a 500 answer, an
//! error answer that is not the `{"error": {"code", ...}}` envelope, or no
//! answer within 4 s.
//!
//! Two exercises exist at all times: `fuzz` (the four-team sample) and
//! `fuzz-turns` (turn-based), made again when an input deletes one. Inputs
//! change them (start, seek, reset, ...), so one input's outcome can depend
//! on those before it. Exercises the inputs
//! create pile up; past 32 the service is shut down and a fresh one started.

#![no_main]

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use clap::Parser;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use scip_orchestrator::broker::{BrokerSettings, EmbeddedBroker};
use scip_orchestrator::config::Config;
use scip_orchestrator::domain::Speed;
use scip_orchestrator::http;
use scip_orchestrator::mqtt::{Mqtt, MqttSettings};
use scip_orchestrator::runtime::service::{CreateExercise, ScenarioSource, Service};
use scip_orchestrator::store::Store;
use scip_orchestrator_fuzz::scratch_dir;

/// The endpoints, `{id}`, `{team}` and `{inject}` filled in per input.
const ROUTES: &[(Method, &str)] = &[
    (Method::POST, "/api/v1/exercises"),
    (Method::POST, "/api/v1/exercises/{id}/start"),
    (Method::POST, "/api/v1/exercises/{id}/pause"),
    (Method::POST, "/api/v1/exercises/{id}/resume"),
    (Method::POST, "/api/v1/exercises/{id}/stop"),
    (Method::POST, "/api/v1/exercises/{id}/reset"),
    (Method::POST, "/api/v1/exercises/{id}/next_turn"),
    (Method::POST, "/api/v1/exercises/{id}/injects"),
    (
        Method::POST,
        "/api/v1/exercises/{id}/teams/{team}/injects/{inject}/reschedule",
    ),
    (Method::POST, "/api/v1/exercises/{id}/seek"),
    (Method::POST, "/api/v1/exercises/{id}/teams/{team}/receipts"),
    (
        Method::POST,
        "/api/v1/exercises/{id}/teams/{team}/injects/{inject}/retry",
    ),
    (
        Method::POST,
        "/api/v1/exercises/{id}/teams/{team}/injects/{inject}/cancel",
    ),
    (Method::POST, "/api/v1/exercises/{id}/deliveries/retry"),
    (Method::GET, "/api/v1/exercises/{id}/deliveries"),
    (Method::GET, "/api/v1/exercises/{id}/failures"),
    (Method::GET, "/api/v1/exercises/{id}/report"),
    (Method::GET, "/api/v1/exercises/{id}/report.csv"),
    (Method::GET, "/api/v1/exercises/{id}/report.html"),
    (Method::GET, "/api/v1/exercises/{id}/report/control-log.csv"),
    (Method::GET, "/api/v1/exercises/{id}/control-log"),
    (Method::GET, "/api/v1/exercises/{id}"),
    (Method::GET, "/api/v1/exercises"),
    (Method::GET, "/api/v1/scenarios"),
    (Method::GET, "/api/v1/packages/{id}/archive"),
    (Method::DELETE, "/api/v1/exercises/{id}"),
    (Method::POST, "/api/v1/tokens"),
];

/// `(exercise, team, inject)` the path names unless the input gives them.
const TARGETS: &[(&str, &str, &str)] = &[
    ("fuzz", "blue", "blue-003"),
    ("fuzz-turns", "blue", "t2-a"),
    ("fuzz", "red", "red-002"),
    ("missing", "blue", "blue-001"),
];

const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"),
    Some("application/json"),
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    None,
    Some("text/plain"),
    Some("application/merge-patch+json"),
    Some("APPLICATION/JSON"),
];

/// Exercises beyond the two fixed ones before the service is renewed.
const MAX_EXERCISES: usize = 32;

/// The admin token of every request; `API_TOKENS` holds its SHA-256.
const API_TOKEN: &str = "scip_fuzz-api-admin-token";
const API_TOKEN_SHA256: &str = "d8428c8ddc30de2468b2a9ed4d8da0005515809f049077d601a33534dd0f56de";

fuzz_target!(init: { app(); }, |data: &[u8]| run(data));

/// One request, and what its answer must be.
fn run(data: &[u8]) {
    let app = app();
    let mut hosted = app.hosted.lock().unwrap_or_else(|e| e.into_inner());
    let request = request(data, &hosted.links);
    let described = describe(&request);
    let router = hosted.router.clone();
    app.runtime.block_on(async {
        let response = tokio::time::timeout(Duration::from_secs(4), router.oneshot(request))
            .await
            .unwrap_or_else(|_| panic!("no answer within 4 s to {described}"))
            .expect("the router is infallible");
        let status = response.status();
        let is_json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let body = tokio::time::timeout(
            Duration::from_secs(4),
            axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024),
        )
        .await
        .unwrap_or_else(|_| panic!("the body of the answer to {described} did not end within 4 s"))
        .unwrap_or_else(|e| panic!("the body of the answer to {described} failed: {e}"));
        let text = String::from_utf8_lossy(&body);
        if app.verbose {
            let end = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
            eprintln!("{described} -> {status} {}", &text[..end]);
        }
        assert!(
            !status.is_server_error(),
            "{status} for {described}: {text}"
        );
        if status.is_client_error() {
            let envelope: Option<Value> = serde_json::from_slice(&body).ok();
            let code = envelope
                .as_ref()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
            assert!(
                is_json && code.is_some(),
                "{status} for {described} is not the error envelope: {text}"
            );
        }
    });
    if hosted.service.list().len() > MAX_EXERCISES + 2 {
        app.runtime.block_on(hosted.service.shutdown());
        *hosted = app.runtime.block_on(host(&app.config, app.broker_port));
    } else {
        let Hosted { service, links, .. } = &mut *hosted;
        app.runtime.block_on(ensure_fixed(service, links));
    }
}

/// The request an input stands for; `links` are the dashboard link tokens of
/// the fixed exercises' teams.
fn request(data: &[u8], links: &[(String, String, String)]) -> Request<Body> {
    let route = data.first().copied().unwrap_or(0);
    let flags = data.get(1).copied().unwrap_or(0);
    let mut body = data.get(2..).unwrap_or_default();
    let (method, template) = &ROUTES[usize::from(route) % ROUTES.len()];
    let (id, team, inject) = TARGETS[usize::from(flags & 0x03) % TARGETS.len()];
    let mut segments = [id.to_owned(), team.to_owned(), inject.to_owned()];
    if flags & 0x20 != 0 {
        let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
        for (slot, given) in segments.iter_mut().zip(body[..end].split(|&b| b == b'/')) {
            *slot = encode(given, b"-_.~");
        }
        body = body.get(end + 1..).unwrap_or_default();
    }
    let mut uri = template
        .replace("{id}", &segments[0])
        .replace("{team}", &segments[1])
        .replace("{inject}", &segments[2]);
    let mut builder = Request::builder().method(method.clone());
    if flags & 0x40 == 0 {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {API_TOKEN}"));
    }
    if template.ends_with("/receipts") && flags & 0x80 == 0 {
        let link = links
            .iter()
            .find(|(exercise, team, _)| *exercise == segments[0] && *team == segments[1]);
        if let Some((_, _, token)) = link {
            uri.push_str("?token=");
            uri.push_str(token);
        }
    }
    let body = if *method == Method::GET {
        if !body.is_empty() {
            uri.push('?');
            uri.push_str(&encode(body, b"-_.~&=+,;:@!$'()*/?"));
        }
        Body::empty()
    } else {
        let kind = CONTENT_TYPES[usize::from(flags >> 2 & 0x07)];
        if let Some(kind) = kind {
            builder = builder.header(header::CONTENT_TYPE, kind);
        }
        Body::from(body.to_vec())
    };
    builder.uri(uri).body(body).expect("a valid request")
}

/// `bytes` with everything but ASCII alphanumerics and `keep` percent-encoded.
fn encode(bytes: &[u8], keep: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn describe(request: &Request<Body>) -> String {
    let kind = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map_or("no Content-Type".to_owned(), |v| format!("{v:?}"));
    format!("{} {} ({kind})", request.method(), request.uri())
}

/// The process-wide set-up, made by the first input.
struct App {
    runtime: tokio::runtime::Runtime,
    /// `SCIP_FUZZ_VERBOSE` is set: every request and answer on stderr.
    verbose: bool,
    config: Config,
    broker_port: u16,
    hosted: Mutex<Hosted>,
}

/// One service generation and its router.
struct Hosted {
    service: Service,
    router: Router,
    /// `(exercise, team, token of its dashboard link)`, where links carry one.
    links: Vec<(String, String, String)>,
}

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    config: Config,
}

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        // Before any thread exists. The API's rate limit on control commands
        // (where this build has one) would answer most command inputs 429.
        // The API tokens (where this build has them) let the admin token in.
        // SAFETY: no other thread reads the environment yet.
        unsafe {
            std::env::set_var("MAX_COMMANDS_PER_MINUTE", "1000000");
            std::env::set_var("API_TOKENS", format!("admin:{API_TOKEN_SHA256}"));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let media = scratch_dir("scip-fuzz-api-").join("media");
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/four-teams");
        copy_dir(&sample, &media.join("four-teams"));
        let bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = free_port();
        let ws_port = loop {
            let other = free_port();
            if other != port {
                break other;
            }
        };
        runtime
            .block_on(EmbeddedBroker::start(BrokerSettings {
                bind,
                port,
                ws_port,
            }))
            .expect("the embedded broker starts");
        let port_flag = port.to_string();
        let config = Flags::try_parse_from([
            "scip-orchestrator",
            "--mqtt-broker-host",
            "127.0.0.1",
            "--mqtt-broker-port",
            &port_flag,
            "--media-storage-path",
            media.to_str().expect("a UTF-8 temp dir"),
        ])
        .expect("valid flags")
        .config;
        let hosted = runtime.block_on(host(&config, port));
        App {
            runtime,
            verbose: std::env::var_os("SCIP_FUZZ_VERBOSE").is_some(),
            config,
            broker_port: port,
            hosted: Mutex::new(hosted),
        }
    })
}

/// A fresh service on an in-memory store with the two fixed exercises.
async fn host(config: &Config, broker_port: u16) -> Hosted {
    static GENERATION: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let store = Store::connect("sqlite::memory:")
        .await
        .expect("an in-memory store");
    let client_id = format!("fuzz-api-{}-{generation}", std::process::id());
    let mqtt = Mqtt::connect(MqttSettings::new("127.0.0.1", broker_port, client_id))
        .await
        .expect("the embedded broker answers");
    let service = Service::start(store, mqtt, config.clone(), "http://127.0.0.1:8080".into())
        .await
        .expect("the service starts");
    let mut links = Vec::new();
    ensure_fixed(&service, &mut links).await;
    let router = http::router(service.clone());
    Hosted {
        service,
        router,
        links,
    }
}

/// Creates `fuzz` and `fuzz-turns` where missing, noting their teams' link
/// tokens.
async fn ensure_fixed(service: &Service, links: &mut Vec<(String, String, String)>) {
    let fixed = [
        ("fuzz", ScenarioSource::Folder("four-teams".into())),
        ("fuzz-turns", ScenarioSource::Inline(turn_package())),
    ];
    for (id, source) in fixed {
        if service.get(id).is_ok() {
            continue;
        }
        let info = service
            .create(CreateExercise {
                source,
                exercise_id: Some(id.into()),
                speed: Some(Speed::ONE),
            })
            .await
            .unwrap_or_else(|e| panic!("exercise {id} cannot be created: {e}"));
        links.retain(|(exercise, _, _)| exercise != id);
        for team in info.teams {
            let token = team
                .dashboard_url
                .split_once("token=")
                .map(|(_, rest)| rest.split(['&', '#']).next().unwrap_or(rest).to_owned());
            if let Some(token) = token {
                links.push((id.to_owned(), team.id, token));
            }
        }
    }
}

/// The turn-based exercise of `tests/api/turns.rs`.
fn turn_package() -> Value {
    let inject = |id: &str, turn: u32, time: u32| json!({"id": id, "turn": turn, "time": time, "type": "news", "content": {"headline": id}});
    json!({
        "name": "Turns",
        "turn_based": true,
        "total_turns": 2,
        "duration_minutes": 0.1,
        "teams": [{"id": "blue", "timeline_id": "t"}],
        "timelines": [{"id": "t", "injects": [
            inject("t1-a", 1, 0), inject("t1-b", 1, 2), inject("t2-a", 2, 0), inject("t2-b", 2, 1),
        ]}],
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a folder");
    for entry in std::fs::read_dir(from).expect("read the sample") {
        let entry = entry.expect("a folder entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}
