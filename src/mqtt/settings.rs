//! How the process's MQTT client reaches the broker: host and port, the
//! login (MQTT_USERNAME) and TLS (MQTT_TLS) from `config`, timing and
//! packet limits, as rumqttc's options.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};

pub use crate::config::{Credentials, Password, SettingsError, tls_client_config};

/// How to reach the broker.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    /// Stable for the life of the process, so reconnects resume the session.
    pub client_id: String,
    /// No acknowledgement within this long is a failed attempt.
    pub delivery_timeout: Duration,
    pub keep_alive: Duration,
    /// Largest packet in either direction.
    pub max_packet_size: usize,
    /// The login (MQTT_USERNAME); None connects anonymously.
    pub credentials: Option<Credentials>,
    /// TLS (MQTT_TLS) with the roots it trusts; None is plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl MqttSettings {
    pub fn new(host: impl Into<String>, port: u16, client_id: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            client_id: client_id.into(),
            delivery_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(5),
            max_packet_size: MAX_PACKET_SIZE,
            credentials: None,
            tls: None,
        }
    }

    pub(super) fn options(&self, clean_session: bool) -> MqttOptions {
        let mut o = MqttOptions::new(&self.client_id, &self.host, self.port);
        o.set_keep_alive(self.keep_alive)
            .set_clean_session(clean_session)
            .set_max_packet_size(self.max_packet_size, self.max_packet_size)
            .set_inflight(INFLIGHT);
        if let Some(c) = &self.credentials {
            o.set_credentials(&c.username, c.password.expose());
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        o
    }
}

/// Largest MQTT packet by default, in either direction: room for injects
/// with long content. The embedded broker accepts the same.
pub const MAX_PACKET_SIZE: usize = 8 * 1024 * 1024;
/// Publishes with QoS 1 awaiting acknowledgement at once (rumqttc's window).
pub const INFLIGHT: u16 = 1000;
