//! The HTTP API of `serve`: JSON under `/api/v1`, health and readiness
//! probes, Prometheus metrics and the OpenAPI document that describes it all.
//!
//! Request and response bodies are this module's own serde types (the wire);
//! domain values from [`Service`] are converted at the edge. Every error,
//! including axum's own rejections (malformed JSON, unknown routes, wrong
//! methods, oversized bodies), leaves as
//! `{"error": {"code", "message", "details"}}`.

pub mod auth;
pub mod pages;

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State,
};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use tracing::{error, warn};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::core::engine::SeekMode;
use crate::core::{Command, Counts, DeliveryStatus, State as ExerciseState, Transition};
use crate::domain::{ExerciseSeconds, Speed};
use crate::mqtt::wire::timestamp;
use crate::runtime::exercise::{DeliveryKey, DeliveryView, from_wall_ms};
use crate::runtime::service::{
    CreateExercise, ExerciseInfo, ScenarioSource, Service, ServiceError, Standing,
};
use crate::store::ControlRow;

/// Largest request body accepted: an inline scenario package with every
/// timeline fits well within it.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Largest receipt body: the dashboard sends at most 100 inject ids at once.
pub const MAX_RECEIPT_BYTES: usize = 1024 * 1024;

/// Buckets of `scip_delivery_latency_seconds`: millisecond precision is the
/// interesting range, seconds mean a broker outage.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The API with its state; what [`serve`] serves.
pub fn router(service: Service) -> Router {
    install_metrics();
    let max_body = service.max_request_bytes();
    let v1 = Router::new()
        .route("/exercises", get(list_exercises).post(create_exercise))
        .route("/exercises/{id}", get(get_exercise).delete(delete_exercise))
        .route("/exercises/{id}/{command}", post(control))
        .route("/exercises/{id}/deliveries", get(deliveries))
        .route("/exercises/{id}/failures", get(failures))
        .route("/exercises/{id}/deliveries/retry", post(retry_failed))
        .route(
            "/exercises/{id}/teams/{team}/injects/{inject}/retry",
            post(retry_one),
        )
        .route(
            "/exercises/{id}/teams/{team}/injects/{inject}/cancel",
            post(cancel),
        )
        .route(
            "/exercises/{id}/teams/{team}/injects/{inject}/reschedule",
            post(reschedule),
        )
        .route("/exercises/{id}/injects", post(send_inject))
        .route("/exercises/{id}/seek", post(seek))
        .route("/exercises/{id}/control-log", get(control_log))
        .route("/exercises/{id}/report", get(report_json))
        .route("/exercises/{id}/report.csv", get(report_csv))
        .route(
            "/exercises/{id}/report/control-log.csv",
            get(report_control_log_csv),
        )
        .route("/exercises/{id}/report.html", get(report_html))
        .route(
            "/exercises/{id}/events",
            get(crate::http::pages::exercise_events),
        )
        .route(
            "/exercises/{id}/teams/{team}/events",
            get(crate::http::pages::team_events),
        )
        .route("/exercises/{id}/teams/{team}/receipts", post(receipts))
        .route(
            "/exercises/{id}/teams/{team}/link",
            post(reissue_link).delete(revoke_link),
        )
        .route("/scenarios", get(scenarios))
        .route("/tokens", get(list_tokens).post(issue_token))
        .route("/tokens/{token}", axum::routing::delete(revoke_token))
        .route("/packages", post(import_package))
        .route("/packages/{name}/archive", get(export_package));
    Router::new()
        .nest("/api/v1", v1)
        .route("/api/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::http::pages::pages())
        // Every route checks the caller's role (or is open, or checks a
        // team link itself); see `auth::required`.
        .route_layer(axum::middleware::from_fn_with_state(
            service.clone(),
            crate::http::auth::require,
        ))
        .fallback(no_route)
        .with_state(service)
        // The limit is RequestBodyLimitLayer's, not axum's smaller default.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(axum::middleware::map_response(json_errors))
        .layer(CatchPanicLayer::custom(panicked))
        // The request's span names its path and query, with credentials
        // (`access_token`, a team link's `token`, a media token) blanked:
        // logs are read by more people than tokens are for.
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                tracing::debug_span!(
                    "request",
                    method = %request.method(),
                    uri = %redacted(request.uri()),
                    version = ?request.version(),
                )
            }),
        )
}

/// Query parameters that carry credentials.
const SECRET_PARAMETERS: [&str; 3] = ["access_token", "token", "media"];

/// `uri`'s path and query with the value of every credential parameter
/// replaced by `[redacted]`, for logs.
pub fn redacted(uri: &axum::http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            if SECRET_PARAMETERS.contains(&decoded.as_ref()) {
                format!("{name}=[redacted]")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{}?{}", uri.path(), parts.join("&"))
}

/// How long the HTTP server waits on a client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For a request's head, from when the connection is ready for one: an
    /// idle keep-alive connection, or one that sends its head a byte at a
    /// time, is closed after it.
    pub request_head: Duration,
    /// For each next part of a request body (a body that stalls longer is
    /// refused, and its connection closed).
    pub body_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            request_head: Duration::from_secs(30),
            body_idle: Duration::from_secs(30),
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then lets
/// requests under way finish. Clients are known by address, so the audit
/// log names commands' source as `api:<client ip>`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, service, shutdown, Timeouts::default()).await
}

