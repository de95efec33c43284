//! The journal: what an exercise has decided is stored before it is
//! announced. Under `serve` one writer task takes every exercise's entries,
//! writes them in batches (a burst of acknowledgements costs one transaction,
//! not thousands), then sends the announcements and replies that waited for
//! them, in order. Under `run` there is no store: announcements go straight out.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::error;

use crate::mqtt::{Message, Mqtt};
use crate::store::{ClockRow, ControlRow, DeliveryRow, Store};

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
}

enum Op {
    Write(JournalEntry),
    Publish(Message),
    Reply(Box<dyn FnOnce() + Send>),
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
    Stored(mpsc::UnboundedSender<Op>),
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
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(writer(store, mqtt, rx));
        (
            Journal {
                inner: Inner::Stored(tx),
            },
            task,
        )
    }

    pub fn is_stored(&self) -> bool {
        matches!(self.inner, Inner::Stored(_))
    }

    pub fn write(&self, entry: JournalEntry) {
        if let Inner::Stored(tx) = &self.inner {
            let _ = tx.send(Op::Write(entry));
        }
    }

    /// Publishes `message` once everything written before it is stored.
    pub fn publish(&self, message: Message) {
        match &self.inner {
            Inner::Direct(mqtt) => mqtt.publish(message),
            Inner::Stored(tx) => {
                let _ = tx.send(Op::Publish(message));
            }
        }
    }

    /// Runs `f` once everything written before it is stored.
    pub fn reply(&self, f: impl FnOnce() + Send + 'static) {
        match &self.inner {
            Inner::Direct(_) => f(),
            Inner::Stored(tx) => {
                if let Err(mpsc::error::SendError(Op::Reply(f))) = tx.send(Op::Reply(Box::new(f))) {
                    f();
                }
            }
        }
    }
}

/// Most operations taken into one batch.
const BATCH: usize = 20_000;

async fn writer(store: Store, mqtt: Mqtt, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut ops = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut ops, BATCH).await > 0 {
        let mut controls = Vec::new();
        let mut inserts: Vec<DeliveryRow> = Vec::new();
        let mut clocks: Vec<(String, ClockRow)> = Vec::new();
        let mut saves: HashMap<(String, i64, String, String), DeliveryRow> = HashMap::new();
        let mut after = Vec::new();
        for op in ops.drain(..) {
            match op {
                Op::Write(JournalEntry::Control(row)) => controls.push(row),
                Op::Write(JournalEntry::Clock { exercise_id, row }) => {
                    clocks.push((exercise_id, row))
                }
                Op::Write(JournalEntry::NewRun { rows, .. } | JournalEntry::NewRows { rows }) => {
                    inserts.extend(rows)
                }
                Op::Write(JournalEntry::Deliveries(rows)) => {
                    for row in rows {
                        let key = (
                            row.exercise_id.clone(),
                            row.run,
                            row.team_id.clone(),
                            row.inject_id.clone(),
                        );
                        saves.insert(key, row);
                    }
                }
                other => after.push(other),
            }
        }
        for row in &controls {
            if let Err(e) = store.insert_control(row).await {
                error!(exercise_id = %row.exercise_id, error = %e, "cannot store a control command");
            }
        }
        if !inserts.is_empty()
            && let Err(e) = store.insert_deliveries(&inserts).await
        {
            error!(error = %e, rows = inserts.len(), "cannot store new delivery records");
        }
        for (id, row) in &clocks {
            if let Err(e) = store.update_exercise_clock(id, row).await {
                error!(exercise_id = %id, error = %e, "cannot store the exercise clock");
            }
        }
        if !saves.is_empty() {
            let mut rows: Vec<DeliveryRow> = saves.into_values().collect();
            rows.sort_by(|a, b| {
                (&a.exercise_id, a.run, a.position).cmp(&(&b.exercise_id, b.run, b.position))
            });
            if let Err(e) = store.save_deliveries(&rows).await {
                error!(error = %e, rows = rows.len(), "cannot store delivery records");
            }
        }
        for op in after {
            match op {
                Op::Publish(m) => mqtt.publish(m),
                Op::Reply(f) => f(),
                Op::Write(_) => unreachable!("sorted above"),
            }
        }
    }
}
