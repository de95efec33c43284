//! `GET /api/v1/cluster`: the nodes, which exercises each runs, and how old
//! each lease is, read from the database by whichever node answers.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::ApiError;
use crate::http::errors::ErrorResponse;
use crate::runtime::service::Service;

#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterResponse {
    /// The node that answered.
    pub node: String,
    /// `cluster` (several nodes may share the database) or `single`
    /// (SQLite, or the embedded broker).
    #[schema(example = "cluster")]
    pub mode: String,
    /// Whether the answering node's trust window is open: its last lease
    /// renewal is recent enough for it to publish.
    pub trusted: bool,
    /// Every node with a heartbeat row, live or not; empty on SQLite.
    pub nodes: Vec<ClusterNode>,
    /// Every lease; empty on SQLite and for exercises of a single node.
    pub leases: Vec<ClusterLease>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterNode {
    pub id: String,
    /// Where the other nodes reach its API (NODE_ADDRESS).
    pub address: String,
    /// `cluster` or `single`.
    pub mode: String,
    /// Its heartbeat has not expired.
    pub live: bool,
    /// It is handing its exercises over (SIGTERM).
    pub draining: bool,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_ms: i64,
    /// Exercises whose lease it holds and has not let expire.
    pub exercises: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterLease {
    pub exercise_id: String,
    /// None: free, waiting for a node to claim it.
    pub owner: Option<String>,
    /// The fencing epoch: raised by every claim.
    pub epoch: i64,
    /// Milliseconds since it was last renewed (or claimed); None if never.
    pub age_ms: Option<i64>,
    /// Milliseconds until it expires; negative once expired.
    pub expires_in_ms: i64,
    /// How often another node took the exercise over.
    pub takeovers: i64,
}

#[utoipa::path(
    get,
    path = "/api/v1/cluster",
    tag = "operations",
    responses(
        (status = 200, description = "The nodes and the leases of their exercises", body = ClusterResponse),
        (status = 401, description = "No or unknown API token", body = ErrorResponse),
        (status = 503, description = "The database does not answer", body = ErrorResponse),
    )
)]
pub(super) async fn cluster(
    State(service): State<Service>,
) -> Result<Json<ClusterResponse>, ApiError> {
    let view = service.cluster().await?;
    let (nodes, leases) = match view.rows {
        None => (Vec::new(), Vec::new()),
        Some(rows) => {
            let now = rows.now_ms;
            let nodes = rows
                .nodes
                .iter()
                .map(|n| ClusterNode {
                    id: n.node_id.clone(),
                    address: n.address.clone(),
                    mode: n.mode.clone(),
                    live: n.expires_ms > now,
                    draining: n.draining,
                    heartbeat_age_ms: now - n.heartbeat_ms,
                    exercises: rows
                        .leases
                        .iter()
                        .filter(|l| l.owner.as_ref() == Some(&n.node_id) && l.expires_ms > now)
                        .map(|l| l.exercise_id.clone())
                        .collect(),
                })
                .collect();
            let leases = rows
                .leases
                .into_iter()
                .map(|l| ClusterLease {
                    exercise_id: l.exercise_id,
                    owner: l.owner,
                    epoch: l.epoch,
                    age_ms: l.renewed_ms.map(|r| now - r),
                    expires_in_ms: l.expires_ms - now,
                    takeovers: l.takeovers,
                })
                .collect();
            (nodes, leases)
        }
    };
    Ok(Json(ClusterResponse {
        node: view.node,
        mode: view.mode.to_owned(),
        trusted: view.trusted,
        nodes,
        leases,
    }))
}
