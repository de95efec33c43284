//! Broker security: the engine's login and TLS, and the closed room that
//! `broker-acl` makes of an exercise, on a real Mosquitto and on the
//! embedded broker (whose gate enforces the same files).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, Incoming, MqttOptions, QoS, SubscribeReasonCode, TlsConfiguration,
    Transport,
};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use scip_orchestrator::testing::Mosquitto;

const BIN: &str = env!("CARGO_BIN_EXE_scip-orchestrator");
/// Long enough for anything that should happen; only reached on failure.
const WAIT: Duration = Duration::from_secs(15);
/// How long a negative check waits for a message that must not come, after
/// its positive control arrived.
const NEGATIVE: Duration = Duration::from_millis(1500);

/// A scenario with teams blue and red, one inject per second each for two
/// minutes, in `dir`.
fn write_scenario(dir: &Path, exercise: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("timelines")).unwrap();
    for team in ["blue", "red"] {
        let injects: Vec<Value> = (0..120)
            .map(|t| json!({"id": format!("{team}-{t}"), "time": t, "type": "news", "content": {"headline": format!("{team} {t}")}}))
            .collect();
        std::fs::write(
            dir.join(format!("timelines/{team}.json")),
            json!({ "injects": injects }).to_string(),
        )
        .unwrap();
    }
    let path = dir.join("scenario.json");
    std::fs::write(
        &path,
        json!({
            "id": exercise,
            "name": "Closed room",
            "duration_minutes": 10,
            "teams": [
                {"id": "blue", "timeline_file": "timelines/blue.json"},
                {"id": "red", "timeline_file": "timelines/red.json"}
            ]
        })
        .to_string(),
    )
    .unwrap();
    path
}

/// `broker-acl` through the binary; returns each user's password.
fn broker_acl(exercise: &str, scenario: &Path, out: &Path) -> HashMap<String, String> {
    let output = std::process::Command::new(BIN)
        .args(["broker-acl", exercise, "--scenario"])
        .arg(scenario)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("{exercise}-controller")),
        "{stdout}"
    );
    let credentials = out.join(format!("{exercise}.credentials"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&credentials)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "credentials file mode");
    }
    std::fs::read_to_string(credentials)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let parts: Vec<&str> = l.split(' ').collect();
            (parts[1].to_owned(), parts[2].to_owned())
        })
        .collect()
}

/// A throwaway CA and a server certificate for 127.0.0.1 and localhost:
/// `ca.pem`, `server.pem`, `server.key` in `dir`.
fn write_certificates(dir: &Path, name: &str) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}

/// Mosquitto with the password and ACL files of `exercise` in `acl_dir`,
/// over TLS when `certs` is given.
fn secured_mosquitto(exercise: &str, acl_dir: &Path, certs: Option<&Path>) -> Mosquitto {
    // Started as root, Mosquitto would read the files as user `mosquitto`,
    // which cannot enter the test's private folder.
    let mut conf = format!(
        "user root\nallow_anonymous false\npassword_file {}\nacl_file {}\n",
        acl_dir.join(format!("{exercise}.passwd")).display(),
        acl_dir.join(format!("{exercise}.acl")).display()
    );
    if let Some(dir) = certs {
        conf.push_str(&format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            dir.join("ca.pem").display(),
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        ));
    }
    Mosquitto::start_with(&conf)
}

