//! Several nodes on one PostgreSQL database (SPEC section 8): node heartbeats
//! and exercise leases with their fencing epoch.
//!
//! Every expiry is computed by the database (`now()`), never by a node, and
//! every lease statement is one autocommit statement, so `now()` is the
//! statement's own time. A claim raises the epoch; a renewal never revives an
//! expired lease (only a claim, with a new epoch, does); a release keeps the
//! epoch for the next claim to raise. The fence itself is in
//! [`Store::write`](super::Store::write): the batch's epoch is checked under
//! `FOR SHARE` in the batch's own transaction, so no claim can commit between
//! the check and the write. SQLite is single-node: these methods answer
//! [`StoreError::SingleNode`] there.

use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPool};

use super::deliveries::insert_deliveries_on;
use super::exercises::insert_exercise_on;
use super::{ExerciseRow, Pool, Store, StoreError, classify};

/// The database's clock, in unix milliseconds.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT";

/// A node as its heartbeat row says.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct NodeRow {
    pub node_id: String,
    pub address: String,
    /// `cluster` (external broker) or `single` (embedded broker).
    pub mode: String,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    pub expires_ms: i64,
    pub draining: bool,
}

/// Who runs an exercise, as its lease row says.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LeaseRow {
    pub exercise_id: String,
    pub owner: Option<String>,
    pub epoch: i64,
    pub acquired_ms: Option<i64>,
    pub renewed_ms: Option<i64>,
    pub expires_ms: i64,
    pub takeovers: i64,
}

/// A lease this node won by a claim.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Claimed {
    pub exercise_id: String,
    pub epoch: i64,
    /// Who held it before: None for a free lease.
    pub previous: Option<String>,
}

/// The nodes and leases of the cluster, read at one instant of the
/// database's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRows {
    pub now_ms: i64,
    pub nodes: Vec<NodeRow>,
    pub leases: Vec<LeaseRow>,
}

/// A process's hold on its node id: a session advisory lock on a connection
/// of its own, which PostgreSQL releases when the process dies (its socket
/// closes), so a restarted node can tell "my earlier self is gone" from
/// "another process runs with my id".
pub struct NodeLock {
    _conn: PgConnection,
}

impl std::fmt::Debug for NodeLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeLock")
    }
}

impl Store {
    fn pg(&self) -> Result<&PgPool, StoreError> {
        match &self.pool {
            Pool::Postgres(pool) => Ok(pool),
            Pool::Sqlite(_) => Err(StoreError::SingleNode),
        }
    }

    /// Takes the lock of node `node_id` on a connection of its own; None
    /// while another live process holds it.
    pub async fn lock_node(
        &self,
        url: &str,
        node_id: &str,
    ) -> Result<Option<NodeLock>, StoreError> {
        self.pg()?;
        let mut conn = PgConnection::connect(url).await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(format!("scip-node:{node_id}"))
                .fetch_one(&mut conn)
                .await?;
        Ok(locked.then_some(NodeLock { _conn: conn }))
    }

    /// Writes this node's heartbeat, alive for `ttl_ms` more by the
    /// database's clock; returns the database's clock.
    pub async fn heartbeat(
        &self,
        node_id: &str,
        address: &str,
        mode: &str,
        draining: bool,
        ttl_ms: i64,
    ) -> Result<i64, StoreError> {
        let sql = format!(
            "INSERT INTO nodes (node_id, address, mode, started_ms, heartbeat_ms, expires_ms, draining) \
             VALUES ($1, $2, $3, {NOW_MS}, {NOW_MS}, {NOW_MS} + $4, $5) \
             ON CONFLICT (node_id) DO UPDATE SET address = $2, mode = $3, \
             heartbeat_ms = {NOW_MS}, expires_ms = {NOW_MS} + $4, draining = $5 \
             RETURNING heartbeat_ms"
        );
        let now = sqlx::query_scalar(&sql)
            .bind(node_id)
            .bind(address)
            .bind(mode)
            .bind(ttl_ms)
            .bind(draining)
            .fetch_one(self.pg()?)
            .await?;
        Ok(now)
    }

    /// Marks node `node_id` as starting afresh (a new process with this id):
    /// its start time is now.
    pub async fn node_started(&self, node_id: &str) -> Result<(), StoreError> {
        let sql = format!("UPDATE nodes SET started_ms = {NOW_MS} WHERE node_id = $1");
        sqlx::query(&sql).bind(node_id).execute(self.pg()?).await?;
        Ok(())
    }

