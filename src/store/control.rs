//! The control log: every command as received, from the control topic,
//! the API or a signal, with what became of it.

use super::{Store, StoreError, classify};

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
    /// The refusal, or what an edit did (a seek: from where, how many sent).
    pub message: Option<String>,
    /// The exercise second it took effect at (a seek: the second it jumped
    /// to); `None` for rows stored before it was kept.
    pub exercise_secs: Option<i64>,
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
                 (id, exercise_id, at_wall_ms, command, reason, source, accepted, message, \
                 exercise_secs) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(id)
            .bind(&$row.exercise_id)
            .bind($row.at_wall_ms)
            .bind(&$row.command)
            .bind(&$row.reason)
            .bind(&$row.source)
            .bind($row.accepted)
            .bind(&$row.message)
            .bind($row.exercise_secs)
            .execute(&mut *$tx)
            .await?;
            Ok::<i64, sqlx::Error>(id)
        }
    };
}
pub(super) use insert_control_on;

impl Store {
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
        let sql = "SELECT id, exercise_id, at_wall_ms, command, reason, source, accepted, message, \
                   exercise_secs \
                   FROM control_log WHERE exercise_id = $1 ORDER BY id";
        let rows = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(exercise_id).fetch_all(pool).await
        })?;
        Ok(rows)
    }
}
