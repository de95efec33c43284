//! The control log: rows round-trip per exercise with growing ids, also when
//! inserted concurrently.

use scip_orchestrator::store::StoreError;

use crate::support::{TestDb, control, exercise};

on_both_backends!(
    control_log_round_trip,
    concurrent_control_inserts_get_distinct_ids,
);

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