/// [`serve`] with other [`Timeouts`].
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
    timeouts: Timeouts,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let streams = service.clone();
    let app = router(service).layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        timeouts.body_idle,
    ));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.request_head);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (socket, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        // As `into_make_service_with_connect_info` would: the client's
        // address for `ConnectInfo`.
        let app = tower::ServiceExt::map_request(
            app,
            move |request: hyper::Request<hyper::body::Incoming>| {
                let mut request = request.map(Body::new);
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(address));
                request
            },
        );
        let connection = builder.serve_connection(
            TokioIo::new(socket),
            hyper_util::service::TowerToHyperService::new(app),
        );
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, client = %address, "HTTP connection ended");
            }
        });
    }
    // Event streams never end by themselves; a graceful shutdown waits for
    // every response to finish.
    streams.close_streams();
    drop(listener);
    connections.shutdown().await;
    Ok(())
}

/// A failed accept: the client's own trouble is skipped; anything else
/// (out of file descriptors) is logged and retried after a second, not in
/// a busy loop.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    error!(error = %e, "cannot accept an HTTP connection; trying again in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Installs the process's Prometheus recorder once (the first call wins) and
/// returns its handle; None when another recorder was installed first.
/// [`router`] calls it; call it earlier to count deliveries made before the
/// API is up.
pub fn install_metrics() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("scip_delivery_latency_seconds".into()),
                    &LATENCY_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("scip_receipt_latency_seconds".into()),
                        &LATENCY_BUCKETS,
                    )
                })
                .expect("latency buckets are not empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    describe_metrics();
                    let upkeep = handle.clone();
                    // Drains histogram samples between scrapes, so they
                    // cannot pile up when nobody scrapes.
                    let spawned = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(Duration::from_secs(5));
                                upkeep.run_upkeep();
                            }
                        });
                    if let Err(e) = spawned {
                        warn!(error = %e, "cannot start the metrics upkeep thread");
                    }
                    Some(handle)
                }
                Err(e) => {
                    warn!(error = %e, "a metrics recorder is already installed; /metrics shows only the service gauges");
                    None
                }
            }
        })
        .as_ref()
}

/// The OpenAPI 3 document of this API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "scip-orchestrator",
        description = "Exercise orchestration engine of the SCIP v3 crisis-exercise platform: create, control and watch exercises, and manage their deliveries."
    ),
    paths(
        create_exercise,
        list_exercises,
        get_exercise,
        delete_exercise,
        control,
        deliveries,
        failures,
        retry_failed,
        retry_one,
        send_inject,
        cancel,
        reschedule,
        seek,
        control_log,
        report_json,
        report_csv,
        report_control_log_csv,
        report_html,
        scenarios,
        list_tokens,
        issue_token,
        revoke_token,
        reissue_link,
        revoke_link,
        import_package,
        export_package,
        receipts,
        crate::http::pages::team_events,
        crate::http::pages::exercise_events,
        healthz,
        readyz,
        metrics,
        openapi,
    ),
    tags(
        (name = "exercises", description = "Exercises and their lifecycle"),
        (name = "deliveries", description = "Delivery records, retries and live edits"),
        (name = "dashboards", description = "What team dashboards and the control room follow: event streams and receipts"),
        (name = "access", description = "API tokens (admin)"),
        (name = "reports", description = "After-action reports of an exercise's runs: JSON, CSV and a self-contained HTML page"),
        (name = "operations", description = "Probes, metrics and this document"),
    )
)]
struct ApiDoc;

// ---------------------------------------------------------------------------
// Wire types: requests

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

/// Why a command was given; the body may also be empty.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    #[schema(example = "Technical issue with Team Green")]
    pub reason: Option<String>,
}

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

/// Where to move a delivery that is not yet due.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleRequest {
    /// Exercise second, not in the past and not after the end.
    pub at: u32,
}

/// Jump a paused exercise forward.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeekRequest {
    /// Exercise second to jump to.
    pub to: u32,
    pub mode: SeekModeName,
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueTokenRequest {
    /// observer, controller or admin.
    #[schema(example = "controller")]
    pub role: String,
    /// What it is for, shown in the list.
    pub name: Option<String>,
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only this team's records.
    pub team: Option<String>,
    /// Only records with this status.
    #[param(value_type = Option<DeliveryStatusName>)]
    pub status: Option<String>,
}

// ---------------------------------------------------------------------------
// Wire types: responses

/// An exercise and where it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExerciseResponse {
    pub id: String,
    pub name: Option<String>,
    pub state: StateName,
    /// Exercise seconds since T+0.
    pub exercise_time: u32,
    /// `T+mm:ss`.
    #[schema(example = "T+05:32")]
    pub formatted: String,
    /// Duration in exercise seconds.
    pub total: u32,
    pub speed: f64,
    /// Starts at 1; every reset begins a new run.
    pub run: u16,
    /// The broker connection is up.
    pub connected: bool,
    /// Teams with at least one dashboard open.
    pub teams_connected: usize,
    /// Turn-based exercises: the turn under way (or just over); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn: Option<u16>,
    /// Turn-based exercises: how many turns there are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_turns: Option<u16>,
    pub counts: CountsResponse,
    pub teams: Vec<TeamResponse>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// State `unrestorable`: why the stored exercise could not be brought
    /// back at start (it is listed, refuses commands, and can be deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_error: Option<String>,
}

