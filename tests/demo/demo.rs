//! `demo` as a user runs it: the sample running on the embedded broker,
//! reached over TCP, WebSocket and HTTP, stopped by SIGTERM and started
//! afresh; taken default ports left for free ones, and a taken port given
//! by flag or variable named with the flag that changes it.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, Transport};
use serde_json::Value;
use tokio::sync::mpsc as tokio_mpsc;

use scip_orchestrator::testing::{Seen, Subscriber, on_free_ports};

use crate::support::{DemoPorts, Proc, get_json};

pub(crate) const EXERCISE: &str = "four-teams-demo";
/// The goal for `demo`, from process start to "exercise running".
const RUNNING_WITHIN: Duration = Duration::from_secs(5);

/// `demo` on `ports`, once it runs its exercise; None when it ended
/// because one of them was taken.
pub(crate) fn start_demo(ports: &DemoPorts, data_dir: &Path, speed: &str) -> Option<Proc> {
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
    let body = get_json(&format!("{api}/api/v1/exercises"), token).await;
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

/// Three loopback ports held by the test, as a web server on 8080 and a
/// Mosquitto on 1883 and 8083 would hold `demo`'s defaults, and their
/// `DEMO_DEFAULT_PORTS`.
fn taken_defaults() -> ([TcpListener; 3], String) {
    let held = [(); 3].map(|()| TcpListener::bind("127.0.0.1:0").unwrap());
    let ports = held.each_ref().map(|l| l.local_addr().unwrap().port());
    (held, format!("{},{},{}", ports[0], ports[1], ports[2]))
}

/// The port at the end of `url` (`scheme://host:port[/path]`).
fn port_of(url: &str) -> u16 {
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    authority.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_moves_from_taken_default_ports_and_prints_where_it_went() {
    let (held, defaults) = taken_defaults();
    let [http, mqtt, ws] = held.each_ref().map(|l| l.local_addr().unwrap().port());
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Proc::spawn_with(
        &[
            "demo",
            "--speed",
            "30",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[("DEMO_DEFAULT_PORTS", &defaults)],
    );
    if !demo.started(" running at speed 30") {
        let (status, stderr) = demo.finish();
        panic!("demo ended at start ({status:?}):\n{stderr}");
    }
    let mqtt_url = demo.url("MQTT broker:");
    let ws_url = demo.url("MQTT WebSocket:");
    let control_room = demo.url("control room:");
    let (new_http, new_mqtt, new_ws) =
        (port_of(&control_room), port_of(&mqtt_url), port_of(&ws_url));
    for (taken, now) in [(http, new_http), (mqtt, new_mqtt), (ws, new_ws)] {
        assert_ne!(taken, now, "{:?}", demo.stdout());
    }
    // Each move is said before the banner, with the address it went to.
    let said = demo.stdout().join("\n");
    for line in [
        format!(
            "port {http} is taken: the pages and the API are on http://127.0.0.1:{new_http} instead"
        ),
        format!(
            "port {mqtt} is taken (another MQTT broker?): the embedded broker listens on 127.0.0.1:{new_mqtt} instead"
        ),
        format!(
            "port {ws} is taken: the embedded broker's WebSocket listener is on 127.0.0.1:{new_ws} instead"
        ),
    ] {
        assert!(said.contains(&line), "no {line:?} in:\n{said}");
    }
    assert_eq!(mqtt_url, format!("mqtt://127.0.0.1:{new_mqtt}"));
    assert_eq!(ws_url, format!("ws://127.0.0.1:{new_ws}/mqtt"));
    assert!(
        demo.url("team blue:").starts_with(&format!(
            "http://127.0.0.1:{new_http}/exercises/{EXERCISE}/teams/blue?token="
        )),
        "{said}"
    );

    // An outside client on the printed port gets the feeds.
    let mut tcp = Subscriber::connect(new_mqtt, &format!("/exercise/{EXERCISE}/#")).await;
    let feed = tcp
        .collect_until(Duration::from_secs(20), is_feed_message)
        .await;
    assert!(!feed.last().unwrap().retain);
    let page = reqwest::get(control_room.split('#').next().unwrap())
        .await
        .unwrap();
    assert_eq!(page.status(), 200);

    let (status, stderr) = demo.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    drop(held);
}

#[test]
fn demo_keeps_a_taken_port_given_by_variable_an_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // The defaults are taken too: they move, the given port does not.
    let (_held, defaults) = taken_defaults();
    let dir = tempfile::tempdir().unwrap();
    for (flag, env, value) in [
        ("--http-bind", "HTTP_BIND", format!("127.0.0.1:{port}")),
        ("--broker-port", "BROKER_PORT", port.to_string()),
        ("--broker-ws-port", "BROKER_WS_PORT", port.to_string()),
    ] {
        let demo = Proc::spawn_with(
            &["demo", "--data-dir", dir.path().to_str().unwrap()],
            &[(env, &value), ("DEMO_DEFAULT_PORTS", &defaults)],
        );
        let (status, stderr) = demo.finish();
        assert!(!status.success(), "{env}: exit {status:?}");
        assert!(
            stderr.contains(&format!(
                "port {port} is taken: choose another with {flag} / {env}"
            )),
            "{env}: {stderr}"
        );
    }
    assert!(!dir.path().join("demo.db").exists());
}
