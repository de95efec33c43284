//! Configuration: environment variables, each also a command-line flag (SPEC section 6).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rumqttc::QoS;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub use crate::core::DeliveryPolicy;

/// Settings shared by every subcommand. Each field reads its environment variable
/// when the flag is absent; a bad value is a start-up error naming the variable.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Host name of the MQTT broker (default: localhost). When unset, `serve`
    /// and `demo` start the embedded broker instead; see `mqtt_host`.
    #[arg(long, env = "MQTT_BROKER_HOST", global = true)]
    pub mqtt_broker_host: Option<String>,

    /// Port of the MQTT broker.
    #[arg(long, env = "MQTT_BROKER_PORT", default_value_t = 1883, global = true)]
    pub mqtt_broker_port: u16,

    /// QoS of feed messages: 0 (written to the socket counts as delivered) or 1 (PUBACK).
    #[arg(long, env = "MQTT_QOS_LEVEL", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(0..=1), global = true)]
    pub mqtt_qos_level: u8,

    /// Longest exercise a scenario may declare, in seconds.
    #[arg(long, env = "MAX_EXERCISE_DURATION", default_value_t = 7200,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub max_exercise_duration: u32,

    /// Most teams one scenario may have.
    #[arg(long, env = "MAX_TEAMS_PER_EXERCISE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub max_teams_per_exercise: u32,

    /// Most injects one timeline may hold.
    #[arg(long, env = "MAX_INJECTS_PER_TIMELINE", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub max_injects_per_timeline: u32,

    /// An inject acknowledged more than this many milliseconds after it was due is
    /// reported as late.
    #[arg(long, env = "TIMER_PRECISION_MS", default_value_t = 100, global = true)]
    pub timer_precision_ms: u64,

    /// How long to wait for the broker to acknowledge a feed message before the
    /// attempt counts as failed.
    #[arg(long, env = "DELIVERY_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub delivery_timeout_ms: u64,

    /// Pause between a failed attempt and the next one.
    #[arg(long, env = "RETRY_DELAY_SECONDS", default_value_t = 5, global = true)]
    pub retry_delay_seconds: u64,

    /// Attempts per delivery before it is marked failed, at most 65535
    /// (each attempt's number travels in 16 bits of its MQTT ticket).
    #[arg(long, env = "MAX_RETRY_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub max_retry_attempts: u16,

    /// Largest inject a timeline may hold, as JSON bytes (content, media
    /// list and every other field).
    #[arg(long, env = "MAX_INJECT_BYTES", default_value_t = 262_144,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub max_inject_bytes: u64,

    /// Largest scenario or timeline file read from disk, in bytes; a bigger
    /// one is a validation error (it is not read).
    #[arg(long, env = "MAX_SCENARIO_FILE_BYTES", default_value_t = 67_108_864,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub max_scenario_file_bytes: u64,

    /// Most exercises one `serve` holds; creating one more is refused (429).
    #[arg(long, env = "MAX_EXERCISES", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub max_exercises: u32,

    /// Control commands a client may give per minute, in bursts of up to a
    /// sixth of that (at least 5): per client address on the API (429), per
    /// exercise on the control topic (refused, reported on the status topic).
    #[arg(long, env = "MAX_COMMANDS_PER_MINUTE", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub max_commands_per_minute: u32,

    /// Largest HTTP request body, in bytes (an inline scenario package, an
    /// uploaded package archive).
    #[arg(long, env = "MAX_REQUEST_BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..), global = true)]
    pub max_request_bytes: u64,

    /// How long a team dashboard link stays valid, in hours, from when it is
    /// issued (exercise creation, or a re-issue).
    #[arg(long, env = "TEAM_LINK_TTL_HOURS", default_value_t = 168,
          value_parser = clap::value_parser!(u32).range(1..=87_600), global = true)]
    pub team_link_ttl_hours: u32,

    /// API tokens accepted from the start, as `role:sha256-hex` (comma
    /// separated; roles observer, controller, admin). The tokens themselves
    /// are never configured in clear: `scip-orchestrator hash-token` hashes
    /// one. With none here and none issued, `serve` issues an admin token at
    /// its first start and prints it once.
    #[arg(
        long,
        env = "API_TOKENS",
        value_delimiter = ',',
        global = true,
        hide_env_values = true
    )]
    pub api_tokens: Vec<String>,

    /// Folder of media files that injects refer to.
    #[arg(long, env = "MEDIA_STORAGE_PATH", global = true)]
    pub media_storage_path: Option<PathBuf>,

    /// Folder searched for `<timeline_id>.json` when the scenario's own
    /// `timelines/` folder does not have it.
    #[arg(long, env = "TIMELINE_STORAGE_PATH", global = true)]
    pub timeline_storage_path: Option<PathBuf>,

    /// Address the embedded broker listens on (`serve` and `demo` without
    /// MQTT_BROKER_HOST); 0.0.0.0 to let other machines connect.
    #[arg(long, env = "BROKER_BIND", default_value = "127.0.0.1", global = true)]
    pub broker_bind: IpAddr,

    /// MQTT (TCP) port of the embedded broker (default: 1883; when that is
    /// taken, `demo` moves to a free port and prints it).
    #[arg(long, env = "BROKER_PORT",
          value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub broker_port: Option<u16>,

    /// MQTT-over-WebSocket port of the embedded broker, for browser clients
    /// (default: 8083; when that is taken, `demo` moves to a free port).
    #[arg(long, env = "BROKER_WS_PORT",
          value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub broker_ws_port: Option<u16>,

    /// Web origins (`scheme://host[:port]`, comma separated, or `*` for
    /// any) whose pages may use the embedded broker's WebSocket listener;
    /// default: the service's own (PUBLIC_URL, and its loopback names).
    /// Clients that are not browsers send no origin and are not concerned.
    #[arg(long, env = "BROKER_WS_ORIGINS", global = true)]
    pub broker_ws_origins: Option<String>,

    /// Most clients the embedded broker holds at once; one more gets CONNACK
    /// 3 (default: a quarter of the open-file limit, at most 10,000).
    #[arg(long, env = "BROKER_MAX_CLIENTS", global = true,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub broker_max_clients: Option<u32>,

    /// Most distinct subscription filters the embedded broker takes over
    /// its life (rumqttd keeps every one); a new one past it is refused.
    #[arg(long, env = "BROKER_MAX_FILTERS", default_value_t = 20_000, global = true,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub broker_max_filters: u32,

    /// User name of the engine's MQTT login (none: anonymous). With the
    /// embedded broker it also makes the broker refuse anonymous clients.
    #[arg(long, env = "MQTT_USERNAME", global = true)]
    pub mqtt_username: Option<String>,

    /// Password of MQTT_USERNAME; prefer MQTT_PASSWORD_FILE.
    #[arg(long, env = "MQTT_PASSWORD", hide_env_values = true, global = true,
          value_parser = parse_password, conflicts_with = "mqtt_password_file")]
    pub mqtt_password: Option<Password>,

    /// File holding the password of MQTT_USERNAME (its first line).
    #[arg(long, env = "MQTT_PASSWORD_FILE", global = true)]
    pub mqtt_password_file: Option<PathBuf>,

    /// Connect to the broker over TLS (true/false).
    #[arg(long, env = "MQTT_TLS", global = true,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub mqtt_tls: bool,

    /// PEM file of the CA(s) that signed the broker's certificate (default
    /// with MQTT_TLS: the system's root certificates).
    #[arg(long, env = "MQTT_CA_FILE", global = true)]
    pub mqtt_ca_file: Option<PathBuf>,

    /// Mosquitto password file (as `broker-acl` writes it) whose users the
    /// embedded broker accepts, besides MQTT_USERNAME; setting it makes the
    /// embedded broker refuse anonymous clients.
    #[arg(long, env = "BROKER_PASSWORD_FILE", global = true)]
    pub broker_password_file: Option<PathBuf>,

    /// Mosquitto acl_file (as `broker-acl` writes it) the embedded broker
    /// holds the users of BROKER_PASSWORD_FILE to: which topics each may
    /// publish, subscribe to and receive.
    #[arg(long, env = "BROKER_ACL_FILE", global = true)]
    pub broker_acl_file: Option<PathBuf>,

    /// This node's name in a cluster (several `serve` on one PostgreSQL and
    /// one external broker); default: the host name and the boot id. One
    /// process per id: a second one with a live id is refused.
    #[arg(long, env = "NODE_ID", global = true)]
    pub node_id: Option<String>,

    /// Where the other nodes reach this node's HTTP API (`http://host:port`);
    /// default: the address `serve` listens on.
    #[arg(long, env = "NODE_ADDRESS", global = true)]
    pub node_address: Option<String>,

    /// How often a node renews its exercises' leases and its heartbeat.
    #[arg(long, env = "LEASE_RENEW_MS", default_value_t = 2000, global = true,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub lease_renew_ms: u64,

    /// How long a lease lasts after its last renewal (by the database's
    /// clock); at least twice LEASE_RENEW_MS. A node stops publishing once
    /// its renewals have failed for LEASE_TTL_MS - LEASE_RENEW_MS.
    #[arg(long, env = "LEASE_TTL_MS", default_value_t = 6000, global = true,
          value_parser = clap::value_parser!(u64).range(200..=600_000))]
    pub lease_ttl_ms: u64,
}

