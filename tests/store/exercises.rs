//! The exercises table: rows round-trip, a taken id is a conflict, and a
//! delete takes the exercise's records and control log with it.

use scip_orchestrator::store::{ClockRow, ExerciseRow, StoreError};

use crate::support::{TestDb, control, delivery, exercise};

on_both_backends!(
    exercise_round_trip,
    duplicate_exercise_id_is_a_conflict,
    delete_cascades,
);

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
