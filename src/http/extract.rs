//! What handlers take from a request: JSON bodies (`application/json`
//! only, always a JSON object, parsed with the path of any field that does
//! not fit), and the client's address as the audit log names it.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::http::ApiError;
use crate::http::errors::ErrorCode;

/// A request body: a JSON object, whose shape `EXPECTED` says in the answer
/// to a body that is not an object (serde would otherwise read an array
/// as the struct's fields in order, and complain about an element).
pub(super) trait JsonBody: DeserializeOwned {
    /// "a JSON object with …", naming its fields.
    const EXPECTED: &'static str;
}

/// A JSON body: `application/json`, parsed with the path of any field that
/// does not fit in the message.
pub(super) struct ApiJson<T>(pub(super) T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: JsonBody,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (headers, bytes) = body_bytes(req, state).await?;
        json_body(&headers, &bytes).map(ApiJson)
    }
}

/// A JSON body that may be left out: an empty body is `T::default()`.
pub(super) struct OptionalJson<T>(pub(super) T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: JsonBody + Default,
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
        json_body(&headers, &bytes).map(OptionalJson)
    }
}

/// `api:<client ip>` for the audit log; `api` when the server was not
/// started with connection info. A request another node of the cluster
/// forwarded names its client in a header that node signed.
pub(super) struct ClientSource(pub(super) String);

impl FromRequestParts<crate::runtime::service::Service> for ClientSource {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        service: &crate::runtime::service::Service,
    ) -> Result<Self, Self::Rejection> {
        use crate::http::forward::{FORWARD_SIGNATURE, FORWARDED_FOR};
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        if let (Some(client), Some(signature)) = (header(FORWARDED_FOR), header(FORWARD_SIGNATURE))
        {
            // The address as it came, before a nested router stripped its
            // prefix: what the forwarding node signed.
            let uri = parts
                .extensions
                .get::<axum::extract::OriginalUri>()
                .map_or(&parts.uri, |o| &o.0);
            let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            if service.check_forward(client, parts.method.as_str(), target, signature) {
                return Ok(ClientSource(client.to_owned()));
            }
        }
        Ok(ClientSource(
            match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
                Some(ConnectInfo(addr)) => format!("api:{}", addr.ip()),
                None => "api".to_owned(),
            },
        ))
    }
}

/// A request body that must be JSON: not empty, of a JSON type, and
/// parsed as [`ApiJson`] parses it.
/// The JSON body of `request`, read only up to `limit` bytes (a larger
/// announced length is refused before anything is read): for the routes a
/// team's link opens, whose bodies are small. `what` names the body in the
/// 413's message.
pub(super) async fn small_json_body<T: JsonBody>(
    request: Request,
    limit: usize,
    what: &str,
) -> Result<T, ApiError> {
    let (parts, body) = request.into_parts();
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("{what} is at most {limit} bytes"),
        )
    };
    let announced = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if e.to_string().contains("length limit") {
            too_large()
        } else {
            ApiError::invalid(format!("the request body could not be read: {e}"))
        }
    })?;
    json_body(&parts.headers, &bytes)
}

pub(super) fn json_body<T: JsonBody>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("the request needs a JSON body"));
    }
    check_json_type(headers)?;
    parse_json(bytes)
}

/// The media type of `Content-Type`, without parameters, in lower case.
pub(super) fn content_type_essence(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
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
    let essence = content_type_essence(headers);
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => Ok(()),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!(
                "expected Content-Type: application/json, got {}",
                other.unwrap_or("none")
            ),
        )),
    }
}

fn parse_json<T: JsonBody>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Valid JSON of another type: say what was expected. Invalid JSON
        // gets serde's own message below, with its line and column.
        if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
            let got = match first {
                Some(b'[') => "an array",
                Some(b'"') => "a string",
                Some(b't' | b'f') => "a boolean",
                Some(b'n') => "null",
                _ => "a number",
            };
            return Err(ApiError::invalid(format!(
                "request body: expected {}, got {got}",
                T::EXPECTED
            )));
        }
    }
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

pub(super) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::http::control::SeekRequest;

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
}
