//! Controllers' requests to the actor: commands, delivery edits, followers
//! and receipts, each answered once what it did is stored.

use std::sync::Arc;

use rumqttc::QoS;
use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::warn;

use super::clock::wall_ms;
use super::entries::Entry;
use super::{Actor, DeliveryKey, DeliveryView, Reply, Request, RequestError, now};
use crate::core::engine::SeekMode;
use crate::core::{Command, Now, State, Transition};
use crate::domain::{ExerciseSeconds, InjectId};
use crate::mqtt::Message;
use crate::mqtt::wire::TimerMessage;
use crate::runtime::journal::JournalEntry;
use crate::runtime::live::{FeedItem, Live, LiveClock, Watch};
use crate::scenario::Inject;
use crate::store::ControlRow;

impl Actor {
    /// Applies a command from the control topic, the API or a signal; the
    /// audit row and new state are journaled before anything is announced.
    pub(super) fn command(
        &mut self,
        command: Command,
        reason: Option<String>,
        source: String,
        reply: Option<Reply<Transition>>,
    ) {
        let now = now();
        let run_before = self.engine.run();
        let at = self.engine.exercise_time(now.mono);
        let result = self.engine.handle_command(command, reason.clone(), now);
        let audit = ControlRow {
            id: 0,
            exercise_id: self.id().to_string(),
            at_wall_ms: wall_ms(now.wall),
            command: command.to_string(),
            reason,
            source,
            accepted: result.is_ok(),
            message: result.as_ref().err().map(|r| r.to_string()),
            exercise_secs: Some(i64::from(at.get())),
        };
        self.journal.write(JournalEntry::Control(audit));
        match &result {
            Ok(_) => {
                if self.engine.run() != run_before {
                    // A reset: the new run's records are stored fresh.
                    self.entries = self.base.clone();
                    self.dirty.clear();
                    self.dirty_all = false;
                    self.journal.write(JournalEntry::NewRun {
                        exercise_id: self.id().to_string(),
                        rows: self.delivery_rows(),
                    });
                    self.emit(|| Live::Reload);
                } else if command == Command::Stop {
                    self.mark_all_dirty();
                }
                self.clock_dirty = true;
            }
            Err(refusal) => {
                warn!(exercise_id = %self.id(), %refusal, "command refused");
                let mut status = self.status_now("command_refused");
                status.command = Some(command.to_string());
                status.message = Some(refusal.to_string());
                self.publish_status(&status);
            }
        }
        if let Some(reply) = reply {
            // Answered once what it did is stored: a command that is not is
            // not confirmed (it stands, and is stored once the store takes it).
            self.sync_journal();
            self.journal.reply(move |stored| {
                let _ = reply.send(
                    stored
                        .map_err(RequestError::from)
                        .and(result.map_err(RequestError::from)),
                );
            });
        }
    }