fn parse_password(raw: &str) -> Result<Password, String> {
    Ok(Password::new(raw))
}

/// The limits a scenario is validated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_duration_secs: u32,
    pub max_teams: usize,
    pub max_injects_per_timeline: usize,
    /// Largest inject, as JSON bytes.
    pub max_inject_bytes: usize,
    /// Largest scenario or timeline file read from disk.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_duration_secs: 7200,
            max_teams: 10,
            max_injects_per_timeline: 1000,
            max_inject_bytes: 262_144,
            max_file_bytes: 67_108_864,
        }
    }
}

/// How leases are kept (several nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// Between two renewals (LEASE_RENEW_MS).
    pub renew: Duration,
    /// A lease's life after its last renewal, by the database's clock (LEASE_TTL_MS).
    pub ttl: Duration,
    /// The trust window: how long after sending a renewal that succeeded
    /// this node still acts on its leases: TTL - renew interval (4 s by
    /// default), so it stops at least a renewal interval before any other
    /// node can claim them.
    pub trust: Duration,
}

/// The broker host when MQTT_BROKER_HOST is unset (and no embedded broker runs).
pub const DEFAULT_MQTT_HOST: &str = "localhost";

/// The embedded broker's MQTT port when BROKER_PORT is unset.
pub const DEFAULT_BROKER_PORT: u16 = 1883;

