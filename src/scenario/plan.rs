//! A scenario as the engine runs it: its [`Plan`].

use crate::core::{Condition, Plan, Planned, SlotPlay, Trigger};
use crate::scenario::Scenario;
use crate::scenario::play::WhenSpec;

impl Scenario {
    /// Every inject as (team, inject, due, turn), by team then timeline
    /// position, with the exercise's length and its turns' ends.
    pub fn plan(&self) -> Plan {
        let turn_based = self.turns.is_some();
        let injects = self
            .teams
            .iter()
            .enumerate()
            .flat_map(|(team, t)| {
                t.timeline
                    .injects
                    .iter()
                    .enumerate()
                    .map(move |(inject, i)| Planned {
                        team: team as u32,
                        inject: inject as u32,
                        due: self.due(i),
                        turn: if turn_based { i.turn().unwrap_or(1) } else { 0 },
                    })
            })
            .collect();
        Plan {
            duration: self.duration.get(),
            injects,
            turn_ends: self
                .turns
                .as_ref()
                .map_or_else(Vec::new, |t| t.ends.clone()),
            play: self.slot_play(),
        }
    }

    /// Each slot's expectation and condition, a condition naming the slot
    /// of the same team's inject; empty when no inject has either.
    fn slot_play(&self) -> Vec<SlotPlay> {
        let mut base = 0;
        let mut out = Vec::new();
        for team in &self.teams {
            let injects = &team.timeline.injects;
            for inject in injects {
                let play = inject.play();
                let when = play.when.and_then(|when| match when {
                    WhenSpec::After { inject, on, delay } => {
                        let index = injects.iter().position(|i| i.id == inject)?;
                        Some(Condition {
                            trigger: Trigger::After {
                                slot: base + index,
                                on,
                            },
                            delay,
                        })
                    }
                    WhenSpec::Decision { name, delay } => Some(Condition {
                        trigger: Trigger::Decision(name),
                        delay,
                    }),
                });
                out.push(SlotPlay {
                    expect: play.expect,
                    when,
                });
            }
            base += injects.len();
        }
        if out.iter().all(|p| p.expect.is_none() && p.when.is_none()) {
            out.clear();
        }
        out
    }
}

