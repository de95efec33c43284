//! The API's error: its status, stable code, message and details, and the
//! one JSON envelope every error response leaves in, axum's own rejections
//! and fallbacks and a panicking handler's included.

use axum::Json;
use axum::body::Body;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::error;
use utoipa::ToSchema;

use crate::http::extract::is_json;
use crate::runtime::service::ServiceError;

/// An error response: status, stable code, message and every detail.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    code: ErrorCode,
    pub(super) message: String,
    pub(super) details: Vec<String>,
    /// Seconds, for a `Retry-After` header.
    retry_after: Option<u64>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// An API token in the address of a route that takes it only as a
    /// header.
    pub fn token_in_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::TokenInQuery, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            details: vec![message.clone()],
            ..Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidInput, message)
        }
    }

    /// An error with the code that fits `status`, for responses made below
    /// the handlers (rejections, fallbacks, the body limit).
    pub(super) fn from_status(status: StatusCode, message: String) -> Self {
        let code = match status {
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::CONFLICT => ErrorCode::Conflict,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
            s if s.is_client_error() => ErrorCode::InvalidInput,
            _ => ErrorCode::Internal,
        };
        if code == ErrorCode::InvalidInput {
            Self {
                status,
                ..Self::invalid(message)
            }
        } else {
            Self::new(status, code, message)
        }
    }

    pub(super) fn body(&self) -> ErrorResponse {
        ErrorResponse {
            error: ErrorBody {
                code: self.code,
                message: self.message.clone(),
                details: self.details.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(details) => {
                let message = match details.as_slice() {
                    [one] => one.clone(),
                    many => format!("{} problems: see details", many.len()),
                };
                Self {
                    details,
                    ..Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidInput, message)
                }
            }
            ServiceError::NotFound(m) => Self::not_found(m),
            ServiceError::Conflict(m) => Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, m),
            ServiceError::Unavailable(m) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, m)
            }
            ServiceError::Store(e) if e.is_transient() => {
                error!(error = %e, "database error while serving a request");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "the database failed or refused the request; try again (see the server log)",
                )
            }
            ServiceError::Store(e) => {
                error!(error = %e, "database error while serving a request");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "the database failed; see the server log",
                )
            }
            ServiceError::Internal(m) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, m)
            }
            ServiceError::Unauthorized(m) => Self::unauthorized(m),
            ServiceError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, m),
            ServiceError::TooMany {
                message,
                retry_after,
            } => Self {
                retry_after: retry_after.map(|d| d.as_secs_f64().ceil() as u64),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    if retry_after.is_some() {
                        ErrorCode::RateLimited
                    } else {
                        ErrorCode::LimitReached
                    },
                    message,
                )
            },
        }
    }
}

/// What went wrong, stably, for programs: every code the API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400 (or another client error): a body, parameter or scenario that
    /// does not fit, an unknown command; every problem is in `details`.
    InvalidInput,
    /// 400: an API token in the address (`?access_token=`) of a route that
    /// takes it only as an `Authorization: Bearer` header.
    TokenInQuery,
    /// 401: no token, or an unknown, revoked, forged or expired one.
    Unauthorized,
    /// 403: a valid token whose role or link does not allow this.
    Forbidden,
    /// 404: no such exercise, team, inject, scenario or endpoint.
    NotFound,
    /// 405: the path exists, the method does not (see `Allow`).
    MethodNotAllowed,
    /// 409: a refused transition, a duplicate, or an exercise that could
    /// not be restored.
    Conflict,
    /// 413: a body over its limit.
    PayloadTooLarge,
    /// 415: a body that is not of the media type the endpoint takes.
    UnsupportedMediaType,
    /// 429 with `Retry-After`: too many control commands; the message names
    /// the limit that tripped, the burst or the rate a minute.
    RateLimited,
    /// 429 without `Retry-After`: a limit of the service (MAX_EXERCISES) is
    /// reached; waiting does not help, deleting does.
    LimitReached,
    /// 503: the database or broker failed, or the exercise is shutting
    /// down; try again.
    Unavailable,
    /// 500: a bug or a database failure; see the server log.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order the README lists them.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidInput,
        ErrorCode::TokenInQuery,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RateLimited,
        ErrorCode::LimitReached,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];
}

/// Every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// Every problem, for `invalid_input`; otherwise empty.
    pub details: Vec<String>,
}

/// Turns every error response that is not JSON yet (axum's rejections and
/// fallbacks, the body limit) into the error envelope, keeping its status
/// and headers such as `Allow`.
pub(super) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    } else {
        text
    };
    let body = serde_json::to_vec(&ApiError::from_status(status, message).body())
        .expect("error bodies serialize");
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body))
}

/// A handler that panicked: logged, answered 500, and the server goes on.
pub(super) fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    error!(panic = what, "a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        "internal error; see the server log",
    )
    .into_response()
}

pub(super) async fn no_route() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// The answer to a request the caller's token does not allow.
pub fn denied(denied: crate::http::auth::Denied) -> ApiError {
    match denied {
        crate::http::auth::Denied::Unauthenticated(why) => ApiError::unauthorized(why),
        crate::http::auth::Denied::Forbidden { have, need } => ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!("this needs the {need} role; the token is {have}"),
        ),
    }
}
