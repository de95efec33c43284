//! The journal: what an exercise has decided is stored before it is
//! announced. Under `serve` one writer task takes every exercise's entries,
//! writes them in batches (a burst of acknowledgements costs one transaction,
//! not thousands), then sends the announcements and replies that waited for
//! them, in order. Under `run` there is no store: announcements go straight out.
//!
//! A batch is one transaction: stored whole or not at all. When the database
//! fails or refuses it, nothing of it is announced: the replies waiting for it
//! answer [`JournalError::NotStored`] at once (the API says 503), its
//! announcements are held, and the batch is written again (with everything
//! that came in meanwhile) until it is stored; then the held announcements go
//! out, in order. A write that does not finish (a lock held elsewhere) holds
//! everything the same way; replies then answer [`JournalError::TimedOut`]
//! after [`REPLY_TIMEOUT`]. [`Journal::health`] says how the writer is doing,
//! for `/readyz`.
//!
//! Nothing here grows without bound while the database is away: the writer
//! keeps taking entries while a write is under way and folds them into the
//! next batch, where a delivery record and an exercise clock are kept once
//! (their newest state), snapshot announcements (monitoring, the timer) once
//! per topic, and the other held announcements up to [`MAX_HELD`] (beyond it
//! the oldest is dropped, counted in `scip_announcements_dropped_total` and
//! logged). Control rows are bounded by the command rate limits.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tracing::{error, info, warn};

use crate::mqtt::{Message, Mqtt};
use crate::store::{Batch, ClockRow, ControlRow, DeliveryRow, Fence, PlayRow, Store, StoreError};

/// A change to store.
#[derive(Debug, Clone)]
pub enum JournalEntry {
    /// A control command as received, accepted or not.
    Control(ControlRow),
    /// An exercise's state and clock.
    Clock { exercise_id: String, row: ClockRow },
    /// The records of a run that starts (after a reset).
    NewRun {
        exercise_id: String,
        rows: Vec<DeliveryRow>,
    },
    /// Records added to the current run (injects sent live).
    NewRows { rows: Vec<DeliveryRow> },
    /// Changed records; confirmation is written once by the store.
    Deliveries(Vec<DeliveryRow>),
    /// Responses, posts, scores or decisions, with the records they changed
    /// (an outcome, a released branch): stored in one transaction.
    Played {
        plays: Vec<PlayRow>,
        rows: Vec<DeliveryRow>,
    },
}

/// Why what was journaled before a reply is not stored (yet). Either way it
/// is held, written again, and announced once stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error(
        "not stored: the database refused the write ({0}); the change stands and is stored and announced once the database accepts writes again"
    )]
    NotStored(String),
    #[error(
        "not stored within {} s: the database has not finished the write; the change stands and is stored and announced once it does",
        .0.as_secs()
    )]
    TimedOut(Duration),
}

/// Whether everything journaled before a reply is stored.
pub type Stored = Result<(), JournalError>;

type ReplyFn = Box<dyn FnOnce(Stored) + Send>;

enum Op {
    Write(JournalEntry),
    /// `latest`: a snapshot (monitoring, timer), of which only the newest per
    /// topic matters while held.
    Publish {
        message: Message,
        latest: bool,
    },
    Reply(ReplyFn),
}

/// Longest a reply waits for its write before it answers [`JournalError::TimedOut`].
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Held announcements (other than snapshots) kept while writes fail.
pub const MAX_HELD: usize = 10_000;
/// A write under way longer than this makes the service unready.
const STALLED_AFTER: Duration = Duration::from_secs(5);
/// Pause before writing a failed batch again, doubling up to the maximum.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Most operations taken from the queue at once.
const BATCH: usize = 20_000;

/// How the writer is doing.
#[derive(Debug, Clone, Default)]
struct Health {
    /// The last write failed, and why; cleared by the next that succeeds.
    failing: Option<String>,
    /// A write is under way since then.
    writing_since: Option<Instant>,
}

