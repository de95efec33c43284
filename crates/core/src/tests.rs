//! The engine under tokio's paused clock: hours of exercise in moments.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use super::*;
use crate::domain::{ExerciseSeconds, Speed};
use crate::engine::{EditError, Persisted, SeekMode};

/// A plan of `teams` teams that all share one timeline with injects at
/// `times` (in that order).
pub(crate) fn scenario(teams: usize, times: &[u32], duration: u32) -> Plan {
    Plan {
        duration,
        injects: (0..teams)
            .flat_map(|team| {
                times.iter().enumerate().map(move |(inject, &t)| Planned {
                    team: team as u32,
                    inject: inject as u32,
                    due: ExerciseSeconds::new(t),
                    turn: 0,
                })
            })
            .collect(),
        turn_ends: Vec::new(),
        play: Vec::new(),
    }
}

pub(crate) fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

pub(crate) fn policy() -> DeliveryPolicy {
    DeliveryPolicy {
        timeout: Duration::from_secs(5),
        retry_delay: Duration::from_secs(5),
        max_attempts: 3,
        late_after: Duration::from_millis(100),
    }
}

/// What the driver saw, in order.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) delivered: Vec<(DeliveryTag, Instant)>,
    pub(crate) ticks: Vec<(u32, State, Instant)>,
    pub(crate) transitions: Vec<Transition>,
    pub(crate) failed: Vec<usize>,
    pub(crate) played: Vec<usize>,
}

/// Drains the engine's outputs; acknowledges every delivery at once when
/// `ack` says so.
pub(crate) fn drain(engine: &mut Engine, seen: &mut Seen, ack: bool) {
    while let Some(out) = engine.poll_output() {
        match out {
            Output::Timer(t) => seen.ticks.push((t.current.get(), t.state, Instant::now())),
            Output::Deliver(tag) => {
                seen.delivered.push((tag, Instant::now()));
                if ack {
                    engine.on_acked(tag, now());
                }
            }
            Output::StateChanged(t) => seen.transitions.push(t),
            Output::DeliveryFailed { slot } => seen.failed.push(slot),
            Output::Played { slot } => seen.played.push(slot),
        }
    }
}

/// Sleeps until the engine's next deadline (or `until`) and handles it.
async fn step(engine: &mut Engine, seen: &mut Seen, until: Instant) {
    let deadline = engine.poll_timeout().map_or(until, |d| d.min(until));
    tokio::time::sleep_until(deadline).await;
    engine.handle_timeout(now());
    drain(engine, seen, true);
}

pub(crate) async fn run_until(engine: &mut Engine, seen: &mut Seen, until: Instant) {
    while Instant::now() < until {
        step(engine, seen, until).await;
    }
}

