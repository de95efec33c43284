//! Posts to the scenario's simulated public channels (SPEC section 9): a
//! team posts as itself (dashboard, MQTT), a controller as any persona;
//! the post reaches, as an inject of the channel's kind, the feed of every
//! team that sees the channel, and is stored and announced like a response.

use std::sync::Arc;

use rumqttc::QoS;
use serde_json::{Map, json};
use tokio::time::Instant;
use tracing::info;

use super::clock::wall_ms;
use super::entries::Entry;
use super::play::{MAX_BY_CHARS, MAX_RESPONSE_CHARS, bounded};
use super::{Actor, RequestError};
use crate::core::{Now, State};
use crate::domain::InjectId;
use crate::mqtt::Received;
use crate::mqtt::wire::{PostIn, PostMessage, timestamp};
use crate::runtime::journal::JournalEntry;
use crate::runtime::live::Live;
use crate::scenario::Inject;
use crate::store::PlayRow;

/// Who posts: a team as itself, or a controller as a persona.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    Team(usize),
    Persona(String),
}

impl Actor {
    /// A post to channel `input.channel`: an inject of the channel's kind
    /// to every team that sees it, now. A team posts only to a channel it
    /// sees (another reads as no such channel).
    pub(super) fn post(
        &mut self,
        author: Author,
        input: PostIn,
        source: &str,
        now: Now,
    ) -> Result<PostMessage, RequestError> {
        let no_channel =
            || RequestError::NotFound(format!("no channel {:?} to post to", input.channel));
        let channel = self
            .scenario
            .channels
            .iter()
            .find(|c| c.id == input.channel)
            .cloned()
            .ok_or_else(no_channel)?;
        let author_team = match &author {
            Author::Team(team) => {
                let id = &self.scenario.teams[*team].id;
                if !channel.visible_to.contains(id) {
                    return Err(no_channel());
                }
                if let Err(refused) = self.response_rate.check(id.as_str(), Instant::now()) {
                    return Err(RequestError::Conflict(format!(
                        "rate limited: {}",
                        refused.describe("responses and posts", "from this team")
                    )));
                }
                Some(id.to_string())
            }
            Author::Persona(_) => None,
        };
        match self.engine.state() {
            State::Initialized => {
                return Err(RequestError::Conflict(
                    "the exercise has not started".into(),
                ));
            }
            s if s.is_over() => return Err(RequestError::Conflict(format!("the exercise is {s}"))),
            _ => {}
        }
        let text = bounded(input.text, MAX_RESPONSE_CHARS, "text")?
            .ok_or_else(|| RequestError::Invalid("a post needs \"text\"".into()))?;
        let by = bounded(input.by, MAX_BY_CHARS, "by")?;
        let persona = match &author {
            Author::Persona(p) => bounded(Some(p.clone()), MAX_BY_CHARS, "as")?,
            Author::Team(_) => None,
        };
        // Post ids count up per channel within the run: `<channel>-post-<n>`
        // (a team sees every post of a channel it sees, so no gap tells it
        // of activity elsewhere).
        let prefix = format!("{}-post-", channel.id);
        let number = 1 + self
            .entries
            .iter()
            .filter_map(|e| {
                e.inject()
                    .id
                    .as_str()
                    .strip_prefix(&prefix)?
                    .parse::<u32>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        let id = InjectId::parse(&format!("{prefix}{number}")).map_err(|e| {
            RequestError::Invalid(format!("channel {:?} makes no inject id: {e}", channel.id))
        })?;
        let at = self.engine.exercise_time(now.mono);
        // A team's post always shows its team: a team cannot pass for a
        // persona of the scenario or for another team, whatever `by` says.
        let shown_as = match (&persona, &author_team, &by) {
            (Some(persona), _, _) => persona.clone(),
            (None, Some(team), Some(by)) => format!("{by} (team {team})"),
            (None, Some(team), None) => format!("team {team}"),
            (None, None, _) => String::new(),
        };
        let mut content = Map::new();
        content.insert("text".into(), text.clone().into());
        content.insert("display_name".into(), shown_as.into());
        if let Some(team) = &author_team {
            content.insert("username".into(), team.clone().into());
        }
        content.insert(
            "source".into(),
            channel
                .name
                .clone()
                .unwrap_or_else(|| channel.id.clone())
                .into(),
        );
        let mut extra = Map::new();
        extra.insert("channel".into(), channel.id.clone().into());
        if let Some(team) = &author_team {
            extra.insert("author_team".into(), team.clone().into());
        }
        if let Some(persona) = &persona {
            extra.insert("persona".into(), persona.clone().into());
        }
        let inject = Inject {
            id: id.clone(),
            time: at,
            kind: channel.kind.clone(),
            content,
            extra,
        };
        let teams: Vec<usize> = self
            .scenario
            .teams
            .iter()
            .enumerate()
            .filter(|(_, t)| channel.visible_to.contains(&t.id))
            .map(|(i, _)| i)
            .collect();
        for &team in &teams {
            let slot = self.engine.add(team, self.entries.len(), None, now)?;
            debug_assert_eq!(slot, self.entries.len());
            self.entries.push(Entry::own(team, inject.clone(), true));
            self.journal.write(JournalEntry::NewRows {
                rows: vec![self.row(slot)],
            });
        }
        self.plays.push(PlayRow {
            id: 0,
            exercise_id: self.id().to_string(),
            run: i64::from(self.engine.run()),
            kind: "post".into(),
            team_id: author_team.clone(),
            subject: Some(channel.id.clone()),
            body: json!({"text": text, "persona": persona, "inject_id": id.as_str()}).to_string(),
            by_name: by.clone(),
            source: source.to_owned(),
            wall_ms: wall_ms(now.wall),
            exercise_secs: i64::from(at.get()),
        });
        // Stored with the records it changed, before anything announces it.
        self.flush();
        let message = PostMessage {
            event: "post",
            exercise_id: self.id().to_string(),
            channel: channel.id.clone(),
            inject_id: id.to_string(),
            author_team,
            persona,
            by,
            text,
            reached: teams
                .iter()
                .map(|&t| self.scenario.teams[t].id.to_string())
                .collect(),
            source: source.to_owned(),
            exercise_time: at.get(),
            timestamp: timestamp(now.wall),
        };
        info!(exercise_id = %self.id(), channel = %message.channel, inject_id = %message.inject_id, teams = teams.len(), "post");
        let topic = self.topics.responses.clone();
        self.publish_json(&topic, &message, QoS::AtLeastOnce, false);
        self.emit(|| Live::Post(Arc::new(message.clone())));
        Ok(message)
    }

    /// A message on a team's posts topic: posted like one from the
    /// dashboard; what is refused is reported on the status topic.
    pub(super) fn on_mqtt_post(&mut self, message: Received) {
        if message.payload.is_empty() || message.retain {
            return;
        }
        let Some(team) = self
            .topics
            .posting_team(&message.topic)
            .and_then(|t| self.scenario.teams.iter().position(|s| s.id.as_str() == t))
        else {
            return;
        };
        let result = serde_json::from_slice::<PostIn>(&message.payload)
            .map_err(|e| RequestError::Invalid(format!("not a post: {e}")))
            .and_then(|input| self.post(Author::Team(team), input, "mqtt", super::now()));
        if let Err(refused) = result {
            self.report_refused("post", Some(team), &refused.to_string());
        }
    }
}
