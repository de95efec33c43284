//! The closed room that `broker-acl` makes of an exercise: each team, the
//! controller and the engine read and command only what the ACL gives
//! them, on Mosquitto and on the embedded broker alike.

use std::collections::HashMap;
use std::path::Path;

use rumqttc::SubscribeReasonCode;
use serde_json::{Value, json};

use scip_orchestrator::testing::Mosquitto;

#[cfg(feature = "embedded-broker")]
use crate::support::start_embedded;
use crate::support::{
    Client, NEGATIVE, Seen, broker_acl, engine, granted, secured_mosquitto, write_scenario,
};

/// The broker a closed-room test runs on, with the `broker-acl` files.
enum Broker {
    Mosquitto(Mosquitto),
    #[cfg(feature = "embedded-broker")]
    Embedded(scip_orchestrator::broker::EmbeddedBroker),
}

impl Broker {
    fn port(&self) -> u16 {
        match self {
            Self::Mosquitto(m) => m.port,
            #[cfg(feature = "embedded-broker")]
            Self::Embedded(b) => b.settings().port,
        }
    }

    /// Whether refused subscriptions are answered with a failure code (the
    /// embedded broker's gate) rather than granted and left empty
    /// (Mosquitto 2.0.11).
    fn refuses_subscriptions(&self) -> bool {
        !matches!(self, Self::Mosquitto(_))
    }
}

/// The embedded broker with the password and ACL files of `exercise`, and no
/// other login.
#[cfg(feature = "embedded-broker")]
async fn secured_embedded(exercise: &str, acl_dir: &Path) -> Broker {
    use scip_orchestrator::broker::BrokerAuth;
    let auth = BrokerAuth::default()
        .with_password_file(&acl_dir.join(format!("{exercise}.passwd")))
        .unwrap()
        .with_acl_file(&acl_dir.join(format!("{exercise}.acl")))
        .unwrap();
    Broker::Embedded(start_embedded(auth).await)
}

pub async fn an_exercise_is_a_closed_room_on_mosquitto() {
    let ex = "sec-room";
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(&dir.path().join("scenario"), ex);
    let users = broker_acl(ex, &scenario, &dir.path().join("acl"));
    let broker = Broker::Mosquitto(secured_mosquitto(ex, &dir.path().join("acl"), None));
    closed_room(ex, &scenario, &users, &dir.path().join("acl"), broker).await;
}

/// The same files make the embedded broker's gate keep the same room.
#[cfg(feature = "embedded-broker")]
pub async fn an_exercise_is_a_closed_room_on_the_embedded_broker() {
    let ex = "emb-room";
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(&dir.path().join("scenario"), ex);
    let users = broker_acl(ex, &scenario, &dir.path().join("acl"));
    let broker = secured_embedded(ex, &dir.path().join("acl")).await;
    closed_room(ex, &scenario, &users, &dir.path().join("acl"), broker).await;
}

