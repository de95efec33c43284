//! Scenario packages: import a `.tar.gz` archive into the scenario
//! folders, and export a folder as one.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::http::errors::{ErrorCode, ErrorResponse};
use crate::http::extract::content_type_essence;
use crate::http::types::ScenarioResponse;
use crate::http::{ApiError, content_disposition};
use crate::runtime::service::Service;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// The package's folder name (default: its `scenario_id`, else the
    /// archive's top folder).
    pub name: Option<String>,
    /// Overwrite a stored package of the same name.
    #[serde(default)]
    pub replace: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/packages",
    tag = "exercises",
    params(ImportQuery),
    request_body(
        content = Vec<u8>,
        content_type = "application/gzip",
        description = "A .tar.gz archive of a package folder (scenario file, timelines, media), at the archive's top or as its only top folder"
    ),
    responses(
        (status = 201, description = "Validated and stored under MEDIA_STORAGE_PATH; create exercises from it with {\"scenario\": name}", body = ScenarioResponse),
        (status = 400, description = "Invalid package or scenario; details lists every problem", body = ErrorResponse),
        (status = 409, description = "A package of that name exists (use replace=true)", body = ErrorResponse),
        (status = 413, description = "The archive is too large", body = ErrorResponse),
        (status = 415, description = "Not a gzip archive", body = ErrorResponse),
    )
)]
pub(super) async fn import_package(
    State(service): State<Service>,
    Query(query): Query<ImportQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<ScenarioResponse>), ApiError> {
    let kind = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type_essence(&headers).unwrap_or_default();
    if !matches!(
        essence.as_str(),
        "application/gzip"
            | "application/x-gzip"
            | "application/x-tar+gzip"
            | "application/octet-stream"
    ) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!(
                "send the package as a .tar.gz archive (Content-Type: application/gzip), not {kind:?}"
            ),
        ));
    }
    let imported = service
        .import_package(body.to_vec(), query.name, query.replace)
        .await?;
    let s = &imported.scenario;
    Ok((
        StatusCode::CREATED,
        Json(ScenarioResponse {
            name: imported.name.clone(),
            title: s.name.clone(),
            teams: s.teams.len(),
            injects: s.teams.iter().map(|t| t.timeline.injects.len()).sum(),
            duration: s.duration.get(),
            error: None,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/packages/{name}/archive",
    tag = "exercises",
    params(("name" = String, Path, description = "Package (scenario folder) name")),
    responses(
        (status = 200, description = "The package as a .tar.gz archive whose top folder is its name", content_type = "application/gzip", body = Vec<u8>),
        (status = 404, description = "No such package", body = ErrorResponse),
    )
)]
pub(super) async fn export_package(
    State(service): State<Service>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let archive = service.export_package(name.clone()).await?;
    let disposition = format!("attachment; filename=\"{name}.tar.gz\"");
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static("application/gzip")),
            (
                axum::http::header::CONTENT_DISPOSITION,
                content_disposition(&disposition),
            ),
        ],
        archive,
    )
        .into_response())
}