/// Delivery records of the current run by status.
#[derive(Debug, Serialize, ToSchema)]
pub struct CountsResponse {
    pub scheduled: usize,
    pub pending: usize,
    pub delivered: usize,
    /// Delivered later than TIMER_PRECISION_MS after due.
    pub late: usize,
    pub retrying: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub skipped: usize,
    /// Mean of acknowledged minus due over the delivered, in milliseconds.
    pub average_latency_ms: f64,
    /// Shown on a team dashboard.
    pub received: usize,
    /// Mean of shown minus due over the received, in milliseconds.
    pub average_receipt_latency_ms: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamResponse {
    pub id: String,
    pub name: Option<String>,
    /// The team dashboard's address with its link's token (without one
    /// while the link is revoked). Null for observers: a working link is
    /// for controllers to hand out.
    pub dashboard_url: Option<String>,
    /// Dashboards of this team open now.
    pub dashboards: usize,
    /// When the dashboard link expires.
    #[schema(format = DateTime)]
    pub link_expires_at: String,
    /// Revoked and not re-issued: `dashboard_url` carries no token.
    pub link_revoked: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScenarioResponse {
    /// The folder name under MEDIA_STORAGE_PATH, as `scenario` in a create request.
    #[schema(example = "four-teams")]
    pub name: String,
    pub title: Option<String>,
    pub teams: usize,
    pub injects: usize,
    /// Seconds.
    pub duration: u32,
    /// Why it cannot be used, when it is invalid.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordedResponse {
    /// Receipts that were new; repeats are not counted.
    pub recorded: usize,
}

/// A lifecycle change a command made.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransitionResponse {
    pub from: StateName,
    pub to: StateName,
    pub command: Option<CommandName>,
    pub reason: Option<String>,
    /// Exercise second at which it happened.
    pub exercise_time: u32,
}

/// One (team, inject) pair of the current run.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryResponse {
    pub team_id: String,
    pub inject_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Exercise second it is due.
    pub due_exercise_time: u32,
    /// UTC time it came due.
    #[schema(format = DateTime)]
    pub due_at: Option<String>,
    /// UTC time of the last publish.
    #[schema(format = DateTime)]
    pub published_at: Option<String>,
    /// UTC time the broker acknowledged it.
    #[schema(format = DateTime)]
    pub acknowledged_at: Option<String>,
    pub attempts: u32,
    pub status: DeliveryStatusName,
    /// Acknowledged minus due.
    pub latency_ms: Option<f64>,
    pub late: bool,
    /// When a team dashboard showed it.
    #[schema(format = DateTime)]
    pub received_at: Option<String>,
    /// Shown minus due.
    pub receipt_latency_ms: Option<f64>,
    pub last_error: Option<String>,
    /// Sent live through the API rather than from the scenario.
    pub live: bool,
}

/// One command as the audit log recorded it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlLogEntry {
    #[schema(format = DateTime)]
    pub at: String,
    pub command: String,
    pub reason: Option<String>,
    /// `api:<client ip>`, `mqtt`, `signal` or `start-up`.
    pub source: String,
    pub accepted: bool,
    /// Why it was refused.
    pub message: Option<String>,
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

#[derive(Debug, Serialize, ToSchema)]
pub struct PassedOverResponse {
    /// Deliveries between the old and the new exercise time.
    pub passed_over: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    #[schema(example = "ok")]
    pub status: String,
}

