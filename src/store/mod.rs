//! Persistence for `serve`: exercises, their delivery records and the control
//! audit log, in SQLite (one node) or PostgreSQL (several nodes sharing one
//! database), so that a `kill -9` loses nothing.
//!
//! `Store` wraps a pool of either backend. Every query is written once in
//! portable SQL and runs on both (`$1` placeholders, which SQLite reads too,
//! except in multi-row statements: see `Placeholders`); the schema is one set of
//! embedded migrations (`migrations/`) applied at connect. Times are unix
//! milliseconds of the wall clock.
//!
//! Rows here are database rows, not domain types: the caller converts at the
//! boundary. Statuses are stored as text; only [`DELIVERED`] means something to
//! the store, because a confirmation is written once (see
//! [`Store::save_deliveries`]).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::error::ErrorKind;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// The one delivery status the store knows: a delivered record is final.
pub const DELIVERED: &str = "delivered";

/// How long a SQLite writer waits for another one before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `connect` and every query wait for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the store, split by how the caller reacts.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is neither `sqlite:` nor `postgres:`.
    #[error(
        "unsupported database URL scheme {scheme:?}: expected sqlite://FILE, sqlite::memory: or postgres://..."
    )]
    UnsupportedUrl { scheme: String },
    /// The folder of a SQLite file could not be created.
    #[error("cannot create the database folder {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    /// The row (an exercise id, a delivery key) is already stored.
    #[error("{what} already exists")]
    Conflict { what: String },
    /// The row, or the exercise a new row belongs to, is not stored.
    #[error("{what} not found")]
    NotFound { what: String },
    /// The schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migrate(#[from] MigrateError),
    /// The database failed or could not be reached; retrying may help.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// One exercise: its scenario and everything needed to recover its clock
/// (SPEC section 8: wall-clock start, total paused time, speed).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ExerciseRow {
    pub id: String,
    pub name: Option<String>,
    pub scenario_json: String,
    pub state: String,
    pub run: i64,
    pub speed: f64,
    pub duration_secs: i64,
    pub started_wall_ms: Option<i64>,
    pub paused_total_ms: i64,
    pub paused_since_wall_ms: Option<i64>,
    pub created_wall_ms: i64,
    pub updated_wall_ms: i64,
    /// The node holding the exercise's lease (future use).
    pub owner: Option<String>,
    /// The lease's fencing epoch (future use).
    pub epoch: i64,
    /// Turn-based exercises: the turn under way or just over; else 0.
    pub turn: i64,
    /// Which life of the id this is: random, drawn at creation; team links
    /// name it. Empty for rows stored before it existed.
    pub incarnation: String,
}

/// An API token an admin issued; only its hash is kept.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TokenRow {
    pub id: String,
    pub name: Option<String>,
    pub role: String,
    pub hash: String,
    pub created_wall_ms: i64,
}

/// A team's dashboard link: its generation, expiry and whether revoked.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TeamLinkRow {
    pub exercise_id: String,
    pub team_id: String,
    pub generation: i64,
    pub expires_unix: i64,
    pub revoked: bool,
}

/// The clock fields of an exercise, as written by [`Store::update_exercise_clock`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClockRow {
    pub state: String,
    pub run: i64,
    pub started_wall_ms: Option<i64>,
    pub paused_total_ms: i64,
    pub paused_since_wall_ms: Option<i64>,
    pub updated_wall_ms: i64,
    /// Turn-based exercises: the turn under way or just over; else 0.
    pub turn: i64,
}

/// The delivery record of one (team, inject) pair in one run of an exercise,
/// keyed by (exercise_id, run, team_id, inject_id).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DeliveryRow {
    pub exercise_id: String,
    pub run: i64,
    pub team_id: String,
    pub inject_id: String,
    pub due_secs: i64,
    pub status: String,
    pub attempts: i64,
    pub due_wall_ms: Option<i64>,
    pub published_wall_ms: Option<i64>,
    /// The broker's acknowledgement; written once.
    pub acked_wall_ms: Option<i64>,
    /// The team client's receipt; written once.
    pub received_wall_ms: Option<i64>,
    pub latency_ms: Option<f64>,
    pub late: bool,
    pub last_error: Option<String>,
    /// Order within the run.
    pub position: i64,
    /// The inject itself for injects added live; `None` for scenario injects.
    pub inject_json: Option<String>,
}

