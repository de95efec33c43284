//! The team dashboard and the control room in a real headless Chromium,
//! against the whole `serve` stack (Mosquitto, SQLite, the HTTP server).

mod a11y;
mod chrome;
mod media;
mod msel;
mod noise;
mod phone;
mod play;
mod reports;
#[allow(dead_code)]
#[path = "../api/support.rs"]
mod support;
mod teams;
mod vocabularies;

use std::time::Duration;

use serde_json::{Value, json};

use chrome::Browser;
use support::*;

const SECS: Duration = Duration::from_secs(20);

/// `teams` sharing one timeline: one inject of every kind a dashboard
/// renders, a second apart.
fn every_kind(duration: u32, teams: &[(&str, &str)]) -> Value {
    let injects = json!([
        {"id": "tweet", "time": 5, "type": "social", "priority": "high",
         "content": {"platform": "twitter", "username": "@kestrel_news", "display_name": "Kestrel Bay News",
                     "verified": true, "text": "Tug and barge collide at the harbour mouth", "likes": 1523, "retweets": 342},
         "media": ["/media/drill-kit/harbour.svg"]},
        {"id": "mail", "time": 4, "type": "email", "priority": "medium",
         "content": {"from": "harbourmaster@kestrel.example", "to": ["duty@port.example"], "cc": ["press@port.example"],
                     "subject": "Outer harbour closed", "body": "No movements until further notice.",
                     "attachments": ["closure-notice.pdf"]}},
        {"id": "text", "time": 3, "type": "sms", "priority": "critical",
         "content": {"from": "+44 7700 900412", "sender_name": "Halcyon skipper", "text": "Barge listing 5 deg to port"}},
        {"id": "article", "time": 2, "type": "news", "priority": "low",
         "content": {"outlet": "Kestrel Bay Live", "headline": "Collision closes harbour", "body": "Shipping was halted early this morning."}},
        {"id": "report", "time": 1, "type": "intel", "priority": "high",
         "content": {"title": "Cargo manifest", "body": "600 t of ammonium nitrate fertiliser.", "classification": "SECRET - EXERCISE"}},
        {"id": "clip", "time": 0, "type": "video", "priority": "high",
         "content": {"title": "Bodycam, bay 34", "url": "/media/drill-kit/bodycam.mp4", "caption": "Crew request a decision"},
         "action": "Decide whether to flood the hold"},
    ]);
    json!({
        "name": "Browser test",
        "duration": f64::from(duration) / 60.0,
        "teams": teams
            .iter()
            .map(|(id, name)| json!({"id": id, "name": name, "timeline_id": "shared"}))
            .collect::<Vec<_>>(),
        "timelines": [{"id": "shared", "injects": injects}],
    })
}

