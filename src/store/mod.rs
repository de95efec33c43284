//! Persistence for `serve`: exercises, their delivery records, the control
//! audit log, and the tokens and links access rests on, in SQLite (one node)
//! or PostgreSQL (several nodes sharing one database), so that a `kill -9`
//! loses nothing.
//!
//! `Store` wraps a pool of either backend (this file: connecting, the
//! schema's migrations, errors); each table group adds its methods in a file
//! of its own: `exercises`, `deliveries`, `control`, `play`, `tokens`, and `batch`,
//! the journal's transaction over several of them. Every query is written
//! once in portable SQL and runs on both (`$1` placeholders, which SQLite
//! reads too); multi-row statements are built with `sqlx::QueryBuilder`,
//! which spells each backend's own placeholders. The schema is one set of
//! embedded migrations (`migrations/`) applied at connect. Times are unix
//! milliseconds of the wall clock.
//!
//! Rows here are database rows, not domain types: the caller converts at the
//! boundary. Statuses are stored as text; only [`DELIVERED`] means something to
//! the store, because a confirmation is written once (see
//! [`Store::save_deliveries`]).

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

/// Runs `$body` with `$pool` bound to the pool of whichever backend is in use;
/// the body is compiled once per backend.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

mod batch;
mod cluster;
mod control;
mod deliveries;
mod exercises;
mod play;
mod tokens;

pub use batch::{Batch, Fence};
pub use cluster::{Claimed, ClusterRows, LeaseRow, NodeLock, NodeRow};
pub use control::ControlRow;
pub use deliveries::{DELIVERED, DeliveryRow};
pub use exercises::{ClockRow, ExerciseRow};
pub use play::PlayRow;
pub use tokens::{TeamLinkRow, TokenRow};

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
    /// Several nodes need PostgreSQL: SQLite is single-node.
    #[error("several nodes need PostgreSQL; SQLite is single-node")]
    SingleNode,
    /// The batch's fence failed: its exercise's lease moved on to a later
    /// epoch (another node claimed it), so this writer no longer owns it.
    /// Nothing of the batch was written.
    #[error(
        "exercise {exercise_id}: lease epoch {epoch} is no longer current; another node owns the exercise"
    )]
    Fenced { exercise_id: String, epoch: i64 },
    /// The database failed or could not be reached; retrying may help.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
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
}

/// The schema, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!();

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

/// Longest a PostgreSQL transaction may sit waiting for its client before
/// the server ends it. Ours take milliseconds; a client that stops midway (a
/// frozen node) must not keep the row locks a new lease owner needs: a lease
/// row share-locked by a batch cannot be claimed (`SKIP LOCKED`).
const IDLE_IN_TRANSACTION: &str = "2000";

async fn connect_postgres(url: &str) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)?
        .options([("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION)]);
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    Ok(pool)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_escapes_what_the_parser_decodes() {
        assert_eq!(
            default_sqlite_url(Path::new("/var/lib/scip 100%?#")),
            "sqlite:///var/lib/scip 100%25%3F%23/scip.db"
        );
    }
}