    /// Removes node `node_id`'s heartbeat (it stopped).
    pub async fn leave(&self, node_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM nodes WHERE node_id = $1")
            .bind(node_id)
            .execute(self.pg()?)
            .await?;
        Ok(())
    }

    /// Every node, live or not, every lease, and the database's clock.
    pub async fn cluster(&self) -> Result<ClusterRows, StoreError> {
        let pool = self.pg()?;
        let now_ms = sqlx::query_scalar(&format!("SELECT {NOW_MS}"))
            .fetch_one(pool)
            .await?;
        let nodes = sqlx::query_as(
            "SELECT node_id, address, mode, started_ms, heartbeat_ms, expires_ms, draining \
             FROM nodes ORDER BY node_id",
        )
        .fetch_all(pool)
        .await?;
        let leases = sqlx::query_as(
            "SELECT exercise_id, owner, epoch, acquired_ms, renewed_ms, expires_ms, takeovers \
             FROM leases ORDER BY exercise_id",
        )
        .fetch_all(pool)
        .await?;
        Ok(ClusterRows {
            now_ms,
            nodes,
            leases,
        })
    }

    /// Who runs exercise `id`: None when it has no lease (not stored);
    /// else the owner with its address while both its lease and its
    /// heartbeat are live, or no owner (free, expired, or its node gone).
    pub async fn lease_owner(
        &self,
        id: &str,
    ) -> Result<Option<Option<(String, String)>>, StoreError> {
        let sql = format!(
            "SELECT l.owner, n.address, l.expires_ms > {NOW_MS} AND COALESCE(n.expires_ms > {NOW_MS}, FALSE) \
             FROM leases l LEFT JOIN nodes n ON n.node_id = l.owner WHERE l.exercise_id = $1"
        );
        let row: Option<(Option<String>, Option<String>, bool)> = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(self.pg()?)
            .await?;
        Ok(row.map(|(owner, address, live)| match (owner, address) {
            (Some(owner), Some(address)) if live => Some((owner, address)),
            _ => None,
        }))
    }

