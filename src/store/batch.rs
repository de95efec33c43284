//! The journal's unit of writing: control rows, new delivery records,
//! clocks, progress and play rows in one transaction.

use super::control::{ControlRow, insert_control_on};
use super::deliveries::{DeliveryRow, insert_deliveries_on, save_deliveries_on};
use super::exercises::{ClockRow, update_clock_on};
use super::play::{PlayRow, insert_play_on};
use super::{Store, StoreError, classify};

/// The lease epoch a writer holds an exercise at: a batch carrying one is
/// written only while the exercise's lease still carries that epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub exercise_id: String,
    /// Which life of the id: a lease of a later exercise of the same id
    /// (deleted and created again) never passes for this one's.
    pub incarnation: String,
    pub epoch: i64,
}

/// What the journal writes in one transaction: all of it, or none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Checked first, in the same transaction (several nodes only).
    pub fence: Option<Fence>,
    /// Appended to the control log in this order.
    pub controls: Vec<ControlRow>,
    /// New delivery records.
    pub inserts: Vec<DeliveryRow>,
    /// Exercise clocks; one of an exercise no longer stored is skipped.
    pub clocks: Vec<(String, ClockRow)>,
    /// Progress of stored records, as [`Store::save_deliveries`] writes it.
    pub saves: Vec<DeliveryRow>,
    /// Responses, posts, scores and decisions, appended in this order.
    pub plays: Vec<PlayRow>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.controls.is_empty()
            && self.inserts.is_empty()
            && self.clocks.is_empty()
            && self.saves.is_empty()
            && self.plays.is_empty()
    }
}

impl Store {
    /// Writes `batch` in one transaction: control rows, new records, clocks,
    /// then progress, as if one after another. Nothing is written when any
    /// part fails; [`StoreError::is_transient`] says whether to try again.
    /// With a fence, the exercise's lease is read first under `FOR SHARE`
    /// (a claim, which skips locked rows, cannot commit meanwhile) and a
    /// different epoch is [`StoreError::Fenced`].
    pub async fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        // A fenced batch is checked even with nothing to write: the
        // announcements it carries go out only while the lease is this
        // writer's.
        if batch.is_empty() && batch.fence.is_none() {
            return Ok(());
        }
        let fence_sql = match self.pool {
            super::Pool::Postgres(_) => {
                "SELECT l.epoch FROM leases l JOIN exercises e ON e.id = l.exercise_id \
                 WHERE l.exercise_id = $1 AND e.incarnation = $2 FOR SHARE OF l"
            }
            // One writer at a time: a SQLite write transaction excludes the rest.
            super::Pool::Sqlite(_) => {
                "SELECT l.epoch FROM leases l JOIN exercises e ON e.id = l.exercise_id \
                 WHERE l.exercise_id = $1 AND e.incarnation = $2"
            }
        };
        let mut fenced = false;
        with_pool!(self, pool => {
            async {
                let mut tx = pool.begin().await?;
                if let Some(fence) = &batch.fence {
                    let epoch: Option<i64> = sqlx::query_scalar(fence_sql)
                        .bind(&fence.exercise_id)
                        .bind(&fence.incarnation)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if epoch != Some(fence.epoch) {
                        fenced = true;
                        return tx.rollback().await;
                    }
                }
                for row in &batch.controls {
                    insert_control_on!(tx, row).await?;
                }
                insert_deliveries_on!(tx, &batch.inserts).await?;
                for (id, clock) in &batch.clocks {
                    update_clock_on!(tx, id, clock)?;
                }
                save_deliveries_on!(tx, &batch.saves).await?;
                for row in &batch.plays {
                    insert_play_on!(tx, row).await?;
                }
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
        if fenced && let Some(fence) = &batch.fence {
            return Err(StoreError::Fenced {
                exercise_id: fence.exercise_id.clone(),
                epoch: fence.epoch,
            });
        }
        Ok(())
    }
}