/// One control command as received, with what became of it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ControlRow {
    /// Assigned by [`Store::insert_control`]; ignored on insert.
    pub id: i64,
    pub exercise_id: String,
    pub at_wall_ms: i64,
    pub command: String,
    pub reason: Option<String>,
    /// Where it came from: `api:127.0.0.1`, `mqtt`, `signal`.
    pub source: String,
    pub accepted: bool,
    pub message: Option<String>,
}

/// The database of `serve`. Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
}

/// The SQLite URL of the database file in `data_dir`.
pub fn default_sqlite_url(data_dir: &Path) -> String {
    sqlite_url(&data_dir.join("scip.db"))
}

/// The SQLite URL of the database file `path`.
pub fn sqlite_url(path: &Path) -> String {
    let mut url = String::from("sqlite://");
    // The SQLite URL parser percent-decodes the path and splits at `?`.
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url
}

/// Runs `$body` with `$pool` bound to the pool of whichever backend is in use;
/// the body is compiled once per backend.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// Runs the statements that write `$rows` (new delivery records) on the
/// connection or transaction `$conn`; a `Result<(), sqlx::Error>`.
macro_rules! insert_deliveries_on {
    ($conn:expr, $style:expr, $rows:expr) => {
        async {
            for chunk in power_of_two_chunks($rows) {
                let sql = format!(
                    "INSERT INTO deliveries ({DELIVERY_COLUMNS}) VALUES {}",
                    placeholders($style, chunk.len(), DELIVERY_COLUMN_COUNT)
                );
                let mut query = sqlx::query(&sql);
                for r in chunk {
                    query = query
                        .bind(&r.exercise_id)
                        .bind(r.run)
                        .bind(&r.team_id)
                        .bind(&r.inject_id)
                        .bind(r.due_secs)
                        .bind(&r.status)
                        .bind(r.attempts)
                        .bind(r.due_wall_ms)
                        .bind(r.published_wall_ms)
                        .bind(r.acked_wall_ms)
                        .bind(r.received_wall_ms)
                        .bind(r.latency_ms)
                        .bind(r.late)
                        .bind(&r.last_error)
                        .bind(r.position)
                        .bind(&r.inject_json);
                }
                query.execute(&mut *$conn).await?;
            }
            Ok::<(), sqlx::Error>(())
        }
    };
}

/// Saves the progress of `$rows` on `$conn` (see [`Store::save_deliveries`]);
/// a `Result<u64, sqlx::Error>`: how many matched a stored record.
macro_rules! save_deliveries_on {
    ($conn:expr, $style:expr, $rows:expr) => {
        async {
            let mut matched = 0;
            for segment in without_repeated_keys($rows) {
                for chunk in power_of_two_chunks(segment) {
                    let sql = save_deliveries_sql($style, chunk.len());
                    let mut query = sqlx::query(&sql);
                    for r in chunk {
                        query = query
                            .bind(&r.exercise_id)
                            .bind(r.run)
                            .bind(&r.team_id)
                            .bind(&r.inject_id)
                            .bind(&r.status)
                            .bind(r.attempts)
                            .bind(r.due_wall_ms)
                            .bind(r.published_wall_ms)
                            .bind(r.acked_wall_ms)
                            .bind(r.received_wall_ms)
                            .bind(r.latency_ms)
                            .bind(r.late)
                            .bind(&r.last_error);
                    }
                    matched += query.execute(&mut *$conn).await?.rows_affected();
                }
            }
            Ok::<u64, sqlx::Error>(matched)
        }
    };
}