/// Every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// `invalid_input`, `not_found`, `conflict`, `unavailable`, `internal`,
    /// `method_not_allowed`, `payload_too_large`, `unsupported_media_type`.
    pub code: String,
    pub message: String,
    /// Every problem, for `invalid_input`; otherwise empty.
    pub details: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    Initialized,
    Running,
    Paused,
    Stopped,
    Completed,
    /// Stored, but it could not be restored at start: see `restore_error`.
    Unrestorable,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CommandName {
    Start,
    Pause,
    Resume,
    Stop,
    Reset,
    #[serde(rename = "next_turn")]
    NextTurn,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatusName {
    Pending,
    Delivered,
    Retrying,
    Failed,
    Cancelled,
    Skipped,
}

// ---------------------------------------------------------------------------
// Handlers

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
async fn create_exercise(
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
async fn list_exercises(
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
async fn delete_exercise(
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
async fn get_exercise(
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
        (status = 404, description = "No such exercise or command", body = ErrorResponse),
        (status = 409, description = "Refused: the command does not fit the state; nothing changed", body = ErrorResponse),
    )
)]
async fn control(
    State(service): State<Service>,
    Path((id, command)): Path<(String, String)>,
    source: ClientSource,
    OptionalJson(body): OptionalJson<CommandRequest>,
) -> Result<Json<TransitionResponse>, ApiError> {
    let command: Command =
        command
            .parse()
            .map_err(|e: crate::core::lifecycle::UnknownCommand| {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            })?;
    let transition = service.control(&id, command, body.reason, source.0).await?;
    Ok(Json(transition.into()))
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
async fn deliveries(
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
async fn failures(
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
async fn retry_failed(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> Result<Json<RetriedResponse>, ApiError> {
    let retried = service.retry(&id, None).await?;
    Ok(Json(RetriedResponse { retried }))
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/teams/{team}/injects/{inject}/retry",
    tag = "deliveries",
    params(
        ("id" = String, Path, description = "Exercise id"),
        ("team" = String, Path, description = "Team id"),
        ("inject" = String, Path, description = "Inject id"),
    ),
    responses(
        (status = 200, description = "Sent again, attempts counted afresh", body = RetriedResponse),
        (status = 404, description = "No such exercise, team or inject", body = ErrorResponse),
        (status = 409, description = "The delivery has not failed, or the exercise is over", body = ErrorResponse),
    )
)]
async fn retry_one(
    State(service): State<Service>,
    Path((id, team_id, inject_id)): Path<(String, String, String)>,
) -> Result<Json<RetriedResponse>, ApiError> {
    let key = DeliveryKey { team_id, inject_id };
    let retried = service.retry(&id, Some(key)).await?;
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
async fn send_inject(
    State(service): State<Service>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SendInjectRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let scheduled = service.send(&id, body.teams, &body.inject, body.at).await?;
    Ok((StatusCode::CREATED, Json(ScheduledResponse { scheduled })))
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/teams/{team}/injects/{inject}/cancel",
    tag = "deliveries",
    params(
        ("id" = String, Path, description = "Exercise id"),
        ("team" = String, Path, description = "Team id"),
        ("inject" = String, Path, description = "Inject id"),
    ),
    responses(
        (status = 200, description = "Cancelled; the record as it is now", body = DeliveryResponse),
        (status = 404, description = "No such exercise, team or inject", body = ErrorResponse),
        (status = 409, description = "Already due", body = ErrorResponse),
    )
)]
async fn cancel(
    State(service): State<Service>,
    Path((id, team_id, inject_id)): Path<(String, String, String)>,
) -> Result<Json<DeliveryResponse>, ApiError> {
    let key = DeliveryKey { team_id, inject_id };
    service.cancel(&id, key.clone()).await?;
    current_record(&service, &id, &key).await
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/teams/{team}/injects/{inject}/reschedule",
    tag = "deliveries",
    params(
        ("id" = String, Path, description = "Exercise id"),
        ("team" = String, Path, description = "Team id"),
        ("inject" = String, Path, description = "Inject id"),
    ),
    request_body = RescheduleRequest,
    responses(
        (status = 200, description = "Moved; the record as it is now", body = DeliveryResponse),
        (status = 400, description = "Invalid body", body = ErrorResponse),
        (status = 404, description = "No such exercise, team or inject", body = ErrorResponse),
        (status = 409, description = "Already due, the time has passed or is after the end", body = ErrorResponse),
    )
)]
async fn reschedule(
    State(service): State<Service>,
    Path((id, team_id, inject_id)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<RescheduleRequest>,
) -> Result<Json<DeliveryResponse>, ApiError> {
    let key = DeliveryKey { team_id, inject_id };
    service.reschedule(&id, key.clone(), body.at).await?;
    current_record(&service, &id, &key).await
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
async fn seek(
    State(service): State<Service>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SeekRequest>,
) -> Result<Json<PassedOverResponse>, ApiError> {
    let mode = match body.mode {
        SeekModeName::Deliver => SeekMode::Deliver,
        SeekModeName::Skip => SeekMode::Skip,
    };
    let passed_over = service.seek(&id, body.to, mode).await?;
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
async fn control_log(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> Result<Json<Vec<ControlLogEntry>>, ApiError> {
    let rows = service.control_log(&id).await?;
    Ok(Json(rows.into_iter().map(ControlLogEntry::from).collect()))
}

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
        (status = 400, description = "Malformed run", body = ErrorResponse),
        (status = 404, description = "No such exercise or run", body = ErrorResponse),
    )
)]
async fn report_json(
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
        (status = 400, description = "Malformed run", body = ErrorResponse),
        (status = 404, description = "No such exercise or run", body = ErrorResponse),
    )
)]
async fn report_csv(
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
        (status = 400, description = "Malformed run", body = ErrorResponse),
        (status = 404, description = "No such exercise or run", body = ErrorResponse),
    )
)]
async fn report_control_log_csv(
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
        (status = 400, description = "Malformed run", body = ErrorResponse),
        (status = 404, description = "No such exercise or run", body = ErrorResponse),
    )
)]
async fn report_html(
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

/// `<exercise>-run<N>-<what>`, with anything but letters, digits, `.`, `_`
/// and `-` of the exercise id replaced: safe in a quoted header parameter.
fn report_file_name(report: &crate::report::aar::AfterActionReport, what: &str) -> String {
    let id: String = report
        .exercise
        .id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{id}-run{}-{what}", report.exercise.run)
}

fn report_file(body: String, content_type: &'static str, disposition: &str) -> Response {
    let disposition =
        HeaderValue::from_str(disposition).unwrap_or(HeaderValue::from_static("attachment"));
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
            (
                axum::http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            ),
        ],
        body,
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/api/v1/scenarios",
    tag = "exercises",
    responses(
        (status = 200, description = "Scenario folders under MEDIA_STORAGE_PATH (none when it is unset), by name; invalid ones say why", body = [ScenarioResponse]),
    )
)]
async fn scenarios(State(service): State<Service>) -> Json<Vec<ScenarioResponse>> {
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

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/teams/{team}/link",
    tag = "dashboards",
    params(
        ("id" = String, Path, description = "Exercise id"),
        ("team" = String, Path, description = "Team id"),
    ),
    responses(
        (status = 200, description = "A new dashboard link, valid for TEAM_LINK_TTL_HOURS; every earlier one stops working", body = TeamResponse),
        (status = 404, description = "No such exercise or team", body = ErrorResponse),
    )
)]
async fn reissue_link(
    State(service): State<Service>,
    Path((id, team)): Path<(String, String)>,
) -> Result<Json<TeamResponse>, ApiError> {
    let t = service.reissue_link(&id, &team).await?;
    Ok(Json(TeamResponse {
        id: t.id,
        name: t.name,
        dashboard_url: Some(t.dashboard_url),
        dashboards: t.dashboards,
        link_expires_at: timestamp(
            OffsetDateTime::from_unix_timestamp(t.link_expires)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        ),
        link_revoked: t.link_revoked,
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/exercises/{id}/teams/{team}/link",
    tag = "dashboards",
    params(
        ("id" = String, Path, description = "Exercise id"),
        ("team" = String, Path, description = "Team id"),
    ),
    responses(
        (status = 204, description = "Revoked: no token opens the team's dashboard until a link is re-issued"),
        (status = 404, description = "No such exercise or team", body = ErrorResponse),
    )
)]
async fn revoke_link(
    State(service): State<Service>,
    Path((id, team)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    service.revoke_link(&id, &team).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/teams/{team}/receipts",
    tag = "dashboards",
    params(
        ("id" = String, Path, description = "Exercise id"),
        ("team" = String, Path, description = "Team id"),
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
async fn receipts(
    State(service): State<Service>,
    Path((id, team)): Path<(String, String)>,
    Query(link): Query<crate::http::pages::LinkToken>,
    request: Request,
) -> Result<Json<RecordedResponse>, ApiError> {
    // The link first: without it the body is never read, however large.
    service.check_team_link(&id, &team, link.token.as_deref())?;
    let (parts, body) = request.into_parts();
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "a receipt is at most {MAX_RECEIPT_BYTES} bytes: send fewer inject ids at once"
            ),
        )
    };
    let announced = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > MAX_RECEIPT_BYTES) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, MAX_RECEIPT_BYTES)
        .await
        .map_err(|e| {
            if e.to_string().contains("length limit") {
                too_large()
            } else {
                ApiError::invalid(format!("the request body could not be read: {e}"))
            }
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("the request needs a JSON body"));
    }
    check_json_type(&parts.headers)?;
    let body: ReceiptsRequest = parse_json(&bytes)?;
    let recorded = service
        .receipts(&id, &team, link.token.as_deref(), body.run, body.inject_ids)
        .await?;
    Ok(Json(RecordedResponse { recorded }))
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
async fn import_package(
    State(service): State<Service>,
    Query(query): Query<ImportQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<ScenarioResponse>), ApiError> {
    let kind = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = kind
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !matches!(
        essence.as_str(),
        "application/gzip"
            | "application/x-gzip"
            | "application/x-tar+gzip"
            | "application/octet-stream"
    ) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
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
async fn export_package(
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
                HeaderValue::from_str(&disposition)
                    .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
            ),
        ],
        archive,
    )
        .into_response())
}

