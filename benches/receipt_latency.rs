//! Receipt latency: from an inject's due instant to its team dashboard
//! confirming it was shown, in real headless Chromium pages. The whole
//! `serve` stack (Mosquitto, SQLite, HTTP) runs in this process; one browser
//! per team follows its dashboard; each team gets an inject every second.
//! The receipt time is when the confirmation reached the server, so the
//! figure includes the event stream, rendering, one paint and the receipt's
//! own request.
//!
//! `CARGO_TARGET_DIR=/tmp/bench-target cargo bench --bench receipt_latency`
//! (`BENCH_TEAMS`, default 4; `BENCH_SECONDS`, default 60).

#[allow(dead_code)]
#[path = "../tests/browser/chrome.rs"]
mod chrome;
mod common;
#[allow(dead_code)]
#[path = "../tests/api/support.rs"]
mod support;

use std::time::Duration;

use serde_json::{Value, json};

use common::{Spread, pass};

const TARGET_P99_MS: f64 = 250.0;

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let teams = env("BENCH_TEAMS", 4) as usize;
    let seconds = env("BENCH_SECONDS", 60);
    let team_ids: Vec<String> = (0..teams).map(|n| format!("team-{n}")).collect();
    let injects: Vec<Value> = (1..=seconds)
        .map(|n| {
            json!({"id": format!("i-{n:03}"), "time": n, "type": "news", "priority": "medium",
                   "content": {"outlet": "Kestrel Bay Live", "headline": format!("Update {n}"),
                               "body": "Shipping in and out of Kestrel Bay is halted."}})
        })
        .collect();
    let package = json!({
        "name": "receipt latency",
        "duration": f64::from(seconds + 2) / 60.0,
        "teams": team_ids.iter().map(|t| json!({"id": t, "timeline_id": "line"})).collect::<Vec<_>>(),
        "timelines": [{"id": "line", "injects": injects}],
    });
    let app = support::spawn_app().await;
    let created = app.create("receipts", 1.0, package).await;
    println!(
        "receipt_latency: {teams} teams, one headless Chromium each on its dashboard, \
         an inject per team every second for {seconds} s, speed 1"
    );
    let mut browsers = Vec::new();
    for team in created["teams"].as_array().unwrap() {
        let browser = chrome::Browser::start().await;
        browser.open(team["dashboard_url"].as_str().unwrap()).await;
        browser
            .wait(
                "the stream is live",
                "document.querySelector('#connection').dataset.status === 'live'",
                Duration::from_secs(30),
            )
            .await;
        browsers.push(browser);
    }
    app.command("receipts", "start").await;
    let expected = teams * seconds as usize;
    let list = app
        .wait_for(
            "/api/v1/exercises/receipts/deliveries",
            Duration::from_secs(u64::from(seconds) + 60),
            |list| {
                list.as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| d["received_at"].is_string())
                    .count()
                    == expected
            },
        )
        .await;
    let received: Vec<f64> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["receipt_latency_ms"].as_f64())
        .collect();
    let acked: Vec<f64> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["latency_ms"].as_f64())
        .collect();
    for b in browsers {
        b.quit().await;
    }
    let shown = Spread::of(received);
    let broker = Spread::of(acked);
    println!();
    println!("| path | n | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| due -> broker PUBACK | {} | {:.2} | {:.2} | {:.2} |",
        broker.n, broker.p50, broker.p99, broker.max
    );
    println!(
        "| due -> shown on the dashboard (receipt at the server) | {} | {:.2} | {:.2} | {:.2} |",
        shown.n, shown.p50, shown.p99, shown.max
    );
    println!();
    println!(
        "receipt latency p99 {:.1} ms (target {TARGET_P99_MS} ms): {}",
        shown.p99,
        pass(shown.p99 <= TARGET_P99_MS)
    );
}
