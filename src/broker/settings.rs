//! Where the embedded broker listens and how it treats its clients beyond
//! logins: its ports, its timing and limits, and the web origins whose
//! pages may open a WebSocket to it.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::{Config, DEFAULT_BROKER_PORT, DEFAULT_BROKER_WS_PORT};

/// Where the embedded broker listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerSettings {
    pub bind: IpAddr,
    /// MQTT over TCP.
    pub port: u16,
    /// MQTT over WebSocket.
    pub ws_port: u16,
}

impl BrokerSettings {
    /// BROKER_BIND, BROKER_PORT and BROKER_WS_PORT, each port its default
    /// when not given.
    pub fn from_config(config: &Config) -> Self {
        Self {
            bind: config.broker_bind,
            port: config.broker_port.unwrap_or(DEFAULT_BROKER_PORT),
            ws_port: config.broker_ws_port.unwrap_or(DEFAULT_BROKER_WS_PORT),
        }
    }
}

/// Which public ports move to a free one, picked by the system, when they
/// are taken (`demo`'s defaults); the others fail with
/// `BrokerError::PortTaken`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MovablePorts {
    pub mqtt: bool,
    pub ws: bool,
}

/// How the embedded broker treats clients beyond logins: timing and
/// browser checks.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// How long a new connection has to send its CONNECT (and a WebSocket
    /// its handshake).
    pub connect_timeout: Duration,
    /// The keep-alive the gate gives rumqttd for every client, whatever the
    /// client's own; the gate pings rumqttd when half of it passed quietly.
    pub upstream_keep_alive: Duration,
    /// Which web pages may open a WebSocket to the broker.
    pub origins: Origins,
    /// How often the broker checks that rumqttd still accepts connections
    /// (`EmbeddedBroker::health`).
    pub probe_every: Duration,
    /// Most clients connected at once (BROKER_MAX_CLIENTS); one more gets
    /// CONNACK 3, "server unavailable".
    pub max_clients: usize,
    /// Most distinct subscription filters, over the broker's life
    /// (BROKER_MAX_FILTERS): rumqttd keeps a log for every filter it was
    /// ever given, so a new one past this is refused (SUBACK 0x80).
    pub max_filters: usize,
    /// Which public ports move when taken (none by default).
    pub movable: MovablePorts,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            upstream_keep_alive: Duration::from_secs(60),
            origins: Origins::Any,
            probe_every: Duration::from_secs(2),
            max_clients: 10_000,
            max_filters: 20_000,
            movable: MovablePorts::default(),
        }
    }
}

/// The web origins (`scheme://host[:port]`) whose pages may open a
/// WebSocket to the broker. A browser always sends its page's `Origin`, so
/// without this check any site a controller visits could drive the
/// exercise through the controller's browser; clients that are not
/// browsers send none and are not concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    Any,
    Only(Vec<String>),
}

impl Origins {
    /// From a list of origins (or URLs, whose path is ignored); `*` is any.
    pub fn parse<'a>(list: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut only = Vec::new();
        for item in list {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            if item == "*" {
                return Ok(Self::Any);
            }
            only.push(
                normalize_origin(item)
                    .ok_or_else(|| format!("{item:?} is not an origin (scheme://host[:port])"))?,
            );
        }
        Ok(Self::Only(only))
    }

    /// Whether a WebSocket handshake with this `Origin` header (None:
    /// no header, a client that is not a browser) is let in.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (Self::Any, _) | (_, None) => true,
            (Self::Only(list), Some(origin)) => {
                normalize_origin(origin).is_some_and(|o| list.contains(&o))
            }
        }
    }
}

/// `scheme://host[:port]` in lower case, without a default port or a path.
fn normalize_origin(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let default_port = if scheme == "http" { ":80" } else { ":443" };
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::Origins;

    #[test]
    fn origins_match_scheme_host_and_port_only() {
        let own = Origins::parse(["http://127.0.0.1:8080/", "https://Exercise.Example"]).unwrap();
        let check = |origin: Option<&str>, expected: bool| {
            assert_eq!(own.allows(origin), expected, "{origin:?}");
        };
        check(None, true);
        check(Some("http://127.0.0.1:8080"), true);
        check(Some("https://exercise.example"), true);
        check(Some("https://exercise.example:443"), true);
        check(Some("http://exercise.example"), false);
        check(Some("http://127.0.0.1:8081"), false);
        check(Some("http://127.0.0.1:8080.evil.example"), false);
        check(Some("null"), false);
        check(Some(""), false);
        assert_eq!(Origins::parse(["*"]).unwrap(), Origins::Any);
        assert!(
            Origins::parse(["http://a", " * "])
                .unwrap()
                .allows(Some("null"))
        );
        for bad in ["ftp://x", "127.0.0.1:8080", "http://", "http://user@host"] {
            assert!(Origins::parse([bad]).is_err(), "{bad}");
        }
    }
}
