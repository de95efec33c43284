//! The HTTP API of `serve` end to end: every endpoint, its errors, and what
//! reaches the teams' feeds, against a real Mosquitto and SQLite.

mod aar;
mod access;
mod control;
mod dashboards;
mod deliveries;
mod errors;
mod exercises;
mod health;
mod hostile;
mod injects;
mod limits;
mod msel;
mod openapi;
mod package_paths;
mod packages;
mod play;
mod support;
mod teams;
mod turns;
