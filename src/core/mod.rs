//! The core: everything about running an exercise that needs no I/O and no
//! clock. Time comes in as arguments; work goes out as values.

pub mod clock;
pub mod delivery;
pub mod engine;
pub mod lifecycle;

#[cfg(test)]
mod tests;

pub use clock::ExerciseClock;
pub use delivery::{Counts, DeliveryRecord, DeliveryStatus};
pub use engine::{
    DeliveryTag, EditError, Engine, Now, Output, Persisted, SeekMode, TimerSnapshot, Transition,
};
pub use lifecycle::{Command, Refusal, State};