/// Teams blue and red, the controller and the engine (`run`, logged in as
/// the exercise's engine user) on `broker`: each reads and commands only
/// what the ACL gives it.
async fn closed_room(
    ex: &str,
    scenario: &Path,
    users: &HashMap<String, String>,
    acl_dir: &Path,
    broker: Broker,
) {
    let port = broker.port();
    let topic = |rest: &str| format!("/exercise/{ex}/{rest}");
    let login = |user: &str| (user.to_owned(), users[user].clone());
    let user = |role: &str| format!("{ex}-{role}");

    // Nobody gets in without a login, nor with a wrong one.
    assert!(Client::connect(port, None, None).await.is_err());
    assert!(
        Client::connect(port, Some((&user("blue"), "guess")), None)
            .await
            .is_err()
    );

    let (u, p) = login(&user("blue"));
    let mut blue = Client::connect(port, Some((&u, &p)), None).await.unwrap();
    let (u, p) = login(&user("controller"));
    let mut controller = Client::connect(port, Some((&u, &p)), None).await.unwrap();

    // The team may subscribe to its own feed and the clock. Mosquitto
    // 2.0.11 also grants (SUBACK QoS 1) a subscription to another team's
    // feed, the control topic or the whole exercise: its ACL's read rules
    // are checked per message, so none of those messages arrives (checked
    // below). Later versions may answer 0x80 instead; both keep the room
    // closed.
    assert!(granted(blue.subscribe(&topic("team/blue/feed")).await));
    assert!(granted(blue.subscribe(&topic("timer")).await));
    assert!(granted(blue.subscribe(&topic("status")).await));
    for filter in [
        topic("team/red/feed"),
        topic("control"),
        format!("/exercise/{ex}/#"),
    ] {
        let code = blue.subscribe(&filter).await;
        assert!(
            matches!(
                code,
                SubscribeReasonCode::Success(_) | SubscribeReasonCode::Failure
            ),
            "{filter}: {code:?}"
        );
        // The gate refuses what no readable topic matches, and grants the
        // whole exercise (of which the team then gets its own topics only).
        if broker.refuses_subscriptions() {
            let expected = !filter.ends_with("/feed") && !filter.ends_with("/control");
            assert_eq!(granted(code), expected, "{filter}: {code:?}");
        }
    }
    // The controller reads every feed, the control topic and the status.
    assert!(granted(controller.subscribe(&topic("team/+/feed")).await));
    assert!(granted(controller.subscribe(&topic("control")).await));
    assert!(granted(controller.subscribe(&topic("status")).await));
    assert!(granted(controller.subscribe(&topic("timer")).await));
    assert!(granted(controller.subscribe(&topic("monitoring")).await));

    let (u, _) = login(&user("engine"));
    let password_file = acl_dir.join(format!("{ex}.engine-password"));
    let _engine = engine(
        scenario,
        port,
        &[
            ("MQTT_USERNAME", &u),
            ("MQTT_PASSWORD_FILE", password_file.to_str().unwrap()),
        ],
    );

    // The team reads its own feed and the clock.
    let mut blue_saw = blue
        .wait_for(|t, m| t == topic("team/blue/feed") && m["id"] == "blue-1")
        .await;
    blue_saw.extend(
        blue.wait_for(|t, m| t == topic("timer") && m["status"] == "running")
            .await,
    );
    // Red's feed: the controller sees red-3 (the positive control); the
    // team, subscribed to it, sees no red inject at all.
    let controller_saw = controller
        .wait_for(|t, m| t == topic("team/red/feed") && m["id"] == "red-3")
        .await;
    for read in ["timer", "monitoring", "team/blue/feed"] {
        assert!(
            controller_saw
                .iter()
                .any(|Seen::Message(t, _)| *t == topic(read)),
            "the controller did not read {read}: {controller_saw:?}"
        );
    }
    blue_saw.extend(
        blue.collect(NEGATIVE)
            .await
            .into_iter()
            .map(|(t, m)| Seen::Message(t, m)),
    );
    let allowed = |t: &str| {
        [
            topic("team/blue/feed"),
            topic("timer"),
            topic("status"),
            topic("monitoring"),
        ]
        .contains(&t.to_owned())
    };
    assert!(
        blue_saw.iter().all(|Seen::Message(t, _)| allowed(t)),
        "the team saw a topic it may not read: {blue_saw:?}"
    );
    for read in ["timer", "status", "monitoring"] {
        assert!(
            blue_saw.iter().any(|Seen::Message(t, _)| *t == topic(read)),
            "the team did not read {read}: {blue_saw:?}"
        );
    }

    // A team cannot command the exercise: Mosquitto acknowledges its pause
    // (MQTT 3.1.1 has no way to refuse a publish) and drops it. The
    // controller's pause, sent after the team's was acknowledged, is the
    // first command anyone sees and the one that takes effect.
    blue.publish(
        &topic("control"),
        json!({"command": "pause", "reason": "blue team"}),
    )
    .await;
    controller
        .publish(
            &topic("control"),
            json!({"command": "pause", "reason": "controller"}),
        )
        .await;
    let seen = controller
        .wait_for(|t, m| {
            t == topic("status") && m["event"] == "state_changed" && m["status"] == "paused"
        })
        .await;
    let Some(Seen::Message(_, paused)) = seen.last() else {
        unreachable!()
    };
    assert_eq!(paused["reason"], "controller", "{paused}");
    let control: Vec<&Value> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Message(t, m) if *t == topic("control") => Some(m),
            _ => None,
        })
        .collect();
    assert!(
        control.iter().all(|m| m["reason"] != "blue team"),
        "the team's command reached the control topic: {control:?}"
    );
    assert!(
        seen.iter().all(|s| !matches!(s, Seen::Message(t, m)
            if *t == topic("status") && m["event"] == "command_refused")),
        "{seen:?}"
    );
    // The team sees the pause on the clock it may read, but neither the
    // command nor the engine's announcement on the control topic it
    // subscribed to (the announcement goes out before the timer's update).
    let seen = blue
        .wait_for(|t, m| t == topic("timer") && m["status"] == "paused")
        .await;
    assert!(
        seen.iter().all(|Seen::Message(t, _)| allowed(t)),
        "the team saw a topic it may not read: {seen:?}"
    );

    // A team answers as itself only: its answer posing as red is dropped,
    // its own reaches the engine, which announces it to the controller
    // (and not to the team, which may not read the others' answers).
    assert!(granted(controller.subscribe(&topic("responses")).await));
    blue.publish(
        &topic("team/red/responses"),
        json!({"inject_id": "red-1", "by": "blue posing as red"}),
    )
    .await;
    blue.publish(
        &topic("team/blue/responses"),
        json!({"inject_id": "blue-1", "by": "blue"}),
    )
    .await;
    let seen = controller
        .wait_for(|t, m| t == topic("responses") && m["team_id"] == "blue")
        .await;
    assert!(
        seen.iter().all(|s| !matches!(s, Seen::Message(t, m)
            if *t == topic("responses") && m["team_id"] == "red")),
        "an answer posing as another team got through: {seen:?}"
    );
    let seen = blue.collect(NEGATIVE).await;
    assert!(
        seen.iter().all(|(t, _)| allowed(t)),
        "the team saw a topic it may not read: {seen:?}"
    );
}
