//! Two-way play over HTTP: a team answers from its dashboard (its signed
//! link, checked before the body is read), a controller takes a named
//! decision, and anyone with a role reads a run's responses and decisions.

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::http::errors::ErrorResponse;
use crate::http::extract::{ApiJson, ClientSource, JsonBody, small_json_body};
use crate::http::links::LinkToken;
use crate::http::types::TeamPath;
use crate::http::{ApiError, MAX_RECEIPT_BYTES};
use crate::mqtt::wire::{PostIn, PostMessage, ResponseIn, timestamp};
use crate::runtime::exercise::{Score, ScoreTarget, from_wall_ms};
use crate::runtime::service::Service;

/// A team's answer to an inject it was sent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseRequest {
    #[schema(example = "inject-007")]
    pub inject_id: String,
    /// One of the inject's options, for a choice.
    #[schema(example = "B")]
    pub choice: Option<String>,
    /// The answer, for a text response; a comment otherwise (at most 4000
    /// characters).
    pub text: Option<String>,
    /// Who answers, as they want to be named (at most 100 characters).
    pub by: Option<String>,
}

impl JsonBody for ResponseRequest {
    const EXPECTED: &str =
        "a JSON object with \"inject_id\" and, as the inject asks, \"choice\" or \"text\"";
}

/// The answer as recorded. The outcome is not shown to the team.
#[derive(Debug, Serialize, ToSchema)]
pub struct RespondedResponse {
    pub team_id: String,
    pub inject_id: String,
    pub choice: Option<String>,
    pub text: Option<String>,
    pub by: Option<String>,
    /// The team had answered this inject before: this answer is kept as an
    /// edit, and the first one still decides the outcome.
    pub edit: bool,
    /// The exercise second it was recorded at.
    pub exercise_time: u32,
    pub timestamp: String,
}

/// A team's post to a public channel it sees.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostRequest {
    #[schema(example = "social")]
    pub channel: String,
    /// At most 4000 characters.
    pub text: String,
    /// Who posts, as they want to be named (at most 100 characters).
    pub by: Option<String>,
}

impl JsonBody for PostRequest {
    const EXPECTED: &str = "a JSON object with \"channel\" and \"text\"";
}

/// A controller's post, as a persona of the scenario's world.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonaPostRequest {
    pub channel: String,
    pub text: String,
    /// The name the teams see (a journalist, a minister, an account).
    #[serde(rename = "as")]
    #[schema(example = "@CityNewsDesk")]
    pub persona: String,
}

impl JsonBody for PersonaPostRequest {
    const EXPECTED: &str = "a JSON object with \"channel\", \"text\" and \"as\"";
}

/// A post as it went out.
#[derive(Debug, Serialize, ToSchema)]
pub struct PostedResponse {
    pub channel: String,
    /// The inject it reached the feeds as.
    pub inject_id: String,
    /// The teams whose feeds it reached (a controller's post only; empty
    /// in the answer to a team).
    pub reached: Vec<String>,
    pub exercise_time: u32,
}

impl From<PostMessage> for PostedResponse {
    fn from(m: PostMessage) -> Self {
        Self {
            channel: m.channel,
            inject_id: m.inject_id,
            reached: m.reached,
            exercise_time: m.exercise_time,
        }
    }
}

/// An evaluator's score of a team on one inject or one objective.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    #[schema(example = "blue")]
    pub team: String,
    /// The inject scored (one of `inject` and `objective`).
    pub inject: Option<String>,
    /// The scenario objective scored.
    #[schema(example = "comms")]
    pub objective: Option<String>,
    /// 0 to 100.
    #[schema(example = 80)]
    pub score: u8,
    /// At most 4000 characters.
    pub note: Option<String>,
}

impl JsonBody for ScoreRequest {
    const EXPECTED: &str =
        "a JSON object with \"team\", \"inject\" or \"objective\", and \"score\"";
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScoredResponse {
    pub team: String,
    /// `inject` or `objective`.
    pub target: String,
    pub target_id: String,
    pub score: u8,
    pub note: Option<String>,
    /// The evaluator, as their token is named.
    pub by: Option<String>,
    pub exercise_time: u32,
}

/// A controller's named decision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    #[schema(example = "escalate")]
    pub decision: String,
    /// The teams it is for; every team when absent.
    pub teams: Option<Vec<String>>,
}