/// Where an exercise sends what must be stored and announced. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    /// Nothing stored: announcements are published at once.
    Direct(Mqtt),
    Stored {
        // Unbounded, but drained without pause: the writer takes entries
        // while it writes and folds them into its (bounded) next batch.
        tx: mpsc::UnboundedSender<Op>,
        health: watch::Receiver<Health>,
    },
}

impl Journal {
    /// No store: announcements go straight to `mqtt`.
    pub fn direct(mqtt: Mqtt) -> Self {
        Self {
            inner: Inner::Direct(mqtt),
        }
    }

    /// Starts the writer task for `store`; announcements go out on `mqtt`.
    /// The task ends when every clone of the journal is dropped.
    pub fn spawn(store: Store, mqtt: Mqtt) -> (Journal, JoinHandle<()>) {
        let (journal, task, _) = Self::start(store, mqtt, None);
        (journal, task)
    }

    /// Like [`Self::spawn`], for one exercise held at a lease epoch (several
    /// nodes): every batch carries `fence`. When the fence fails, the
    /// writer drops what it holds (nothing of it is announced), answers the
    /// waiting replies that it is not stored, turns the returned flag true
    /// and ends.
    pub fn spawn_fenced(
        store: Store,
        mqtt: Mqtt,
        fence: Fence,
    ) -> (Journal, JoinHandle<()>, watch::Receiver<bool>) {
        Self::start(store, mqtt, Some(fence))
    }

    fn start(
        store: Store,
        mqtt: Mqtt,
        fence: Option<Fence>,
    ) -> (Journal, JoinHandle<()>, watch::Receiver<bool>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (health_tx, health) = watch::channel(Health::default());
        let (lost_tx, lost) = watch::channel(false);
        let mut writer = Writer::new(store, mqtt, health_tx);
        writer.fence = fence;
        writer.lost = lost_tx;
        let task = tokio::spawn(writer.run(rx));
        (
            Journal {
                inner: Inner::Stored { tx, health },
            },
            task,
            lost,
        )
    }

    pub fn is_stored(&self) -> bool {
        matches!(self.inner, Inner::Stored { .. })
    }

    pub fn write(&self, entry: JournalEntry) {
        if let Inner::Stored { tx, .. } = &self.inner {
            let _ = tx.send(Op::Write(entry));
        }
    }

    /// Publishes `message` once everything written before it is stored.
    pub fn publish(&self, message: Message) {
        self.send_publish(message, false);
    }

    /// Like [`Self::publish`], for a snapshot: while announcements are held,
    /// a newer one on the same topic takes its place.
    pub fn publish_latest(&self, message: Message) {
        self.send_publish(message, true);
    }

    fn send_publish(&self, message: Message, latest: bool) {
        match &self.inner {
            Inner::Direct(mqtt) => mqtt.publish(message),
            Inner::Stored { tx, .. } => {
                let _ = tx.send(Op::Publish { message, latest });
            }
        }
    }

    /// Runs `f` once everything written before it is stored, or with why it
    /// is not.
    pub fn reply(&self, f: impl FnOnce(Stored) + Send + 'static) {
        match &self.inner {
            Inner::Direct(_) => f(Ok(())),
            Inner::Stored { tx, .. } => {
                if let Err(mpsc::error::SendError(Op::Reply(f))) = tx.send(Op::Reply(Box::new(f))) {
                    f(Err(JournalError::NotStored(
                        "the journal has stopped".into(),
                    )));
                }
            }
        }
    }

    /// Whether writes succeed: Err with why not while the last write failed,
    /// or while one has been under way for more than a few seconds.
    pub fn health(&self) -> Result<(), String> {
        let Inner::Stored { health, .. } = &self.inner else {
            return Ok(());
        };
        let health = health.borrow();
        if let Some(why) = &health.failing {
            return Err(format!(
                "database: writes fail ({why}); what is not stored is held and written again"
            ));
        }
        if let Some(since) = health.writing_since {
            let took = since.elapsed();
            if took > STALLED_AFTER {
                return Err(format!(
                    "database: a write has not finished for {} s",
                    took.as_secs()
                ));
            }
        }
        Ok(())
    }
}