/// Appends control row `$row` on the transaction `$tx`; a
/// `Result<i64, sqlx::Error>`: its id.
macro_rules! insert_control_on {
    ($tx:expr, $row:expr) => {
        async {
            // The counter row stays locked until commit, so concurrent
            // writers (other nodes too) take ids one after another.
            let id: i64 = sqlx::query_scalar(
                "UPDATE id_counters SET last_id = last_id + 1 \
                 WHERE name = 'control_log' RETURNING last_id",
            )
            .fetch_one(&mut *$tx)
            .await?;
            sqlx::query(
                "INSERT INTO control_log \
                 (id, exercise_id, at_wall_ms, command, reason, source, accepted, message) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id)
            .bind(&$row.exercise_id)
            .bind($row.at_wall_ms)
            .bind(&$row.command)
            .bind(&$row.reason)
            .bind(&$row.source)
            .bind($row.accepted)
            .bind(&$row.message)
            .execute(&mut *$tx)
            .await?;
            Ok::<i64, sqlx::Error>(id)
        }
    };
}

/// Writes clock `$clock` of exercise `$id` on `$conn`; a
/// `Result<u64, sqlx::Error>`: rows changed (0 when it is not stored).
macro_rules! update_clock_on {
    ($conn:expr, $id:expr, $clock:expr) => {
        sqlx::query(
            "UPDATE exercises SET state = $2, run = $3, started_wall_ms = $4, \
             paused_total_ms = $5, paused_since_wall_ms = $6, updated_wall_ms = $7, \
             turn = $8 WHERE id = $1",
        )
        .bind($id)
        .bind(&$clock.state)
        .bind($clock.run)
        .bind($clock.started_wall_ms)
        .bind($clock.paused_total_ms)
        .bind($clock.paused_since_wall_ms)
        .bind($clock.updated_wall_ms)
        .bind($clock.turn)
        .execute(&mut *$conn)
        .await
        .map(|r| r.rows_affected())
    };
}

/// What the journal writes in one transaction: all of it, or none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Appended to the control log in this order.
    pub controls: Vec<ControlRow>,
    /// New delivery records.
    pub inserts: Vec<DeliveryRow>,
    /// Exercise clocks; one of an exercise no longer stored is skipped.
    pub clocks: Vec<(String, ClockRow)>,
    /// Progress of stored records, as [`Store::save_deliveries`] writes it.
    pub saves: Vec<DeliveryRow>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.controls.is_empty()
            && self.inserts.is_empty()
            && self.clocks.is_empty()
            && self.saves.is_empty()
    }
}

impl StoreError {
    /// Whether writing the same again may succeed: the database failed, was
    /// unreachable or refused for now. A unique, foreign key, not-null or
    /// check violation is permanent: the rows themselves are wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => !matches!(
                db.kind(),
                ErrorKind::UniqueViolation
                    | ErrorKind::ForeignKeyViolation
                    | ErrorKind::NotNullViolation
                    | ErrorKind::CheckViolation
            ),
            StoreError::Database(_) => true,
            _ => false,
        }
    }
}

