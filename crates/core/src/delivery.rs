//! Delivery records (SPEC section 5): one per (team, inject) pair of a run.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::domain::ExerciseSeconds;
use crate::play::PlayState;

/// The delivery settings of SPEC section 5, as the engine uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    pub timeout: Duration,
    pub retry_delay: Duration,
    pub max_attempts: u16,
    pub late_after: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(5000),
            retry_delay: Duration::from_secs(5),
            max_attempts: 3,
            late_after: Duration::from_millis(100),
        }
    }
}

/// The status clients see, as SPEC section 5 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not yet due, waiting for the broker, or on its first attempt.
    Pending,
    /// Acknowledged by the broker (QoS 1) or written to the socket (QoS 0).
    Delivered,
    /// At least one attempt failed; another is scheduled or under way.
    Retrying,
    /// Every attempt failed.
    Failed,
    /// The exercise was stopped before it was delivered, or a controller
    /// cancelled it.
    Cancelled,
    /// Passed over by a seek that skipped what it jumped across.
    Skipped,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
            DeliveryStatus::Skipped => "skipped",
        }
    }

    /// The inverse of [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Retrying,
            DeliveryStatus::Failed,
            DeliveryStatus::Cancelled,
            DeliveryStatus::Skipped,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// What the engine does with a record next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not due yet.
    Scheduled,
    /// A conditional inject waiting for its condition: out of the due index.
    Held,
    /// Due, but held: the broker is away or the exercise is paused.
    Waiting,
    /// Attempt `n` is with the broker, awaiting its acknowledgement.
    InFlight(u32),
    /// The next attempt goes out at this instant.
    RetryAt(Instant),
    /// Delivered, failed or cancelled.
    Done,
}

/// One (team, inject) pair of one run.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    /// Index of the team in the scenario.
    pub team: usize,
    /// Index of the inject in the team's timeline.
    pub inject: usize,
    pub due: ExerciseSeconds,
    /// Its turn in a turn-based exercise; 0 otherwise, and for injects added live.
    pub turn: u16,
    /// The monotonic instant it came due.
    pub due_at: Option<Instant>,
    pub due_wall: Option<OffsetDateTime>,
    pub attempts: u32,
    pub published_wall: Option<OffsetDateTime>,
    /// The exercise second of the last attempt; never before `due`.
    pub published_at: Option<ExerciseSeconds>,
    pub acked_at: Option<Instant>,
    pub acked_wall: Option<OffsetDateTime>,
    /// Acknowledged minus due.
    pub latency: Option<Duration>,
    /// Latency above the configured precision.
    pub late: bool,
    /// When a team dashboard confirmed it had shown the inject.
    pub received_wall: Option<OffsetDateTime>,
    /// Shown minus due; only for a record that was watched.
    pub receipt_latency: Option<Duration>,
    /// Whether a dashboard of its team was open when it first went out:
    /// only then does a receipt measure how long it took to be on screen.
    pub watched: Option<bool>,
    pub status: DeliveryStatus,
    pub last_error: Option<String>,
    pub phase: Phase,
    /// Two-way play: outcome, answer window, first answer, condition.
    pub play: PlayState,
}

impl DeliveryRecord {
    pub fn new(team: usize, inject: usize, due: ExerciseSeconds) -> Self {
        Self {
            team,
            inject,
            due,
            turn: 0,
            due_at: None,
            due_wall: None,
            attempts: 0,
            published_wall: None,
            published_at: None,
            acked_at: None,
            acked_wall: None,
            latency: None,
            late: false,
            received_wall: None,
            receipt_latency: None,
            watched: None,
            status: DeliveryStatus::Pending,
            last_error: None,
            phase: Phase::Scheduled,
            play: PlayState::default(),
        }
    }

    /// Still has work to do: due and not yet delivered, failed or cancelled.
    pub fn is_outstanding(&self) -> bool {
        matches!(
            self.phase,
            Phase::Waiting | Phase::InFlight(_) | Phase::RetryAt(_)
        )
    }
}

/// Counts of one run's records by status, and the mean latency of the delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counts {
    pub scheduled: usize,
    pub pending: usize,
    pub delivered: usize,
    pub late: usize,
    pub retrying: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub skipped: usize,
    /// Mean of acknowledged minus due over the delivered, in milliseconds.
    pub average_latency_ms: f64,
    /// Shown on a team dashboard.
    pub received: usize,
    /// Delivered, and not (yet) shown on a team dashboard.
    pub unread: usize,
    /// Sent while no dashboard of its team was open: a later receipt does
    /// not count toward the receipt latency.
    pub not_watched: usize,
    /// Shown, and sent while a dashboard of the team was open: the receipts
    /// `average_receipt_latency_ms` is the mean of (0: it means nothing).
    pub watched_received: usize,
    /// Mean of shown minus due over the received that were watched, in
    /// milliseconds.
    pub average_receipt_latency_ms: f64,
}

impl Counts {
    /// The counts of each of `teams` teams, by team index.
    pub fn by_team(records: &[DeliveryRecord], teams: usize) -> Vec<Counts> {
        (0..teams)
            .map(|team| Counts::of(records.iter().filter(|r| r.team == team)))
            .collect()
    }

    pub fn of<'a>(records: impl IntoIterator<Item = &'a DeliveryRecord>) -> Self {
        let mut c = Counts::default();
        let mut latency_sum = Duration::ZERO;
        let mut receipt_sum = Duration::ZERO;
        for r in records {
            c.scheduled += 1;
            c.received += usize::from(r.received_wall.is_some());
            c.not_watched += usize::from(r.watched == Some(false));
            if let Some(l) = r.receipt_latency {
                c.watched_received += 1;
                receipt_sum += l;
            }
            match r.status {
                DeliveryStatus::Pending => c.pending += 1,
                DeliveryStatus::Delivered => {
                    c.delivered += 1;
                    c.late += usize::from(r.late);
                    c.unread += usize::from(r.received_wall.is_none());
                    latency_sum += r.latency.unwrap_or_default();
                }
                DeliveryStatus::Retrying => c.retrying += 1,
                DeliveryStatus::Failed => c.failed += 1,
                DeliveryStatus::Cancelled => c.cancelled += 1,
                DeliveryStatus::Skipped => c.skipped += 1,
            }
        }
        if c.delivered > 0 {
            c.average_latency_ms = latency_sum.as_secs_f64() * 1000.0 / c.delivered as f64;
        }
        if c.watched_received > 0 {
            c.average_receipt_latency_ms =
                receipt_sum.as_secs_f64() * 1000.0 / c.watched_received as f64;
        }
        c
    }
}
