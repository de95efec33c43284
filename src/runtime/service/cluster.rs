//! This process as one node of several (SPEC section 8): its heartbeat, the
//! leases of the exercises it runs, claiming those no live node holds, and
//! handing its own over when it stops.
//!
//! One task, every LEASE_RENEW_MS: heartbeat and renew every held lease in
//! two short statements (timed out within the trust window), then claim up
//! to a fair share of what is free or expired. A lease missing from the
//! renewal was lost: its actor is dropped at once (nothing more is written or
//! announced). A renewal that succeeded moves the trust window to the
//! instant before it was sent plus `LeaseTiming::trust`; when the window
//! closes, the task wakes every actor, which holds its injects back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep_until, timeout};
use tracing::{error, info, warn};

use crate::config::LeaseTiming;
use crate::runtime::journal::Journal;
use crate::runtime::lease::Trust;
use crate::store::{ClusterRows, Fence, NodeLock, StoreError};

use super::{Service, ServiceError};

/// This process's place in a cluster.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// NODE_ID.
    pub id: String,
    /// NODE_ADDRESS: where the other nodes reach its HTTP API.
    pub address: String,
    pub timing: LeaseTiming,
}

/// What the service keeps of its node.
pub(super) struct Node {
    pub(super) settings: NodeSettings,
    pub(super) trust: Trust,
    draining: AtomicBool,
    /// Held for the life of the process: no second process runs as this node.
    _lock: NodeLock,
    /// The fenced journal of each exercise held, by id.
    journals: Mutex<HashMap<String, Journal>>,
    /// When the last renewal that succeeded was sent.
    last_renewed: Mutex<Instant>,
}

impl Node {
    pub(super) fn new(settings: NodeSettings, lock: NodeLock) -> Self {
        let now = Instant::now();
        Self {
            trust: Trust::new(now + settings.timing.trust),
            settings,
            draining: AtomicBool::new(false),
            _lock: lock,
            journals: Mutex::default(),
            last_renewed: Mutex::new(now),
        }
    }
}

/// Where the cluster stands, as `GET /api/v1/cluster` shows it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// The node that answered.
    pub node: String,
    /// `cluster`, or `single` (one node: SQLite or the embedded broker).
    pub mode: &'static str,
    /// Whether this node's trust window is open (always on one node).
    pub trusted: bool,
    /// The nodes and leases as stored; None on SQLite.
    pub rows: Option<ClusterRows>,
}

impl Service {
    pub(super) fn node(&self) -> Option<&Node> {
        self.inner.node.as_ref()
    }

    /// The journal exercise `id` writes through: on several nodes its own,
    /// fenced at `epoch`, with the flag that turns true when the fence fails.
    pub(super) fn journal_for(
        &self,
        id: &str,
        epoch: Option<i64>,
    ) -> (Journal, Option<tokio::sync::watch::Receiver<bool>>) {
        match (self.node(), epoch) {
            (Some(node), Some(epoch)) => {
                let (journal, _task, lost) = Journal::spawn_fenced(
                    self.inner.store.clone(),
                    self.inner.mqtt.clone(),
                    Fence {
                        exercise_id: id.to_owned(),
                        epoch,
                    },
                );
                node.journals
                    .lock()
                    .expect("journals")
                    .insert(id.to_owned(), journal.clone());
                (journal, Some(lost))
            }
            _ => (self.inner.journal.clone(), None),
        }
    }

    /// Whether every exercise journal of this node writes (several nodes;
    /// one node has a single journal, checked by the caller).
    pub(super) fn journals_health(&self) -> Result<(), String> {
        let Some(node) = self.node() else {
            return Ok(());
        };
        let journals = node.journals.lock().expect("journals");
        journals.values().try_for_each(Journal::health)
    }

    /// Drops the journal of exercise `id` (deleted, or no longer held).
    pub(super) fn forget_journal(&self, id: &str) {
        if let Some(node) = self.node() {
            node.journals.lock().expect("journals").remove(id);
        }
    }

