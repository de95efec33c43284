//! Two-way play: every response, post, score and decision of a run, in the
//! order they were taken. Appended only; an edit is a later row.

use super::{Store, StoreError};

/// One response, post, score or decision.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PlayRow {
    /// Assigned on insert (ids grow in insertion order); ignored there.
    pub id: i64,
    pub exercise_id: String,
    pub run: i64,
    /// `response`, `post`, `score` or `decision`.
    pub kind: String,
    pub team_id: Option<String>,
    /// The inject answered, the channel posted to, what was scored
    /// (`inject:<id>` or `objective:<id>`), the decision's name.
    pub subject: Option<String>,
    /// The rest, as JSON (choice and text, a score and note, teams).
    pub body: String,
    /// Who, as they gave it (a name on a dashboard, an API token's name).
    pub by_name: Option<String>,
    /// Where it came from: `dashboard`, `mqtt`, `api:<ip>`, `control`.
    pub source: String,
    pub wall_ms: i64,
    pub exercise_secs: i64,
}

/// Appends play row `$row` on the transaction `$tx`; a
/// `Result<i64, sqlx::Error>`: its id.
macro_rules! insert_play_on {
    ($tx:expr, $row:expr) => {
        async {
            let id: i64 = sqlx::query_scalar(
                "UPDATE id_counters SET last_id = last_id + 1 \
                 WHERE name = 'play_events' RETURNING last_id",
            )
            .fetch_one(&mut *$tx)
            .await?;
            sqlx::query(
                "INSERT INTO play_events \
                 (id, exercise_id, run, kind, team_id, subject, body, by_name, source, wall_ms, \
                 exercise_secs) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(id)
            .bind(&$row.exercise_id)
            .bind($row.run)
            .bind(&$row.kind)
            .bind(&$row.team_id)
            .bind(&$row.subject)
            .bind(&$row.body)
            .bind(&$row.by_name)
            .bind(&$row.source)
            .bind($row.wall_ms)
            .bind($row.exercise_secs)
            .execute(&mut *$tx)
            .await?;
            Ok::<i64, sqlx::Error>(id)
        }
    };
}
pub(super) use insert_play_on;

impl Store {
    /// The play rows of one run of an exercise, in the order they were taken.
    pub async fn play_events(
        &self,
        exercise_id: &str,
        run: i64,
    ) -> Result<Vec<PlayRow>, StoreError> {
        let sql = "SELECT id, exercise_id, run, kind, team_id, subject, body, by_name, source, \
                   wall_ms, exercise_secs FROM play_events WHERE exercise_id = $1 AND run = $2 \
                   ORDER BY id";
        let rows = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(exercise_id).bind(run).fetch_all(pool).await
        })?;
        Ok(rows)
    }
}