impl Store {
    /// Opens `url` and brings its schema up to date.
    ///
    /// - `sqlite://path/to/file.db`: created with its folder when missing; WAL
    ///   journal, `synchronous=FULL`, a busy timeout, foreign keys on.
    /// - `sqlite::memory:`: a private in-memory database (tests).
    /// - `postgres://user@host:port/db` (or `postgresql://`).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let pool = if url.starts_with("sqlite:") {
            Pool::Sqlite(connect_sqlite(url).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Pool::Postgres(connect_postgres(url).await?)
        } else {
            let scheme = url.split(':').next().unwrap_or_default().to_owned();
            return Err(StoreError::UnsupportedUrl { scheme });
        };
        let store = Store { pool };
        with_pool!(store, pool => MIGRATOR.run(pool).await)?;
        Ok(store)
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Waits for queries in flight and closes every connection.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    /// Stores a new exercise; [`StoreError::Conflict`] when its id is taken.
    pub async fn insert_exercise(&self, row: &ExerciseRow) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO exercises ({EXERCISE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        );
        with_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(&row.id)
                .bind(&row.name)
                .bind(&row.scenario_json)
                .bind(&row.state)
                .bind(row.run)
                .bind(row.speed)
                .bind(row.duration_secs)
                .bind(row.started_wall_ms)
                .bind(row.paused_total_ms)
                .bind(row.paused_since_wall_ms)
                .bind(row.created_wall_ms)
                .bind(row.updated_wall_ms)
                .bind(&row.owner)
                .bind(row.epoch)
                .bind(row.turn)
                .bind(&row.incarnation)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(|e| {
            let what = || format!("exercise {}", row.id);
            classify(e, what, what)
        })?;
        Ok(())
    }

