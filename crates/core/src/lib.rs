//! The core of scip-orchestrator: everything about running an exercise that
//! needs no I/O and no clock. Time comes in as arguments; work goes out as
//! values. A crate of its own, with no networking, database or file system
//! among its dependencies, so "the core does no I/O" is the compiler's rule.
//!
//! - `domain`: parsed identifiers, exercise seconds, speed.
//! - `lifecycle`: states, commands and which command fits where.
//! - `clock`: exercise time from a start instant, paused time and speed.
//! - `delivery`: delivery records, their counts and the delivery policy.
//! - `engine`: the engine of one exercise, driven by its [`Plan`].
//! - `play`: two-way play: outcomes, conditions, what a record keeps of them.

pub mod clock;
pub mod delivery;
pub mod domain;
pub mod engine;
pub mod lifecycle;
pub mod play;

#[cfg(test)]
mod play_tests;
#[cfg(test)]
mod tests;

pub use clock::ExerciseClock;
pub use delivery::{Counts, DeliveryPolicy, DeliveryRecord, DeliveryStatus};
pub use engine::{
    DeliveryTag, EditError, Engine, Now, Output, Persisted, Plan, Planned, SeekMode, TimerSnapshot,
    Transition,
};
pub use lifecycle::{Command, Refusal, State};
pub use play::{
    Answer, Answered, Condition, Expectation, Gate, Outcome, OutcomeMatch, PlayError, PlayState,
    Skip, SlotPlay, Trigger,
};
