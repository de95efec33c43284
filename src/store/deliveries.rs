//! Delivery records: one per (team, inject) pair in each run of an
//! exercise, written in multi-row statements of a few fixed sizes.

use std::collections::HashSet;

use sqlx::{Database, Encode, QueryBuilder, Type};

use super::{Store, StoreError, classify};

/// The one delivery status the store knows: a delivered record is final.
pub const DELIVERED: &str = "delivered";

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
    /// Whether a dashboard of the team was open when it first went out;
    /// written once.
    pub watched: Option<bool>,
    /// The exercise second it last went out (after a seek: the second the
    /// clock jumped to).
    pub sent_secs: Option<i64>,
    /// Two-way play: the record's outcome, answer window, first answer and
    /// condition, as JSON; None when it has none.
    pub play: Option<String>,
}

/// Runs the statements that write `$rows` (new delivery records) on the
/// connection or transaction `$conn`; a `Result<(), sqlx::Error>`.
macro_rules! insert_deliveries_on {
    ($conn:expr, $rows:expr) => {
        async {
            for chunk in $crate::store::deliveries::power_of_two_chunks($rows) {
                $crate::store::deliveries::insert_deliveries_sql(chunk)
                    .build()
                    .execute(&mut *$conn)
                    .await?;
            }
            Ok::<(), sqlx::Error>(())
        }
    };
}
pub(super) use insert_deliveries_on;

/// Saves the progress of `$rows` on `$conn` (see [`Store::save_deliveries`]);
/// a `Result<u64, sqlx::Error>`: how many matched a stored record.
macro_rules! save_deliveries_on {
    ($conn:expr, $rows:expr) => {
        async {
            let mut matched = 0;
            for segment in $crate::store::deliveries::without_repeated_keys($rows) {
                for chunk in $crate::store::deliveries::power_of_two_chunks(segment) {
                    matched += $crate::store::deliveries::save_deliveries_sql(chunk)
                        .build()
                        .execute(&mut *$conn)
                        .await?
                        .rows_affected();
                }
            }
            Ok::<u64, sqlx::Error>(matched)
        }
    };
}
pub(super) use save_deliveries_on;

