//! What the embedded broker's gate adds: refusals with a reason, logins
//! checked on every connection and over WebSocket, and malformed
//! connections closed while it serves on.

use serde_json::json;
use tokio::time::timeout;

use crate::support::{Client, Seen, WAIT, granted, start_embedded};

/// What the gate adds beyond the closed room: refusals with a reason, the
/// engine's own login unchecked, no session takeover across users, a
/// SUBSCRIBE of allowed and refused filters answered filter by filter, and
/// the same rules over WebSocket.
pub async fn the_embedded_broker_gate_refuses_clearly_and_checks_every_login() {
    use scip_orchestrator::broker::BrokerAuth;
    use scip_orchestrator::domain::{ExerciseId, TeamId};
    use scip_orchestrator::mqtt::Password;
    use scip_orchestrator::mqtt::broker_files;

    let dir = tempfile::tempdir().unwrap();
    let plan = broker_files::plan(
        &ExerciseId::parse("emb").unwrap(),
        &[
            TeamId::parse("blue").unwrap(),
            TeamId::parse("red").unwrap(),
        ],
        None,
    )
    .unwrap();
    let files = plan.write(dir.path(), false).unwrap();
    let password = |user: &str| {
        plan.users
            .iter()
            .find(|u| u.username == user)
            .unwrap()
            .password
            .expose()
            .to_owned()
    };
    let auth = BrokerAuth::default()
        .with_user("engine", Password::new("engine-secret"))
        .with_password_file(&files.passwd)
        .unwrap()
        .with_acl_file(&files.acl)
        .unwrap();
    let broker = start_embedded(auth).await;
    let port = broker.settings().port;

    // Refusals come with a CONNACK saying why.
    let anonymous = Client::connect(port, None, None).await.err().unwrap();
    assert!(anonymous.contains("NotAuthorized"), "{anonymous}");
    let wrong = Client::connect(port, Some(("emb-blue", "guess")), None)
        .await
        .err()
        .unwrap();
    assert!(wrong.contains("BadUserNamePassword"), "{wrong}");
    // rumqttd itself, where the engine connects, takes no team login.
    let direct = broker.engine_addr().port();
    assert!(
        Client::connect(direct, Some(("emb-blue", &password("emb-blue"))), None)
            .await
            .is_err()
    );

    // The engine's login (MQTT_USERNAME) is not held to the ACL, through
    // the gate or directly.
    let mut engine = Client::connect_as(port, "engine-1", Some(("engine", "engine-secret")))
        .await
        .unwrap();
    assert!(granted(engine.subscribe("/exercise/emb/control").await));
    let mut direct_engine = Client::connect(direct, Some(("engine", "engine-secret")), None)
        .await
        .unwrap();
    assert!(granted(direct_engine.subscribe("/elsewhere/#").await));

    // A team client under the engine's client id gets a session of its own:
    // the engine's connection stays up and keeps receiving.
    let mut blue = Client::connect_as(port, "engine-1", Some(("emb-blue", &password("emb-blue"))))
        .await
        .unwrap();
    direct_engine
        .publish("/exercise/emb/control", json!({"command": "pause", "n": 1}))
        .await;
    engine
        .wait_for(|t, m| t == "/exercise/emb/control" && m["n"] == 1)
        .await;

    // One SUBSCRIBE with a filter the team may read and two it may not is
    // answered filter by filter.
    let codes = blue
        .subscribe_many(&[
            "/exercise/emb/team/red/feed",
            "/exercise/emb/team/blue/feed",
            "/exercise/emb/control",
        ])
        .await;
    assert_eq!(
        codes.iter().map(|c| granted(*c)).collect::<Vec<_>>(),
        [false, true, false],
        "{codes:?}"
    );
    // A refused publish is acknowledged (MQTT 3.1.1 cannot refuse one) and
    // dropped: the engine sees only the second message, sent after it.
    blue.publish("/exercise/emb/control", json!({"command": "stop", "n": 2}))
        .await;
    direct_engine
        .publish("/exercise/emb/team/red/feed", json!({"id": "red-1"}))
        .await;
    direct_engine
        .publish("/exercise/emb/team/blue/feed", json!({"id": "blue-1"}))
        .await;
    direct_engine
        .publish(
            "/exercise/emb/control",
            json!({"command": "resume", "n": 3}),
        )
        .await;
    let seen = engine
        .wait_for(|t, m| t == "/exercise/emb/control" && m["n"] == 3)
        .await;
    assert!(
        seen.iter().all(|Seen::Message(_, m)| m["n"] != 2),
        "the team's command went through: {seen:?}"
    );
    let seen = blue.wait_for(|_, m| m["id"] == "blue-1").await;
    assert_eq!(seen.len(), 1, "the team saw red's feed: {seen:?}");

    // Over WebSocket the same rules hold.
    let mut ws_blue = Client::connect_ws(
        broker.settings().ws_port,
        ("emb-blue", &password("emb-blue")),
    )
    .await
    .unwrap();
    assert!(!granted(
        ws_blue.subscribe("/exercise/emb/team/red/feed").await
    ));
    assert!(granted(ws_blue.subscribe("/exercise/emb/#").await));
    direct_engine
        .publish("/exercise/emb/team/red/feed", json!({"id": "red-2"}))
        .await;
    direct_engine
        .publish("/exercise/emb/timer", json!({"status": "running"}))
        .await;
    let seen = ws_blue.wait_for(|t, _| t == "/exercise/emb/timer").await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let ws_wrong = Client::connect_ws(broker.settings().ws_port, ("emb-red", "guess"))
        .await
        .err()
        .unwrap();
    assert!(ws_wrong.contains("BadUserNamePassword"), "{ws_wrong}");
}