/// The inject ids on the page, top to bottom.
const FEED_IDS: &str =
    "[...document.querySelectorAll('#feed article.inject')].map(a => a.dataset.injectId)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_page_shows_each_inject_in_order_as_what_it_simulates() {
    let app = spawn_app().await;
    // A package folder, so the exercise has media of its own.
    let kit = app.media.join("drill-kit");
    std::fs::create_dir_all(kit.join("timelines")).unwrap();
    let mut scenario = every_kind(8, &[("blue", "Port Authority")]);
    let timeline = scenario["timelines"][0].take();
    scenario.as_object_mut().unwrap().remove("timelines");
    std::fs::write(kit.join("scenario.json"), scenario.to_string()).unwrap();
    std::fs::write(kit.join("timelines/shared.json"), timeline.to_string()).unwrap();
    std::fs::write(kit.join("harbour.svg"), SVG).unwrap();
    let (status, created) = app
        .post(
            "/api/v1/exercises",
            Some(json!({"scenario": "drill-kit", "exercise_id": "drill", "speed": 2.0})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{created}");
    let url = created["teams"][0]["dashboard_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let browser = Browser::start().await;
    browser.open(&url).await;
    // Before the start: the clock at zero and a banner saying so.
    browser
        .wait(
            "clock at zero",
            "document.querySelector('#clock').textContent.includes('T+00:00')",
            SECS,
        )
        .await;
    browser
        .wait(
            "a waiting banner",
            "!document.querySelector('#banner').hidden",
            SECS,
        )
        .await;
    browser
        .wait(
            "the stream is live",
            "document.querySelector('#connection').dataset.status === 'live'",
            SECS,
        )
        .await;
    // The header names the team, from the stream (the page holds no API token).
    browser
        .wait(
            "the team's name",
            "document.querySelector('#team-name').textContent === 'Port Authority'",
            SECS,
        )
        .await;
    app.wait_for("/api/v1/exercises/drill", SECS, |e| {
        e["teams_connected"] == 1
    })
    .await;

    app.command("drill", "start").await;
    browser
        .wait(
            "no banner while running",
            "document.querySelector('#banner').hidden",
            SECS,
        )
        .await;
    let ids = browser
        .wait(
            "every inject shown",
            &format!("{FEED_IDS}.length === 6 && {FEED_IDS}"),
            SECS,
        )
        .await;
    assert_eq!(
        ids,
        json!(["tweet", "mail", "text", "article", "report", "clip"]),
        "newest first"
    );

    // Each rendered as what it simulates.
    let rendered = browser
        .eval(
            r#"
            const q = (id, css) => document.querySelector(`article.inject[data-inject-id="${id}"] ${css}`);
            const t = (id, css) => q(id, css) ? q(id, css).textContent.trim() : null;
            return {
              name: t('tweet', '.social-card .display-name'), handle: t('tweet', '.handle'),
              verified: !!q('tweet', '.verified'), tweet: t('tweet', '.text'),
              likes: t('tweet', '.likes'), reposts: t('tweet', '.reposts'),
              image: q('tweet', 'img') && q('tweet', 'img').getAttribute('src'),
              from: t('mail', '.email .from'), to: t('mail', '.to'), cc: t('mail', '.cc'),
              subject: t('mail', '.subject'), attachments: t('mail', '.attachments'),
              bubble: t('text', '.sms .bubble'), sender: t('text', '.sender'),
              outlet: t('article', '.news .outlet'), headline: t('article', '.headline'),
              classification: t('report', '.report .classification'), title: t('report', '.title'),
              video: q('clip', 'video') && q('clip', 'video').getAttribute('src'),
              action: t('clip', '.action'),
              priorities: [...document.querySelectorAll('#feed article.inject')].map(a => a.dataset.priority),
              types: [...document.querySelectorAll('#feed article.inject')].map(a => a.dataset.type),
              newest: document.querySelector('#feed article.inject').classList.contains('is-new'),
            };"#,
        )
        .await;
    let text = |key: &str| rendered[key].as_str().unwrap_or_default().to_owned();
    assert_eq!(text("name"), "Kestrel Bay News", "{rendered}");
    assert!(text("handle").contains("@kestrel_news"), "{rendered}");
    assert_eq!(rendered["verified"], true, "{rendered}");
    assert!(
        text("tweet").contains("Tug and barge collide"),
        "{rendered}"
    );
    assert!(
        text("likes").contains("1") && text("likes").contains("523"),
        "{rendered}"
    );
    assert!(text("reposts").contains("342"), "{rendered}");
    // Media come with a URL of their own from the stream (a media token).
    assert!(
        text("image").starts_with("/exercises/drill/media/drill-kit/harbour.svg?media="),
        "{rendered}"
    );
    assert!(
        text("from").contains("harbourmaster@kestrel.example"),
        "{rendered}"
    );
    assert!(text("to").contains("duty@port.example"), "{rendered}");
    assert!(text("cc").contains("press@port.example"), "{rendered}");
    assert!(
        text("subject").contains("Outer harbour closed"),
        "{rendered}"
    );
    assert!(
        text("attachments").contains("closure-notice.pdf"),
        "{rendered}"
    );
    assert!(text("bubble").contains("Barge listing"), "{rendered}");
    assert!(text("sender").contains("Halcyon skipper"), "{rendered}");
    assert!(text("outlet").contains("Kestrel Bay Live"), "{rendered}");
    assert!(
        text("headline").contains("Collision closes harbour"),
        "{rendered}"
    );
    assert!(
        text("classification").contains("SECRET - EXERCISE"),
        "{rendered}"
    );
    assert!(text("title").contains("Cargo manifest"), "{rendered}");
    assert!(
        text("video").starts_with("/exercises/drill/media/drill-kit/bodycam.mp4?media="),
        "{rendered}"
    );
    assert!(text("action").contains("flood the hold"), "{rendered}");
    assert_eq!(
        rendered["priorities"],
        json!(["high", "medium", "critical", "low", "high", "high"])
    );
    assert_eq!(
        rendered["types"],
        json!(["social", "email", "sms", "news", "intel", "video"])
    );
    assert_eq!(rendered["newest"], true, "a new inject is highlighted");
    // The image really loaded from the media folder.
    browser
        .wait(
            "the tweet's image loaded",
            "(() => { const i = document.querySelector('article[data-inject-id=\"tweet\"] img'); return i && i.complete && i.naturalWidth > 0; })()",
            SECS,
        )
        .await;
    browser.screenshot("team-dashboard").await;
    browser.assert_no_policy_violations("the team page").await;
    // The check sees a violation when there is one: an inline style.
    browser
        .eval("document.body.append(Object.assign(document.createElement('b'), {}).cloneNode()); document.body.lastChild.setAttribute('style', 'color: red'); return true")
        .await;
    let seen = browser.console().await;
    assert!(
        seen.iter().any(|m| m.contains("Content Security Policy")),
        "an inline style is refused and reported: {seen:#?}"
    );

    // Every inject shown was confirmed: the records carry the receipts.
    let list = app
        .wait_for("/api/v1/exercises/drill/deliveries", SECS, |list| {
            list.as_array()
                .unwrap()
                .iter()
                .all(|d| d["received_at"].is_string())
        })
        .await;
    let mut latencies: Vec<f64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["receipt_latency_ms"].as_f64().expect("a receipt latency"))
        .collect();
    latencies.sort_by(f64::total_cmp);
    println!(
        "receipt latency (due to shown), {} injects: min {:.1} ms, max {:.1} ms",
        latencies.len(),
        latencies[0],
        latencies[latencies.len() - 1]
    );
    assert!(latencies.iter().all(|&l| l >= 0.0));

    // The exercise ends; a reload shows the whole history, in order, none new.
    browser
        .wait(
            "completed",
            "document.querySelector('#state').textContent.toLowerCase().includes('completed')",
            SECS,
        )
        .await;
    browser.client.refresh().await.expect("reload");
    let again = browser
        .wait(
            "history after a reload",
            &format!("{FEED_IDS}.length === 6 && {FEED_IDS}"),
            SECS,
        )
        .await;
    assert_eq!(again, ids);
    let fresh = browser
        .eval("return document.querySelectorAll('#feed article.inject.is-new').length")
        .await;
    assert_eq!(fresh, 0, "history is not highlighted as new");
    browser
        .wait(
            "the completed banner",
            "!document.querySelector('#banner').hidden",
            SECS,
        )
        .await;
    // A tampered link shows why, instead of reconnecting for ever.
    let (page, token) = url.split_once("?token=").unwrap();
    let last = if token.ends_with('x') { 'y' } else { 'x' };
    browser
        .open(&format!("{page}?token={}{last}", &token[..token.len() - 1]))
        .await;
    browser
        .wait(
            "the refused link explained",
            "!document.querySelector('#fatal').hidden && document.querySelector('#fatal').textContent.includes('not valid')",
            SECS,
        )
        .await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_runs_an_exercise_from_the_control_room_while_a_team_follows() {
    let app = spawn_app_with(&[
        "--delivery-timeout-ms",
        "500",
        "--max-retry-attempts",
        "1",
        "--retry-delay-seconds",
        "0",
    ])
    .await;
    let package_file = app.media.join("drill-package.json");
    std::fs::write(
        &package_file,
        every_kind(
            600,
            &[
                ("blue", "Port Authority"),
                ("red", "Nordic Line crisis cell"),
                ("green", "Kestrel Bay council"),
            ],
        )
        .to_string(),
    )
    .unwrap();
    let control = Browser::start().await;
    let team = Browser::start().await;

    // Create the exercise from an uploaded package.
    // Signed in with the token in the address, as `demo` prints it.
    control
        .open(&app.url(&format!("/#token={ADMIN_TOKEN}")))
        .await;
    control
        .wait(
            "the create form",
            "document.querySelector('#create-form input[name=package]')",
            SECS,
        )
        .await;
    control
        .client
        .find(fantoccini::Locator::Css("#create-form input[name=package]"))
        .await
        .unwrap()
        .send_keys(package_file.to_str().unwrap())
        .await
        .unwrap();
    control
        .type_into("#create-form input[name=exercise_id]", "room")
        .await;
    control
        .type_into("#create-form input[name=speed]", "2")
        .await;
    control.click("#create-form [type=submit]").await;
    control
        .wait(
            "the exercise's control room",
            "location.pathname === '/exercises/room'",
            SECS,
        )
        .await;
    control
        .wait(
            "its deliveries",
            "document.querySelectorAll('#deliveries tr[data-inject]').length === 18",
            SECS,
        )
        .await;

    // The team opens its dashboard: the control room sees it connected.
    let (_, info) = app.get("/api/v1/exercises/room").await;
    team.open(info["teams"][0]["dashboard_url"].as_str().unwrap())
        .await;
    control
        .wait(
            "one team connected",
            "document.querySelector('#teams-connected').textContent.includes('1')",
            SECS,
        )
        .await;

    // Start: the team's clock runs.
    control
        .wait(
            "start enabled",
            "!document.querySelector('button[data-command=start]').disabled",
            SECS,
        )
        .await;
    control.click("button[data-command=start]").await;
    team.wait(
        "the team clock runs",
        "document.querySelector('#clock').textContent.includes('T+00:0') && !document.querySelector('#clock').textContent.includes('T+00:00')",
        SECS,
    )
    .await;
    team.wait(
        "the tweet arrives",
        "document.querySelector('article[data-inject-id=\"tweet\"]')",
        SECS,
    )
    .await;

    // Pause with a reason: the banner shows on the team page and its clock stops.
    control
        .type_into("#pause-reason", "Fire alarm in the building")
        .await;
    control.click("button[data-command=pause]").await;
    team.wait(
        "the pause banner with its reason",
        "!document.querySelector('#banner').hidden && document.querySelector('#banner').textContent.includes('Fire alarm in the building')",
        SECS,
    )
    .await;
    control
        .wait(
            "paused in the control room",
            "document.querySelector('#state').textContent.toLowerCase().includes('paused')",
            SECS,
        )
        .await;
    let (_, paused) = app.get("/api/v1/exercises/room").await;
    let held = paused["formatted"].as_str().unwrap().to_owned();
    team.wait(
        "the team clock shows the paused time",
        &format!("document.querySelector('#clock').textContent.includes('{held}')"),
        SECS,
    )
    .await;
    // Three exercise seconds' worth of wall time: the clock must not move.
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < until {
        let clock = team
            .eval("return document.querySelector('#clock').textContent")
            .await;
        assert!(
            clock.as_str().unwrap().contains(&held),
            "the clock moved while paused: {clock}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    control.screenshot("control-room").await;

    // Resume: the banner goes, the clock moves on.
    control.click("button[data-command=resume]").await;
    team.wait(
        "no banner after resume",
        "document.querySelector('#banner').hidden",
        SECS,
    )
    .await;
    team.wait(
        "the clock moves on",
        &format!("!document.querySelector('#clock').textContent.includes('{held}')"),
        SECS,
    )
    .await;

    // Send a live inject from the control room's form.
    send_news(&control, "live-1", "Live: harbour closed to all traffic").await;
    team.wait(
        "the live inject on the team page",
        "(() => { const a = document.querySelector('article[data-inject-id=\"live-1\"]'); return a && a.textContent.includes('harbour closed to all traffic'); })()",
        SECS,
    )
    .await;

    // The broker hangs: the next inject fails; retried from the control room,
    // it is delivered once the broker is back.
    app.proxy.set_stalled(true);
    send_news(&control, "live-2", "Live: second tug on scene").await;
    control
        .wait(
            "a failed row",
            "document.querySelector('#deliveries tr[data-status=failed] button.retry')",
            SECS,
        )
        .await;
    let failed = control
        .eval("return document.querySelector('#deliveries tr[data-status=failed]').dataset.inject")
        .await;
    let failed = failed.as_str().unwrap().to_owned();
    control
        .click("#deliveries tr[data-status=failed] button.retry")
        .await;
    control
        .wait(
            "the row retrying",
            &format!("(() => {{ const r = document.querySelector('#deliveries tr[data-inject=\"{failed}\"]'); return r && r.dataset.status !== 'failed'; }})()"),
            SECS,
        )
        .await;
    app.proxy.set_stalled(false);
    control
        .wait(
            "the retried row delivered and received",
            &format!("(() => {{ const r = document.querySelector('#deliveries tr[data-inject=\"{failed}\"]'); return r && r.dataset.status === 'delivered' && r.dataset.received === 'true'; }})()"),
            SECS,
        )
        .await;

    // Stop ends it; the team page says so.
    control.click("button[data-command=stop]").await;
    // The next command to the control room's browser confirms the dialog.
    control
        .wait(
            "stopped in the control room",
            "document.querySelector('#state').textContent.toLowerCase().includes('stopped')",
            SECS,
        )
        .await;
    team.wait(
        "the stopped banner",
        "!document.querySelector('#banner').hidden && document.querySelector('#state').textContent.toLowerCase().includes('stopped')",
        SECS,
    )
    .await;
    let (_, log) = app.get("/api/v1/exercises/room/control-log").await;
    let commands: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap())
        .collect();
    // Every control action: the live injects and the retry are logged too.
    assert_eq!(
        commands,
        ["start", "pause", "resume", "send", "send", "retry", "stop"]
    );
    assert_eq!(log[1]["reason"], "Fire alarm in the building");
    assert!(
        log[3]["message"].as_str().unwrap().contains("\"live-1\""),
        "{}",
        log[3]
    );
    control
        .assert_no_policy_violations("the control room")
        .await;
    team.assert_no_policy_violations("the team page").await;
    control.quit().await;
    team.quit().await;
}

/// The control room's "Teams will see": per command it allows, the banner's
/// title and reason (null: no banner).
const PREVIEW: &str = "Object.fromEntries([...document.querySelectorAll('#preview li')].map(li => \
     [li.dataset.command, li.querySelector('.banner') ? [li.querySelector('.banner .banner-title').textContent, \
     (li.querySelector('.banner .banner-reason') || {textContent: ''}).textContent] : null]))";
/// The team dashboard's banner: its title and reason (null: none shown).
const BANNER: &str = "(document.querySelector('#banner').hidden ? null : \
     [document.querySelector('#banner-title').textContent, document.querySelector('#banner-reason').textContent])";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_command_carries_its_own_reason_and_the_room_shows_what_teams_will_see() {
    const COFFEE: &str = "Coffee break, back in 10 minutes";
    let app = spawn_app().await;
    let created = app
        .create(
            "reason",
            1.0,
            every_kind(600, &[("blue", "Port Authority")]),
        )
        .await;
    let control = Browser::start().await;
    let team = Browser::start().await;
    team.open(created["teams"][0]["dashboard_url"].as_str().unwrap())
        .await;
    control
        .open(&app.url(&format!("/exercises/reason#token={ADMIN_TOKEN}")))
        .await;
    let enabled = |command: &str| {
        format!("!document.querySelector('button[data-command={command}]').disabled")
    };

    control.wait("start enabled", &enabled("start"), SECS).await;
    assert_eq!(
        control.eval(&format!("return {PREVIEW}")).await,
        json!({"start": null, "reset": ["Waiting for the exercise to start", ""]})
    );
    control.click("button[data-command=start]").await;
    control.wait("pause enabled", &enabled("pause"), SECS).await;

    // Typed, the reason shows on the commands that carry it, as the teams will see it.
    control.type_into("#pause-reason", COFFEE).await;
    let before_pause = control
        .wait(
            "the reason in the preview",
            &format!("(p => p.pause && p.pause[1] === '{COFFEE}' && p)({PREVIEW})"),
            SECS,
        )
        .await;
    assert_eq!(
        before_pause,
        json!({"pause": ["Exercise paused", COFFEE], "stop": ["Exercise stopped", COFFEE],
               "reset": ["Waiting for the exercise to start", ""]})
    );
    control.click("button[data-command=pause]").await;
    let paused = team
        .wait(
            "the pause banner",
            &format!("document.querySelector('#state').textContent === 'paused' && {BANNER}"),
            SECS,
        )
        .await;
    assert_eq!(paused, before_pause["pause"], "the teams see the preview");

    // Once sent, the reason is gone: the stop after the resume has none.
    control
        .wait("resume enabled", &enabled("resume"), SECS)
        .await;
    control.click("button[data-command=resume]").await;
    team.wait(
        "no banner after resume",
        &format!("{BANNER} === null"),
        SECS,
    )
    .await;
    let before_stop = control
        .wait(
            "running in the control room",
            &format!("{} && {PREVIEW}", enabled("pause")),
            SECS,
        )
        .await;
    assert_eq!(
        before_stop,
        json!({"pause": ["Exercise paused", ""], "stop": ["Exercise stopped", ""],
               "reset": ["Waiting for the exercise to start", ""]}),
        "no reason left over from the pause"
    );
    let field = control
        .eval("return document.querySelector('#pause-reason').value")
        .await;
    assert_eq!(field, "", "the reason field is cleared once sent");
    control.click("button[data-command=stop]").await;
    // The next command to the control room's browser confirms the dialog.
    control
        .wait(
            "stopped in the control room",
            "document.querySelector('#state').textContent === 'stopped'",
            SECS,
        )
        .await;
    let stopped = team
        .wait(
            "the stop banner",
            &format!("document.querySelector('#state').textContent === 'stopped' && {BANNER}"),
            SECS,
        )
        .await;
    assert_eq!(
        stopped,
        json!(["Exercise stopped", ""]),
        "not the pause's reason"
    );
    assert_eq!(stopped, before_stop["stop"], "the teams see the preview");
    let (_, log) = app.get("/api/v1/exercises/reason/control-log").await;
    let reasons: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["reason"])
        .collect();
    assert_eq!(
        reasons,
        [&Value::Null, &json!(COFFEE), &Value::Null, &Value::Null]
    );
    control
        .assert_no_policy_violations("the control room")
        .await;
    control.quit().await;
    team.quit().await;
}

/// Sends a news inject to team blue now, from the control room's form.
async fn send_news(control: &Browser, id: &str, headline: &str) {
    control.type_into("#send-form input[name=id]", id).await;
    control
        .eval("const s = document.querySelector('#send-form [name=type]'); s.value = 'news'; s.dispatchEvent(new Event('change', {bubbles: true})); return true")
        .await;
    control
        .wait(
            "a headline field for news",
            "document.querySelector('#send-form [name=headline]')",
            SECS,
        )
        .await;
    control
        .type_into("#send-form [name=headline]", headline)
        .await;
    control
        .eval("const b = document.querySelector('#send-form input[name=team][value=blue]'); if (!b.checked) b.click(); return true")
        .await;
    control.click("#send-form [type=submit]").await;
    // The row, or what the page said instead (for the failure message).
    let probe = format!(
        "return document.querySelector('#deliveries tr[data-inject=\"{id}\"]') ? 'row' : \
         'no row yet; the page says: ' + document.querySelector('#message').textContent"
    );
    let deadline = tokio::time::Instant::now() + SECS;
    loop {
        let seen = control.eval(&probe).await;
        if seen == "row" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the live inject {id} in the control room: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A picture for the tweet.
const SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="320" height="160"><rect width="320" height="160" fill="#1d4e89"/><text x="20" y="90" fill="white" font-size="28">Kestrel Bay</text></svg>"##;
