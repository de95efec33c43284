//! What browsers get from `serve`: the team dashboards and the control room
//! (pages, styles and scripts embedded in the binary), each exercise's media
//! from its package, and the server-sent event streams the pages follow.
//!
//! A team dashboard's stream starts with the clock and everything its feed
//! got so far in this run, then carries each new inject and clock change; the
//! control room's carries the exercise and its delivery records. A stream
//! that falls behind is ended: the browser reconnects by itself and starts
//! again from a fresh history, so nothing is missed.
//!
//! Media are closed like the rest: an exercise's media route serves the
//! media files of its own package (see `media`) to an API token, or to a
//! media token the team stream handed out with an inject that names the
//! file. Pages carry a Content-Security-Policy of their own (their scripts
//! and styles only); media carry a sandboxing one, and whatever a browser
//! would run (HTML, SVG, scripts) is served as a download, so an uploaded
//! file never runs on the service's origin, where the control room keeps
//! its token.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use crate::http::{ApiError, DeliveryResponse, ErrorResponse, ExerciseResponse};
use crate::runtime::live::{FeedItem, Live, LiveClock};
use crate::runtime::service::{ExerciseWatch, Service, TeamWatch};

/// How often an idle stream sends a comment: keeps proxies from closing it
/// and notices a closed dashboard within this time.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Clock events closer together than this are dropped while the state
/// stays the same (at high speeds); every state change goes out.
const CLOCK_EVERY: Duration = Duration::from_millis(200);

/// How long a browser waits before reconnecting a stream.
const RETRY: Duration = Duration::from_secs(1);

/// The embedded files: name, content type, content.
const ASSETS: [(&str, &str, &str); 4] = [
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
        // Only characters that need no quoting rules in the header.
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\""))
            .unwrap_or(HeaderValue::from_static("attachment"));
        headers.insert(CONTENT_DISPOSITION, disposition);
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

/// The token of a team's dashboard link, as its URL carries it.
#[derive(Debug, Default, serde::Deserialize)]
pub struct LinkToken {
    pub token: Option<String>,
}

/// Server-sent events of one team's dashboard.
#[utoipa::path(
    get,
    path = "/api/v1/exercises/{id}/teams/{team}/events",
    tag = "dashboards",
    params(
        ("id" = String, Path, description = "Exercise id"),
        ("team" = String, Path, description = "Team id"),
        ("token" = String, Query, description = "The token of the team's dashboard link"),
    ),
    responses(
        (status = 200, description = "text/event-stream. `clock` (timer message plus run, speed and the reason of the last pause or stop) first, on every whole exercise second while running (at most five a second) and on every state change; `names` ({exercise: {id, name}, team: {id, name}}) after the first clock; `history` ({run, injects}: everything the team's feed got in this run, oldest first) after the first clock and, empty, after a reset; `inject` ({run, received, message, media_urls}: the feed message as MQTT subscribers get it, and for each media reference in it, as written, the URL to fetch that file at: its media route with a media token, valid while this link is) as each goes out, once per attempt; history items carry media_urls too. The team counts as connected while a stream is open.", content_type = "text/event-stream", body = String),
        (status = 401, description = "No link token", body = ErrorResponse),
        (status = 403, description = "The token is forged, for another team or exercise, revoked or expired", body = ErrorResponse),
        (status = 404, description = "No such exercise or team", body = ErrorResponse),
    )
)]
pub async fn team_events(
    State(service): State<Service>,
    Path((id, team)): Path<(String, String)>,
    Query(link): Query<LinkToken>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let watch = service
        .watch_team(&id, &team, link.token.as_deref())
        .await?;
    Ok(
        Sse::new(TeamStream::new(watch, service.clone()).into_stream())
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE)),
    )
}

