//! Support for tests and benchmarks (feature `testing`): a private
//! Mosquitto, free ports and starts that draw again when one was taken
//! meanwhile, a recording subscriber, a proxy whose link can be cut. Not part
//! of the product's interface.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Mosquitto process of our own, killed on drop. Listens on 127.0.0.1 with
/// `set_tcp_nodelay true` (otherwise Nagle's algorithm holds back messages to
/// subscribers by about 40 ms) and no persistence.
pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Configuration lines for the listener and security.
    security: String,
}

impl Mosquitto {
    /// Starts one on a free port. Panics with how to install Mosquitto when it
    /// is missing: tests that need a broker fail rather than skip.
    pub fn start() -> Self {
        Self::start_with("allow_anonymous true")
    }

    /// Starts one whose listener has `security` instead of `allow_anonymous
    /// true`: lines such as `allow_anonymous false`, `password_file`,
    /// `acl_file`, `cafile`/`certfile`/`keyfile` (absolute paths). It logs
    /// to `mosquitto.log` in [`Mosquitto::dir`].
    pub fn start_with(security: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut m = Self {
            port: 0,
            child: None,
            dir,
            security: security.to_owned(),
        };
        // The port is free when drawn, but another process may take it before
        // Mosquitto binds it: then another one.
        for _ in 0..ATTEMPTS {
            m.port = free_port();
            if m.spawn() == Spawned::Running {
                return m;
            }
        }
        panic!("mosquitto found {ATTEMPTS} free ports taken in turn");
    }

    /// Its private folder (configuration, log).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Kills the broker (as a crash would); `restart` brings it back on the same port.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        // The port is the one clients know: while another process holds it
        // for a moment, start again on the same one.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.spawn() == Spawned::PortTaken {
            assert!(
                Instant::now() < deadline,
                "port {} stayed taken for 10 s after mosquitto stopped",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the process on `self.port` and waits until it says it runs,
    /// which it does once it listens (its log on stderr, read by a thread of
    /// its own so that the pipe never fills).
    fn spawn(&mut self) -> Spawned {
        let conf = self.dir.path().join("mosquitto.conf");
        let mut f = std::fs::File::create(&conf).expect("write mosquitto.conf");
        writeln!(
            f,
            "listener {} 127.0.0.1\n{}\nset_tcp_nodelay true\npersistence false\nmax_queued_messages 100000\nmax_inflight_messages 0\nlog_dest stderr",
            self.port, self.security
        )
        .expect("write mosquitto.conf");
        if self.security != "allow_anonymous true" {
            writeln!(
                f,
                "log_dest file {}\nlog_type all",
                self.dir.path().join("mosquitto.log").display()
            )
            .expect("write mosquitto.conf");
        }
        let binary = mosquitto_binary();
        let mut child = Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start mosquitto ({}): {e}; install it with `apt-get install -y mosquitto`",
                    binary.display()
                )
            });
        let mut log = Lines::read(child.stderr.take().expect("piped stderr"));
        let waited = log.wait_for(
            &[" running", "Address already in use"],
            Duration::from_secs(10),
        );
        match waited {
            Some(line) if line.ends_with(" running") => {
                self.child = Some(child);
                Spawned::Running
            }
            Some(_) => {
                let _ = child.wait();
                Spawned::PortTaken
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mosquitto did not run on port {} within 10 s; it said:\n{}",
                    self.port,
                    log.seen().join("\n")
                )
            }
        }
    }
}

/// How a start of Mosquitto ended.
#[derive(Debug, PartialEq, Eq)]
enum Spawned {
    Running,
    PortTaken,
}

