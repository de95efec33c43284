//! scip-orchestrator: the exercise orchestration engine of a crisis-exercise
//! platform. See `ARCHITECTURE.md` for the map.

pub mod aar;
pub mod app;
pub mod auth;
pub mod broker;
pub mod broker_acl;
#[cfg(feature = "embedded-broker")]
pub mod broker_gate;
pub mod config;
pub mod core;
pub mod domain;
pub mod exercise;
pub mod http;
pub mod journal;
pub mod limits;
pub mod links;
pub mod live;
pub mod logging;
pub mod media;
pub mod mqtt;
pub mod package;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod service;
pub mod store;
#[doc(hidden)]
pub mod testing;
pub mod timer;
pub mod topic_acl;
pub mod web;
pub mod wire;
