//! Delivery records: stored in run order, inserted all or nothing, their
//! progress saved, a confirmation written once, ten thousand at a time.

use std::time::Instant;

use scip_orchestrator::store::{DELIVERED, DeliveryRow, StoreError};

use crate::support::{TestDb, delivery, exercise};

on_both_backends!(
    delivery_round_trip_in_run_order,
    delivery_inserts_are_all_or_nothing,
    save_writes_progress,
    confirmation_is_written_once,
    ten_thousand_deliveries,
);

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
        watched: Some(true),
        sent_secs: Some(1),
        play: None,
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

    // Its two-way play state is not frozen: an outcome comes after delivery
    // (and turns from missed to late); a save without one keeps it.
    let mut answered = received.clone();
    answered.play = Some(r#"{"outcome":"missed","window_end":70}"#.into());
    s.save_deliveries(std::slice::from_ref(&answered))
        .await
        .unwrap();
    answered.play = Some(r#"{"outcome":"late","window_end":70}"#.into());
    s.save_deliveries(std::slice::from_ref(&answered))
        .await
        .unwrap();
    let mut without = answered.clone();
    without.play = None;
    s.save_deliveries(&[without]).await.unwrap();
    assert_eq!(s.deliveries("ex-1", 1).await.unwrap()[0], answered);

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
