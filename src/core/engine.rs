//! The exercise engine: lifecycle, clock, due-inject index and delivery
//! records of one exercise, driven from outside.
//!
//! It does no I/O and reads no clock. The driver feeds it commands, broker
//! events and the current time ([`Now`]); it answers with [`Output`]s to act on
//! ([`Engine::poll_output`]) and the next instant it wants to be woken
//! ([`Engine::poll_timeout`]).

use std::collections::{BTreeSet, VecDeque};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::config::DeliveryPolicy;
use crate::core::clock::ExerciseClock;
use crate::core::delivery::{Counts, DeliveryRecord, DeliveryStatus, Phase};
use crate::core::lifecycle::{Command, Refusal, State};
use crate::domain::ExerciseSeconds;
use crate::scenario::Scenario;

/// The current time, monotonic and wall, as the driver read it.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall: OffsetDateTime,
}

impl Now {
    /// The wall time of an earlier (or later) monotonic instant.
    pub fn wall_at(&self, at: Instant) -> OffsetDateTime {
        if at <= self.mono {
            self.wall - (self.mono - at)
        } else {
            self.wall + (at - self.mono)
        }
    }
}

/// Identifies one publish attempt of one record of one run. Packs into a u64
/// so the MQTT layer can carry it opaquely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryTag {
    pub run: u16,
    pub slot: u32,
    pub attempt: u16,
}

impl DeliveryTag {
    pub fn to_u64(self) -> u64 {
        (u64::from(self.run) << 48) | (u64::from(self.slot) << 16) | u64::from(self.attempt)
    }

    pub fn from_u64(raw: u64) -> Self {
        Self {
            run: (raw >> 48) as u16,
            slot: (raw >> 16) as u32,
            attempt: raw as u16,
        }
    }
}

/// The clock as timer messages show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerSnapshot {
    pub current: ExerciseSeconds,
    pub total: ExerciseSeconds,
    pub state: State,
}

/// A change of lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    /// None when the clock itself completed the exercise.
    pub command: Option<Command>,
    pub reason: Option<String>,
    pub at: ExerciseSeconds,
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Publish a timer message.
    Timer(TimerSnapshot),
    /// Publish the inject of record `tag.slot` to its team's feed.
    Deliver(DeliveryTag),
    /// Announce a lifecycle change (status, control, timer).
    StateChanged(Transition),
    /// Record `slot` failed its last attempt.
    DeliveryFailed { slot: usize },
}

/// A finished run, kept after a reset.
#[derive(Debug, Clone)]
pub struct ArchivedRun {
    pub run: u16,
    pub records: Vec<DeliveryRecord>,
}

/// One exercise.
#[derive(Debug)]
pub struct Engine {
    duration: u32,
    policy: DeliveryPolicy,
    state: State,
    clock: ExerciseClock,
    run: u16,
    /// Record indices in delivery order: (time, team, timeline position).
    order: Vec<usize>,
    /// Next position in `order` not yet due.
    cursor: usize,
    /// Next whole second to announce on the timer.
    next_tick: u32,
    /// One per (team, inject); the template for every run.
    template: Vec<DeliveryRecord>,
    records: Vec<DeliveryRecord>,
    waiting: VecDeque<usize>,
    retries: BTreeSet<(Instant, usize)>,
    connected: bool,
    outputs: VecDeque<Output>,
    archived: Vec<ArchivedRun>,
}

