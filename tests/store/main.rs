//! The store against both backends: every case runs once on a fresh SQLite file
//! and once on a fresh PostgreSQL schema (`<case>::sqlite`, `<case>::postgres`).
//!
//! PostgreSQL: `SCIP_TEST_POSTGRES_URL`, else `postgres://postgres@127.0.0.1:5432/test`,
//! else the same as `root`. Each test gets its own schema, dropped at the end, so
//! tests run in parallel. An unreachable PostgreSQL fails the test.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use tempfile::TempDir;

use scip_orchestrator::store::{
    Batch, ClockRow, ControlRow, DELIVERED, DeliveryRow, ExerciseRow, Store, StoreError,
    default_sqlite_url,
};

/// Generates `<case>::sqlite` and `<case>::postgres` for each async fn
/// `case(&TestDb)`.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::TestDb::sqlite().await;
                super::$case(&db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = super::TestDb::postgres().await;
                super::$case(&db).await;
            }
        }
    )*};
}

on_both_backends!(
    backend_answers,
    exercise_round_trip,
    duplicate_exercise_id_is_a_conflict,
    delivery_round_trip_in_run_order,
    delivery_inserts_are_all_or_nothing,
    save_writes_progress,
    confirmation_is_written_once,
    control_log_round_trip,
    concurrent_control_inserts_get_distinct_ids,
    delete_cascades,
    a_batch_is_written_whole_or_not_at_all,
    a_new_store_finds_everything,
    ten_thousand_deliveries,
);

async fn backend_answers(db: &TestDb) {
    assert_eq!(db.store.backend(), db.backend);
    db.store.ping().await.unwrap();
    assert!(db.store.list_exercises().await.unwrap().is_empty());
}

async fn exercise_round_trip(db: &TestDb) {
    let s = &db.store;
    // Inserted out of creation order; listed oldest first.
    let mut b = exercise("ex-b", 2_000);
    b.name = None;
    b.started_wall_ms = None;
    b.paused_since_wall_ms = None;
    b.owner = None;
    let a = exercise("ex-a", 1_000);
    let c = exercise("ex-c", 3_000);
    for row in [&b, &c, &a] {
        s.insert_exercise(row).await.unwrap();
    }
    assert_eq!(s.get_exercise("ex-a").await.unwrap(), Some(a.clone()));
    assert_eq!(s.get_exercise("ex-b").await.unwrap(), Some(b.clone()));
    assert_eq!(s.get_exercise("nope").await.unwrap(), None);
    assert_eq!(s.list_exercises().await.unwrap(), [a.clone(), b, c]);

    let clock = ClockRow {
        state: "paused".into(),
        run: 2,
        started_wall_ms: Some(1_700_000_000_123),
        paused_total_ms: 45_678,
        paused_since_wall_ms: Some(1_700_000_100_000),
        updated_wall_ms: 1_700_000_100_001,
        turn: 3,
    };
    s.update_exercise_clock("ex-a", &clock).await.unwrap();
    let got = s.get_exercise("ex-a").await.unwrap().unwrap();
    let want = ExerciseRow {
        state: clock.state.clone(),
        run: clock.run,
        started_wall_ms: clock.started_wall_ms,
        paused_total_ms: clock.paused_total_ms,
        paused_since_wall_ms: clock.paused_since_wall_ms,
        updated_wall_ms: clock.updated_wall_ms,
        turn: 3,
        ..a
    };
    assert_eq!(got, want, "only the clock changes; owner and epoch stay");

    // Back to unset.
    let clock = ClockRow {
        state: "initialized".into(),
        started_wall_ms: None,
        paused_since_wall_ms: None,
        ..clock
    };
    s.update_exercise_clock("ex-a", &clock).await.unwrap();
    let got = s.get_exercise("ex-a").await.unwrap().unwrap();
    assert_eq!(
        (got.started_wall_ms, got.paused_since_wall_ms),
        (None, None)
    );

    let err = s.update_exercise_clock("nope", &clock).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what } if what == "exercise nope"),
        "{err:?}"
    );

    // An exercise stored before incarnations existed gets one later.
    s.set_incarnation("ex-a", "second-life").await.unwrap();
    let got = s.get_exercise("ex-a").await.unwrap().unwrap();
    assert_eq!(got.incarnation, "second-life");
    let err = s.set_incarnation("nope", "x").await.unwrap_err();
    assert!(matches!(&err, StoreError::NotFound { .. }), "{err:?}");
}

