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
use crate::store::{Fence, NodeLock, StoreError};

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
    /// The fenced journal of each exercise held, by id, with its writer.
    journals: Mutex<HashMap<String, (Journal, tokio::task::AbortHandle)>>,
    /// Turned true once the leases are handed over: the lease task ends.
    done: tokio::sync::watch::Sender<bool>,
    /// The lease task, awaited before the heartbeat row goes.
    lease_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Leases held of exercises that could not be restored (listed as
    /// unrestorable here, as on a single node): kept, so that no node
    /// claims them over and over.
    parked: Mutex<HashMap<String, i64>>,
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
            done: tokio::sync::watch::Sender::new(false),
            lease_task: Mutex::default(),
            parked: Mutex::default(),
        }
    }
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
        incarnation: &str,
        epoch: Option<i64>,
    ) -> (Journal, Option<tokio::sync::watch::Receiver<bool>>) {
        match (self.node(), epoch) {
            (Some(node), Some(epoch)) => {
                let (journal, task, lost) = Journal::spawn_fenced(
                    self.inner.store.clone(),
                    self.inner.mqtt.clone(),
                    Fence {
                        exercise_id: id.to_owned(),
                        incarnation: incarnation.to_owned(),
                        epoch,
                    },
                );
                let replaced = node
                    .journals
                    .lock()
                    .expect("journals")
                    .insert(id.to_owned(), (journal.clone(), task.abort_handle()));
                if let Some((_, earlier)) = replaced {
                    earlier.abort();
                }
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
        journals
            .values()
            .try_for_each(|(journal, _)| journal.health())
    }

    /// Deletes stored exercise `id`; on several nodes only while this node
    /// still holds its lease (a node that was frozen cannot delete what
    /// another runs now).
    pub(super) async fn delete_stored(&self, id: &str) -> Result<bool, ServiceError> {
        let Some(node) = self.node() else {
            return Ok(self.inner.store.delete_exercise(id).await?);
        };
        let epoch = self
            .held()
            .into_iter()
            .find(|(held, _)| held == id)
            .map(|(_, epoch)| epoch);
        let moved = || {
            ServiceError::Unavailable(format!(
                "exercise {id} has moved to another node; try again"
            ))
        };
        let epoch = epoch.ok_or_else(moved)?;
        let incarnation = self
            .inner
            .exercises
            .read()
            .expect("registry")
            .get(id)
            .map(|h| h.incarnation.clone());
        let incarnation = match incarnation {
            Some(incarnation) => incarnation,
            // Parked (not restorable): its stored life is the one held.
            None => match self.inner.store.get_exercise(id).await? {
                Some(row) => row.incarnation,
                None => return Ok(false),
            },
        };
        match self
            .inner
            .store
            .delete_exercise_fenced(id, &node.settings.id, &incarnation, epoch)
            .await
        {
            Ok(done) => Ok(done),
            Err(StoreError::Fenced { .. }) => {
                warn!(node = %node.settings.id, exercise_id = id, "delete refused by the lease fence");
                Err(moved())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Drops the journal of exercise `id` (deleted, or no longer held).
    /// Its writer ends at once: what it still held is not this node's to
    /// write any more.
    pub(super) fn forget_journal(&self, id: &str) {
        if let Some(node) = self.node() {
            if let Some((_, writer)) = node.journals.lock().expect("journals").remove(id) {
                writer.abort();
            }
            node.parked.lock().expect("parked").remove(id);
        }
    }

    /// Brings the API tokens in memory in line with the store: issued or
    /// revoked through another node (several nodes; every renewal round).
    async fn sync_tokens(&self) -> Result<(), ServiceError> {
        let tokens = &self.inner.tokens;
        let revision = tokens.revision();
        let rows = self.inner.store.tokens().await?;
        if tokens.revision() != revision {
            // Revoked here while reading: the rows may still hold it.
            return Ok(());
        }
        let recent = crate::runtime::exercise::wall_ms(time::OffsetDateTime::now_utc()) - 10_000;
        for entry in tokens.list() {
            // One issued here a moment ago may not be in what was read.
            if !entry.configured
                && entry.created_wall_ms < recent
                && !rows.iter().any(|r| r.id == entry.id)
            {
                tokens.remove(&entry.id);
            }
        }
        for row in rows {
            if tokens.get(&row.id).is_some() {
                continue;
            }
            if let Some((hash, entry)) = super::tokens::issued(row) {
                tokens.add(hash, entry);
            }
        }
        Ok(())
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
        node.trust
            .extend_to(Instant::now() + node.settings.timing.trust);
        self.claim_round(true).await?;
        Ok(())
    }

    /// Starts the lease task; it ends when the service stops.
    pub(super) fn spawn_lease_task(&self) {
        let service = self.clone();
        let task = tokio::spawn(async move { service.lease_loop().await });
        if let Some(node) = self.node() {
            *node.lease_task.lock().expect("lease task") = Some(task);
        }
        // API tokens issued or revoked through other nodes, read again
        // every round by a task of its own (a slow read never delays a
        // renewal).
        let service = self.clone();
        tokio::spawn(async move {
            let Some(node) = service.node() else { return };
            let every = node.settings.timing.renew;
            let mut done = node.done.subscribe();
            loop {
                tokio::select! {
                    _ = done.wait_for(|d| *d) => return,
                    () = tokio::time::sleep(every) => {}
                }
                match timeout(every, service.sync_tokens()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "cannot read the API tokens; trying again"),
                    Err(_) => {
                        warn!("reading the API tokens took longer than a round; trying again")
                    }
                }
            }
        });
    }

    async fn lease_loop(self) {
        let node = self.node().expect("cluster mode");
        let timing = node.settings.timing;
        // The window's closing is watched by a task of its own, which no
        // slow statement here can hold up.
        let watchdog = tokio::spawn(self.clone().trust_watchdog());
        // Renewals go on while the node drains, until its leases are
        // handed over.
        let mut done = node.done.subscribe();
        let mut next = Instant::now() + timing.renew;
        loop {
            tokio::select! {
                biased;
                _ = done.wait_for(|d| *d) => break,
                () = sleep_until(next) => {}
            }
            let scheduled = next;
            next = Instant::now() + timing.renew;
            metrics::histogram!("scip_lease_renewal_lateness_seconds").record(
                Instant::now()
                    .saturating_duration_since(scheduled)
                    .as_secs_f64(),
            );
            if let Err(e) = self.renew_round().await {
                metrics::counter!("scip_lease_renewal_failures_total").increment(1);
                warn!(node = %node.settings.id, error = %e, "lease renewal failed; trying again");
                continue;
            }
            if !node.draining.load(Ordering::Relaxed)
                && let Err(e) = self.claim_round(false).await
            {
                warn!(node = %node.settings.id, error = %e, "claiming leases failed; trying again");
            }
        }
        watchdog.abort();
    }

    /// Wakes every actor the instant the trust window closes (they check it
    /// themselves before anything goes out, but an idle one must also hold
    /// its waiting injects back), and once it has been closed for a whole
    /// TTL, stops running every exercise: each lease has surely expired by
    /// then and is probably another node's, whatever the database, out of
    /// reach, would say.
    async fn trust_watchdog(self) {
        let node = self.node().expect("cluster mode");
        let timing = node.settings.timing;
        let mut moved = node.trust.watch();
        loop {
            let until = *moved.borrow_and_update();
            tokio::select! {
                () = sleep_until(until) => {}
                Ok(()) = moved.changed() => continue,
            }
            if node.trust.holds() {
                // Extended just as the old end came.
                continue;
            }
            node.trust.closed();
            moved.borrow_and_update();
            error!(
                node = %node.settings.id,
                window_ms = ms(timing.trust),
                "lease renewals have failed for the whole trust window: this node publishes nothing until one succeeds"
            );
            metrics::counter!("scip_trust_lapses_total").increment(1);
            tokio::select! {
                () = sleep_until(until + timing.ttl) => {
                    let held = self.held();
                    if !held.is_empty() {
                        error!(
                            node = %node.settings.id,
                            exercises = held.len(),
                            "no lease renewal for a whole lease TTL: this node stops running its exercises"
                        );
                        for (id, epoch) in held {
                            self.relinquish(&id, epoch);
                        }
                    }
                    // Until a renewal succeeds again.
                    if moved.changed().await.is_err() {
                        return;
                    }
                }
                Ok(()) = moved.changed() => {}
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
        // Once it has closed, a renewal may take a whole round.
        let left = match node.trust.until().saturating_duration_since(sent) {
            left if left.is_zero() => timing.renew,
            left => left.max(Duration::from_millis(100)).min(timing.renew),
        };
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
        // The lost ones first: each is revoked before the window moves on,
        // so an actor woken by the new end still publishes nothing of an
        // exercise another node runs now.
        for (id, epoch) in held {
            if !renewed.contains(&(id.clone(), epoch)) {
                warn!(exercise_id = %id, epoch, "lease lost: it expired or another node claimed it; this node stops running the exercise");
                self.relinquish(&id, epoch);
            }
        }
        node.trust.extend_to(sent + timing.trust);
        metrics::gauge!("scip_exercises_owned").set(self.held().len() as f64);
        Ok(())
    }

    /// Claims what is free or expired, up to this node's fair share (the
    /// leases over the live nodes that take work) and MAX_EXERCISES, and
    /// restores each exercise claimed.
    async fn claim_round(&self, own: bool) -> Result<(), ServiceError> {
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
                own,
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
            let row = match store.get_exercise(&claim.exercise_id).await {
                Ok(Some(row)) => row,
                Ok(None) => continue,
                Err(e) => {
                    // Freed for the next round, and the other claims go on.
                    warn!(exercise_id = %claim.exercise_id, error = %e, "cannot read a claimed exercise; its lease is freed");
                    let _ = store
                        .release_lease(&node.settings.id, &claim.exercise_id, claim.epoch)
                        .await;
                    continue;
                }
            };
            let id = row.id.clone();
            match self.restore(row, Some(claim.epoch)).await {
                Ok(()) => {}
                Err(ServiceError::Store(e)) if e.is_transient() => {
                    // The database failing says nothing about the exercise:
                    // freed, for this or another node to claim again.
                    warn!(exercise_id = %id, error = %e, "cannot restore a claimed exercise for now; its lease is freed");
                    let _ = store
                        .release_lease(&node.settings.id, &id, claim.epoch)
                        .await;
                }
                // Listed as unrestorable on this node, as at a single
                // node's start; the lease stays held, so no other node
                // keeps trying it either.
                Err(e) => {
                    error!(exercise_id = %id, error = %e, "cannot restore a claimed exercise");
                    self.list_unrestorable(&id, e.to_string()).await;
                    node.parked.lock().expect("parked").insert(id, claim.epoch);
                }
            }
        }
        metrics::gauge!("scip_exercises_owned").set(self.held().len() as f64);
        Ok(())
    }

    /// The exercises this node runs, with the epoch each is held at.
    fn held(&self) -> Vec<(String, i64)> {
        let mut held: Vec<(String, i64)> = self
            .inner
            .exercises
            .read()
            .expect("registry")
            .iter()
            .filter_map(|(id, h)| h.lease.as_ref().map(|l| (id.clone(), l.epoch)))
            .collect();
        if let Some(node) = self.node() {
            held.extend(
                node.parked
                    .lock()
                    .expect("parked")
                    .iter()
                    .map(|(id, epoch)| (id.clone(), *epoch)),
            );
        }
        held
    }

    /// Stops running exercise `id` at once (its lease was lost): the actor
    /// is dropped mid-step, so nothing more of it is published, written or
    /// announced.
    pub(super) fn relinquish(&self, id: &str, epoch: i64) {
        let mut exercises = self.inner.exercises.write().expect("registry");
        let held_at = exercises
            .get(id)
            .and_then(|h| h.lease.as_ref())
            .map(|l| l.epoch);
        let parked_at = self
            .node()
            .and_then(|n| n.parked.lock().expect("parked").get(id).copied());
        if held_at != Some(epoch) && parked_at != Some(epoch) {
            // Held again meanwhile, at another epoch: that one stays.
            return;
        }
        if let Some(lease) = exercises.remove(id).and_then(|h| h.lease) {
            lease.trust.revoke();
            lease.abort.abort();
        }
        drop(exercises);
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
    /// SIGTERM: from now on this node takes no new exercise, and says so in
    /// its heartbeat at once, so placement passes it by.
    pub async fn begin_drain(&self) {
        let Some(node) = self.node() else {
            return;
        };
        if node.draining.swap(true, Ordering::Relaxed) {
            return;
        }
        let beat = self.inner.store.heartbeat(
            &node.settings.id,
            &node.settings.address,
            "cluster",
            true,
            ms(node.settings.timing.ttl),
        );
        if let Err(e) = timeout(node.settings.timing.renew, beat)
            .await
            .unwrap_or(Ok(0))
        {
            warn!(error = %e, "cannot announce the drain; the next renewal does");
        }
    }

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
            .map(|(id, (j, _))| (id.clone(), j.clone()))
            .collect();
        let epochs: HashMap<String, i64> = self.held().into_iter().collect();
        let store = &self.inner.store;
        let mut released = 0;
        // Every journal written out at once, each within 5 s.
        let flushed =
            futures_util::future::join_all(journals.into_iter().map(|(id, journal)| async move {
                let (tx, rx) = tokio::sync::oneshot::channel();
                journal.reply(move |stored| {
                    let _ = tx.send(stored);
                });
                let stored = timeout(Duration::from_secs(5), rx).await;
                (id, matches!(stored, Ok(Ok(Ok(())))))
            }))
            .await;
        // Renewals end here; the last one finishes before anything is freed,
        // so none can write the heartbeat back after it is gone.
        node.done.send_replace(true);
        let task = node.lease_task.lock().expect("lease task").take();
        if let Some(task) = task {
            let _ = timeout(node.settings.timing.renew, task).await;
        }
        let parked: Vec<String> = node
            .parked
            .lock()
            .expect("parked")
            .keys()
            .cloned()
            .collect();
        let flushed = flushed
            .into_iter()
            .chain(parked.into_iter().map(|id| (id, true)));
        for (id, stored) in flushed {
            if !stored {
                warn!(exercise_id = %id, "its last changes are not stored: the lease is left to expire");
                continue;
            }
            let Some(&epoch) = epochs.get(&id) else {
                continue;
            };
            let release = store.release_lease(&node.settings.id, &id, epoch);
            match timeout(Duration::from_secs(2), release).await {
                Ok(Ok(true)) => released += 1,
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    warn!(exercise_id = %id, error = %e, "cannot free the lease; it expires instead")
                }
                Err(_) => {
                    warn!(exercise_id = %id, "freeing the lease took too long; it expires instead")
                }
            }
        }
        match timeout(Duration::from_secs(2), store.leave(&node.settings.id)).await {
            Ok(Ok(())) => {}
            _ => warn!("cannot remove this node's heartbeat; it expires instead"),
        }
        info!(node = %node.settings.id, released, "leases handed over");
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
