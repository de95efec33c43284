//! MQTT: the process's one client connection (`client`, re-exported here),
//! the topics and payloads of SPEC section 4 (`wire`), and the broker's
//! access control as Mosquitto's files spell it: the ACL rules (`acl`) and
//! the password, ACL and credentials files `broker-acl` writes
//! (`broker_files`).

pub mod acl;
pub mod broker_files;
mod client;
pub mod wire;

pub use client::*;
