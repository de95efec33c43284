//! Exercises at run time: everything that owns a clock, a channel or a
//! task. The core decides what is due; runtime drives it on the real clock,
//! publishes through MQTT, stores through the journal and answers
//! controllers.
//!
//! What it owns: the actor of one exercise (`exercise`), the journal that
//! stores before it announces (`journal`), what browsers follow (`live`),
//! the wake-ups exercises wait on (`timer`: the precise one, or tokio's
//! clock in tests), the registry of every exercise of `serve` (`service`)
//! and the foreground `run` (`run`).

pub mod exercise;
pub mod journal;
pub mod lease;
pub mod live;
pub mod run;
pub mod service;
pub mod timer;
