//! What the embedded broker costs a client, side by side in one run with a
//! private Mosquitto: PUBACK latency of QoS 1 publishes, and delivery
//! latency (publish to a subscriber's receipt), through the gate (the port
//! clients use) and at rumqttd directly (where the engine connects), open
//! and with logins and an ACL (a user held to `/bench/#`, every packet
//! checked).
//!
//! `cargo bench --bench broker_gate` (BENCH_MESSAGES, default 2000, one
//! every 2 ms, 200-byte payloads). Ratios are to Mosquitto's figure of the
//! same run.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, QoS};
use scip_orchestrator::broker::{BrokerAuth, BrokerOptions};
use scip_orchestrator::mqtt::Password;
use scip_orchestrator::testing::{Mosquitto, embedded_broker};

type Login<'a> = Option<(&'a str, &'a str)>;

fn client(id: &str, port: u16, login: Login) -> (AsyncClient, EventLoop) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    if let Some((user, password)) = login {
        opts.set_credentials(user, password);
    }
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// Per publish, in ms, sorted: its PUBACK, and its arrival at a subscriber
/// (who connects with `subscriber_login` through `subscriber_port`).
async fn latencies(
    port: u16,
    login: Login<'_>,
    subscriber_port: u16,
    subscriber_login: Login<'_>,
    count: usize,
) -> (Vec<f64>, Vec<f64>) {
    let topic = format!("/bench/{port}-{subscriber_port}");
    let (sub, mut sub_loop) = client(
        &format!("bench-sub-{port}"),
        subscriber_port,
        subscriber_login,
    );
    sub.subscribe(&topic, QoS::AtMostOnce).await.unwrap();
    loop {
        if let Event::Incoming(Incoming::SubAck(_)) = sub_loop.poll().await.expect("subscribed") {
            break;
        }
    }
    let arrivals = tokio::spawn(async move {
        let mut at = Vec::with_capacity(count);
        while at.len() < count {
            if let Event::Incoming(Incoming::Publish(p)) = sub_loop.poll().await.expect("receives")
            {
                let sent = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                at.push((sent, Instant::now()));
            }
        }
        at
    });
    let (publisher, mut eventloop) = client(&format!("bench-{port}"), port, login);
    let epoch = Instant::now();
    // Each publish's time, taken just before it is handed to the client:
    // rumqttc's `Outgoing::Publish` event can come after a fast PUBACK, so
    // it cannot be the start. One connection's QoS 1 PUBACKs come in the
    // order of its publishes (MQTT 3.1.1 section 4.6), so the k-th PUBACK
    // answers the k-th publish.
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    tokio::spawn(async move {
        for _ in 0..count {
            let mut payload = vec![b'x'; 200];
            let now = Instant::now();
            let nanos = (now - epoch).as_nanos() as u64;
            payload[..8].copy_from_slice(&nanos.to_be_bytes());
            let _ = sent_tx.send(now);
            publisher
                .publish(&topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut acked = Vec::with_capacity(count);
    while acked.len() < count {
        if let Event::Incoming(Incoming::PubAck(_)) =
            eventloop.poll().await.expect("the broker answers")
        {
            let sent = sent_rx.recv().await.expect("a publish for each PUBACK");
            acked.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let mut delivered: Vec<f64> = tokio::time::timeout(Duration::from_secs(30), arrivals)
        .await
        .expect("every message arrives")
        .unwrap()
        .into_iter()
        .map(|(sent, at)| {
            (at - epoch).as_secs_f64() * 1000.0 - Duration::from_nanos(sent).as_secs_f64() * 1000.0
        })
        .collect();
    acked.sort_by(f64::total_cmp);
    delivered.sort_by(f64::total_cmp);
    (acked, delivered)
}

fn at(ms: &[f64], q: f64) -> f64 {
    ms[((ms.len() - 1) as f64 * q).round() as usize]
}

struct Row {
    path: String,
    acked: Vec<f64>,
    delivered: Vec<f64>,
}

fn print(rows: &[Row]) {
    let base = &rows[0];
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "| path | PUBACK p50 | PUBACK p99 | PUBACK max | delivery p50 | delivery p99 | delivery max |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for row in rows {
        let cell = |ms: &[f64], base: &[f64], q: f64| {
            format!(
                "{:.3} ms ({:.2}x)",
                at(ms, q),
                ratio(at(ms, q), at(base, q))
            )
        };
        println!(
            "| {} | {} | {} | {:.2} ms | {} | {} | {:.2} ms |",
            row.path,
            cell(&row.acked, &base.acked, 0.5),
            cell(&row.acked, &base.acked, 0.99),
            row.acked[row.acked.len() - 1],
            cell(&row.delivered, &base.delivered, 0.5),
            cell(&row.delivered, &base.delivered, 0.99),
            row.delivered[row.delivered.len() - 1],
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let count: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("bench.acl");
    std::fs::write(&acl, "user bench\ntopic readwrite /bench/#\n").unwrap();
    let passwd = dir.path().join("bench.passwd");
    let hash = scip_orchestrator::mqtt::broker_files::hash_password("bench-pw").unwrap();
    std::fs::write(&passwd, format!("bench:{hash}\n")).unwrap();
    println!(
        "{count} QoS 1 publishes of 200 bytes, one every 2 ms; ratios to Mosquitto's figure (x)"
    );

    let mut rows = Vec::new();
    let mosquitto = Mosquitto::start();
    let (acked, delivered) = latencies(mosquitto.port, None, mosquitto.port, None, count).await;
    rows.push(Row {
        path: "Mosquitto (open)".into(),
        acked,
        delivered,
    });
    drop(mosquitto);

    for secured in [false, true] {
        let auth = secured.then(|| {
            BrokerAuth::default()
                .with_user("engine", Password::new("engine-pw"))
                .with_password_file(&passwd)
                .unwrap()
                .with_acl_file(&acl)
                .unwrap()
        });
        let broker = embedded_broker(auth, BrokerOptions::default()).await;
        let settings = broker.settings();
        let direct = broker.engine_addr().port();
        // rumqttd takes no connection without a login: the engine's own
        // (drawn at start) when MQTT_USERNAME is not set.
        let own = broker.engine_login().clone();
        let engine: Login = if secured {
            Some(("engine", "engine-pw"))
        } else {
            Some((&own.username, own.password.expose()))
        };
        let user: Login = secured.then_some(("bench", "bench-pw"));
        let mode = if secured { "logins + ACL" } else { "open" };
        let (acked, delivered) = latencies(settings.port, user, settings.port, user, count).await;
        rows.push(Row {
            path: format!("embedded ({mode}): client to client through the gate"),
            acked,
            delivered,
        });
        let (acked, delivered) = latencies(direct, engine, settings.port, user, count).await;
        rows.push(Row {
            path: format!(
                "embedded ({mode}): engine (rumqttd directly) to a client through the gate"
            ),
            acked,
            delivered,
        });
        let (acked, delivered) = latencies(direct, engine, direct, engine, count).await;
        rows.push(Row {
            path: format!("embedded ({mode}): rumqttd directly, both ends"),
            acked,
            delivered,
        });
    }
    print(&rows);
}