async fn duplicate_exercise_id_is_a_conflict(db: &TestDb) {
    let s = &db.store;
    let first = exercise("ex-1", 1_000);
    s.insert_exercise(&first).await.unwrap();
    let mut second = exercise("ex-1", 2_000);
    second.name = Some("another".into());
    let err = s.insert_exercise(&second).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(err.to_string(), "exercise ex-1 already exists");
    assert_eq!(s.get_exercise("ex-1").await.unwrap(), Some(first));
}

async fn delivery_round_trip_in_run_order(db: &TestDb) {
    let s = &db.store;
    s.insert_exercise(&exercise("ex-1", 1)).await.unwrap();
    let mut rows = vec![
        delivery("ex-1", 1, "blue", "i-1", 0),
        delivery("ex-1", 1, "red", "i-1", 1),
        delivery("ex-1", 1, "blue", "i-2", 2),
    ];
    // Every optional field set on one row, none on the others.
    rows[1] = DeliveryRow {
        status: DELIVERED.into(),
        attempts: 2,
        due_wall_ms: Some(1_700_000_000_000),
        published_wall_ms: Some(1_700_000_000_004),
        acked_wall_ms: Some(1_700_000_000_009),
        received_wall_ms: Some(1_700_000_000_012),
        latency_ms: Some(9.25),
        late: true,
        last_error: Some("not connected".into()),
        inject_json: Some(r#"{"id":"i-1","type":"sms","content":{"text":"é ✓"}}"#.into()),
        ..rows[1].clone()
    };
    let other_run = delivery("ex-1", 2, "blue", "i-1", 0);
    // Stored in another order than run order.
    s.insert_deliveries(&[rows[2].clone(), other_run.clone(), rows[0].clone()])
        .await
        .unwrap();
    s.insert_deliveries(&rows[1..2]).await.unwrap();
    s.insert_deliveries(&[]).await.unwrap();

    assert_eq!(s.deliveries("ex-1", 1).await.unwrap(), rows);
    assert_eq!(s.deliveries("ex-1", 2).await.unwrap(), [other_run]);
    assert!(s.deliveries("ex-1", 3).await.unwrap().is_empty());
    assert!(s.deliveries("nope", 1).await.unwrap().is_empty());
}

async fn delivery_inserts_are_all_or_nothing(db: &TestDb) {
    let s = &db.store;
    s.insert_exercise(&exercise("ex-1", 1)).await.unwrap();
    let first = delivery("ex-1", 1, "blue", "i-1", 0);
    s.insert_deliveries(std::slice::from_ref(&first))
        .await
        .unwrap();

    // A batch whose last row repeats a stored key stores nothing.
    let batch: Vec<_> = (1..700)
        .map(|i| delivery("ex-1", 1, "blue", &format!("i-{}", i + 1), i))
        .chain([first.clone()])
        .collect();
    let err = s.insert_deliveries(&batch).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(s.deliveries("ex-1", 1).await.unwrap(), [first]);

    // Records of an exercise that is not stored.
    let err = s
        .insert_deliveries(&[delivery("ghost", 1, "blue", "i-1", 0)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what } if what == "exercise ghost"),
        "{err:?}"
    );
    assert!(s.deliveries("ghost", 1).await.unwrap().is_empty());
}