    pub(super) fn on_request(&mut self, request: Request) {
        let now = now();
        let request = match request {
            Request::Control { reply, .. } if self.closing => {
                let _ = reply.send(Err(self.being_deleted()));
                return;
            }
            Request::Cancel { reply, .. } | Request::Reschedule { reply, .. } if self.closing => {
                let _ = reply.send(Err(self.being_deleted()));
                return;
            }
            Request::Retry { reply, .. }
            | Request::Send { reply, .. }
            | Request::Seek { reply, .. }
            | Request::Receipts { reply, .. }
                if self.closing =>
            {
                let _ = reply.send(Err(self.being_deleted()));
                return;
            }
            Request::Respond { reply, .. } if self.closing => {
                let _ = reply.send(Err(self.being_deleted()));
                return;
            }
            Request::Decide { reply, .. } if self.closing => {
                let _ = reply.send(Err(self.being_deleted()));
                return;
            }
            Request::Post { reply, .. } if self.closing => {
                let _ = reply.send(Err(self.being_deleted()));
                return;
            }
            Request::Score { reply, .. } if self.closing => {
                let _ = reply.send(Err(self.being_deleted()));
                return;
            }
            other => other,
        };
        match request {
            Request::Control {
                command,
                reason,
                source,
                reply,
            } => self.command(command, reason, source, Some(reply)),
            Request::Respond {
                team,
                input,
                source,
                reply,
            } => {
                let result = self.respond(team, input, &source, now);
                self.reply_stored(result, reply);
            }
            Request::Score {
                score,
                source,
                reply,
            } => {
                let result = self.score(score, &source, now);
                self.reply_stored(result, reply);
            }
            Request::Post {
                author,
                input,
                source,
                reply,
            } => {
                let result = self.post(author, input, &source, now);
                self.reply_stored(result, reply);
            }
            Request::Decide {
                decision,
                teams,
                source,
                reply,
            } => {
                let result = self.decide(&decision, teams, &source, now);
                let done = result
                    .as_ref()
                    .map(|m| format!("decision {decision:?}: {} injects released", m.released));
                self.audit("decide", source, done, None, now);
                self.reply_stored(result, reply);
            }
            Request::Deliveries { reply } => {
                let _ = reply.send(Ok(self.views()));
            }
            Request::Retry { key, source, reply } => {
                let what = key
                    .as_ref()
                    .map_or("every failed delivery".to_owned(), describe_key);
                let result = match key {
                    Some(key) => self
                        .slot(&key)
                        .and_then(|slot| self.engine.retry(slot, now).map_err(Into::into))
                        .map(|()| 1),
                    None => self.engine.retry_all_failed(now).map_err(Into::into),
                };
                let done = result.as_ref().map(|n| format!("{what}: {n} sent again"));
                self.audit("retry", source, done, None, now);
                self.answer(result, reply);
            }
            Request::Send {
                teams,
                inject,
                at,
                source,
                reply,
            } => {
                let what = format!(
                    "inject {:?} to {} {}",
                    inject.id.as_str(),
                    teams.join(", "),
                    at.map_or("now".to_owned(), |at| format!("at {at}"))
                );
                let when = at.unwrap_or_else(|| self.engine.exercise_time(now.mono));
                let result = self.send(teams, inject, at, now);
                let done = result.as_ref().map(|_| what);
                self.audit("send", source, done, Some(when), now);
                self.answer(result, reply);
            }
            Request::Cancel { key, source, reply } => {
                let result = self
                    .slot(&key)
                    .and_then(|slot| self.engine.cancel(slot, now).map_err(Into::into));
                let done = result.as_ref().map(|()| describe_key(&key));
                self.audit("cancel", source, done, None, now);
                self.answer(result, reply);
            }
            Request::Reschedule {
                key,
                at,
                source,
                reply,
            } => {
                let result = self.slot(&key).and_then(|slot| {
                    self.engine
                        .reschedule(slot, at, now)
                        .map_err(Into::into)
                        .map(|()| self.retime(slot, at))
                });
                let done = result
                    .as_ref()
                    .map(|()| format!("{} to {at}", describe_key(&key)));
                self.audit("reschedule", source, done, None, now);
                self.answer(result, reply);
            }
            Request::Close { reply } => {
                let state = self.engine.state();
                if matches!(state, State::Running | State::Paused) {
                    let _ = reply.send(Err(RequestError::Conflict(format!(
                        "exercise {} is {state}: stop it before deleting it",
                        self.id()
                    ))));
                    return;
                }
                self.flush();
                self.closing = true;
                self.journal.reply(move |stored| {
                    let _ = reply.send(stored.map_err(RequestError::from));
                });
            }
            Request::Reopen { reply } => {
                self.closing = false;
                let _ = reply.send(Ok(()));
            }
            Request::End { reply } => {
                for topic in [
                    &self.topics.timer,
                    &self.topics.status,
                    &self.topics.monitoring,
                ] {
                    // An empty retained message clears the topic; after
                    // everything the exercise announced, held or not.
                    self.journal.publish(Message {
                        topic: topic.clone(),
                        payload: Vec::new(),
                        qos: QoS::AtLeastOnce,
                        retain: true,
                        ack: None,
                    });
                }
                self.closed = true;
                let _ = reply.send(Ok(()));
            }
            Request::Watch { team, reply } => {
                let _ = reply.send(Ok(self.watch(team)));
            }
            Request::Receipts {
                team,
                run,
                inject_ids,
                reply,
            } => {
                let result = self.receipts(team, run, &inject_ids, now);
                // Answered once stored, without rewriting every record.
                self.flush();
                self.journal.reply(move |stored| {
                    let _ = reply.send(stored.map_err(RequestError::from).and(result));
                });
            }
            Request::Seek {
                to,
                mode,
                source,
                reply,
            } => {
                let from = self.engine.exercise_time(now.mono);
                let result = self.engine.seek(to, mode, now).map_err(RequestError::from);
                let done = result.as_ref().map(|&n| {
                    let what = match mode {
                        SeekMode::Deliver => "sent",
                        SeekMode::Skip => "skipped",
                    };
                    format!("from {from} to {to}: {n} passed over, {what}")
                });
                let at = result.is_ok().then_some(to);
                self.audit("seek", source, done, at, now);
                if result.is_ok() {
                    self.mark_all_dirty();
                    self.clock_dirty = true;
                }
                self.answer(result, reply);
            }
        }
    }