impl Engine {
    /// An initialized exercise for `scenario`, running at `speed`.
    pub fn new(scenario: &Scenario, speed: f64, policy: DeliveryPolicy) -> Self {
        let mut template = Vec::new();
        for (team, t) in scenario.teams.iter().enumerate() {
            for (inject, i) in t.timeline.injects.iter().enumerate() {
                template.push(DeliveryRecord::new(team, inject, i.time));
            }
        }
        let mut order: Vec<usize> = (0..template.len()).collect();
        // Records are laid out by team then timeline position, so a stable
        // sort by time gives (time, team, timeline position).
        order.sort_by_key(|&i| template[i].due);
        Self {
            duration: scenario.duration.get(),
            policy,
            state: State::Initialized,
            clock: ExerciseClock::new(speed),
            run: 1,
            order,
            cursor: 0,
            next_tick: 0,
            records: template.clone(),
            template,
            waiting: VecDeque::new(),
            retries: BTreeSet::new(),
            connected: false,
            outputs: VecDeque::new(),
            archived: Vec::new(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn run(&self) -> u16 {
        self.run
    }

    pub fn duration(&self) -> ExerciseSeconds {
        ExerciseSeconds::new(self.duration)
    }

    pub fn clock(&self) -> &ExerciseClock {
        &self.clock
    }

    pub fn records(&self) -> &[DeliveryRecord] {
        &self.records
    }

    pub fn archived(&self) -> &[ArchivedRun] {
        &self.archived
    }

    pub fn counts(&self) -> Counts {
        Counts::of(&self.records)
    }

    /// Exercise time at `now`, in whole seconds, capped at the duration.
    pub fn exercise_time(&self, now: Instant) -> ExerciseSeconds {
        ExerciseSeconds::new(self.clock.whole_seconds(now).min(self.duration))
    }

    pub fn timer(&self, now: Instant) -> TimerSnapshot {
        TimerSnapshot {
            current: self.exercise_time(now),
            total: self.duration(),
            state: self.state,
        }
    }

    /// Nothing left to send or confirm in this run: every due record is
    /// delivered, failed or cancelled.
    pub fn is_settled(&self) -> bool {
        self.waiting.is_empty()
            && self.retries.is_empty()
            && !self.records.iter().any(|r| r.is_outstanding())
    }

    /// Applies a controller's command, or refuses it and changes nothing.
    pub fn handle_command(
        &mut self,
        command: Command,
        reason: Option<String>,
        now: Now,
    ) -> Result<Transition, Refusal> {
        let from = self.state;
        let to = from.apply(command)?;
        let at = self.exercise_time(now.mono);
        match command {
            Command::Start => self.clock.start(now.mono),
            Command::Pause => self.clock.pause(now.mono),
            Command::Resume => self.clock.resume(now.mono),
            Command::Stop => {
                self.clock.pause(now.mono);
                self.cancel_unsent();
            }
            Command::Reset => self.reset(),
        }
        self.state = to;
        let transition = Transition {
            from,
            to,
            command: Some(command),
            reason,
            at: if command == Command::Reset {
                ExerciseSeconds::ZERO
            } else {
                at
            },
        };
        self.outputs
            .push_back(Output::StateChanged(transition.clone()));
        self.outputs.push_back(Output::Timer(self.timer(now.mono)));
        if self.may_send() {
            self.release_waiting(now);
        }
        self.handle_timeout(now);
        Ok(transition)
    }

    /// The broker connection came up or went down.
    pub fn set_connected(&mut self, connected: bool, now: Now) {
        self.connected = connected;
        if self.may_send() {
            self.release_waiting(now);
        }
    }

    /// The earliest instant at which [`Self::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tick = if self.state == State::Running && self.next_tick <= self.duration {
            self.clock.deadline(self.next_tick)
        } else {
            None
        };
        let retry = if self.may_send() {
            self.retries.first().map(|&(at, _)| at)
        } else {
            None
        };
        match (tick, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires every timer tick, due inject and retry up to `now`, and completes
    /// the exercise when the clock reaches its end.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.state == State::Running {
            while self.next_tick <= self.duration {
                match self.clock.deadline(self.next_tick) {
                    Some(deadline) if deadline <= now.mono => {}
                    _ => break,
                }
                let second = ExerciseSeconds::new(self.next_tick);
                self.outputs.push_back(Output::Timer(TimerSnapshot {
                    current: second,
                    total: self.duration(),
                    state: self.state,
                }));
                while let Some(&slot) = self.order.get(self.cursor) {
                    if self.records[slot].due != second {
                        break;
                    }
                    self.cursor += 1;
                    self.fire(slot, now);
                }
                self.next_tick += 1;
            }
            if self.next_tick > self.duration {
                self.complete(now);
            }
        }
        if self.may_send() {
            while let Some(&(at, slot)) = self.retries.first() {
                if at > now.mono {
                    break;
                }
                self.retries.pop_first();
                self.attempt(slot, now);
            }
        }
    }

    /// The broker acknowledged attempt `tag` (or wrote it, at QoS 0).
    pub fn on_acked(&mut self, tag: DeliveryTag, now: Now) {
        let Some(record) = self.record_mut(tag) else {
            return;
        };
        if record.status == DeliveryStatus::Delivered {
            return;
        }
        if let Phase::RetryAt(at) = record.phase {
            // A late acknowledgement of an earlier attempt: it did arrive.
            self.retries.remove(&(at, tag.slot as usize));
        }
        let record = &mut self.records[tag.slot as usize];
        let latency = record
            .due_at
            .map(|due| now.mono.saturating_duration_since(due))
            .unwrap_or_default();
        record.acked_at = Some(now.mono);
        record.acked_wall = Some(now.wall);
        record.latency = Some(latency);
        record.late = latency > self.policy.late_after;
        record.status = DeliveryStatus::Delivered;
        record.phase = Phase::Done;
        if let Some(pos) = self.waiting.iter().position(|&s| s == tag.slot as usize) {
            self.waiting.remove(pos);
        }
    }

    /// Attempt `tag` failed: retry it later, or give up after the last attempt.
    pub fn on_failed(&mut self, tag: DeliveryTag, error: &str, now: Now) {
        let max_attempts = self.policy.max_attempts;
        let retry_delay = self.policy.retry_delay;
        let stopped = self.state == State::Stopped;
        let Some(record) = self.record_mut(tag) else {
            return;
        };
        // Only the attempt in flight counts; a stale report changes nothing.
        if record.phase != Phase::InFlight(u32::from(tag.attempt)) {
            return;
        }
        record.last_error = Some(error.to_owned());
        if stopped {
            record.status = DeliveryStatus::Cancelled;
            record.phase = Phase::Done;
        } else if record.attempts >= max_attempts {
            record.status = DeliveryStatus::Failed;
            record.phase = Phase::Done;
            self.outputs.push_back(Output::DeliveryFailed {
                slot: tag.slot as usize,
            });
        } else {
            let at = now.mono + retry_delay;
            record.status = DeliveryStatus::Retrying;
            record.phase = Phase::RetryAt(at);
            self.retries.insert((at, tag.slot as usize));
        }
    }

    /// Gives up on everything not yet delivered, failed or cancelled (at
    /// shutdown, when waiting longer is not an option): cancelled, with `why`.
    pub fn abandon(&mut self, why: &str) {
        self.waiting.clear();
        self.retries.clear();
        for record in &mut self.records {
            if record.is_outstanding() {
                record.last_error = Some(why.to_owned());
            }
            if record.is_outstanding() || record.phase == Phase::Scheduled {
                record.status = DeliveryStatus::Cancelled;
                record.phase = Phase::Done;
            }
        }
    }

    /// The next thing the driver must do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn record_mut(&mut self, tag: DeliveryTag) -> Option<&mut DeliveryRecord> {
        if tag.run != self.run {
            return None;
        }
        self.records.get_mut(tag.slot as usize)
    }

