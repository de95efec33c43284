//! Spreadsheet MSELs: a `.xlsx` or `.csv` file read into a scenario package
//! (which the caller creates an exercise from), and a stored package
//! written as a `.xlsx` workbook.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use crate::http::errors::{ErrorCode, ErrorResponse};
use crate::http::extract::content_type_essence;
use crate::http::{ApiError, content_disposition, header_safe};
use crate::runtime::service::Service;
use crate::scenario::msel::{Field, Format, ImportOptions, Mapping};

/// The content type of an `.xlsx` workbook.
pub const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// How to read the MSEL; each field parameter names the header of its
/// column (default: recognised from common headers).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MselQuery {
    /// `xlsx` or `csv` (default: from the content type, else from the bytes).
    pub format: Option<String>,
    /// The sheet of injects (default: the first with a recognised header row).
    pub sheet: Option<String>,
    /// `scenario_id` and `name` of the scenario (default: the workbook's
    /// Scenario sheet, else `file`).
    pub name: Option<String>,
    /// The file's name, for a CSV file's sheet and the default name.
    pub file: Option<String>,
    pub id: Option<String>,
    pub time: Option<String>,
    pub team: Option<String>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    pub title: Option<String>,
    pub content: Option<String>,
    pub priority: Option<String>,
    pub media: Option<String>,
    pub action: Option<String>,
    pub details: Option<String>,
}

impl MselQuery {
    fn options(self, headers: &HeaderMap) -> Result<ImportOptions, ApiError> {
        let essence = content_type_essence(headers).unwrap_or_default();
        let format = match self.format.as_deref() {
            Some(name) => Some(Format::parse(name).ok_or_else(|| {
                ApiError::invalid(format!("format {name:?}: expected xlsx or csv"))
            })?),
            None => match essence.as_str() {
                XLSX => Some(Format::Xlsx),
                "text/csv" => Some(Format::Csv),
                "" | "application/octet-stream" | "application/vnd.ms-excel" => None,
                other => {
                    return Err(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        ErrorCode::UnsupportedMediaType,
                        format!(
                            "send the MSEL as .xlsx ({XLSX}) or .csv (text/csv), not {other:?}"
                        ),
                    ));
                }
            },
        };
        let mut mapping = Mapping::default();
        for (field, header) in [
            (Field::Id, &self.id),
            (Field::Time, &self.time),
            (Field::Team, &self.team),
            (Field::Type, &self.kind),
            (Field::Title, &self.title),
            (Field::Content, &self.content),
            (Field::Priority, &self.priority),
            (Field::Media, &self.media),
            (Field::Action, &self.action),
            (Field::Details, &self.details),
        ] {
            if let Some(header) = header {
                if header.trim().is_empty() {
                    return Err(ApiError::invalid(format!("{field}: the header is empty")));
                }
                mapping = mapping.with(field, header.trim());
            }
        }
        Ok(ImportOptions {
            sheet: self.sheet,
            mapping,
            name: self.name,
            file_name: self.file.unwrap_or_else(|| "msel".to_owned()),
            format,
        })
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/msel/import",
    tag = "exercises",
    params(MselQuery),
    request_body(
        content = Vec<u8>,
        content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        description = "An MSEL: one row per inject (time as seconds or T+mm:ss, team or teams, type, title, content, priority, media, action), as .xlsx or .csv (text/csv)"
    ),
    responses(
        (status = 200, description = "The scenario package, validated, not stored: create an exercise from it with {\"package\": ...}", body = Object),
        (status = 400, description = "Invalid MSEL; details lists every problem, each naming sheet, row and column", body = ErrorResponse),
        (status = 413, description = "The file is too large", body = ErrorResponse),
        (status = 415, description = "Neither .xlsx nor .csv", body = ErrorResponse),
    )
)]
pub(super) async fn import_msel(
    State(service): State<Service>,
    Query(query): Query<MselQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let options = query.options(&headers)?;
    let imported = service.import_msel(body.to_vec(), options).await?;
    Ok(Json(imported.package))
}

#[utoipa::path(
    get,
    path = "/api/v1/packages/{name}/msel.xlsx",
    tag = "exercises",
    params(("name" = String, Path, description = "Package (scenario folder) name")),
    responses(
        (status = 200, description = "The scenario as an MSEL workbook: MSEL, Teams and Scenario sheets", content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", body = Vec<u8>),
        (status = 400, description = "The stored scenario is invalid", body = ErrorResponse),
        (status = 404, description = "No such package", body = ErrorResponse),
    )
)]
pub(super) async fn export_msel(
    State(service): State<Service>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let workbook = service.export_msel(name.clone()).await?;
    let disposition = format!("attachment; filename=\"{}.xlsx\"", header_safe(&name));
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static(XLSX)),
            (CONTENT_DISPOSITION, content_disposition(&disposition)),
        ],
        workbook,
    )
        .into_response())
}