impl Store {
    /// Stores new delivery records, all or none, in one transaction.
    /// [`StoreError::Conflict`] when a key is taken, [`StoreError::NotFound`]
    /// when the exercise is not stored.
    pub async fn insert_deliveries(&self, rows: &[DeliveryRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        with_pool!(self, pool => {
            async {
                let mut tx = pool.begin().await?;
                insert_deliveries_on!(tx, rows).await?;
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
        let matched = with_pool!(self, pool => {
            async {
                let mut tx = pool.begin().await?;
                let matched = save_deliveries_on!(tx, rows).await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(matched)
            }
            .await
        })?;
        Ok(matched)
    }
}

/// Most rows in one statement: 512 rows of 19 columns stay far below both
/// backends' limits on bound parameters (SQLite 32766, PostgreSQL 65535).
const MAX_CHUNK: usize = 512;

/// In the order `insert_deliveries_sql` binds them.
const DELIVERY_COLUMNS: &str = "exercise_id, run, team_id, inject_id, due_secs, status, \
    attempts, due_wall_ms, published_wall_ms, acked_wall_ms, received_wall_ms, latency_ms, late, \
    last_error, position, inject_json, watched, sent_secs, play";

/// The statement inserting `rows`, new delivery records. Its parameters are
/// spelled as the backend's arguments format them: `$1, $2, ..` on
/// PostgreSQL, `?` on SQLite, which finds the number of a numbered parameter
/// by scanning all of them, so binding n of them costs n² (10,000 rows took
/// 1.6 s to insert with `$n` and 0.05 s with `?`).
pub(super) fn insert_deliveries_sql<'a, DB>(rows: &'a [DeliveryRow]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
    Option<&'a str>: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    Option<i64>: Encode<'a, DB> + Type<DB>,
    Option<f64>: Encode<'a, DB> + Type<DB>,
    bool: Encode<'a, DB> + Type<DB>,
    Option<bool>: Encode<'a, DB> + Type<DB>,
{
    let mut sql = QueryBuilder::new(format!("INSERT INTO deliveries ({DELIVERY_COLUMNS}) "));
    sql.push_values(rows, |mut row, r| {
        row.push_bind(r.exercise_id.as_str())
            .push_bind(r.run)
            .push_bind(r.team_id.as_str())
            .push_bind(r.inject_id.as_str())
            .push_bind(r.due_secs)
            .push_bind(r.status.as_str())
            .push_bind(r.attempts)
            .push_bind(r.due_wall_ms)
            .push_bind(r.published_wall_ms)
            .push_bind(r.acked_wall_ms)
            .push_bind(r.received_wall_ms)
            .push_bind(r.latency_ms)
            .push_bind(r.late)
            .push_bind(r.last_error.as_deref())
            .push_bind(r.position)
            .push_bind(r.inject_json.as_deref())
            .push_bind(r.watched)
            .push_bind(r.sent_secs)
            .push_bind(r.play.as_deref());
    });
    sql
}

/// One multi-row update of `rows` records (parameters spelled as in
/// [`insert_deliveries_sql`]). `VALUES` columns are named `column1`,
/// `column2`, .. on both backends; the SET expressions see the stored row as
/// it was before the statement.
pub(super) fn save_deliveries_sql<'a, DB>(rows: &'a [DeliveryRow]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
    Option<&'a str>: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    Option<i64>: Encode<'a, DB> + Type<DB>,
    Option<f64>: Encode<'a, DB> + Type<DB>,
    bool: Encode<'a, DB> + Type<DB>,
    Option<bool>: Encode<'a, DB> + Type<DB>,
{
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
        once("watched", "column14"),
        keep("sent_secs", "column15"),
        // An outcome changes after delivery: never frozen.
        "play = COALESCE(v.column16, d.play)".to_owned(),
    ];
    let mut sql = QueryBuilder::new(format!(
        "UPDATE deliveries AS d SET {} FROM (",
        sets.join(", ")
    ));
    sql.push_values(rows, |mut row, r| {
        row.push_bind(r.exercise_id.as_str())
            .push_bind(r.run)
            .push_bind(r.team_id.as_str())
            .push_bind(r.inject_id.as_str())
            .push_bind(r.status.as_str())
            .push_bind(r.attempts)
            .push_bind(r.due_wall_ms)
            .push_bind(r.published_wall_ms)
            .push_bind(r.acked_wall_ms)
            .push_bind(r.received_wall_ms)
            .push_bind(r.latency_ms)
            .push_bind(r.late)
            .push_bind(r.last_error.as_deref())
            .push_bind(r.watched)
            .push_bind(r.sent_secs)
            .push_bind(r.play.as_deref());
    });
    sql.push(
        ") AS v WHERE d.exercise_id = v.column1 AND d.run = v.column2 \
         AND d.team_id = v.column3 AND d.inject_id = v.column4",
    );
    sql
}

/// Splits `rows` into statements of 512, 256, .., 1 rows, so that a handful of
/// distinct statements (each prepared once per connection) serve every batch
/// size.
pub(super) fn power_of_two_chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
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
pub(super) fn without_repeated_keys(rows: &[DeliveryRow]) -> Vec<&[DeliveryRow]> {
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
    use sqlx::{Postgres, Sqlite};

    use super::*;

    fn row(inject: &str) -> DeliveryRow {
        DeliveryRow {
            exercise_id: "ex".into(),
            run: 1,
            team_id: "blue".into(),
            inject_id: inject.into(),
            due_secs: 0,
            status: "pending".into(),
            attempts: 0,
            due_wall_ms: None,
            published_wall_ms: None,
            acked_wall_ms: None,
            received_wall_ms: None,
            latency_ms: None,
            late: false,
            last_error: None,
            position: 0,
            inject_json: None,
            watched: None,
            sent_secs: None,
            play: None,
        }
    }

    #[test]
    fn chunks_are_powers_of_two() {
        let rows: Vec<u32> = (0..1300).collect();
        let sizes: Vec<usize> = power_of_two_chunks(&rows).map(<[u32]>::len).collect();
        assert_eq!(sizes, [512, 512, 256, 16, 4]);
    }

    #[test]
    fn placeholders_number_rows_after_each_other() {
        let rows = [row("a"), row("b")];
        let numbered = |from: usize, to: usize| {
            let n: Vec<String> = (from..=to).map(|i| format!("${i}")).collect();
            format!("({})", n.join(", "))
        };
        assert!(
            insert_deliveries_sql::<Postgres>(&rows)
                .sql()
                .ends_with(&format!("VALUES {}, {}", numbered(1, 19), numbered(20, 38)))
        );
        assert!(
            save_deliveries_sql::<Postgres>(&rows)
                .sql()
                .contains(&format!(
                    "(VALUES {}, {}) AS v",
                    numbered(1, 16),
                    numbered(17, 32)
                ))
        );
        let anonymous = |n: usize| format!("({})", vec!["?"; n].join(", "));
        assert!(
            insert_deliveries_sql::<Sqlite>(&rows[..1])
                .sql()
                .ends_with(&format!("VALUES {}", anonymous(19)))
        );
        assert!(
            save_deliveries_sql::<Sqlite>(&rows[..1])
                .sql()
                .contains(&format!("(VALUES {}) AS v", anonymous(16)))
        );
    }
}
