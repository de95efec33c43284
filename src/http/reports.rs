//! After-action reports of an exercise's runs: JSON, two CSV files and a
//! self-contained HTML page.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::http::errors::ErrorResponse;
use crate::http::{ApiError, content_disposition, header_safe};
use crate::runtime::service::Service;

/// Which run an after-action report is about.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// A run number (1 is the first; each reset starts the next); the
    /// current run when absent.
    pub run: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/exercises/{id}/report",
    tag = "reports",
    params(("id" = String, Path, description = "Exercise id"), ReportQuery),
    responses(
        (status = 200, description = "The after-action report of the run: every delivery record with planned, due, sent, acknowledged and received times, lateness and receipt latency; a summary per team and overall; the commands given during the run", body = crate::report::aar::AfterActionReport),
        (status = 400, description = "Malformed run, or a token in the address (`token_in_query`: send it as `Authorization: Bearer`)", body = ErrorResponse),
        (status = 404, description = "No such exercise or run", body = ErrorResponse),
    )
)]
pub(super) async fn report_json(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(query): Query<ReportQuery>,
) -> Result<Json<crate::report::aar::AfterActionReport>, ApiError> {
    Ok(Json(
        crate::report::aar::of_run(&service, &id, query.run).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/exercises/{id}/report.csv",
    tag = "reports",
    params(("id" = String, Path, description = "Exercise id"), ReportQuery),
    responses(
        (status = 200, description = "The run's delivery records, one row each, for a spreadsheet: UTF-8 with a byte-order mark, CRLF line ends, RFC 4180 quoting, a header row; columns run, team_id, team_name, inject_id, type, planned, due_exercise_seconds, due_at, published_at, acknowledged_at, received_at, actual_exercise_seconds, lateness_ms, receipt_latency_ms, attempts, status, late, last_error, live", content_type = "text/csv", body = String),
        (status = 400, description = "Malformed run, or a token in the address (`token_in_query`: send it as `Authorization: Bearer`)", body = ErrorResponse),
        (status = 404, description = "No such exercise or run", body = ErrorResponse),
    )
)]
pub(super) async fn report_csv(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let report = crate::report::aar::of_run(&service, &id, query.run).await?;
    let name = report_file_name(&report, "deliveries.csv");
    Ok(report_file(
        crate::report::aar::deliveries_csv(&report),
        "text/csv; charset=utf-8",
        &format!("attachment; filename=\"{name}\""),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/exercises/{id}/report/control-log.csv",
    tag = "reports",
    params(("id" = String, Path, description = "Exercise id"), ReportQuery),
    responses(
        (status = 200, description = "The commands given during the run (the reset that ended it included), one row each, in the same CSV form as report.csv; columns run, at, command, reason, source, accepted, message", content_type = "text/csv", body = String),
        (status = 400, description = "Malformed run, or a token in the address (`token_in_query`: send it as `Authorization: Bearer`)", body = ErrorResponse),
        (status = 404, description = "No such exercise or run", body = ErrorResponse),
    )
)]
pub(super) async fn report_control_log_csv(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let report = crate::report::aar::of_run(&service, &id, query.run).await?;
    let name = report_file_name(&report, "control-log.csv");
    Ok(report_file(
        crate::report::aar::control_log_csv(&report),
        "text/csv; charset=utf-8",
        &format!("attachment; filename=\"{name}\""),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/exercises/{id}/report.html",
    tag = "reports",
    params(("id" = String, Path, description = "Exercise id"), ReportQuery),
    responses(
        (status = 200, description = "The report as one self-contained page (inline CSS and SVG, no script, nothing fetched): summary tables, a chart per team of planned against actual delivery time, the delivery table and the control log", content_type = "text/html", body = String),
        (status = 400, description = "Malformed run, or a token in the address (`token_in_query`: send it as `Authorization: Bearer`)", body = ErrorResponse),
        (status = 404, description = "No such exercise or run", body = ErrorResponse),
    )
)]
pub(super) async fn report_html(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let report = crate::report::aar::of_run(&service, &id, query.run).await?;
    let name = report_file_name(&report, "report.html");
    let mut response = report_file(
        crate::report::aar::html(&report),
        "text/html; charset=utf-8",
        &format!("inline; filename=\"{name}\""),
    );
    // Nothing to load and nothing to run, whatever the exercise's strings say.
    response.headers_mut().insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    Ok(response)
}

/// `<exercise>-run<N>-<what>`, with the exercise id made safe for a quoted
/// header parameter.
fn report_file_name(report: &crate::report::aar::AfterActionReport, what: &str) -> String {
    let id = header_safe(&report.exercise.id);
    format!("{id}-run{}-{what}", report.exercise.run)
}

fn report_file(body: String, content_type: &'static str, disposition: &str) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                axum::http::header::CONTENT_DISPOSITION,
                content_disposition(disposition),
            ),
            (
                axum::http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            ),
        ],
        body,
    )
        .into_response()
}
