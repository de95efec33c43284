//! How long this node may still act on the exercises it holds (several
//! nodes, SPEC section 8): its trust window.
//!
//! The lease loop (`service::cluster`) extends the trust after each renewal
//! that succeeded, to the instant taken *before* the renewal was sent plus
//! the window (shorter than the lease's TTL), so a slow answer never
//! stretches it. Actors check it on their own monotonic clock before
//! anything goes out: a node whose renewals stopped succeeding stops
//! publishing when its window closes, before any other node can claim its
//! leases (the database expires them a TTL after the last renewal it
//! committed, which was sent after the instant the window counts from).

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

/// Until when this node's leases are trusted. Cheap to clone. A clone made
/// by [`Trust::for_exercise`] can also be revoked on its own: one lease
/// lost, the node's others still held.
#[derive(Debug, Clone)]
pub struct Trust {
    until: Arc<watch::Sender<Instant>>,
    revoked: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Trust {
    /// Trusted until `until`.
    pub fn new(until: Instant) -> Self {
        Self {
            until: Arc::new(watch::Sender::new(until)),
            revoked: None,
        }
    }

    /// The node's window, as one exercise sees it: closed for good once
    /// [`Self::revoke`]d.
    pub fn for_exercise(&self) -> Self {
        Self {
            until: self.until.clone(),
            revoked: Some(Arc::default()),
        }
    }

    /// Closes this exercise's window for good (its lease is lost). Done
    /// before the node's window is moved on, so an actor that sees the new
    /// end sees this too.
    pub fn revoke(&self) {
        if let Some(revoked) = &self.revoked {
            revoked.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Whether the window is open now.
    pub fn holds(&self) -> bool {
        let revoked = self
            .revoked
            .as_ref()
            .is_some_and(|r| r.load(std::sync::atomic::Ordering::SeqCst));
        !revoked && Instant::now() < *self.until.borrow()
    }

    /// When the window closes.
    pub fn until(&self) -> Instant {
        *self.until.borrow()
    }

    /// Moves the end of the window (a renewal succeeded, or failed for good).
    pub fn extend_to(&self, until: Instant) {
        self.until.send_replace(until);
    }

    /// Wakes every watcher: the window just closed.
    pub fn closed(&self) {
        self.until.send_modify(|_| ());
    }

    /// Changes whenever the window moves or closes.
    pub fn watch(&self) -> watch::Receiver<Instant> {
        self.until.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_window_closes_on_the_monotonic_clock() {
        let trust = Trust::new(Instant::now() + Duration::from_secs(4));
        let mut watch = trust.watch();
        assert!(trust.holds());
        tokio::time::advance(Duration::from_millis(3999)).await;
        assert!(trust.holds());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!trust.holds(), "closed at the instant it ends");
        trust.closed();
        assert!(watch.has_changed().unwrap(), "watchers are woken");
        watch.borrow_and_update();
        trust.extend_to(Instant::now() + Duration::from_secs(4));
        assert!(trust.holds());
        assert!(watch.has_changed().unwrap());
        // One exercise's lease lost: its window closes, the node's stays.
        let one = trust.for_exercise();
        let other = trust.for_exercise();
        one.revoke();
        assert!(!one.holds());
        assert!(other.holds() && trust.holds());
    }
}