/// The embedded broker's WebSocket port when BROKER_WS_PORT is unset.
pub const DEFAULT_BROKER_WS_PORT: u16 = 8083;

impl Config {
    /// The lease settings, checked against each other.
    pub fn lease_timing(&self) -> Result<LeaseTiming, String> {
        if self.lease_ttl_ms < 2 * self.lease_renew_ms {
            return Err(format!(
                "LEASE_TTL_MS ({}) must be at least twice LEASE_RENEW_MS ({}): a lease must outlive a lost renewal",
                self.lease_ttl_ms, self.lease_renew_ms
            ));
        }
        let renew = Duration::from_millis(self.lease_renew_ms);
        let ttl = Duration::from_millis(self.lease_ttl_ms);
        Ok(LeaseTiming {
            renew,
            ttl,
            trust: ttl - renew,
        })
    }

    /// The external broker's host: MQTT_BROKER_HOST, else `localhost`.
    pub fn mqtt_host(&self) -> &str {
        self.mqtt_broker_host
            .as_deref()
            .unwrap_or(DEFAULT_MQTT_HOST)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_duration_secs: self.max_exercise_duration,
            max_teams: self.max_teams_per_exercise as usize,
            max_injects_per_timeline: self.max_injects_per_timeline as usize,
            max_inject_bytes: usize::try_from(self.max_inject_bytes).unwrap_or(usize::MAX),
            max_file_bytes: self.max_scenario_file_bytes,
        }
    }

    pub fn delivery_policy(&self) -> DeliveryPolicy {
        DeliveryPolicy {
            timeout: Duration::from_millis(self.delivery_timeout_ms),
            retry_delay: Duration::from_secs(self.retry_delay_seconds),
            max_attempts: self.max_retry_attempts,
            late_after: Duration::from_millis(self.timer_precision_ms),
        }
    }

    /// The engine's MQTT login: MQTT_USERNAME with MQTT_PASSWORD or the
    /// first line of MQTT_PASSWORD_FILE.
    pub fn mqtt_credentials(&self) -> Result<Option<Credentials>, SettingsError> {
        let password = match (&self.mqtt_password, &self.mqtt_password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| SettingsError::PasswordFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                let line = text.lines().next().unwrap_or("");
                if line.is_empty() {
                    return Err(SettingsError::EmptyPasswordFile { path: path.clone() });
                }
                Some(Password::new(line))
            }
            (None, None) => None,
        };
        match (&self.mqtt_username, password) {
            (Some(username), Some(password)) => Ok(Some(Credentials {
                username: username.clone(),
                password,
            })),
            (None, None) => Ok(None),
            (None, Some(_)) => Err(SettingsError::PasswordWithoutUser),
            (Some(_), None) => Err(SettingsError::UserWithoutPassword),
        }
    }

    /// The TLS configuration of the MQTT connection when MQTT_TLS is on.
    pub fn mqtt_tls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, SettingsError> {
        match (self.mqtt_tls, &self.mqtt_ca_file) {
            (true, ca) => tls_client_config(ca.as_deref()).map(Some),
            (false, Some(_)) => Err(SettingsError::CaWithoutTls),
            (false, None) => Ok(None),
        }
    }

    pub fn feed_qos(&self) -> QoS {
        match self.mqtt_qos_level {
            0 => QoS::AtMostOnce,
            _ => QoS::AtLeastOnce,
        }
    }
}

