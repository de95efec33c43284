//! The exercise's control topic: commands within the rate limit, refusals
//! and invalid messages reported no more often than commands are taken.

use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Actor;
use super::clock::wall_ms;
use crate::core::Command;
use crate::mqtt::Received;
use crate::mqtt::wire::{ControlInput, parse_control};
use crate::runtime::journal::JournalEntry;
use crate::store::ControlRow;

impl Actor {
    pub(super) fn on_control(&mut self, message: Received) {
        if message.payload.is_empty() {
            // How MQTT clears a retained message: not a command.
            return;
        }
        if message.retain {
            if let Some(unreported) = self.may_report() {
                warn!(exercise_id = %self.id(), unreported, "ignoring a retained message on the control topic: commands must be live");
            }
            return;
        }
        match parse_control(&message.payload) {
            ControlInput::Command { command, reason } if self.closing => {
                let why = format!("exercise {} is being deleted", self.id());
                self.refuse_control(command, reason, why);
            }
            ControlInput::Command { command, reason } => {
                if let Err(refused) = self.control_rate.check("mqtt", Instant::now()) {
                    let why = format!(
                        "rate limited: {}",
                        refused.describe("commands", "on the control topic")
                    );
                    self.refuse_control(command, reason, why);
                    return;
                }
                info!(exercise_id = %self.id(), %command, reason = reason.as_deref().unwrap_or(""), "control command");
                self.command(command, reason, "mqtt".into(), None);
            }
            ControlInput::Decide { decision, .. } if self.closing => {
                let why = format!("exercise {} is being deleted", self.id());
                self.refuse_decision(&decision, why);
            }
            ControlInput::Decide {
                decision,
                teams,
                reason,
            } => {
                if let Err(refused) = self.control_rate.check("mqtt", Instant::now()) {
                    let why = format!(
                        "rate limited: {}",
                        refused.describe("commands", "on the control topic")
                    );
                    self.refuse_decision(&decision, why);
                    return;
                }
                info!(exercise_id = %self.id(), %decision, reason = reason.as_deref().unwrap_or(""), "decision on the control topic");
                let now = super::now();
                let result = self.decide(&decision, teams, "mqtt", now);
                let done = result
                    .as_ref()
                    .map(|m| format!("decision {decision:?}: {} injects released", m.released));
                if let Err(e) = &result {
                    self.refuse_decision(&decision, e.to_string());
                }
                let row = ControlRow {
                    id: 0,
                    exercise_id: self.id().to_string(),
                    at_wall_ms: wall_ms(now.wall),
                    command: "decide".into(),
                    reason,
                    source: "mqtt".into(),
                    accepted: done.is_ok(),
                    message: Some(done.unwrap_or_else(|e| e.to_string())),
                    exercise_secs: Some(i64::from(self.engine.exercise_time(now.mono).get())),
                };
                self.journal.write(JournalEntry::Control(row));
            }
            ControlInput::Announcement => {}
            ControlInput::Invalid(why) => {
                let Some(unreported) = self.may_report() else {
                    return;
                };
                warn!(exercise_id = %self.id(), %why, unreported, "invalid control message");
                let mut status = self.status_now("invalid_command");
                status.message = Some(with_unreported(why, unreported));
                self.publish_status(&status);
            }
        }
    }

    /// A decision on the control topic not taken: reported on the
    /// controllers' responses topic (a team reads the status topic, and the
    /// name of a decision tells of a branch), within the report rate.
    fn refuse_decision(&mut self, decision: &str, why: String) {
        self.report_refused("decide", None, &format!("decision {decision:?}: {why}"));
    }

    /// A control-topic command not taken: logged, audited and reported on
    /// the status topic, within the report rate.
    fn refuse_control(&mut self, command: Command, reason: Option<String>, why: String) {
        let Some(unreported) = self.may_report() else {
            return;
        };
        warn!(exercise_id = %self.id(), %command, %why, unreported, "control command refused");
        let why = with_unreported(why, unreported);
        self.journal.write(JournalEntry::Control(ControlRow {
            id: 0,
            exercise_id: self.id().to_string(),
            at_wall_ms: wall_ms(OffsetDateTime::now_utc()),
            command: command.to_string(),
            reason,
            source: "mqtt".into(),
            accepted: false,
            message: Some(why.clone()),
            exercise_secs: Some(i64::from(self.engine.exercise_time(Instant::now()).get())),
        }));
        let mut status = self.status_now("command_refused");
        status.command = Some(command.to_string());
        status.message = Some(why);
        self.publish_status(&status);
    }

    /// Whether a refused or invalid control message may be reported one by
    /// one (log line, status message, audit row): no more often than
    /// commands are accepted, so a flood costs neither memory nor disk.
    /// Beyond that it is counted (`scip_control_reports_suppressed_total`),
    /// and the next report says how many went unreported: Some(that many).
    pub(super) fn may_report(&mut self) -> Option<u64> {
        if self.report_rate.check("reports", Instant::now()).is_ok() {
            Some(std::mem::take(&mut self.unreported))
        } else {
            self.unreported += 1;
            metrics::counter!("scip_control_reports_suppressed_total").increment(1);
            None
        }
    }
}

/// `why`, and how many refused or invalid control messages before it went
/// unreported.
fn with_unreported(why: String, unreported: u64) -> String {
    if unreported == 0 {
        why
    } else {
        format!(
            "{why} ({unreported} more refused or invalid control messages before this one were not reported)"
        )
    }
}