impl JsonBody for DecisionRequest {
    const EXPECTED: &str = "a JSON object with \"decision\" and optionally \"teams\"";
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionResponse {
    pub decision: String,
    pub teams: Option<Vec<String>>,
    /// How many waiting injects it released (0 when decided before).
    pub released: usize,
    pub exercise_time: u32,
}

/// One response, post, score or decision of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlayEventResponse {
    pub id: i64,
    /// `response` or `decision`.
    pub kind: String,
    pub team_id: Option<String>,
    /// The inject answered, or the decision's name.
    pub subject: Option<String>,
    /// The rest: a response's choice, text, edit and outcome; a decision's
    /// teams and the injects it released.
    #[schema(value_type = Object)]
    pub body: Value,
    pub by: Option<String>,
    /// `dashboard`, `mqtt`, `api:<ip>`.
    pub source: String,
    pub timestamp: String,
    pub exercise_time: i64,
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/teams/{team}/responses",
    tag = "dashboards",
    params(
        TeamPath,
        ("token" = String, Query, description = "The token of the team's dashboard link"),
    ),
    request_body = ResponseRequest,
    responses(
        (status = 200, description = "Recorded, announced on /exercise/{id}/responses, and given to the scenario's conditions", body = RespondedResponse),
        (status = 400, description = "Not what the inject asks (an option it does not offer, no text for a text answer, too long)", body = ErrorResponse),
        (status = 401, description = "No link token (checked before the body is read)", body = ErrorResponse),
        (status = 403, description = "The token is forged, for another team or exercise, revoked or expired", body = ErrorResponse),
        (status = 404, description = "No such exercise or team, or no such inject sent to this team (an inject not sent yet reads the same)", body = ErrorResponse),
        (status = 409, description = "The exercise has not started or is over, or the team answers too often", body = ErrorResponse),
        (status = 413, description = "The body is over 1 MiB", body = ErrorResponse),
    )
)]
pub(super) async fn respond(
    State(service): State<Service>,
    Path(TeamPath { id, team }): Path<TeamPath>,
    Query(link): Query<LinkToken>,
    request: Request,
) -> Result<Json<RespondedResponse>, ApiError> {
    // The link first: without it the body is never read, however large.
    service.check_team_link(&id, &team, link.token.as_deref())?;
    let body: ResponseRequest = small_json_body(request, MAX_RECEIPT_BYTES, "a response").await?;
    let input = ResponseIn {
        inject_id: body.inject_id,
        choice: body.choice,
        text: body.text,
        by: body.by,
    };
    let m = service
        .respond(&id, &team, link.token.as_deref(), input)
        .await?;
    Ok(Json(RespondedResponse {
        team_id: m.team_id,
        inject_id: m.inject_id,
        choice: m.choice,
        text: m.text,
        by: m.by,
        edit: m.edit,
        exercise_time: m.exercise_time,
        timestamp: m.timestamp,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/teams/{team}/posts",
    tag = "dashboards",
    params(
        TeamPath,
        ("token" = String, Query, description = "The token of the team's dashboard link"),
    ),
    request_body = PostRequest,
    responses(
        (status = 200, description = "Posted: it reached the feed of every team that sees the channel, as an inject of the channel's kind marked with `author_team`", body = PostedResponse),
        (status = 400, description = "No text, or too long", body = ErrorResponse),
        (status = 401, description = "No link token (checked before the body is read)", body = ErrorResponse),
        (status = 403, description = "The token is forged, for another team or exercise, revoked or expired", body = ErrorResponse),
        (status = 404, description = "No such exercise or team, or no channel of this name that the team sees", body = ErrorResponse),
        (status = 409, description = "The exercise has not started or is over, or the team posts too often", body = ErrorResponse),
        (status = 413, description = "The body is over 1 MiB", body = ErrorResponse),
    )
)]
pub(super) async fn team_post(
    State(service): State<Service>,
    Path(TeamPath { id, team }): Path<TeamPath>,
    Query(link): Query<LinkToken>,
    request: Request,
) -> Result<Json<PostedResponse>, ApiError> {
    service.check_team_link(&id, &team, link.token.as_deref())?;
    let body: PostRequest = small_json_body(request, MAX_RECEIPT_BYTES, "a post").await?;
    let input = PostIn {
        channel: body.channel,
        text: Some(body.text),
        by: body.by,
    };
    let m = service
        .post_as_team(&id, &team, link.token.as_deref(), input)
        .await?;
    // Which other teams see the channel is not the team's to know.
    let mut posted = PostedResponse::from(m);
    posted.reached.clear();
    Ok(Json(posted))
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/posts",
    tag = "exercises",
    params(("id" = String, Path, description = "Exercise id")),
    request_body = PersonaPostRequest,
    responses(
        (status = 200, description = "Posted as the persona to every team that sees the channel", body = PostedResponse),
        (status = 400, description = "Invalid body", body = ErrorResponse),
        (status = 404, description = "No such exercise or channel", body = ErrorResponse),
        (status = 409, description = "The exercise has not started or is over", body = ErrorResponse),
    )
)]
pub(super) async fn persona_post(
    State(service): State<Service>,
    Path(id): Path<String>,
    source: ClientSource,
    ApiJson(body): ApiJson<PersonaPostRequest>,
) -> Result<Json<PostedResponse>, ApiError> {
    let input = PostIn {
        channel: body.channel,
        text: Some(body.text),
        by: None,
    };
    let m = service
        .post_as_persona(&id, body.persona, input, source.0)
        .await?;
    Ok(Json(m.into()))
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/scores",
    tag = "exercises",
    params(("id" = String, Path, description = "Exercise id")),
    request_body = ScoreRequest,
    responses(
        (status = 200, description = "Recorded (an evaluator's later score of the same thing supersedes this one in the scorecard)", body = ScoredResponse),
        (status = 400, description = "Not one of inject and objective, a score over 100, a note too long", body = ErrorResponse),
        (status = 403, description = "An observer's token: scoring needs the evaluator role or above", body = ErrorResponse),
        (status = 404, description = "No such exercise, team, inject or objective", body = ErrorResponse),
    )
)]
pub(super) async fn score(
    State(service): State<Service>,
    Path(id): Path<String>,
    source: ClientSource,
    caller: Option<axum::Extension<crate::access::tokens::TokenEntry>>,
    ApiJson(body): ApiJson<ScoreRequest>,
) -> Result<Json<ScoredResponse>, ApiError> {
    let target = match (body.inject, body.objective) {
        (Some(inject), None) => ScoreTarget::Inject(inject),
        (None, Some(objective)) => ScoreTarget::Objective(objective),
        _ => {
            return Err(ApiError::invalid(
                "score either an \"inject\" or an \"objective\"",
            ));
        }
    };
    let by = caller.and_then(|c| c.0.name.clone().or(Some(format!("token {}", c.0.id))));
    let score = Score {
        team: body.team,
        target,
        score: body.score,
        note: body.note,
        by,
    };
    let m = service.score(&id, score, source.0).await?;
    Ok(Json(ScoredResponse {
        team: m.team_id,
        target: m.target.to_owned(),
        target_id: m.target_id,
        score: m.score,
        note: m.note,
        by: m.by,
        exercise_time: m.exercise_time,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/exercises/{id}/decisions",
    tag = "exercises",
    params(("id" = String, Path, description = "Exercise id")),
    request_body = DecisionRequest,
    responses(
        (status = 200, description = "Taken: the injects waiting for it (for these teams) are scheduled, each its delay later", body = DecisionResponse),
        (status = 400, description = "Invalid body", body = ErrorResponse),
        (status = 404, description = "No such exercise or team, or no inject waits for this decision", body = ErrorResponse),
        (status = 409, description = "The exercise has not started or is over", body = ErrorResponse),
    )
)]
pub(super) async fn decide(
    State(service): State<Service>,
    Path(id): Path<String>,
    source: ClientSource,
    ApiJson(body): ApiJson<DecisionRequest>,
) -> Result<Json<DecisionResponse>, ApiError> {
    let m = service
        .decide(&id, body.decision, body.teams, source.0)
        .await?;
    Ok(Json(DecisionResponse {
        decision: m.decision,
        teams: m.teams,
        released: m.released,
        exercise_time: m.exercise_time,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/exercises/{id}/responses",
    tag = "exercises",
    params(("id" = String, Path, description = "Exercise id")),
    responses(
        (status = 200, description = "Every response (edits included) and decision of the current run, oldest first", body = [PlayEventResponse]),
        (status = 404, description = "No such exercise", body = ErrorResponse),
    )
)]
pub(super) async fn responses(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> Result<Json<Vec<PlayEventResponse>>, ApiError> {
    let rows = service.play_events(&id).await?;
    Ok(Json(
        rows.into_iter()
            .map(|row| PlayEventResponse {
                id: row.id,
                kind: row.kind,
                team_id: row.team_id,
                subject: row.subject,
                body: serde_json::from_str(&row.body).unwrap_or(Value::Null),
                by: row.by_name,
                source: row.source,
                timestamp: timestamp(from_wall_ms(row.wall_ms)),
                exercise_time: row.exercise_secs,
            })
            .collect(),
    ))
}
