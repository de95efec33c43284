//! The server-sent event streams the pages follow.
//!
//! A team dashboard's stream starts with the clock and everything its feed
//! got so far in this run, then carries each new inject and clock change; the
//! control room's carries the exercise and its delivery records. A stream
//! that falls behind is ended: the browser reconnects by itself and starts
//! again from a fresh history, so nothing is missed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::http::ApiError;
use crate::http::errors::ErrorResponse;
use crate::http::links::LinkToken;
use crate::http::types::{DeliveryResponse, ExerciseResponse, TeamPath};
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

/// Server-sent events of one team's dashboard.
#[utoipa::path(
    get,
    path = "/api/v1/exercises/{id}/teams/{team}/events",
    tag = "dashboards",
    params(
        TeamPath,
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
    Path(TeamPath { id, team }): Path<TeamPath>,
    Query(link): Query<LinkToken>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let watch = service
        .watch_team(&id, &team, link.token.as_deref())
        .await?;
    Ok(sse(TeamStream::new(watch, service.clone())))
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
    Ok(sse(stream))
}

/// What one browser's stream carries, event by event.
trait Events: Send + 'static {
    /// The next event for the browser; None ends the stream.
    fn next(&mut self) -> impl Future<Output = Option<Event>> + Send;
}

/// `events` as a server-sent event response, with keep-alive comments.
fn sse<E: Events>(events: E) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold(events, |mut events| async move {
        let event = events.next().await?;
        Some((Ok(event), events))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
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
}

impl Events for TeamStream {
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
                // The team's own answers (from any of its screens), without
                // the outcome: whether it was right is the controllers' to tell.
                Ok(Live::Response { team, message }) if team == self.follow.team => {
                    let mut message = (*message).clone();
                    message.outcome = None;
                    self.queue.push_back(json_event("response", &message));
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

impl Events for ControlStream {
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
                    Ok(Live::Response { message, .. }) => {
                        self.queue.push_back(json_event("response", &*message));
                    }
                    Ok(Live::Post(message)) => {
                        self.queue.push_back(json_event("post", &*message));
                    }
                    Ok(Live::Score(message)) => {
                        self.queue.push_back(json_event("score", &*message));
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