    /// Where the cluster stands.
    pub async fn cluster(&self) -> Result<ClusterView, ServiceError> {
        let (node, mode, trusted) = match self.node() {
            Some(node) => (node.settings.id.clone(), "cluster", node.trust.holds()),
            None => (self.inner.node_name.clone(), "single", true),
        };
        let rows = match self.inner.store.cluster().await {
            Ok(rows) => Some(rows),
            Err(StoreError::SingleNode) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(ClusterView {
            node,
            mode,
            trusted,
            rows,
        })
    }

    /// The first round at start: every exercise without a lease gets one,
    /// then this node claims its share (its own earlier self's leases first,
    /// at once: its lock proves that self is gone).
    pub(super) async fn join(&self) -> Result<(), ServiceError> {
        let node = self.node().expect("cluster mode");
        let store = &self.inner.store;
        let ttl = ms(node.settings.timing.ttl);
        store
            .heartbeat(
                &node.settings.id,
                &node.settings.address,
                "cluster",
                false,
                ttl,
            )
            .await?;
        store.node_started(&node.settings.id).await?;
        let added = store.lease_unleased().await?;
        if added > 0 {
            info!(
                exercises = added,
                "stored exercises without a lease got one, free to claim"
            );
        }
        *node.last_renewed.lock().expect("renewed") = Instant::now();
        node.trust
            .extend_to(Instant::now() + node.settings.timing.trust);
        self.claim_round().await?;
        Ok(())
    }

    /// Starts the lease task; it ends when the service stops.
    pub(super) fn spawn_lease_task(&self) {
        let service = self.clone();
        tokio::spawn(async move { service.lease_loop().await });
    }

    async fn lease_loop(self) {
        let node = self.node().expect("cluster mode");
        let timing = node.settings.timing;
        let mut stop = self.inner.stop.subscribe();
        let mut next = Instant::now() + timing.renew;
        let mut closed_reported = false;
        loop {
            let until = node.trust.until();
            let watch_trust = !closed_reported && until < next;
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                () = sleep_until(until), if watch_trust => {
                    closed_reported = true;
                    node.trust.closed();
                    error!(
                        node = %node.settings.id,
                        window_ms = ms(timing.trust),
                        "lease renewals have failed for the whole trust window: this node publishes nothing until one succeeds"
                    );
                    metrics::counter!("scip_trust_lapses_total").increment(1);
                    continue;
                }
                () = sleep_until(next) => {}
            }
            let scheduled = next;
            next = Instant::now() + timing.renew;
            metrics::histogram!("scip_lease_renewal_lateness_seconds").record(
                Instant::now()
                    .saturating_duration_since(scheduled)
                    .as_secs_f64(),
            );
            match self.renew_round().await {
                Ok(()) => closed_reported = false,
                Err(e) => {
                    metrics::counter!("scip_lease_renewal_failures_total").increment(1);
                    warn!(node = %node.settings.id, error = %e, "lease renewal failed; trying again");
                    continue;
                }
            }
            if !node.draining.load(Ordering::Relaxed)
                && let Err(e) = self.claim_round().await
            {
                warn!(node = %node.settings.id, error = %e, "claiming leases failed; trying again");
            }
        }
    }

    /// Heartbeat and renewal; drops the actors of leases found lost.
    async fn renew_round(&self) -> Result<(), String> {
        let node = self.node().expect("cluster mode");
        let timing = node.settings.timing;
        let store = &self.inner.store;
        let held = self.held();
        let sent = Instant::now();
        // Never waits past the window: a renewal that answers later could
        // not open it again anyway.
        let left = node
            .trust
            .until()
            .saturating_duration_since(sent)
            .max(Duration::from_millis(100))
            .min(timing.renew);
        let draining = node.draining.load(Ordering::Relaxed);
        let ttl = ms(timing.ttl);
        let renewed = timeout(left, async {
            store
                .heartbeat(
                    &node.settings.id,
                    &node.settings.address,
                    "cluster",
                    draining,
                    ttl,
                )
                .await?;
            store.renew_leases(&node.settings.id, &held, ttl).await
        })
        .await
        .map_err(|_| format!("no answer within {} ms", left.as_millis()))?
        .map_err(|e| e.to_string())?;
        node.trust.extend_to(sent + timing.trust);
        *node.last_renewed.lock().expect("renewed") = sent;
        for (id, epoch) in held {
            if !renewed.contains(&(id.clone(), epoch)) {
                warn!(exercise_id = %id, epoch, "lease lost: it expired or another node claimed it; this node stops running the exercise");
                self.relinquish(&id);
            }
        }
        metrics::gauge!("scip_exercises_owned").set(self.held().len() as f64);
        Ok(())
    }

