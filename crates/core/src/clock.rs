//! The exercise clock: exercise time from a monotonic instant and a speed
//! factor. It never reads the clock itself; every method takes `now`.
//!
//! While running, exercise time is `base + (now - since) * speed`, where
//! `since` is the instant of the last start or resume and `base` the exercise
//! time then. Deadlines are absolute (`since + (n - base) / speed`), so no
//! error accumulates however long the exercise runs; pausing folds the time
//! run so far into `base`, and seeking sets it.

use std::time::Duration;

use tokio::time::Instant;

use crate::domain::Speed;

#[derive(Debug, Clone)]
pub struct ExerciseClock {
    speed: Speed,
    base: Duration,
    since: Option<Instant>,
}

impl ExerciseClock {
    /// `speed` exercise seconds pass per wall second.
    pub fn new(speed: Speed) -> Self {
        Self {
            speed,
            base: Duration::ZERO,
            since: None,
        }
    }

    /// A clock showing `elapsed` at `now`, running or not: how a clock is
    /// rebuilt from stored values after a restart.
    pub fn restore(speed: Speed, elapsed: Duration, running: bool, now: Instant) -> Self {
        let mut clock = Self::new(speed);
        clock.base = elapsed;
        clock.since = running.then_some(now);
        clock
    }

    pub fn speed(&self) -> f64 {
        self.speed.get()
    }

    pub fn is_running(&self) -> bool {
        self.since.is_some()
    }

    /// The instant of the last start or resume, while running.
    pub fn running_since(&self) -> Option<Instant> {
        self.since
    }

    /// From T+0.
    pub fn start(&mut self, now: Instant) {
        self.base = Duration::ZERO;
        self.since = Some(now);
    }

    pub fn pause(&mut self, now: Instant) {
        self.base = self.elapsed(now);
        self.since = None;
    }

    pub fn resume(&mut self, now: Instant) {
        if self.since.is_none() {
            self.since = Some(now);
        }
    }

    /// Moves exercise time to `to` (only meaningful while paused).
    pub fn seek(&mut self, to: Duration, now: Instant) {
        self.base = to;
        if self.since.is_some() {
            self.since = Some(now);
        }
    }

    /// Back to T+0, not running.
    pub fn reset(&mut self) {
        *self = Self::new(self.speed);
    }

    /// Whole exercise seconds while paused (the running time otherwise
    /// needs `now`): where a paused exercise stands.
    pub fn whole_seconds_paused(&self) -> u32 {
        self.base.as_secs().min(u64::from(u32::MAX)) as u32
    }

    /// Exercise time at `now` (frozen while paused).
    pub fn elapsed(&self, now: Instant) -> Duration {
        match self.since {
            Some(since) => {
                self.base
                    + now
                        .saturating_duration_since(since)
                        .mul_f64(self.speed.get())
            }
            None => self.base,
        }
    }

    /// Whole exercise seconds reached at `now`: the largest n whose deadline
    /// has passed, consistent with [`Self::deadline`].
    pub fn whole_seconds(&self, now: Instant) -> u32 {
        let mut n = self.elapsed(now).as_secs().min(u64::from(u32::MAX)) as u32;
        let Some(since) = self.since else {
            return n;
        };
        // Float rounding may put us one second off the deadline arithmetic.
        let at = |n: u32| since + self.offset(n);
        while n > 0 && Duration::from_secs(n.into()) > self.base && at(n) > now {
            n -= 1;
        }
        while n < u32::MAX && at(n + 1) <= now {
            n += 1;
        }
        n
    }

    /// The instant exercise time reaches `secs`, if the clock is running; a
    /// second already passed is due at once (`since`).
    pub fn deadline(&self, secs: u32) -> Option<Instant> {
        Some(self.since? + self.offset(secs))
    }

    /// Wall time from `since` until exercise second `secs`.
    fn offset(&self, secs: u32) -> Duration {
        let ahead = Duration::from_secs(secs.into()).saturating_sub(self.base);
        Duration::from_nanos((ahead.as_nanos() as f64 / self.speed.get()).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speed(value: f64) -> Speed {
        Speed::new(value).unwrap()
    }

    #[test]
    fn pauses_do_not_count_and_speed_scales() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut clock = ExerciseClock::new(speed(10.0));
        assert_eq!(clock.elapsed(t0), Duration::ZERO);
        assert_eq!(clock.deadline(1), None);
        clock.start(t0);
        assert_eq!(clock.whole_seconds(t0 + s(2)), 20);
        assert_eq!(clock.deadline(30), Some(t0 + s(3)));
        clock.pause(t0 + s(3));
        assert_eq!(clock.whole_seconds(t0 + s(100)), 30);
        assert_eq!(clock.deadline(31), None);
        clock.resume(t0 + s(103));
        assert_eq!(clock.whole_seconds(t0 + s(104)), 40);
        assert_eq!(clock.deadline(50), Some(t0 + s(105)));
        clock.reset();
        assert_eq!(clock.whole_seconds(t0 + s(104)), 0);
    }

    #[test]
    fn seek_and_restore_continue_from_the_given_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut clock = ExerciseClock::new(speed(2.0));
        clock.start(t0);
        clock.pause(t0 + s(5));
        clock.seek(s(100), t0 + s(6));
        assert_eq!(clock.whole_seconds(t0 + s(60)), 100);
        clock.resume(t0 + s(60));
        assert_eq!(clock.deadline(104), Some(t0 + s(62)));
        assert_eq!(
            clock.deadline(90),
            Some(t0 + s(60)),
            "passed seconds are due at once"
        );

        let restored = ExerciseClock::restore(speed(2.0), s(300), true, t0);
        assert_eq!(restored.whole_seconds(t0 + s(10)), 320);
        assert_eq!(
            ExerciseClock::restore(speed(2.0), s(300), false, t0).whole_seconds(t0 + s(10)),
            300
        );
    }

    #[test]
    fn whole_seconds_agree_with_deadlines_at_odd_speeds() {
        let t0 = Instant::now();
        for value in [0.3, 1.0, 3.0, 7.0, 60.0] {
            let mut clock = ExerciseClock::new(speed(value));
            clock.start(t0);
            for n in 0..500 {
                let d = clock.deadline(n).unwrap();
                assert_eq!(clock.whole_seconds(d), n, "speed {value} second {n}");
                if d > t0 {
                    assert_eq!(clock.whole_seconds(d - Duration::from_nanos(1)), n - 1);
                }
            }
        }
    }
}
