//! The HTTP API of `serve`: JSON under `/api/v1`, health and readiness
//! probes, Prometheus metrics, the OpenAPI document that describes it all,
//! and what browsers get (pages, media, event streams).
//!
//! This file assembles the router and runs the server and its connections;
//! each resource's handlers have a file of their own (`exercises`,
//! `control`, `deliveries`, `reports`, `links`, `tokens`, `packages`,
//! `msel`, `health`, `metrics`), as have the event streams (`streams`), the pages
//! (`pages`) and the access check every route passes (`auth`).
//!
//! Request and response bodies are this module's own serde types (the wire,
//! shared ones in `types`); domain values from [`Service`] are converted at
//! the edge. Every error, including axum's own rejections (malformed JSON,
//! unknown routes, wrong methods, oversized bodies), leaves as
//! `{"error": {"code", "message", "details"}}` (see `errors`).

pub mod auth;
mod cluster;
mod control;
mod deliveries;
pub mod errors;
mod exercises;
mod extract;
pub mod forward;
mod health;
mod links;
mod metrics;
mod msel;
mod packages;
pub mod pages;
mod play;
mod reports;
pub mod streams;
mod tokens;
pub mod types;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::routing::{get, post};
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use tracing::error;
use utoipa::OpenApi;

use crate::runtime::service::Service;

use errors::{json_errors, no_route, panicked};

pub use errors::{ApiError, ErrorCode, denied};
pub use metrics::{LATENCY_BUCKETS, install_metrics};

/// Largest request body accepted: an inline scenario package with every
/// timeline fits well within it.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Largest receipt body: the dashboard sends at most 100 inject ids at once.
pub const MAX_RECEIPT_BYTES: usize = 1024 * 1024;

/// The API with its state; what [`serve`] serves.
pub fn router(service: Service) -> Router {
    install_metrics();
    let max_body = service.max_request_bytes();
    let v1 = Router::new()
        .route(
            "/exercises",
            get(exercises::list_exercises).post(exercises::create_exercise),
        )
        .route(
            "/exercises/{id}",
            get(exercises::get_exercise).delete(exercises::delete_exercise),
        )
        .route("/exercises/{id}/{command}", post(control::control))
        .route("/exercises/{id}/deliveries", get(deliveries::deliveries))
        .route("/exercises/{id}/failures", get(deliveries::failures))
        .route(
            "/exercises/{id}/deliveries/retry",
            post(deliveries::retry_failed),
        )
        .route(
            "/exercises/{id}/teams/{team}/injects/{inject}/retry",
            post(deliveries::retry_one),
        )
        .route(
            "/exercises/{id}/teams/{team}/injects/{inject}/cancel",
            post(deliveries::cancel),
        )
        .route(
            "/exercises/{id}/teams/{team}/injects/{inject}/reschedule",
            post(deliveries::reschedule),
        )
        .route("/exercises/{id}/injects", post(deliveries::send_inject))
        .route("/exercises/{id}/decisions", post(play::decide))
        .route("/exercises/{id}/posts", post(play::persona_post))
        .route("/exercises/{id}/scores", post(play::score))
        .route("/exercises/{id}/teams/{team}/posts", post(play::team_post))
        .route("/exercises/{id}/responses", get(play::responses))
        .route(
            "/exercises/{id}/teams/{team}/responses",
            post(play::respond),
        )
        .route("/exercises/{id}/seek", post(control::seek))
        .route("/exercises/{id}/control-log", get(control::control_log))
        .route("/exercises/{id}/report", get(reports::report_json))
        .route("/exercises/{id}/report.csv", get(reports::report_csv))
        .route(
            "/exercises/{id}/report/control-log.csv",
            get(reports::report_control_log_csv),
        )
        .route("/exercises/{id}/report.html", get(reports::report_html))
        .route("/exercises/{id}/events", get(streams::exercise_events))
        .route(
            "/exercises/{id}/teams/{team}/events",
            get(streams::team_events),
        )
        .route(
            "/exercises/{id}/teams/{team}/receipts",
            post(links::receipts),
        )
        .route(
            "/exercises/{id}/teams/{team}/link",
            post(links::reissue_link).delete(links::revoke_link),
        )
        .route("/scenarios", get(exercises::scenarios))
        .route(
            "/tokens",
            get(tokens::list_tokens).post(tokens::issue_token),
        )
        .route(
            "/tokens/{token}",
            axum::routing::delete(tokens::revoke_token),
        )
        .route("/packages", post(packages::import_package))
        .route("/packages/{name}/archive", get(packages::export_package))
        .route("/packages/{name}/msel.xlsx", get(msel::export_msel))
        .route("/msel/import", post(msel::import_msel))
        .route("/cluster", get(cluster::cluster));
    Router::new()
        .nest("/api/v1", v1)
        .route("/api/openapi.json", get(openapi))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .merge(pages::pages())
        // Several nodes: what another node runs goes there (after the
        // caller's role is checked below).
        .route_layer(axum::middleware::from_fn_with_state(
            service.clone(),
            forward::to_owner,
        ))
        // Every route checks the caller's role (or is open, or checks a
        // team link itself); see `auth::required`.
        .route_layer(axum::middleware::from_fn_with_state(
            service.clone(),
            auth::require,
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

/// `name` with anything but letters, digits, `.`, `_` and `-` replaced by
/// `_`: only characters that need no quoting rules in a header parameter
/// (a download's file name).
fn header_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A `Content-Disposition` value; a plain `attachment` when `value` cannot
/// be one.
fn content_disposition(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("attachment"))
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
    // Several nodes: take no new exercise from now on, said at once in the
    // heartbeat, before waiting for the responses under way.
    streams.begin_drain().await;
    // Event streams never end by themselves (those passed on from another
    // node neither); a graceful shutdown waits for every response to finish.
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
        exercises::create_exercise,
        exercises::list_exercises,
        exercises::get_exercise,
        exercises::delete_exercise,
        control::control,
        deliveries::deliveries,
        deliveries::failures,
        deliveries::retry_failed,
        deliveries::retry_one,
        deliveries::send_inject,
        deliveries::cancel,
        deliveries::reschedule,
        control::seek,
        control::control_log,
        reports::report_json,
        reports::report_csv,
        reports::report_control_log_csv,
        reports::report_html,
        exercises::scenarios,
        tokens::list_tokens,
        tokens::issue_token,
        tokens::revoke_token,
        links::reissue_link,
        links::revoke_link,
        packages::import_package,
        packages::export_package,
        msel::import_msel,
        msel::export_msel,
        links::receipts,
        play::respond,
        play::team_post,
        play::persona_post,
        play::score,
        play::decide,
        play::responses,
        streams::team_events,
        streams::exercise_events,
        health::healthz,
        health::readyz,
        cluster::cluster,
        metrics::metrics,
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

#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document", body = Object))
)]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
