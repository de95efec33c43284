//! A controller's edits of a running exercise: retry, cancel, reschedule,
//! add, seek. Each fits or changes nothing.

use super::*;

/// How the passed-over injects of a seek are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekMode {
    /// Sent at once, in order.
    Deliver,
    /// Recorded as skipped, never sent.
    Skip,
}

/// A controller's edit that does not fit; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("no delivery {0} in this run")]
    UnknownDelivery(usize),
    #[error("delivery {slot} is {status}, not {expected}")]
    WrongStatus {
        slot: usize,
        status: &'static str,
        expected: &'static str,
    },
    #[error("{0} is after the end of the exercise ({1})")]
    AfterEnd(ExerciseSeconds, ExerciseSeconds),
    #[error("{0} has already passed (the exercise is at {1})")]
    Passed(ExerciseSeconds, ExerciseSeconds),
    #[error("seek needs a paused exercise; it is {0}")]
    NotPaused(State),
    #[error("the exercise is {0}: reset it first")]
    Over(State),
    #[error("seek only moves forward: the exercise is at {1}, not before {0}")]
    Backward(ExerciseSeconds, ExerciseSeconds),
    #[error("a turn-based exercise moves on by turns: next_turn starts the next one")]
    TurnBased,
}

impl Engine {
    /// Sends a failed delivery again, its attempt count started afresh.
    pub fn retry(&mut self, slot: usize, now: Now) -> Result<(), EditError> {
        self.check_not_over()?;
        let record = self.existing(slot)?;
        if record.status != DeliveryStatus::Failed {
            return Err(wrong_status(slot, record.status, "failed"));
        }
        let record = &mut self.records[slot];
        record.attempts = 0;
        record.status = DeliveryStatus::Retrying;
        self.attempt(slot, now, false);
        Ok(())
    }

    /// Retries every failed delivery; returns how many.
    pub fn retry_all_failed(&mut self, now: Now) -> Result<usize, EditError> {
        self.check_not_over()?;
        let failed: Vec<usize> = (0..self.records.len())
            .filter(|&s| self.records[s].status == DeliveryStatus::Failed)
            .collect();
        for &slot in &failed {
            self.retry(slot, now)?;
        }
        Ok(failed.len())
    }

    /// Cancels a delivery that is not yet due (or still waits for its
    /// condition: what waited on it is skipped in turn).
    pub fn cancel(&mut self, slot: usize, now: Now) -> Result<(), EditError> {
        let record = self.existing(slot)?;
        if !matches!(record.phase, Phase::Scheduled | Phase::Held) {
            return Err(wrong_status(slot, record.status, "pending and not yet due"));
        }
        let record = &mut self.records[slot];
        record.status = DeliveryStatus::Cancelled;
        record.phase = Phase::Done;
        record.last_error = Some("cancelled by a controller".to_owned());
        if record.play.outcome == Some(crate::play::Outcome::Pending) {
            record.play.outcome = None;
        }
        // What waits on it will never see it: skipped in turn.
        let at = self.exercise_time(now.mono).get();
        self.settle(slot, at, now);
        Ok(())
    }

    /// Moves a delivery that is not yet due to exercise second `to`, which
    /// must not have passed.
    pub fn reschedule(
        &mut self,
        slot: usize,
        to: ExerciseSeconds,
        now: Now,
    ) -> Result<(), EditError> {
        self.check_not_over()?;
        let record = self.existing(slot)?;
        if record.phase != Phase::Scheduled {
            return Err(wrong_status(slot, record.status, "pending and not yet due"));
        }
        self.check_future(to, now)?;
        if let Some(pos) = self.order[self.cursor..].iter().position(|&s| s == slot) {
            self.order.remove(self.cursor + pos);
        }
        self.records[slot].due = to;
        self.schedule(slot, now);
        Ok(())
    }