/// Server-sent events of the control room.
#[utoipa::path(
    get,
    path = "/api/v1/exercises/{id}/events",
    tag = "dashboards",
    params(("id" = String, Path, description = "Exercise id")),
    responses(
        (status = 200, description = "text/event-stream. `exercise` (as GET /api/v1/exercises/{id}) first and whenever it changes; `deliveries` (every record of the current run) first and whenever many change at once; `delivery` (one record) whenever it changes.", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such exercise", body = ErrorResponse),
    )
)]
pub async fn exercise_events(
    State(service): State<Service>,
    Path(id): Path<String>,
    token: Option<axum::Extension<crate::access::tokens::TokenEntry>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let watch = service.watch(&id).await?;
    let stream = ControlStream::new(service, id, watch, token.map(|t| t.0)).await?;
    Ok(Sse::new(stream.into_stream()).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

struct TeamStream {
    follow: TeamWatch,
    /// Signs the media URLs handed out with each inject.
    service: Service,
    closing: watch::Receiver<bool>,
    queue: VecDeque<Event>,
    run: u16,
    status: String,
    clock_sent: Instant,
}

impl TeamStream {
    fn new(mut follow: TeamWatch, service: Service) -> Self {
        let closing = service.closing();
        let clock = follow.watch.clock.clone();
        let history = std::mem::take(&mut follow.watch.history);
        let mut stream = Self {
            run: clock.run,
            status: clock.timer.status.clone(),
            clock_sent: Instant::now(),
            queue: VecDeque::new(),
            follow,
            service,
            closing,
        };
        stream.queue.push_back(Event::default().retry(RETRY));
        stream.queue.push_back(clock_event(&clock));
        stream
            .queue
            .push_back(json_event("names", &stream.follow.names));
        let injects = history.iter().map(|i| stream.item_json(i)).collect();
        stream.queue.push_back(history_event(clock.run, injects));
        stream
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures_util::stream::unfold(self, |mut s| async move {
            let event = s.next().await?;
            Some((Ok(event), s))
        })
    }

    /// A feed item as the dashboard gets it: `{run, received, message,
    /// media_urls}`, where `media_urls` maps each media reference in the
    /// message, as written, to the URL this dashboard fetches it at (with a
    /// media token for that file, valid while the stream's link is).
    fn item_json(&self, item: &FeedItem) -> String {
        let message: serde_json::Value =
            serde_json::from_str(&item.message).unwrap_or(serde_json::Value::Null);
        let urls: serde_json::Map<String, serde_json::Value> =
            crate::scenario::media::references(&message)
                .into_iter()
                .map(|(written, path)| {
                    let url = self.service.media_url(&self.follow.link.claims, &path);
                    (written, serde_json::Value::String(url))
                })
                .collect();
        let json = item.to_json();
        let open = json.strip_suffix('}').unwrap_or(&json);
        format!(
            "{open},\"media_urls\":{}}}",
            serde_json::Value::Object(urls)
        )
    }

    /// The next event for the browser; None ends the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            let event = tokio::select! {
                event = self.follow.watch.events.recv() => event,
                () = closed(&mut self.closing) => return None,
                // Re-issued, revoked or expired: the page's reconnect is
                // refused with the reason.
                () = self.follow.link.ended() => return None,
            };
            match event {
                Ok(Live::Clock(clock)) => {
                    if clock.run != self.run {
                        // A reset: the feed starts over.
                        self.run = clock.run;
                        self.queue.push_back(history_event(clock.run, Vec::new()));
                    } else if clock.timer.status == self.status
                        && self.clock_sent.elapsed() < CLOCK_EVERY
                    {
                        continue;
                    }
                    self.status = clock.timer.status.clone();
                    self.clock_sent = Instant::now();
                    self.queue.push_back(clock_event(&clock));
                }
                Ok(Live::Feed(item)) if item.team == self.follow.team => {
                    self.queue
                        .push_back(Event::default().event("inject").data(self.item_json(&item)));
                }
                Ok(_) => {}
                // Fallen behind, or the exercise is gone: the browser
                // reconnects and starts from a fresh history.
                Err(RecvError::Lagged(_) | RecvError::Closed) => return None,
            }
        }
    }
}

struct ControlStream {
    service: Service,
    closing: watch::Receiver<bool>,
    id: String,
    follow: ExerciseWatch,
    queue: VecDeque<Event>,
    exercise: String,
    /// The API token the stream was opened with: its revocation ends the
    /// stream, and its role decides whether team links are shown.
    token: Option<crate::access::tokens::TokenEntry>,
}

impl ControlStream {
    async fn new(
        service: Service,
        id: String,
        mut follow: ExerciseWatch,
        token: Option<crate::access::tokens::TokenEntry>,
    ) -> Result<Self, ApiError> {
        let deliveries = std::mem::take(&mut follow.watch.deliveries);
        let mut stream = Self {
            closing: service.closing(),
            service,
            id,
            token,
            follow,
            queue: VecDeque::new(),
            exercise: String::new(),
        };
        stream.queue.push_back(Event::default().retry(RETRY));
        stream.queue_exercise()?;
        stream.queue.push_back(deliveries_event(deliveries));
        Ok(stream)
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures_util::stream::unfold(self, |mut s| async move {
            let event = s.next().await?;
            Some((Ok(event), s))
        })
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            let follow = &mut self.follow;
            let revoked = async {
                match &self.token {
                    Some(token) => self.service.tokens().revoked(&token.id).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = closed(&mut self.closing) => return None,
                // The page's reconnect is then refused (401).
                () = revoked => return None,
                event = follow.watch.events.recv() => match event {
                    Ok(Live::Delivery(view)) => {
                        let body = DeliveryResponse::from((*view).clone());
                        self.queue.push_back(json_event("delivery", &body));
                    }
                    Ok(Live::Reload) | Err(RecvError::Lagged(_)) => {
                        let views = self.service.deliveries(&self.id).await.ok()?;
                        self.queue.push_back(deliveries_event(views));
                    }
                    Ok(Live::Clock(_) | Live::Feed(_)) => {}
                    Err(RecvError::Closed) => return None,
                },
                changed = follow.snapshot.changed() => {
                    changed.ok()?;
                    self.queue_exercise().ok()?;
                }
                changed = follow.presence.changed() => {
                    changed.ok()?;
                    self.queue_exercise().ok()?;
                }
            }
        }
    }

    /// Queues the exercise when it differs from what was sent last.
    fn queue_exercise(&mut self) -> Result<(), ApiError> {
        let role = self.token.as_ref().map(|t| t.role);
        let body = ExerciseResponse::for_caller(self.service.get(&self.id)?, role);
        let json = serde_json::to_string(&body).expect("wire types serialize");
        if json != self.exercise {
            self.queue
                .push_back(Event::default().event("exercise").data(json.clone()));
            self.exercise = json;
        }
        Ok(())
    }
}

/// Resolves once streams must end (or the service is gone).
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

fn clock_event(clock: &LiveClock) -> Event {
    json_event("clock", clock)
}

fn history_event(run: u16, injects: Vec<String>) -> Event {
    Event::default().event("history").data(format!(
        "{{\"run\":{run},\"injects\":[{}]}}",
        injects.join(",")
    ))
}

fn deliveries_event(views: Vec<crate::runtime::exercise::DeliveryView>) -> Event {
    let body: Vec<DeliveryResponse> = views.into_iter().map(Into::into).collect();
    json_event("deliveries", &body)
}

fn json_event(name: &str, body: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(body).expect("wire types serialize"))
}