async fn save_writes_progress(db: &TestDb) {
    let s = &db.store;
    s.insert_exercise(&exercise("ex-1", 1)).await.unwrap();
    let rows: Vec<_> = (0..5)
        .map(|i| delivery("ex-1", 1, "blue", &format!("i-{i}"), i))
        .collect();
    s.insert_deliveries(&rows).await.unwrap();

    let mut retrying = rows[1].clone();
    retrying.status = "retrying".into();
    retrying.attempts = 1;
    retrying.due_wall_ms = Some(1_000);
    retrying.published_wall_ms = Some(1_010);
    retrying.late = true;
    retrying.last_error = Some("no acknowledgement within 5000 ms".into());
    let mut failed = rows[3].clone();
    failed.status = "failed".into();
    failed.attempts = 3;
    failed.last_error = Some("not connected".into());
    let unknown = delivery("ex-1", 9, "blue", "i-1", 0);
    // The plan fields are not saved.
    let mut replanned = failed.clone();
    replanned.due_secs = 999;
    replanned.position = 999;
    replanned.inject_json = Some("{}".into());

    let matched = s
        .save_deliveries(&[retrying.clone(), replanned, unknown])
        .await
        .unwrap();
    assert_eq!(matched, 2, "the unknown key is skipped");
    assert_eq!(s.save_deliveries(&[]).await.unwrap(), 0);
    let want = vec![
        rows[0].clone(),
        retrying.clone(),
        rows[2].clone(),
        failed,
        rows[4].clone(),
    ];
    assert_eq!(s.deliveries("ex-1", 1).await.unwrap(), want);

    // A retry that succeeds clears the error and may unset times again.
    let mut pending = retrying.clone();
    pending.status = "pending".into();
    pending.published_wall_ms = None;
    pending.last_error = None;
    pending.late = false;
    s.save_deliveries(std::slice::from_ref(&pending))
        .await
        .unwrap();
    assert_eq!(s.deliveries("ex-1", 1).await.unwrap()[1], pending);
}

async fn confirmation_is_written_once(db: &TestDb) {
    let s = &db.store;
    s.insert_exercise(&exercise("ex-1", 1)).await.unwrap();
    let rows: Vec<_> = (0..3)
        .map(|i| delivery("ex-1", 1, "blue", &format!("i-{i}"), i))
        .collect();
    s.insert_deliveries(&rows).await.unwrap();

    let mut delivered = rows[0].clone();
    delivered.status = DELIVERED.into();
    delivered.attempts = 1;
    delivered.due_wall_ms = Some(10_000);
    delivered.published_wall_ms = Some(10_002);
    delivered.acked_wall_ms = Some(10_005);
    delivered.latency_ms = Some(5.0);
    s.save_deliveries(std::slice::from_ref(&delivered))
        .await
        .unwrap();
    assert_eq!(s.deliveries("ex-1", 1).await.unwrap()[0], delivered);

    // A later acknowledgement does not move the first one.
    let mut later_ack = delivered.clone();
    later_ack.acked_wall_ms = Some(20_000);
    later_ack.latency_ms = Some(10_000.0);
    // A stale writer's retry does not undo the delivery.
    let mut stale_retry = delivered.clone();
    stale_retry.status = "retrying".into();
    stale_retry.attempts = 2;
    stale_retry.acked_wall_ms = None;
    stale_retry.published_wall_ms = Some(15_000);
    stale_retry.last_error = Some("timeout".into());
    stale_retry.late = true;
    let mut cancelled = delivered.clone();
    cancelled.status = "cancelled".into();
    for save in [later_ack, stale_retry, cancelled] {
        s.save_deliveries(&[save]).await.unwrap();
        assert_eq!(s.deliveries("ex-1", 1).await.unwrap()[0], delivered);
    }

    // The team's receipt is written once too, also after delivery.
    let mut received = delivered.clone();
    received.received_wall_ms = Some(10_050);
    s.save_deliveries(std::slice::from_ref(&received))
        .await
        .unwrap();
    let mut received_again = received.clone();
    received_again.received_wall_ms = Some(99_999);
    s.save_deliveries(&[received_again]).await.unwrap();
    assert_eq!(s.deliveries("ex-1", 1).await.unwrap()[0], received);

    // Within one batch, saves apply in order: delivered then a stale retry
    // stays delivered; an acknowledgement then a later one keeps the first.
    let mut second = rows[1].clone();
    second.status = DELIVERED.into();
    second.acked_wall_ms = Some(30_000);
    let mut second_stale = rows[1].clone();
    second_stale.status = "retrying".into();
    second_stale.attempts = 5;
    let mut third_first = rows[2].clone();
    third_first.status = "retrying".into();
    third_first.acked_wall_ms = Some(40_000);
    let mut third_later = third_first.clone();
    third_later.acked_wall_ms = Some(41_000);
    third_later.attempts = 2;
    let matched = s
        .save_deliveries(&[second.clone(), third_first, second_stale, third_later])
        .await
        .unwrap();
    assert_eq!(matched, 4);
    let got = s.deliveries("ex-1", 1).await.unwrap();
    assert_eq!(got[1], second);
    assert_eq!((got[2].acked_wall_ms, got[2].attempts), (Some(40_000), 2));
}

