//! The MQTT connection: one client per process, every publish matched to its
//! acknowledgement.
//!
//! Two tasks. The *poller* owns rumqttc's `EventLoop` and does nothing but poll
//! it (sleeping between reconnect attempts) and forward what it yields. The
//! *manager* owns the `AsyncClient`: it submits publishes, keeps a ticket per
//! publish and matches rumqttc's events to them (`tickets`: rumqttc has no
//! "publish and await PUBACK").
//!
//! While the connection is down nothing is submitted (messages wait in the
//! manager), acknowledgement deadlines are suspended, and on reconnect any
//! publish the broker's session lost is reported failed so the engine retries
//! it. The first connection starts a clean session (nothing stale from an
//! earlier process); reconnects resume it, so in-flight publishes are resent
//! by rumqttc rather than duplicated by us.
//!
//! The connection may log in (MQTT_USERNAME) and run over TLS (MQTT_TLS),
//! with rustls on the `ring` provider, given explicitly rather than
//! installed process-wide.
//!
//! Queues. What others send us (messages on subscribed topics, a control
//! topic under a flood) can outrun us, so it travels on bounded queues: from
//! the poller to the manager ([`RECEIVED_QUEUE`]) and from the manager to
//! each subscriber (its own bound); a message that finds its queue full is
//! dropped, counted in `scip_mqtt_received_dropped_total` and logged (at most
//! once every ten seconds). Everything else is bounded by what we send: the
//! poller's other events answer our own requests, acknowledgements answer our
//! own publishes (at most two events per attempt), and publishes come from
//! the exercises' schedules, their clocks and their rate-limited reports.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Incoming, Outgoing, QoS, Request};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tracing::{debug, info, warn};

use super::settings::MqttSettings;
use super::tickets::{AckEvent, AckTo, PublishError, Tickets, fail};

#[cfg(test)]
pub(crate) use played::{Asked, PlayedBroker};

#[cfg(test)]
mod played;

/// Requests rumqttc may hold before `publish` waits.
const CHANNEL_CAPACITY: usize = 16 * 1024;
/// Messages on subscribed topics between the poller and the manager.
pub const RECEIVED_QUEUE: usize = 1024;
/// Least time between two log lines about dropped messages.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Why a connection could not be made at start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach the MQTT broker at {host}:{port}: {reason}")]
    Unreachable {
        host: String,
        port: u16,
        reason: String,
    },
    #[error(
        "the MQTT broker at {host}:{port} refused the login {login}: {reason}; check MQTT_USERNAME and MQTT_PASSWORD / MQTT_PASSWORD_FILE"
    )]
    Refused {
        host: String,
        port: u16,
        /// The user name in quotes, or "without a user name".
        login: String,
        reason: String,
    },
    #[error(
        "TLS with the MQTT broker at {host}:{port} failed: {reason}; check MQTT_TLS and MQTT_CA_FILE (the broker's certificate must chain to that CA and name {host})"
    )]
    Tls {
        host: String,
        port: u16,
        reason: String,
    },
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    /// Report the outcome here; None for fire-and-forget messages (timer,
    /// status), which while disconnected keep only the newest per retained topic.
    pub ack: Option<AckTo>,
}

/// A message that arrived on a subscribed topic.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

enum Command {
    Publish(Message),
    Subscribe(String, mpsc::Sender<Received>),
    Close(Duration, oneshot::Sender<()>),
}

/// Handle to the process's MQTT connection. Cheap to clone.
#[derive(Clone)]
pub struct Mqtt {
    commands: mpsc::UnboundedSender<Command>,
    connected: watch::Receiver<bool>,
}

impl Mqtt {
    /// Connects, failing if the broker cannot be reached now. Any session an
    /// earlier process left under this client id is discarded first.
    pub async fn connect(settings: MqttSettings) -> Result<Self, ConnectError> {
        probe(&settings).await?;
        let settings_host = (settings.host.clone(), settings.port);
        let (client, mut eventloop) = AsyncClient::new(settings.options(false), CHANNEL_CAPACITY);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(5);
        eventloop.set_network_options(net);
        // Events answer our own requests; what others send has its own,
        // bounded queue (see the module's "Queues").
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (received_tx, received_rx) = mpsc::channel(RECEIVED_QUEUE);
        let poller = tokio::spawn(poll(eventloop, events_tx, received_tx));
        // Unbounded so that no exercise ever waits to publish; filled only by
        // our own schedules, clocks and rate-limited reports.
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (connected_tx, connected) = watch::channel(false);
        let delivery_timeout = settings.delivery_timeout;
        let manager = Manager {
            client,
            settings,
            connected: connected_tx,
            up: false,
            queue: VecDeque::new(),
            tickets: Tickets::new(delivery_timeout),
            subscriptions: Vec::new(),
            closing: None,
            dropped: Dropped::default(),
        };
        tokio::spawn(manager.run(events_rx, received_rx, commands_rx, poller));
        let mut up = connected.clone();
        let host = settings_host;
        match timeout(Duration::from_secs(10), up.wait_for(|&c| c)).await {
            Ok(Ok(_)) => Ok(Self {
                commands,
                connected,
            }),
            _ => Err(ConnectError::Unreachable {
                host: host.0,
                port: host.1,
                reason: "the broker accepted a probe connection but not the session".into(),
            }),
        }
    }