/// A reply waiting for the batch of generation `generation`.
struct Waiting {
    generation: u64,
    deadline: Instant,
    reply: ReplyFn,
}

/// Everything not yet stored: the next batch and the announcements that wait
/// for it.
#[derive(Default)]
struct Pending {
    controls: Vec<ControlRow>,
    plays: Vec<PlayRow>,
    inserts: Vec<DeliveryRow>,
    /// The newest clock of each exercise.
    clocks: BTreeMap<String, ClockRow>,
    /// The newest state of each record.
    saves: HashMap<(String, i64, String, String), DeliveryRow>,
    /// Held announcements in order, each with whether it is a snapshot.
    publishes: VecDeque<(Message, bool)>,
    /// Where in `publishes` each snapshot topic's message is.
    latest: HashMap<String, usize>,
    /// Held announcements (not snapshots) dropped over MAX_HELD since the
    /// last log line.
    dropped: u64,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.controls.is_empty()
            && self.plays.is_empty()
            && self.inserts.is_empty()
            && self.clocks.is_empty()
            && self.saves.is_empty()
            && self.publishes.is_empty()
    }

    fn add(&mut self, entry: JournalEntry) {
        match entry {
            JournalEntry::Control(row) => self.controls.push(row),
            JournalEntry::Played { plays, rows } => {
                self.plays.extend(plays);
                self.add(JournalEntry::Deliveries(rows));
            }
            JournalEntry::Clock { exercise_id, row } => {
                self.clocks.insert(exercise_id, row);
            }
            JournalEntry::NewRun { rows, .. } | JournalEntry::NewRows { rows } => {
                self.inserts.extend(rows)
            }
            JournalEntry::Deliveries(rows) => {
                for row in rows {
                    let key = (
                        row.exercise_id.clone(),
                        row.run,
                        row.team_id.clone(),
                        row.inject_id.clone(),
                    );
                    self.saves.insert(key, row);
                }
            }
        }
    }

    fn hold(&mut self, message: Message, latest: bool) {
        if latest && let Some(&index) = self.latest.get(&message.topic) {
            self.publishes[index].0 = message;
            return;
        }
        let held = self.publishes.len() - self.latest.len();
        if !latest
            && held >= MAX_HELD
            && let Some(index) = self.publishes.iter().position(|(_, l)| !l)
        {
            // The oldest announcement that is not a snapshot makes room.
            self.publishes.remove(index);
            for at in self.latest.values_mut() {
                if *at > index {
                    *at -= 1;
                }
            }
            self.dropped += 1;
            metrics::counter!("scip_announcements_dropped_total").increment(1);
        }
        if latest {
            self.latest
                .insert(message.topic.clone(), self.publishes.len());
        }
        self.publishes.push_back((message, latest));
    }

    /// `self` (older) followed by `newer`.
    fn absorb(&mut self, newer: Pending) {
        self.controls.extend(newer.controls);
        self.plays.extend(newer.plays);
        self.inserts.extend(newer.inserts);
        self.clocks.extend(newer.clocks);
        self.saves.extend(newer.saves);
        self.dropped += newer.dropped;
        for (message, latest) in newer.publishes {
            self.hold(message, latest);
        }
    }

    /// The batch to write; the announcements stay.
    fn batch(&mut self) -> Batch {
        let mut saves: Vec<DeliveryRow> = std::mem::take(&mut self.saves).into_values().collect();
        saves.sort_by(|a, b| {
            (&a.exercise_id, a.run, a.position).cmp(&(&b.exercise_id, b.run, b.position))
        });
        Batch {
            fence: None,
            controls: std::mem::take(&mut self.controls),
            inserts: std::mem::take(&mut self.inserts),
            clocks: std::mem::take(&mut self.clocks).into_iter().collect(),
            saves,
            plays: std::mem::take(&mut self.plays),
        }
    }

    /// A batch that was not stored, back in front of what came since.
    fn restore(batch: Batch, publishes: VecDeque<(Message, bool)>, dropped: u64) -> Self {
        let mut p = Pending {
            controls: batch.controls,
            plays: batch.plays,
            inserts: batch.inserts,
            clocks: batch.clocks.into_iter().collect(),
            dropped,
            ..Pending::default()
        };
        p.add(JournalEntry::Deliveries(batch.saves));
        for (message, latest) in publishes {
            p.hold(message, latest);
        }
        p
    }
}