/// Turn-based scenarios through the engine: the turns a scenario file
/// declares, timed and paused as its plan says.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use time::OffsetDateTime;
    use tokio::time::Instant;

    use crate::config::Limits;
    use crate::core::{
        Command, DeliveryPolicy, DeliveryRecord, DeliveryStatus, EditError, Engine, Now, Output,
        Persisted, Plan, Planned, SeekMode, State, Transition,
    };
    use crate::domain::{ExerciseSeconds, Speed};
    use crate::scenario::Scenario;

    fn now() -> Now {
        Now {
            mono: Instant::now(),
            wall: OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    fn policy() -> DeliveryPolicy {
        DeliveryPolicy {
            timeout: Duration::from_secs(5),
            retry_delay: Duration::from_secs(5),
            max_attempts: 3,
            late_after: Duration::from_millis(100),
        }
    }

    /// Two teams sharing a turn-based timeline: turn 1 at +0 and +10, turn 2 at
    /// +0 and +5, turn 3 at +20; no duration given.
    fn turn_based() -> Scenario {
        let inject = |id: &str, turn: u32, time: u32| {
            serde_json::json!({"id": id, "time": time, "turn": turn, "type": "news",
                               "content": {"headline": id}})
        };
        let package = serde_json::json!({
            "turn_based": true,
            "total_turns": 3,
            "teams": [{"id": "blue", "timeline_id": "t"}, {"id": "red", "timeline_id": "t"}],
            "timelines": [{"id": "t", "injects": [
                inject("a", 1, 0), inject("b", 1, 10), inject("c", 2, 0),
                inject("d", 2, 5), inject("e", 3, 20),
            ]}],
        });
        crate::scenario::load_inline(&package, &Limits::default()).unwrap()
    }

    /// Record slots fired since the last call, and each transition.
    fn fired(engine: &mut Engine, transitions: &mut Vec<Transition>) -> Vec<usize> {
        let mut slots = Vec::new();
        while let Some(out) = engine.poll_output() {
            match out {
                Output::Deliver(tag) => {
                    slots.push(tag.slot as usize);
                    engine.on_acked(tag, now());
                }
                Output::StateChanged(t) => transitions.push(t),
                _ => {}
            }
        }
        slots
    }

    async fn advance(engine: &mut Engine, by: Duration) {
        let until = Instant::now() + by;
        while Instant::now() < until {
            let deadline = engine.poll_timeout().map_or(until, |d| d.min(until));
            tokio::time::sleep_until(deadline).await;
            engine.handle_timeout(now());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn turns_are_timed_from_their_start_and_pause_at_their_end() {
        let sc = turn_based();
        let turns = sc.turns.clone().unwrap();
        assert_eq!(turns.starts, [0, 10, 15]);
        assert_eq!(turns.ends, [10, 15, 35]);
        assert_eq!(
            sc.duration.get(),
            120,
            "a minute after the last inject, on a whole minute"
        );
        // Slots: blue a..e (0..5), red a..e (5..10).
        let mut engine = Engine::new(&sc.plan(), Speed::ONE, policy());
        engine.set_connected(true, now());
        let mut transitions = Vec::new();
        engine.handle_command(Command::Start, None, now()).unwrap();
        assert_eq!(engine.turn(), Some((1, 3)));
        assert_eq!(fired(&mut engine, &mut transitions), [0, 5], "turn 1 at +0");

        advance(&mut engine, Duration::from_secs(10)).await;
        assert_eq!(
            fired(&mut engine, &mut transitions),
            [1, 6],
            "turn 1 at +10"
        );
        assert_eq!(engine.state(), State::Paused, "the turn is over");
        let paused = transitions.last().unwrap();
        assert_eq!(paused.at.get(), 10);
        assert!(
            paused
                .reason
                .as_deref()
                .unwrap()
                .contains("turn 1 of 3 is over")
        );
        assert!(engine.between_turns());

        // Nothing moves between turns, however long.
        advance(&mut engine, Duration::from_secs(100)).await;
        assert_eq!(fired(&mut engine, &mut transitions), Vec::<usize>::new());
        assert_eq!(engine.exercise_time(Instant::now()).get(), 10);
        let refused = engine
            .handle_command(Command::Resume, None, now())
            .unwrap_err();
        assert!(refused.reason.contains("next_turn"), "{refused}");

        // Turn 2 starts at T+10: its +0 inject at once, its +5 at T+15.
        engine
            .handle_command(Command::NextTurn, None, now())
            .unwrap();
        assert_eq!(engine.turn(), Some((2, 3)));
        assert_eq!(fired(&mut engine, &mut transitions), [2, 7]);
        assert_eq!(engine.records()[2].due.get(), 10);
        let refused = engine
            .handle_command(Command::NextTurn, None, now())
            .unwrap_err();
        assert_eq!(refused.state, State::Running);
        // A controller's own pause mid-turn is resumed, not skipped.
        advance(&mut engine, Duration::from_secs(2)).await;
        engine.handle_command(Command::Pause, None, now()).unwrap();
        let refused = engine
            .handle_command(Command::NextTurn, None, now())
            .unwrap_err();
        assert!(refused.reason.contains("resume"), "{refused}");
        advance(&mut engine, Duration::from_secs(30)).await;
        engine.handle_command(Command::Resume, None, now()).unwrap();
        advance(&mut engine, Duration::from_millis(2_900)).await;
        assert_eq!(fired(&mut engine, &mut transitions), Vec::<usize>::new());
        advance(&mut engine, Duration::from_millis(100)).await;
        assert_eq!(fired(&mut engine, &mut transitions), [3, 8]);
        assert_eq!(engine.state(), State::Paused);
        assert_eq!(engine.exercise_time(Instant::now()).get(), 15);

        // The last turn: its inject at +20 (T+35), then on to the end.
        engine
            .handle_command(Command::NextTurn, None, now())
            .unwrap();
        advance(&mut engine, Duration::from_secs(5)).await;
        engine.handle_command(Command::Pause, None, now()).unwrap();
        let refused = engine
            .handle_command(Command::NextTurn, None, now())
            .unwrap_err();
        assert!(refused.reason.contains("last turn"), "{refused}");
        engine.handle_command(Command::Resume, None, now()).unwrap();
        advance(&mut engine, Duration::from_secs(15)).await;
        assert_eq!(fired(&mut engine, &mut transitions), [4, 9]);
        assert_eq!(
            engine.state(),
            State::Running,
            "no pause after the last turn"
        );
        advance(&mut engine, Duration::from_secs(85)).await;
        assert_eq!(engine.state(), State::Completed);
        assert!(
            engine
                .records()
                .iter()
                .all(|r| r.status == DeliveryStatus::Delivered)
        );

        // A reset starts again from turn 0; next_turn from there starts turn 1.
        engine.handle_command(Command::Reset, None, now()).unwrap();
        assert_eq!(engine.turn(), Some((0, 3)));
        engine
            .handle_command(Command::NextTurn, None, now())
            .unwrap();
        assert_eq!(engine.turn(), Some((1, 3)));
        assert_eq!(fired(&mut engine, &mut transitions), [0, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn next_turn_needs_a_turn_based_exercise_and_a_restored_one_waits_for_it() {
        let plain = Plan {
            duration: 60,
            injects: vec![Planned {
                team: 0,
                inject: 0,
                due: ExerciseSeconds::new(5),
                turn: 0,
            }],
            turn_ends: Vec::new(),
            play: Vec::new(),
        };
        let mut engine = Engine::new(&plain, Speed::ONE, policy());
        let refused = engine
            .handle_command(Command::NextTurn, None, now())
            .unwrap_err();
        assert!(refused.reason.contains("not turn-based"), "{refused}");
        assert_eq!(engine.state(), State::Initialized);

        // Stored between turns 1 and 2, with the millisecond rounding of a
        // stored clock.
        let sc = turn_based();
        let mut records: Vec<DeliveryRecord> = Engine::new(&sc.plan(), Speed::ONE, policy())
            .records()
            .to_vec();
        for slot in [0, 1, 5, 6] {
            records[slot].status = DeliveryStatus::Delivered;
        }
        let mut engine = Engine::restore(
            &sc.plan(),
            Speed::new(3.0).unwrap(),
            policy(),
            Persisted {
                state: State::Paused,
                run: 1,
                elapsed: Duration::from_micros(9_998_500),
                started_wall: Some(now().wall),
                turn: 1,
                records,
            },
            now(),
        );
        engine.set_connected(true, now());
        let mut transitions = Vec::new();
        assert_eq!(fired(&mut engine, &mut transitions), Vec::<usize>::new());
        assert!(engine.between_turns());
        assert_eq!(engine.exercise_time(Instant::now()).get(), 10);
        engine
            .handle_command(Command::NextTurn, None, now())
            .unwrap();
        assert_eq!(fired(&mut engine, &mut transitions), [2, 7]);
        let refused = engine
            .seek(ExerciseSeconds::new(30), SeekMode::Skip, now())
            .unwrap_err();
        assert_eq!(refused, EditError::TurnBased);
    }
}
