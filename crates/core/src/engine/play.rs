//! Two-way play in the engine (SPEC section 9): a team's answers give
//! outcomes, answer windows close on the exercise clock (so a pause holds
//! them), and conditional injects wait, held out of the due index, until
//! their condition holds (then they are scheduled) or can no longer hold
//! (then they are skipped, and so is whatever waited on them).

use super::*;
use crate::play::{
    Answer, Answered, Condition, Gate, Outcome, OutcomeMatch, PlayError, PlayState, Skip, SlotPlay,
    Trigger,
};

/// Whether a condition holds, given the inject it waits on.
enum Verdict {
    Holds,
    Never(Skip),
    Undecided,
}

impl Engine {
    /// The play state a fresh record of `slot` starts with: an outcome
    /// pending for an inject that expects an answer, held for a
    /// conditional one.
    pub(super) fn fresh_play(play: &[SlotPlay], slot: usize) -> PlayState {
        let Some(p) = play.get(slot) else {
            return PlayState::default();
        };
        PlayState {
            outcome: p.expect.as_ref().map(|_| Outcome::Pending),
            window_end: None,
            answer: None,
            gate: p.when.as_ref().map(|_| Gate::Held),
        }
    }

    /// Which slots wait on each slot's outcome.
    pub(super) fn dependents_of(play: &[SlotPlay]) -> Vec<Vec<usize>> {
        let mut dependents = vec![Vec::new(); play.len()];
        for (slot, p) in play.iter().enumerate() {
            if let Some(Condition {
                trigger: Trigger::After { slot: after, .. },
                ..
            }) = &p.when
                && let Some(list) = dependents.get_mut(*after)
            {
                list.push(slot);
            }
        }
        dependents
    }

    /// The condition of `slot`, if it has one.
    pub fn condition(&self, slot: usize) -> Option<&Condition> {
        self.play.get(slot).and_then(|p| p.when.as_ref())
    }

    /// Whether some inject of this run waits for decision `name`.
    pub fn awaits_decision(&self, name: &str) -> bool {
        self.held_for(name, None).next().is_some()
    }

