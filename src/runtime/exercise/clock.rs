//! An exercise's clock as stored values, and wall-clock milliseconds.

use std::time::Duration;

use time::OffsetDateTime;

use crate::core::{Engine, Now, State};
use crate::domain::Speed;
use crate::store::ClockRow;

/// The clock of `engine` as stored values: wall-clock start, signed total
/// of time not run (pauses, less any seek forward), and when it last stopped
/// running (while paused, stopped or completed).
pub fn clock_row(engine: &Engine, now: Now) -> ClockRow {
    let started = engine.started().map(|s| s.wall);
    let elapsed = engine.clock().elapsed(now.mono);
    let running = engine.state() == State::Running;
    let paused_total_ms = started.map_or(0, |start| {
        let since_start_ms = (now.wall - start).whole_milliseconds() as f64;
        let run_ms = elapsed.as_secs_f64() * 1000.0 / engine.clock().speed();
        (since_start_ms - run_ms).round() as i64
    });
    ClockRow {
        state: engine.state().as_str().to_owned(),
        run: i64::from(engine.run()),
        started_wall_ms: started.map(wall_ms),
        paused_total_ms,
        paused_since_wall_ms: (started.is_some() && !running).then(|| wall_ms(now.wall)),
        updated_wall_ms: wall_ms(now.wall),
        turn: engine.turn().map_or(0, |(turn, _)| i64::from(turn)),
    }
}

/// Exercise time from stored clock values at wall time `now_ms`. Any stored
/// values give a time (at worst zero or the longest `Duration`), never a panic.
pub fn stored_elapsed(row: &ClockRow, speed: Speed, now_ms: i64) -> Duration {
    let Some(start) = row.started_wall_ms else {
        return Duration::ZERO;
    };
    let until = row.paused_since_wall_ms.unwrap_or(now_ms);
    let run_ms = until
        .saturating_sub(start)
        .saturating_sub(row.paused_total_ms)
        .max(0) as f64;
    Duration::try_from_secs_f64(run_ms * speed.get() / 1000.0).unwrap_or(Duration::MAX)
}

pub fn wall_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn from_wall_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
