//! Two-way play in the engine, under tokio's paused clock: answers and
//! outcomes, windows held by a pause, branches, fallbacks, decisions,
//! skips down a chain, and a restore that keeps what waits.

use std::time::Duration;

use tokio::time::Instant;

use crate::domain::{ExerciseSeconds, Speed};
use crate::engine::Persisted;
use crate::play::*;
use crate::tests::{Seen, drain, now, policy, run_until, scenario};
use crate::{Command, DeliveryStatus, Engine, Plan, State};

fn expect(within: Option<u32>, choice: Option<&str>) -> SlotPlay {
    SlotPlay {
        expect: Some(Expectation {
            within,
            choice: choice.map(str::to_owned),
        }),
        when: None,
    }
}

fn after(slot: usize, on: &str, delay: u32) -> SlotPlay {
    SlotPlay {
        expect: None,
        when: Some(Condition {
            trigger: Trigger::After {
                slot,
                on: OutcomeMatch::parse(on).unwrap(),
            },
            delay,
        }),
    }
}

fn decision(name: &str, delay: u32) -> SlotPlay {
    SlotPlay {
        expect: None,
        when: Some(Condition {
            trigger: Trigger::Decision(name.to_owned()),
            delay,
        }),
    }
}

/// `teams` teams sharing a timeline of (time, play) injects; each team's
/// conditions name slots of its own, as a scenario's plan does.
fn plan(teams: usize, injects: &[(u32, SlotPlay)], duration: u32) -> Plan {
    let times: Vec<u32> = injects.iter().map(|(t, _)| *t).collect();
    let mut plan = scenario(teams, &times, duration);
    for team in 0..teams {
        let base = team * injects.len();
        plan.play.extend(injects.iter().map(|(_, p)| {
            let mut p = p.clone();
            if let Some(Condition {
                trigger: Trigger::After { slot, .. },
                ..
            }) = &mut p.when
            {
                *slot += base;
            }
            p
        }));
    }
    plan
}

fn started(plan: &Plan) -> (Engine, Seen, Instant) {
    let mut engine = Engine::new(plan, Speed::ONE, policy());
    let mut seen = Seen::default();
    engine.set_connected(true, now());
    let t0 = Instant::now();
    engine.handle_command(Command::Start, None, now()).unwrap();
    drain(&mut engine, &mut seen, true);
    (engine, seen, t0)
}

/// When each slot went out, in seconds after `t0`.
fn sent_at(seen: &Seen, t0: Instant, slot: usize) -> Option<Duration> {
    seen.delivered
        .iter()
        .find(|(tag, _)| tag.slot as usize == slot)
        .map(|(_, at)| *at - t0)
}

fn gate(engine: &Engine, slot: usize) -> Option<Gate> {
    engine.records()[slot].play.gate.clone()
}

