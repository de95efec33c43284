//! The embedded broker and `demo`: rumqttd in-process with our own MQTT
//! client and outside subscribers (TCP and WebSocket), and the binary's
//! `demo` and `serve` as a user runs them, on free ports.

mod broker;
mod demo;
mod media;
mod serve;
mod support;
mod wait;