    /// Adds a delivery for `team` (its inject identified by the caller as
    /// `inject`), due at `at` or now; returns its slot.
    pub fn add(
        &mut self,
        team: usize,
        inject: usize,
        at: Option<ExerciseSeconds>,
        now: Now,
    ) -> Result<usize, EditError> {
        self.check_not_over()?;
        let current = self.exercise_time(now.mono);
        let due = match at {
            Some(at) => {
                self.check_future(at, now)?;
                at
            }
            None => current,
        };
        let slot = self.records.len();
        self.records.push(DeliveryRecord::new(team, inject, due));
        if at.is_none() && self.state != State::Initialized {
            // Now: due at this instant, not at the start of the current second.
            self.fire_at(slot, now.mono, now, true);
        } else {
            self.schedule(slot, now);
        }
        Ok(slot)
    }

    /// Jumps a paused exercise forward to `to`; what it passes over is sent
    /// at once or recorded as skipped.
    pub fn seek(
        &mut self,
        to: ExerciseSeconds,
        mode: SeekMode,
        now: Now,
    ) -> Result<usize, EditError> {
        if !self.turn_ends.is_empty() {
            return Err(EditError::TurnBased);
        }
        if self.state != State::Paused {
            return Err(EditError::NotPaused(self.state));
        }
        let current = self.exercise_time(now.mono);
        if to > self.duration() {
            return Err(EditError::AfterEnd(to, self.duration()));
        }
        if to <= current {
            return Err(EditError::Backward(to, current));
        }
        let passed_end =
            self.cursor + self.order[self.cursor..].partition_point(|&s| self.records[s].due < to);
        let passed: Vec<usize> = self.order[self.cursor..passed_end]
            .iter()
            .copied()
            .filter(|&s| self.records[s].phase == Phase::Scheduled)
            .collect();
        self.cursor = passed_end;
        // The clock moves first: what goes out now goes out at `to`, and
        // an answer window opens there.
        self.clock
            .seek(Duration::from_secs(to.get().into()), now.mono);
        for &slot in &passed {
            match mode {
                SeekMode::Deliver => self.fire_at(slot, now.mono, now, true),
                SeekMode::Skip => {
                    let record = &mut self.records[slot];
                    record.status = DeliveryStatus::Skipped;
                    record.phase = Phase::Done;
                    if record.play.outcome == Some(crate::play::Outcome::Pending) {
                        record.play.outcome = None;
                    }
                    self.settle(slot, to.get(), now);
                }
            }
        }
        if mode == SeekMode::Deliver {
            // Sent as the clock jumps: at the second it jumps to.
            for &slot in &passed {
                if let Some(at) = self.records[slot].published_at.as_mut() {
                    *at = (*at).max(to);
                }
            }
        }
        self.next_tick = to.get();
        self.outputs.push_back(Output::Timer(self.timer(now.mono)));
        Ok(passed.len())
    }

    fn existing(&self, slot: usize) -> Result<&DeliveryRecord, EditError> {
        self.records
            .get(slot)
            .ok_or(EditError::UnknownDelivery(slot))
    }

    fn check_not_over(&self) -> Result<(), EditError> {
        if self.state.is_over() {
            return Err(EditError::Over(self.state));
        }
        Ok(())
    }

    /// `to` must be within the exercise and not before the current second.
    fn check_future(&self, to: ExerciseSeconds, now: Now) -> Result<(), EditError> {
        if to > self.duration() {
            return Err(EditError::AfterEnd(to, self.duration()));
        }
        let current = self.exercise_time(now.mono);
        if self.state != State::Initialized && to.get() < self.next_tick {
            return Err(EditError::Passed(to, current));
        }
        Ok(())
    }

    /// Puts a scheduled record into the due index.
    pub(super) fn schedule(&mut self, slot: usize, _now: Now) {
        let due = self.records[slot].due;
        let pos = self.cursor
            + self.order[self.cursor..]
                .partition_point(|&s| (self.records[s].due, s) <= (due, slot));
        self.order.insert(pos, slot);
    }
}

fn wrong_status(slot: usize, status: DeliveryStatus, expected: &'static str) -> EditError {
    EditError::WrongStatus {
        slot,
        status: status.as_str(),
        expected,
    }
}
