//! API tokens (admin only): list, issue and revoke them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::ApiError;
use crate::http::errors::ErrorResponse;
use crate::http::extract::{ApiJson, JsonBody};
use crate::http::types::wall;
use crate::runtime::service::Service;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueTokenRequest {
    /// observer, evaluator, controller or admin.
    #[schema(example = "controller")]
    pub role: String,
    /// What it is for, shown in the list.
    pub name: Option<String>,
}

impl JsonBody for IssueTokenRequest {
    const EXPECTED: &str = "a JSON object with \"role\" and optionally \"name\"";
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub id: String,
    pub name: Option<String>,
    pub role: String,
    /// Configured in API_TOKENS (revoked there), rather than issued.
    pub configured: bool,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    /// Only in the answer to its issue: it is not kept and cannot be shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn token_response(e: crate::access::tokens::TokenEntry, token: Option<String>) -> TokenResponse {
    TokenResponse {
        id: e.id,
        name: e.name,
        role: e.role.as_str().to_owned(),
        configured: e.configured,
        created_at: (!e.configured).then(|| wall(e.created_wall_ms)),
        token,
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "access",
    responses(
        (status = 200, description = "Every token the service accepts, without the tokens themselves", body = [TokenResponse]),
        (status = 401, description = "No or unknown token", body = ErrorResponse),
        (status = 403, description = "Not an admin token", body = ErrorResponse),
    )
)]
pub(super) async fn list_tokens(State(service): State<Service>) -> Json<Vec<TokenResponse>> {
    Json(
        service
            .tokens()
            .list()
            .into_iter()
            .map(|e| token_response(e, None))
            .collect(),
    )
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "access",
    request_body = IssueTokenRequest,
    responses(
        (status = 201, description = "Issued; `token` is shown this once", body = TokenResponse),
        (status = 400, description = "Unknown role", body = ErrorResponse),
        (status = 401, description = "No or unknown token", body = ErrorResponse),
        (status = 403, description = "Not an admin token", body = ErrorResponse),
    )
)]
pub(super) async fn issue_token(
    State(service): State<Service>,
    ApiJson(body): ApiJson<IssueTokenRequest>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let role = crate::access::tokens::Role::parse(&body.role).ok_or_else(|| {
        ApiError::invalid(format!(
            "role {:?}: expected observer, evaluator, controller or admin",
            body.role
        ))
    })?;
    let (entry, token) = service.issue_token(role, body.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(token_response(entry, Some(token))),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{token}",
    tag = "access",
    params(("token" = String, Path, description = "Token id (not the token)")),
    responses(
        (status = 204, description = "Revoked: it opens nothing from now on"),
        (status = 404, description = "No such token", body = ErrorResponse),
        (status = 409, description = "Configured in API_TOKENS: remove it there", body = ErrorResponse),
    )
)]
pub(super) async fn revoke_token(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    service.revoke_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