/// How many ports a start draws before it gives up.
const ATTEMPTS: usize = 20;

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn mosquitto_binary() -> PathBuf {
    for candidate in [
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/bin/mosquitto",
    ] {
        let p = PathBuf::from(candidate);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("mosquitto")
}

/// A port nobody listens on right now. Another process may take it before
/// the caller's process binds it: start through [`on_free_ports`] (or retry
/// as it does), and use [`refused_port`] for a port that must stay closed.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct ports nobody listens on right now.
pub fn free_ports<const N: usize>() -> [u16; N] {
    // Held together while drawn, so that no two are the same.
    let held: [TcpListener; N] =
        std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"));
    held.map(|l| l.local_addr().expect("a bound address").port())
}

/// Runs `start` on `N` free ports, on others while it answers None (one of
/// them was taken before it could bind it).
pub fn on_free_ports<T, const N: usize>(mut start: impl FnMut([u16; N]) -> Option<T>) -> T {
    for _ in 0..ATTEMPTS {
        if let Some(started) = start(free_ports()) {
            return started;
        }
    }
    panic!("{ATTEMPTS} draws of free ports were all taken before they could be bound");
}

/// [`on_free_ports`] for a start that awaits.
pub async fn on_free_ports_async<T, const N: usize>(
    mut start: impl AsyncFnMut([u16; N]) -> Option<T>,
) -> T {
    for _ in 0..ATTEMPTS {
        if let Some(started) = start(free_ports()).await {
            return started;
        }
    }
    panic!("{ATTEMPTS} draws of free ports were all taken before they could be bound");
}

/// A port held bound but never listening, so connecting to it is refused
/// for as long as the socket lives, and nobody else can take it.
pub fn refused_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a port");
    let port = socket.local_addr().expect("a bound address").port();
    (socket, port)
}

/// The embedded broker on free loopback ports (drawn again should another
/// process take one first), with `auth` (None: open to anyone) and `options`.
#[cfg(feature = "embedded-broker")]
pub async fn embedded_broker(
    auth: Option<crate::broker::BrokerAuth>,
    options: crate::broker::BrokerOptions,
) -> crate::broker::EmbeddedBroker {
    use crate::broker::{BrokerError, BrokerSettings, EmbeddedBroker};
    on_free_ports_async(async |[port, ws_port]| {
        let settings = BrokerSettings {
            bind: std::net::Ipv4Addr::LOCALHOST.into(),
            port,
            ws_port,
        };
        match EmbeddedBroker::start_with(settings, auth.clone(), options.clone()).await {
            Err(BrokerError::PortTaken { .. }) => None,
            started => Some(started.expect("the embedded broker starts")),
        }
    })
    .await
}

/// The lines a child process writes on a pipe, read by a thread of their
/// own (the pipe never fills, the process never blocks on it).
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    pub fn read(pipe: impl std::io::Read + Send + 'static) -> Self {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(pipe).lines().map_while(Result::ok);
            for line in lines.by_ref() {
                if tx.send(line).is_err() {
                    break;
                }
            }
            // Nobody reads any more: drain until the process closes the pipe.
            lines.for_each(drop);
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line from now on containing one of `needles`; None when the
    /// pipe closed first (the process ended) or after `within`.
    pub fn wait_for(&mut self, needles: &[&str], within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.rx.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if needles.iter().any(|n| line.contains(n)) {
                return Some(line);
            }
        }
    }

    /// Every line read so far, and the rest until the pipe closes (the
    /// process ended) or `within` passed.
    pub fn until_closed(&mut self, within: Duration) -> &[String] {
        let deadline = Instant::now() + within;
        while let Ok(line) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Every line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }
}

/// One message as a test subscriber saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub payload: serde_json::Value,
    pub raw: Vec<u8>,
    pub retain: bool,
    pub at: tokio::time::Instant,
}