#[tokio::test(start_paused = true)]
async fn each_team_gets_the_branch_of_its_own_choice_at_once() {
    // 0: the question at T+10; 1: branch A (5 s later); 2: branch B; 3: the
    // fallback if nobody answers within 60 s.
    let p = plan(
        2,
        &[
            (10, expect(Some(60), Some("B"))),
            (0, after(0, "choice:A", 5)),
            (0, after(0, "choice:B", 0)),
            (0, after(0, "missed", 0)),
        ],
        300,
    );
    let (mut engine, mut seen, t0) = started(&p);
    let s = Duration::from_secs;
    assert_eq!(
        engine.answer(0, Some("B".into()), now()),
        Err(PlayError::NotSent),
        "nobody answers what it has not been sent"
    );
    run_until(
        &mut engine,
        &mut seen,
        t0 + s(20) + Duration::from_millis(400),
    )
    .await;
    let answered = engine.answer(0, Some("B".into()), now()).unwrap();
    assert_eq!(
        answered,
        Answered {
            edit: false,
            at: 20,
            outcome: Some(Outcome::Met)
        }
    );
    drain(&mut engine, &mut seen, true);
    // Branch B goes out the moment the answer is in, not at the next tick.
    assert_eq!(
        sent_at(&seen, t0, 2),
        Some(s(20) + Duration::from_millis(400))
    );
    assert_eq!(engine.records()[2].due, ExerciseSeconds::new(20));
    assert_eq!(
        gate(&engine, 1),
        Some(Gate::Skipped {
            reason: Skip::Choice {
                after: 0,
                choice: Some("B".into())
            }
        })
    );
    assert_eq!(
        gate(&engine, 3),
        Some(Gate::Skipped {
            reason: Skip::Outcome {
                after: 0,
                outcome: Outcome::Met
            }
        })
    );
    // An edit is kept by the driver; the outcome stays the first answer's.
    let edit = engine.answer(0, Some("A".into()), now()).unwrap();
    assert!(edit.edit);
    assert_eq!(engine.records()[0].play.outcome, Some(Outcome::Met));

    // Team 1 (slots 4..8) answers A at T+30: wrong, and branch A at T+35.
    run_until(&mut engine, &mut seen, t0 + s(30)).await;
    let answered = engine.answer(4, Some("A".into()), now()).unwrap();
    assert_eq!(answered.outcome, Some(Outcome::Wrong));
    run_until(&mut engine, &mut seen, t0 + s(301)).await;
    assert_eq!(sent_at(&seen, t0, 5), Some(s(35)));
    assert_eq!(engine.records()[6].status, DeliveryStatus::Skipped);
    assert_eq!(engine.records()[7].status, DeliveryStatus::Skipped);
    // Nothing else of either team went out: one branch each.
    let mut sent: Vec<usize> = seen
        .delivered
        .iter()
        .map(|(t, _)| t.slot as usize)
        .collect();
    sent.sort_unstable();
    assert_eq!(sent, [0, 2, 4, 5]);
    assert_eq!(engine.state(), State::Completed);
}

#[tokio::test(start_paused = true)]
async fn a_missed_window_fires_the_fallback_on_the_exercise_clock() {
    let p = plan(
        1,
        &[
            (10, expect(Some(60), None)),
            (0, after(0, "missed", 10)),
            (0, after(0, "late", 0)),
            (0, after(0, "met", 0)),
        ],
        600,
    );
    let (mut engine, mut seen, t0) = started(&p);
    let s = Duration::from_secs;
    run_until(&mut engine, &mut seen, t0 + s(40)).await;
    // A pause of 100 s holds the window: it closes at exercise second 70.
    engine.handle_command(Command::Pause, None, now()).unwrap();
    run_until(&mut engine, &mut seen, t0 + s(140)).await;
    assert_eq!(engine.records()[0].play.outcome, Some(Outcome::Pending));
    engine.handle_command(Command::Resume, None, now()).unwrap();
    run_until(&mut engine, &mut seen, t0 + s(169)).await;
    assert_eq!(engine.records()[0].play.outcome, Some(Outcome::Pending));
    run_until(&mut engine, &mut seen, t0 + s(171)).await;
    assert_eq!(engine.records()[0].play.outcome, Some(Outcome::Missed));
    assert_eq!(gate(&engine, 1), Some(Gate::Released { at: 70, due: 80 }));
    assert_eq!(
        gate(&engine, 3),
        Some(Gate::Skipped {
            reason: Skip::Outcome {
                after: 0,
                outcome: Outcome::Missed
            }
        })
    );
    assert!(engine.records()[2].play.is_held(), "late may still come");
    run_until(&mut engine, &mut seen, t0 + s(200)).await;
    assert_eq!(sent_at(&seen, t0, 1), Some(s(180)));
    // An answer after the window: late, and the fallback stands.
    let answered = engine.answer(0, None, now()).unwrap();
    assert_eq!(answered.outcome, Some(Outcome::Late));
    drain(&mut engine, &mut seen, true);
    assert_eq!(sent_at(&seen, t0, 2), Some(s(200)));
    assert_eq!(engine.records()[1].status, DeliveryStatus::Delivered);
}

