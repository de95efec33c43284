//! Any node answers (several nodes, SPEC section 8). A request about an
//! exercise another node runs is passed to that node as it came (method,
//! path, query, headers, body, streamed both ways: event streams too) and
//! its answer passed back; a command is therefore stored by the owner
//! before it answers. The list of exercises gathers every live node's. A
//! new exercise is created on the live node that runs the fewest.
//!
//! A forwarded request says which node forwarded it (never forwarded again:
//! an owner that moved meanwhile answers 503 and the caller retries) and,
//! signed with the key the nodes share, which client it came from, so rate
//! limits and the audit log name the client, not the node.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tracing::warn;

use crate::http::ApiError;
use crate::http::errors::ErrorCode;
use crate::runtime::service::{Owner, Peer, Service};

/// The node that forwarded a request.
pub const FORWARDED_BY: &str = "x-scip-forwarded-by";
/// The client a forwarded request came from (`api:<ip>`).
pub const FORWARDED_FOR: &str = "x-scip-forwarded-for";
/// The signature of [`FORWARDED_FOR`] with the method and target.
pub const FORWARD_SIGNATURE: &str = "x-scip-forward-signature";

/// How long a node waits for a peer to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long gathering the list waits for each peer.
const LIST_TIMEOUT: Duration = Duration::from_secs(3);

fn client() -> &'static Client<HttpConnector, Body> {
    static CLIENT: OnceLock<Client<HttpConnector, Body>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new()).build(connector)
    })
}

