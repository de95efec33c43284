//! An exercise's delivery records and what may be done to them: list
//! (all, or the failed), retry, send a new inject live, cancel or
//! reschedule one not yet due.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::core::DeliveryStatus;
use crate::http::ApiError;
use crate::http::errors::ErrorResponse;
use crate::http::extract::{ApiJson, ClientSource, JsonBody};
use crate::http::types::{DeliveryResponse, DeliveryStatusName, parse_status};
use crate::runtime::exercise::DeliveryKey;
use crate::runtime::service::Service;

/// A new inject for some teams, now or at an exercise second.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendInjectRequest {
    #[schema(example = json!(["blue", "red"]))]
    pub teams: Vec<String>,
    /// Exercise second it is due; now when absent.
    pub at: Option<u32>,
    /// As in a timeline: `id`, `type`, `content` and optional fields such as
    /// `priority` and `media`; `time` is ignored.
    #[schema(value_type = Object, example = json!({"id": "live-1", "type": "news", "content": {"headline": "Breaking"}}))]
    pub inject: Value,
}

impl JsonBody for SendInjectRequest {
    const EXPECTED: &str = "a JSON object with \"teams\", \"inject\" and optionally \"at\"";
}

/// Where to move a delivery that is not yet due.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleRequest {
    /// Exercise second, not in the past and not after the end.
    pub at: u32,
}

impl JsonBody for RescheduleRequest {
    const EXPECTED: &str = "a JSON object with \"at\"";
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only this team's records.
    pub team: Option<String>,
    /// Only records with this status.
    #[param(value_type = Option<DeliveryStatusName>)]
    pub status: Option<String>,
}

/// The path of one delivery: `/exercises/{id}/teams/{team}/injects/{inject}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct InjectPath {
    /// Exercise id
    pub id: String,
    /// Team id
    pub team: String,
    /// Inject id
    pub inject: String,
}

