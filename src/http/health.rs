//! The liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::ApiError;
use crate::http::errors::ErrorCode;
use crate::http::errors::ErrorResponse;
use crate::runtime::service::Service;

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    #[schema(example = "ok")]
    pub status: String,
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = StatusResponse))
)]
pub(super) async fn healthz() -> Json<StatusResponse> {
    Json(StatusResponse {
        status: "ok".into(),
    })
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers and takes writes (the last one succeeded, none is stuck), and the broker is connected", body = StatusResponse),
        (status = 503, description = "Not ready, and why", body = ErrorResponse),
    )
)]
pub(super) async fn readyz(
    State(service): State<Service>,
) -> Result<Json<StatusResponse>, ApiError> {
    service.ready().await.map_err(|why| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, why)
    })?;
    Ok(Json(StatusResponse {
        status: "ready".into(),
    }))
}
