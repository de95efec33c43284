//! What the actor sends out: the engine's outputs as MQTT messages, journal
//! entries and followers' events, in the order that keeps them true.

use std::sync::Arc;

use rumqttc::QoS;
use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::{error, info};

use super::clock::{clock_row, wall_ms};
use super::{Actor, now};
use crate::core::{DeliveryTag, Output, PlayState, State, Transition};
use crate::mqtt::wire::{
    ANNOUNCEMENT_SOURCE, Announcement, MonitoringMessage, StatusMessage, TimerMessage, timestamp,
};
use crate::mqtt::{AckTo, Message};
use crate::runtime::journal::JournalEntry;
use crate::runtime::live::{FeedItem, Live};
use crate::store::DeliveryRow;

impl Actor {
    pub(super) fn mark_all_dirty(&mut self) {
        self.dirty_all = true;
    }

    /// Acts on everything the engine asked for, in order: feed messages go
    /// out at once (their timing matters, and a crash before their record is
    /// stored only means they are sent again); changed records and the clock
    /// are journaled, then announcements follow them.
    pub(super) fn flush(&mut self) {
        let mut announcements = Vec::new();
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Deliver(tag) => {
                    self.deliver(tag);
                    self.dirty.push(tag.slot as usize);
                }
                Output::Played { slot } => {
                    self.dirty.push(slot);
                    announcements.push(output);
                }
                // A tick announces nothing to store: straight out, on time.
                Output::Timer(t) if t.state == State::Running => {
                    if let Some(due) = self.engine.clock().deadline(t.current.get()) {
                        let late = Instant::now().saturating_duration_since(due);
                        metrics::histogram!("scip_timer_tick_lateness_seconds")
                            .record(late.as_secs_f64());
                    }
                    let timer = TimerMessage::from(t);
                    let payload = serde_json::to_vec(&timer).expect("wire types serialize");
                    self.emit(|| Live::Clock(Arc::new(self.live_clock(timer))));
                    if !self.trusted() {
                        continue;
                    }
                    self.mqtt.publish(Message {
                        topic: self.topics.timer.clone(),
                        payload,
                        qos: QoS::AtMostOnce,
                        retain: true,
                        ack: None,
                    });
                }
                other => announcements.push(other),
            }
        }
        if !announcements.is_empty() {
            self.clock_dirty = true;
        }
        self.sync_journal();
        for output in announcements {
            match output {
                Output::Timer(t) => {
                    let topic = self.topics.timer.clone();
                    let timer = TimerMessage::from(t);
                    self.publish_json(&topic, &timer, QoS::AtMostOnce, true);
                    self.emit(|| Live::Clock(Arc::new(self.live_clock(timer))));
                }
                Output::StateChanged(t) => {
                    self.last_reason = t.reason.clone();
                    self.announce(t);
                }
                Output::DeliveryFailed { slot } => {
                    metrics::counter!("scip_deliveries_total", "status" => "failed").increment(1);
                    let r = self.engine.records()[slot].clone();
                    let (team, inject) = self.names(slot);
                    error!(
                        exercise_id = %self.id(),
                        team_id = %team,
                        inject_id = %inject,
                        attempts = r.attempts,
                        error = r.last_error.as_deref().unwrap_or(""),
                        "delivery failed"
                    );
                    let mut status = self.status_now("delivery_failed");
                    status.team_id = Some(team);
                    status.inject_id = Some(inject);
                    status.message = r.last_error.clone();
                    self.publish_status(&status);
                    self.publish_monitoring();
                }
                Output::Played { slot } => self.announce_play(slot),
                Output::Deliver(_) => unreachable!("sent above"),
            }
        }
    }
}

/// A record's play state as stored; None when it has none.
pub fn play_json(play: &PlayState) -> Option<String> {
    (!play.is_empty()).then(|| serde_json::to_string(play).expect("play state serializes"))
}

impl Actor {
    /// Tells followers which records changed since the last call.
    fn emit_changes(&mut self) {
        if self.live.receiver_count() == 0 {
            return;
        }
        if self.dirty_all {
            let _ = self.live.send(Live::Reload);
            return;
        }
        self.dirty.sort_unstable();
        self.dirty.dedup();
        for &slot in &self.dirty {
            let view = self.view(slot);
            let _ = self.live.send(Live::Delivery(Arc::new(view)));
        }
    }

    /// Journals the clock and the records changed since the last call, and
    /// the play rows taken meanwhile with them (one entry: stored together).
    pub(super) fn sync_journal(&mut self) {
        if !self.journal.is_stored() {
            self.emit_changes();
            self.dirty.clear();
            self.dirty_all = false;
            self.clock_dirty = false;
            self.plays.clear();
            return;
        }
        if self.clock_dirty {
            self.clock_dirty = false;
            self.journal.write(JournalEntry::Clock {
                exercise_id: self.id().to_string(),
                row: clock_row(&self.engine, now()),
            });
        }
        self.emit_changes();
        let rows = if self.dirty_all {
            self.dirty.clear();
            self.dirty_all = false;
            self.delivery_rows()
        } else if !self.dirty.is_empty() {
            let mut slots = std::mem::take(&mut self.dirty);
            slots.sort_unstable();
            slots.dedup();
            slots.into_iter().map(|s| self.row(s)).collect()
        } else {
            Vec::new()
        };
        let plays = std::mem::take(&mut self.plays);
        if !plays.is_empty() {
            self.journal.write(JournalEntry::Played { plays, rows });
        } else if !rows.is_empty() {
            self.journal.write(JournalEntry::Deliveries(rows));
        }
    }