struct Writer {
    store: Store,
    mqtt: Mqtt,
    health: watch::Sender<Health>,
    pending: Pending,
    /// Replies in arrival order; generations and deadlines only grow.
    replies: VecDeque<Waiting>,
    /// The generation of `pending`: replies that came in with it wait for it.
    generation: u64,
    open: bool,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    /// The lease epoch every batch is written under (several nodes).
    fence: Option<Fence>,
    /// Turned true when the fence failed and the writer ended.
    lost: watch::Sender<bool>,
}

impl Writer {
    fn new(store: Store, mqtt: Mqtt, health: watch::Sender<Health>) -> Self {
        Self {
            store,
            mqtt,
            health,
            pending: Pending::default(),
            replies: VecDeque::new(),
            generation: 0,
            open: true,
            retry_at: None,
            retry_delay: RETRY_MIN,
            fence: None,
            lost: watch::channel(false).0,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Op>) {
        let mut ops = Vec::with_capacity(BATCH);
        loop {
            let waiting = self
                .replies
                .back()
                .is_some_and(|w| w.generation == self.generation);
            let ready = (!self.pending.is_empty() || waiting) && self.retry_at.is_none();
            if ready {
                self.write(&mut rx, &mut ops).await;
                if *self.lost.borrow() {
                    return;
                }
                continue;
            }
            if !self.open && self.pending.is_empty() && self.replies.is_empty() {
                return;
            }
            let deadline = self.replies.front().map(|w| w.deadline);
            tokio::select! {
                n = rx.recv_many(&mut ops, BATCH), if self.open => {
                    if n == 0 {
                        self.open = false;
                    }
                    self.take(&mut ops);
                }
                () = sleep_until(self.retry_at.unwrap_or_else(Instant::now)), if self.retry_at.is_some() => {
                    self.retry_at = None;
                }
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.expire(Instant::now());
                }
                else => {
                    // Closed, with nothing but a batch that keeps failing: give up.
                    return;
                }
            }
        }
    }

    fn take(&mut self, ops: &mut Vec<Op>) {
        let now = Instant::now();
        for op in ops.drain(..) {
            match op {
                Op::Write(entry) => self.pending.add(entry),
                Op::Publish { message, latest } => self.pending.hold(message, latest),
                Op::Reply(reply) => self.replies.push_back(Waiting {
                    generation: self.generation,
                    deadline: now + REPLY_TIMEOUT,
                    reply,
                }),
            }
        }
        if self.pending.dropped > 0 {
            warn!(
                dropped = self.pending.dropped,
                held = MAX_HELD,
                "announcements dropped: the database has refused writes for long, and only the newest are held"
            );
            self.pending.dropped = 0;
        }
    }

