//! `demo --wait-for-start`: the exercise waits at T+0 for a controller, and
//! its feed messages carry what the earlier platform's dashboards read.

use std::path::Path;
use std::time::Duration;

use rumqttc::QoS;

use scip_orchestrator::testing::{Subscriber, on_free_ports};

use crate::support::{DemoPorts, Proc, get_json};

const EXERCISE: &str = "four-teams-demo";

fn spawn_waiting_demo(ports: &DemoPorts, data_dir: &Path) -> Option<Proc> {
    let http = format!("127.0.0.1:{}", ports.http);
    let (mqtt, ws) = (ports.mqtt.to_string(), ports.ws.to_string());
    let mut demo = Proc::spawn(&[
        "demo",
        "--wait-for-start",
        "--http-bind",
        &http,
        "--broker-port",
        &mqtt,
        "--broker-ws-port",
        &ws,
        "--speed",
        "60",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    if demo.started("runs, once started, at speed 60") {
        return Some(demo);
    }
    let (status, stderr) = demo.finish();
    assert!(
        stderr.contains(" is taken: "),
        "demo ended at start ({status:?}):\n{stderr}"
    );
    None
}

async fn state(api: &str, token: &str) -> String {
    let body = get_json(&format!("{api}/api/v1/exercises/{EXERCISE}"), token).await;
    body["state"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_waits_for_a_start_on_the_control_topic_then_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, ports) = on_free_ports(|ports| {
        let ports = DemoPorts::from(ports);
        spawn_waiting_demo(&ports, dir.path()).map(|demo| (demo, ports))
    });
    let hint = demo.stdout().join("\n");
    assert!(hint.contains("waits for a start"), "{hint}");
    assert!(
        hint.contains(&format!("/api/v1/exercises/{EXERCISE}/start")),
        "{hint}"
    );
    assert!(
        hint.contains(&format!("/exercise/{EXERCISE}/control")),
        "{hint}"
    );
    let token = demo
        .url("API token:")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let api = format!("http://127.0.0.1:{}", ports.http);

    let mut sub = Subscriber::connect(ports.mqtt, &format!("/exercise/{EXERCISE}/#")).await;
    // The retained timer says where it is: initialized, at T+0.
    let timer = sub
        .collect_until(Duration::from_secs(10), |m| m.topic.ends_with("/timer"))
        .await;
    let timer = &timer.last().unwrap().payload;
    assert_eq!(
        (timer["status"].as_str(), timer["current"].as_u64()),
        (Some("initialized"), Some(0)),
        "{timer}"
    );
    assert_eq!(state(&api, &token).await, "initialized");
    // Nothing goes out while it waits: the T+0 briefings are not sent.
    assert!(
        sub.next(Duration::from_secs(1))
            .await
            .is_none_or(|m| !m.topic.ends_with("/feed")),
        "a feed message before the start"
    );
    assert_eq!(state(&api, &token).await, "initialized");

    sub.client
        .publish(
            format!("/exercise/{EXERCISE}/control"),
            QoS::AtLeastOnce,
            false,
            r#"{"command":"start","reason":"dashboards are ready"}"#,
        )
        .await
        .unwrap();
    // The T+1:00 social post, in both vocabularies, with its due second and
    // the second it went out.
    let seen = sub
        .collect_until(Duration::from_secs(20), |m| {
            m.topic.ends_with("/team/blue/feed") && m.payload["type"] == "social"
        })
        .await;
    let post = &seen.last().unwrap().payload;
    assert_eq!(post["time"], 60, "{post}");
    assert!(
        post["delivered_at"].as_u64().is_some_and(|d| d >= 60),
        "{post}"
    );
    let content = &post["content"];
    assert!(content["text"].is_string(), "{post}");
    assert_eq!(content["body"], content["text"], "{post}");
    assert_eq!(content["message"], content["text"], "{post}");
    assert_ne!(state(&api, &token).await, "initialized");

    let (status, stderr) = demo.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
}