    pub(super) fn row(&self, slot: usize) -> DeliveryRow {
        let r = &self.engine.records()[slot];
        let e = &self.entries[slot];
        DeliveryRow {
            exercise_id: self.id().to_string(),
            run: i64::from(self.engine.run()),
            team_id: self.scenario.teams[e.team].id.to_string(),
            inject_id: e.inject().id.to_string(),
            due_secs: i64::from(r.due.get()),
            status: r.status.as_str().to_owned(),
            attempts: i64::from(r.attempts),
            due_wall_ms: r.due_wall.map(wall_ms),
            published_wall_ms: r.published_wall.map(wall_ms),
            acked_wall_ms: r.acked_wall.map(wall_ms),
            received_wall_ms: r.received_wall.map(wall_ms),
            latency_ms: r.latency.map(|l| l.as_secs_f64() * 1000.0),
            late: r.late,
            last_error: r.last_error.clone(),
            watched: r.watched,
            sent_secs: r.published_at.map(|s| i64::from(s.get())),
            play: play_json(&r.play),
            position: slot as i64,
            inject_json: e
                .live
                .then(|| crate::scenario::inject_value(e.inject()).to_string()),
        }
    }

    fn deliver(&mut self, tag: DeliveryTag) {
        // Whether anyone was looking when it first went out: only then does
        // its receipt measure how long it took to reach a screen.
        let team = self.entries[tag.slot as usize].team;
        self.engine
            .set_watched(tag.slot as usize, self.presence.open(team) > 0);
        let e = &self.entries[tag.slot as usize];
        let team = &self.scenario.teams[e.team].id;
        if !self.trusted() {
            // The window closed within this very step: nothing goes out;
            // the attempt fails and waits like any other.
            let _ = self.acks.send(crate::mqtt::AckEvent::Failed {
                tag: tag.to_u64(),
                error: crate::mqtt::PublishError::Untrusted,
            });
            return;
        }
        let r = &self.engine.records()[tag.slot as usize];
        let payload = e.template().render(
            team,
            &self.options.exercise_id,
            OffsetDateTime::now_utc(),
            r.published_at.unwrap_or(r.due),
        );
        if self.live.receiver_count() > 0 {
            let item = FeedItem {
                team: e.team,
                run: self.engine.run(),
                received: self.engine.records()[tag.slot as usize]
                    .received_wall
                    .is_some(),
                answered: None,
                message: String::from_utf8_lossy(&payload).into_owned(),
            };
            let _ = self.live.send(Live::Feed(Arc::new(item)));
        }
        self.mqtt.publish(Message {
            topic: self.feeds[e.team].clone(),
            payload,
            qos: self.options.feed_qos,
            retain: false,
            ack: Some(AckTo {
                tag: tag.to_u64(),
                to: self.acks.clone(),
            }),
        });
    }

    fn announce(&mut self, t: Transition) {
        let wall = OffsetDateTime::now_utc();
        info!(
            exercise_id = %self.id(),
            from = %t.from,
            to = %t.to,
            at = %t.at,
            reason = t.reason.as_deref().unwrap_or(""),
            "exercise {}", t.to
        );
        let mut status = StatusMessage::new(self.id(), t.to, "state_changed", t.at, wall);
        status.previous = Some(t.from.as_str());
        status.command = t.command.map(|c| c.to_string());
        status.reason = t.reason.clone();
        self.publish_status(&status);
        let announcement = Announcement {
            command: t
                .command
                .map_or_else(|| "complete".to_owned(), |c| c.to_string()),
            timestamp: timestamp(wall),
            reason: t.reason,
            source: ANNOUNCEMENT_SOURCE,
            state: t.to.as_str(),
            exercise_time: t.at.get(),
        };
        let topic = self.topics.control.clone();
        self.publish_json(&topic, &announcement, QoS::AtLeastOnce, false);
    }

    pub(super) fn status_now(&self, event: &'static str) -> StatusMessage {
        StatusMessage::new(
            self.id(),
            self.engine.state(),
            event,
            self.engine.exercise_time(Instant::now()),
            OffsetDateTime::now_utc(),
        )
    }

    pub(super) fn publish_status(&self, status: &StatusMessage) {
        self.publish_json(&self.topics.status, status, QoS::AtLeastOnce, true);
    }

    pub(super) fn publish_timer_now(&self) {
        let t = TimerMessage::from(self.engine.timer(Instant::now()));
        self.publish_json(&self.topics.timer, &t, QoS::AtMostOnce, true);
    }

    pub(super) fn publish_monitoring(&mut self) {
        let (counts, _) = self.counts_now();
        let m = MonitoringMessage::new(
            self.id(),
            self.engine.state(),
            &counts,
            self.presence.teams_connected(),
            self.engine.exercise_time(Instant::now()),
            OffsetDateTime::now_utc(),
        );
        self.publish_json(&self.topics.monitoring, &m, QoS::AtLeastOnce, true);
    }

    /// Announcements go through the journal: after what they announce is
    /// stored. The timer and monitoring messages are snapshots: while held,
    /// only the newest of each matters.
    pub(super) fn publish_json(
        &self,
        topic: &str,
        body: &impl serde::Serialize,
        qos: QoS,
        retain: bool,
    ) {
        let payload = serde_json::to_vec(body).expect("wire types serialize");
        let message = Message {
            topic: topic.to_owned(),
            payload,
            qos,
            retain,
            ack: None,
        };
        if topic == self.topics.timer || topic == self.topics.monitoring {
            self.journal.publish_latest(message);
        } else {
            self.journal.publish(message);
        }
    }
}
