//! scip-orchestrator: the exercise orchestration engine of a crisis-exercise
//! platform. See `ARCHITECTURE.md` for the map.

pub mod config;
pub mod core;
pub mod domain;
pub mod scenario;