    /// Deliveries go out while running, and after completion to finish what
    /// was due; never while paused, stopped or before the start.
    fn may_send(&self) -> bool {
        self.connected && matches!(self.state, State::Running | State::Completed)
    }

    fn fire(&mut self, slot: usize, now: Now) {
        let due_at = self
            .clock
            .deadline(self.records[slot].due.get())
            .unwrap_or(now.mono);
        let record = &mut self.records[slot];
        record.due_at = Some(due_at);
        record.due_wall = Some(now.wall_at(due_at));
        self.attempt(slot, now);
    }

    fn attempt(&mut self, slot: usize, now: Now) {
        if !self.may_send() {
            let record = &mut self.records[slot];
            record.phase = Phase::Waiting;
            if !self.connected {
                record.last_error = Some("waiting for the broker".to_owned());
            }
            self.waiting.push_back(slot);
            return;
        }
        let record = &mut self.records[slot];
        record.attempts += 1;
        record.phase = Phase::InFlight(record.attempts);
        record.published_wall = Some(now.wall);
        self.outputs.push_back(Output::Deliver(DeliveryTag {
            run: self.run,
            slot: slot as u32,
            attempt: record.attempts as u16,
        }));
    }

    fn release_waiting(&mut self, now: Now) {
        while let Some(slot) = self.waiting.pop_front() {
            self.attempt(slot, now);
        }
    }

    fn complete(&mut self, now: Now) {
        let from = self.state;
        self.state = State::Completed;
        self.outputs.push_back(Output::StateChanged(Transition {
            from,
            to: State::Completed,
            command: None,
            reason: None,
            at: self.duration(),
        }));
        self.outputs.push_back(Output::Timer(self.timer(now.mono)));
    }

    /// On stop: whatever was never sent, or waits for a retry, is cancelled.
    /// Attempts in flight keep their chance: an acknowledgement still counts.
    fn cancel_unsent(&mut self) {
        self.waiting.clear();
        self.retries.clear();
        for record in &mut self.records {
            if matches!(
                record.phase,
                Phase::Scheduled | Phase::Waiting | Phase::RetryAt(_)
            ) {
                record.status = DeliveryStatus::Cancelled;
                record.phase = Phase::Done;
            }
        }
    }

    fn reset(&mut self) {
        let records = std::mem::replace(&mut self.records, self.template.clone());
        self.archived.push(ArchivedRun {
            run: self.run,
            records,
        });
        self.run = self.run.wrapping_add(1);
        self.clock.reset();
        self.cursor = 0;
        self.next_tick = 0;
        self.waiting.clear();
        self.retries.clear();
    }
}