    /// The exercise `id`, if stored.
    pub async fn get_exercise(&self, id: &str) -> Result<Option<ExerciseRow>, StoreError> {
        let sql = format!("SELECT {EXERCISE_COLUMNS} FROM exercises WHERE id = $1");
        let row = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await
        })?;
        Ok(row)
    }

    /// Every exercise, oldest first.
    pub async fn list_exercises(&self) -> Result<Vec<ExerciseRow>, StoreError> {
        let sql = format!("SELECT {EXERCISE_COLUMNS} FROM exercises ORDER BY created_wall_ms, id");
        let rows = with_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await)?;
        Ok(rows)
    }

    /// Writes the clock of exercise `id`; [`StoreError::NotFound`] when it is
    /// not stored.
    pub async fn update_exercise_clock(
        &self,
        id: &str,
        clock: &ClockRow,
    ) -> Result<(), StoreError> {
        let done = with_pool!(self, pool => {
            async {
                let mut conn = pool.acquire().await?;
                update_clock_on!(conn, id, clock)
            }
            .await
        })?;
        if done == 0 {
            return Err(StoreError::NotFound {
                what: format!("exercise {id}"),
            });
        }
        Ok(())
    }

    /// Sets the incarnation of exercise `id` (one stored before incarnations
    /// existed); [`StoreError::NotFound`] when it is not stored.
    pub async fn set_incarnation(&self, id: &str, incarnation: &str) -> Result<(), StoreError> {
        let done = with_pool!(self, pool => {
            sqlx::query("UPDATE exercises SET incarnation = $2 WHERE id = $1")
                .bind(id)
                .bind(incarnation)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        if done == 0 {
            return Err(StoreError::NotFound {
                what: format!("exercise {id}"),
            });
        }
        Ok(())
    }

    /// Deletes exercise `id` with its delivery records and control log;
    /// `false` when it was not stored.
    pub async fn delete_exercise(&self, id: &str) -> Result<bool, StoreError> {
        let done = with_pool!(self, pool => {
            sqlx::query("DELETE FROM exercises WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done > 0)
    }

    /// Stores new delivery records, all or none, in one transaction.
    /// [`StoreError::Conflict`] when a key is taken, [`StoreError::NotFound`]
    /// when the exercise is not stored.
    pub async fn insert_deliveries(&self, rows: &[DeliveryRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let style = self.placeholder_style();
        with_pool!(self, pool => {
            async {
                let mut tx = pool.begin().await?;
                insert_deliveries_on!(tx, style, rows).await?;
                tx.commit().await
            }
            .await
        })
        .map_err(|e| {
            let exercise = if rows.iter().all(|r| r.exercise_id == rows[0].exercise_id) {
                format!("exercise {}", rows[0].exercise_id)
            } else {
                "the exercise of a delivery record".to_owned()
            };
            classify(
                e,
                || format!("a delivery record of the batch ({exercise})"),
                || exercise.clone(),
            )
        })?;
        Ok(())
    }

    /// The delivery records of one run of an exercise, in run order.
    pub async fn deliveries(
        &self,
        exercise_id: &str,
        run: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE exercise_id = $1 AND run = $2 \
             ORDER BY position, team_id, inject_id"
        );
        let rows = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(exercise_id).bind(run).fetch_all(pool).await
        })?;
        Ok(rows)
    }

    /// Saves the progress of stored delivery records in one transaction, as if
    /// applied one after another, and returns how many matched a stored record
    /// (unknown keys are skipped).
    ///
    /// Written: status, attempts, due and published wall times, latency, late
    /// and last error. A confirmation is written once:
    /// - `acked_wall_ms` and `received_wall_ms` are only set where still unset;
    /// - a record stored as [`DELIVERED`] is final: a later save (a stale retry,
    ///   another status, another latency) leaves it as it is, except that it
    ///   may still fill in `received_wall_ms`.
    ///
    /// The plan fields (`due_secs`, `position`, `inject_json`) never change.
    pub async fn save_deliveries(&self, rows: &[DeliveryRow]) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let style = self.placeholder_style();
        let matched = with_pool!(self, pool => {
            async {
                let mut tx = pool.begin().await?;
                let matched = save_deliveries_on!(tx, style, rows).await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(matched)
            }
            .await
        })?;
        Ok(matched)
    }

    /// Writes `batch` in one transaction: control rows, new records, clocks,
    /// then progress, as if one after another. Nothing is written when any
    /// part fails; [`StoreError::is_transient`] says whether to try again.
    pub async fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let style = self.placeholder_style();
        with_pool!(self, pool => {
            async {
                let mut tx = pool.begin().await?;
                for row in &batch.controls {
                    insert_control_on!(tx, row).await?;
                }
                insert_deliveries_on!(tx, style, &batch.inserts).await?;
                for (id, clock) in &batch.clocks {
                    update_clock_on!(tx, id, clock)?;
                }
                save_deliveries_on!(tx, style, &batch.saves).await?;
                tx.commit().await
            }
            .await
        })
        .map_err(|e| {
            classify(
                e,
                || "a row of the batch".to_owned(),
                || "the exercise of a row of the batch".to_owned(),
            )
        })?;
        Ok(())
    }

    /// Appends a control command to the audit log and returns its id. Ids grow
    /// in insertion order across all exercises.
    pub async fn insert_control(&self, row: &ControlRow) -> Result<i64, StoreError> {
        let id = with_pool!(self, pool => {
            async {
                let mut tx = pool.begin().await?;
                let id = insert_control_on!(tx, row).await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(id)
            }
            .await
        })
        .map_err(|e| {
            let what = || format!("exercise {}", row.exercise_id);
            classify(e, what, what)
        })?;
        Ok(id)
    }

    /// The control log of an exercise in insertion order.
    pub async fn control_log(&self, exercise_id: &str) -> Result<Vec<ControlRow>, StoreError> {
        let sql = "SELECT id, exercise_id, at_wall_ms, command, reason, source, accepted, message \
                   FROM control_log WHERE exercise_id = $1 ORDER BY id";
        let rows = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(exercise_id).fetch_all(pool).await
        })?;
        Ok(rows)
    }

    /// The setting `key`, stored as `value` first if it has none yet; the
    /// stored value either way (another node may have set it first).
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        with_pool!(self, pool => {
            sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(key)
                .bind(value)
                .execute(pool)
                .await
                .map(drop)
        })?;
        let (stored,): (String,) = with_pool!(self, pool => {
            sqlx::query_as("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_one(pool)
                .await
        })?;
        Ok(stored)
    }

    pub async fn insert_token(&self, row: &TokenRow) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO api_tokens (id, name, role, hash, created_wall_ms) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&row.id)
            .bind(&row.name)
            .bind(&row.role)
            .bind(&row.hash)
            .bind(row.created_wall_ms)
            .execute(pool)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let rows = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, name, role, hash, created_wall_ms FROM api_tokens ORDER BY created_wall_ms, id",
            )
            .fetch_all(pool)
            .await
        })?;
        Ok(rows)
    }

    /// Deletes token `id`; false when it was not stored.
    pub async fn delete_token(&self, id: &str) -> Result<bool, StoreError> {
        let done = with_pool!(self, pool => {
            sqlx::query("DELETE FROM api_tokens WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done > 0)
    }

    /// Writes a team's dashboard link state.
    pub async fn put_team_link(&self, row: &TeamLinkRow) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO team_links (exercise_id, team_id, generation, expires_unix, revoked) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (exercise_id, team_id) DO UPDATE SET \
                 generation = excluded.generation, expires_unix = excluded.expires_unix, \
                 revoked = excluded.revoked",
            )
            .bind(&row.exercise_id)
            .bind(&row.team_id)
            .bind(row.generation)
            .bind(row.expires_unix)
            .bind(row.revoked)
            .execute(pool)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    /// The dashboard links of an exercise's teams.
    pub async fn team_links(&self, exercise_id: &str) -> Result<Vec<TeamLinkRow>, StoreError> {
        let rows = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT exercise_id, team_id, generation, expires_unix, revoked \
                 FROM team_links WHERE exercise_id = $1 ORDER BY team_id",
            )
            .bind(exercise_id)
            .fetch_all(pool)
            .await
        })?;
        Ok(rows)
    }

    fn placeholder_style(&self) -> Placeholders {
        match self.pool {
            Pool::Sqlite(_) => Placeholders::Anonymous,
            Pool::Postgres(_) => Placeholders::Numbered,
        }
    }
}

