//! Leases and their fence (several nodes, PostgreSQL only): claims raise the
//! epoch and have one winner, renewals never revive an expired lease, and a
//! batch written under an old epoch stores nothing.

use scip_orchestrator::store::{Batch, Claimed, Fence, Store, StoreError};

use crate::support::{TestDb, control, exercise};

fn fenced(id: &str, epoch: i64, command: &str) -> Batch {
    Batch {
        fence: Some(Fence {
            exercise_id: id.into(),
            incarnation: format!("life-of-{id}"),
            epoch,
        }),
        controls: vec![control(id, command, "api:127.0.0.1", true)],
        ..Batch::default()
    }
}

async fn stored(s: &Store, ids: &[&str]) {
    for (k, id) in ids.iter().enumerate() {
        s.insert_exercise(&exercise(id, k as i64)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_under_an_old_epoch_is_refused_and_stores_nothing() {
    let db = TestDb::postgres().await;
    let s = &db.store;
    stored(s, &["ex-1"]).await;
    assert_eq!(s.insert_lease("ex-1", "a", 6000).await.unwrap(), 1);
    s.write(&fenced("ex-1", 1, "start")).await.unwrap();
    // Held and alive: nobody else can claim it, and its owner renews it.
    assert!(
        s.claim_leases("b", &[], false, 10, 6000)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.renew_leases("a", &[("ex-1".into(), 1)], 6000)
            .await
            .unwrap(),
        [("ex-1".to_owned(), 1)]
    );
    // Freed (a drain), then claimed by b at the next epoch: no takeover.
    assert!(s.release_lease("a", "ex-1", 1).await.unwrap());
    assert_eq!(
        s.claim_leases("b", &[], false, 10, 6000).await.unwrap(),
        [Claimed {
            exercise_id: "ex-1".into(),
            epoch: 2,
            previous: None
        }]
    );
    // a, late: its write is fenced, nothing of it stored; its renewal fails.
    let err = s.write(&fenced("ex-1", 1, "pause")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { epoch: 1, .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    let log: Vec<String> = s
        .control_log("ex-1")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.command)
        .collect();
    assert_eq!(log, ["start"]);
    assert!(
        s.renew_leases("a", &[("ex-1".into(), 1)], 6000)
            .await
            .unwrap()
            .is_empty()
    );
    s.write(&fenced("ex-1", 2, "pause")).await.unwrap();
    let rows = s.cluster().await.unwrap();
    assert_eq!(rows.leases[0].owner.as_deref(), Some("b"));
    assert_eq!(rows.leases[0].takeovers, 0);

    // A delete checks the lease too: a's is refused, b's goes through.
    assert!(matches!(
        s.delete_exercise_fenced("ex-1", "a", "life-of-ex-1", 1)
            .await,
        Err(StoreError::Fenced { .. })
    ));
    // Even at the right epoch, not by another owner, nor for another life.
    assert!(matches!(
        s.delete_exercise_fenced("ex-1", "a", "life-of-ex-1", 2)
            .await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(
        s.delete_exercise_fenced("ex-1", "b", "an-earlier-life", 2)
            .await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(
        s.delete_exercise_fenced("ex-1", "b", "life-of-ex-1", 2)
            .await
            .unwrap()
    );
    assert!(s.cluster().await.unwrap().leases.is_empty());
    // Created again under the same id, by c, at epoch 1: a batch of the
    // first life at epoch 1 does not pass for this one's.
    let mut again = exercise("ex-1", 9);
    again.incarnation = "second-life".into();
    assert_eq!(
        s.insert_exercise_leased(&again, &[], "c", 6000)
            .await
            .unwrap(),
        1
    );
    let err = s.write(&fenced("ex-1", 1, "stop")).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
    let mut second = fenced("ex-1", 1, "start");
    second.fence.as_mut().unwrap().incarnation = "second-life".into();
    s.write(&second).await.unwrap();
    // Nothing to write, but announcements wait on the fence all the same.
    let empty = Batch {
        fence: fenced("ex-1", 1, "x").fence,
        ..Batch::default()
    };
    assert!(matches!(
        s.write(&empty).await,
        Err(StoreError::Fenced { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_and_never_renewed() {
    let db = TestDb::postgres().await;
    let s = &db.store;
    stored(s, &["ex-1", "ex-2"]).await;
    // A lease whose expiry (by the database's clock) is already past.
    s.insert_lease("ex-1", "a", -1000).await.unwrap();
    s.insert_lease("ex-2", "a", 60_000).await.unwrap();
    assert!(
        s.renew_leases("a", &[("ex-1".into(), 1)], 6000)
            .await
            .unwrap()
            .is_empty(),
        "an expired lease is not renewed: only a claim, at a new epoch, takes it back"
    );
    let claimed = s.claim_leases("c", &[], false, 10, 6000).await.unwrap();
    assert_eq!(
        claimed,
        [Claimed {
            exercise_id: "ex-1".into(),
            epoch: 2,
            previous: Some("a".into())
        }]
    );
    let rows = s.cluster().await.unwrap();
    let ex1 = rows
        .leases
        .iter()
        .find(|l| l.exercise_id == "ex-1")
        .unwrap();
    assert_eq!((ex1.owner.as_deref(), ex1.takeovers), (Some("c"), 1));
    assert!(ex1.expires_ms > rows.now_ms);
    // A restarted a (its lock proves its earlier self gone) takes back what
    // it held, at a new epoch, but never what it holds now.
    assert!(
        s.claim_leases("a", &["ex-2".into()], true, 10, 6000)
            .await
            .unwrap()
            .is_empty()
    );
    // Not without `own` (a running node never takes back its own).
    assert!(
        s.claim_leases("a", &[], false, 10, 6000)
            .await
            .unwrap()
            .is_empty()
    );
    let again = s.claim_leases("a", &[], true, 10, 6000).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].exercise_id.as_str(), again[0].epoch), ("ex-2", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_have_one_winner_per_lease() {
    let db = TestDb::postgres().await;
    let s = &db.store;
    let ids: Vec<String> = (0..40).map(|k| format!("ex-{k:02}")).collect();
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    stored(s, &names).await;
    assert_eq!(s.lease_unleased().await.unwrap(), 40);
    let other = Store::connect(&db.url).await.unwrap();
    let (a, b) = tokio::join!(
        s.claim_leases("a", &[], false, 40, 6000),
        other.claim_leases("b", &[], false, 40, 6000)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 40, "a {} b {}", a.len(), b.len());
    for claim in &a {
        assert!(!b.iter().any(|c| c.exercise_id == claim.exercise_id));
        assert_eq!(claim.epoch, 1);
    }
    // A limit bounds a claim.
    stored(s, &["late-1", "late-2", "late-3"]).await;
    s.lease_unleased().await.unwrap();
    assert_eq!(
        s.claim_leases("c", &[], false, 2, 6000)
            .await
            .unwrap()
            .len(),
        2
    );
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_is_single_node() {
    let db = TestDb::sqlite().await;
    let err = db.store.cluster().await.unwrap_err();
    assert!(matches!(err, StoreError::SingleNode), "{err:?}");
    assert!(err.to_string().contains("several nodes need PostgreSQL"));
}
