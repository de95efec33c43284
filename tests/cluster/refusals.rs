//! What cannot work is refused at start, with a message that says why.

use std::time::Duration;

use scip_orchestrator::testing::{Lines, Mosquitto, free_ports};

use super::{Node, PgDatabase, serve_command};

/// Runs `command` to its end; (exit code, what it logged).
fn refused(mut command: std::process::Command) -> (Option<i32>, String) {
    let mut child = command.spawn().expect("start serve");
    let mut log = Lines::read(child.stderr.take().expect("piped stderr"));
    let seen = log.until_closed(Duration::from_secs(30)).join("\n");
    let code = child.wait().ok().and_then(|s| s.code());
    (code, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_as_the_same_node_is_refused() {
    let db = PgDatabase::create("cluster").await;
    let broker = Mosquitto::start();
    let media = tempfile::tempdir().unwrap();
    let first = Node::start("same", broker.port, &db.url, media.path(), &[]);
    let mut second = serve_command(broker.port, &db.url, media.path());
    second
        .env("NODE_ID", "same")
        .env("LEASE_RENEW_MS", "200")
        .env("LEASE_TTL_MS", "1000");
    let (code, log) = refused(second);
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains(r#"another process runs as node "same""#),
        "{log}"
    );
    // The first goes on, unharmed.
    let view = super::cluster(first.port).await;
    assert_eq!(view["node"], "same");
    assert_eq!(view["trusted"], true);
    drop(first);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_sqlite_file_is_refused() {
    let broker = Mosquitto::start();
    let media = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("serve.db").display());
    let first = Node::start("lite-1", broker.port, &url, media.path(), &[]);
    let (code, log) = refused(serve_command(broker.port, &url, media.path()));
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("another process serves the database")
            && log.contains("SQLite is single-node"),
        "{log}"
    );
    let view = super::cluster(first.port).await;
    assert_eq!(view["mode"], "single", "{view}");
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_beside_another_node_is_refused_both_ways() {
    let db = PgDatabase::create("cluster").await;
    let broker = Mosquitto::start();
    let media = tempfile::tempdir().unwrap();
    // A cluster node first: a node with the embedded broker is refused.
    let node = Node::start("ext-1", broker.port, &db.url, media.path(), &[]);
    let [mqtt, ws] = free_ports();
    let mut embedded = serve_command(broker.port, &db.url, media.path());
    embedded
        .env_remove("MQTT_BROKER_HOST")
        .env("BROKER_PORT", mqtt.to_string())
        .env("BROKER_WS_PORT", ws.to_string());
    let (code, log) = refused(embedded);
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("another node (ext-1 at http://127.0.0.1:")
            && log.contains("the embedded MQTT broker is single-node"),
        "{log}"
    );
    drop(node);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_or_address_others_cannot_use_is_refused() {
    let db = PgDatabase::create("cluster").await;
    let broker = Mosquitto::start();
    let media = tempfile::tempdir().unwrap();
    let mut spaced = serve_command(broker.port, &db.url, media.path());
    spaced.env("NODE_ID", "node one");
    let (code, log) = refused(spaced);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("NODE_ID must be 1 to 100 characters"), "{log}");
    // Listening on every interface names no address the peers can use.
    let mut everywhere = serve_command(broker.port, &db.url, media.path());
    everywhere
        .env("NODE_ID", "wide")
        .env("HTTP_BIND", "0.0.0.0:0");
    let (code, log) = refused(everywhere);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("set NODE_ADDRESS"), "{log}");
    db.drop().await;
}