/// The schema, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!();

/// Most rows in one statement: 512 rows of 16 columns stay far below both
/// backends' limits on bound parameters (SQLite 32766, PostgreSQL 65535).
const MAX_CHUNK: usize = 512;

const EXERCISE_COLUMNS: &str = "id, name, scenario_json, state, run, speed, duration_secs, \
    started_wall_ms, paused_total_ms, paused_since_wall_ms, created_wall_ms, updated_wall_ms, \
    owner, epoch, turn, incarnation";

/// In the order `insert_deliveries` binds them.
const DELIVERY_COLUMNS: &str = "exercise_id, run, team_id, inject_id, due_secs, status, \
    attempts, due_wall_ms, published_wall_ms, acked_wall_ms, received_wall_ms, latency_ms, late, \
    last_error, position, inject_json";
const DELIVERY_COLUMN_COUNT: usize = 16;

/// A pool of one backend or the other. An enum rather than `sqlx::any::AnyPool`:
/// the Any driver cannot read a SQLite `BOOLEAN` column, and cannot configure
/// SQLite (WAL, synchronous, busy timeout, creating the file) beyond what its URL
/// says.
#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

async fn connect_sqlite(url: &str) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::from_str(url)?
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if in_memory {
        // One connection that never closes: the database lives as long as it.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        return Ok(pool);
    }
    if let Some(dir) = options.get_filename().parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    // WAL: readers never block the writer. synchronous=FULL: a commit is on disk
    // before it returns, so neither a kill -9 nor a power cut loses it.
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    Ok(pool)
}

async fn connect_postgres(url: &str) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// How the bound parameters of a multi-row statement are spelled.
#[derive(Debug, Clone, Copy)]
enum Placeholders {
    /// `$1, $2, ..`: PostgreSQL (SQLite reads them too).
    Numbered,
    /// `?, ?, ..`: SQLite. SQLite finds the number of a named parameter by
    /// scanning all of them, so binding n numbered parameters costs n²: 10,000
    /// delivery rows took 1.6 s to insert with `$n` and 0.05 s with `?`.
    Anonymous,
}

