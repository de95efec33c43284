//! MQTT: the process's one client connection (`client`: its two tasks;
//! `settings`: how it reaches the broker; `tickets`: each publish matched
//! to its acknowledgement), the topics and payloads of SPEC section 4
//! (`wire`), and the broker's access control as Mosquitto's files spell
//! it: the ACL rules (`acl`) and the password, ACL and credentials files
//! `broker-acl` writes (`broker_files`).

pub mod acl;
pub mod broker_files;
mod client;
mod settings;
mod tickets;
pub mod wire;

#[cfg(test)]
pub(crate) use client::{Asked, PlayedBroker};
pub use client::{ConnectError, Message, Mqtt, RECEIVED_QUEUE, Received};
pub use settings::{
    Credentials, INFLIGHT, MAX_PACKET_SIZE, MqttSettings, Password, SettingsError,
    tls_client_config,
};
pub use tickets::{AckEvent, AckTo, PublishError};
