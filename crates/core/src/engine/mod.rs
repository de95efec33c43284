//! The exercise engine: lifecycle, clock, due-inject index and delivery
//! records of one exercise, driven from outside.
//!
//! It does no I/O and reads no clock. The driver feeds it commands, broker
//! events and the current time ([`Now`]); it answers with [`Output`]s to act on
//! ([`Engine::poll_output`]) and the next instant it wants to be woken
//! ([`Engine::poll_timeout`]).

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::clock::ExerciseClock;
use crate::delivery::{Counts, DeliveryPolicy, DeliveryRecord, DeliveryStatus, Phase};
use crate::domain::{ExerciseSeconds, Speed};
use crate::lifecycle::{Command, Refusal, State};

mod edit;
mod play;
mod types;

pub use edit::{EditError, SeekMode};
pub use types::{
    ArchivedRun, DeliveryTag, Now, Output, Persisted, Plan, Planned, TimerSnapshot, Transition,
};

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
    /// One (team, inject, due, turn) per scenario inject: what every run
    /// starts from.
    plan: Vec<(u32, u32, ExerciseSeconds, u16)>,
    /// Turn-based: the exercise second each turn ends; empty otherwise.
    turn_ends: Vec<u32>,
    /// The turn under way (or just over); 0 before the start.
    turn: u16,
    records: Vec<DeliveryRecord>,
    waiting: VecDeque<usize>,
    retries: BTreeSet<(Instant, usize)>,
    connected: bool,
    outputs: VecDeque<Output>,
    archived: Vec<ArchivedRun>,
    /// When this run started (monotonic and wall).
    started: Option<Now>,
    /// Two-way play per plan slot (expectations, conditions).
    play: Vec<crate::play::SlotPlay>,
    /// Per plan slot, the slots whose condition waits on it.
    dependents: Vec<Vec<usize>>,
    /// Open answer windows: (the exercise second it closes, slot).
    windows: BTreeSet<(u32, usize)>,
}

impl Engine {
    /// An initialized exercise of `plan`, running at `speed`.
    pub fn new(plan: &Plan, speed: Speed, policy: DeliveryPolicy) -> Self {
        let (plan_duration, turn_ends) = (plan.duration, plan.turn_ends.clone());
        let play = plan.play.clone();
        let plan: Vec<_> = plan
            .injects
            .iter()
            .map(|p| (p.team, p.inject, p.due, p.turn))
            .collect();
        let mut order = unconditional(plan.len(), &play);
        // Records are laid out by team then timeline position, so a stable
        // sort by (time, turn) gives (time, turn, team, timeline position).
        order.sort_by_key(|&i| (plan[i].2, plan[i].3));
        Self {
            duration: plan_duration,
            policy,
            state: State::Initialized,
            clock: ExerciseClock::new(speed),
            run: 1,
            order,
            cursor: 0,
            next_tick: 0,
            records: fresh_records(&plan, &play),
            plan,
            turn_ends,
            turn: 0,
            waiting: VecDeque::new(),
            retries: BTreeSet::new(),
            connected: false,
            outputs: VecDeque::new(),
            archived: Vec::new(),
            started: None,
            dependents: Self::dependents_of(&play),
            play,
            windows: BTreeSet::new(),
        }
    }

