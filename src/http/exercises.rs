//! Exercises: create one from a scenario folder or an inline package,
//! list, get and delete them, and list the scenario folders to create from.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::Speed;
use crate::http::ApiError;
use crate::http::errors::ErrorResponse;
use crate::http::extract::{ApiJson, JsonBody};
use crate::http::types::{ExerciseResponse, ScenarioResponse};
use crate::runtime::service::{CreateExercise, ScenarioSource, Service};

/// Create an exercise from a scenario folder or from an inline package.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExerciseRequest {
    /// A folder under MEDIA_STORAGE_PATH holding `scenario.json`; give this or `package`.
    #[schema(example = "four-teams")]
    pub scenario: Option<String>,
    /// A scenario object whose `"timelines"` hold the timelines its teams
    /// name; give this or `scenario`.
    #[schema(value_type = Option<Object>)]
    pub package: Option<Value>,
    /// Overrides the scenario's `id`; generated when both are absent.
    pub exercise_id: Option<String>,
    /// Exercise seconds per wall second, above 0 and at most 1000 (default 1).
    pub speed: Option<f64>,
}

impl JsonBody for CreateExerciseRequest {
    const EXPECTED: &str = "a JSON object with \"scenario\" (a folder name) or \"package\" (an inline scenario), and optionally \"exercise_id\" and \"speed\"";
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises",
    tag = "exercises",
    request_body = CreateExerciseRequest,
    responses(
        (status = 201, description = "Created and stored, not started", body = ExerciseResponse),
        (status = 400, description = "Invalid scenario or request; details lists every problem", body = ErrorResponse),
        (status = 404, description = "No such scenario folder", body = ErrorResponse),
        (status = 409, description = "An exercise with this id exists", body = ErrorResponse),
    )
)]
pub(super) async fn create_exercise(
    State(service): State<Service>,
    ApiJson(body): ApiJson<CreateExerciseRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let source = match (body.scenario, body.package) {
        (Some(folder), None) => ScenarioSource::Folder(folder),
        (None, Some(package)) => ScenarioSource::Inline(package),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give either \"scenario\" (a folder name) or \"package\" (an inline scenario), not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "give \"scenario\" (a folder name under MEDIA_STORAGE_PATH) or \"package\" (an inline scenario with its timelines)",
            ));
        }
    };
    let info = service
        .create(CreateExercise {
            source,
            exercise_id: body.exercise_id,
            speed: body
                .speed
                .map(Speed::new)
                .transpose()
                .map_err(|e| ApiError::invalid(e.to_string()))?,
        })
        .await?;
    let location = format!("/api/v1/exercises/{}", info.id);
    let location =
        HeaderValue::from_str(&location).unwrap_or(HeaderValue::from_static("/api/v1/exercises"));
    Ok((
        StatusCode::CREATED,
        [(LOCATION, location)],
        Json(ExerciseResponse::from(info)),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/exercises",
    tag = "exercises",
    responses((status = 200, description = "Every exercise, oldest first", body = [ExerciseResponse]))
)]
pub(super) async fn list_exercises(
    State(service): State<Service>,
    caller: Option<axum::Extension<crate::access::tokens::TokenEntry>>,
) -> Json<Vec<ExerciseResponse>> {
    let caller = caller.map(|c| c.0.role);
    Json(
        service
            .list()
            .into_iter()
            .map(|e| ExerciseResponse::for_caller(e, caller))
            .collect(),
    )
}

#[utoipa::path(
    delete,
    path = "/api/v1/exercises/{id}",
    tag = "exercises",
    params(("id" = String, Path, description = "Exercise id")),
    responses(
        (status = 204, description = "Deleted with its delivery records and control log; its retained MQTT topics cleared"),
        (status = 404, description = "No such exercise", body = ErrorResponse),
        (status = 409, description = "Running or paused: stop it first", body = ErrorResponse),
    )
)]
pub(super) async fn delete_exercise(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    service.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/exercises/{id}",
    tag = "exercises",
    params(("id" = String, Path, description = "Exercise id")),
    responses(
        (status = 200, description = "The exercise", body = ExerciseResponse),
        (status = 404, description = "No such exercise", body = ErrorResponse),
    )
)]
pub(super) async fn get_exercise(
    State(service): State<Service>,
    Path(id): Path<String>,
    caller: Option<axum::Extension<crate::access::tokens::TokenEntry>>,
) -> Result<Json<ExerciseResponse>, ApiError> {
    let caller = caller.map(|c| c.0.role);
    Ok(Json(ExerciseResponse::for_caller(
        service.get(&id)?,
        caller,
    )))
}

#[utoipa::path(
    get,
    path = "/api/v1/scenarios",
    tag = "exercises",
    responses(
        (status = 200, description = "Scenario folders under MEDIA_STORAGE_PATH (none when it is unset), by name; invalid ones say why", body = [ScenarioResponse]),
    )
)]
pub(super) async fn scenarios(State(service): State<Service>) -> Json<Vec<ScenarioResponse>> {
    Json(
        service
            .scenarios()
            .await
            .into_iter()
            .map(|s| ScenarioResponse {
                name: s.name,
                title: s.title,
                teams: s.teams,
                injects: s.injects,
                duration: s.duration_secs,
                error: s.error,
            })
            .collect(),
    )
}
