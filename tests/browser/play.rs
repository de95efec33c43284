//! Two-way play in the pages: a team answers a choice on its dashboard and
//! only that team gets the matching branch, on time; the team posts to a
//! public channel; the control room shows the answer and its outcome, and
//! an evaluator scores from it. Both pages pass axe with the forms shown.

use serde_json::{Value, json};

use crate::SECS;
use crate::a11y::Axe;
use crate::chrome::Browser;
use crate::support::*;

fn two_way() -> Value {
    let injects = json!([
        {"id": "q", "time": 1, "type": "email",
         "content": {"from": "Harbour master", "subject": "Evacuate terminal East?", "body": "Your call."},
         "response": {"kind": "choice", "options": ["Evacuate", "Shelter"], "prompt": "Evacuate terminal East?"},
         "expect": {"within": 300, "choice": "Evacuate"}, "objectives": ["comms"]},
        {"id": "branch-evacuate", "time": 0, "type": "news",
         "content": {"outlet": "Courier", "headline": "Terminal evacuated", "body": "Workers left calmly."},
         "when": {"after": "q", "outcome": "choice:Evacuate"}},
        {"id": "branch-shelter", "time": 0, "type": "news",
         "content": {"outlet": "Courier", "headline": "Workers told to stay", "body": "Smoke in the vents."},
         "when": {"after": "q", "outcome": "choice:Shelter"}},
        {"id": "statement", "time": 2, "type": "email",
         "content": {"subject": "Draft a statement", "body": "Three sentences."},
         "response": {"kind": "text", "prompt": "Your statement"}},
    ]);
    json!({
        "name": "Two-way in the browser",
        "duration_minutes": 10,
        "teams": [{"id": "blue", "name": "Port", "timeline_id": "t"}, {"id": "red", "name": "Line", "timeline_id": "t"}],
        "timelines": [{"id": "t", "injects": injects}],
        "channels": [{"id": "chirper", "kind": "social", "name": "Chirper", "visible_to": ["blue", "red"]}],
        "objectives": [{"id": "comms", "title": "Public communication"}],
    })
}

const Q: &str = "article[data-inject-id=\"q\"]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_answers_on_its_dashboard_and_only_it_gets_its_branch_on_time() {
    let axe = Axe::load();
    let app = spawn_app().await;
    let mut feeds = app.feeds("tw").await;
    app.create("tw", 1.0, two_way()).await;
    let (_, info) = app.get("/api/v1/exercises/tw").await;
    let blue_url = info["teams"][0]["dashboard_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let blue = Browser::on_live_dashboard(&blue_url, SECS).await;
    app.command("tw", "start").await;

    // The question comes with its form; nothing of the expected answer shows.
    blue.wait(
        "the question's options",
        &format!("document.querySelectorAll('{Q} .response-box input[type=radio]').length === 2"),
        SECS,
    )
    .await;
    let page = blue.eval("return document.body.innerText").await;
    assert!(!page.as_str().unwrap().contains("branch"), "{page}");
    blue.wait(
        "the statement's text box",
        "document.querySelector('article[data-inject-id=\"statement\"] .response-box textarea')",
        SECS,
    )
    .await;
    if let Some(axe) = &axe {
        axe.check(&blue, "team dashboard with response forms").await;
    }
    blue.type_into("#by-name", "Ana").await;
    blue.click(&format!("{Q} input[value=\"Evacuate\"]")).await;
    blue.click(&format!("{Q} .response-box button[type=submit]"))
        .await;
    blue.wait(
        "the answer is confirmed on the card",
        &format!("(document.querySelector('{Q} .response-status') || {{}}).textContent.includes('Evacuate')"),
        SECS,
    )
    .await;
    // Its branch reaches blue's feed at once (and its dashboard), red's never.
    let branch = feeds
        .collect_until(SECS, |m| m.payload["id"] == "branch-evacuate")
        .await;
    let branch = branch.last().unwrap();
    assert!(
        branch.topic.ends_with("/team/blue/feed"),
        "{}",
        branch.topic
    );
    blue.wait(
        "the branch on blue's dashboard",
        "document.querySelector('article[data-inject-id=\"branch-evacuate\"]')",
        SECS,
    )
    .await;
    let record = app
        .wait_delivery("tw", "blue", "branch-evacuate", "delivered")
        .await;
    assert_eq!(record["late"], false, "on time: {record}");
    let (_, list) = app.get("/api/v1/exercises/tw/deliveries").await;
    assert_eq!(find(&list, "red", "branch-evacuate")["condition"], "held");
    assert_eq!(
        find(&list, "blue", "branch-shelter")["condition"],
        "skipped"
    );
    assert_eq!(find(&list, "blue", "q")["outcome"], "met");

    // A post on the public channel reaches both teams, marked with its author.
    blue.type_into("#compose-text", "Terminal East is being evacuated.")
        .await;
    blue.click("#compose button[type=submit]").await;
    let post = feeds
        .collect_until(SECS, |m| {
            m.topic.ends_with("/team/red/feed") && m.payload["author_team"] == "blue"
        })
        .await;
    assert_eq!(
        post.last().unwrap().payload["content"]["display_name"],
        "Ana (team blue)"
    );
    blue.wait(
        "the post on blue's own feed",
        "document.querySelector('article[data-inject-id*=\"-post-\"]')",
        SECS,
    )
    .await;

    // The control room: the answer and its outcome per team, the timeline,
    // and a score taken from its form.
    let control = Browser::start().await;
    control
        .open(&app.url(&format!("/exercises/tw#token={ADMIN_TOKEN}")))
        .await;
    control
        .wait(
            "blue's outcome on q",
            "(document.querySelector('#play-body tr[data-inject=\"q\"] td[data-team=\"blue\"]') || {}).textContent.includes('met')",
            SECS,
        )
        .await;
    control
        .wait(
            "the answer in the timeline",
            "document.querySelector('#play-timeline').textContent.includes('blue answered q: Evacuate')",
            SECS,
        )
        .await;
    if let Some(axe) = &axe {
        axe.check(&control, "control room with two-way play").await;
    }
    control
        .eval("document.querySelector('#score-target').value = 'objective:comms'; return true")
        .await;
    control.type_into("#score-value", "75").await;
    control.type_into("#score-note", "Fast and clear").await;
    control.click("#score-form button[type=submit]").await;
    control
        .wait(
            "the score is taken",
            "document.querySelector('#score-result').textContent.startsWith('Scored blue 75')",
            SECS,
        )
        .await;
    let (_, report) = app.get("/api/v1/exercises/tw/report").await;
    let card = &report["play"]["scorecard"][0];
    assert_eq!(card["team_id"], "blue");
    assert_eq!(card["scores"][0]["score"], 75.0);
    // Nothing of red's branches went out meanwhile.
    let red: Vec<String> = feeds
        .drain()
        .iter()
        .filter(|m| m.topic.ends_with("/team/red/feed"))
        .filter_map(|m| m.payload["id"].as_str().map(str::to_owned))
        .collect();
    assert!(!red.iter().any(|id| id.starts_with("branch")), "{red:?}");
    assert!(
        blue.console().await.is_empty(),
        "{:?}",
        blue.console().await
    );
    blue.assert_no_policy_violations("team dashboard").await;
    control.quit().await;
    blue.quit().await;
}