impl InjectPath {
    /// The exercise id and the delivery's key.
    fn into_key(self) -> (String, DeliveryKey) {
        let key = DeliveryKey {
            team_id: self.team,
            inject_id: self.inject,
        };
        (self.id, key)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetriedResponse {
    pub retried: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduledResponse {
    /// Deliveries added: one per team.
    pub scheduled: usize,
}

#[utoipa::path(
    get,
    path = "/api/v1/exercises/{id}/deliveries",
    tag = "deliveries",
    params(("id" = String, Path, description = "Exercise id"), DeliveriesQuery),
    responses(
        (status = 200, description = "Delivery records of the current run, in slot order", body = [DeliveryResponse]),
        (status = 400, description = "Unknown team or status", body = ErrorResponse),
        (status = 404, description = "No such exercise", body = ErrorResponse),
    )
)]
pub(super) async fn deliveries(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Json<Vec<DeliveryResponse>>, ApiError> {
    let status = query.status.as_deref().map(parse_status).transpose()?;
    filtered(&service, &id, query.team.as_deref(), status).await
}

#[utoipa::path(
    get,
    path = "/api/v1/exercises/{id}/failures",
    tag = "deliveries",
    params(
        ("id" = String, Path, description = "Exercise id"),
        ("team" = Option<String>, Query, description = "Only this team's records"),
    ),
    responses(
        (status = 200, description = "Failed delivery records of the current run", body = [DeliveryResponse]),
        (status = 400, description = "Unknown team", body = ErrorResponse),
        (status = 404, description = "No such exercise", body = ErrorResponse),
    )
)]
pub(super) async fn failures(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Json<Vec<DeliveryResponse>>, ApiError> {
    filtered(
        &service,
        &id,
        query.team.as_deref(),
        Some(DeliveryStatus::Failed),
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/deliveries/retry",
    tag = "deliveries",
    params(("id" = String, Path, description = "Exercise id")),
    responses(
        (status = 200, description = "Every failed delivery sent again, attempts counted afresh", body = RetriedResponse),
        (status = 404, description = "No such exercise", body = ErrorResponse),
        (status = 409, description = "The exercise is over", body = ErrorResponse),
    )
)]
pub(super) async fn retry_failed(
    State(service): State<Service>,
    Path(id): Path<String>,
    source: ClientSource,
) -> Result<Json<RetriedResponse>, ApiError> {
    let retried = service.retry(&id, None, source.0).await?;
    Ok(Json(RetriedResponse { retried }))
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/teams/{team}/injects/{inject}/retry",
    tag = "deliveries",
    params(InjectPath),
    responses(
        (status = 200, description = "Sent again, attempts counted afresh", body = RetriedResponse),
        (status = 404, description = "No such exercise, team or inject", body = ErrorResponse),
        (status = 409, description = "The delivery has not failed, or the exercise is over", body = ErrorResponse),
    )
)]
pub(super) async fn retry_one(
    State(service): State<Service>,
    Path(path): Path<InjectPath>,
    source: ClientSource,
) -> Result<Json<RetriedResponse>, ApiError> {
    let (id, key) = path.into_key();
    let retried = service.retry(&id, Some(key), source.0).await?;
    Ok(Json(RetriedResponse { retried }))
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/injects",
    tag = "deliveries",
    params(("id" = String, Path, description = "Exercise id")),
    request_body = SendInjectRequest,
    responses(
        (status = 201, description = "Scheduled for every team named", body = ScheduledResponse),
        (status = 400, description = "Invalid inject", body = ErrorResponse),
        (status = 404, description = "No such exercise or team", body = ErrorResponse),
        (status = 409, description = "A team has this inject id already, the time has passed, or the exercise is over", body = ErrorResponse),
    )
)]
pub(super) async fn send_inject(
    State(service): State<Service>,
    Path(id): Path<String>,
    source: ClientSource,
    ApiJson(body): ApiJson<SendInjectRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let scheduled = service
        .send(&id, body.teams, &body.inject, body.at, source.0)
        .await?;
    Ok((StatusCode::CREATED, Json(ScheduledResponse { scheduled })))
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/teams/{team}/injects/{inject}/cancel",
    tag = "deliveries",
    params(InjectPath),
    responses(
        (status = 200, description = "Cancelled; the record as it is now", body = DeliveryResponse),
        (status = 404, description = "No such exercise, team or inject", body = ErrorResponse),
        (status = 409, description = "Already due", body = ErrorResponse),
    )
)]
pub(super) async fn cancel(
    State(service): State<Service>,
    Path(path): Path<InjectPath>,
    source: ClientSource,
) -> Result<Json<DeliveryResponse>, ApiError> {
    let (id, key) = path.into_key();
    service.cancel(&id, key.clone(), source.0).await?;
    current_record(&service, &id, &key).await
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/teams/{team}/injects/{inject}/reschedule",
    tag = "deliveries",
    params(InjectPath),
    request_body = RescheduleRequest,
    responses(
        (status = 200, description = "Moved; the record as it is now", body = DeliveryResponse),
        (status = 400, description = "Invalid body", body = ErrorResponse),
        (status = 404, description = "No such exercise, team or inject", body = ErrorResponse),
        (status = 409, description = "Already due, the time has passed or is after the end", body = ErrorResponse),
    )
)]
pub(super) async fn reschedule(
    State(service): State<Service>,
    Path(path): Path<InjectPath>,
    source: ClientSource,
    ApiJson(body): ApiJson<RescheduleRequest>,
) -> Result<Json<DeliveryResponse>, ApiError> {
    let (id, key) = path.into_key();
    service
        .reschedule(&id, key.clone(), body.at, source.0)
        .await?;
    current_record(&service, &id, &key).await
}

pub(super) async fn filtered(
    service: &Service,
    id: &str,
    team: Option<&str>,
    status: Option<DeliveryStatus>,
) -> Result<Json<Vec<DeliveryResponse>>, ApiError> {
    if let Some(team) = team {
        let info = service.get(id)?;
        if !info.teams.iter().any(|t| t.id == team) {
            let teams: Vec<&str> = info.teams.iter().map(|t| t.id.as_str()).collect();
            return Err(ApiError::invalid(format!(
                "team {team:?} is not in exercise {id}: its teams are {}",
                teams.join(", ")
            )));
        }
    }
    let views = service.deliveries(id).await?;
    Ok(Json(
        views
            .into_iter()
            .filter(|v| team.is_none_or(|t| v.team_id == t))
            .filter(|v| status.is_none_or(|s| v.record.status == s))
            .map(DeliveryResponse::from)
            .collect(),
    ))
}

pub(super) async fn current_record(
    service: &Service,
    id: &str,
    key: &DeliveryKey,
) -> Result<Json<DeliveryResponse>, ApiError> {
    service
        .deliveries(id)
        .await?
        .into_iter()
        .find(|v| v.team_id == key.team_id && v.inject_id == key.inject_id)
        .map(|v| Json(v.into()))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no inject {:?} for team {:?} in this run",
                key.inject_id, key.team_id
            ))
        })
}
