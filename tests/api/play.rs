//! Two-way play end to end: teams answer from their dashboard link and on
//! MQTT, each team gets the branch of its own answer and nobody else's,
//! a missed window fires its fallback, decisions release what waits for
//! them, and everything lands on the responses topic and in the API.

use std::time::Duration;

use reqwest::StatusCode;
use rumqttc::QoS;
use serde_json::{Value, json};

use scip_orchestrator::testing::Subscriber;

use crate::support::*;

const SECS: Duration = Duration::from_secs(15);

/// Blue and red share a timeline: a question at T+1 (B expected within
/// `within` s), a branch per option, a fallback when nobody answers in
/// time, and an inject that waits for the decision "escalate".
fn branching(within: u32) -> Value {
    let injects = json!([
        {"id": "q", "time": 1, "type": "email", "content": {"subject": "Statement?"},
         "response": {"kind": "choice", "options": ["A", "B"], "prompt": "Which line do we take?"},
         "expect": {"within": within, "choice": "B"}},
        {"id": "branch-a", "time": 0, "type": "news", "content": {"headline": "A"},
         "when": {"after": "q", "outcome": "choice:A"}},
        {"id": "branch-b", "time": 0, "type": "news", "content": {"headline": "B"},
         "when": {"after": "q", "outcome": "choice:B"}},
        {"id": "fallback", "time": 0, "type": "sms", "content": {"text": "Well?"},
         "when": {"after": "q", "outcome": "missed"}},
        {"id": "escalation", "time": 0, "type": "news", "content": {"headline": "Escalated"},
         "when": {"decision": "escalate", "delay": 1}},
    ]);
    json!({
        "name": "Two-way",
        "duration_minutes": 10,
        "teams": [{"id": "blue", "timeline_id": "t"}, {"id": "red", "timeline_id": "t"}],
        "timelines": [{"id": "t", "injects": injects}],
    })
}

