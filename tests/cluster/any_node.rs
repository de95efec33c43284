//! Any node answers: the API, both event streams and the list, through a
//! node that runs none of the exercises asked about; new exercises go to
//! the node that runs the fewest; a dashboard stream follows its exercise
//! across a takeover.

use std::time::Duration;

use serde_json::Value;

use scip_orchestrator::testing::Mosquitto;

use super::{ADMIN, Node, PgDatabase, cluster, create, http, wait_for};

/// Opens an event stream; the first chunk of it (its history), or the status.
async fn open_stream(url: &str, bearer: bool) -> Result<reqwest::Response, u16> {
    let mut request = reqwest::Client::new().get(url);
    if bearer {
        request = request.bearer_auth(ADMIN);
    }
    let response = request.send().await.map_err(|_| 0u16)?;
    if response.status() == 200 {
        Ok(response)
    } else {
        Err(response.status().as_u16())
    }
}

/// Reads `response` until `needle` has come, within 10 s; what was read.
async fn read_until(response: &mut reqwest::Response, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within 10 s; read: {seen}"));
        match chunk {
            Ok(Some(bytes)) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            _ => panic!("the stream ended before {needle:?}; read: {seen}"),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_runs_nothing_answers_for_every_exercise() {
    let db = PgDatabase::create("cluster").await;
    let broker = Mosquitto::start();
    let media = tempfile::tempdir().unwrap();
    let mut owner = Node::start("owner", broker.port, &db.url, media.path(), &[]);
    let front = Node::start("front", broker.port, &db.url, media.path(), &[]);
    // Placement: three exercises asked of the owner go two to it, one to
    // the other node (the least loaded when asked).
    for k in 0..3 {
        create(owner.port, &format!("any-{k}"), 60, 2).await;
    }
    let view = cluster(front.port).await;
    let held = |node: &str| {
        view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == node)
            .map(|n| n["exercises"].as_array().unwrap().len())
            .unwrap_or(0)
    };
    assert_eq!((held("owner"), held("front")), (2, 1), "{view}");
    let on_owner: Vec<String> = view["leases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["owner"] == "owner")
        .map(|l| l["exercise_id"].as_str().unwrap().to_owned())
        .collect();
    let id = on_owner[0].clone();

    // The list, from either node, holds all three.
    for port in [owner.port, front.port] {
        let (status, list) = http(port, "GET", "/api/v1/exercises", None).await;
        assert_eq!(status, 200, "{list}");
        let mut ids: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, ["any-0", "any-1", "any-2"]);
    }
    // Reads and commands through the node that does not run it: answered
    // by the owner, once stored there.
    let base = format!("/api/v1/exercises/{id}");
    let (status, body) = http(front.port, "POST", &format!("{base}/start"), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(front.port, "GET", &base, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "running", "{body}");
    let (_, log) = http(owner.port, "GET", &format!("{base}/control-log"), None).await;
    assert_eq!(log[0]["command"], "start", "{log}");
    assert_eq!(
        log[0]["source"], "api:127.0.0.1",
        "the audit log names the client, not the forwarding node: {log}"
    );
    let (status, _) = http(front.port, "GET", "/api/v1/exercises/none-such", None).await;
    assert_eq!(status, 404);

    // The control room's stream and a team's dashboard stream, through it.
    let control = format!(
        "http://127.0.0.1:{}/api/v1/exercises/{id}/events",
        front.port
    );
    let mut room = open_stream(&control, true)
        .await
        .expect("the control room stream opens");
    read_until(&mut room, "event: exercise").await;
    let link = body["teams"][0]["dashboard_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = link.split_once("?token=").unwrap().1.to_owned();
    let team = format!(
        "http://127.0.0.1:{}/api/v1/exercises/{id}/teams/blue/events?token={token}",
        front.port
    );
    let mut dashboard = open_stream(&team, false)
        .await
        .expect("the dashboard stream opens");
    read_until(&mut dashboard, "event: history").await;
    read_until(&mut dashboard, "event: inject").await;

    // The owner dies: the stream ends; the dashboard's reconnects (through
    // the same node) are refused while the exercise moves, then opened by
    // its new owner with the history of the run.
    owner.kill_9();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), dashboard.chunk()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(_) => break,
            Err(_) => panic!("the stream of a killed owner did not end"),
        }
    }
    let mut again = wait_for(Duration::from_secs(20), async || {
        match open_stream(&team, false).await {
            Ok(stream) => Some(stream),
            Err(status) => {
                assert!(
                    status == 503 || status == 0,
                    "refused with {status} while it moves"
                );
                None
            }
        }
    })
    .await;
    let history = read_until(&mut again, "event: history").await;
    assert!(
        history.contains("i-00"),
        "the history of the run: {history}"
    );
    let (status, body): (u16, Value) = http(front.port, "GET", &base, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "running", "{body}");
    drop(front);
    db.drop().await;
}
