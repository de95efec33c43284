//! What browsers get from `serve`: the team dashboards and the control room
//! (pages, styles and scripts embedded in the binary), media from
//! MEDIA_STORAGE_PATH, and the server-sent event streams the pages follow.
//!
//! A team dashboard's stream starts with the clock and everything its feed
//! got so far in this run, then carries each new inject and clock change; the
//! control room's carries the exercise and its delivery records. A stream
//! that falls behind is ended: the browser reconnects by itself and starts
//! again from a fresh history, so nothing is missed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt as _;
use tower_http::services::{ServeDir, ServeFile};

use crate::http::{ApiError, DeliveryResponse, ErrorResponse, ExerciseResponse};
use crate::live::{FeedItem, Live, LiveClock};
use crate::service::{ExerciseWatch, Service, TeamWatch};

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
    ("app.css", "text/css", include_str!("../web/app.css")),
    (
        "common.js",
        "text/javascript",
        include_str!("../web/common.js"),
    ),
    ("team.js", "text/javascript", include_str!("../web/team.js")),
    (
        "control.js",
        "text/javascript",
        include_str!("../web/control.js"),
    ),
];
const TEAM_PAGE: &str = include_str!("../web/team.html");
const CONTROL_PAGE: &str = include_str!("../web/control.html");

/// The pages, their assets and the media folder. The pages load for any
/// id: they show themselves when an exercise or team does not exist.
pub fn pages(service: &Service) -> Router<Service> {
    let router = Router::new()
        .route("/", get(control_page))
        .route("/exercises/{id}", get(control_page))
        .route("/exercises/{id}/teams/{team}", get(team_page))
        .route("/exercises/{id}/media/{*path}", get(exercise_media))
        .route("/assets/{name}", get(asset));
    match service.media_root() {
        Some(root) => router.nest_service("/media", ServeDir::new(root)),
        None => router,
    }
}

async fn control_page() -> Response {
    page(CONTROL_PAGE)
}

async fn team_page() -> Response {
    page(TEAM_PAGE)
}

fn page(html: &'static str) -> Response {
    embedded("text/html; charset=utf-8", html)
}

/// A media file of an exercise: from its package first, then the media folder.
async fn exercise_media(
    State(service): State<Service>,
    Path((id, path)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let file = service.media_file(&id, &path).ok_or_else(|| {
        ApiError::not_found(format!("no media file {path:?} for exercise {id:?}"))
    })?;
    // ServeFile sets the type and answers range requests (video seeking).
    let response = ServeFile::new(file)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::not_found(format!("media file {path:?}: {e}")))?;
    Ok(response.map(axum::body::Body::new))
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
        (status = 200, description = "text/event-stream. `clock` (timer message plus run, speed and the reason of the last pause or stop) first, on every whole exercise second while running (at most five a second) and on every state change; `names` ({exercise: {id, name}, team: {id, name}}) after the first clock; `history` ({run, injects}: everything the team's feed got in this run, oldest first) after the first clock and, empty, after a reset; `inject` ({run, received, message}: the feed message as MQTT subscribers get it) as each goes out, once per attempt. The team counts as connected while a stream is open.", content_type = "text/event-stream", body = String),
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
        Sse::new(TeamStream::new(watch, service.closing()).into_stream())
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
    token: Option<axum::Extension<crate::auth::TokenEntry>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let watch = service.watch(&id).await?;
    let stream = ControlStream::new(service, id, watch, token.map(|t| t.0)).await?;
    Ok(Sse::new(stream.into_stream()).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

struct TeamStream {
    follow: TeamWatch,
    closing: watch::Receiver<bool>,
    queue: VecDeque<Event>,
    run: u16,
    status: String,
    clock_sent: Instant,
}

impl TeamStream {
    fn new(mut follow: TeamWatch, closing: watch::Receiver<bool>) -> Self {
        let clock = follow.watch.clock.clone();
        let history = std::mem::take(&mut follow.watch.history);
        let mut stream = Self {
            run: clock.run,
            status: clock.timer.status.clone(),
            clock_sent: Instant::now(),
            queue: VecDeque::new(),
            follow,
            closing,
        };
        stream.queue.push_back(Event::default().retry(RETRY));
        stream.queue.push_back(clock_event(&clock));
        stream
            .queue
            .push_back(json_event("names", &stream.follow.names));
        stream
            .queue
            .push_back(history_event(clock.run, history.iter().map(|i| &**i)));
        stream
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures_util::stream::unfold(self, |mut s| async move {
            let event = s.next().await?;
            Some((Ok(event), s))
        })
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
                        self.queue.push_back(history_event(clock.run, []));
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
                        .push_back(Event::default().event("inject").data(item.to_json()));
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
    token: Option<crate::auth::TokenEntry>,
}

impl ControlStream {
    async fn new(
        service: Service,
        id: String,
        mut follow: ExerciseWatch,
        token: Option<crate::auth::TokenEntry>,
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

fn history_event<'a>(run: u16, items: impl IntoIterator<Item = &'a FeedItem>) -> Event {
    let injects: Vec<String> = items.into_iter().map(FeedItem::to_json).collect();
    Event::default().event("history").data(format!(
        "{{\"run\":{run},\"injects\":[{}]}}",
        injects.join(",")
    ))
}

fn deliveries_event(views: Vec<crate::exercise::DeliveryView>) -> Event {
    let body: Vec<DeliveryResponse> = views.into_iter().map(Into::into).collect();
    json_event("deliveries", &body)
}

fn json_event(name: &str, body: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(body).expect("wire types serialize"))
}
