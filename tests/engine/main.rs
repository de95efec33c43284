//! The engine end to end against a real Mosquitto on a free port: feeds,
//! timer, pause and resume, the control topic, broker outages.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

use rumqttc::QoS;
use scip_orchestrator::config::DeliveryPolicy;
use scip_orchestrator::core::{DeliveryStatus, State};
use scip_orchestrator::testing::{Mosquitto, Proxy, Seen, Subscriber};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_inject_reaches_its_team_once_in_order_with_the_spec_payload() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    // blue and orange share a timeline; red has its own with two injects in
    // one second and a timeline order that is not time order.
    let path = write_scenario(
        dir.path(),
        10,
        &[
            ("blue", "shared"),
            ("orange", "shared"),
            ("red", "red-only"),
        ],
        &[
            (
                "shared",
                &[
                    ("s-1", 0, "briefing"),
                    ("s-2", 3, "email"),
                    ("s-3", 10, "video"),
                ],
            ),
            (
                "red-only",
                &[("r-3", 7, "sms"), ("r-1", 2, "social"), ("r-2", 2, "news")],
            ),
        ],
    );
    let mut sub = Subscriber::connect(broker.port, "/exercise/feeds-1/#").await;
    let ex = start(broker.port, &path, "feeds-1", 10.0, false).await;
    let outcome = ex.finish().await;
    assert_eq!(outcome.state, State::Completed);
    let seen = sub
        .collect_until(Duration::from_secs(10), |m| {
            is_final_monitoring(m, "completed")
        })
        .await;

    let feeds = feeds_by_team(&seen);
    assert_eq!(ids(&feeds["blue"]), ["s-1", "s-2", "s-3"]);
    assert_eq!(ids(&feeds["orange"]), ["s-1", "s-2", "s-3"]);
    assert_eq!(ids(&feeds["red"]), ["r-1", "r-2", "r-3"]);
    assert_eq!(feeds.len(), 3, "no other feed topic: {:?}", feeds.keys());

    let m = &feeds["red"][0].payload;
    let ts = m["timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 24, "UTC timestamp: {ts}");
    let mut m = m.clone();
    m.as_object_mut().unwrap().remove("timestamp");
    // It went out the second it was due, or the next one at ten times speed.
    let delivered_at = m.as_object_mut().unwrap().remove("delivered_at").unwrap();
    assert!(
        matches!(delivered_at.as_u64(), Some(2 | 3)),
        "delivered_at {delivered_at}"
    );
    assert_eq!(
        m,
        json!({"id":"r-1","exerciseTime":2,"time":2,"type":"social","content":{"text":"r-1 says hello"},
               "team_id":"red","exercise_id":"feeds-1","priority":"high","media":["/media/r-1.jpg"]})
    );
    for m in feeds.values().flatten() {
        assert!(!m.retain, "feed messages are not retained");
    }

    // A timer message for every second, in order.
    let ticks: Vec<u64> = seen
        .iter()
        .filter(|m| m.topic.ends_with("/timer") && m.payload["status"] == "running")
        .map(|m| m.payload["current"].as_u64().unwrap())
        .collect();
    let mut distinct = ticks.clone();
    distinct.dedup();
    assert_eq!(distinct, (0..=10).collect::<Vec<_>>());
    let last_timer = seen
        .iter()
        .rev()
        .find(|m| m.topic.ends_with("/timer"))
        .unwrap();
    assert_eq!(
        last_timer.payload,
        json!({"current":10,"elapsed":10,"total":10,"formatted":"T+00:10","percentage":100.0,"status":"completed"})
    );

    let c = counts(&outcome);
    assert_eq!((c.delivered, c.failed, c.scheduled), (9, 0, 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_everything_and_resume_continues_at_the_same_exercise_time() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let path = write_scenario(
        dir.path(),
        40,
        &[("blue", "t"), ("red", "t")],
        &[(
            "t",
            &[("a", 5, "news"), ("b", 20, "news"), ("c", 30, "news")],
        )],
    );
    let mut sub = Subscriber::connect(broker.port, "/exercise/pause-1/#").await;
    let ex = start(broker.port, &path, "pause-1", 10.0, false).await;
    // Both T+5 injects arrive, then pause at T+10 or a little later.
    sub.collect_until(Duration::from_secs(10), |m| {
        m.topic.ends_with("/timer") && m.payload["current"].as_u64() >= Some(10)
    })
    .await;
    control(
        &sub,
        "pause-1",
        json!({"command":"pause","reason":"Technical issue with Team Green"}),
    )
    .await;
    let seen = sub
        .collect_until(Duration::from_secs(10), |m| is_status(m, "paused"))
        .await;
    let paused = seen.last().unwrap().payload.clone();
    assert_eq!(paused["reason"], "Technical issue with Team Green");
    let paused_at = paused["exerciseTime"].as_u64().unwrap();
    assert!((10..20).contains(&paused_at), "paused at T+{paused_at}");

    // Two wall seconds (20 exercise seconds at this speed): nothing moves.
    let mut during = Vec::new();
    while let Some(m) = sub.next(Duration::from_secs(2)).await {
        during.push(m);
    }
    assert!(
        !during.iter().any(|m| m.topic.contains("/feed")
            || (m.topic.ends_with("/timer") && m.payload["status"] == "running")),
        "nothing but bookkeeping while paused: {:?}",
        during
            .iter()
            .map(|m| (&m.topic, &m.payload))
            .collect::<Vec<_>>()
    );

    control(&sub, "pause-1", json!({"command":"resume"})).await;
    let seen = sub
        .collect_until(Duration::from_secs(20), |m| {
            is_final_monitoring(m, "completed")
        })
        .await;
    let resumed = seen.iter().find(|m| is_status(m, "running")).unwrap();
    assert_eq!(resumed.payload["exerciseTime"].as_u64(), Some(paused_at));
    let first_tick = seen
        .iter()
        .find(|m| m.topic.ends_with("/timer") && m.payload["status"] == "running")
        .unwrap();
    assert!(first_tick.payload["current"].as_u64().unwrap() <= paused_at + 1);
    let outcome = ex.finish().await;
    let c = counts(&outcome);
    assert_eq!((c.delivered, c.failed, c.cancelled), (6, 0, 0));
    let feeds = feeds_by_team(&seen);
    assert_eq!(ids(&feeds["blue"]), ["b", "c"]);
    assert_eq!(ids(&feeds["red"]), ["b", "c"]);
    // Not late: the pause moved their due instants.
    assert!(
        outcome.records.iter().all(|r| !r.late),
        "{:?}",
        outcome.records
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_refused_commands_are_reported_and_change_nothing() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let path = write_scenario(
        dir.path(),
        3,
        &[("blue", "t")],
        &[("t", &[("a", 1, "news")])],
    );
    let mut sub = Subscriber::connect(broker.port, "/exercise/ctl-1/#").await;
    let topic = "/exercise/ctl-1/control";
    // A retained command is stale by definition: the engine, subscribing
    // after it was left there, must not act on it.
    publish(&sub, topic, br#"{"command":"start"}"#, true).await;
    let ex = start(broker.port, &path, "ctl-1", 1.0, true).await;
    sub.collect_until(Duration::from_secs(10), |m| is_status(m, "initialized"))
        .await;

    let cases: [(&[u8], &str, &str); 6] = [
        (b"\xff\xfe garbage", "invalid_command", "not JSON"),
        (b"{\"command\":", "invalid_command", "not JSON"),
        (b"[\"start\"]", "invalid_command", "not a control message"),
        (
            b"{\"command\":\"launch\"}",
            "invalid_command",
            "unknown command \"launch\"",
        ),
        (
            b"{\"command\":\"pause\"}",
            "command_refused",
            "pause refused while initialized",
        ),
        (
            b"{\"command\":\"resume\"}",
            "command_refused",
            "resume refused while initialized",
        ),
    ];
    for (payload, event, needle) in cases {
        publish(&sub, topic, payload, false).await;
        let seen = sub
            .collect_until(Duration::from_secs(10), |m| {
                m.topic.ends_with("/status") && m.payload["event"] == event
            })
            .await;
        let status = &seen.last().unwrap().payload;
        assert_eq!(status["status"], "initialized");
        let message = status["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    // Clearing the retained message sends an empty one: not a command either.
    publish(&sub, topic, b"", true).await;
    // Still initialized: a live start works and the run completes, and the
    // engine's own "start" announcement is not taken as a second start.
    publish(&sub, topic, br#"{"command":"start"}"#, false).await;
    let seen = sub
        .collect_until(Duration::from_secs(15), |m| {
            is_final_monitoring(m, "completed")
        })
        .await;
    let refused: Vec<&Seen> = seen
        .iter()
        .filter(|m| m.topic.ends_with("/status") && m.payload["event"] != "state_changed")
        .collect();
    assert!(
        refused.is_empty(),
        "{:?}",
        refused.iter().map(|m| &m.payload).collect::<Vec<_>>()
    );
    let announcements: Vec<&Value> = seen
        .iter()
        .filter(|m| m.topic == topic && m.payload["source"] == "scip-orchestrator")
        .map(|m| &m.payload)
        .collect();
    assert_eq!(
        announcements.len(),
        2,
        "start and complete: {announcements:?}"
    );
    assert_eq!(announcements[0]["command"], "start");
    let starts = seen.iter().filter(|m| is_status(m, "running")).count();
    assert_eq!(starts, 1);
    let outcome = ex.finish().await;
    assert_eq!(outcome.state, State::Completed);
    assert_eq!(counts(&outcome).delivered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_for_seconds_loses_nothing_and_late_injects_say_so() {
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let injects: Vec<(String, u32, &str)> =
        (0..=12).map(|t| (format!("i-{t:02}"), t, "news")).collect();
    let injects: Vec<(&str, u32, &str)> = injects
        .iter()
        .map(|(i, t, k)| (i.as_str(), *t, *k))
        .collect();
    let path = write_scenario(
        dir.path(),
        12,
        &[("blue", "t"), ("red", "t"), ("green", "t")],
        &[("t", &injects)],
    );
    let mut sub = Subscriber::connect(broker.port, "/exercise/outage-1/team/+/feed").await;
    let ex = start(broker.port, &path, "outage-1", 1.0, false).await;
    sub.collect_until(Duration::from_secs(10), |m| {
        m.payload["id"] == "i-03" && m.payload["team_id"] == "green"
    })
    .await;
    broker.stop();
    let down = tokio::time::Instant::now();
    // The broker stays away for three seconds: a real outage, not a settle wait.
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart();
    let outage = down.elapsed();
    let outcome = ex.finish().await;

    assert_eq!(outcome.state, State::Completed);
    let c = counts(&outcome);
    assert_eq!(
        (c.delivered, c.failed, c.cancelled, c.scheduled),
        (39, 0, 0, 39)
    );
    let late: Vec<_> = outcome.records.iter().filter(|r| r.late).collect();
    assert!(
        late.len() >= 6,
        "injects due in the outage are late: {}",
        late.len()
    );
    let worst = late.iter().filter_map(|r| r.latency).max().unwrap();
    assert!(
        worst >= outage - Duration::from_secs(1) - Duration::from_millis(100),
        "lateness {worst:?} vs outage {outage:?}"
    );
    assert!(
        outcome
            .records
            .iter()
            .all(|r| r.status == DeliveryStatus::Delivered)
    );

    // Every inject reached the subscriber (which reconnects faster than the
    // engine) exactly once after the outage too.
    // Copies of i-03 (sent again when their acknowledgements were lost in the
    // outage) may come first: read until 27 of the later ones are here.
    let after_outage = |m: &Seen| m.payload["id"].as_str().is_some_and(|id| id > "i-03");
    let mut seen = Vec::new();
    while seen.iter().filter(|m| after_outage(m)).count() < 39 - 12 {
        match sub.next(Duration::from_secs(10)).await {
            Some(m) => seen.push(m),
            None => break,
        }
    }
    let mut got: HashMap<(String, String), usize> = HashMap::new();
    for m in &seen {
        *got.entry((
            m.payload["team_id"].as_str().unwrap().into(),
            m.payload["id"].as_str().unwrap().into(),
        ))
        .or_default() += 1;
    }
    for team in ["blue", "red", "green"] {
        for t in 4..=12 {
            let n = got
                .get(&(team.to_owned(), format!("i-{t:02}")))
                .copied()
                .unwrap_or(0);
            assert_eq!(n, 1, "{team} i-{t:02} arrived {n} times");
        }
    }
    // Each carries its due second as `time` and the second it went out as
    // `delivered_at`: later than `time` for those held by the outage.
    for m in &seen {
        let id = m.payload["id"].as_str().unwrap();
        let due: u64 = id[2..].parse().unwrap();
        assert_eq!(m.payload["time"].as_u64(), Some(due), "{}", m.payload);
        let delivered_at = m.payload["delivered_at"].as_u64().unwrap();
        assert!(delivered_at >= due, "{}", m.payload);
    }
    assert!(
        seen.iter().any(|m| {
            m.payload["delivered_at"].as_u64().unwrap() >= m.payload["time"].as_u64().unwrap() + 2
        }),
        "an inject held by the outage says it went out late"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_with_the_session_kept_loses_nothing_and_sends_nothing_twice() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    let dir = tempfile::tempdir().unwrap();
    let injects: Vec<(String, u32, &str)> =
        (0..=8).map(|t| (format!("i-{t:02}"), t, "news")).collect();
    let injects: Vec<(&str, u32, &str)> = injects
        .iter()
        .map(|(i, t, k)| (i.as_str(), *t, *k))
        .collect();
    let path = write_scenario(
        dir.path(),
        8,
        &[("blue", "t"), ("red", "t")],
        &[("t", &injects)],
    );
    // The subscriber talks to the broker directly; only the engine's link is cut.
    let mut sub = Subscriber::connect(broker.port, "/exercise/cut-1/team/+/feed").await;
    let ex = start(proxy.port, &path, "cut-1", 2.0, false).await;
    sub.collect_until(Duration::from_secs(10), |m| {
        m.payload["id"] == "i-02" && m.payload["team_id"] == "red"
    })
    .await;
    proxy.set_up(false);
    // The link stays cut for two seconds: a real outage, not a settle wait.
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set_up(true);
    let outcome = ex.finish().await;
    let c = counts(&outcome);
    assert_eq!((c.delivered, c.failed), (18, 0));
    let mut seen = sub
        .collect_until(Duration::from_secs(10), |m| {
            m.payload["id"] == "i-08" && m.payload["team_id"] == "red"
        })
        .await;
    while let Some(m) = sub.next(Duration::from_millis(300)).await {
        seen.push(m);
    }
    let feeds = feeds_by_team(&seen);
    let want: Vec<String> = (3..=8).map(|t| format!("i-{t:02}")).collect();
    assert_eq!(ids(&feeds["blue"]), want);
    assert_eq!(ids(&feeds["red"]), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_inject_is_retried_then_failed_and_announced() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_scenario(
        dir.path(),
        6,
        &[("blue", "t")],
        &[("t", &[("early", 1, "news"), ("later", 6, "news")])],
    );
    let mut sub = Subscriber::connect(broker.port, "/exercise/hung-1/#").await;
    let policy = DeliveryPolicy {
        timeout: Duration::from_millis(400),
        retry_delay: Duration::from_millis(200),
        max_attempts: 3,
        late_after: Duration::from_millis(100),
    };
    let mut ex = start_with(
        proxy.port,
        &path,
        "hung-1",
        1.0,
        false,
        policy,
        QoS::AtLeastOnce,
    )
    .await;
    sub.collect_until(Duration::from_secs(10), |m| is_status(m, "running"))
        .await;
    // The broker hangs: the connection stays up, nothing comes back.
    proxy.set_stalled(true);
    // Three attempts of 400 ms with 200 ms between them: failed by about
    // T+2.6, as the run's own counts show (its announcement of the failure
    // waits behind the stall).
    ex.progress_until(Duration::from_secs(10), |p| p.counts.failed == 1)
        .await;
    proxy.set_stalled(false);
    let seen = sub
        .collect_until(Duration::from_secs(10), |m| {
            m.topic.ends_with("/status") && m.payload["event"] == "delivery_failed"
        })
        .await;
    let failed = &seen.last().unwrap().payload;
    assert_eq!(failed["team_id"], "blue");
    assert_eq!(failed["inject_id"], "early");
    assert_eq!(failed["message"], "no acknowledgement within 400 ms");
    let outcome = ex.finish().await;
    let early = outcome.records.iter().find(|r| r.due.get() == 1).unwrap();
    assert_eq!(early.attempts, 3);
    assert_eq!(
        early.last_error.as_deref(),
        Some("no acknowledgement within 400 ms")
    );
    // The hung broker acknowledged all three copies once released: the truth
    // is that it arrived, late.
    assert_eq!(early.status, DeliveryStatus::Delivered);
    assert!(early.late);
    let later = outcome.records.iter().find(|r| r.due.get() == 6).unwrap();
    assert_eq!(
        (later.status, later.attempts),
        (DeliveryStatus::Delivered, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_feeds_count_as_delivered_once_written() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let path = write_scenario(
        dir.path(),
        2,
        &[("blue", "t"), ("red", "t")],
        &[("t", &[("a", 0, "news"), ("b", 2, "news")])],
    );
    let mut sub = Subscriber::connect(broker.port, "/exercise/qos0-1/team/+/feed").await;
    let ex = start_with(
        broker.port,
        &path,
        "qos0-1",
        1.0,
        false,
        DeliveryPolicy::default(),
        QoS::AtMostOnce,
    )
    .await;
    let outcome = ex.finish().await;
    let c = counts(&outcome);
    assert_eq!((c.delivered, c.failed), (4, 0));
    let seen = sub
        .collect_until(Duration::from_secs(10), |m| {
            m.payload["id"] == "b" && m.payload["team_id"] == "red"
        })
        .await;
    assert_eq!(
        feeds_by_team(&seen).values().map(Vec::len).sum::<usize>(),
        4
    );
}
