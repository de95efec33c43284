//! The exercise clock: exercise time from a monotonic instant, a speed factor
//! and the total time spent paused. It never reads the clock itself; every
//! method takes `now`.

use std::time::Duration;

use tokio::time::Instant;

/// Exercise time as a function of monotonic time. Deadlines are absolute
/// (start + paused + n / speed), so no error accumulates however long the
/// exercise runs.
#[derive(Debug, Clone)]
pub struct ExerciseClock {
    speed: f64,
    started: Option<Instant>,
    paused_total: Duration,
    paused_since: Option<Instant>,
}

impl ExerciseClock {
    /// `speed` exercise seconds pass per wall second; it must be finite and > 0.
    pub fn new(speed: f64) -> Self {
        assert!(speed.is_finite() && speed > 0.0, "speed must be positive");
        Self {
            speed,
            started: None,
            paused_total: Duration::ZERO,
            paused_since: None,
        }
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    pub fn paused_total(&self) -> Duration {
        self.paused_total
    }

    pub fn is_running(&self) -> bool {
        self.started.is_some() && self.paused_since.is_none()
    }

    pub fn start(&mut self, now: Instant) {
        self.started = Some(now);
        self.paused_total = Duration::ZERO;
        self.paused_since = None;
    }

    pub fn pause(&mut self, now: Instant) {
        if self.is_running() {
            self.paused_since = Some(now);
        }
    }

    pub fn resume(&mut self, now: Instant) {
        if let Some(since) = self.paused_since.take() {
            self.paused_total += now.saturating_duration_since(since);
        }
    }

    /// Back to T+0, not started.
    pub fn reset(&mut self) {
        *self = Self::new(self.speed);
    }

    /// Exercise time at `now` (frozen while paused, zero before the start).
    pub fn elapsed(&self, now: Instant) -> Duration {
        let Some(started) = self.started else {
            return Duration::ZERO;
        };
        let until = self.paused_since.unwrap_or(now);
        let running = until
            .saturating_duration_since(started)
            .saturating_sub(self.paused_total);
        running.mul_f64(self.speed)
    }

    /// Whole exercise seconds reached at `now`: the largest n whose deadline has
    /// passed, consistent with [`Self::deadline`].
    pub fn whole_seconds(&self, now: Instant) -> u32 {
        let Some(started) = self.started else {
            return 0;
        };
        let until = self.paused_since.unwrap_or(now);
        let mut n = self.elapsed(now).as_secs().min(u32::MAX as u64) as u32;
        // Float rounding may put us one second off the deadline arithmetic.
        let at = |n: u32| started + self.paused_total + self.offset(n);
        while n > 0 && at(n) > until {
            n -= 1;
        }
        while n < u32::MAX && at(n + 1) <= until {
            n += 1;
        }
        n
    }

    /// The instant exercise time reaches `secs`, if the clock is running.
    pub fn deadline(&self, secs: u32) -> Option<Instant> {
        if !self.is_running() {
            return None;
        }
        Some(self.started? + self.paused_total + self.offset(secs))
    }

    /// Wall time from the start (pauses excluded) to exercise second `secs`.
    fn offset(&self, secs: u32) -> Duration {
        Duration::from_nanos((secs as f64 * 1e9 / self.speed).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_do_not_count_and_speed_scales() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut clock = ExerciseClock::new(10.0);
        assert_eq!(clock.elapsed(t0), Duration::ZERO);
        assert_eq!(clock.deadline(1), None);
        clock.start(t0);
        assert_eq!(clock.whole_seconds(t0 + s(2)), 20);
        assert_eq!(clock.deadline(30), Some(t0 + s(3)));
        clock.pause(t0 + s(3));
        assert_eq!(clock.whole_seconds(t0 + s(100)), 30);
        assert_eq!(clock.deadline(31), None);
        clock.resume(t0 + s(103));
        assert_eq!(clock.paused_total(), s(100));
        assert_eq!(clock.whole_seconds(t0 + s(104)), 40);
        assert_eq!(clock.deadline(50), Some(t0 + s(105)));
        clock.reset();
        assert_eq!(clock.whole_seconds(t0 + s(104)), 0);
    }

    #[test]
    fn whole_seconds_agree_with_deadlines_at_odd_speeds() {
        let t0 = Instant::now();
        for speed in [0.3, 1.0, 3.0, 7.0, 60.0] {
            let mut clock = ExerciseClock::new(speed);
            clock.start(t0);
            for n in 0..500 {
                let d = clock.deadline(n).unwrap();
                assert_eq!(clock.whole_seconds(d), n, "speed {speed} second {n}");
                if d > t0 {
                    assert_eq!(clock.whole_seconds(d - Duration::from_nanos(1)), n - 1);
                }
            }
        }
    }
}