    fn held_for<'a>(
        &'a self,
        name: &'a str,
        teams: Option<&'a [usize]>,
    ) -> impl Iterator<Item = usize> + 'a {
        (0..self.records.len()).filter(move |&slot| {
            let record = &self.records[slot];
            record.play.is_held()
                && teams.is_none_or(|t| t.contains(&record.team))
                && matches!(
                    self.condition(slot),
                    Some(Condition { trigger: Trigger::Decision(n), .. }) if n == name
                )
        })
    }

    /// A team answered the inject of `slot` (with `choice`, for a choice).
    /// The first answer decides the outcome; a later one is an edit.
    pub fn answer(
        &mut self,
        slot: usize,
        choice: Option<String>,
        now: Now,
    ) -> Result<Answered, PlayError> {
        self.check_playing()?;
        let record = self
            .records
            .get(slot)
            .ok_or(PlayError::UnknownDelivery(slot))?;
        if record.published_wall.is_none() {
            return Err(PlayError::NotSent);
        }
        let at = self.exercise_time(now.mono).get();
        if record.play.answer.is_some() {
            return Ok(Answered {
                edit: true,
                at,
                outcome: record.play.outcome,
            });
        }
        let expect = self.play.get(slot).and_then(|p| p.expect.clone());
        let record = &mut self.records[slot];
        if let (Some(expect), Some(outcome)) = (expect, record.play.outcome) {
            let closed =
                outcome == Outcome::Missed || record.play.window_end.is_some_and(|end| at >= end);
            let new = if closed {
                Outcome::Late
            } else if expect.choice.is_some() && expect.choice != choice {
                Outcome::Wrong
            } else {
                Outcome::Met
            };
            record.play.outcome = Some(new);
            self.windows
                .remove(&(record.play.window_end.unwrap_or(0), slot));
        }
        let record = &mut self.records[slot];
        record.play.answer = Some(Answer { at, choice });
        let outcome = record.play.outcome;
        self.outputs.push_back(Output::Played { slot });
        self.settle(slot, at, now);
        Ok(Answered {
            edit: false,
            at,
            outcome,
        })
    }

    /// A controller decided `name` for `teams` (every team when None):
    /// the injects waiting for it are scheduled. Returns their slots; none
    /// when it was decided before.
    pub fn decide(
        &mut self,
        name: &str,
        teams: Option<&[usize]>,
        now: Now,
    ) -> Result<Vec<usize>, PlayError> {
        self.check_playing()?;
        let known = self.play.iter().any(|p| {
            matches!(&p.when, Some(Condition { trigger: Trigger::Decision(n), .. }) if n == name)
        });
        if !known {
            return Err(PlayError::UnknownDecision(name.to_owned()));
        }
        let at = self.exercise_time(now.mono).get();
        let slots: Vec<usize> = self.held_for(name, teams).collect();
        for &slot in &slots {
            if !self.release(slot, at, now) {
                self.settle(slot, at, now);
            }
        }
        Ok(slots)
    }

    fn check_playing(&self) -> Result<(), PlayError> {
        match self.state {
            State::Initialized => Err(PlayError::NotStarted),
            s if s.is_over() => Err(PlayError::Over(s)),
            _ => Ok(()),
        }
    }

    /// The record of `slot` went out for the first time at exercise second
    /// `at`: its answer window opens.
    pub(super) fn open_window(&mut self, slot: usize, at: u32) {
        let Some(within) = self
            .play
            .get(slot)
            .and_then(|p| p.expect.as_ref())
            .and_then(|e| e.within)
        else {
            return;
        };
        let record = &mut self.records[slot];
        if record.play.window_end.is_some() || record.play.outcome != Some(Outcome::Pending) {
            return;
        }
        let end = at.saturating_add(within);
        record.play.window_end = Some(end);
        self.windows.insert((end, slot));
        self.outputs.push_back(Output::Played { slot });
    }

    /// Exercise second `second` has come: windows closing by then without
    /// an answer are missed.
    pub(super) fn close_windows(&mut self, second: u32, now: Now) {
        while let Some(&(end, slot)) = self.windows.first() {
            if end > second {
                break;
            }
            self.windows.pop_first();
            let record = &mut self.records[slot];
            if record.play.outcome == Some(Outcome::Pending) {
                record.play.outcome = Some(Outcome::Missed);
                self.outputs.push_back(Output::Played { slot });
                self.settle(slot, end, now);
            }
        }
    }

    /// The outcome, answer or fate of `slot` changed at exercise second
    /// `at`: every inject waiting on it is released or skipped, and so on
    /// down the chain.
    pub(super) fn settle(&mut self, slot: usize, at: u32, now: Now) {
        let mut work = vec![slot];
        while let Some(after) = work.pop() {
            let waiting = self.dependents.get(after).cloned().unwrap_or_default();
            for dependent in waiting {
                if !self.records[dependent].play.is_held() {
                    continue;
                }
                let Some(Condition {
                    trigger: Trigger::After { on, .. },
                    ..
                }) = self.condition(dependent)
                else {
                    continue;
                };
                match self.verdict(on, after) {
                    Verdict::Holds => {
                        if !self.release(dependent, at, now) {
                            work.push(dependent);
                        }
                    }
                    Verdict::Never(reason) => {
                        self.skip(dependent, reason);
                        work.push(dependent);
                    }
                    Verdict::Undecided => {}
                }
            }
        }
    }

    fn verdict(&self, on: &OutcomeMatch, after: usize) -> Verdict {
        let record = &self.records[after];
        let unsent = matches!(record.play.gate, Some(Gate::Skipped { .. }))
            || matches!(
                record.status,
                DeliveryStatus::Cancelled | DeliveryStatus::Skipped
            );
        if unsent {
            return Verdict::Never(Skip::NotSent { after });
        }
        match on {
            OutcomeMatch::Choice(wanted) => match &record.play.answer {
                Some(a) if a.choice.as_ref() == Some(wanted) => Verdict::Holds,
                Some(a) => Verdict::Never(Skip::Choice {
                    after,
                    choice: a.choice.clone(),
                }),
                None => Verdict::Undecided,
            },
            OutcomeMatch::Outcome(wanted) => match record.play.outcome {
                None | Some(Outcome::Pending) => Verdict::Undecided,
                Some(o) if o == *wanted => Verdict::Holds,
                // A late answer came after the window was missed.
                Some(Outcome::Late) if *wanted == Outcome::Missed => Verdict::Holds,
                // A missed answer may still come, late.
                Some(Outcome::Missed) if *wanted == Outcome::Late => Verdict::Undecided,
                Some(outcome) => Verdict::Never(Skip::Outcome { after, outcome }),
            },
        }
    }

    /// The condition of held `slot` held at exercise second `at`: it is due
    /// `delay` seconds later, and never before its own time. False when
    /// that is after the end: then it is skipped instead.
    fn release(&mut self, slot: usize, at: u32, now: Now) -> bool {
        let delay = self.condition(slot).map_or(0, |c| c.delay);
        let due = self.records[slot].due.get().max(at.saturating_add(delay));
        if due > self.duration {
            self.skip(slot, Skip::AfterEnd { at });
            return false;
        }
        let record = &mut self.records[slot];
        record.play.gate = Some(Gate::Released { at, due });
        record.due = ExerciseSeconds::new(due);
        record.phase = Phase::Scheduled;
        self.outputs.push_back(Output::Played { slot });
        if self.state != State::Initialized && due <= self.exercise_time(now.mono).get() {
            // Due this very second: now, not at the next tick.
            self.fire_at(slot, now.mono, now, false);
        } else {
            self.schedule(slot, now);
        }
        true
    }

    fn skip(&mut self, slot: usize, reason: Skip) {
        let record = &mut self.records[slot];
        record.play.gate = Some(Gate::Skipped { reason });
        // Never sent: no outcome to have.
        record.play.outcome = None;
        record.status = DeliveryStatus::Skipped;
        record.phase = Phase::Done;
        self.outputs.push_back(Output::Played { slot });
    }

    /// The exercise completed: an outcome still pending is missed (none
    /// for what never went out), and what still waits for its condition
    /// is skipped.
    pub(super) fn end_play(&mut self) {
        self.windows.clear();
        for slot in 0..self.records.len() {
            let record = &mut self.records[slot];
            if record.play.outcome == Some(Outcome::Pending) {
                record.play.outcome = record.published_wall.is_some().then_some(Outcome::Missed);
                self.outputs.push_back(Output::Played { slot });
            }
            if record.play.is_held() {
                self.skip(slot, Skip::Ended);
            }
        }
    }

    /// After a restore, before the due index is built: the open windows,
    /// and the due second of each released record.
    pub(super) fn restore_play(&mut self) {
        self.windows.clear();
        for (slot, record) in self.records.iter_mut().enumerate() {
            if record.play.is_empty() && record.status == DeliveryStatus::Pending {
                // Stored without its play state: as the plan starts it.
                record.play = Self::fresh_play(&self.play, slot);
            }
            if record.play.outcome == Some(Outcome::Pending)
                && let Some(end) = record.play.window_end
            {
                self.windows.insert((end, slot));
            }
            if let Some(Gate::Released { due, .. }) = &record.play.gate {
                record.due = ExerciseSeconds::new(*due);
            }
        }
    }
}
