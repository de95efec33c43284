//! The hostile-client suite: what a careless or malicious MQTT client can
//! send, run against a private Mosquitto and against the embedded broker
//! alike. After every case the broker must still serve: a long-lived client
//! (as the engine is) keeps getting its publishes acknowledged, and a fresh
//! client connects, subscribes and receives. Where MQTT 3.1.1 says what the
//! broker answers, both brokers are held to it.
//!
//! Every test is declared here under its name; its body lives in the module
//! of its concern: `suite` (the cases both brokers face, on a
//! `target::Target`), `readiness` (`serve`'s `/readyz` when rumqttd stops
//! accepting) and `limits` (what the embedded broker holds at most), over
//! `support`'s raw MQTT wire.

#[cfg(feature = "embedded-broker")]
mod limits;
#[cfg(feature = "embedded-broker")]
mod readiness;
mod suite;
mod support;
mod target;

use suite::suite;
use target::Target;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_survives_hostile_clients() {
    suite(Target::mosquitto().await).await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_survives_hostile_clients() {
    suite(Target::embedded().await).await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_turns_unready_when_the_broker_stops_accepting() {
    readiness::serve_turns_unready_when_the_broker_stops_accepting().await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_holds_at_most_its_clients() {
    limits::the_embedded_broker_holds_at_most_its_clients().await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_through_the_embedded_broker_are_bounded() {
    limits::subscriptions_through_the_embedded_broker_are_bounded().await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_its_login_a_connection_costs_little() {
    limits::before_its_login_a_connection_costs_little().await;
}