/// An MQTT client of its own that records every message on `filter`,
/// reconnecting quickly (with a persistent session) if the broker goes away.
pub struct Subscriber {
    pub client: rumqttc::AsyncClient,
    rx: tokio::sync::mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connects and subscribes, returning once the broker confirmed the subscription.
    pub async fn connect(port: u16, filter: &str) -> Self {
        use rumqttc::{Event, Incoming, MqttOptions, QoS};
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!(
            "test-sub-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(8 << 20, 8 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 1000);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let filter = filter.to_owned();
        let sub_client = client.clone();
        let task = tokio::spawn(async move {
            let mut subscribed = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        let c = sub_client.clone();
                        let f = filter.clone();
                        tokio::spawn(async move {
                            let _ = c.subscribe(f, QoS::AtLeastOnce).await;
                        });
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(s) = subscribed.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let at = tokio::time::Instant::now();
                        let payload =
                            serde_json::from_slice(&p.payload).unwrap_or(serde_json::Value::Null);
                        let _ = tx.send(Seen {
                            topic: p.topic,
                            payload,
                            raw: p.payload.to_vec(),
                            retain: p.retain,
                            at,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .expect("subscription confirmed within 10 s")
            .expect("subscriber task alive");
        Self { client, rx, task }
    }

    /// The next message, or None after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Seen> {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Messages until one matches `until` (included); panics after `within`.
    pub async fn collect_until(
        &mut self,
        within: Duration,
        mut until: impl FnMut(&Seen) -> bool,
    ) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(m) => {
                    let done = until(&m);
                    out.push(m);
                    if done {
                        return out;
                    }
                }
                None => panic!(
                    "the awaited message did not arrive within {within:?}; saw {} messages, last: {:?}",
                    out.len(),
                    out.last().map(|m| (&m.topic, &m.payload))
                ),
            }
        }
    }

    /// Everything received so far without waiting.
    pub fn drain(&mut self) -> Vec<Seen> {
        let mut out = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            out.push(m);
        }
        out
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP proxy in front of a broker whose link can be cut, stalled or slowed.
/// Cut: every connection dropped and new ones refused, so the broker keeps
/// the client's session as in a real network outage. Stalled: connections
/// stay open but nothing moves in either direction, as with a hung broker.
/// Slowed: what the broker sends (acknowledgements, deliveries) arrives that
/// much later, as over a long link.
pub struct Proxy {
    pub port: u16,
    up: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    stalled: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    delay: std::sync::Arc<tokio::sync::watch::Sender<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target_port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let up = std::sync::Arc::new(tokio::sync::watch::channel(true).0);
        let stalled = std::sync::Arc::new(tokio::sync::watch::channel(false).0);
        let delay = std::sync::Arc::new(tokio::sync::watch::channel(Duration::ZERO).0);
        let (state, stall, slow) = (up.clone(), stalled.clone(), delay.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                if !*state.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut down = state.subscribe();
                let (s1, s2) = (stall.subscribe(), stall.subscribe());
                // Slowed links only: another hop would make the rest late.
                let late = (!slow.borrow().is_zero()).then(|| slow.subscribe());
                tokio::spawn(async move {
                    let Ok(outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::select! {
                        _ = pump(ri, wo, s1, None) => {}
                        _ = pump(ro, wi, s2, late) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self {
            port,
            up,
            stalled,
            delay,
            task,
        }
    }

    /// Holds everything the broker sends for `delay` before passing it on,
    /// on connections made from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay.send_replace(delay);
    }

    /// Cuts (false) or restores (true) the link.
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    /// Holds (true) or releases (false) all traffic without closing anything.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }
}

/// Copies bytes one way, holding them while `stalled`; with `delay` given,
/// each chunk also waits that long after it was read.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: tokio::sync::watch::Receiver<bool>,
    delay: Option<tokio::sync::watch::Receiver<Duration>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    let Some(delay) = delay else {
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if stalled.wait_for(|s| !*s).await.is_err() {
                return;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Reading goes on while chunks wait out the delay: the link is slowed,
    // not narrowed.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(1024);
    let read = async move {
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let due = tokio::time::Instant::now() + *delay.borrow();
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let write = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if stalled.wait_for(|s| !*s).await.is_err() {
                return;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(read, write);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fresh database on the machine's PostgreSQL (`postgres@127.0.0.1:5432`,
/// trust auth), named `<prefix>_<pid>_<n>`; [`PgDatabase::drop`] removes it.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

/// Where test databases are created from.
pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

impl PgDatabase {
    pub async fn create(prefix: &str) -> Self {
        use sqlx::Connection;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let mut admin = sqlx::PgConnection::connect(PG_ADMIN)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is needed at {PG_ADMIN}: {e}; start it with \
                     `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
                )
            });
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE");
        Self {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }

    pub async fn drop(self) {
        use sqlx::Connection;
        if let Ok(mut admin) = sqlx::PgConnection::connect(PG_ADMIN).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await;
        }
    }
}