/// The answer to a request the caller's token does not allow.
pub fn denied(denied: crate::http::auth::Denied) -> ApiError {
    match denied {
        crate::http::auth::Denied::Unauthenticated(why) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why)
        }
        crate::http::auth::Denied::Forbidden { have, need } => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs the {need} role; the token is {have}"),
        ),
    }
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
async fn list_tokens(State(service): State<Service>) -> Json<Vec<TokenResponse>> {
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
async fn issue_token(
    State(service): State<Service>,
    ApiJson(body): ApiJson<IssueTokenRequest>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let role = crate::access::tokens::Role::parse(&body.role).ok_or_else(|| {
        ApiError::invalid(format!(
            "role {:?}: expected observer, controller or admin",
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
async fn revoke_token(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    service.revoke_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = StatusResponse))
)]
async fn healthz() -> Json<StatusResponse> {
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
async fn readyz(State(service): State<Service>) -> Result<Json<StatusResponse>, ApiError> {
    service
        .ready()
        .await
        .map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why))?;
    Ok(Json(StatusResponse {
        status: "ready".into(),
    }))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((
        status = 200,
        description = "Prometheus text exposition: scip_deliveries{status}, scip_deliveries_total{status}, scip_delivery_latency_seconds, scip_timer_tick_lateness_seconds, scip_receipts_total, scip_receipt_latency_seconds, scip_exercises{state}, scip_teams_connected, scip_mqtt_connected, scip_store_write_failures_total, scip_store_entries_dropped_total, scip_announcements_dropped_total, scip_mqtt_received_dropped_total, scip_control_reports_suppressed_total",
        body = String,
        content_type = "text/plain; version=0.0.4"
    ))
)]
async fn metrics(State(service): State<Service>) -> impl IntoResponse {
    let mut body = install_metrics()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    if !body.is_empty() && !body.ends_with('\n') {
        body.push('\n');
    }
    let exercises = service.list();
    let _ = writeln!(
        body,
        "# HELP scip_exercises Exercises in this process by lifecycle state"
    );
    let _ = writeln!(body, "# TYPE scip_exercises gauge");
    for state in ExerciseState::ALL {
        let n = exercises
            .iter()
            .filter(|e| e.snapshot().is_some_and(|s| s.state == state))
            .count();
        let _ = writeln!(body, "scip_exercises{{state=\"{}\"}} {n}", state.as_str());
    }
    let unrestorable = exercises.iter().filter(|e| e.snapshot().is_none()).count();
    let _ = writeln!(
        body,
        "scip_exercises{{state=\"unrestorable\"}} {unrestorable}"
    );
    let _ = writeln!(
        body,
        "# HELP scip_deliveries Delivery records of the current runs by status"
    );
    let _ = writeln!(body, "# TYPE scip_deliveries gauge");
    let mut by_status = [0usize; 6];
    for c in exercises
        .iter()
        .filter_map(|e| e.snapshot())
        .map(|s| &s.counts)
    {
        for (slot, n) in by_status.iter_mut().zip([
            c.pending,
            c.delivered,
            c.retrying,
            c.failed,
            c.cancelled,
            c.skipped,
        ]) {
            *slot += n;
        }
    }
    for (status, n) in [
        "pending",
        "delivered",
        "retrying",
        "failed",
        "cancelled",
        "skipped",
    ]
    .into_iter()
    .zip(by_status)
    {
        let _ = writeln!(body, "scip_deliveries{{status=\"{status}\"}} {n}");
    }
    let teams: usize = exercises.iter().map(|e| e.teams_connected).sum();
    let _ = writeln!(
        body,
        "# HELP scip_teams_connected Teams with at least one dashboard open, over every exercise"
    );
    let _ = writeln!(body, "# TYPE scip_teams_connected gauge");
    let _ = writeln!(body, "scip_teams_connected {teams}");
    let connected = *service.mqtt().connected().borrow();
    let _ = writeln!(
        body,
        "# HELP scip_mqtt_connected 1 while the connection to the MQTT broker is up"
    );
    let _ = writeln!(body, "# TYPE scip_mqtt_connected gauge");
    let _ = writeln!(body, "scip_mqtt_connected {}", u8::from(connected));
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
}

#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document", body = Object))
)]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}

