//! The subcommands, called by `main` once the command line is parsed: `run`,
//! `serve`, `demo`, the MSEL spreadsheet commands and the administration commands, one file each, with what
//! they share here (loading a scenario, signals, the MQTT connection), and
//! the logging set-up.

mod admin;
mod demo;
pub mod logging;
mod msel;
mod node;
mod run;
mod serve;

pub use admin::{BrokerAclArgs, broker_acl, export_package, hash_token, import_package};
pub use demo::{DemoArgs, DemoDefaults, SAMPLE_FILES, SAMPLE_FOLDER, SAMPLE_MEDIA, demo};
pub use msel::{MselImportArgs, msel_export, msel_import};
pub use run::{RunArgs, run};
pub use serve::{ServeArgs, serve};

use std::path::Path;

use crate::config::Config;
use crate::mqtt::{Credentials, Mqtt, MqttSettings};
use crate::scenario::{self, Scenario};

/// `validate FILE`: the summary and exit code 0, or every error and exit code 1.
pub fn validate(path: &Path, config: &Config) -> i32 {
    match load(path, config) {
        Ok(scenario) => {
            print!("{}", scenario::summary(&scenario));
            0
        }
        Err(errors) => {
            eprint!("{errors}");
            1
        }
    }
}

fn load(path: &Path, config: &Config) -> Result<Scenario, String> {
    scenario::load(
        path,
        &config.limits(),
        config.timeline_storage_path.as_deref(),
    )
    .map_err(|errors| {
        let mut out = format!(
            "{} is invalid: {} error{}\n",
            path.display(),
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        );
        for e in &errors {
            out.push_str(&format!("  {e}\n"));
        }
        out
    })
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is
/// called, not when first polled: a signal during start-up still stops the
/// process cleanly once it serves.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (mut term, mut int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).expect("SIGTERM handler"),
            signal(SignalKind::interrupt()).expect("SIGINT handler"),
        )
    };
    async move {
        #[cfg(unix)]
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The process's one MQTT connection.
async fn connect_mqtt(
    config: &Config,
    host: &str,
    port: u16,
    client_id: String,
    credentials: Option<Credentials>,
) -> anyhow::Result<Mqtt> {
    let mut settings = MqttSettings::new(host, port, client_id);
    settings.delivery_timeout = config.delivery_policy().timeout;
    settings.credentials = credentials;
    settings.tls = config.mqtt_tls_config()?;
    Ok(Mqtt::connect(settings).await?)
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