/// Hostile bytes at the embedded broker's gate: each bad connection is
/// closed (with a CONNACK where MQTT has one for it) and the broker goes on
/// serving everyone else.
pub async fn the_gate_closes_malformed_connections_and_serves_on() {
    use rumqttc::mqttbytes::v4::{Connect, Login, Packet};
    use scip_orchestrator::broker::BrokerAuth;
    use scip_orchestrator::mqtt::Password;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("x.acl");
    std::fs::write(&acl, "user t\ntopic read /x/#\n").unwrap();
    let passwd = dir.path().join("x.passwd");
    let hash = scip_orchestrator::mqtt::broker_files::hash_password("t-pw").unwrap();
    std::fs::write(&passwd, format!("t:{hash}\n")).unwrap();
    let auth = BrokerAuth::default()
        .with_user("engine", Password::new("engine-pw"))
        .with_password_file(&passwd)
        .unwrap()
        .with_acl_file(&acl)
        .unwrap();
    let broker = start_embedded(auth).await;
    let port = broker.settings().port;
    let connect = |id: &str| {
        let mut c = Connect::new(id);
        c.login = Some(Login::new("t", "t-pw"));
        let mut out = bytes::BytesMut::new();
        Packet::Connect(c).write(&mut out, usize::MAX).unwrap();
        out.to_vec()
    };
    // Everything the gate answers before it closes the connection.
    let answer = |bytes: Vec<u8>| async move {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let mut got = Vec::new();
        timeout(WAIT, stream.read_to_end(&mut got))
            .await
            .expect("the gate closes the connection")
            .ok();
        got
    };

    // Not MQTT at all.
    assert_eq!(answer(b"GET / HTTP/1.1\r\n\r\n".to_vec()).await, b"");
    // A remaining length over the 8 MiB limit (about 256 MiB).
    assert_eq!(answer(vec![0x10, 0xff, 0xff, 0xff, 0x7f]).await, b"");
    // MQTT 3.1 ("MQIsdp", level 3): CONNACK 1, unacceptable protocol version.
    let mut v31 = connect("old");
    let level = v31.windows(4).position(|w| w == b"MQTT").unwrap() + 4;
    assert_eq!(v31[level], 4);
    v31[level] = 3;
    assert_eq!(answer(v31).await, [0x20, 0x02, 0x00, 0x01]);
    // A second CONNECT: the first is accepted (CONNACK 0), then the
    // connection is closed.
    let mut twice = connect("twice");
    twice.extend(connect("twice"));
    assert_eq!(answer(twice).await, [0x20, 0x02, 0x00, 0x00]);
    // A PUBLISH before any CONNECT.
    assert_eq!(answer(vec![0x30, 0x03, 0x00, 0x01, b'x']).await, b"");
    // A SUBSCRIBE whose filter claims more bytes than the packet has.
    let mut short = connect("short");
    short.extend([0x82, 0x05, 0x00, 0x01, 0x00, 0x09, b'/']);
    assert_eq!(answer(short).await, [0x20, 0x02, 0x00, 0x00]);

    // And the broker serves on.
    let mut client = Client::connect(port, Some(("t", "t-pw")), None)
        .await
        .unwrap();
    assert!(granted(client.subscribe("/x/y").await));
    let mut engine = Client::connect(port, Some(("engine", "engine-pw")), None)
        .await
        .unwrap();
    engine.publish("/x/y", json!({"n": 1})).await;
    client.wait_for(|t, m| t == "/x/y" && m["n"] == 1).await;
}
