//! The team dashboard on a phone: a compact header, the feed's channel tabs
//! with their unread counts, and the in-world clock of a scenario's
//! `start_time`.

use serde_json::{Value, json};

use crate::chrome::Browser;
use crate::support::*;
use crate::{FEED_IDS, SECS, every_kind};

/// Per tab, in order: [channel, selected, unread count shown].
const TABS: &str = "[...document.querySelectorAll('#channel-tabs [role=tab]')].map(t => \
     [t.dataset.channel, t.getAttribute('aria-selected') === 'true', \
      t.querySelector('.n').hidden ? 0 : Number(t.querySelector('.count').textContent)])";
/// The ids of the injects the feed shows (not hidden), top to bottom.
const VISIBLE_IDS: &str = "[...document.querySelectorAll('#feed article.inject')].filter(a => !a.hidden).map(a => a.dataset.injectId)";

fn tabs(counts: [u64; 6], selected: &str) -> Value {
    let channels = ["all", "social", "mail", "sms", "news", "briefings"];
    Value::Array(
        channels
            .iter()
            .zip(counts)
            .map(|(c, n)| json!([c, *c == selected, n]))
            .collect(),
    )
}

/// The injects whose receipts the server holds, once `must` are all among
/// them (receipts go in batches: what was sent with them is there too).
async fn received(app: &TestApp, must: &[&str]) -> Vec<String> {
    let list = app
        .wait_for("/api/v1/exercises/phone/deliveries", SECS, |list| {
            must.iter().all(|id| {
                list.as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["inject_id"] == *id && d["received_at"].is_string())
            })
        })
        .await;
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["received_at"].is_string())
        .map(|d| d["inject_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_the_header_is_compact_and_the_feed_has_channel_tabs() {
    let app = spawn_app().await;
    // Five seconds before midnight: the in-world clock wraps past it.
    let mut scenario = every_kind(8, &[("blue", "Port Authority")]);
    scenario["start_time"] = json!("23:59:55");
    let created = app.create("phone", 4.0, scenario).await;
    let team = Browser::start().await;
    team.client
        .set_window_size(390, 844)
        .await
        .expect("a phone-sized window");
    team.open(created["teams"][0]["dashboard_url"].as_str().unwrap())
        .await;
    team.wait(
        "the stream is live and the waiting banner shown",
        "document.querySelector('#connection').dataset.status === 'live' && !document.querySelector('#banner').hidden",
        SECS,
    )
    .await;

    // The sticky header and the banner leave the feed most of the screen.
    let share = team
        .eval("return document.querySelector('.team-sticky').getBoundingClientRect().height / window.innerHeight")
        .await
        .as_f64()
        .unwrap();
    let width = team.eval("return window.innerWidth").await;
    assert!(width.as_u64().unwrap() <= 400, "a phone's width: {width}");
    assert!(
        share <= 0.15,
        "the header and banner take {:.0}% of the screen",
        share * 100.0
    );
    // The in-world time beside the exercise clock, from the scenario's start_time.
    let world = team
        .wait(
            "the in-world time",
            "!document.querySelector('#world-clock').hidden && document.querySelector('#world-time').textContent",
            SECS,
        )
        .await;
    assert_eq!(world, "23:59");
    let beside = team
        .eval("const [a, b] = ['#clock', '#world-clock'].map(s => document.querySelector(s).getBoundingClientRect()); return Math.abs(a.bottom - b.bottom) < 12 && b.left >= a.right")
        .await;
    assert_eq!(beside, true, "the in-world time is beside the clock");

    // Tabs in a tablist; "All" selected, nothing unread.
    assert_eq!(
        team.eval(&format!("return {TABS}")).await,
        tabs([0; 6], "all")
    );
    // A team member looks at the text messages; the exercise runs.
    team.click("#tab-sms").await;
    app.command("phone", "start").await;
    team.wait(
        "every inject arrived",
        &format!("{FEED_IDS}.length === 6"),
        SECS,
    )
    .await;
    // Unread per channel; the text message was shown, so it is read.
    assert_eq!(
        team.eval(&format!("return {TABS}")).await,
        tabs([5, 1, 1, 0, 2, 1], "sms")
    );
    assert_eq!(
        team.eval(&format!("return {VISIBLE_IDS}")).await,
        json!(["text"])
    );
    // A receipt says an inject was on screen: only the text message's went.
    assert_eq!(received(&app, &["text"]).await, ["text"]);
    // The right arrow key moves to the news: shown, they are read.
    team.client
        .find(fantoccini::Locator::Css("#tab-sms"))
        .await
        .unwrap()
        .send_keys("\u{E014}")
        .await
        .unwrap();
    let focused = team
        .wait(
            "the news tab focused",
            "document.activeElement.id === 'tab-news' && document.activeElement.id",
            SECS,
        )
        .await;
    assert_eq!(focused, "tab-news");
    assert_eq!(
        team.eval(&format!("return {TABS}")).await,
        tabs([3, 1, 1, 0, 0, 1], "news")
    );
    assert_eq!(
        team.eval(&format!("return {VISIBLE_IDS}")).await,
        json!(["article", "clip"]),
        "the news and the video"
    );
    assert_eq!(
        received(&app, &["article", "clip"]).await,
        ["article", "clip", "text"]
    );
    assert_eq!(
        team.eval("return document.querySelector('#feed').getAttribute('aria-labelledby')")
            .await,
        "tab-news"
    );
    // "All" shows everything: nothing left unread.
    team.click("#tab-all").await;
    assert_eq!(
        team.eval(&format!("return {TABS}")).await,
        tabs([0; 6], "all")
    );
    assert_eq!(
        team.eval(&format!("return {VISIBLE_IDS}")).await,
        json!(["tweet", "mail", "text", "article", "report", "clip"])
    );
    assert_eq!(
        received(&app, &["tweet", "mail", "report"]).await,
        ["article", "clip", "mail", "report", "text", "tweet"]
    );
    team.screenshot("team-dashboard-phone").await;

    // At the end (T+00:08), the in-world clock is past midnight.
    team.wait(
        "completed",
        "document.querySelector('#state').textContent === 'completed'",
        SECS,
    )
    .await;
    let world = team
        .eval("return document.querySelector('#world-time').textContent")
        .await;
    assert_eq!(world, "00:00");
    team.assert_no_policy_violations("the team dashboard on a phone")
        .await;
    team.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_start_time_no_in_world_clock_is_shown() {
    let app = spawn_app().await;
    let created = app
        .create("plain", 1.0, every_kind(60, &[("blue", "Port Authority")]))
        .await;
    let team =
        Browser::on_live_dashboard(created["teams"][0]["dashboard_url"].as_str().unwrap(), SECS)
            .await;
    team.wait(
        "the team's name",
        "document.querySelector('#team-name').textContent === 'Port Authority'",
        SECS,
    )
    .await;
    let hidden = team
        .eval("return document.querySelector('#world-clock').hidden")
        .await;
    assert_eq!(hidden, true);
    team.quit().await;
}
