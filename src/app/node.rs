//! Which kind of node a `serve` (or `demo`) process is, decided at start
//! from its database and broker (SPEC section 8), with the checks that
//! refuse what cannot work:
//!
//! - SQLite: one node. A second process on the same file is refused (a lock
//!   file beside it, released by the kernel when the process dies).
//! - PostgreSQL with the embedded broker: one node. Its heartbeat row tells
//!   other processes on the same database, which are refused, as it is when
//!   it finds another live node.
//! - PostgreSQL with an external broker: a node of a cluster, with a node id
//!   (NODE_ID, default host name and boot id) that one process at a time may
//!   hold.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use tracing::{info, warn};

use crate::config::Config;
use crate::runtime::service::NodeSettings;
use crate::store::{NodeLock, Store};

/// What this process is.
pub(super) enum Role {
    /// One node on SQLite; the lock file is held while the process lives.
    Sqlite(Option<File>),
    /// One node on PostgreSQL (the embedded broker); its heartbeat runs,
    /// and it holds its node id's lock like a cluster node.
    SinglePostgres(NodeLock),
    /// A node of a cluster.
    Cluster(NodeSettings, NodeLock),
}

impl Role {
    /// The MQTT client id of a cluster node: its node id, so that no two
    /// live processes share one and a restarted node resumes its session.
    pub(super) fn client_id(&self) -> Option<String> {
        match self {
            Role::Cluster(settings, _) => Some(format!("scip-orchestrator-node-{}", settings.id)),
            _ => None,
        }
    }
}

/// Decides the role of a process on PostgreSQL and makes its checks (on
/// SQLite the role is [`Role::Sqlite`] with [`lock_sqlite`]'s lock).
pub(super) async fn place(
    store: &Store,
    database_url: &str,
    config: &Config,
    embedded_broker: bool,
    http: SocketAddr,
) -> anyhow::Result<Role> {
    let timing = config.lease_timing().map_err(anyhow::Error::msg)?;
    let node_id = config.node_id.clone().unwrap_or_else(default_node_id);
    if node_id.is_empty()
        || node_id.len() > 100
        || !node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        bail!(
            "NODE_ID must be 1 to 100 characters, each a letter, a digit or one of - _ . : (got {node_id:?})"
        );
    }
    if !embedded_broker && config.node_address.is_none() && http.ip().is_unspecified() {
        bail!(
            "set NODE_ADDRESS (http://host:port) to where the other nodes reach this one: it listens on every interface ({http}), which names no address they can use"
        );
    }
    let lock = take_node_lock(store, database_url, &node_id, timing.ttl).await?;
    let ttl = timing.ttl.as_millis() as i64;
    let rows = store.cluster().await?;
    let others: Vec<_> = rows
        .nodes
        .iter()
        .filter(|n| n.expires_ms > rows.now_ms && n.node_id != node_id)
        .collect();
    let address = config
        .node_address
        .clone()
        .unwrap_or_else(|| format!("http://{}", super::serve::reachable(http)));
    if embedded_broker {
        if let Some(other) = others.first() {
            bail!(
                "another node ({} at {}) is live on this database, and the embedded MQTT broker is single-node: \
                 several nodes share one external broker (set MQTT_BROKER_HOST on every node)",
                other.node_id,
                other.address
            );
        }
        store
            .heartbeat(&node_id, &address, "single", false, ttl)
            .await?;
        let beat = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(timing.renew).await;
                if let Err(e) = beat
                    .heartbeat(&node_id, &address, "single", false, ttl)
                    .await
                {
                    warn!(error = %e, "heartbeat failed");
                }
            }
        });
        return Ok(Role::SinglePostgres(lock));
    }
    if let Some(single) = others.iter().find(|n| n.mode == "single") {
        bail!(
            "node {} at {} runs on this database with the embedded MQTT broker, which is single-node: \
             stop it, or start it with MQTT_BROKER_HOST like every node of a cluster",
            single.node_id,
            single.address
        );
    }
    info!(node = %node_id, %address, peers = others.len(), "joining the cluster");
    Ok(Role::Cluster(
        NodeSettings {
            id: node_id,
            address,
            timing,
        },
        lock,
    ))
}

/// The lock of node `node_id`: one live process per id, whatever its mode.
/// A restarted node's earlier self may take a moment to let go of it (its
/// connection closing); a live one keeps it.
async fn take_node_lock(
    store: &Store,
    database_url: &str,
    node_id: &str,
    within: Duration,
) -> anyhow::Result<NodeLock> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(lock) = store.lock_node(database_url, node_id).await? {
            return Ok(lock);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "another process runs as node {node_id:?} on this database: give each node its own NODE_ID"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The host name and the first part of the boot id: stable across
/// restarts of the process, different per machine.
fn default_node_id() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let host = read("/proc/sys/kernel/hostname");
    let host = if host.is_empty() {
        "node".to_owned()
    } else {
        host
    };
    let boot = read("/proc/sys/kernel/random/boot_id");
    match boot.split('-').next().filter(|b| !b.is_empty()) {
        Some(boot) => format!("{host}-{boot}"),
        None => host,
    }
}

/// Locks `<file>.serve-lock` beside a SQLite database file, before the
/// database is opened (its migrations run); None for an in-memory database
/// or another backend.
pub(super) fn lock_sqlite(url: &str) -> anyhow::Result<Option<File>> {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Ok(None);
    };
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.contains(":memory:") || url.contains("mode=memory") {
        return Ok(None);
    }
    let path = PathBuf::from(percent_decode(path));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the database folder {}", dir.display()))?;
    }
    // One lock per file, however the address spells it.
    let path = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => dir
            .canonicalize()
            .map(|dir| dir.join(name))
            .unwrap_or(path.clone()),
        _ => path,
    };
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".serve-lock");
    let lock_path = PathBuf::from(lock_path);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another process serves the database {}: SQLite is single-node (several nodes share one PostgreSQL)",
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", lock_path.display()))
        }
    }
}

/// Undoes what `store::sqlite_url` escapes.
fn percent_decode(path: &str) -> String {
    path.replace("%3F", "?")
        .replace("%23", "#")
        .replace("%25", "%")
}