    /// Queues a message; its outcome, if asked for, arrives on `message.ack`.
    pub fn publish(&self, message: Message) {
        if let Err(mpsc::error::SendError(Command::Publish(m))) =
            self.commands.send(Command::Publish(message))
            && let Some(ack) = m.ack
        {
            let _ = ack.to.send(AckEvent::Failed {
                tag: ack.tag,
                error: PublishError::Closed,
            });
        }
    }

    /// Forwards every message on `topic` (a topic, or a filter with `+`) to `to`,
    /// resubscribing after every reconnect. A message that finds `to` full is
    /// dropped and counted.
    pub fn subscribe(&self, topic: impl Into<String>, to: mpsc::Sender<Received>) {
        let _ = self.commands.send(Command::Subscribe(topic.into(), to));
    }

    /// True while connected to the broker; watch it for changes.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// Waits up to `grace` for queued and unacknowledged publishes, then
    /// disconnects.
    pub async fn close(&self, grace: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(grace, tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// One clean-session connection and disconnect: checks the broker is there
/// and clears what an earlier process left in its session.
async fn probe(settings: &MqttSettings) -> Result<(), ConnectError> {
    let unreachable = |reason: String| ConnectError::Unreachable {
        host: settings.host.clone(),
        port: settings.port,
        reason,
    };
    let (client, mut eventloop) = AsyncClient::new(settings.options(true), 10);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_connection_timeout(5);
    eventloop.set_network_options(net);
    match eventloop.poll().await {
        Ok(Event::Incoming(Incoming::ConnAck(_))) => {}
        Ok(other) => return Err(unreachable(format!("unexpected {other:?}"))),
        Err(ConnectionError::ConnectionRefused(code)) => {
            return Err(ConnectError::Refused {
                host: settings.host.clone(),
                port: settings.port,
                login: match &settings.credentials {
                    Some(c) => format!("{:?}", c.username),
                    None => "without a user name".into(),
                },
                reason: format!("{code:?}"),
            });
        }
        Err(ConnectionError::Tls(e)) => {
            return Err(ConnectError::Tls {
                host: settings.host.clone(),
                port: settings.port,
                reason: e.to_string(),
            });
        }
        Err(e) => return Err(unreachable(e.to_string())),
    }
    let _ = client.disconnect().await;
    let _ = timeout(Duration::from_secs(2), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    Ok(())
}

enum Polled {
    Event(Event),
    /// The connection failed; `at_risk` fresh publishes were taken back from
    /// rumqttc's channel and are lost if the broker no longer has our session.
    Down {
        error: String,
        at_risk: usize,
    },
}

/// The one task that polls the event loop. It never publishes, and never
/// waits on the manager: messages on subscribed topics that find their queue
/// full are dropped (and counted) rather than stall acknowledgements.
async fn poll(
    mut eventloop: EventLoop,
    events: mpsc::UnboundedSender<Polled>,
    received: mpsc::Sender<Received>,
) {
    let mut dropped = Dropped::default();
    let mut backoff = BACKOFF_MIN;
    loop {
        let polled = match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let message = Received {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                    retain: p.retain,
                };
                match received.try_send(message) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(m)) => dropped.count(&m.topic),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
                continue;
            }
            Ok(event) => {
                if matches!(event, Event::Incoming(Incoming::ConnAck(_))) {
                    backoff = BACKOFF_MIN;
                }
                Polled::Event(event)
            }
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                let at_risk = eventloop
                    .pending
                    .iter()
                    .filter(|r| matches!(r, Request::Publish(p) if p.pkid == 0))
                    .count();
                if events
                    .send(Polled::Down {
                        error: e.to_string(),
                        at_risk,
                    })
                    .is_err()
                {
                    return;
                }
                sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        if events.send(polled).is_err() {
            return;
        }
    }
}

struct Manager {
    client: AsyncClient,
    settings: MqttSettings,
    connected: watch::Sender<bool>,
    up: bool,
    /// Messages waiting for the connection.
    queue: VecDeque<Message>,
    tickets: Tickets,
    subscriptions: Vec<(String, mpsc::Sender<Received>)>,
    closing: Option<(Instant, oneshot::Sender<()>)>,
    dropped: Dropped,
}

/// Messages dropped on full queues: counted at once, logged now and then.
#[derive(Default)]
struct Dropped {
    since_log: u64,
    logged: Option<Instant>,
}

impl Dropped {
    fn count(&mut self, topic: &str) {
        metrics::counter!("scip_mqtt_received_dropped_total").increment(1);
        self.since_log += 1;
        let now = Instant::now();
        if self.logged.is_none_or(|at| now >= at + DROP_LOG_EVERY) {
            warn!(
                topic,
                dropped = self.since_log,
                "messages on a subscribed topic arrive faster than they are handled: dropped"
            );
            self.since_log = 0;
            self.logged = Some(now);
        }
    }
}

impl Manager {
    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<Polled>,
        mut received: mpsc::Receiver<Received>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        poller: JoinHandle<()>,
    ) {
        loop {
            let deadline = self.tickets.next_deadline();
            let close_at = self.closing.as_ref().map(|(at, _)| *at);
            tokio::select! {
                biased;
                Some(polled) = events.recv() => self.on_polled(polled).await,
                Some(message) = received.recv() => self.deliver(message),
                Some(command) = commands.recv(), if self.closing.is_none() => match command {
                    Command::Publish(m) => self.publish(m).await,
                    Command::Subscribe(topic, to) => {
                        if self.up {
                            let _ = self.client.subscribe(&topic, QoS::AtLeastOnce).await;
                        }
                        self.subscriptions.push((topic, to));
                    }
                    Command::Close(grace, done) => self.closing = Some((Instant::now() + grace, done)),
                },
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.tickets.expire(Instant::now());
                }
                _ = sleep_until(close_at.unwrap_or_else(Instant::now)), if close_at.is_some() => break,
                else => break,
            }
            if self.closing.is_some() && self.is_drained() {
                break;
            }
        }
        if self.up {
            let _ = self.client.disconnect().await;
            let _ = timeout(Duration::from_secs(1), async {
                while let Some(p) = events.recv().await {
                    if matches!(p, Polled::Event(Event::Outgoing(Outgoing::Disconnect))) {
                        break;
                    }
                }
            })
            .await;
        }
        poller.abort();
        self.tickets.close();
        for m in self.queue.drain(..) {
            fail(m.ack, PublishError::Closed);
        }
        if let Some((_, done)) = self.closing.take() {
            let _ = done.send(());
        }
    }