/// A handler that panicked: logged, answered 500, and the server goes on.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    error!(panic = what, "a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the server log",
    )
    .into_response()
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

// ---------------------------------------------------------------------------
// Errors

/// An error response: status, stable code, message and every detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<String>,
    /// Seconds, for a `Retry-After` header.
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn invalid(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            details: vec![message.clone()],
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
        }
    }

    /// An error with the code that fits `status`, for responses made below
    /// the handlers (rejections, fallbacks, the body limit).
    fn from_status(status: StatusCode, message: String) -> Self {
        let code = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            s if s.is_client_error() => "invalid_input",
            _ => "internal",
        };
        if code == "invalid_input" {
            Self {
                status,
                ..Self::invalid(message)
            }
        } else {
            Self::new(status, code, message)
        }
    }

    fn body(&self) -> ErrorResponse {
        ErrorResponse {
            error: ErrorBody {
                code: self.code.to_owned(),
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
                    ..Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
                }
            }
            ServiceError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, "not_found", m),
            ServiceError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            ServiceError::Unavailable(m) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            ServiceError::Store(e) if e.is_transient() => {
                error!(error = %e, "database error while serving a request");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database failed or refused the request; try again (see the server log)",
                )
            }
            ServiceError::Store(e) => {
                error!(error = %e, "database error while serving a request");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the database failed; see the server log",
                )
            }
            ServiceError::Internal(m) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
            }
            ServiceError::Unauthorized(m) => Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m),
            ServiceError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            ServiceError::TooMany {
                message,
                retry_after,
            } => Self {
                retry_after: retry_after.map(|d| d.as_secs_f64().ceil() as u64),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    if retry_after.is_some() {
                        "rate_limited"
                    } else {
                        "limit_reached"
                    },
                    message,
                )
            },
        }
    }
}

/// Turns every error response that is not JSON yet (axum's rejections and
/// fallbacks, the body limit) into the error envelope, keeping its status
/// and headers such as `Allow`.
async fn json_errors(response: Response) -> Response {
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

// ---------------------------------------------------------------------------
// Extractors

/// A JSON body: `application/json`, parsed with the path of any field that
/// does not fit in the message.
struct ApiJson<T>(T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (headers, bytes) = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid("the request needs a JSON body"));
        }
        check_json_type(&headers)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be left out: an empty body is `T::default()`.
struct OptionalJson<T>(T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (headers, bytes) = body_bytes(req, state).await?;
        // Browsers' forms cannot send JSON: refusing other types keeps a
        // cross-site form from giving commands.
        if headers.contains_key(CONTENT_TYPE) {
            check_json_type(&headers)?;
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        check_json_type(&headers)?;
        parse_json(&bytes).map(OptionalJson)
    }
}

/// `api:<client ip>` for the audit log; `api` when the server was not
/// started with connection info.
struct ClientSource(String);

impl<S: Send + Sync> FromRequestParts<S> for ClientSource {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientSource(
            match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
                Some(ConnectInfo(addr)) => format!("api:{}", addr.ip()),
                None => "api".to_owned(),
            },
        ))
    }
}

async fn body_bytes<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<(HeaderMap, Bytes), ApiError> {
    let headers = req.headers().clone();
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(|rejection| ApiError::from_status(rejection.status(), rejection.body_text()))?;
    Ok((headers, bytes))
}

fn check_json_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let essence = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => Ok(()),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "expected Content-Type: application/json, got {}",
                other.unwrap_or("none")
            ),
        )),
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || inner.is_syntax() || inner.is_eof() {
            ApiError::invalid(format!("request body: {inner}"))
        } else {
            ApiError::invalid(format!("request body: {path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::invalid(format!("request body: {e}")))?;
    Ok(value)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

// ---------------------------------------------------------------------------
// Conversions and helpers

async fn filtered(
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

async fn current_record(
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
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no inject {:?} for team {:?} in this run",
                    key.inject_id, key.team_id
                ),
            )
        })
}

fn parse_status(raw: &str) -> Result<DeliveryStatus, ApiError> {
    DeliveryStatus::parse(raw).ok_or_else(|| {
        ApiError::invalid(format!(
            "status {raw:?}: expected pending, delivered, retrying, failed, cancelled or skipped"
        ))
    })
}