/// The engine: `run` through the binary against 127.0.0.1:`port`, with
/// `env` (MQTT_USERNAME and so on); killed on drop.
fn engine(scenario: &Path, port: u16, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg(scenario)
        .env("MQTT_BROKER_HOST", "127.0.0.1")
        .env("MQTT_BROKER_PORT", port.to_string())
        .env("LOG_FORMAT", "text")
        .env_remove("MQTT_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// The engine's start-up error: it must exit, failing, within WAIT.
async fn start_up_error(child: Child) -> String {
    let out = timeout(WAIT, child.wait_with_output())
        .await
        .expect("the engine exits at start")
        .unwrap();
    assert!(!out.status.success(), "the engine started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A message a test client saw.
#[derive(Debug)]
enum Seen {
    Message(String, Value),
}

/// An MQTT client of a test: one login, no reconnects.
struct Client {
    client: AsyncClient,
    subacks: mpsc::UnboundedReceiver<Vec<SubscribeReasonCode>>,
    pubacks: mpsc::UnboundedReceiver<()>,
    messages: mpsc::UnboundedReceiver<(String, Value)>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects; Err with rumqttc's error when the broker refuses or closes.
    async fn connect(
        port: u16,
        login: Option<(&str, &str)>,
        tls: Option<&Path>,
    ) -> Result<Self, String> {
        let mut opts = MqttOptions::new(client_id(), "127.0.0.1", port);
        if let Some(ca) = tls {
            let config = scip_orchestrator::mqtt::tls_client_config(Some(ca)).unwrap();
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        }
        Self::connect_with(opts, login).await
    }

    /// Connects with the client id `id`.
    async fn connect_as(port: u16, id: &str, login: Option<(&str, &str)>) -> Result<Self, String> {
        Self::connect_with(MqttOptions::new(id, "127.0.0.1", port), login).await
    }

    /// Connects over WebSocket, as a browser client does.
    async fn connect_ws(port: u16, login: (&str, &str)) -> Result<Self, String> {
        let url = format!("ws://127.0.0.1:{port}/mqtt");
        let mut opts = MqttOptions::new(client_id(), url, port);
        opts.set_transport(Transport::Ws);
        Self::connect_with(opts, Some(login)).await
    }

    async fn connect_with(
        mut opts: MqttOptions,
        login: Option<(&str, &str)>,
    ) -> Result<Self, String> {
        opts.set_keep_alive(Duration::from_secs(5));
        if let Some((user, password)) = login {
            opts.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        match timeout(WAIT, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {}
            Ok(Ok(other)) => return Err(format!("unexpected {other:?}")),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no CONNACK".into()),
        }
        let (sub_tx, subacks) = mpsc::unbounded_channel();
        let (pub_tx, pubacks) = mpsc::unbounded_channel();
        let (msg_tx, messages) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                        let _ = sub_tx.send(ack.return_codes);
                    }
                    Ok(Event::Incoming(Incoming::PubAck(_))) => {
                        let _ = pub_tx.send(());
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let payload = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        let _ = msg_tx.send((p.topic, payload));
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        Ok(Self {
            client,
            subacks,
            pubacks,
            messages,
            task,
        })
    }

    /// Subscribes to one filter and returns the broker's answer.
    async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        let codes = timeout(WAIT, self.subacks.recv())
            .await
            .expect("SUBACK")
            .expect("connection alive");
        codes[0]
    }

    /// Subscribes to several filters in one SUBSCRIBE; the broker's answer
    /// per filter.
    async fn subscribe_many(&mut self, filters: &[&str]) -> Vec<SubscribeReasonCode> {
        self.client
            .subscribe_many(
                filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new((*f).to_owned(), QoS::AtLeastOnce)),
            )
            .await
            .unwrap();
        timeout(WAIT, self.subacks.recv())
            .await
            .expect("SUBACK")
            .expect("connection alive")
    }

    /// Publishes with QoS 1 and waits for the PUBACK.
    async fn publish(&mut self, topic: &str, payload: Value) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await
            .unwrap();
        timeout(WAIT, self.pubacks.recv())
            .await
            .expect("PUBACK")
            .expect("connection alive");
    }

    /// Messages until one matches `until` (returned with those before it).
    async fn wait_for(&mut self, mut until: impl FnMut(&str, &Value) -> bool) -> Vec<Seen> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            match timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.messages.recv(),
            )
            .await
            {
                Ok(Some((topic, payload))) => {
                    let done = until(&topic, &payload);
                    seen.push(Seen::Message(topic, payload));
                    if done {
                        return seen;
                    }
                }
                _ => panic!("the awaited message did not arrive within {WAIT:?}; saw {seen:?}"),
            }
        }
    }

    /// Every message that arrives within `within`.
    async fn collect(&mut self, within: Duration) -> Vec<(String, Value)> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while let Ok(Some(m)) = timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.messages.recv(),
        )
        .await
        {
            out.push(m);
        }
        out
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client id no other test client uses.
fn client_id() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "sec-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

