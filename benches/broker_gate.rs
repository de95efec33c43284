//! What the embedded broker's gate costs a client: PUBACK latency of QoS 1
//! publishes through the gate (the port clients use) against rumqttd
//! directly (where the engine connects), open and with logins and an ACL
//! (a user held to `/bench/#`, every publish checked).
//!
//! `cargo bench --bench broker_gate` (BENCH_MESSAGES, default 2000, one
//! every 2 ms, 200-byte payloads).

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};
use scip_orchestrator::broker::{BrokerAuth, BrokerSettings, EmbeddedBroker};
use scip_orchestrator::mqtt::Password;
use scip_orchestrator::testing::free_port;

/// PUBACK latency of each publish, in ms, sorted.
async fn latencies(port: u16, login: Option<(&str, &str)>, count: usize) -> Vec<f64> {
    let mut opts = MqttOptions::new(format!("bench-{port}"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    if let Some((user, password)) = login {
        opts.set_credentials(user, password);
    }
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    eventloop.set_network_options(network);
    tokio::spawn(async move {
        for _ in 0..count {
            client
                .publish("/bench/x", QoS::AtLeastOnce, false, vec![b'x'; 200])
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut sent = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        match eventloop.poll().await.expect("the broker answers") {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                sent.insert(pkid, Instant::now());
            }
            Event::Incoming(Incoming::PubAck(ack)) => {
                if let Some(at) = sent.remove(&ack.pkid) {
                    out.push(at.elapsed().as_secs_f64() * 1000.0);
                }
            }
            _ => {}
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

fn summary(ms: &[f64]) -> String {
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        at(0.5),
        at(0.99),
        ms[ms.len() - 1]
    )
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
    let hash = scip_orchestrator::broker_acl::hash_password("bench-pw").unwrap();
    std::fs::write(&passwd, format!("bench:{hash}\n")).unwrap();
    println!("{count} QoS 1 publishes, PUBACK latency");
    for secured in [false, true] {
        let settings = BrokerSettings {
            bind: "127.0.0.1".parse().unwrap(),
            port: free_port(),
            ws_port: free_port(),
        };
        let auth = secured.then(|| {
            BrokerAuth::default()
                .with_user("engine", Password::new("engine-pw"))
                .with_password_file(&passwd)
                .unwrap()
                .with_acl_file(&acl)
                .unwrap()
        });
        let broker = EmbeddedBroker::start_with_auth(settings, auth)
            .await
            .unwrap();
        let (user, engine) = if secured {
            (Some(("bench", "bench-pw")), Some(("engine", "engine-pw")))
        } else {
            (None, None)
        };
        let mode = if secured { "logins + ACL" } else { "open" };
        let gate = latencies(settings.port, user, count).await;
        println!("{mode:>13}, through the gate: {}", summary(&gate));
        if secured {
            let engine_gate = latencies(settings.port, engine, count).await;
            println!(
                "{mode:>13}, engine login through the gate: {}",
                summary(&engine_gate)
            );
        }
        // rumqttd takes no connection without a login: the engine's own
        // (drawn at start) when MQTT_USERNAME is not set.
        let own = broker.engine_login().clone();
        let engine = engine.or(Some((&own.username, own.password.expose())));
        let direct = latencies(broker.engine_addr().port(), engine, count).await;
        println!("{mode:>13}, rumqttd directly: {}", summary(&direct));
    }
}
