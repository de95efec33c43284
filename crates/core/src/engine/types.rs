//! What the engine takes and gives: the time as the driver read it, the
//! plan it runs, the outputs it asks the driver to act on, and the stored
//! state a restarted process restores it from.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use crate::delivery::DeliveryRecord;
use crate::domain::ExerciseSeconds;
use crate::lifecycle::{Command, State};

/// The current time, monotonic and wall, as the driver read it.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall: OffsetDateTime,
}

impl Now {
    /// The wall time of an earlier (or later) monotonic instant.
    pub fn wall_at(&self, at: Instant) -> OffsetDateTime {
        if at <= self.mono {
            self.wall - (self.mono - at)
        } else {
            self.wall + (at - self.mono)
        }
    }
}

/// Identifies one publish attempt of one record of one run. Packs into a u64
/// so the MQTT layer can carry it opaquely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryTag {
    pub run: u16,
    pub slot: u32,
    pub attempt: u16,
}

impl DeliveryTag {
    pub fn to_u64(self) -> u64 {
        (u64::from(self.run) << 48) | (u64::from(self.slot) << 16) | u64::from(self.attempt)
    }

    pub fn from_u64(raw: u64) -> Self {
        Self {
            run: (raw >> 48) as u16,
            slot: (raw >> 16) as u32,
            attempt: raw as u16,
        }
    }
}

/// The clock as timer messages show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerSnapshot {
    pub current: ExerciseSeconds,
    pub total: ExerciseSeconds,
    pub state: State,
}

/// A change of lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    /// None when the clock itself completed the exercise.
    pub command: Option<Command>,
    pub reason: Option<String>,
    pub at: ExerciseSeconds,
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Publish a timer message.
    Timer(TimerSnapshot),
    /// Publish the inject of record `tag.slot` to its team's feed.
    Deliver(DeliveryTag),
    /// Announce a lifecycle change (status, control, timer).
    StateChanged(Transition),
    /// Record `slot` failed its last attempt.
    DeliveryFailed { slot: usize },
    /// The play state of record `slot` changed: its outcome, its answer
    /// window, or its condition (released or skipped).
    Played { slot: usize },
}

/// What an engine runs: every inject as (team, inject, due, turn), by team
/// then timeline position; a scenario makes one (`Scenario::plan`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The exercise's length in seconds.
    pub duration: u32,
    /// One entry per record slot, in slot order.
    pub injects: Vec<Planned>,
    /// Turn-based exercises: the second each turn ends; empty otherwise.
    pub turn_ends: Vec<u32>,
    /// Two-way play per slot (expectations, conditions); empty when the
    /// scenario has none.
    pub play: Vec<crate::play::SlotPlay>,
}

/// One inject of a [`Plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// The team's index in the scenario.
    pub team: u32,
    /// The inject's position in its team's timeline.
    pub inject: u32,
    /// The exercise second it is due.
    pub due: ExerciseSeconds,
    /// Its turn (from 1) in a turn-based exercise; 0 otherwise.
    pub turn: u16,
}

/// A finished run, kept after a reset.
#[derive(Debug, Clone)]
pub struct ArchivedRun {
    pub run: u16,
    pub records: Vec<DeliveryRecord>,
}

/// What a restarted process knows of an exercise: its stored state.
#[derive(Debug, Clone)]
pub struct Persisted {
    pub state: State,
    pub run: u16,
    /// Exercise time now, from the stored clock values.
    pub elapsed: Duration,
    pub started_wall: Option<OffsetDateTime>,
    /// The turn under way or just over (turn-based exercises; else 0).
    pub turn: u16,
    /// Every record of the run, in slot order; phases are rebuilt.
    pub records: Vec<DeliveryRecord>,
}
