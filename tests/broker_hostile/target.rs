//! A broker under test, Mosquitto or the embedded one, with a long-lived
//! client of it as the engine is, and the check that it still serves.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio::sync::mpsc;
use tokio::time::timeout;

use scip_orchestrator::testing::{Mosquitto, Subscriber};

use crate::support::WAIT;
#[cfg(feature = "embedded-broker")]
use crate::support::embedded;

/// A broker under test and a long-lived client of it.
pub struct Target {
    pub name: &'static str,
    pub port: u16,
    /// Embedded only: the keep-alive the gate gives rumqttd.
    pub upstream_keep_alive: Option<Duration>,
    pub engine: LongLived,
    checks: u32,
    _broker: Broker,
}

enum Broker {
    Mosquitto(#[allow(dead_code)] Mosquitto),
    #[cfg(feature = "embedded-broker")]
    Embedded(scip_orchestrator::broker::EmbeddedBroker),
}

impl Target {
    pub async fn mosquitto() -> Self {
        let mosquitto = Mosquitto::start();
        let port = mosquitto.port;
        Self {
            name: "mosquitto",
            port,
            upstream_keep_alive: None,
            engine: LongLived::connect(port, None).await,
            checks: 0,
            _broker: Broker::Mosquitto(mosquitto),
        }
    }

    #[cfg(feature = "embedded-broker")]
    pub async fn embedded() -> Self {
        use scip_orchestrator::broker::BrokerOptions;
        let upstream_keep_alive = Duration::from_secs(2);
        let (broker, settings) = embedded(BrokerOptions {
            connect_timeout: Duration::from_secs(2),
            upstream_keep_alive,
            probe_every: Duration::from_millis(200),
            ..BrokerOptions::default()
        })
        .await;
        // Where the engine connects: rumqttd itself, with its login.
        let login = broker.engine_login().clone();
        let engine = LongLived::connect(
            broker.engine_addr().port(),
            Some((login.username.clone(), login.password.expose().to_owned())),
        )
        .await;
        Self {
            name: "embedded",
            port: settings.port,
            upstream_keep_alive: Some(upstream_keep_alive),
            engine,
            checks: 0,
            _broker: Broker::Embedded(broker),
        }
    }

    /// The broker still serves after `case`: the long-lived client's publish
    /// is acknowledged, and a fresh client connects, subscribes and gets a
    /// message.
    pub async fn serves_after(&mut self, case: &str) {
        self.checks += 1;
        let topic = format!("/check/{}", self.checks);
        self.engine.publish_acked(&topic).await.unwrap_or_else(|e| {
            panic!(
                "{}: after {case}, the long-lived client's publish failed: {e}",
                self.name
            )
        });
        let mut fresh = timeout(WAIT, Subscriber::connect(self.port, &topic))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: after {case}, a fresh client cannot subscribe",
                    self.name
                )
            });
        fresh
            .client
            .publish(&topic, QoS::AtLeastOnce, false, b"{\"ok\":true}".to_vec())
            .await
            .unwrap();
        let seen = fresh.next(WAIT).await;
        assert!(
            seen.is_some_and(|m| m.topic == topic),
            "{}: after {case}, a fresh client gets no message",
            self.name
        );
        #[cfg(feature = "embedded-broker")]
        if let Broker::Embedded(broker) = &self._broker {
            assert_eq!(
                *broker.health().borrow(),
                Ok(()),
                "{}: after {case}, the broker reports itself unhealthy",
                self.name
            );
        }
    }
}

/// A client that stays connected through the whole suite, as the engine
/// does, publishing QoS 1 and waiting for each PUBACK.
pub struct LongLived {
    pub id: String,
    pub client: AsyncClient,
    acks: mpsc::UnboundedReceiver<u16>,
    errors: mpsc::UnboundedReceiver<String>,
}

impl LongLived {
    async fn connect(port: u16, login: Option<(String, String)>) -> Self {
        let id = format!("long-lived-{port}");
        let mut opts = MqttOptions::new(&id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(8 << 20, 8 << 20);
        if let Some((user, password)) = login {
            opts.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (error_tx, errors) = mpsc::unbounded_channel();
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                        let _ = ack_tx.send(ack.pkid);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = error_tx.send(e.to_string());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        timeout(WAIT, connected)
            .await
            .expect("the long-lived client connects")
            .unwrap();
        Self {
            id,
            client,
            acks,
            errors,
        }
    }

    /// Publishes QoS 1 and waits for its PUBACK; any connection error seen
    /// since the last call fails it.
    pub async fn publish_acked(&mut self, topic: &str) -> Result<(), String> {
        if let Ok(e) = self.errors.try_recv() {
            return Err(format!("its connection broke: {e}"));
        }
        self.client
            .publish(topic, QoS::AtLeastOnce, false, b"{}".to_vec())
            .await
            .map_err(|e| e.to_string())?;
        match timeout(WAIT, self.acks.recv()).await {
            Ok(Some(_)) => {}
            _ => return Err("no PUBACK".into()),
        }
        match self.errors.try_recv() {
            Ok(e) => Err(format!("its connection broke: {e}")),
            Err(_) => Ok(()),
        }
    }
}