    /// Writes the pending batch, taking new entries meanwhile; then announces
    /// and answers, or holds everything for the next try.
    async fn write(&mut self, rx: &mut mpsc::UnboundedReceiver<Op>, ops: &mut Vec<Op>) {
        let written = self.generation;
        self.generation += 1;
        let mut current = std::mem::take(&mut self.pending);
        let mut batch = current.batch();
        batch.fence = self.fence.clone();
        self.health
            .send_modify(|h| h.writing_since = Some(Instant::now()));
        let result = {
            let store = self.store.clone();
            let write = store.write(&batch);
            tokio::pin!(write);
            loop {
                let deadline = self.replies.front().map(|w| w.deadline);
                tokio::select! {
                    biased;
                    result = &mut write => break result,
                    n = rx.recv_many(ops, BATCH), if self.open => {
                        if n == 0 {
                            self.open = false;
                        }
                        self.take(ops);
                    }
                    () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                        self.expire(Instant::now());
                    }
                }
            }
        };
        let result = match result {
            Err(e) if !e.is_transient() => self.write_each(batch, &e).await,
            other => other.map_err(|e| (e, batch)),
        };
        if let Err((e @ StoreError::Fenced { .. }, _)) = &result {
            // Ownership moved on: what this writer holds belongs to an
            // exercise another node runs now. Nothing is announced.
            warn!(error = %e, "write refused by the lease fence: this node no longer owns the exercise; its actor stops");
            metrics::counter!("scip_fenced_writes_total").increment(1);
            let why = JournalError::NotStored(e.to_string());
            self.answer(u64::MAX, Err(why));
            self.pending = Pending::default();
            self.health.send_replace(Health::default());
            self.lost.send_replace(true);
            return;
        }
        match result {
            Ok(()) => {
                let recovered = self.health.borrow().failing.is_some();
                self.health.send_replace(Health::default());
                if recovered {
                    info!("the database accepts writes again; held announcements go out");
                }
                self.retry_delay = RETRY_MIN;
                for (message, _) in current.publishes {
                    self.mqtt.publish(message);
                }
                self.answer(written, Ok(()));
            }
            Err((e, unstored)) => {
                error!(error = %e, retry_in_ms = self.retry_delay.as_millis() as u64, "cannot store the journal's batch; its announcements are held and it is written again");
                metrics::counter!("scip_store_write_failures_total").increment(1);
                self.health.send_replace(Health {
                    failing: Some(e.to_string()),
                    writing_since: None,
                });
                self.answer(written, Err(JournalError::NotStored(e.to_string())));
                let mut again = Pending::restore(unstored, current.publishes, current.dropped);
                again.absorb(std::mem::take(&mut self.pending));
                self.pending = again;
                self.retry_at = Some(Instant::now() + self.retry_delay);
                self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
            }
        }
    }

    /// A batch the database refuses for what is in it (a constraint), not for
    /// now: written entry by entry, dropping (and logging) those refused, so
    /// one bad row cannot hold everything else forever. A transient failure
    /// on the way gives back what is left.
    async fn write_each(
        &mut self,
        batch: Batch,
        first: &StoreError,
    ) -> Result<(), (StoreError, Batch)> {
        warn!(error = %first, "the database refused a batch for its rows; writing it entry by entry");
        let fence = batch.fence.clone();
        let mut singles: VecDeque<Batch> = VecDeque::new();
        singles.extend(batch.controls.into_iter().map(|c| Batch {
            controls: vec![c],
            ..Batch::default()
        }));
        singles.extend(batch.inserts.into_iter().map(|r| Batch {
            inserts: vec![r],
            ..Batch::default()
        }));
        singles.extend(batch.clocks.into_iter().map(|c| Batch {
            clocks: vec![c],
            ..Batch::default()
        }));
        singles.extend(batch.saves.into_iter().map(|r| Batch {
            saves: vec![r],
            ..Batch::default()
        }));
        singles.extend(batch.plays.into_iter().map(|r| Batch {
            plays: vec![r],
            ..Batch::default()
        }));
        while let Some(mut single) = singles.pop_front() {
            single.fence = fence.clone();
            match self.store.write(&single).await {
                Ok(()) => {}
                Err(e) if e.is_transient() || matches!(e, StoreError::Fenced { .. }) => {
                    let mut left = single;
                    for b in singles {
                        left.controls.extend(b.controls);
                        left.inserts.extend(b.inserts);
                        left.clocks.extend(b.clocks);
                        left.saves.extend(b.saves);
                        left.plays.extend(b.plays);
                    }
                    return Err((e, left));
                }
                Err(e) => {
                    error!(error = %e, entry = ?single, "the database refuses this entry; it is dropped");
                    metrics::counter!("scip_store_entries_dropped_total").increment(1);
                }
            }
        }
        Ok(())
    }

    /// Answers every reply waiting for generation `written` or earlier.
    fn answer(&mut self, written: u64, result: Stored) {
        while self
            .replies
            .front()
            .is_some_and(|w| w.generation <= written)
        {
            let w = self.replies.pop_front().expect("checked");
            (w.reply)(result.clone());
        }
    }

    /// Answers the replies that waited too long: their write is still held.
    fn expire(&mut self, now: Instant) {
        while self.replies.front().is_some_and(|w| w.deadline <= now) {
            let w = self.replies.pop_front().expect("checked");
            (w.reply)(Err(JournalError::TimedOut(REPLY_TIMEOUT)));
        }
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::QoS;

    use super::*;

    fn message(topic: &str, n: usize) -> Message {
        Message {
            topic: topic.to_owned(),
            payload: n.to_string().into_bytes(),
            qos: QoS::AtLeastOnce,
            retain: true,
            ack: None,
        }
    }

    fn held(p: &Pending) -> Vec<String> {
        p.publishes
            .iter()
            .map(|(m, _)| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload)))
            .collect()
    }

    #[test]
    fn held_announcements_keep_their_order_and_the_newest_snapshot() {
        let mut p = Pending::default();
        p.hold(message("status", 1), false);
        p.hold(message("monitoring", 1), true);
        p.hold(message("status", 2), false);
        p.hold(message("monitoring", 2), true);
        p.hold(message("timer", 1), true);
        assert_eq!(
            held(&p),
            ["status 1", "monitoring 2", "status 2", "timer 1"]
        );

        // What came in while a write failed follows what it held.
        let mut newer = Pending::default();
        newer.hold(message("status", 3), false);
        newer.hold(message("timer", 2), true);
        p.absorb(newer);
        assert_eq!(
            held(&p),
            [
                "status 1",
                "monitoring 2",
                "status 2",
                "timer 2",
                "status 3"
            ]
        );
    }

    #[test]
    fn held_announcements_are_bounded_dropping_the_oldest() {
        let mut p = Pending::default();
        p.hold(message("monitoring", 0), true);
        for n in 0..MAX_HELD + 3 {
            p.hold(message("status", n), false);
        }
        p.hold(message("monitoring", 1), true);
        assert_eq!(p.publishes.len(), MAX_HELD + 1);
        assert_eq!(p.dropped, 3);
        let all = held(&p);
        assert_eq!(all[0], "monitoring 1", "the snapshot stays, newest");
        assert_eq!(all[1], "status 3", "the three oldest were dropped");
        assert_eq!(all[MAX_HELD], format!("status {}", MAX_HELD + 2));
    }

    #[test]
    fn records_and_clocks_are_kept_once_at_their_newest() {
        let row = |status: &str| DeliveryRow {
            exercise_id: "ex".into(),
            run: 1,
            team_id: "blue".into(),
            inject_id: "i".into(),
            due_secs: 0,
            status: status.into(),
            attempts: 1,
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
        };
        let clock = |state: &str| ClockRow {
            state: state.into(),
            run: 1,
            started_wall_ms: None,
            paused_total_ms: 0,
            paused_since_wall_ms: None,
            updated_wall_ms: 0,
            turn: 0,
        };
        let mut p = Pending::default();
        for status in ["pending", "pending", "delivered"] {
            p.add(JournalEntry::Deliveries(vec![row(status)]));
        }
        for state in ["running", "paused"] {
            p.add(JournalEntry::Clock {
                exercise_id: "ex".into(),
                row: clock(state),
            });
        }
        let batch = p.batch();
        assert_eq!(batch.saves, [row("delivered")]);
        assert_eq!(batch.clocks, [("ex".to_owned(), clock("paused"))]);
        assert!(p.is_empty());
    }
}