    /// Gives every stored exercise without a lease row a free one (rows
    /// stored by a single node before it joined a cluster); how many.
    pub async fn lease_unleased(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "INSERT INTO leases (exercise_id, owner, epoch, expires_ms, takeovers) \
             SELECT id, NULL, 0, 0, 0 FROM exercises \
             WHERE NOT EXISTS (SELECT 1 FROM leases WHERE leases.exercise_id = exercises.id) \
             ON CONFLICT (exercise_id) DO NOTHING",
        )
        .execute(self.pg()?)
        .await?;
        Ok(done.rows_affected())
    }

    /// Stores a new exercise, its lease, held by `owner` at epoch 1, and
    /// its first delivery records, in one transaction (no node can claim an
    /// exercise stored without its records, nor one left without a lease);
    /// [`StoreError::Conflict`] when its id is taken.
    pub async fn insert_exercise_leased(
        &self,
        row: &ExerciseRow,
        deliveries: &[super::DeliveryRow],
        owner: &str,
        ttl_ms: i64,
    ) -> Result<i64, StoreError> {
        let lease = format!(
            "INSERT INTO leases (exercise_id, owner, epoch, acquired_ms, renewed_ms, expires_ms, takeovers) \
             VALUES ($1, $2, 1, {NOW_MS}, {NOW_MS}, {NOW_MS} + $3, 0) RETURNING epoch"
        );
        let pool = self.pg()?;
        let result: Result<i64, sqlx::Error> = async {
            let mut tx = pool.begin().await?;
            insert_exercise_on!(&mut *tx, row)?;
            let epoch = sqlx::query_scalar(&lease)
                .bind(&row.id)
                .bind(owner)
                .bind(ttl_ms)
                .fetch_one(&mut *tx)
                .await?;
            insert_deliveries_on!(tx, deliveries).await?;
            tx.commit().await?;
            Ok(epoch)
        }
        .await;
        result.map_err(|e| {
            let what = || format!("exercise {}", row.id);
            classify(e, what, what)
        })
    }

    /// Deletes exercise `id` while the lease is held at `epoch` (its
    /// records, control log and lease go with it); false when it is not
    /// stored, [`StoreError::Fenced`] when another node owns it now. The
    /// lease row is locked first, in the order a batch takes its locks.
    pub async fn delete_exercise_fenced(
        &self,
        id: &str,
        owner: &str,
        incarnation: &str,
        epoch: i64,
    ) -> Result<bool, StoreError> {
        let pool = self.pg()?;
        let mut tx = pool.begin().await?;
        let held: Option<(i64, Option<String>, String)> = sqlx::query_as(
            "SELECT l.epoch, l.owner, e.incarnation FROM leases l JOIN exercises e ON e.id = l.exercise_id \
             WHERE l.exercise_id = $1 FOR UPDATE OF l",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        match held {
            None => return Ok(false),
            Some((current, holder, life))
                if current != epoch || holder.as_deref() != Some(owner) || life != incarnation =>
            {
                return Err(StoreError::Fenced {
                    exercise_id: id.to_owned(),
                    epoch,
                });
            }
            Some(_) => {}
        }
        let done = sqlx::query("DELETE FROM exercises WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(done > 0)
    }

    /// The lease of a new exercise, held by `owner` at epoch 1.
    pub async fn insert_lease(
        &self,
        exercise_id: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<i64, StoreError> {
        let sql = format!(
            "INSERT INTO leases (exercise_id, owner, epoch, acquired_ms, renewed_ms, expires_ms, takeovers) \
             VALUES ($1, $2, 1, {NOW_MS}, {NOW_MS}, {NOW_MS} + $3, 0) RETURNING epoch"
        );
        let epoch = sqlx::query_scalar(&sql)
            .bind(exercise_id)
            .bind(owner)
            .bind(ttl_ms)
            .fetch_one(self.pg()?)
            .await?;
        Ok(epoch)
    }

    /// Renews the leases `owner` holds at these epochs for `ttl_ms` more;
    /// returns those renewed. One missing was lost: it expired (a renewal
    /// never revives an expired lease) or another node claimed it.
    pub async fn renew_leases(
        &self,
        owner: &str,
        held: &[(String, i64)],
        ttl_ms: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, epochs): (Vec<String>, Vec<i64>) = held.iter().cloned().unzip();
        let sql = format!(
            "UPDATE leases SET renewed_ms = {NOW_MS}, expires_ms = {NOW_MS} + $2 \
             WHERE owner = $1 AND expires_ms > {NOW_MS} \
             AND (exercise_id, epoch) IN (SELECT * FROM UNNEST($3::TEXT[], $4::BIGINT[])) \
             RETURNING exercise_id, epoch"
        );
        let rows = sqlx::query_as(&sql)
            .bind(owner)
            .bind(ttl_ms)
            .bind(ids)
            .bind(epochs)
            .fetch_all(self.pg()?)
            .await?;
        Ok(rows)
    }

    /// Claims up to `limit` leases that are free or expired, and with
    /// `own`, those held by `owner`'s earlier self (a restarted node, whose
    /// lock proves that self gone; never among `held`), raising each one's
    /// epoch.
    /// A lease another node is claiming or writing under at this moment is
    /// skipped (`SKIP LOCKED`): one claimer wins.
    pub async fn claim_leases(
        &self,
        owner: &str,
        held: &[String],
        own: bool,
        limit: i64,
        ttl_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        // A CTE, not `IN (SELECT ... LIMIT)`: the planner may run an IN
        // sub-select again, and then LIMIT does not bound the rows claimed.
        let sql = format!(
            "WITH cand AS ( \
               SELECT exercise_id, owner AS previous FROM leases \
               WHERE (owner IS NULL OR expires_ms < {NOW_MS} OR ($5 AND owner = $1)) \
                 AND NOT (exercise_id = ANY($2::TEXT[])) \
               ORDER BY expires_ms, exercise_id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE leases l SET owner = $1, epoch = l.epoch + 1, acquired_ms = {NOW_MS}, \
               renewed_ms = {NOW_MS}, expires_ms = {NOW_MS} + $4, \
               takeovers = l.takeovers + CASE WHEN cand.previous IS NOT NULL AND cand.previous <> $1 THEN 1 ELSE 0 END \
             FROM cand WHERE l.exercise_id = cand.exercise_id \
             RETURNING l.exercise_id, l.epoch, cand.previous"
        );
        let rows = sqlx::query_as(&sql)
            .bind(owner)
            .bind(held)
            .bind(limit)
            .bind(ttl_ms)
            .bind(own)
            .fetch_all(self.pg()?)
            .await?;
        Ok(rows)
    }

    /// Frees a lease `owner` holds at `epoch`, for another node to claim at
    /// once; false when it was no longer held so.
    pub async fn release_lease(
        &self,
        owner: &str,
        exercise_id: &str,
        epoch: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE leases SET owner = NULL, expires_ms = 0 \
             WHERE exercise_id = $1 AND owner = $2 AND epoch = $3",
        )
        .bind(exercise_id)
        .bind(owner)
        .bind(epoch)
        .execute(self.pg()?)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