    /// Rebuilds an exercise after a restart from what was stored. A running
    /// exercise continues at the time it would have reached had the process
    /// never stopped; what came due meanwhile goes out at once (late), what
    /// was confirmed stays confirmed.
    pub fn restore(
        plan: &Plan,
        speed: Speed,
        policy: DeliveryPolicy,
        stored: Persisted,
        now: Now,
    ) -> Self {
        let mut engine = Self::new(plan, speed, policy);
        let mut elapsed = stored
            .elapsed
            .min(Duration::from_secs(engine.duration.into()));
        // Paused at a turn's end: exactly there, whatever the stored clock's
        // millisecond rounding made of it.
        if stored.state == State::Paused
            && stored.turn >= 1
            && let Some(&end) = engine.turn_ends.get(usize::from(stored.turn) - 1)
            && (elapsed.as_secs_f64() - f64::from(end)).abs() < 1.0
        {
            elapsed = Duration::from_secs(end.into());
        }
        engine.state = stored.state;
        engine.run = stored.run;
        engine.turn = stored.turn;
        engine.clock =
            ExerciseClock::restore(speed, elapsed, stored.state == State::Running, now.mono);
        engine.started = stored.started_wall.map(|wall| Now {
            mono: now
                .mono
                .checked_sub(duration_between(wall, now.wall))
                .unwrap_or(now.mono),
            wall,
        });
        engine.records = stored.records;
        engine.restore_play();
        // What waits for its condition is out of the due index until released.
        engine.order = (0..engine.records.len())
            .filter(|&i| {
                !(engine.records[i].play.is_held()
                    && engine.records[i].status == DeliveryStatus::Pending)
            })
            .collect();
        engine
            .order
            .sort_by_key(|&i| (engine.records[i].due, engine.records[i].turn, i));
        let current = if stored.state == State::Initialized {
            None
        } else {
            Some(elapsed.as_secs() as u32)
        };
        engine.next_tick = current.map_or(0, |c| c + 1);
        // A later turn's first injects share the second its turn starts at:
        // they wait for next_turn.
        let turn = engine.turn;
        engine.cursor = engine.order.partition_point(|&i| {
            Some(engine.records[i].due.get()) <= current && engine.records[i].turn <= turn
        });
        for slot in 0..engine.records.len() {
            let record = &mut engine.records[slot];
            record.phase = match record.status {
                DeliveryStatus::Pending if record.play.is_held() => Phase::Held,
                DeliveryStatus::Pending | DeliveryStatus::Retrying => Phase::Scheduled,
                _ => Phase::Done,
            };
            let came_due = current.is_some_and(|c| record.due.get() <= c) && record.turn <= turn;
            if record.phase == Phase::Scheduled && came_due && !stored.state.is_over() {
                // Due while the process was down, or in flight when it died.
                let behind = Duration::from_secs_f64(
                    (elapsed.as_secs_f64() - f64::from(record.due.get())).max(0.0) / speed.get(),
                );
                let due_at = record
                    .due_at
                    .unwrap_or_else(|| now.mono.checked_sub(behind).unwrap_or(now.mono));
                let due_at = now.mono.checked_sub(behind).unwrap_or(due_at);
                engine.fire_at(slot, due_at, now, false);
            }
        }
        engine
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

    /// The turn under way (or just over) and how many there are, in a
    /// turn-based exercise.
    pub fn turn(&self) -> Option<(u16, u16)> {
        (!self.turn_ends.is_empty()).then_some((self.turn, self.turn_ends.len() as u16))
    }

    /// Paused at the end of a turn, waiting for next_turn.
    pub fn between_turns(&self) -> bool {
        self.state == State::Paused
            && self.turn >= 1
            && usize::from(self.turn) < self.turn_ends.len()
            && self.clock.whole_seconds_paused() >= self.turn_ends[usize::from(self.turn) - 1]
            && !self
                .records
                .iter()
                .any(|r| r.turn == self.turn && r.phase == Phase::Scheduled)
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

    /// Some attempt is with the broker, its acknowledgement not yet in: what
    /// a graceful stop waits for, so that it records every confirmation.
    pub fn in_flight(&self) -> bool {
        self.records
            .iter()
            .any(|r| matches!(r.phase, Phase::InFlight(_)))
    }

    /// Applies a controller's command, or refuses it and changes nothing.
    pub fn handle_command(
        &mut self,
        command: Command,
        reason: Option<String>,
        now: Now,
    ) -> Result<Transition, Refusal> {
        let from = self.state;
        self.check_turns(command)?;
        let to = from.apply(command)?;
        let at = self.exercise_time(now.mono);
        match command {
            Command::Start => {
                self.clock.start(now.mono);
                self.started = Some(now);
                if !self.turn_ends.is_empty() {
                    self.turn = 1;
                }
            }
            Command::NextTurn if from == State::Initialized => {
                self.clock.start(now.mono);
                self.started = Some(now);
                self.turn = 1;
            }
            Command::NextTurn => {
                self.clock.resume(now.mono);
                self.turn += 1;
            }
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
        if command == Command::NextTurn && from == State::Paused {
            // The new turn's first injects are due at the second it starts.
            let second = at.get();
            self.fire_through(second, now);
            if self.turn_over(second) {
                self.end_turn(now);
            }
        }
        if self.may_send() {
            self.release_waiting(now);
        }
        self.handle_timeout(now);
        Ok(transition)
    }

    /// What turns allow, beyond what the state does.
    fn check_turns(&self, command: Command) -> Result<(), Refusal> {
        let refuse = |reason| {
            Err(Refusal {
                command,
                state: self.state,
                reason,
            })
        };
        let turn_based = !self.turn_ends.is_empty();
        match command {
            Command::NextTurn if !turn_based => refuse("the exercise is not turn-based"),
            Command::NextTurn
                if self.state == State::Paused
                    && usize::from(self.turn) >= self.turn_ends.len() =>
            {
                refuse("this is the last turn")
            }
            Command::NextTurn if self.state == State::Paused && !self.between_turns() => {
                refuse("the turn is still under way: resume it")
            }
            Command::Resume if self.between_turns() => {
                refuse("the turn is over: next_turn starts the next one")
            }
            _ => Ok(()),
        }
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
                self.fire_through(second.get(), now);
                self.close_windows(second.get(), now);
                self.next_tick += 1;
                if self.turn_over(second.get()) {
                    self.end_turn(now);
                    break;
                }
            }
            if self.state == State::Running && self.next_tick > self.duration {
                self.complete(now);
            }
        }
        if self.may_send() {
            while let Some(&(at, slot)) = self.retries.first() {
                if at > now.mono {
                    break;
                }
                self.retries.pop_first();
                self.attempt(slot, now, false);
            }
        }
    }

    /// Fires the scheduled records due up to exercise second `second`, in
    /// order, except those of a turn not yet started.
    fn fire_through(&mut self, second: u32, now: Now) {
        while let Some(&slot) = self.order.get(self.cursor) {
            let record = &self.records[slot];
            if record.due.get() > second || record.turn > self.turn {
                break;
            }
            self.cursor += 1;
            if record.phase == Phase::Scheduled {
                let due_at = self.clock.deadline(record.due.get()).unwrap_or(now.mono);
                self.fire_at(slot, due_at, now, false);
            }
        }
    }

    /// The turn under way, not the last, has ended at `second`.
    fn turn_over(&self, second: u32) -> bool {
        self.state == State::Running
            && self.turn >= 1
            && usize::from(self.turn) < self.turn_ends.len()
            && second >= self.turn_ends[usize::from(self.turn) - 1]
    }

    /// Pauses at the exact second the turn ended, until next_turn.
    fn end_turn(&mut self, now: Now) {
        let total = self.turn_ends.len();
        let at = self.turn_ends[usize::from(self.turn) - 1];
        self.clock.pause(now.mono);
        self.clock.seek(Duration::from_secs(at.into()), now.mono);
        let from = self.state;
        self.state = State::Paused;
        self.outputs.push_back(Output::StateChanged(Transition {
            from,
            to: State::Paused,
            command: Some(Command::Pause),
            reason: Some(format!(
                "turn {} of {total} is over: next_turn starts turn {}",
                self.turn,
                self.turn + 1
            )),
            at: ExerciseSeconds::new(at),
        }));
        self.outputs.push_back(Output::Timer(self.timer(now.mono)));
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

    /// A team dashboard showed the inject in `slot` at `wall`. Recorded once,
    /// and only for an inject that went out; answers whether it was new.
    pub fn on_received(&mut self, slot: usize, wall: OffsetDateTime) -> bool {
        let Some(record) = self.records.get_mut(slot) else {
            return false;
        };
        if record.received_wall.is_some() || record.published_wall.is_none() {
            return false;
        }
        record.received_wall = Some(wall);
        record.receipt_latency =
            (record.watched == Some(true)).then(|| receipt_latency(record.due_wall, wall));
        true
    }

    /// Whether a dashboard of the team was open when the inject in `slot`
    /// first went out; set once, by the driver, as it publishes.
    pub fn set_watched(&mut self, slot: usize, watched: bool) {
        if let Some(record) = self.records.get_mut(slot) {
            record.watched.get_or_insert(watched);
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
        } else if record.attempts >= u32::from(max_attempts) {
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

    /// When this run started, if it has.
    pub fn started(&self) -> Option<Now> {
        self.started
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
            if record.is_outstanding() || matches!(record.phase, Phase::Scheduled | Phase::Held) {
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
    /// Whether the engine holds the broker (and, on several nodes, the
    /// node's lease) for reachable: what [`Self::set_connected`] last said.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    fn may_send(&self) -> bool {
        self.connected && matches!(self.state, State::Running | State::Completed)
    }

    /// Record `slot` came due at `due_at`: send it (or hold it).
    fn fire_at(&mut self, slot: usize, due_at: Instant, now: Now, force: bool) {
        let record = &mut self.records[slot];
        record.due_at = Some(due_at);
        record.due_wall = Some(now.wall_at(due_at));
        self.attempt(slot, now, force);
    }

    /// One attempt now, unless the broker is away or the exercise paused
    /// (`force` sends while paused: a controller asked for it explicitly).
    fn attempt(&mut self, slot: usize, now: Now, force: bool) {
        let allowed = self.may_send() || (force && self.connected && self.state == State::Paused);
        if !allowed {
            let record = &mut self.records[slot];
            record.phase = Phase::Waiting;
            if !self.connected {
                record.last_error = Some("waiting for the broker".to_owned());
            }
            self.waiting.push_back(slot);
            return;
        }
        let at = self.exercise_time(now.mono).max(self.records[slot].due);
        let record = &mut self.records[slot];
        record.attempts += 1;
        // The ticket carries 16 bits of the attempt. MAX_RETRY_ATTEMPTS fits
        // them; a count restored beyond it saturates, in the phase too, so
        // the ticket's report is still matched to the attempt in flight.
        let attempt = u16::try_from(record.attempts).unwrap_or(u16::MAX);
        record.phase = Phase::InFlight(u32::from(attempt));
        let first = record.published_wall.is_none();
        record.published_wall = Some(now.wall);
        record.published_at = Some(at);
        if first {
            self.open_window(slot, at.get());
        }
        self.outputs.push_back(Output::Deliver(DeliveryTag {
            run: self.run,
            slot: slot as u32,
            attempt,
        }));
    }

    fn release_waiting(&mut self, now: Now) {
        while let Some(slot) = self.waiting.pop_front() {
            self.attempt(slot, now, false);
        }
    }

    fn complete(&mut self, now: Now) {
        let from = self.state;
        self.state = State::Completed;
        // Windows that closed by the end (a restart past it ran no tick
        // for them) settle first: their fallbacks go out, late.
        self.close_windows(self.duration, now);
        self.end_play();
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
        self.windows.clear();
        for record in &mut self.records {
            if matches!(
                record.phase,
                Phase::Scheduled | Phase::Held | Phase::Waiting | Phase::RetryAt(_)
            ) {
                record.status = DeliveryStatus::Cancelled;
                record.phase = Phase::Done;
            }
        }
    }

    fn reset(&mut self) {
        let records = std::mem::replace(&mut self.records, fresh_records(&self.plan, &self.play));
        // Injects added or moved by controllers belonged to the old run.
        self.order = unconditional(self.plan.len(), &self.play);
        self.order
            .sort_by_key(|&i| (self.plan[i].2, self.plan[i].3));
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
        self.windows.clear();
        self.started = None;
        self.turn = 0;
    }
}

/// The slots of a plan of `len` that are due without a condition: what
/// starts in the due index (a conditional slot enters it when released).
fn unconditional(len: usize, play: &[crate::play::SlotPlay]) -> Vec<usize> {
    (0..len)
        .filter(|&i| play.get(i).is_none_or(|p| p.when.is_none()))
        .collect()
}

fn fresh_records(
    plan: &[(u32, u32, ExerciseSeconds, u16)],
    play: &[crate::play::SlotPlay],
) -> Vec<DeliveryRecord> {
    plan.iter()
        .enumerate()
        .map(|(slot, &(team, inject, due, turn))| {
            let mut record = DeliveryRecord::new(team as usize, inject as usize, due);
            record.turn = turn;
            record.play = Engine::fresh_play(play, slot);
            if record.play.is_held() {
                record.phase = Phase::Held;
            }
            record
        })
        .collect()
}

fn duration_between(earlier: OffsetDateTime, later: OffsetDateTime) -> Duration {
    let d = later - earlier;
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// Shown minus due; zero when the due time is unknown or the clocks disagree.
pub fn receipt_latency(due_wall: Option<OffsetDateTime>, shown: OffsetDateTime) -> Duration {
    due_wall
        .and_then(|due| Duration::try_from(shown - due).ok())
        .unwrap_or_default()
}
