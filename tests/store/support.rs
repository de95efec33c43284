//! `TestDb`: a fresh store of one backend for each test, and the rows the
//! cases store.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use tempfile::TempDir;

use scip_orchestrator::store::{ControlRow, DeliveryRow, ExerciseRow, Store, default_sqlite_url};

/// A fresh store of one backend, removed when dropped.
pub struct TestDb {
    pub store: Store,
    pub backend: &'static str,
    /// Connects another store to the same database.
    pub url: String,
    _dir: Option<TempDir>,
    /// (admin URL, schema) of a PostgreSQL test schema.
    schema: Option<(String, String)>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
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

    pub async fn postgres() -> TestDb {
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

pub fn exercise(id: &str, created_wall_ms: i64) -> ExerciseRow {
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

pub fn delivery(
    exercise_id: &str,
    run: i64,
    team: &str,
    inject: &str,
    position: i64,
) -> DeliveryRow {
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
        watched: None,
        sent_secs: None,
        play: None,
    }
}

pub fn control(exercise_id: &str, command: &str, source: &str, accepted: bool) -> ControlRow {
    ControlRow {
        id: 0,
        exercise_id: exercise_id.into(),
        at_wall_ms: 1_700_000_000_000,
        command: command.into(),
        reason: None,
        source: source.into(),
        accepted,
        message: None,
        exercise_secs: None,
    }
}