async fn control_log_round_trip(db: &TestDb) {
    let s = &db.store;
    s.insert_exercise(&exercise("ex-1", 1)).await.unwrap();
    s.insert_exercise(&exercise("ex-2", 2)).await.unwrap();
    let mut rows = vec![
        control("ex-1", "start", "api:127.0.0.1", true),
        control("ex-2", "start", "mqtt", true),
        control("ex-1", "resume", "mqtt", false),
        control("ex-1", "stop", "signal", true),
    ];
    rows[0].reason = Some("Technical issue with Team Green".into());
    rows[2].message = Some("cannot resume: the exercise is running".into());
    let mut last = 0;
    for row in &mut rows {
        let id = s.insert_control(row).await.unwrap();
        assert!(id > last, "ids grow: {id} after {last}");
        last = id;
        row.id = id;
    }
    let ex1: Vec<_> = rows
        .iter()
        .filter(|r| r.exercise_id == "ex-1")
        .cloned()
        .collect();
    assert_eq!(s.control_log("ex-1").await.unwrap(), ex1);
    assert_eq!(s.control_log("ex-2").await.unwrap(), [rows[1].clone()]);
    assert!(s.control_log("nope").await.unwrap().is_empty());

    let err = s
        .insert_control(&control("ghost", "start", "mqtt", true))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

async fn concurrent_control_inserts_get_distinct_ids(db: &TestDb) {
    db.store
        .insert_exercise(&exercise("ex-1", 1))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = db.store.clone();
            tokio::spawn(async move {
                let row = control("ex-1", &format!("cmd-{i}"), "mqtt", true);
                store.insert_control(&row).await.unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40);
    let log = db.store.control_log("ex-1").await.unwrap();
    let logged: Vec<_> = log.iter().map(|r| r.id).collect();
    assert_eq!(logged, ids);
}

async fn delete_cascades(db: &TestDb) {
    let s = &db.store;
    for id in ["ex-1", "ex-2"] {
        s.insert_exercise(&exercise(id, 1)).await.unwrap();
        s.insert_deliveries(&[
            delivery(id, 1, "blue", "i-1", 0),
            delivery(id, 2, "blue", "i-1", 0),
        ])
        .await
        .unwrap();
        s.insert_control(&control(id, "start", "mqtt", true))
            .await
            .unwrap();
    }
    assert!(s.delete_exercise("ex-1").await.unwrap());
    assert_eq!(s.get_exercise("ex-1").await.unwrap(), None);
    for run in [1, 2] {
        assert!(s.deliveries("ex-1", run).await.unwrap().is_empty());
    }
    assert!(s.control_log("ex-1").await.unwrap().is_empty());
    assert!(!s.delete_exercise("ex-1").await.unwrap());

    // The other exercise keeps everything; the id can be used again.
    assert!(s.get_exercise("ex-2").await.unwrap().is_some());
    assert_eq!(s.deliveries("ex-2", 1).await.unwrap().len(), 1);
    assert_eq!(s.control_log("ex-2").await.unwrap().len(), 1);
    s.insert_exercise(&exercise("ex-1", 5)).await.unwrap();
    assert!(s.deliveries("ex-1", 1).await.unwrap().is_empty());
}

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
        controls: vec![control("ex-1", "start", "api:127.0.0.1", true)],
        inserts: vec![delivery("ex-1", 1, "red", "i-1", 1)],
        // The clock of an exercise no longer stored is skipped.
        clocks: vec![
            ("ex-1".into(), clock.clone()),
            ("gone".into(), clock.clone()),
        ],
        saves: vec![delivered.clone()],
    };

    // A row that repeats a stored key: nothing of the batch is written.
    let mut bad = good.clone();
    bad.inserts.push(first.clone());
    let err = s.write(&bad).await.unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert!(s.control_log("ex-1").await.unwrap().is_empty());
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

async fn ten_thousand_deliveries(db: &TestDb) {
    let s = &db.store;
    s.insert_exercise(&exercise("ex-big", 1)).await.unwrap();
    let mut rows: Vec<_> = (0..10_000)
        .map(|i| {
            let team = ["blue", "red", "orange", "green"][i % 4];
            let mut row = delivery("ex-big", 1, team, &format!("inject-{i:05}"), i as i64);
            row.due_secs = i as i64 / 4;
            row.due_wall_ms = Some(1_700_000_000_000 + i as i64 * 250);
            row
        })
        .collect();

    let started = Instant::now();
    s.insert_deliveries(&rows).await.unwrap();
    let insert = started.elapsed();

    for (i, row) in rows.iter_mut().enumerate() {
        row.attempts = 1;
        row.published_wall_ms = row.due_wall_ms.map(|t| t + 2);
        if i % 10 == 0 {
            row.status = "retrying".into();
            row.last_error = Some("no acknowledgement within 5000 ms".into());
        } else {
            row.status = DELIVERED.into();
            row.acked_wall_ms = row.due_wall_ms.map(|t| t + 5);
            row.latency_ms = Some(5.0 + (i % 7) as f64 / 8.0);
        }
    }
    let started = Instant::now();
    let matched = s.save_deliveries(&rows).await.unwrap();
    let save = started.elapsed();
    assert_eq!(matched, 10_000);

    let started = Instant::now();
    let got = s.deliveries("ex-big", 1).await.unwrap();
    let read = started.elapsed();
    assert_eq!(got.len(), rows.len());
    assert!(got == rows, "10,000 rows read back as saved, in run order");

    // As the engine saves while running: small batches, one transaction each.
    for row in &mut rows[..1_000] {
        row.received_wall_ms = row.acked_wall_ms.map(|t| t + 40);
    }
    let started = Instant::now();
    for row in &rows[..1_000] {
        s.save_deliveries(std::slice::from_ref(row)).await.unwrap();
    }
    let single = started.elapsed() / 1_000;
    assert_eq!(s.deliveries("ex-big", 1).await.unwrap(), rows);
    println!(
        "{}: 10,000 deliveries: insert {insert:?}, save {save:?}, read {read:?}; \
         a save of one row {single:?}",
        db.backend
    );
}

// SQLite only.

#[tokio::test]
async fn sqlite_creates_its_folder_and_uses_wal() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data").join("nested");
    let url = default_sqlite_url(&data_dir);
    assert!(url.starts_with("sqlite://") && url.ends_with("/data/nested/scip.db"));
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    store.insert_exercise(&exercise("ex-1", 1)).await.unwrap();
    assert!(data_dir.join("scip.db").is_file());
    assert!(
        data_dir.join("scip.db-wal").is_file(),
        "WAL journal while open"
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_in_memory_keeps_its_data_for_the_life_of_the_store() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.insert_exercise(&exercise("ex-1", 1)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(store.list_exercises().await.unwrap().len(), 1);
    // Another in-memory store is another database.
    let other = Store::connect("sqlite::memory:").await.unwrap();
    assert!(other.list_exercises().await.unwrap().is_empty());
}

#[tokio::test]
async fn unsupported_urls_are_refused_without_echoing_them() {
    let err = Store::connect("mysql://user:secret@localhost/db")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("\"mysql\""), "{message}");
    assert!(!message.contains("secret"), "{message}");
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
        .args(["kill_9_child", "--exact", "--nocapture", "--test-threads=1"])
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

// Support.

/// A fresh store of one backend, removed when dropped.
struct TestDb {
    store: Store,
    backend: &'static str,
    /// Connects another store to the same database.
    url: String,
    _dir: Option<TempDir>,
    /// (admin URL, schema) of a PostgreSQL test schema.
    schema: Option<(String, String)>,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = default_sqlite_url(dir.path());
        TestDb {
            store: Store::connect(&url).await.unwrap(),
            backend: "sqlite",
            url,
            _dir: Some(dir),
            schema: None,
        }
    }

    async fn postgres() -> TestDb {
        let admin_url = reachable_postgres().await;
        let schema = unique_schema_name();
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{separator}options[search_path]={schema}");
        TestDb {
            store: Store::connect(&url).await.unwrap(),
            backend: "postgres",
            url,
            _dir: None,
            schema: Some((admin_url, schema)),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, schema)) = self.schema.take() else {
            return;
        };
        // Drop cannot await: drop the schema from a thread with its own runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop a test schema: {e}");
        }
    }
}

