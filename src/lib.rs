//! scip-orchestrator: the exercise orchestration engine of a crisis-exercise
//! platform. See `ARCHITECTURE.md` for the map.

pub mod access;
pub mod app;
pub mod broker;
pub mod config;
pub mod http;
pub mod mqtt;
pub mod report;
pub mod runtime;
pub mod scenario;
pub mod store;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;

/// The engine core, a crate of its own (`crates/core`): no I/O.
pub use scip_orchestrator_core as core;
pub use scip_orchestrator_core::domain;