#[tokio::test(start_paused = true)]
async fn a_decision_releases_only_the_teams_it_names() {
    let p = plan(
        3,
        &[
            (0, decision("escalate", 30)),
            (100, decision("escalate", 0)),
        ],
        300,
    );
    let mut engine = Engine::new(&p, Speed::ONE, policy());
    assert_eq!(
        engine.decide("escalate", None, now()),
        Err(PlayError::NotStarted)
    );
    let (mut engine, mut seen, t0) = started(&p);
    let s = Duration::from_secs;
    assert_eq!(
        engine.decide("evacuate", None, now()),
        Err(PlayError::UnknownDecision("evacuate".into()))
    );
    run_until(&mut engine, &mut seen, t0 + s(10)).await;
    // Team 1's slots are 2 and 3.
    assert_eq!(engine.decide("escalate", Some(&[1]), now()), Ok(vec![2, 3]));
    assert_eq!(
        engine.decide("escalate", Some(&[1]), now()),
        Ok(vec![]),
        "deciding again changes nothing"
    );
    assert!(
        engine.awaits_decision("escalate"),
        "teams 0 and 2 still wait"
    );
    run_until(&mut engine, &mut seen, t0 + s(301)).await;
    assert_eq!(sent_at(&seen, t0, 2), Some(s(40)));
    assert_eq!(sent_at(&seen, t0, 3), Some(s(100)), "never before its time");
    for slot in [0, 1, 4, 5] {
        assert_eq!(
            gate(&engine, slot),
            Some(Gate::Skipped {
                reason: Skip::Ended
            }),
            "slot {slot}"
        );
    }
    assert_eq!(seen.delivered.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn skips_run_down_a_chain_and_the_end_settles_the_rest() {
    let p = plan(
        1,
        &[
            (5, expect(Some(10), Some("yes"))),
            (0, after(0, "met", 0)),
            (0, after(1, "missed", 0)),
            (0, after(0, "wrong", 55)),
            (0, expect(None, None)),
        ],
        60,
    );
    let (mut engine, mut seen, t0) = started(&p);
    let s = Duration::from_secs;
    run_until(&mut engine, &mut seen, t0 + s(8)).await;
    engine.answer(0, Some("no".into()), now()).unwrap();
    drain(&mut engine, &mut seen, true);
    assert_eq!(
        gate(&engine, 1),
        Some(Gate::Skipped {
            reason: Skip::Outcome {
                after: 0,
                outcome: Outcome::Wrong
            }
        })
    );
    assert_eq!(
        gate(&engine, 2),
        Some(Gate::Skipped {
            reason: Skip::NotSent { after: 1 }
        })
    );
    // Wrong at T+8, 55 s later is after the end (60).
    assert_eq!(
        gate(&engine, 3),
        Some(Gate::Skipped {
            reason: Skip::AfterEnd { at: 8 }
        })
    );
    run_until(&mut engine, &mut seen, t0 + s(61)).await;
    assert_eq!(engine.state(), State::Completed);
    // Never answered, no window: missed when the exercise ends.
    assert_eq!(engine.records()[4].play.outcome, Some(Outcome::Missed));
    assert_eq!(
        engine.answer(4, None, now()),
        Err(PlayError::Over(State::Completed))
    );
}

#[tokio::test(start_paused = true)]
async fn a_restored_engine_keeps_what_waits_and_the_open_windows() {
    let p = plan(
        1,
        &[
            (0, expect(Some(100), None)),
            (0, after(0, "missed", 0)),
            (0, decision("go", 0)),
            (0, after(0, "met", 30)),
        ],
        600,
    );
    let (mut engine, mut seen, t0) = started(&p);
    let s = Duration::from_secs;
    run_until(&mut engine, &mut seen, t0 + s(50)).await;
    let persisted = Persisted {
        state: engine.state(),
        run: engine.run(),
        elapsed: s(50),
        started_wall: engine.started().map(|n| n.wall),
        turn: 0,
        records: engine.records().to_vec(),
    };
    let mut restored = Engine::restore(&p, Speed::ONE, policy(), persisted, now());
    restored.set_connected(true, now());
    let t1 = Instant::now();
    let mut seen = Seen::default();
    drain(&mut restored, &mut seen, true);
    assert!(
        seen.delivered.is_empty(),
        "nothing held goes out on restore"
    );
    assert!(restored.awaits_decision("go"));
    // The window (closing at 100) is still open: an answer now is met.
    run_until(&mut restored, &mut seen, t1 + s(10)).await;
    assert_eq!(
        restored.answer(0, None, now()).unwrap().outcome,
        Some(Outcome::Met)
    );
    drain(&mut restored, &mut seen, true);
    assert_eq!(gate(&restored, 3), Some(Gate::Released { at: 60, due: 90 }));
    // Restored again after the release: it goes out at its due second.
    let persisted = Persisted {
        state: restored.state(),
        run: restored.run(),
        elapsed: s(60),
        started_wall: restored.started().map(|n| n.wall),
        turn: 0,
        records: restored.records().to_vec(),
    };
    let mut again = Engine::restore(&p, Speed::ONE, policy(), persisted, now());
    again.set_connected(true, now());
    let t2 = Instant::now();
    let mut seen = Seen::default();
    run_until(&mut again, &mut seen, t2 + s(31)).await;
    assert_eq!(sent_at(&seen, t2, 3), Some(s(30)));
    assert_eq!(again.records()[1].status, DeliveryStatus::Skipped);
}

#[tokio::test(start_paused = true)]
async fn stop_cancels_what_waits_and_reset_holds_it_again() {
    let p = plan(1, &[(0, decision("go", 0))], 60);
    let (mut engine, mut seen, t0) = started(&p);
    run_until(&mut engine, &mut seen, t0 + Duration::from_secs(5)).await;
    engine.handle_command(Command::Stop, None, now()).unwrap();
    assert_eq!(engine.records()[0].status, DeliveryStatus::Cancelled);
    engine.handle_command(Command::Reset, None, now()).unwrap();
    assert!(engine.records()[0].play.is_held());
    assert_eq!(engine.records()[0].status, DeliveryStatus::Pending);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_branch_due_later_holds_back_nothing_and_goes_out_once() {
    // The branch's own time (300) is after its condition holds (20) plus its
    // delay: due at 300. Injects between must not wait for it; a seek that
    // delivers what it passes sends it once.
    let p = plan(
        1,
        &[
            (10, expect(None, None)),
            (300, after(0, "met", 100)),
            (150, SlotPlay::default()),
            (200, SlotPlay::default()),
        ],
        600,
    );
    let (mut engine, mut seen, t0) = started(&p);
    let s = Duration::from_secs;
    run_until(&mut engine, &mut seen, t0 + s(20)).await;
    engine.answer(0, None, now()).unwrap();
    drain(&mut engine, &mut seen, true);
    assert_eq!(gate(&engine, 1), Some(Gate::Released { at: 20, due: 300 }));
    run_until(&mut engine, &mut seen, t0 + s(201)).await;
    assert_eq!(
        sent_at(&seen, t0, 2),
        Some(s(150)),
        "not held back by the branch"
    );
    assert_eq!(sent_at(&seen, t0, 3), Some(s(200)));
    engine.handle_command(Command::Pause, None, now()).unwrap();
    let passed = engine
        .seek(ExerciseSeconds::new(400), crate::SeekMode::Deliver, now())
        .unwrap();
    assert_eq!(passed, 1);
    drain(&mut engine, &mut seen, true);
    let times = seen.delivered.iter().filter(|(t, _)| t.slot == 1).count();
    assert_eq!(times, 1, "the branch went out once");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_seek_that_delivers_opens_the_window_where_it_lands() {
    let p = plan(
        1,
        &[(100, expect(Some(60), None)), (0, after(0, "missed", 0))],
        600,
    );
    let (mut engine, mut seen, t0) = started(&p);
    run_until(&mut engine, &mut seen, t0 + Duration::from_secs(50)).await;
    engine.handle_command(Command::Pause, None, now()).unwrap();
    engine
        .seek(ExerciseSeconds::new(500), crate::SeekMode::Deliver, now())
        .unwrap();
    drain(&mut engine, &mut seen, true);
    assert_eq!(engine.records()[0].play.window_end, Some(560));
    engine.handle_command(Command::Resume, None, now()).unwrap();
    let t1 = Instant::now();
    run_until(&mut engine, &mut seen, t1 + Duration::from_secs(30)).await;
    assert_eq!(engine.records()[0].play.outcome, Some(Outcome::Pending));
    assert_eq!(
        engine.answer(0, None, now()).unwrap().outcome,
        Some(Outcome::Met)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn what_never_went_out_has_no_outcome_and_a_cancel_settles_what_waits() {
    let p = plan(
        1,
        &[
            (10, expect(Some(30), Some("A"))),
            (0, after(0, "choice:B", 0)),
            (
                20,
                SlotPlay {
                    expect: Some(Expectation {
                        within: None,
                        choice: None,
                    }),
                    when: None,
                },
            ),
            (0, after(2, "met", 0)),
        ],
        100,
    );
    let (mut engine, mut seen, t0) = started(&p);
    let s = Duration::from_secs;
    run_until(&mut engine, &mut seen, t0 + s(5)).await;
    // A controller cancels slot 2: slot 3, waiting on it, is skipped now.
    engine.cancel(2, now()).unwrap();
    assert_eq!(
        gate(&engine, 3),
        Some(Gate::Skipped {
            reason: Skip::NotSent { after: 2 }
        })
    );
    run_until(&mut engine, &mut seen, t0 + s(12)).await;
    engine.answer(0, Some("A".into()), now()).unwrap();
    run_until(&mut engine, &mut seen, t0 + s(101)).await;
    assert_eq!(engine.state(), State::Completed);
    assert_eq!(engine.records()[0].play.outcome, Some(Outcome::Met));
    assert_eq!(
        engine.records()[2].play.outcome,
        None,
        "cancelled: never sent"
    );
    assert_eq!(engine.records()[1].status, DeliveryStatus::Skipped);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_restore_past_the_end_still_fires_the_fallback_of_a_missed_window() {
    let p = plan(
        1,
        &[(0, expect(Some(10), None)), (0, after(0, "missed", 0))],
        60,
    );
    let (mut engine, mut seen, t0) = started(&p);
    run_until(&mut engine, &mut seen, t0 + Duration::from_secs(5)).await;
    let persisted = Persisted {
        state: engine.state(),
        run: engine.run(),
        elapsed: Duration::from_secs(500),
        started_wall: engine.started().map(|n| n.wall),
        turn: 0,
        records: engine.records().to_vec(),
    };
    let mut restored = Engine::restore(&p, Speed::ONE, policy(), persisted, now());
    restored.set_connected(true, now());
    let mut seen = Seen::default();
    restored.handle_timeout(now());
    drain(&mut restored, &mut seen, true);
    assert_eq!(restored.state(), State::Completed);
    assert_eq!(restored.records()[0].play.outcome, Some(Outcome::Missed));
    assert_eq!(gate(&restored, 1), Some(Gate::Released { at: 10, due: 10 }));
    assert_eq!(seen.delivered.len(), 1, "the fallback went out, late");
}