/// A user name and password for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Password,
}

/// A password: never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password itself, for the one place that sends or checks it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Why the MQTT login or TLS settings are unusable; each names its setting.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read MQTT_CA_FILE {}: {reason}", .path.display())]
    CaFile { path: PathBuf, reason: String },
    #[error("MQTT_CA_FILE {} holds no PEM certificate", .path.display())]
    NoCertificate { path: PathBuf },
    #[error(
        "MQTT_TLS is on but this system has no root certificates: give the broker's CA with MQTT_CA_FILE"
    )]
    NoSystemRoots,
    #[error("MQTT_CA_FILE is set but MQTT_TLS is off: set MQTT_TLS=true to use it")]
    CaWithoutTls,
    #[error("cannot read MQTT_PASSWORD_FILE {}: {reason}", .path.display())]
    PasswordFile { path: PathBuf, reason: String },
    #[error("MQTT_PASSWORD_FILE {} is empty", .path.display())]
    EmptyPasswordFile { path: PathBuf },
    #[error("a password is set (MQTT_PASSWORD or MQTT_PASSWORD_FILE) but MQTT_USERNAME is not")]
    PasswordWithoutUser,
    #[error("MQTT_USERNAME is set but no password: set MQTT_PASSWORD or MQTT_PASSWORD_FILE")]
    UserWithoutPassword,
    #[error("MQTT_TLS: {0}")]
    Tls(String),
}

/// The TLS client configuration: trusting the certificates of `ca_file`
/// (PEM), else the system's roots.
pub fn tls_client_config(
    ca_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, SettingsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let ca_error = |reason: String| SettingsError::CaFile {
                path: path.to_owned(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ca_error(format!("not PEM: {e}")))?;
            if certs.is_empty() {
                return Err(SettingsError::NoCertificate {
                    path: path.to_owned(),
                });
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| ca_error(format!("not a usable certificate: {e}")))?;
            }
        }
        None => {
            // Unreadable system certificates are skipped; none at all is an error.
            let (added, _) =
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if added == 0 {
                return Err(SettingsError::NoSystemRoots);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SettingsError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn retry_attempts_beyond_what_a_ticket_carries_are_refused() {
        let parse = |value: &str| {
            Flags::try_parse_from(["scip-orchestrator", "--max-retry-attempts", value])
                .map(|f| f.config.delivery_policy().max_attempts)
        };
        assert_eq!(parse("65535").unwrap(), u16::MAX);
        assert_eq!(parse("1").unwrap(), 1);
        for bad in ["0", "65536", "70000", "4294967295"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("--max-retry-attempts"), "{bad}: {err}");
        }
    }
}