/// Waits for the feed message `inject` on `team`'s feed; returns every
/// message seen on the way.
async fn feed_until(feeds: &mut Subscriber, team: &str, inject: &str) -> Vec<(String, String)> {
    let topic = |seen: &scip_orchestrator::testing::Seen| {
        let team = seen.topic.split('/').nth(4).unwrap_or("").to_owned();
        (team, seen.payload["id"].as_str().unwrap_or("").to_owned())
    };
    feeds
        .collect_until(SECS, |m| topic(m) == (team.to_owned(), inject.to_owned()))
        .await
        .iter()
        .map(topic)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_team_gets_the_branch_of_its_own_answer_from_the_dashboard_or_mqtt() {
    let app = spawn_app().await;
    let mut feeds = app.feeds("tw").await;
    let mut announced = subscribe(&app, "/exercise/tw/responses").await;
    app.create("tw", 1.0, branching(300)).await;
    let blue = team_path(&app, "tw", "blue", "responses").await;
    let answer = |choice: &str| json!({"inject_id": "q", "choice": choice, "by": "Ana"});

    // Before the question went out, answering it reads as no such inject.
    let early = app.post(&blue, Some(answer("B"))).await;
    assert_error(&early, StatusCode::NOT_FOUND, "not_found");
    app.command("tw", "start").await;
    feed_until(&mut feeds, "blue", "q").await;
    feed_until(&mut feeds, "red", "q").await;

    // Refusals change nothing.
    assert_error(
        &app.post(&blue, Some(answer("C"))).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    assert_error(
        &app.post(&blue, Some(json!({"inject_id": "branch-a", "choice": "A"})))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let no_link = app
        .anonymous
        .post(app.url("/api/v1/exercises/tw/teams/blue/responses"))
        .json(&answer("B"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_link.status(), StatusCode::UNAUTHORIZED);
    let red_link = team_path(&app, "tw", "red", "responses").await;
    let query = red_link.split_once('?').unwrap().1;
    let forged = app
        .anonymous
        .post(app.url(&format!(
            "/api/v1/exercises/tw/teams/blue/responses?{query}"
        )))
        .json(&answer("A"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        StatusCode::FORBIDDEN,
        "red's link is not blue's"
    );

    // Blue answers B on its dashboard: branch B at once, for blue only.
    let (status, body) = app.post(&blue, Some(answer("B"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["edit"], false);
    assert!(
        body.get("outcome").is_none(),
        "a team is not told its outcome"
    );
    let seen = feed_until(&mut feeds, "blue", "branch-b").await;
    assert!(
        !seen
            .iter()
            .any(|(_, i)| i.starts_with("branch") && i != "branch-b"),
        "{seen:?}"
    );

    // A receipt for an inject not sent yet reads as one that does not exist.
    let receipts = team_path(&app, "tw", "blue", "receipts").await;
    for inject in ["escalation", "no-such-inject"] {
        assert_error(
            &app.post(&receipts, Some(json!({"run": 1, "inject_ids": [inject]})))
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }

    // A refused MQTT answer is reported to the controllers only (it may name
    // the options), never on the status topic every team reads.
    let mut status = subscribe(&app, "/exercise/tw/status").await;
    feeds
        .client
        .publish(
            "/exercise/tw/team/red/responses",
            QoS::AtLeastOnce,
            false,
            json!({"inject_id": "q", "choice": "C"}).to_string(),
        )
        .await
        .unwrap();
    let mut messages = announced
        .collect_until(SECS, |m| m.payload["event"] == "refused")
        .await;
    let refused = messages.last().unwrap().payload.clone();
    assert_eq!(
        (refused["team_id"].as_str(), refused["what"].as_str()),
        (Some("red"), Some("response"))
    );
    assert!(
        status
            .drain()
            .iter()
            .all(|m| !m.raw.windows(6).any(|w| w == b"choose")),
        "a refusal reached the status topic"
    );

    // Red answers A on its MQTT responses topic: branch A, for red only.
    feeds
        .client
        .publish(
            "/exercise/tw/team/red/responses",
            QoS::AtLeastOnce,
            false,
            json!({"inject_id": "q", "choice": "A", "by": "Bo"}).to_string(),
        )
        .await
        .unwrap();
    let seen = feed_until(&mut feeds, "red", "branch-a").await;
    assert!(!seen.iter().any(|(_, i)| i == "branch-b"), "{seen:?}");

    // Announced: both responses with their outcomes, and where each branch stands.
    messages.extend(
        announced
            .collect_until(SECS, |m| {
                m.payload["event"] == "response" && m.payload["team_id"] == "red"
            })
            .await,
    );
    let response = |team: &str| {
        messages
            .iter()
            .find(|m| m.payload["event"] == "response" && m.payload["team_id"] == team)
            .map(|m| m.payload.clone())
            .unwrap_or_else(|| panic!("no response of {team}"))
    };
    assert_eq!(response("blue")["outcome"], "met");
    assert_eq!(response("blue")["source"], "dashboard");
    assert_eq!(response("blue")["by"], "Ana");
    assert_eq!(response("red")["outcome"], "wrong");
    assert_eq!(response("red")["source"], "mqtt");
    assert!(messages.iter().any(|m| m.payload["event"] == "play"
        && m.payload["team_id"] == "blue"
        && m.payload["inject_id"] == "branch-a"
        && m.payload["condition"] == "skipped"
        && m.payload["reason"] == "the team chose \"B\" on q"));

    // The controllers' view: outcomes, answers and conditions per delivery.
    let (_, list) = app.get("/api/v1/exercises/tw/deliveries").await;
    assert_eq!(find(&list, "blue", "q")["outcome"], "met");
    assert_eq!(find(&list, "blue", "q")["choice"], "B");
    assert_eq!(find(&list, "red", "q")["outcome"], "wrong");
    assert_eq!(find(&list, "blue", "branch-b")["condition"], "released");
    assert_eq!(find(&list, "blue", "branch-a")["status"], "skipped");
    assert_eq!(find(&list, "red", "fallback")["condition"], "skipped");
    assert_eq!(find(&list, "red", "escalation")["condition"], "held");

    // An edit is kept; the outcome stays the first answer's.
    let (status, body) = app.post(&blue, Some(answer("A"))).await;
    assert_eq!((status, &body["edit"]), (StatusCode::OK, &json!(true)));
    let (_, rows) = app.get("/api/v1/exercises/tw/responses").await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        (
            rows[2]["team_id"].as_str(),
            rows[2]["body"]["edit"].as_bool()
        ),
        (Some("blue"), Some(true))
    );
    let (_, list) = app.get("/api/v1/exercises/tw/deliveries").await;
    assert_eq!(find(&list, "blue", "q")["outcome"], "met");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_window_fires_the_fallback_and_a_late_answer_turns_it_late() {
    let app = spawn_app().await;
    let mut feeds = app.feeds("miss").await;
    let mut announced = subscribe(&app, "/exercise/miss/responses").await;
    app.create("miss", 1.0, branching(2)).await;
    app.command("miss", "start").await;
    // Window: T+1 to T+3; nobody answers; the fallback goes out at T+3.
    feed_until(&mut feeds, "blue", "fallback").await;
    feed_until(&mut feeds, "red", "fallback").await;
    let (_, list) = app.get("/api/v1/exercises/miss/deliveries").await;
    assert_eq!(find(&list, "blue", "q")["outcome"], "missed");
    assert_eq!(find(&list, "blue", "fallback")["due_exercise_time"], 3);
    // A late answer still counts (late) and picks its branch; the fallback stands.
    let blue = team_path(&app, "miss", "blue", "responses").await;
    let (status, _) = app
        .post(&blue, Some(json!({"inject_id": "q", "choice": "B"})))
        .await;
    assert_eq!(status, StatusCode::OK);
    feed_until(&mut feeds, "blue", "branch-b").await;
    let late = announced
        .collect_until(SECS, |m| m.payload["event"] == "response")
        .await;
    assert_eq!(late.last().unwrap().payload["outcome"], "late");
    let (_, list) = app.get("/api/v1/exercises/miss/deliveries").await;
    assert_eq!(find(&list, "blue", "q")["outcome"], "late");
    assert_eq!(find(&list, "blue", "fallback")["status"], "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_from_the_api_and_the_control_topic_release_what_waits() {
    let app = spawn_app().await;
    let mut feeds = app.feeds("dec").await;
    app.create("dec", 1.0, branching(300)).await;
    let decide = |body: Value| app.post("/api/v1/exercises/dec/decisions", Some(body));
    assert_error(
        &decide(json!({"decision": "escalate"})).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    app.command("dec", "start").await;
    assert_error(
        &decide(json!({"decision": "evacuate"})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &decide(json!({"decision": "escalate", "teams": ["green"]})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (status, body) = decide(json!({"decision": "escalate", "teams": ["red"]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["released"], 1);
    let seen = feed_until(&mut feeds, "red", "escalation").await;
    assert!(!seen.contains(&("blue".into(), "escalation".into())));
    let (_, list) = app.get("/api/v1/exercises/dec/deliveries").await;
    assert_eq!(find(&list, "blue", "escalation")["condition"], "held");

    // The control topic takes the same decision for blue.
    feeds
        .client
        .publish(
            "/exercise/dec/control",
            QoS::AtLeastOnce,
            false,
            json!({"command": "decide", "decision": "escalate", "teams": ["blue"]}).to_string(),
        )
        .await
        .unwrap();
    feed_until(&mut feeds, "blue", "escalation").await;
    // The inject goes out at once; the log row follows it into the store.
    let decided = |log: &Value| {
        log.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["command"] == "decide")
            .cloned()
            .collect::<Vec<Value>>()
    };
    let log = app
        .wait_for("/api/v1/exercises/dec/control-log", SECS, |log| {
            decided(log).len() == 5
        })
        .await;
    assert_eq!(decided(&log).last().unwrap()["source"], "mqtt");
    let rows = app
        .wait_for("/api/v1/exercises/dec/responses", SECS, |rows| {
            rows.as_array().is_some_and(|r| r.len() == 2)
        })
        .await;
    let kinds: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["decision", "decision"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_reaches_exactly_the_teams_that_see_its_channel() {
    let app = spawn_app().await;
    let mut feeds = app.feeds("pub").await;
    let mut announced = subscribe(&app, "/exercise/pub/responses").await;
    let line = json!([{"id": "start", "time": 0, "type": "news", "content": {}}]);
    let package = json!({
        "name": "Channels",
        "duration_minutes": 10,
        "teams": [{"id": "blue", "timeline_id": "t"}, {"id": "red", "timeline_id": "t"},
                  {"id": "green", "timeline_id": "t"}],
        "timelines": [{"id": "t", "injects": line}],
        "channels": [
            {"id": "social", "kind": "social", "name": "Chirper", "visible_to": ["blue", "red"]},
            {"id": "wire", "kind": "news", "visible_to": ["red"]},
        ],
    });
    app.create("pub", 1.0, package).await;
    let blue = team_path(&app, "pub", "blue", "posts").await;
    let post = |channel: &str| json!({"channel": channel, "text": "We are on it.", "by": "Ana"});
    assert_error(
        &app.post(&blue, Some(post("social"))).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    app.command("pub", "start").await;
    feed_until(&mut feeds, "green", "start").await;

    // Blue posts on the social network: blue and red see it, green does not.
    let (status, body) = app.post(&blue, Some(post("social"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["reached"],
        json!([]),
        "who else sees it is not blue's to know"
    );
    assert_eq!(body["inject_id"], "social-post-1");
    let inject = body["inject_id"].as_str().unwrap().to_owned();
    let mut seen = feed_until(&mut feeds, "blue", &inject).await;
    seen.extend(feed_until(&mut feeds, "red", &inject).await);
    // A channel blue does not see reads as no channel at all.
    assert_error(
        &app.post(&blue, Some(post("wire"))).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // A controller posts on the wire as a persona: red only.
    let (status, body) = app
        .post(
            "/api/v1/exercises/pub/posts",
            Some(json!({"channel": "wire", "text": "Minister resigns", "as": "City News"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reached"], json!(["red"]));
    let wire = body["inject_id"].as_str().unwrap().to_owned();
    assert_eq!(wire, "wire-post-1", "numbered per channel");
    seen.extend(feed_until(&mut feeds, "red", &wire).await);
    // Red posts on its MQTT posts topic.
    feeds
        .client
        .publish(
            "/exercise/pub/team/red/posts",
            QoS::AtLeastOnce,
            false,
            json!({"channel": "social", "text": "Red here", "by": "Bo"}).to_string(),
        )
        .await
        .unwrap();
    let messages = announced
        .collect_until(SECS, |m| {
            m.payload["event"] == "post" && m.payload["author_team"] == "red"
        })
        .await;
    let red_post = messages.last().unwrap().payload["inject_id"]
        .as_str()
        .unwrap()
        .to_owned();
    seen.extend(feed_until(&mut feeds, "blue", &red_post).await);
    seen.extend(feeds.drain().iter().map(|m| {
        (
            m.topic.split('/').nth(4).unwrap_or("").to_owned(),
            m.payload["id"].as_str().unwrap_or("").to_owned(),
        )
    }));
    assert!(
        !seen
            .iter()
            .any(|(team, id)| team == "green" && id.starts_with("post-")),
        "green saw a post of a channel it does not see: {seen:?}"
    );
    assert!(!seen.contains(&("blue".into(), wire.clone())), "{seen:?}");

    // On the feed: the channel's kind, marked with its author.
    let (_, list) = app.get("/api/v1/exercises/pub/deliveries?team=red").await;
    assert_eq!(find(&list, "red", &inject)["type"], "social");
    assert_eq!(find(&list, "red", &wire)["type"], "news");
    let blue_stream = team_path(&app, "pub", "blue", "events").await;
    let mut stream = EventStream::open(&app, &blue_stream).await;
    let history = stream.until(SECS, "history", |_| true).await.pop().unwrap();
    let post = history.data["injects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["message"]["id"] == inject.as_str())
        .unwrap()["message"]
        .clone();
    assert_eq!(post["author_team"], "blue");
    assert_eq!(post["channel"], "social");
    assert_eq!(post["content"]["text"], "We are on it.");
    // A team's post always names its team: no passing for a persona.
    assert_eq!(post["content"]["display_name"], "Ana (team blue)");
    assert_eq!(post["content"]["username"], "blue");
    let (_, rows) = app.get("/api/v1/exercises/pub/responses").await;
    let posts: Vec<(&str, &str)> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "post")
        .map(|r| {
            (
                r["subject"].as_str().unwrap(),
                r["team_id"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        posts,
        [("social", "blue"), ("wire", "-"), ("social", "red")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evaluator_scores_and_the_report_shows_the_scorecard() {
    let app = spawn_app().await;
    let mut feeds = app.feeds("eval").await;
    let mut package = branching(300);
    package["objectives"] = json!([{"id": "comms", "title": "Public communication"}]);
    app.create("eval", 1.0, package).await;
    let token = |role: &str, name: &str| {
        let app = &app;
        let (role, name) = (role.to_owned(), name.to_owned());
        async move {
            let (status, body) = app
                .post("/api/v1/tokens", Some(json!({"role": role, "name": name})))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            authorized(body["token"].as_str().unwrap())
        }
    };
    let evaluator = token("evaluator", "Eva").await;
    let observer = token("observer", "Olli").await;
    app.command("eval", "start").await;
    feed_until(&mut feeds, "blue", "q").await;
    let blue = team_path(&app, "eval", "blue", "responses").await;
    let (status, _) = app
        .post(
            &blue,
            Some(json!({"inject_id": "q", "choice": "B", "text": "Holding line"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let score = |client: &reqwest::Client, body: Value| {
        let request = client
            .post(app.url("/api/v1/exercises/eval/scores"))
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, _) = score(
        &observer,
        json!({"team": "blue", "objective": "comms", "score": 50}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an observer reads, an evaluator scores"
    );
    // An evaluator may read like an observer, and not control.
    let refused = evaluator
        .post(app.url("/api/v1/exercises/eval/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let read = evaluator
        .get(app.url("/api/v1/exercises/eval/deliveries"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    for (body, status) in [
        (
            json!({"team": "blue", "objective": "speed", "score": 50}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"team": "blue", "inject": "q", "objective": "comms", "score": 50}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"team": "blue", "objective": "comms", "score": 101}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"team": "green", "objective": "comms", "score": 1}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        assert_eq!(score(&evaluator, body.clone()).await.0, status, "{body}");
    }
    let (status, body) = score(
        &evaluator,
        json!({"team": "blue", "objective": "comms", "score": 60}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["by"], "Eva");
    // A later score of the same evaluator supersedes the earlier one.
    score(
        &evaluator,
        json!({"team": "blue", "objective": "comms", "score": 80, "note": "Clear and fast"}),
    )
    .await;
    let (status, _) = score(
        &app.client,
        json!({"team": "blue", "inject": "q", "score": 90}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "a controller may score too");

    let (_, report) = app.get("/api/v1/exercises/eval/report").await;
    let card = report["play"]["scorecard"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["team_id"] == "blue")
        .unwrap()
        .clone();
    assert_eq!(card["met"], 1);
    assert_eq!(card["scores"][0]["target_id"], "comms");
    assert_eq!(card["scores"][0]["score"], 80.0);
    assert_eq!(
        card["scores"][0]["by_evaluator"][0]["note"],
        "Clear and fast"
    );
    assert_eq!(card["scores"][1]["target_id"], "q");
    assert_eq!(card["scores"][1]["score"], 90.0);
    let responses = report["play"]["responses"].as_array().unwrap();
    assert_eq!(responses[0]["choice"], "B");
    assert_eq!(responses[0]["outcome"], "met");
    assert!(responses[0]["response_time_s"].as_i64().unwrap() >= 0);
    let outcomes = report["play"]["outcomes"].as_array().unwrap();
    assert!(outcomes.iter().any(|o| o["team_id"] == "blue"
        && o["inject_id"] == "branch-a"
        && o["skip_reason"] == "the team chose \"B\" on q"));
    let html = app
        .client
        .get(app.url("/api/v1/exercises/eval/report.html"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for shown in [
        "Scorecard",
        "Public communication",
        "Clear and fast",
        "Holding line",
    ] {
        assert!(html.contains(shown), "the HTML report lacks {shown:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_two_way_route_refuses_an_outsider_a_team_and_an_observer_as_it_should() {
    let app = spawn_app().await;
    let mut package = branching(300);
    package["channels"] =
        json!([{"id": "social", "kind": "social", "visible_to": ["blue", "red"]}]);
    package["objectives"] = json!([{"id": "comms", "title": "Comms"}]);
    app.create("gate", 1.0, package).await;
    app.command("gate", "start").await;
    let (status, body) = app
        .post(
            "/api/v1/tokens",
            Some(json!({"role": "observer", "name": "o"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let observer = authorized(body["token"].as_str().unwrap());
    let blue_responses = team_path(&app, "gate", "blue", "responses").await;
    let link = blue_responses.split_once('?').unwrap().1.to_owned();
    let answer = json!({"inject_id": "q", "choice": "B"});
    let post = json!({"channel": "social", "text": "hi"});
    let send = |client: &reqwest::Client, method: reqwest::Method, path: String, body: Value| {
        let request = client.request(method, app.url(&path)).json(&body);
        async move { request.send().await.unwrap().status() }
    };
    let (get, post_m) = (reqwest::Method::GET, reqwest::Method::POST);
    // Controllers' routes: an outsider 401, an observer 403 (reads only),
    // a team's link in the address opens none of them.
    for (path, body) in [
        (
            "/api/v1/exercises/gate/decisions",
            json!({"decision": "escalate"}),
        ),
        (
            "/api/v1/exercises/gate/posts",
            json!({"channel": "social", "text": "x", "as": "Press"}),
        ),
        (
            "/api/v1/exercises/gate/scores",
            json!({"team": "blue", "objective": "comms", "score": 1}),
        ),
    ] {
        assert_eq!(
            send(&app.anonymous, post_m.clone(), path.into(), body.clone()).await,
            401,
            "{path}"
        );
        assert_eq!(
            send(&observer, post_m.clone(), path.into(), body.clone()).await,
            403,
            "{path}"
        );
        let with_link = format!("{path}?{link}");
        assert_eq!(
            send(&app.anonymous, post_m.clone(), with_link, body).await,
            401,
            "{path}"
        );
    }
    // The run's responses: any role reads them, an outsider or a team does not.
    let responses = "/api/v1/exercises/gate/responses".to_owned();
    assert_eq!(
        send(&observer, get.clone(), responses.clone(), Value::Null).await,
        200
    );
    assert_eq!(
        send(&app.anonymous, get.clone(), responses.clone(), Value::Null).await,
        401
    );
    assert_eq!(
        send(
            &app.anonymous,
            get,
            format!("{responses}?{link}"),
            Value::Null
        )
        .await,
        401
    );
    // A team's answer and post routes: only that team's link opens them,
    // never an API token, whatever its role.
    for (what, body) in [("responses", answer), ("posts", post)] {
        let path = format!("/api/v1/exercises/gate/teams/blue/{what}");
        assert_eq!(
            send(&app.anonymous, post_m.clone(), path.clone(), body.clone()).await,
            401,
            "{what}"
        );
        assert_eq!(
            send(&observer, post_m.clone(), path.clone(), body.clone()).await,
            401,
            "{what}"
        );
        assert_eq!(
            send(&app.client, post_m.clone(), path.clone(), body.clone()).await,
            401,
            "{what}"
        );
        let red = format!("/api/v1/exercises/gate/teams/red/{what}?{link}");
        assert_eq!(
            send(&app.anonymous, post_m.clone(), red, body.clone()).await,
            403,
            "{what}"
        );
        let forged = format!("{path}?token=forged");
        assert_eq!(
            send(&app.anonymous, post_m.clone(), forged, body.clone()).await,
            403,
            "{what}"
        );
    }
}
