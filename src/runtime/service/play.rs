//! Two-way play through the service: a team's answer from its dashboard
//! (its signed link), a controller's decision, and the responses, posts,
//! scores and decisions of a run, as stored.

use crate::mqtt::wire::{
    DecisionMessage, PostIn, PostMessage, ResponseIn, ResponseMessage, ScoreMessage,
};
use crate::runtime::exercise::{Author, Request, Score};
use crate::store::PlayRow;

use super::{Service, ServiceError};

impl Service {
    /// Team `team` answers an inject from its dashboard; `token` is its
    /// link's, checked first.
    pub async fn respond(
        &self,
        id: &str,
        team: &str,
        token: Option<&str>,
        input: ResponseIn,
    ) -> Result<ResponseMessage, ServiceError> {
        let index = self.check_team_link(id, team, token)?;
        self.ask(id, |reply| Request::Respond {
            team: index,
            input,
            source: "dashboard".into(),
            reply,
        })
        .await
    }

    /// Team `team` posts to a public channel from its dashboard; `token`
    /// is its link's, checked first.
    pub async fn post_as_team(
        &self,
        id: &str,
        team: &str,
        token: Option<&str>,
        input: PostIn,
    ) -> Result<PostMessage, ServiceError> {
        let index = self.check_team_link(id, team, token)?;
        self.ask(id, |reply| Request::Post {
            author: Author::Team(index),
            input,
            source: "dashboard".into(),
            reply,
        })
        .await
    }

    /// A controller posts as `persona` (a name the teams see).
    pub async fn post_as_persona(
        &self,
        id: &str,
        persona: String,
        input: PostIn,
        source: String,
    ) -> Result<PostMessage, ServiceError> {
        self.ask(id, |reply| Request::Post {
            author: Author::Persona(persona),
            input,
            source,
            reply,
        })
        .await
    }

    /// An evaluator's score of a team.
    pub async fn score(
        &self,
        id: &str,
        score: Score,
        source: String,
    ) -> Result<ScoreMessage, ServiceError> {
        self.ask(id, |reply| Request::Score {
            score,
            source,
            reply,
        })
        .await
    }

    /// A controller's decision for `teams` (every team when None).
    pub async fn decide(
        &self,
        id: &str,
        decision: String,
        teams: Option<Vec<String>>,
        source: String,
    ) -> Result<DecisionMessage, ServiceError> {
        self.ask(id, |reply| Request::Decide {
            decision,
            teams,
            source,
            reply,
        })
        .await
    }

    /// The responses and decisions of the exercise's current run, in the
    /// order they were taken.
    pub async fn play_events(&self, id: &str) -> Result<Vec<PlayRow>, ServiceError> {
        let info = self.get(id)?;
        let run = info.snapshot().map_or(1, |s| s.run);
        Ok(self.inner.store.play_events(id, i64::from(run)).await?)
    }
}