    /// Claims what is free or expired, up to this node's fair share (the
    /// leases over the live nodes that take work) and MAX_EXERCISES, and
    /// restores each exercise claimed.
    async fn claim_round(&self) -> Result<(), ServiceError> {
        let node = self.node().expect("cluster mode");
        let store = &self.inner.store;
        let rows = store.cluster().await?;
        let live = rows
            .nodes
            .iter()
            .filter(|n| n.expires_ms > rows.now_ms && !n.draining && n.mode == "cluster")
            .count()
            .max(1);
        let claimable = rows
            .leases
            .iter()
            .filter(|l| {
                l.owner.is_none()
                    || l.expires_ms < rows.now_ms
                    || l.owner.as_deref() == Some(node.settings.id.as_str())
            })
            .count();
        if claimable == 0 {
            return Ok(());
        }
        let held = self.held();
        let fair = rows.leases.len().div_ceil(live);
        let cap = self.inner.config.max_exercises as usize;
        let limit = fair.max(1).min(cap).saturating_sub(held.len());
        let ids: Vec<String> = held.into_iter().map(|(id, _)| id).collect();
        let claimed = store
            .claim_leases(
                &node.settings.id,
                &ids,
                limit as i64,
                ms(node.settings.timing.ttl),
            )
            .await?;
        for claim in claimed {
            let taken_over = claim
                .previous
                .as_deref()
                .is_some_and(|p| p != node.settings.id);
            if taken_over {
                metrics::counter!("scip_takeovers_total").increment(1);
            }
            info!(
                exercise_id = %claim.exercise_id,
                epoch = claim.epoch,
                from = claim.previous.as_deref().unwrap_or("-"),
                "lease claimed"
            );
            let row = match store.get_exercise(&claim.exercise_id).await? {
                Some(row) => row,
                None => continue,
            };
            let id = row.id.clone();
            if let Err(e) = self.restore(row, Some(claim.epoch)).await {
                // Listed as unrestorable on this node, as at a single
                // node's start; the lease stays held, so no other node
                // keeps trying it either.
                error!(exercise_id = %id, error = %e, "cannot restore a claimed exercise");
                self.list_unrestorable(&id, e.to_string()).await;
            }
        }
        metrics::gauge!("scip_exercises_owned").set(self.held().len() as f64);
        Ok(())
    }

    /// The exercises this node runs, with the epoch each is held at.
    fn held(&self) -> Vec<(String, i64)> {
        self.inner
            .exercises
            .read()
            .expect("registry")
            .iter()
            .filter_map(|(id, h)| h.lease.as_ref().map(|l| (id.clone(), l.epoch)))
            .collect()
    }

    /// Stops running exercise `id` at once (its lease was lost): the actor
    /// is dropped mid-step, so nothing more of it is published, written or
    /// announced.
    pub(super) fn relinquish(&self, id: &str) {
        let handle = self.inner.exercises.write().expect("registry").remove(id);
        if let Some(lease) = handle.and_then(|h| h.lease) {
            lease.abort.abort();
        }
        self.forget_journal(id);
        self.inner
            .unrestorable
            .write()
            .expect("registry")
            .remove(id);
    }

    /// SIGTERM, after every actor stopped: each exercise's journal is
    /// written out, then its lease freed for the other nodes to claim at
    /// once, and this node's heartbeat removed.
    pub(super) async fn hand_over(&self) {
        let Some(node) = self.node() else {
            return;
        };
        node.draining.store(true, Ordering::Relaxed);
        let journals: Vec<(String, Journal)> = node
            .journals
            .lock()
            .expect("journals")
            .iter()
            .map(|(id, j)| (id.clone(), j.clone()))
            .collect();
        let epochs: HashMap<String, i64> = self.held().into_iter().collect();
        let store = &self.inner.store;
        let mut released = 0;
        for (id, journal) in journals {
            let (tx, rx) = tokio::sync::oneshot::channel();
            journal.reply(move |stored| {
                let _ = tx.send(stored);
            });
            let stored = timeout(Duration::from_secs(5), rx).await;
            if !matches!(stored, Ok(Ok(Ok(())))) {
                warn!(exercise_id = %id, "its last changes are not stored: the lease is left to expire");
                continue;
            }
            let Some(&epoch) = epochs.get(&id) else {
                continue;
            };
            match store.release_lease(&node.settings.id, &id, epoch).await {
                Ok(true) => released += 1,
                Ok(false) => {}
                Err(e) => {
                    warn!(exercise_id = %id, error = %e, "cannot free the lease; it expires instead")
                }
            }
        }
        if let Err(e) = store.leave(&node.settings.id).await {
            warn!(error = %e, "cannot remove this node's heartbeat; it expires instead");
        }
        info!(node = %node.settings.id, released, "leases handed over");
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