/// Turns a unique violation into `Conflict` (of what `taken` names) and a
/// foreign key violation into `NotFound` (of what `missing` names); everything
/// else stays a database error.
fn classify(
    error: sqlx::Error,
    taken: impl FnOnce() -> String,
    missing: impl FnOnce() -> String,
) -> StoreError {
    let kind = match &error {
        sqlx::Error::Database(db) => db.kind(),
        _ => ErrorKind::Other,
    };
    match kind {
        ErrorKind::UniqueViolation => StoreError::Conflict { what: taken() },
        ErrorKind::ForeignKeyViolation => StoreError::NotFound { what: missing() },
        _ => StoreError::Database(error),
    }
}

/// `($1, .., $cols), ($cols+1, ..), ..` (or the same with `?`) for `rows` rows.
fn placeholders(style: Placeholders, rows: usize, cols: usize) -> String {
    let mut sql = String::with_capacity(rows * cols * 6);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            match style {
                Placeholders::Numbered => {
                    sql.push('$');
                    sql.push_str(&(r * cols + c + 1).to_string());
                }
                Placeholders::Anonymous => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql
}

/// One multi-row update of `rows` records. `VALUES` columns are named
/// `column1`, `column2`, .. on both backends; the SET expressions see the
/// stored row as it was before the statement.
fn save_deliveries_sql(style: Placeholders, rows: usize) -> String {
    let frozen = format!("d.status = '{DELIVERED}'");
    let keep = |column: &str, new: &str| {
        format!("{column} = CASE WHEN {frozen} THEN d.{column} ELSE v.{new} END")
    };
    let once = |column: &str, new: &str| format!("{column} = COALESCE(d.{column}, v.{new})");
    let sets = [
        keep("status", "column5"),
        keep("attempts", "column6"),
        keep("due_wall_ms", "column7"),
        keep("published_wall_ms", "column8"),
        once("acked_wall_ms", "column9"),
        once("received_wall_ms", "column10"),
        keep("latency_ms", "column11"),
        keep("late", "column12"),
        keep("last_error", "column13"),
    ];
    format!(
        "UPDATE deliveries AS d SET {} FROM (VALUES {}) AS v \
         WHERE d.exercise_id = v.column1 AND d.run = v.column2 \
         AND d.team_id = v.column3 AND d.inject_id = v.column4",
        sets.join(", "),
        placeholders(style, rows, 13)
    )
}

/// Splits `rows` into statements of 512, 256, .., 1 rows, so that a handful of
/// distinct statements (each prepared once per connection) serve every batch
/// size.
fn power_of_two_chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let n = 1 << rows.len().min(MAX_CHUNK).ilog2();
        let (chunk, rest) = rows.split_at(n);
        rows = rest;
        Some(chunk)
    })
}

/// Splits `rows` before every key already seen in the current segment: one
/// statement updating a key twice would apply only one of the two.
fn without_repeated_keys(rows: &[DeliveryRow]) -> Vec<&[DeliveryRow]> {
    let mut segments = Vec::new();
    let mut seen = HashSet::new();
    let mut start = 0;
    for (i, r) in rows.iter().enumerate() {
        let key = (
            r.exercise_id.as_str(),
            r.run,
            r.team_id.as_str(),
            r.inject_id.as_str(),
        );
        if !seen.insert(key) {
            segments.push(&rows[start..i]);
            seen.clear();
            seen.insert(key);
            start = i;
        }
    }
    segments.push(&rows[start..]);
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two() {
        let rows: Vec<u32> = (0..1300).collect();
        let sizes: Vec<usize> = power_of_two_chunks(&rows).map(<[u32]>::len).collect();
        assert_eq!(sizes, [512, 512, 256, 16, 4]);
    }

    #[test]
    fn placeholders_number_rows_after_each_other() {
        assert_eq!(
            placeholders(Placeholders::Numbered, 2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(placeholders(Placeholders::Anonymous, 1, 2), "(?, ?)");
    }

    #[test]
    fn default_url_escapes_what_the_parser_decodes() {
        assert_eq!(
            default_sqlite_url(Path::new("/var/lib/scip 100%?#")),
            "sqlite:///var/lib/scip 100%25%3F%23/scip.db"
        );
    }
}
