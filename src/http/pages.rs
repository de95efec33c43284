//! What browsers get from `serve`: the team dashboards and the control room
//! (pages, styles and scripts embedded in the binary) and each exercise's
//! media from its package. The event streams the pages follow are in
//! `streams`.
//!
//! Media are closed like the rest: an exercise's media route serves the
//! media files of its own package (see `media`) to an API token, or to a
//! media token the team stream handed out with an inject that names the
//! file. Pages carry a Content-Security-Policy of their own (their scripts
//! and styles only); media carry a sandboxing one, and whatever a browser
//! would run (HTML, SVG, scripts) is served as a download, so an uploaded
//! file never runs on the service's origin, where the control room keeps
//! its token.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use crate::http::{ApiError, content_disposition, header_safe};
use crate::runtime::service::Service;

/// The embedded files: name, content type, content.
const ASSETS: [(&str, &str, &str); 6] = [
    ("app.css", "text/css", include_str!("../../web/app.css")),
    (
        "common.js",
        "text/javascript",
        include_str!("../../web/common.js"),
    ),
    (
        "team.js",
        "text/javascript",
        include_str!("../../web/team.js"),
    ),
    (
        "control.js",
        "text/javascript",
        include_str!("../../web/control.js"),
    ),
    (
        "team-summary.js",
        "text/javascript",
        include_str!("../../web/team-summary.js"),
    ),
    (
        "play-room.js",
        "text/javascript",
        include_str!("../../web/play-room.js"),
    ),
];
const TEAM_PAGE: &str = include_str!("../../web/team.html");
const CONTROL_PAGE: &str = include_str!("../../web/control.html");

/// What the pages may load and do: their own scripts, styles and API, and
/// pictures and video from anywhere (an inject may name an `https://` one);
/// no inline script, no plugin, no framing by other sites.
pub const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: http: https:; media-src 'self' http: https:; connect-src 'self'; \
    form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// What a media file opened on its own may do: nothing (a unique origin,
/// no script, nothing loaded).
pub const MEDIA_POLICY: &str = "default-src 'none'; sandbox";

/// The pages, their assets and each exercise's media. The pages load for
/// any id: they show themselves when an exercise or team does not exist.
pub fn pages() -> Router<Service> {
    Router::new()
        .route("/", get(control_page))
        .route("/exercises/{id}", get(control_page))
        .route("/exercises/{id}/teams/{team}", get(team_page))
        .route("/exercises/{id}/media/{*path}", get(exercise_media))
        .route("/assets/{name}", get(asset))
}

async fn control_page() -> Response {
    page(CONTROL_PAGE)
}

async fn team_page() -> Response {
    page(TEAM_PAGE)
}

fn page(html: &'static str) -> Response {
    let mut response = embedded("text/html; charset=utf-8", html);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    // A team page's address holds its link: never sent on to another site.
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The media token of a media URL, as the team stream hands it out.
#[derive(Debug, Default, serde::Deserialize)]
pub struct MediaToken {
    pub media: Option<String>,
}

/// A media file of an exercise, from its own package: for an API token
/// (`Authorization` or `?access_token=`, checked by `auth::require`), or a
/// media token for this file from the team stream (`?media=`).
async fn exercise_media(
    State(service): State<Service>,
    Path((id, path)): Path<(String, String)>,
    Query(query): Query<MediaToken>,
    caller: Option<axum::Extension<crate::access::tokens::TokenEntry>>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    match (&caller, &query.media) {
        (Some(_), _) => {
            service.get(&id)?;
        }
        (None, Some(token)) => service.check_media_token(&id, &path, token)?,
        (None, None) => {
            return Err(ApiError::unauthorized(
                "media need an API token, or the media URL a team dashboard was given",
            ));
        }
    }
    let file = service.media_file(&id, &path).await.ok_or_else(|| {
        ApiError::not_found(format!("no media file {path:?} for exercise {id:?}"))
    })?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // ServeFile sets the type and answers range requests (video seeking).
    let response = ServeFile::new(file)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::not_found(format!("media file {path:?}: {e}")))?;
    let mut response = response.map(axum::body::Body::new);
    media_headers(response.headers_mut(), &name);
    Ok(response)
}

/// The headers of every media response: never sniffed, sandboxed when
/// opened on its own, for this site only, not kept by shared caches; what
/// is not a picture, video or sound is a download.
fn media_headers(headers: &mut HeaderMap, name: &str) {
    let kind = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(MEDIA_POLICY),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private"));
    if !crate::scenario::media::shown_inline(&kind) {
        let safe = header_safe(name);
        headers.insert(
            CONTENT_DISPOSITION,
            content_disposition(&format!("attachment; filename=\"{safe}\"")),
        );
        // A download keeps no type the browser could act on as a page's
        // resource: a package's `.js` served as JavaScript would pass the
        // pages' `script-src 'self'`, download or not. Pictures keep theirs
        // (an SVG in an <img> runs no script; opened alone it downloads).
        if !kind.starts_with("image/") {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
        }
    }
}

async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, kind, body)| embedded(kind, body))
        .ok_or_else(|| ApiError::not_found(format!("no asset {name:?}")))
}

fn embedded(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(kind)),
            // Always checked, so an upgraded binary's pages load at once.
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response()
}
