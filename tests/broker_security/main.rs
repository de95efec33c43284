//! Broker security: the engine's login and TLS, and the closed room that
//! `broker-acl` makes of an exercise, on a real Mosquitto and on the
//! embedded broker (whose gate enforces the same files).
//!
//! Every test is declared here under its name; its body lives in the module
//! of its concern: `tls_and_logins` (the engine's login and TLS), `acl` (the
//! closed room on either broker), `gate` (what the embedded broker's gate
//! adds) and `serve` (the files given to `serve`), over `support`.

mod acl;
#[cfg(feature = "embedded-broker")]
mod gate;
#[cfg(feature = "embedded-broker")]
mod serve;
mod support;
mod tls_and_logins;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_logs_in_over_tls_and_its_team_reads_the_feed() {
    tls_and_logins::engine_logs_in_over_tls_and_its_team_reads_the_feed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exercise_is_a_closed_room_on_mosquitto() {
    acl::an_exercise_is_a_closed_room_on_mosquitto().await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exercise_is_a_closed_room_on_the_embedded_broker() {
    acl::an_exercise_is_a_closed_room_on_the_embedded_broker().await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_gate_refuses_clearly_and_checks_every_login() {
    gate::the_embedded_broker_gate_refuses_clearly_and_checks_every_login().await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_holds_teams_to_the_acl_file() {
    serve::serve_holds_teams_to_the_acl_file().await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_closes_malformed_connections_and_serves_on() {
    gate::the_gate_closes_malformed_connections_and_serves_on().await;
}
