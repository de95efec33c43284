//! Exercises: the scenario of each and what recovers its clock after a
//! restart.

use super::{Store, StoreError, classify};

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
pub(super) use update_clock_on;

pub(super) const EXERCISE_COLUMNS: &str = "id, name, scenario_json, state, run, speed, duration_secs, \
    started_wall_ms, paused_total_ms, paused_since_wall_ms, created_wall_ms, updated_wall_ms, \
    owner, epoch, turn, incarnation";

/// Inserts exercise `$row` on `$conn` (a pool or a transaction); a
/// `Result<(), sqlx::Error>`.
macro_rules! insert_exercise_on {
    ($conn:expr, $row:expr) => {{
        let sql = format!(
            "INSERT INTO exercises ({}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            $crate::store::exercises::EXERCISE_COLUMNS
        );
        let row: &$crate::store::ExerciseRow = $row;
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
            .execute($conn)
            .await
            .map(drop)
    }};
}
pub(super) use insert_exercise_on;

impl Store {
    /// Stores a new exercise; [`StoreError::Conflict`] when its id is taken.
    pub async fn insert_exercise(&self, row: &ExerciseRow) -> Result<(), StoreError> {
        with_pool!(self, pool => insert_exercise_on!(pool, row)).map_err(|e| {
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
}