#[tokio::test(start_paused = true)]
async fn ten_teams_of_a_thousand_injects_each_fire_once_on_time_in_order() {
    // Timeline order differs from time order, and several injects share a second.
    let times: Vec<u32> = (0..1000u32).map(|i| (i * 7919) % 3600).collect();
    let sc = scenario(10, &times, 3600);
    let mut engine = Engine::new(&sc, Speed::ONE, policy());
    let mut seen = Seen::default();
    engine.set_connected(true, now());
    let t0 = Instant::now();
    engine.handle_command(Command::Start, None, now()).unwrap();
    drain(&mut engine, &mut seen, true);
    run_until(&mut engine, &mut seen, t0 + Duration::from_secs(3601)).await;

    assert_eq!(engine.state(), State::Completed);
    assert_eq!(seen.delivered.len(), 10_000);
    let mut once = std::collections::HashSet::new();
    for (tag, at) in &seen.delivered {
        assert!(once.insert(tag.slot), "slot {} twice", tag.slot);
        let record = &engine.records()[tag.slot as usize];
        let due = t0 + Duration::from_secs(u64::from(record.due.get()));
        assert_eq!(*at, due, "slot {} fired off its second", tag.slot);
        assert_eq!(record.status, DeliveryStatus::Delivered);
        assert_eq!(record.latency, Some(Duration::ZERO));
    }
    // In order: by time, and within a team and second by timeline position.
    let keys: Vec<(u32, usize, usize)> = seen
        .delivered
        .iter()
        .map(|(tag, _)| {
            let r = &engine.records()[tag.slot as usize];
            (r.due.get(), r.team, r.inject)
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "out of order");
    // A timer message for every second, each at its second.
    let running: Vec<u32> = seen
        .ticks
        .iter()
        .filter(|(_, s, _)| *s == State::Running)
        .map(|(c, _, _)| *c)
        .collect();
    let mut expected: Vec<u32> = vec![0];
    expected.extend(0..=3600);
    assert_eq!(
        running, expected,
        "one T+0 for the start, then one per second"
    );
    for (current, state, at) in &seen.ticks[1..] {
        if *state == State::Running {
            assert_eq!(*at, t0 + Duration::from_secs(u64::from(*current)));
        }
    }
    let counts = engine.counts();
    assert_eq!(
        (counts.delivered, counts.late, counts.failed),
        (10_000, 0, 0)
    );
    assert!(engine.is_settled());
}

#[tokio::test(start_paused = true)]
async fn pause_holds_everything_and_resume_continues_at_the_same_time() {
    let sc = scenario(2, &[0, 10, 20, 30], 40);
    let mut engine = Engine::new(&sc, Speed::ONE, policy());
    let mut seen = Seen::default();
    engine.set_connected(true, now());
    let t0 = Instant::now();
    engine.handle_command(Command::Start, None, now()).unwrap();
    drain(&mut engine, &mut seen, true);
    run_until(&mut engine, &mut seen, t0 + Duration::from_millis(15_500)).await;
    assert_eq!(seen.delivered.len(), 4);

    engine
        .handle_command(Command::Pause, Some("coffee".into()), now())
        .unwrap();
    drain(&mut engine, &mut seen, true);
    assert_eq!(
        engine.poll_timeout(),
        None,
        "nothing to wake for while paused"
    );
    let ticks_at_pause = seen.ticks.len();
    tokio::time::sleep(Duration::from_secs(600)).await;
    engine.handle_timeout(now());
    drain(&mut engine, &mut seen, true);
    assert_eq!(seen.ticks.len(), ticks_at_pause);
    assert_eq!(seen.delivered.len(), 4);
    assert_eq!(engine.exercise_time(Instant::now()).get(), 15);

    let resumed = Instant::now();
    let tr = engine.handle_command(Command::Resume, None, now()).unwrap();
    assert_eq!(tr.at.get(), 15);
    drain(&mut engine, &mut seen, true);
    run_until(&mut engine, &mut seen, resumed + Duration::from_secs(30)).await;
    assert_eq!(engine.state(), State::Completed);
    assert_eq!(seen.delivered.len(), 8);
    // T+20 is 4.5 s after the resume: the pause moved it, nothing else.
    let at_20: Vec<Instant> = seen
        .delivered
        .iter()
        .filter(|(t, _)| engine.records()[t.slot as usize].due.get() == 20)
        .map(|(_, at)| *at)
        .collect();
    assert_eq!(at_20, vec![resumed + Duration::from_millis(4_500); 2]);
    let pause = &seen.transitions[1];
    assert_eq!(
        (pause.to, pause.reason.as_deref()),
        (State::Paused, Some("coffee"))
    );
}

#[tokio::test(start_paused = true)]
async fn refused_commands_change_nothing_in_every_state() {
    let sc = scenario(1, &[0, 5], 10);
    for state in [
        State::Initialized,
        State::Running,
        State::Paused,
        State::Stopped,
        State::Completed,
    ] {
        let mut engine = Engine::new(&sc, Speed::ONE, policy());
        let mut seen = Seen::default();
        engine.set_connected(true, now());
        let path: &[Command] = match state {
            State::Initialized => &[],
            State::Running => &[Command::Start],
            State::Paused => &[Command::Start, Command::Pause],
            State::Stopped => &[Command::Start, Command::Stop],
            State::Completed => &[Command::Start],
        };
        for &c in path {
            engine.handle_command(c, None, now()).unwrap();
        }
        if state == State::Completed {
            run_until(
                &mut engine,
                &mut seen,
                Instant::now() + Duration::from_secs(11),
            )
            .await;
        } else {
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            engine.handle_timeout(now());
        }
        drain(&mut engine, &mut seen, true);
        assert_eq!(engine.state(), state);
        let before = (engine.exercise_time(Instant::now()), engine.counts());
        for command in Command::ALL {
            if state.apply(command).is_ok() {
                continue;
            }
            let refusal = engine.handle_command(command, None, now()).unwrap_err();
            assert_eq!((refusal.command, refusal.state), (command, state));
            assert!(
                engine.poll_output().is_none(),
                "{command} in {state} emitted output"
            );
            assert_eq!(engine.state(), state);
            assert_eq!(
                (engine.exercise_time(Instant::now()), engine.counts()),
                before
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn stop_cancels_the_unsent_and_reset_archives_the_run() {
    let sc = scenario(3, &[0, 5, 9], 10);
    let mut engine = Engine::new(&sc, Speed::ONE, policy());
    let mut seen = Seen::default();
    engine.set_connected(true, now());
    let t0 = Instant::now();
    engine.handle_command(Command::Start, None, now()).unwrap();
    drain(&mut engine, &mut seen, true);
    run_until(&mut engine, &mut seen, t0 + Duration::from_secs(6)).await;
    engine
        .handle_command(Command::Stop, Some("fire alarm".into()), now())
        .unwrap();
    drain(&mut engine, &mut seen, true);
    let c = engine.counts();
    assert_eq!((c.delivered, c.cancelled, c.pending), (6, 3, 0));
    assert!(engine.is_settled());
    tokio::time::sleep(Duration::from_secs(60)).await;
    engine.handle_timeout(now());
    assert!(
        engine.poll_output().is_none(),
        "a stopped exercise stays quiet"
    );

    let tr = engine.handle_command(Command::Reset, None, now()).unwrap();
    assert_eq!(
        (tr.from, tr.to, tr.at.get()),
        (State::Stopped, State::Initialized, 0)
    );
    assert_eq!(engine.archived().len(), 1);
    assert_eq!(engine.archived()[0].records.len(), 9);
    assert_eq!(engine.counts().pending, 9);
    assert_eq!(engine.exercise_time(Instant::now()).get(), 0);
    // An acknowledgement from the old run does not touch the new one.
    let (old_tag, _) = seen.delivered[0];
    engine.on_acked(old_tag, now());
    assert_eq!(engine.counts().delivered, 0);

    // The new run starts from T+0 and delivers everything again.
    drain(&mut engine, &mut seen, true);
    seen.delivered.clear();
    let t1 = Instant::now();
    engine.handle_command(Command::Start, None, now()).unwrap();
    drain(&mut engine, &mut seen, true);
    run_until(&mut engine, &mut seen, t1 + Duration::from_secs(11)).await;
    assert_eq!(seen.delivered.len(), 9);
    assert!(seen.delivered.iter().all(|(t, _)| t.run == 2));
    assert_eq!(engine.state(), State::Completed);
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_retry_then_fail_and_late_acks_still_count() {
    let sc = scenario(1, &[1, 2], 100);
    let mut engine = Engine::new(&sc, Speed::ONE, policy());
    let mut seen = Seen::default();
    engine.set_connected(true, now());
    let t0 = Instant::now();
    engine.handle_command(Command::Start, None, now()).unwrap();
    let mut attempts = Vec::new();
    let until = t0 + Duration::from_secs(40);
    while Instant::now() < until {
        let deadline = engine.poll_timeout().map_or(until, |d| d.min(until));
        tokio::time::sleep_until(deadline).await;
        engine.handle_timeout(now());
        while let Some(out) = engine.poll_output() {
            match out {
                Output::Deliver(tag) => {
                    attempts.push((tag.slot, tag.attempt, Instant::now() - t0));
                    engine.on_failed(tag, "no acknowledgement within 5000 ms", now());
                }
                Output::DeliveryFailed { slot } => seen.failed.push(slot),
                _ => {}
            }
        }
    }
    let s = Duration::from_secs;
    assert_eq!(
        attempts,
        vec![
            (0, 1, s(1)),
            (1, 1, s(2)),
            (0, 2, s(6)),
            (1, 2, s(7)),
            (0, 3, s(11)),
            (1, 3, s(12)),
        ]
    );
    assert_eq!(seen.failed, vec![0, 1]);
    let c = engine.counts();
    assert_eq!((c.failed, c.delivered), (2, 0));
    assert_eq!(
        engine.records()[0].last_error.as_deref(),
        Some("no acknowledgement within 5000 ms")
    );
    // The broker's acknowledgement of the last attempt arrives after all.
    engine.on_acked(
        DeliveryTag {
            run: 1,
            slot: 0,
            attempt: 3,
        },
        now(),
    );
    assert_eq!(engine.records()[0].status, DeliveryStatus::Delivered);
    assert!(engine.records()[0].late);
}

#[tokio::test(start_paused = true)]
async fn while_the_broker_is_away_due_injects_wait_and_go_out_late() {
    let sc = scenario(2, &[0, 3, 4, 8], 10);
    let mut engine = Engine::new(&sc, Speed::ONE, policy());
    let mut seen = Seen::default();
    engine.set_connected(true, now());
    let t0 = Instant::now();
    engine.handle_command(Command::Start, None, now()).unwrap();
    drain(&mut engine, &mut seen, true);
    run_until(&mut engine, &mut seen, t0 + Duration::from_secs(2)).await;
    engine.set_connected(false, now());
    run_until(&mut engine, &mut seen, t0 + Duration::from_secs(6)).await;
    assert_eq!(seen.delivered.len(), 2, "only T+0 went out");
    assert_eq!(engine.counts().pending, 6);
    let back = Instant::now();
    engine.set_connected(true, now());
    drain(&mut engine, &mut seen, true);
    assert_eq!(seen.delivered.len(), 6, "T+3 and T+4 go out on reconnect");
    let late: Vec<_> = seen.delivered[2..]
        .iter()
        .map(|(t, _)| engine.records()[t.slot as usize].clone())
        .collect();
    assert!(late.iter().all(|r| r.late && r.attempts == 1));
    let order: Vec<(u32, usize)> = late.iter().map(|r| (r.due.get(), r.team)).collect();
    assert_eq!(order, vec![(3, 0), (3, 1), (4, 0), (4, 1)]);
    assert_eq!(late[0].latency, Some(back - (t0 + Duration::from_secs(3))));
    run_until(&mut engine, &mut seen, t0 + Duration::from_secs(11)).await;
    let c = engine.counts();
    assert_eq!((c.delivered, c.late), (8, 4));
}

#[tokio::test(start_paused = true)]
async fn controllers_can_cancel_reschedule_add_and_retry() {
    let sc = scenario(2, &[10, 20], 60);
    let mut engine = Engine::new(&sc, Speed::ONE, policy());
    let mut seen = Seen::default();
    engine.set_connected(true, now());
    let t0 = Instant::now();
    engine.handle_command(Command::Start, None, now()).unwrap();
    drain(&mut engine, &mut seen, true);
    run_until(&mut engine, &mut seen, t0 + Duration::from_secs(5)).await;

    // Slots: team 0 -> 0 (T+10), 1 (T+20); team 1 -> 2 (T+10), 3 (T+20).
    engine.cancel(2, now()).unwrap();
    engine
        .reschedule(1, ExerciseSeconds::new(30), now())
        .unwrap();
    assert_eq!(
        engine.reschedule(3, ExerciseSeconds::new(2), now()),
        Err(EditError::Passed(
            ExerciseSeconds::new(2),
            ExerciseSeconds::new(5)
        ))
    );
    assert_eq!(
        engine.reschedule(3, ExerciseSeconds::new(61), now()),
        Err(EditError::AfterEnd(
            ExerciseSeconds::new(61),
            ExerciseSeconds::new(60)
        ))
    );
    let now_slot = engine.add(1, 99, None, now()).unwrap();
    let later_slot = engine
        .add(0, 98, Some(ExerciseSeconds::new(15)), now())
        .unwrap();
    drain(&mut engine, &mut seen, true);
    assert_eq!(
        seen.delivered.last().map(|(t, _)| t.slot as usize),
        Some(now_slot)
    );
    assert_eq!(engine.records()[now_slot].latency, Some(Duration::ZERO));

    run_until(&mut engine, &mut seen, t0 + Duration::from_secs(61)).await;
    let fired: Vec<(usize, Duration)> = seen
        .delivered
        .iter()
        .map(|(t, at)| (t.slot as usize, *at - t0))
        .collect();
    let s = Duration::from_secs;
    assert_eq!(
        fired,
        vec![
            (now_slot, s(5)),
            (0, s(10)),
            (later_slot, s(15)),
            (3, s(20)),
            (1, s(30))
        ]
    );
    assert_eq!(engine.records()[2].status, DeliveryStatus::Cancelled);
    assert!(
        engine.cancel(0, now()).is_err(),
        "a delivered one cannot be cancelled"
    );
    assert_eq!(engine.state(), State::Completed);
    assert!(matches!(
        engine.retry(0, now()),
        Err(EditError::Over(State::Completed))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_manual_retry_starts_the_count_again() {
    let sc = scenario(1, &[1], 100);
    let mut engine = Engine::new(&sc, Speed::ONE, policy());
    engine.set_connected(true, now());
    engine.handle_command(Command::Start, None, now()).unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    let mut tags = Vec::new();
    while Instant::now() < until {
        let deadline = engine.poll_timeout().map_or(until, |d| d.min(until));
        tokio::time::sleep_until(deadline).await;
        engine.handle_timeout(now());
        while let Some(out) = engine.poll_output() {
            if let Output::Deliver(tag) = out {
                tags.push(tag);
                engine.on_failed(tag, "refused", now());
            }
        }
    }
    assert_eq!(engine.records()[0].status, DeliveryStatus::Failed);
    assert_eq!(tags.len(), 3);
    assert_eq!(engine.retry_all_failed(now()).unwrap(), 1);
    assert_eq!(engine.records()[0].attempts, 1);
    let Some(Output::Deliver(tag)) = engine.poll_output() else {
        panic!("a retry goes out at once")
    };
    assert_eq!(tag.attempt, 1);
    engine.on_acked(tag, now());
    assert_eq!(engine.records()[0].status, DeliveryStatus::Delivered);
    assert!(matches!(
        engine.retry(0, now()),
        Err(EditError::WrongStatus { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn seek_delivers_or_skips_what_it_passes_over() {
    for mode in [SeekMode::Deliver, SeekMode::Skip] {
        let sc = scenario(1, &[5, 10, 20, 30, 40], 60);
        let mut engine = Engine::new(&sc, Speed::ONE, policy());
        let mut seen = Seen::default();
        engine.set_connected(true, now());
        let t0 = Instant::now();
        engine.handle_command(Command::Start, None, now()).unwrap();
        drain(&mut engine, &mut seen, true);
        run_until(&mut engine, &mut seen, t0 + Duration::from_secs(7)).await;
        assert!(matches!(
            engine.seek(ExerciseSeconds::new(30), mode, now()),
            Err(EditError::NotPaused(State::Running))
        ));
        engine.handle_command(Command::Pause, None, now()).unwrap();
        assert!(matches!(
            engine.seek(ExerciseSeconds::new(3), mode, now()),
            Err(EditError::Backward(..))
        ));
        let passed = engine.seek(ExerciseSeconds::new(30), mode, now()).unwrap();
        assert_eq!(passed, 2, "T+10 and T+20");
        drain(&mut engine, &mut seen, true);
        assert_eq!(engine.exercise_time(Instant::now()).get(), 30);
        let c = engine.counts();
        match mode {
            SeekMode::Deliver => assert_eq!((c.delivered, c.skipped), (3, 0)),
            SeekMode::Skip => assert_eq!((c.delivered, c.skipped), (1, 2)),
        }
        let before_resume = seen.delivered.len();
        let resumed = Instant::now();
        engine.handle_command(Command::Resume, None, now()).unwrap();
        drain(&mut engine, &mut seen, true);
        run_until(&mut engine, &mut seen, resumed + Duration::from_secs(31)).await;
        let after: Vec<(u32, Duration)> = seen.delivered[before_resume..]
            .iter()
            .map(|(t, at)| (engine.records()[t.slot as usize].due.get(), *at - resumed))
            .collect();
        assert_eq!(
            after,
            vec![(30, Duration::ZERO), (40, Duration::from_secs(10))]
        );
        assert_eq!(engine.state(), State::Completed);
    }
}

#[tokio::test(start_paused = true)]
async fn a_restored_exercise_catches_up_without_repeating_the_confirmed() {
    let sc = scenario(2, &[0, 10, 20, 30], 60);
    let mut engine = Engine::new(&sc, Speed::ONE, policy());
    let mut seen = Seen::default();
    engine.set_connected(true, now());
    let t0 = Instant::now();
    engine.handle_command(Command::Start, None, now()).unwrap();
    drain(&mut engine, &mut seen, true);
    run_until(&mut engine, &mut seen, t0 + Duration::from_secs(12)).await;
    let stored = Persisted {
        state: engine.state(),
        run: engine.run(),
        elapsed: Duration::ZERO,
        started_wall: engine.started().map(|s| s.wall),
        turn: 0,
        records: engine.records().to_vec(),
    };
    assert_eq!(
        stored
            .records
            .iter()
            .filter(|r| r.status == DeliveryStatus::Delivered)
            .count(),
        4
    );

    // The process dies at T+12 and comes back 15 s later: T+27.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let back = Instant::now();
    let mut restored = Engine::restore(
        &sc,
        Speed::ONE,
        policy(),
        Persisted {
            elapsed: Duration::from_secs(27),
            ..stored
        },
        now(),
    );
    assert_eq!(restored.exercise_time(back).get(), 27);
    let mut again = Seen::default();
    restored.set_connected(true, now());
    drain(&mut restored, &mut again, true);
    // The two T+20 injects came due while down: out at once, 7 s late.
    assert_eq!(again.delivered.len(), 2);
    for (tag, _) in &again.delivered {
        let r = &restored.records()[tag.slot as usize];
        assert_eq!(r.due.get(), 20);
        assert_eq!(r.latency, Some(Duration::from_secs(7)));
        assert!(r.late);
    }
    run_until(&mut restored, &mut again, back + Duration::from_secs(34)).await;
    assert_eq!(restored.state(), State::Completed);
    let slots: Vec<u32> = again.delivered.iter().map(|(t, _)| t.slot).collect();
    assert_eq!(
        slots.len(),
        4,
        "T+20 twice, T+30 twice; nothing confirmed again"
    );
    let c = restored.counts();
    assert_eq!((c.delivered, c.late), (8, 2));
    let t30: Vec<Duration> = again
        .delivered
        .iter()
        .filter(|(t, _)| restored.records()[t.slot as usize].due.get() == 30)
        .map(|(_, at)| *at - back)
        .collect();
    assert_eq!(t30, vec![Duration::from_secs(3); 2]);
}

#[tokio::test(start_paused = true)]
async fn a_reset_forgets_what_controllers_added_and_moved() {
    let sc = scenario(1, &[10, 20], 60);
    let mut engine = Engine::new(&sc, Speed::ONE, policy());
    let mut seen = Seen::default();
    engine.set_connected(true, now());
    engine.handle_command(Command::Start, None, now()).unwrap();
    engine
        .add(0, 7, Some(ExerciseSeconds::new(30)), now())
        .unwrap();
    engine
        .reschedule(0, ExerciseSeconds::new(40), now())
        .unwrap();
    engine.handle_command(Command::Reset, None, now()).unwrap();
    assert_eq!(engine.records().len(), 2);
    let t0 = Instant::now();
    engine.handle_command(Command::Start, None, now()).unwrap();
    drain(&mut engine, &mut seen, true);
    run_until(&mut engine, &mut seen, t0 + Duration::from_secs(61)).await;
    let fired: Vec<(usize, Duration)> = seen
        .delivered
        .iter()
        .map(|(t, at)| (t.slot as usize, *at - t0))
        .collect();
    assert_eq!(
        fired,
        vec![(0, Duration::from_secs(10)), (1, Duration::from_secs(20))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_receipt_is_recorded_once_and_only_for_what_went_out() {
    let sc = scenario(1, &[1, 50], 100);
    let mut engine = Engine::new(&sc, Speed::ONE, policy());
    engine.set_connected(true, now());
    engine.handle_command(Command::Start, None, now()).unwrap();
    let mut seen = Seen::default();
    run_until(
        &mut engine,
        &mut seen,
        Instant::now() + Duration::from_secs(2),
    )
    .await;
    assert_eq!(seen.delivered.len(), 1);
    engine.set_watched(0, true);
    // Set once: what held when it first went out stays.
    engine.set_watched(0, false);
    let shown = now().wall + Duration::from_millis(250);
    // Not yet sent: nothing to confirm.
    assert!(!engine.on_received(1, shown));
    assert!(engine.on_received(0, shown));
    // A second dashboard, or a reload, confirms again: the first receipt stays.
    assert!(!engine.on_received(0, shown + Duration::from_secs(3)));
    assert!(!engine.on_received(7, shown));
    let r = &engine.records()[0];
    assert_eq!(r.received_wall, Some(shown));
    assert_eq!(r.receipt_latency, Some(Duration::from_millis(250)));
    let counts = engine.counts();
    assert_eq!(counts.received, 1);
    assert_eq!(counts.unread, 0);
    assert_eq!(counts.not_watched, 0);
    assert!((counts.average_receipt_latency_ms - 250.0).abs() < 1e-6);
    // A dashboard whose clock runs behind the due time counts as on time.
    assert_eq!(
        crate::engine::receipt_latency(Some(shown), shown - Duration::from_secs(1)),
        Duration::ZERO
    );
}

#[tokio::test(start_paused = true)]
async fn a_receipt_of_an_inject_nobody_watched_has_no_latency() {
    let sc = scenario(1, &[1, 2], 100);
    let mut engine = Engine::new(&sc, Speed::ONE, policy());
    engine.set_connected(true, now());
    engine.handle_command(Command::Start, None, now()).unwrap();
    let mut seen = Seen::default();
    run_until(
        &mut engine,
        &mut seen,
        Instant::now() + Duration::from_secs(3),
    )
    .await;
    assert_eq!(seen.delivered.len(), 2);
    engine.set_watched(0, true);
    engine.set_watched(1, false);
    let shown = now().wall + Duration::from_secs(28);
    assert!(engine.on_received(0, shown));
    // Opened 28 s later: shown, but not a measure of how fast.
    assert!(engine.on_received(1, shown));
    assert_eq!(engine.records()[1].receipt_latency, None);
    let counts = engine.counts();
    assert_eq!(counts.received, 2);
    assert_eq!(counts.unread, 0);
    assert_eq!(counts.not_watched, 1);
    let teams = Counts::by_team(engine.records(), 2);
    assert_eq!((teams[0].delivered, teams[0].received), (2, 2));
    assert_eq!(teams[1], Counts::default());
    let first = engine.records()[0].receipt_latency.unwrap();
    assert!((counts.average_receipt_latency_ms - first.as_secs_f64() * 1000.0).abs() < 1e-6);
}