fn wall(ms: i64) -> String {
    timestamp(from_wall_ms(ms))
}

fn opt_timestamp(at: Option<OffsetDateTime>) -> Option<String> {
    at.map(timestamp)
}

impl From<ExerciseInfo> for ExerciseResponse {
    fn from(e: ExerciseInfo) -> Self {
        let (s, restore_error) = match e.standing {
            Standing::Hosted(s) => (s, None),
            Standing::Unrestorable(u) => {
                return Self {
                    id: e.id,
                    name: e.name,
                    state: StateName::Unrestorable,
                    exercise_time: 0,
                    formatted: ExerciseSeconds::ZERO.to_string(),
                    total: u32::try_from(u.duration_secs).unwrap_or(0),
                    // As stored: NaN and infinities are written as null.
                    speed: u.speed,
                    run: u16::try_from(u.run).unwrap_or(0),
                    connected: false,
                    teams_connected: 0,
                    turn: None,
                    total_turns: None,
                    counts: Counts::default().into(),
                    teams: Vec::new(),
                    created_at: wall(e.created_wall_ms),
                    restore_error: Some(u.reason),
                };
            }
        };
        Self {
            id: e.id,
            name: e.name,
            state: s.state.into(),
            exercise_time: s.time.get(),
            formatted: s.time.to_string(),
            total: s.total.get(),
            speed: s.speed.get(),
            run: s.run,
            connected: s.connected,
            teams_connected: e.teams_connected,
            turn: s.turn.map(|(turn, _)| turn),
            total_turns: s.turn.map(|(_, total)| total),
            counts: s.counts.into(),
            restore_error,
            teams: e
                .teams
                .into_iter()
                .map(|t| TeamResponse {
                    id: t.id,
                    name: t.name,
                    dashboard_url: Some(t.dashboard_url),
                    dashboards: t.dashboards,
                    link_expires_at: timestamp(
                        OffsetDateTime::from_unix_timestamp(t.link_expires)
                            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                    ),
                    link_revoked: t.link_revoked,
                })
                .collect(),
            created_at: wall(e.created_wall_ms),
        }
    }
}

impl ExerciseResponse {
    /// The exercise as a caller with `role` may see it: the teams' signed
    /// dashboard links only for controllers and admins (who may also
    /// re-issue them), never for observers.
    pub fn for_caller(info: ExerciseInfo, role: Option<crate::access::tokens::Role>) -> Self {
        let mut response = Self::from(info);
        if role.is_none_or(|r| r < crate::access::tokens::Role::Controller) {
            for team in &mut response.teams {
                team.dashboard_url = None;
            }
        }
        response
    }
}

impl From<Counts> for CountsResponse {
    fn from(c: Counts) -> Self {
        Self {
            scheduled: c.scheduled,
            pending: c.pending,
            delivered: c.delivered,
            late: c.late,
            retrying: c.retrying,
            failed: c.failed,
            cancelled: c.cancelled,
            skipped: c.skipped,
            average_latency_ms: c.average_latency_ms,
            received: c.received,
            average_receipt_latency_ms: c.average_receipt_latency_ms,
        }
    }
}

impl From<Transition> for TransitionResponse {
    fn from(t: Transition) -> Self {
        Self {
            from: t.from.into(),
            to: t.to.into(),
            command: t.command.map(Into::into),
            reason: t.reason,
            exercise_time: t.at.get(),
        }
    }
}

impl From<DeliveryView> for DeliveryResponse {
    fn from(v: DeliveryView) -> Self {
        let r = v.record;
        Self {
            team_id: v.team_id,
            inject_id: v.inject_id,
            kind: v.kind,
            due_exercise_time: r.due.get(),
            due_at: opt_timestamp(r.due_wall),
            published_at: opt_timestamp(r.published_wall),
            acknowledged_at: opt_timestamp(r.acked_wall),
            attempts: r.attempts,
            status: r.status.into(),
            latency_ms: r.latency.map(|l| l.as_secs_f64() * 1000.0),
            late: r.late,
            received_at: opt_timestamp(r.received_wall),
            receipt_latency_ms: r.receipt_latency.map(|l| l.as_secs_f64() * 1000.0),
            last_error: r.last_error,
            live: v.live,
        }
    }
}

impl From<ControlRow> for ControlLogEntry {
    fn from(r: ControlRow) -> Self {
        Self {
            at: wall(r.at_wall_ms),
            command: r.command,
            reason: r.reason,
            source: r.source,
            accepted: r.accepted,
            message: r.message,
        }
    }
}

impl From<ExerciseState> for StateName {
    fn from(s: ExerciseState) -> Self {
        match s {
            ExerciseState::Initialized => StateName::Initialized,
            ExerciseState::Running => StateName::Running,
            ExerciseState::Paused => StateName::Paused,
            ExerciseState::Stopped => StateName::Stopped,
            ExerciseState::Completed => StateName::Completed,
        }
    }
}

impl From<Command> for CommandName {
    fn from(c: Command) -> Self {
        match c {
            Command::Start => CommandName::Start,
            Command::Pause => CommandName::Pause,
            Command::Resume => CommandName::Resume,
            Command::Stop => CommandName::Stop,
            Command::Reset => CommandName::Reset,
            Command::NextTurn => CommandName::NextTurn,
        }
    }
}

