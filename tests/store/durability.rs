//! What is written stays written: the journal's batch whole or not at all,
//! a new store finding everything, SQLite's commits surviving `kill -9`.

use std::process::{Command, Stdio};

use scip_orchestrator::store::{Batch, ClockRow, DELIVERED, PlayRow, Store, default_sqlite_url};

use crate::support::{TestDb, control, delivery, exercise};

on_both_backends!(
    a_batch_is_written_whole_or_not_at_all,
    a_new_store_finds_everything,
);

/// The journal's batch: control rows, new records, clocks and progress in
/// one transaction; a refused row stores nothing of it, and says it is not
/// worth trying again.
async fn a_batch_is_written_whole_or_not_at_all(db: &TestDb) {
    let s = &db.store;
    s.insert_exercise(&exercise("ex-1", 1)).await.unwrap();
    let first = delivery("ex-1", 1, "blue", "i-1", 0);
    s.insert_deliveries(std::slice::from_ref(&first))
        .await
        .unwrap();
    let clock = ClockRow {
        state: "paused".into(),
        run: 1,
        started_wall_ms: Some(1_700_000_000_000),
        paused_total_ms: 0,
        paused_since_wall_ms: None,
        updated_wall_ms: 1_700_000_000_500,
        turn: 0,
    };
    let mut delivered = first.clone();
    delivered.status = DELIVERED.into();
    delivered.acked_wall_ms = Some(1_700_000_000_400);
    let good = Batch {
        fence: None,
        controls: vec![control("ex-1", "start", "api:127.0.0.1", true)],
        inserts: vec![delivery("ex-1", 1, "red", "i-1", 1)],
        // The clock of an exercise no longer stored is skipped.
        clocks: vec![
            ("ex-1".into(), clock.clone()),
            ("gone".into(), clock.clone()),
        ],
        saves: vec![delivered.clone()],
        plays: vec![PlayRow {
            id: 0,
            exercise_id: "ex-1".into(),
            run: 1,
            kind: "response".into(),
            team_id: Some("red".into()),
            subject: Some("i-1".into()),
            body: r#"{"choice":"B"}"#.into(),
            by_name: Some("Ana".into()),
            source: "mqtt".into(),
            wall_ms: 1_700_000_000_450,
            exercise_secs: 3,
        }],
    };

    // A row that repeats a stored key: nothing of the batch is written.
    let mut bad = good.clone();
    bad.inserts.push(first.clone());
    let err = s.write(&bad).await.unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert!(s.control_log("ex-1").await.unwrap().is_empty());
    assert!(s.play_events("ex-1", 1).await.unwrap().is_empty());
    assert_eq!(
        s.deliveries("ex-1", 1).await.unwrap(),
        std::slice::from_ref(&first)
    );
    assert_eq!(
        s.get_exercise("ex-1").await.unwrap().unwrap().state,
        "running"
    );

    s.write(&good).await.unwrap();
    let log = s.control_log("ex-1").await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].command, "start");
    let rows = s.deliveries("ex-1", 1).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].status, DELIVERED);
    assert_eq!(rows[1].team_id, "red");
    let plays = s.play_events("ex-1", 1).await.unwrap();
    assert_eq!(plays.len(), 1);
    assert!(plays[0].id > 0, "ids are assigned on insert");
    assert_eq!(
        (plays[0].kind.as_str(), plays[0].body.as_str()),
        ("response", r#"{"choice":"B"}"#)
    );
    let row = s.get_exercise("ex-1").await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.updated_wall_ms),
        ("paused", 1_700_000_000_500)
    );
    s.write(&Batch::default()).await.unwrap();
}

async fn a_new_store_finds_everything(db: &TestDb) {
    let ex = exercise("ex-1", 1);
    let mut d = delivery("ex-1", 1, "blue", "i-1", 0);
    let mut c = control("ex-1", "start", "signal", true);
    db.store.insert_exercise(&ex).await.unwrap();
    db.store
        .insert_deliveries(std::slice::from_ref(&d))
        .await
        .unwrap();
    d.status = DELIVERED.into();
    d.acked_wall_ms = Some(123);
    db.store
        .save_deliveries(std::slice::from_ref(&d))
        .await
        .unwrap();
    c.id = db.store.insert_control(&c).await.unwrap();

    // A second store while the first is still open, then a third after both
    // are closed; migrations run again and change nothing.
    let check = |store: Store| {
        let (ex, d, c) = (ex.clone(), d.clone(), c.clone());
        async move {
            assert_eq!(store.list_exercises().await.unwrap(), [ex]);
            assert_eq!(store.deliveries("ex-1", 1).await.unwrap(), [d]);
            assert_eq!(
                store.control_log("ex-1").await.unwrap(),
                std::slice::from_ref(&c)
            );
            let next = control("ex-1", "stop", "mqtt", true);
            assert!(store.insert_control(&next).await.unwrap() > c.id);
            store.close().await;
        }
    };
    let second = Store::connect(&db.url).await.unwrap();
    check(second).await;
    db.store.close().await;
    let third = Store::connect(&db.url).await.unwrap();
    assert_eq!(third.control_log("ex-1").await.unwrap().len(), 2);
    third.close().await;
}

/// What `kill -9` leaves: a child process (this test binary again, running
/// [`kill_9_child`]) writes, reports each commit on stdout and is killed
/// mid-stream; every reported commit is in the file.
#[tokio::test]
async fn sqlite_commits_survive_kill_9() {
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let url = default_sqlite_url(dir.path());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "durability::kill_9_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_9_CHILD_URL, &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut committed = 0;
    while committed < 50 {
        let line = lines.next().expect("the child writes").unwrap();
        if let Some(n) = line.strip_prefix("committed ") {
            committed = n.parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let store = Store::connect(&url).await.unwrap();
    let log = store.control_log("ex-1").await.unwrap();
    assert!(
        log.len() >= committed,
        "{} of {committed} commits survived",
        log.len()
    );
    // Each step commits 10 deliveries, then a control row: the kill may fall
    // between the two.
    let rows = store.deliveries("ex-1", 1).await.unwrap().len();
    assert!(
        rows == log.len() * 10 || rows == log.len() * 10 + 10,
        "{rows} deliveries for {} control rows",
        log.len()
    );
}

const KILL_9_CHILD_URL: &str = "SCIP_STORE_KILL_9_CHILD_URL";

/// The writer of [`sqlite_commits_survive_kill_9`]; returns at once unless
/// that test started it.
#[tokio::test]
async fn kill_9_child() {
    let Ok(url) = std::env::var(KILL_9_CHILD_URL) else {
        return;
    };
    let store = Store::connect(&url).await.unwrap();
    store.insert_exercise(&exercise("ex-1", 1)).await.unwrap();
    for n in 1.. {
        let batch: Vec<_> = (0..10)
            .map(|i| delivery("ex-1", 1, "blue", &format!("i-{n}-{i}"), n * 10 + i))
            .collect();
        store.insert_deliveries(&batch).await.unwrap();
        store
            .insert_control(&control("ex-1", "tick", "mqtt", true))
            .await
            .unwrap();
        println!("committed {n}");
    }
}
