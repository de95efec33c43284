//! What the security tests share: a scenario and its `broker-acl` files,
//! Mosquitto and the embedded broker secured with them, the engine through
//! the binary, and an MQTT client with one login.

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

pub const BIN: &str = env!("CARGO_BIN_EXE_scip-orchestrator");
/// Long enough for anything that should happen; only reached on failure.
pub const WAIT: Duration = Duration::from_secs(15);
/// How long a negative check waits for a message that must not come, after
/// its positive control arrived.
pub const NEGATIVE: Duration = Duration::from_millis(1500);

/// A scenario with teams blue and red, one inject per second each for two
/// minutes, in `dir`.
pub fn write_scenario(dir: &Path, exercise: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("timelines")).unwrap();
    for team in ["blue", "red"] {
        let injects: Vec<Value> = (0..120)
            .map(|t| json!({"id": format!("{team}-{t}"), "time": t, "type": "news",
                "content": {"headline": format!("{team} {t}")}, "response": {"kind": "acknowledge"}}))
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
pub fn broker_acl(exercise: &str, scenario: &Path, out: &Path) -> HashMap<String, String> {
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

/// Mosquitto with the password and ACL files of `exercise` in `acl_dir`,
/// over TLS when `certs` is given.
pub fn secured_mosquitto(exercise: &str, acl_dir: &Path, certs: Option<&Path>) -> Mosquitto {
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
pub fn engine(scenario: &Path, port: u16, env: &[(&str, &str)]) -> Child {
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
pub async fn start_up_error(child: Child) -> String {
    let out = timeout(WAIT, child.wait_with_output())
        .await
        .expect("the engine exits at start")
        .unwrap();
    assert!(!out.status.success(), "the engine started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A message a test client saw.
#[derive(Debug)]
pub enum Seen {
    Message(String, Value),
}

/// An MQTT client of a test: one login, no reconnects.
pub struct Client {
    client: AsyncClient,
    subacks: mpsc::UnboundedReceiver<Vec<SubscribeReasonCode>>,
    pubacks: mpsc::UnboundedReceiver<()>,
    messages: mpsc::UnboundedReceiver<(String, Value)>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects; Err with rumqttc's error when the broker refuses or closes.
    pub async fn connect(
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
    pub async fn connect_as(
        port: u16,
        id: &str,
        login: Option<(&str, &str)>,
    ) -> Result<Self, String> {
        Self::connect_with(MqttOptions::new(id, "127.0.0.1", port), login).await
    }

    /// Connects over WebSocket, as a browser client does.
    pub async fn connect_ws(port: u16, login: (&str, &str)) -> Result<Self, String> {
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
    pub async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
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
    pub async fn subscribe_many(&mut self, filters: &[&str]) -> Vec<SubscribeReasonCode> {
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
    pub async fn publish(&mut self, topic: &str, payload: Value) {
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
    pub async fn wait_for(&mut self, mut until: impl FnMut(&str, &Value) -> bool) -> Vec<Seen> {
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
    pub async fn collect(&mut self, within: Duration) -> Vec<(String, Value)> {
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

pub fn granted(code: SubscribeReasonCode) -> bool {
    matches!(code, SubscribeReasonCode::Success(_))
}

/// The embedded broker on free loopback ports, with `auth`.
#[cfg(feature = "embedded-broker")]
pub async fn start_embedded(
    auth: scip_orchestrator::broker::BrokerAuth,
) -> scip_orchestrator::broker::EmbeddedBroker {
    use scip_orchestrator::broker::BrokerOptions;
    scip_orchestrator::testing::embedded_broker(Some(auth), BrokerOptions::default()).await
}