    /// Writes a controller's edit to the control log, done or refused: what
    /// it did, or why not. `at` is the exercise second it took effect at
    /// (the current one when `None`).
    fn audit(
        &mut self,
        command: &str,
        source: String,
        done: Result<String, &RequestError>,
        at: Option<ExerciseSeconds>,
        now: Now,
    ) {
        let at = at.unwrap_or_else(|| self.engine.exercise_time(now.mono));
        let row = ControlRow {
            id: 0,
            exercise_id: self.id().to_string(),
            at_wall_ms: wall_ms(now.wall),
            command: command.to_owned(),
            reason: None,
            source,
            accepted: done.is_ok(),
            message: Some(done.unwrap_or_else(|e| e.to_string())),
            exercise_secs: Some(i64::from(at.get())),
        };
        self.journal.write(JournalEntry::Control(row));
    }

    /// Replies once the request's effects are stored.
    fn answer<T: Send + 'static>(&mut self, result: Result<T, RequestError>, reply: Reply<T>) {
        if result.is_ok() {
            self.mark_all_dirty();
        }
        self.flush();
        self.journal.reply(move |stored| {
            let _ = reply.send(stored.map_err(RequestError::from).and(result));
        });
    }

    /// Replies once what was journaled is stored, without rewriting
    /// every record (an answer changes a few, and marks them itself).
    fn reply_stored<T: Send + 'static>(
        &mut self,
        result: Result<T, RequestError>,
        reply: Reply<T>,
    ) {
        self.flush();
        self.journal.reply(move |stored| {
            let _ = reply.send(stored.map_err(RequestError::from).and(result));
        });
    }

    fn being_deleted(&self) -> RequestError {
        RequestError::Conflict(format!("exercise {} is being deleted", self.id()))
    }

    fn send(
        &mut self,
        teams: Vec<String>,
        inject: Inject,
        at: Option<ExerciseSeconds>,
        now: Now,
    ) -> Result<usize, RequestError> {
        if teams.is_empty() {
            return Err(RequestError::Invalid("name at least one team".into()));
        }
        let play = inject.play();
        if play.expect.is_some() || play.when.is_some() {
            return Err(RequestError::Invalid(
                "\"expect\" and \"when\" belong to scenario injects; an inject sent live may ask for a \"response\"".into(),
            ));
        }
        let mut indices = Vec::new();
        for team in &teams {
            let index = self
                .scenario
                .teams
                .iter()
                .position(|t| t.id.as_str() == team)
                .ok_or_else(|| {
                    RequestError::NotFound(format!("no team {team:?} in this exercise"))
                })?;
            if self.slot_of(index, &inject.id).is_some() {
                return Err(RequestError::Conflict(format!(
                    "team {team:?} already has an inject {:?} in this run",
                    inject.id.as_str()
                )));
            }
            indices.push(index);
        }
        let mut inject = inject;
        // The feed message says when it was due: at T+x, or now.
        inject.time = at.unwrap_or_else(|| self.engine.exercise_time(now.mono));
        for team in indices {
            let slot = self.engine.add(team, self.entries.len(), at, now)?;
            debug_assert_eq!(slot, self.entries.len());
            self.entries.push(Entry::own(team, inject.clone(), true));
            self.journal.write(JournalEntry::NewRows {
                rows: vec![self.row(slot)],
            });
        }
        Ok(teams.len())
    }

    /// Where things stand for a new follower, and its subscription.
    fn watch(&self, team: Option<usize>) -> Watch {
        let events = self.live.subscribe();
        let (history, deliveries) = match team {
            Some(team) => {
                let mut sent: Vec<usize> = (0..self.entries.len())
                    .filter(|&slot| {
                        self.entries[slot].team == team
                            && self.engine.records()[slot].published_wall.is_some()
                    })
                    .collect();
                sent.sort_by_key(|&slot| (self.engine.records()[slot].due, slot));
                let items = sent.into_iter().map(|slot| Arc::new(self.feed_item(slot)));
                (items.collect(), Vec::new())
            }
            None => (Vec::new(), self.views()),
        };
        Watch {
            clock: Arc::new(self.live_clock(self.engine.timer(Instant::now()).into())),
            history,
            deliveries,
            events,
        }
    }

    fn receipts(
        &mut self,
        team: usize,
        run: u16,
        inject_ids: &[String],
        now: Now,
    ) -> Result<usize, RequestError> {
        if run != self.engine.run() {
            // A page still showing an earlier run: nothing of this run to confirm.
            return Ok(0);
        }
        self.presence.seen(team, now.wall);
        let mut slots = Vec::with_capacity(inject_ids.len());
        for id in inject_ids {
            let inject = InjectId::parse(id)
                .map_err(|e| RequestError::Invalid(format!("inject_ids: {e}")))?;
            // An inject not sent to the team yet reads as none at all: a
            // receipt must not tell a team what its future holds.
            let slot = self
                .slot_of(team, &inject)
                .filter(|&slot| self.engine.records()[slot].published_wall.is_some())
                .ok_or_else(|| {
                    RequestError::NotFound(format!(
                        "no inject {id:?} for team {:?} in this run",
                        self.scenario.teams[team].id.as_str()
                    ))
                })?;
            slots.push(slot);
        }
        let mut recorded = 0;
        for slot in slots {
            if self.engine.on_received(slot, now.wall) {
                recorded += 1;
                self.dirty.push(slot);
                metrics::counter!("scip_receipts_total").increment(1);
                // Only what a dashboard watched go out measures on-screen latency.
                match self.engine.records()[slot].receipt_latency {
                    Some(latency) => metrics::histogram!("scip_receipt_latency_seconds")
                        .record(latency.as_secs_f64()),
                    None => metrics::counter!("scip_receipts_not_watched_total").increment(1),
                }
            }
        }
        Ok(recorded)
    }

    /// The inject in `slot` as its team's feed got it (last publish time).
    fn feed_item(&self, slot: usize) -> FeedItem {
        let e = &self.entries[slot];
        let r = &self.engine.records()[slot];
        let at = r.published_wall.unwrap_or_else(OffsetDateTime::now_utc);
        let message = e.template().render(
            &self.scenario.teams[e.team].id,
            &self.options.exercise_id,
            at,
            r.published_at.unwrap_or(r.due),
        );
        FeedItem {
            team: e.team,
            run: self.engine.run(),
            received: r.received_wall.is_some(),
            answered: r.play.answer.as_ref().map(|a| (a.at, a.choice.clone())),
            message: String::from_utf8(message).expect("rendered from strings"),
        }
    }

    pub(super) fn live_clock(&self, timer: TimerMessage) -> LiveClock {
        let stopped = matches!(self.engine.state(), State::Paused | State::Stopped);
        LiveClock {
            timer,
            run: self.engine.run(),
            speed: self.options.speed.get(),
            turn: self.engine.turn().map(|(turn, _)| turn),
            total_turns: self.engine.turn().map(|(_, total)| total),
            reason: if stopped {
                self.last_reason.clone()
            } else {
                None
            },
        }
    }

    /// Sends to followers, building the event only when someone follows.
    pub(super) fn emit(&self, event: impl FnOnce() -> Live) {
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(event());
        }
    }

    /// A rescheduled inject's feed message carries its new time.
    fn retime(&mut self, slot: usize, at: ExerciseSeconds) {
        let entry = &self.entries[slot];
        let mut inject = entry.inject().clone();
        inject.time = at;
        self.entries[slot] = Entry::own(entry.team, inject, entry.live);
        self.dirty.push(slot);
    }

    fn slot(&self, key: &DeliveryKey) -> Result<usize, RequestError> {
        let team = self
            .scenario
            .teams
            .iter()
            .position(|t| t.id.as_str() == key.team_id)
            .ok_or_else(|| {
                RequestError::NotFound(format!("no team {:?} in this exercise", key.team_id))
            })?;
        let inject =
            InjectId::parse(&key.inject_id).map_err(|e| RequestError::Invalid(e.to_string()))?;
        self.slot_of(team, &inject).ok_or_else(|| {
            RequestError::NotFound(format!(
                "no inject {:?} for team {:?} in this run",
                key.inject_id, key.team_id
            ))
        })
    }

    pub(super) fn slot_of(&self, team: usize, inject: &InjectId) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.team == team && e.inject().id == *inject)
    }

    fn views(&self) -> Vec<DeliveryView> {
        (0..self.engine.records().len())
            .map(|slot| self.view(slot))
            .collect()
    }

    pub(super) fn view(&self, slot: usize) -> DeliveryView {
        let e = &self.entries[slot];
        DeliveryView {
            team_id: self.scenario.teams[e.team].id.to_string(),
            inject_id: e.inject().id.to_string(),
            kind: e.inject().kind.clone(),
            record: self.engine.records()[slot].clone(),
            live: e.live,
            skip_reason: match &self.engine.records()[slot].play.gate {
                Some(crate::core::Gate::Skipped { reason }) => Some(self.skip_reason(reason)),
                _ => None,
            },
            waits_for: self
                .engine
                .condition(slot)
                .map(|c| self.describe_condition(c)),
            decision: match self.engine.condition(slot) {
                Some(crate::core::Condition {
                    trigger: crate::core::Trigger::Decision(name),
                    ..
                }) => Some(name.clone()),
                _ => None,
            },
        }
    }
}

/// `team/inject`, as the control log names a delivery.
fn describe_key(key: &DeliveryKey) -> String {
    format!("{}/{}", key.team_id, key.inject_id)
}
