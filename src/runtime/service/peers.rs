//! What requests need to know of the cluster: whether an exercise runs
//! here, on which node otherwise, where a new one goes, the peers, the
//! signature of a forwarded request, and the cluster view.

use crate::store::{ClusterRows, StoreError};

use super::{Service, ServiceError};

/// Which node runs an exercise, as a request for it needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Not stored (or one node: every exercise is here or nowhere).
    Absent,
    /// This node holds its lease.
    Here,
    /// Its lease is free or expired, or its node is gone: another node is
    /// about to claim it.
    Moving,
    /// Another live node runs it.
    At { node: String, address: String },
}

/// A node requests can be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node: String,
    pub address: String,
}

/// Where the cluster stands, as `GET /api/v1/cluster` shows it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// The node that answered.
    pub node: String,
    /// `cluster`, or `single` (one node: SQLite or the embedded broker).
    pub mode: &'static str,
    /// Whether this node's trust window is open (always on one node).
    pub trusted: bool,
    /// The nodes and leases as stored; None on SQLite.
    pub rows: Option<ClusterRows>,
}

impl Service {
    /// Whether this process is a node of a cluster.
    pub fn is_clustered(&self) -> bool {
        self.node().is_some()
    }

    /// This node's id (clustered).
    pub fn node_id(&self) -> Option<&str> {
        self.node().map(|n| n.settings.id.as_str())
    }

    /// Whether exercise `id` is hosted (or listed as unrestorable) here.
    pub fn hosts(&self, id: &str) -> bool {
        self.inner
            .exercises
            .read()
            .expect("registry")
            .contains_key(id)
            || self
                .inner
                .unrestorable
                .read()
                .expect("registry")
                .contains_key(id)
    }

    /// Which node runs exercise `id`.
    pub async fn owner_of(&self, id: &str) -> Result<Owner, ServiceError> {
        let Some(me) = self.node_id() else {
            return Ok(Owner::Absent);
        };
        Ok(match self.inner.store.lease_owner(id).await? {
            None => Owner::Absent,
            Some(None) => Owner::Moving,
            Some(Some((node, _))) if node == me => Owner::Here,
            Some(Some((node, address))) => Owner::At { node, address },
        })
    }

    /// The other live nodes of the cluster (none on one node).
    pub async fn peers(&self) -> Result<Vec<Peer>, ServiceError> {
        let Some(me) = self.node_id() else {
            return Ok(Vec::new());
        };
        let rows = self.inner.store.cluster().await?;
        Ok(rows
            .nodes
            .into_iter()
            .filter(|n| n.expires_ms > rows.now_ms && n.node_id != me && n.mode == "cluster")
            .map(|n| Peer {
                node: n.node_id,
                address: n.address,
            })
            .collect())
    }

    /// Where a new exercise goes: the live node that takes work and runs
    /// the fewest exercises, if that is not this one (None: here).
    pub async fn placement(&self) -> Result<Option<Peer>, ServiceError> {
        let Some(me) = self.node_id() else {
            return Ok(None);
        };
        let rows = self.inner.store.cluster().await?;
        let load = |node: &str| {
            rows.leases
                .iter()
                .filter(|l| l.owner.as_deref() == Some(node) && l.expires_ms > rows.now_ms)
                .count()
        };
        let mine = load(me);
        let cap = self.inner.config.max_exercises as usize;
        let best = rows
            .nodes
            .iter()
            .filter(|n| {
                n.expires_ms > rows.now_ms && !n.draining && n.mode == "cluster" && n.node_id != me
            })
            .map(|n| (load(&n.node_id), n))
            .filter(|(count, _)| *count < cap)
            .min_by_key(|(count, n)| (*count, n.node_id.clone()));
        Ok(match best {
            Some((count, n)) if count < mine || mine >= cap => Some(Peer {
                node: n.node_id.clone(),
                address: n.address.clone(),
            }),
            _ => None,
        })
    }

    /// Signs what a forwarded request says of its client, for the node it
    /// goes to (nodes share the signing key through the database).
    pub fn sign_forward(&self, client: &str, method: &str, target: &str) -> String {
        self.inner.link_key.sign_forward(client, method, target)
    }

    /// Whether `signature` is this cluster's, for these values.
    pub fn check_forward(&self, client: &str, method: &str, target: &str, signature: &str) -> bool {
        self.is_clustered()
            && self
                .inner
                .link_key
                .check_forward(client, method, target, signature)
    }

    /// Where the cluster stands.
    pub async fn cluster(&self) -> Result<ClusterView, ServiceError> {
        let (node, mode, trusted) = match self.node() {
            Some(node) => (node.settings.id.clone(), "cluster", node.trust.holds()),
            None => (self.inner.node_name.clone(), "single", true),
        };
        let rows = match self.inner.store.cluster().await {
            Ok(rows) => Some(rows),
            Err(StoreError::SingleNode) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(ClusterView {
            node,
            mode,
            trusted,
            rows,
        })
    }
}
