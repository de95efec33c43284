//! scip-orchestrator: the exercise orchestration engine of a crisis-exercise
//! platform. See `ARCHITECTURE.md` for the map.

pub mod access;
pub mod app;
pub mod broker;
pub mod config;
pub mod core;
pub mod domain;
pub mod http;
pub mod mqtt;
pub mod report;
pub mod runtime;
pub mod scenario;
pub mod store;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