/// The middleware: passes requests about exercises this node does not run
/// to the node that does. After authentication, so a node forwards only
/// what its caller may ask.
pub async fn to_owner(State(service): State<Service>, request: Request, next: Next) -> Response {
    if !service.is_clustered() || request.headers().contains_key(FORWARDED_BY) {
        return next.run(request).await;
    }
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if path == "/api/v1/exercises" {
        return match *request.method() {
            Method::GET => gather(&service, request, next).await,
            Method::POST => match service.placement().await {
                Ok(Some(peer)) => forward(&service, &peer, request).await,
                Ok(None) => next.run(request).await,
                Err(e) => ApiError::from(e).into_response(),
            },
            _ => next.run(request).await,
        };
    }
    let Some(id) = exercise_of(&path, request.uri()) else {
        return next.run(request).await;
    };
    if service.hosts(&id) {
        return next.run(request).await;
    }
    match service.owner_of(&id).await {
        Ok(Owner::At { node, address }) => {
            forward(&service, &Peer { node, address }, request).await
        }
        // Here but not hosted: claimed a moment ago, being restored.
        Ok(Owner::Moving | Owner::Here) => moving(&id),
        Ok(Owner::Absent) => next.run(request).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// 503 with `Retry-After`: the exercise is between nodes.
fn moving(id: &str) -> Response {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        format!(
            "exercise {id} is moving to another node (the node that ran it stopped answering); try again in a few seconds"
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    response
}

/// The exercise id a route names: the segment after `exercises/` of
/// `/api/v1/exercises/{id}...` and of `/exercises/{id}/media/...` (the
/// dashboard and control room pages themselves are the same on every node).
fn exercise_of(path: &str, uri: &Uri) -> Option<String> {
    let index = if path.starts_with("/api/v1/exercises/{id}") {
        4
    } else if path.starts_with("/exercises/{id}/media/") {
        2
    } else {
        return None;
    };
    let raw = uri.path().split('/').nth(index)?;
    Some(
        percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// Headers that belong to one connection, not to the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

/// `api:<ip>` of the caller, as the audit log and rate limits name it.
fn client_of(request: &Request) -> String {
    match request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
    {
        Some(ConnectInfo(addr)) => format!("api:{}", addr.ip()),
        None => "api".to_owned(),
    }
}

/// Passes `request` to `peer` and its answer back.
async fn forward(service: &Service, peer: &Peer, request: Request) -> Response {
    let client_source = client_of(&request);
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let uri: Uri = match format!("{}{target}", peer.address.trim_end_matches('/')).parse() {
        Ok(uri) => uri,
        Err(e) => return unreachable_peer(peer, &e.to_string()),
    };
    let signature = service.sign_forward(&client_source, parts.method.as_str(), &target);
    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in [
        (
            FORWARDED_BY,
            service.node_id().unwrap_or_default().to_owned(),
        ),
        (FORWARDED_FOR, client_source),
        (FORWARD_SIGNATURE, signature),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    let mut outgoing = axum::http::Request::new(body);
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = uri;
    *outgoing.headers_mut() = headers;
    match client().request(outgoing).await {
        Ok(answer) => {
            metrics::counter!("scip_forwarded_requests_total", "outcome" => "answered")
                .increment(1);
            let (mut parts, body) = answer.into_parts();
            let mut kept = axum::http::HeaderMap::new();
            for (name, value) in &parts.headers {
                if !hop_by_hop(name) {
                    kept.append(name.clone(), value.clone());
                }
            }
            parts.headers = kept;
            // Ends with this node's own streams when it shuts down, so a
            // stream passed on never holds its graceful shutdown up.
            let mut closing = service.closing();
            let body = Body::new(body).into_data_stream().take_until(async move {
                let _ = closing.wait_for(|c| *c).await;
            });
            Response::from_parts(parts, Body::from_stream(body))
        }
        Err(e) => {
            metrics::counter!("scip_forwarded_requests_total", "outcome" => "unreachable")
                .increment(1);
            unreachable_peer(peer, &e.to_string())
        }
    }
}

fn unreachable_peer(peer: &Peer, why: &str) -> Response {
    warn!(node = %peer.node, address = %peer.address, error = why, "a peer node does not answer");
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        format!(
            "node {} ({}), which runs this exercise, does not answer: {why}; try again in a few seconds",
            peer.node, peer.address
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    response
}

/// `GET /api/v1/exercises` on a node of several: its own list and every
/// live peer's, oldest first. A peer that does not answer in time is left
/// out (and logged): the list says what could be read.
async fn gather(service: &Service, request: Request, next: Next) -> Response {
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let peers = match service.peers().await {
        Ok(peers) => peers,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let local = next.run(request).await;
    if local.status() != StatusCode::OK || peers.is_empty() {
        return local;
    }
    let (parts, body) = local.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut all: Vec<Value> = serde_json::from_slice(&bytes).unwrap_or_default();
    let me = service.node_id().unwrap_or_default().to_owned();
    let asks = peers.iter().map(|peer| {
        let mut ask = axum::http::Request::new(Body::empty());
        *ask.uri_mut() = format!("{}/api/v1/exercises", peer.address.trim_end_matches('/'))
            .parse()
            .unwrap_or_default();
        if let Some(auth) = &authorization {
            ask.headers_mut()
                .insert(header::AUTHORIZATION, auth.clone());
        }
        if let Ok(me) = HeaderValue::from_str(&me) {
            ask.headers_mut()
                .insert(HeaderName::from_static(FORWARDED_BY), me);
        }
        async move {
            let answer = tokio::time::timeout(LIST_TIMEOUT, async {
                let answer = client().request(ask).await.map_err(|e| e.to_string())?;
                let bytes = axum::body::to_bytes(Body::new(answer.into_body()), usize::MAX)
                    .await
                    .map_err(|e| e.to_string())?;
                serde_json::from_slice::<Vec<Value>>(&bytes).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|_| Err("no answer in time".to_owned()));
            (peer, answer)
        }
    });
    for (peer, answer) in futures_util::future::join_all(asks).await {
        match answer {
            Ok(list) => all.extend(list),
            Err(e) => {
                warn!(node = %peer.node, error = %e, "a peer's exercises are left out of the list")
            }
        }
    }
    // During a takeover two nodes may both list an exercise: once each.
    let mut ids = std::collections::HashSet::new();
    all.retain(|e| ids.insert(e["id"].as_str().unwrap_or_default().to_owned()));
    all.sort_by(|a, b| {
        let created = |v: &Value| v["created_at"].as_str().unwrap_or_default().to_owned();
        created(a).cmp(&created(b))
    });
    let mut response = axum::Json(all).into_response();
    *response.status_mut() = parts.status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exercise_a_route_names_is_read_from_the_address() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(
            exercise_of(
                "/api/v1/exercises/{id}/start",
                &uri("/api/v1/exercises/ex%2D1/start")
            ),
            Some("ex-1".into())
        );
        assert_eq!(
            exercise_of("/api/v1/exercises/{id}", &uri("/api/v1/exercises/a")),
            Some("a".into())
        );
        assert_eq!(
            exercise_of(
                "/exercises/{id}/media/{*path}",
                &uri("/exercises/b/media/x.png?media=t")
            ),
            Some("b".into())
        );
        assert_eq!(exercise_of("/exercises/{id}", &uri("/exercises/b")), None);
        assert_eq!(
            exercise_of("/api/v1/exercises", &uri("/api/v1/exercises")),
            None
        );
        assert_eq!(exercise_of("/api/v1/tokens", &uri("/api/v1/tokens")), None);
    }
}
