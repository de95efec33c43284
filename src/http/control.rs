//! An exercise's lifecycle: the commands (start, pause, resume, stop,
//! reset, next turn), seeking a paused exercise forward, and the control
//! log of every command given.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::core::Command;
use crate::core::engine::SeekMode;
use crate::http::ApiError;
use crate::http::errors::ErrorResponse;
use crate::http::extract::{ApiJson, ClientSource, JsonBody, OptionalJson};
use crate::http::types::{CommandName, ControlLogEntry, TransitionResponse};
use crate::runtime::service::Service;

/// Why a command was given; the body may also be empty.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    #[schema(example = "Technical issue with Team Green")]
    pub reason: Option<String>,
}

impl JsonBody for CommandRequest {
    const EXPECTED: &str = "a JSON object with an optional \"reason\", or no body";
}

/// Jump a paused exercise forward.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeekRequest {
    /// Exercise second to jump to.
    pub to: u32,
    pub mode: SeekModeName,
}

impl JsonBody for SeekRequest {
    const EXPECTED: &str = "a JSON object with \"to\" and \"mode\"";
}

/// What happens to the injects a seek passes over.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SeekModeName {
    /// Sent at once, in order.
    Deliver,
    /// Recorded as skipped, never sent.
    Skip,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PassedOverResponse {
    /// Deliveries between the old and the new exercise time.
    pub passed_over: usize,
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/{command}",
    tag = "exercises",
    params(
        ("id" = String, Path, description = "Exercise id"),
        ("command" = CommandName, Path, description = "start, pause, resume, stop, reset or next_turn (turn-based exercises)"),
    ),
    request_body(content = Option<CommandRequest>, description = "Optional; the body may be empty"),
    responses(
        (status = 200, description = "Carried out", body = TransitionResponse),
        (status = 400, description = "Unknown command (the message lists the commands) or invalid body", body = ErrorResponse),
        (status = 404, description = "No such exercise", body = ErrorResponse),
        (status = 409, description = "Refused: the command does not fit the state; nothing changed", body = ErrorResponse),
        (status = 429, description = "`rate_limited`: the message names the limit that tripped, the burst or the rate a minute; `Retry-After` says when to try again", body = ErrorResponse),
    )
)]
pub(super) async fn control(
    State(service): State<Service>,
    Path((id, command)): Path<(String, String)>,
    source: ClientSource,
    OptionalJson(body): OptionalJson<CommandRequest>,
) -> Result<Json<TransitionResponse>, ApiError> {
    let command: Command = command
        .parse()
        .map_err(|e: crate::core::lifecycle::UnknownCommand| ApiError::invalid(e.to_string()))?;
    let transition = service.control(&id, command, body.reason, source.0).await?;
    Ok(Json(transition.into()))
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/seek",
    tag = "exercises",
    params(("id" = String, Path, description = "Exercise id")),
    request_body = SeekRequest,
    responses(
        (status = 200, description = "Moved; the exercise stays paused", body = PassedOverResponse),
        (status = 400, description = "Invalid body", body = ErrorResponse),
        (status = 404, description = "No such exercise", body = ErrorResponse),
        (status = 409, description = "Not paused, backwards, or after the end", body = ErrorResponse),
    )
)]
pub(super) async fn seek(
    State(service): State<Service>,
    Path(id): Path<String>,
    source: ClientSource,
    ApiJson(body): ApiJson<SeekRequest>,
) -> Result<Json<PassedOverResponse>, ApiError> {
    let mode = match body.mode {
        SeekModeName::Deliver => SeekMode::Deliver,
        SeekModeName::Skip => SeekMode::Skip,
    };
    let passed_over = service.seek(&id, body.to, mode, source.0).await?;
    Ok(Json(PassedOverResponse { passed_over }))
}

#[utoipa::path(
    get,
    path = "/api/v1/exercises/{id}/control-log",
    tag = "exercises",
    params(("id" = String, Path, description = "Exercise id")),
    responses(
        (status = 200, description = "Every command given, accepted or refused, oldest first", body = [ControlLogEntry]),
        (status = 404, description = "No such exercise", body = ErrorResponse),
    )
)]
pub(super) async fn control_log(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> Result<Json<Vec<ControlLogEntry>>, ApiError> {
    let rows = service.control_log(&id).await?;
    Ok(Json(rows.into_iter().map(ControlLogEntry::from).collect()))
}