fn granted(code: SubscribeReasonCode) -> bool {
    matches!(code, SubscribeReasonCode::Success(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_logs_in_over_tls_and_its_team_reads_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(&dir.path().join("scenario"), "sec-tls");
    let users = broker_acl("sec-tls", &scenario, &dir.path().join("acl"));
    let ca = write_certificates(&dir.path().join("certs"), "good");
    let broker = secured_mosquitto(
        "sec-tls",
        &dir.path().join("acl"),
        Some(&dir.path().join("certs")),
    );
    let mut blue = Client::connect(
        broker.port,
        Some(("sec-tls-blue", &users["sec-tls-blue"])),
        Some(&ca),
    )
    .await
    .unwrap();
    assert!(granted(
        blue.subscribe("/exercise/sec-tls/team/blue/feed").await
    ));

    let password_file = dir.path().join("acl/sec-tls.engine-password");
    let ca_arg = ca.to_str().unwrap();
    let pw_arg = password_file.to_str().unwrap();
    let _engine = engine(
        &scenario,
        broker.port,
        &[
            ("MQTT_TLS", "true"),
            ("MQTT_CA_FILE", ca_arg),
            ("MQTT_USERNAME", "sec-tls-engine"),
            ("MQTT_PASSWORD_FILE", pw_arg),
        ],
    );
    let seen = blue.wait_for(|topic, _| topic.ends_with("/feed")).await;
    let Some(Seen::Message(topic, inject)) = seen.last() else {
        unreachable!()
    };
    assert_eq!(topic, "/exercise/sec-tls/team/blue/feed");
    assert_eq!(inject["team_id"], "blue");
    assert_eq!(inject["id"], "blue-0");

    // A wrong password is a clear start-up error naming the settings.
    let err = start_up_error(engine(
        &scenario,
        broker.port,
        &[
            ("MQTT_TLS", "true"),
            ("MQTT_CA_FILE", ca_arg),
            ("MQTT_USERNAME", "sec-tls-engine"),
            ("MQTT_PASSWORD", "not-the-password"),
        ],
    ))
    .await;
    assert!(
        err.contains("refused the login \"sec-tls-engine\""),
        "{err}"
    );
    assert!(err.contains("MQTT_USERNAME"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");

    // So is a broker certificate from another CA.
    let other_ca = write_certificates(&dir.path().join("other"), "other");
    let err = start_up_error(engine(
        &scenario,
        broker.port,
        &[
            ("MQTT_TLS", "true"),
            ("MQTT_CA_FILE", other_ca.to_str().unwrap()),
            ("MQTT_USERNAME", "sec-tls-engine"),
            ("MQTT_PASSWORD_FILE", pw_arg),
        ],
    ))
    .await;
    assert!(err.contains("TLS with the MQTT broker"), "{err}");
    assert!(err.contains("MQTT_CA_FILE"), "{err}");

    // And a CA file that holds no certificate.
    let err = start_up_error(engine(
        &scenario,
        broker.port,
        &[
            ("MQTT_TLS", "true"),
            ("MQTT_CA_FILE", scenario.to_str().unwrap()),
            ("MQTT_USERNAME", "sec-tls-engine"),
            ("MQTT_PASSWORD_FILE", pw_arg),
        ],
    ))
    .await;
    assert!(err.contains("MQTT_CA_FILE"), "{err}");
    assert!(err.contains("no PEM certificate"), "{err}");
}

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

/// The embedded broker on free loopback ports, with `auth`.
#[cfg(feature = "embedded-broker")]
async fn start_embedded(
    auth: scip_orchestrator::broker::BrokerAuth,
) -> scip_orchestrator::broker::EmbeddedBroker {
    use scip_orchestrator::broker::BrokerOptions;
    scip_orchestrator::testing::embedded_broker(Some(auth), BrokerOptions::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exercise_is_a_closed_room_on_mosquitto() {
    let ex = "sec-room";
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(&dir.path().join("scenario"), ex);
    let users = broker_acl(ex, &scenario, &dir.path().join("acl"));
    let broker = Broker::Mosquitto(secured_mosquitto(ex, &dir.path().join("acl"), None));
    closed_room(ex, &scenario, &users, &dir.path().join("acl"), broker).await;
}

/// The same files make the embedded broker's gate keep the same room.
#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exercise_is_a_closed_room_on_the_embedded_broker() {
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
}

/// What the gate adds beyond the closed room: refusals with a reason, the
/// engine's own login unchecked, no session takeover across users, a
/// SUBSCRIBE of allowed and refused filters answered filter by filter, and
/// the same rules over WebSocket.
#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_gate_refuses_clearly_and_checks_every_login() {
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

/// `serve` with BROKER_PASSWORD_FILE and BROKER_ACL_FILE: the embedded
/// broker holds the teams to the `broker-acl` files while the engine (its
/// own login) runs the exercise; wrong settings are start-up errors.
#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_holds_teams_to_the_acl_file() {
    use scip_orchestrator::testing::on_free_ports_async;

    let ex = "sec-serve";
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(&dir.path().join("media/room"), ex);
    let acl_dir = dir.path().join("acl");
    let users = broker_acl(ex, &scenario, &acl_dir);
    let file = |suffix: &str| acl_dir.join(format!("{ex}.{suffix}"));
    let admin = "scip_sec-serve-admin-token";
    let serve = |[http, port, ws_port]: [u16; 3], env: &[(&str, &Path)]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(["--http-bind", &format!("127.0.0.1:{http}")])
            .args(["--broker-port", &port.to_string()])
            .args(["--broker-ws-port", &ws_port.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env(
                "API_TOKENS",
                format!("admin:{}", scip_orchestrator::access::tokens::hash(admin)),
            )
            .env("MEDIA_STORAGE_PATH", dir.path().join("media"))
            .env("MQTT_USERNAME", format!("{ex}-engine"))
            .env("MQTT_PASSWORD_FILE", file("engine-password"))
            .env_remove("MQTT_BROKER_HOST")
            .env_remove("MQTT_PASSWORD")
            .env_remove("BROKER_PASSWORD_FILE")
            .env_remove("BROKER_ACL_FILE")
            .env("LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    };

    // Ports drawn again should another process take one before serve binds it.
    let refused = async |env: &[(&str, &Path)]| {
        on_free_ports_async(async |ports| {
            let err = start_up_error(serve(ports, env)).await;
            (!err.contains(" is taken: ")).then_some(err)
        })
        .await
    };
    // An ACL without a password file, and a broken ACL, stop the start.
    let err = refused(&[("BROKER_ACL_FILE", &file("acl"))]).await;
    assert!(
        err.contains("BROKER_ACL_FILE needs BROKER_PASSWORD_FILE"),
        "{err}"
    );
    let broken = dir.path().join("broken.acl");
    std::fs::write(&broken, "user a\ntopic read /x\nallow everything\n").unwrap();
    let err = refused(&[
        ("BROKER_PASSWORD_FILE", &file("passwd")),
        ("BROKER_ACL_FILE", &broken),
    ])
    .await;
    assert!(err.contains("line 3 of"), "{err}");
    assert!(err.contains("unknown keyword \"allow\""), "{err}");

    let (served, mut log, [http, port, _]) = on_free_ports_async(async |ports| {
        let mut served = serve(
            ports,
            &[
                ("BROKER_PASSWORD_FILE", &file("passwd")),
                ("BROKER_ACL_FILE", &file("acl")),
            ],
        );
        // Its log lines, to wait on the SIGHUP reloads below.
        let mut log = {
            use tokio::io::AsyncBufReadExt;
            let (tx, rx) = mpsc::unbounded_channel::<String>();
            let mut lines = tokio::io::BufReader::new(served.stderr.take().unwrap()).lines();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = tx.send(line);
                }
            });
            rx
        };
        // Logged once every port is bound; the end instead when one was taken.
        let mut before = String::new();
        let listening = timeout(WAIT, async {
            while let Some(line) = log.recv().await {
                if line.contains("embedded MQTT broker listening") {
                    return true;
                }
                before.push_str(&line);
                before.push('\n');
            }
            false
        })
        .await
        .expect("serve starts its broker");
        match listening {
            true => Some((served, log, ports)),
            false if before.contains(" is taken: ") => None,
            false => panic!("serve ended at start:\n{before}"),
        }
    })
    .await;
    let api = format!("http://127.0.0.1:{http}");
    let deadline = Instant::now() + WAIT;
    while !reqwest::get(format!("{api}/readyz"))
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "serve not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let blue_user = format!("{ex}-blue");
    let mut blue = Client::connect(port, Some((&blue_user, &users[&blue_user])), None)
        .await
        .unwrap();
    assert!(granted(blue.subscribe(&format!("/exercise/{ex}/#")).await));
    assert!(!granted(
        blue.subscribe(&format!("/exercise/{ex}/control")).await
    ));
    let http_client = reqwest::Client::new();
    for (path, body) in [
        ("/api/v1/exercises".to_owned(), json!({"scenario": "room"})),
        (format!("/api/v1/exercises/{ex}/start"), json!({})),
    ] {
        let r = http_client
            .post(format!("{api}{path}"))
            .bearer_auth(admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
    // The team follows its own feed; red's injects, due at the same
    // seconds, never reach it.
    let seen = blue
        .wait_for(|t, m| t.ends_with("/team/blue/feed") && m["id"] == "blue-2")
        .await;
    assert!(
        seen.iter()
            .all(|Seen::Message(t, _)| !t.contains("/team/red/") && !t.ends_with("/control")),
        "{seen:?}"
    );

    // SIGHUP reads the files again. A broken ACL is logged and changes
    // nothing; a good one applies to new connections.
    let hangup = |child: &Child| {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &child.id().unwrap().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let good_acl = std::fs::read_to_string(file("acl")).unwrap();
    std::fs::write(file("acl"), format!("{good_acl}\nallow all\n")).unwrap();
    hangup(&served);
    let line = logged(&mut log, "broker files not reloaded").await;
    assert!(line.contains("unknown keyword"), "{line}");
    let mut again = Client::connect(port, Some((&blue_user, &users[&blue_user])), None)
        .await
        .unwrap();
    assert!(granted(
        again
            .subscribe(&format!("/exercise/{ex}/team/blue/feed"))
            .await
    ));
    // Blue's rules gone: its next connection may read nothing.
    let without_blue: String = good_acl
        .split("\n\n")
        .filter(|block| !block.contains(&format!("user {blue_user}\n")))
        .collect::<Vec<_>>()
        .join("\n\n");
    assert_ne!(without_blue, good_acl);
    std::fs::write(file("acl"), without_blue).unwrap();
    hangup(&served);
    logged(&mut log, "broker password and ACL files read again").await;
    let mut after = Client::connect(port, Some((&blue_user, &users[&blue_user])), None)
        .await
        .unwrap();
    assert!(!granted(
        after
            .subscribe(&format!("/exercise/{ex}/team/blue/feed"))
            .await
    ));
    // The controller's rules still hold.
    let controller = format!("{ex}-controller");
    let mut controller = Client::connect(port, Some((&controller, &users[&controller])), None)
        .await
        .unwrap();
    assert!(granted(
        controller
            .subscribe(&format!("/exercise/{ex}/team/blue/feed"))
            .await
    ));
}

/// The first line of `log` that contains `needle`; panics after WAIT.
async fn logged(log: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    timeout(WAIT, async {
        while let Some(line) = log.recv().await {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("the log ended before {needle:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in the log"))
}

/// Hostile bytes at the embedded broker's gate: each bad connection is
/// closed (with a CONNACK where MQTT has one for it) and the broker goes on
/// serving everyone else.
#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_closes_malformed_connections_and_serves_on() {
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
