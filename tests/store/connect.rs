//! Connecting: each backend answers, SQLite makes its folder and runs in WAL
//! mode or in memory, and an unsupported URL is refused without echoing it.

use scip_orchestrator::store::{Store, StoreError, default_sqlite_url};

use crate::support::{TestDb, exercise};

on_both_backends!(backend_answers);

async fn backend_answers(db: &TestDb) {
    assert_eq!(db.store.backend(), db.backend);
    db.store.ping().await.unwrap();
    assert!(db.store.list_exercises().await.unwrap().is_empty());
}

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