impl From<DeliveryStatus> for DeliveryStatusName {
    fn from(s: DeliveryStatus) -> Self {
        match s {
            DeliveryStatus::Pending => DeliveryStatusName::Pending,
            DeliveryStatus::Delivered => DeliveryStatusName::Delivered,
            DeliveryStatus::Retrying => DeliveryStatusName::Retrying,
            DeliveryStatus::Failed => DeliveryStatusName::Failed,
            DeliveryStatus::Cancelled => DeliveryStatusName::Cancelled,
            DeliveryStatus::Skipped => DeliveryStatusName::Skipped,
        }
    }
}

fn describe_metrics() {
    metrics::describe_counter!(
        "scip_deliveries_total",
        "Deliveries that reached a final status, by status"
    );
    metrics::describe_histogram!(
        "scip_delivery_latency_seconds",
        metrics::Unit::Seconds,
        "Broker acknowledgement minus due time of delivered injects"
    );
    metrics::describe_counter!(
        "scip_receipts_total",
        "Injects a team dashboard confirmed it showed (first receipt of each)"
    );
    metrics::describe_histogram!(
        "scip_receipt_latency_seconds",
        metrics::Unit::Seconds,
        "Shown on a team dashboard minus due time"
    );
    metrics::describe_counter!(
        "scip_store_write_failures_total",
        "Journal batches the database did not store; each is held and written again"
    );
    metrics::describe_counter!(
        "scip_store_entries_dropped_total",
        "Journal entries the database refused for their content (a constraint), dropped"
    );
    metrics::describe_counter!(
        "scip_announcements_dropped_total",
        "Held announcements dropped, oldest first, over the 10,000 kept while writes fail"
    );
    metrics::describe_counter!(
        "scip_mqtt_received_dropped_total",
        "Messages on a subscribed (control) topic dropped because its queue was full"
    );
    metrics::describe_counter!(
        "scip_control_reports_suppressed_total",
        "Refused or invalid control-topic messages counted instead of reported one by one (over the report rate)"
    );
    // Counters of what should not happen are shown from the start, at 0.
    for name in [
        "scip_store_write_failures_total",
        "scip_store_entries_dropped_total",
        "scip_announcements_dropped_total",
        "scip_mqtt_received_dropped_total",
        "scip_control_reports_suppressed_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_name_the_field_that_does_not_fit() {
        let check = |body: &str, expected: &str| {
            let err = parse_json::<SeekRequest>(body.as_bytes()).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(
                err.message.contains(expected),
                "{body}: {:?} lacks {expected:?}",
                err.message
            );
            assert_eq!(err.details, vec![err.message.clone()]);
        };
        check(r#"{"to": "x", "mode": "skip"}"#, "to: invalid type");
        check(r#"{"to": 5, "mode": "later"}"#, "mode: unknown variant");
        check(r#"{"to": -1, "mode": "skip"}"#, "to: invalid value");
        check(r#"{"mode": "skip"}"#, "missing field `to`");
        check(
            r#"{"to": 5, "mode": "skip", "extra": 1}"#,
            "unknown field `extra`",
        );
        check(r#"{"to": 5,"#, "EOF");
        check(r#"{"to": 5, "mode": "skip"} trailing"#, "trailing");
    }

    #[test]
    fn credentials_in_addresses_are_redacted_for_logs() {
        let check = |uri: &str, want: &str| {
            let uri: axum::http::Uri = uri.parse().unwrap();
            assert_eq!(redacted(&uri), want);
        };
        check("/api/v1/exercises", "/api/v1/exercises");
        check(
            "/api/v1/exercises/x/events?access_token=scip_secret",
            "/api/v1/exercises/x/events?access_token=[redacted]",
        );
        check(
            "/api/v1/exercises/x/teams/blue/events?token=djI.abc&x=1",
            "/api/v1/exercises/x/teams/blue/events?token=[redacted]&x=1",
        );
        check(
            "/exercises/x/media/a.png?media=bTE.xyz",
            "/exercises/x/media/a.png?media=[redacted]",
        );
        // Spelled otherwise, repeated, or without a value.
        check(
            "/a?acc%65ss_token=s1&token=s2&token=s3&token&run=2",
            "/a?acc%65ss_token=[redacted]&token=[redacted]&token=[redacted]&token=[redacted]&run=2",
        );
    }

    #[test]
    fn only_json_content_types_pass() {
        let check = |value: Option<&str>, ok: bool| {
            let mut headers = HeaderMap::new();
            if let Some(v) = value {
                headers.insert(CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            }
            assert_eq!(check_json_type(&headers).is_ok(), ok, "{value:?}");
        };
        check(Some("application/json"), true);
        check(Some("application/json; charset=utf-8"), true);
        check(Some("Application/JSON"), true);
        check(Some("application/merge-patch+json"), true);
        check(Some("text/plain"), false);
        check(Some("application/x-www-form-urlencoded"), false);
        check(None, false);
    }

    #[test]
    fn every_state_and_status_has_a_wire_name() {
        for state in ExerciseState::ALL {
            let wire = serde_json::to_value(StateName::from(state)).unwrap();
            assert_eq!(wire, state.as_str());
        }
        for status in [
            "pending",
            "delivered",
            "retrying",
            "failed",
            "cancelled",
            "skipped",
        ] {
            let parsed = parse_status(status).unwrap();
            assert_eq!(
                serde_json::to_value(DeliveryStatusName::from(parsed)).unwrap(),
                status
            );
        }
        assert!(parse_status("lost").is_err());
        for command in Command::ALL {
            assert_eq!(
                serde_json::to_value(CommandName::from(command)).unwrap(),
                command.as_str()
            );
        }
    }
}
