//! A team's dashboard link: re-issue or revoke it, and the receipts a
//! dashboard sends with it for the injects it showed.

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::errors::ErrorResponse;
use crate::http::extract::{JsonBody, small_json_body};
use crate::http::types::{TeamPath, TeamResponse};
use crate::http::{ApiError, MAX_RECEIPT_BYTES};
use crate::runtime::service::Service;

/// The token of a team's dashboard link, as its URL carries it.
#[derive(Debug, Default, serde::Deserialize)]
pub struct LinkToken {
    pub token: Option<String>,
}

/// Filters of a delivery listing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptsRequest {
    /// The run the dashboard showed them in; receipts for an earlier run are
    /// ignored.
    pub run: u16,
    #[schema(example = json!(["inject-001", "inject-002"]))]
    pub inject_ids: Vec<String>,
}

impl JsonBody for ReceiptsRequest {
    const EXPECTED: &str = "a JSON object with \"run\" and \"inject_ids\"";
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordedResponse {
    /// Receipts that were new; repeats are not counted.
    pub recorded: usize,
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/teams/{team}/link",
    tag = "dashboards",
    params(TeamPath),
    responses(
        (status = 200, description = "A new dashboard link, valid for TEAM_LINK_TTL_HOURS; every earlier one stops working", body = TeamResponse),
        (status = 404, description = "No such exercise or team", body = ErrorResponse),
    )
)]
pub(super) async fn reissue_link(
    State(service): State<Service>,
    Path(TeamPath { id, team }): Path<TeamPath>,
) -> Result<Json<TeamResponse>, ApiError> {
    let link = service.reissue_link(&id, &team).await?;
    Ok(Json(link.into()))
}

#[utoipa::path(
    delete,
    path = "/api/v1/exercises/{id}/teams/{team}/link",
    tag = "dashboards",
    params(TeamPath),
    responses(
        (status = 204, description = "Revoked: no token opens the team's dashboard until a link is re-issued"),
        (status = 404, description = "No such exercise or team", body = ErrorResponse),
    )
)]
pub(super) async fn revoke_link(
    State(service): State<Service>,
    Path(TeamPath { id, team }): Path<TeamPath>,
) -> Result<StatusCode, ApiError> {
    service.revoke_link(&id, &team).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/teams/{team}/receipts",
    tag = "dashboards",
    params(
        TeamPath,
        ("token" = String, Query, description = "The token of the team's dashboard link"),
    ),
    request_body = ReceiptsRequest,
    responses(
        (status = 200, description = "The dashboard showed these injects: the first receipt of each is recorded with the time it arrived", body = RecordedResponse),
        (status = 400, description = "Malformed body or inject id", body = ErrorResponse),
        (status = 401, description = "No link token (checked before the body is read)", body = ErrorResponse),
        (status = 403, description = "The token is forged, for another team or exercise, revoked or expired (checked before the body is read)", body = ErrorResponse),
        (status = 404, description = "No such exercise, team, or inject of this team in this run", body = ErrorResponse),
        (status = 413, description = "The body is over 1 MiB", body = ErrorResponse),
    )
)]
pub(super) async fn receipts(
    State(service): State<Service>,
    Path(TeamPath { id, team }): Path<TeamPath>,
    Query(link): Query<LinkToken>,
    request: Request,
) -> Result<Json<RecordedResponse>, ApiError> {
    // The link first: without it the body is never read, however large.
    service.check_team_link(&id, &team, link.token.as_deref())?;
    let body: ReceiptsRequest = small_json_body(
        request,
        MAX_RECEIPT_BYTES,
        "a receipt (send fewer inject ids at once)",
    )
    .await?;
    let recorded = service
        .receipts(&id, &team, link.token.as_deref(), body.run, body.inject_ids)
        .await?;
    Ok(Json(RecordedResponse { recorded }))
}