/// The first PostgreSQL URL that accepts a connection; panics with what to do
/// when none does.
async fn reachable_postgres() -> String {
    let candidates = match std::env::var("SCIP_TEST_POSTGRES_URL") {
        Ok(url) => vec![url],
        Err(_) => vec![
            "postgres://postgres@127.0.0.1:5432/test".to_owned(),
            "postgres://root@127.0.0.1:5432/test".to_owned(),
        ],
    };
    let mut errors = Vec::new();
    for url in &candidates {
        match sqlx::PgConnection::connect(url).await {
            Ok(conn) => {
                let _ = conn.close().await;
                return url.clone();
            }
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    let ci = if std::env::var_os("CI").is_some() {
        "CI must start PostgreSQL before the tests (.ci/run). "
    } else {
        ""
    };
    panic!(
        "PostgreSQL is not reachable ({}). {ci}Start it with \
         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
         or point SCIP_TEST_POSTGRES_URL at a database where this user may create schemas",
        errors.join("; ")
    );
}

fn unique_schema_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t_store_{}_{}_{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn exercise(id: &str, created_wall_ms: i64) -> ExerciseRow {
    ExerciseRow {
        id: id.into(),
        name: Some(format!("Exercise {id}")),
        scenario_json: r#"{"id":"maritime-crisis-01","teams":[]}"#.into(),
        state: "running".into(),
        run: 1,
        speed: 1.5,
        duration_secs: 2_700,
        started_wall_ms: Some(1_700_000_000_000),
        paused_total_ms: 1_234,
        paused_since_wall_ms: Some(1_700_000_001_000),
        created_wall_ms,
        updated_wall_ms: created_wall_ms + 1,
        owner: Some("node-a".into()),
        epoch: 7,
        turn: 0,
        incarnation: format!("life-of-{id}"),
    }
}

fn delivery(exercise_id: &str, run: i64, team: &str, inject: &str, position: i64) -> DeliveryRow {
    DeliveryRow {
        exercise_id: exercise_id.into(),
        run,
        team_id: team.into(),
        inject_id: inject.into(),
        due_secs: position * 3,
        status: "pending".into(),
        attempts: 0,
        due_wall_ms: None,
        published_wall_ms: None,
        acked_wall_ms: None,
        received_wall_ms: None,
        latency_ms: None,
        late: false,
        last_error: None,
        position,
        inject_json: None,
    }
}

fn control(exercise_id: &str, command: &str, source: &str, accepted: bool) -> ControlRow {
    ControlRow {
        id: 0,
        exercise_id: exercise_id.into(),
        at_wall_ms: 1_700_000_000_000,
        command: command.into(),
        reason: None,
        source: source.into(),
        accepted,
        message: None,
    }
}
