//! Rate limits: how many control commands a client may give. A token bucket
//! per key (a client address on the API, an exercise on its control topic):
//! `per_minute` tokens a minute, bursts of up to a sixth of that (at least 5).
//! A refusal says which of the two tripped: the burst, when the bucket was
//! full less than a minute ago, or else the rate kept up for over a minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Most keys remembered. Beyond it, full (idle) buckets are forgotten first
/// (forgetting them changes nothing), then the longest unused ones: a
/// forgotten client starts again with a full burst, which bounds memory
/// whatever the number of clients.
const MAX_KEYS: usize = 10_000;

#[derive(Debug)]
pub struct RateLimit {
    per_minute: u32,
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// When the bucket was last seen full.
    full_at: Instant,
}

/// A refused take: the limit that tripped and how long until a token is back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub tripped: Tripped,
    pub retry_after: Duration,
}

/// Which limit a refusal hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tripped {
    /// More than `burst` in quick succession, from a full bucket.
    Burst { burst: u32, per_minute: u32 },
    /// More than this many a minute, kept up for over a minute.
    PerMinute(u32),
}

impl Refused {
    /// What was refused and why, naming the limit that tripped, e.g. "more
    /// than a burst of 10 control commands from api:10.0.0.1 (bursts of 10
    /// on top of 60 control commands a minute); try again in 1 s".
    pub fn describe(&self, what: &str, whence: &str) -> String {
        let limit = match self.tripped {
            Tripped::Burst { burst, per_minute } => format!(
                "more than a burst of {burst} {what} {whence} \
                 (bursts of {burst} on top of {per_minute} {what} a minute)"
            ),
            Tripped::PerMinute(per_minute) => format!(
                "more than {per_minute} {what} a minute {whence}, kept up for over a minute"
            ),
        };
        format!(
            "{limit}; try again in {} s",
            self.retry_after.as_secs_f64().ceil()
        )
    }
}

impl RateLimit {
    pub fn per_minute(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        let rate = f64::from(per_minute);
        Self {
            per_minute,
            per_second: rate / 60.0,
            burst: (rate / 6.0).max(5.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Commands a minute.
    pub fn rate(&self) -> u32 {
        self.per_minute
    }

    /// Commands at once, from a full bucket.
    pub fn burst(&self) -> u32 {
        self.burst as u32
    }

    /// Takes one token for `key` at `now`, or says which limit tripped and
    /// how long until a token is there.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Refused> {
        let mut buckets = self.buckets.lock().expect("rate limit buckets");
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            self.make_room(&mut buckets, now);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
            full_at: now,
        });
        *bucket = refill(*bucket, now, self.per_second, self.burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let tripped = if now.saturating_duration_since(bucket.full_at) < Duration::from_secs(60)
            {
                Tripped::Burst {
                    burst: self.burst(),
                    per_minute: self.per_minute,
                }
            } else {
                Tripped::PerMinute(self.per_minute)
            };
            Err(Refused {
                tripped,
                retry_after: Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second),
            })
        }
    }

    /// Keys remembered now.
    pub fn keys(&self) -> usize {
        self.buckets.lock().expect("rate limit buckets").len()
    }

    /// Forgets full buckets, then, when that is not enough, the least
    /// recently used quarter: so the next [`MAX_KEYS`] / 4 new keys need no
    /// scan.
    fn make_room(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let (per_second, burst) = (self.per_second, self.burst);
        buckets.retain(|_, b| refill(*b, now, per_second, burst).tokens < burst);
        if buckets.len() < MAX_KEYS {
            return;
        }
        let mut used: Vec<Instant> = buckets.values().map(|b| b.at).collect();
        let cut = MAX_KEYS / 4;
        let (_, &mut oldest_kept, _) = used.select_nth_unstable(cut);
        buckets.retain(|_, b| b.at >= oldest_kept);
        // Ties at the cut could keep too many: drop them too.
        if buckets.len() >= MAX_KEYS {
            buckets.retain(|_, b| b.at > oldest_kept);
        }
    }
}

fn refill(bucket: Bucket, now: Instant, per_second: f64, burst: f64) -> Bucket {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    let tokens = (bucket.tokens + elapsed * per_second).min(burst);
    Bucket {
        tokens,
        at: now,
        full_at: if tokens >= burst { now } else { bucket.full_at },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_the_rate_per_client() {
        let limit = RateLimit::per_minute(60);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(limit.check("api:10.0.0.1", t0).is_ok());
        }
        let wait = limit.check("api:10.0.0.1", t0).unwrap_err().retry_after;
        assert_eq!(wait, Duration::from_secs(1));
        // Another client has its own bucket.
        assert!(limit.check("api:10.0.0.2", t0).is_ok());
        // One a second comes back.
        assert!(
            limit
                .check("api:10.0.0.1", t0 + Duration::from_secs(1))
                .is_ok()
        );
        assert!(
            limit
                .check("api:10.0.0.1", t0 + Duration::from_secs(1))
                .is_err()
        );
        // Idle, it fills up to the burst and no further.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..10 {
            assert!(limit.check("api:10.0.0.1", later).is_ok());
        }
        assert!(limit.check("api:10.0.0.1", later).is_err());
        // A low limit still allows a burst of five.
        let slow = RateLimit::per_minute(1);
        for _ in 0..5 {
            assert!(slow.check("x", t0).is_ok());
        }
        assert_eq!(
            slow.check("x", t0).unwrap_err().retry_after,
            Duration::from_secs(60)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_names_the_limit_that_tripped() {
        let limit = RateLimit::per_minute(60);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(limit.check("a", t0).is_ok());
        }
        let burst = limit.check("a", t0).unwrap_err();
        assert_eq!(
            burst.tripped,
            Tripped::Burst {
                burst: 10,
                per_minute: 60
            }
        );
        assert_eq!(
            burst.describe("commands", "from a"),
            "more than a burst of 10 commands from a \
             (bursts of 10 on top of 60 commands a minute); try again in 1 s"
        );
        // One a second, each taken as it comes back: the bucket is never
        // full again, and past a minute it is the rate that trips.
        for s in 1..=61 {
            assert!(limit.check("a", t0 + Duration::from_secs(s)).is_ok());
        }
        let rate = limit.check("a", t0 + Duration::from_secs(61)).unwrap_err();
        assert_eq!(rate.tripped, Tripped::PerMinute(60));
        assert_eq!(
            rate.describe("commands", "from a"),
            "more than 60 commands a minute from a, kept up for over a minute; try again in 1 s"
        );
        // Idle until full, a burst trips as a burst again.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..10 {
            assert!(limit.check("a", later).is_ok());
        }
        assert!(matches!(
            limit.check("a", later).unwrap_err().tripped,
            Tripped::Burst { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_key_cap_holds_when_every_bucket_is_in_use() {
        let limit = RateLimit::per_minute(60);
        let t0 = Instant::now();
        // Each client takes one token and none comes back in time: no
        // bucket is full, so none is idle.
        for n in 0..MAX_KEYS + 5_000 {
            let now = t0 + Duration::from_micros(n as u64);
            assert!(limit.check(&format!("api:{n}"), now).is_ok());
            assert!(limit.keys() <= MAX_KEYS, "{} keys after {n}", limit.keys());
        }
        // The most recent clients are remembered: still limited.
        let now = t0 + Duration::from_micros((MAX_KEYS + 5_000) as u64);
        let last = format!("api:{}", MAX_KEYS + 4_999);
        for _ in 0..9 {
            assert!(limit.check(&last, now).is_ok());
        }
        assert!(limit.check(&last, now).is_err());
    }
}