    /// Hands a message to the subscribers of its topic; a full one misses it.
    fn deliver(&mut self, message: Received) {
        let dropped = &mut self.dropped;
        self.subscriptions.retain(|(topic, to)| {
            if !crate::mqtt::acl::topic_matches(topic, &message.topic) {
                return true;
            }
            match to.try_send(message.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped.count(topic);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    fn is_drained(&self) -> bool {
        self.queue.is_empty() && self.tickets.all_timed_out()
    }

    async fn publish(&mut self, m: Message) {
        if !self.up {
            self.enqueue(m);
            return;
        }
        let id = self.tickets.submit(m.ack, m.qos, Instant::now());
        if let Err(e) = self
            .client
            .publish(m.topic, m.qos, m.retain, m.payload)
            .await
        {
            // Only when the event loop is gone, i.e. we are shutting down.
            warn!(error = %e, "MQTT client closed");
            self.tickets.withdraw(id);
        }
    }

    /// While disconnected, fire-and-forget retained messages keep only the
    /// newest per topic; everything else waits in order.
    fn enqueue(&mut self, m: Message) {
        if m.ack.is_none()
            && m.retain
            && let Some(old) = self
                .queue
                .iter_mut()
                .find(|q| q.ack.is_none() && q.retain && q.topic == m.topic)
        {
            *old = m;
            return;
        }
        self.queue.push_back(m);
    }

    async fn on_polled(&mut self, polled: Polled) {
        match polled {
            Polled::Down { error, at_risk } => {
                if self.up {
                    warn!(%error, "MQTT connection lost; reconnecting");
                    self.up = false;
                    let _ = self.connected.send(false);
                } else {
                    debug!(%error, "MQTT reconnect failed");
                }
                // No deadline runs while the broker is away.
                self.tickets.suspend(at_risk);
            }
            Polled::Event(Event::Incoming(Incoming::ConnAck(ack))) => {
                self.on_connected(ack.session_present).await
            }
            Polled::Event(Event::Outgoing(Outgoing::Publish(pkid))) => {
                self.tickets.on_sent(pkid, Instant::now())
            }
            Polled::Event(Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                self.tickets.on_await_ack(pkid)
            }
            Polled::Event(Event::Incoming(Incoming::PubAck(ack))) => {
                self.tickets.on_puback(ack.pkid, Instant::now())
            }
            Polled::Event(_) => {}
        }
    }

    async fn on_connected(&mut self, session_present: bool) {
        info!(
            host = %self.settings.host,
            port = self.settings.port,
            session_present,
            "MQTT connected"
        );
        self.tickets.resume(session_present, Instant::now());
        for (topic, _) in &self.subscriptions {
            let _ = self.client.subscribe(topic, QoS::AtLeastOnce).await;
        }
        self.up = true;
        while let Some(m) = self.queue.pop_front() {
            self.publish(m).await;
        }
        let _ = self.connected.send(true);
    }
}
