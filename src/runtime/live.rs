//! What browsers follow live: each exercise actor broadcasts its clock, the
//! injects it sends and the delivery records it changes; team dashboards and
//! the control room turn them into server-sent events. [`Presence`] counts
//! the dashboards open per team.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};

use crate::mqtt::wire::TimerMessage;
use crate::runtime::exercise::DeliveryView;

/// How many events a slow follower may fall behind before it is dropped
/// (and reconnects to start again from a fresh history).
pub const LIVE_BUFFER: usize = 4096;

/// One thing that happened in an exercise, as followers see it.
#[derive(Debug, Clone)]
pub enum Live {
    /// Every whole exercise second while running, and every state change.
    Clock(Arc<LiveClock>),
    /// An inject went out on a team's feed (each attempt).
    Feed(Arc<FeedItem>),
    /// One delivery record changed.
    Delivery(Arc<DeliveryView>),
    /// Many records changed at once (start, stop, reset, seek, edits): read
    /// them all again.
    Reload,
    /// A post to a public channel.
    Post(Arc<crate::mqtt::wire::PostMessage>),
    /// An evaluator's score.
    Score(Arc<crate::mqtt::wire::ScoreMessage>),
    /// Team `team` answered an inject.
    Response {
        team: usize,
        message: Arc<crate::mqtt::wire::ResponseMessage>,
    },
}

/// The exercise clock as dashboards show it: the timer message of SPEC
/// section 4 plus the run, the speed and why it last stopped running.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveClock {
    #[serde(flatten)]
    pub timer: TimerMessage,
    pub run: u16,
    pub speed: f64,
    /// Turn-based exercises: the turn under way (or just over), and how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_turns: Option<u16>,
    /// The reason given with the last pause or stop, while not running.
    pub reason: Option<String>,
}

/// An inject as it went out on a team's feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedItem {
    /// The team's index in the scenario.
    pub team: usize,
    pub run: u16,
    /// A dashboard has confirmed it.
    pub received: bool,
    /// The team's first answer to it: (exercise second, option chosen).
    pub answered: Option<(u32, Option<String>)>,
    /// The feed message, exactly as MQTT subscribers get it.
    pub message: String,
}

impl FeedItem {
    /// `{"run":..,"received":..,"message":{feed message}}`, and
    /// `"answered":{"at":..,"choice":..}` once the team answered it.
    pub fn to_json(&self) -> String {
        let answered = match &self.answered {
            Some((at, choice)) => format!(
                ",\"answered\":{}",
                serde_json::json!({"at": at, "choice": choice})
            ),
            None => String::new(),
        };
        format!(
            "{{\"run\":{},\"received\":{}{answered},\"message\":{}}}",
            self.run, self.received, self.message
        )
    }
}

/// Open dashboards per team of one exercise, and when each team's
/// dashboard was last seen.
#[derive(Debug)]
pub struct Presence {
    teams: Vec<AtomicUsize>,
    /// Unix milliseconds a dashboard of the team last opened, closed or sent
    /// a receipt; 0 for never.
    last_seen: Vec<AtomicI64>,
    changed: watch::Sender<u64>,
}

impl Presence {
    pub fn new(teams: usize) -> Arc<Self> {
        Arc::new(Self {
            teams: (0..teams).map(|_| AtomicUsize::new(0)).collect(),
            last_seen: (0..teams).map(|_| AtomicI64::new(0)).collect(),
            changed: watch::channel(0).0,
        })
    }

    /// Counts a dashboard of `team` open until the seat is dropped.
    pub fn join(self: &Arc<Self>, team: usize) -> Seat {
        self.teams[team].fetch_add(1, Ordering::Relaxed);
        self.seen(team, OffsetDateTime::now_utc());
        Seat {
            presence: self.clone(),
            team,
        }
    }

    /// Open dashboards, by team.
    pub fn dashboards(&self) -> Vec<usize> {
        self.teams
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// A dashboard of `team` showed it was there at `at` (a receipt).
    pub fn seen(&self, team: usize, at: OffsetDateTime) {
        if let Some(last) = self.last_seen.get(team) {
            let ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
            last.fetch_max(ms, Ordering::Relaxed);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// When a dashboard of `team` was last seen, in unix milliseconds: the
    /// last time one opened, closed or sent a receipt (`None`: never in
    /// this process's life).
    pub fn last_seen(&self, team: usize) -> Option<i64> {
        let ms = self.last_seen.get(team)?.load(Ordering::Relaxed);
        (ms > 0).then_some(ms)
    }

    /// Open dashboards of `team`.
    pub fn open(&self, team: usize) -> usize {
        self.teams
            .get(team)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Teams with at least one dashboard open.
    pub fn teams_connected(&self) -> usize {
        self.dashboards().into_iter().filter(|&n| n > 0).count()
    }

    /// Changes whenever a dashboard opens or closes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// One open dashboard.
#[derive(Debug)]
pub struct Seat {
    presence: Arc<Presence>,
    team: usize,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.presence.teams[self.team].fetch_sub(1, Ordering::Relaxed);
        self.presence.seen(self.team, OffsetDateTime::now_utc());
    }
}

/// A follower's start: where things stand, and the events from then on,
/// with nothing missed in between.
#[derive(Debug)]
pub struct Watch {
    pub clock: Arc<LiveClock>,
    /// For a team: what its feed got so far in this run, oldest first.
    pub history: Vec<Arc<FeedItem>>,
    /// For the control room: every record of this run.
    pub deliveries: Vec<DeliveryView>,
    pub events: broadcast::Receiver<Live>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_count_teams_with_a_dashboard_open() {
        let presence = Presence::new(3);
        let mut changes = presence.subscribe();
        assert_eq!(presence.last_seen(0), None);
        let a = presence.join(0);
        let opened = presence.last_seen(0).expect("seen when it opened");
        assert_eq!(presence.last_seen(1), None);
        let b = presence.join(0);
        let c = presence.join(2);
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert_eq!(presence.dashboards(), vec![2, 0, 1]);
        assert_eq!(
            (presence.open(0), presence.open(1), presence.open(9)),
            (2, 0, 0)
        );
        assert_eq!(presence.teams_connected(), 2);
        drop(a);
        assert_eq!(presence.teams_connected(), 2);
        drop(b);
        assert!(changes.has_changed().unwrap());
        assert_eq!(presence.teams_connected(), 1);
        drop(c);
        assert_eq!(presence.dashboards(), vec![0, 0, 0]);
        assert!(presence.last_seen(0).unwrap() >= opened);
        // A receipt counts; an earlier time never moves it back.
        let later = OffsetDateTime::now_utc() + std::time::Duration::from_secs(60);
        presence.seen(1, later);
        presence.seen(1, later - std::time::Duration::from_secs(30));
        assert_eq!(
            presence.last_seen(1),
            Some((later.unix_timestamp_nanos() / 1_000_000) as i64)
        );
    }

    #[test]
    fn a_feed_item_wraps_the_message_unchanged() {
        let item = FeedItem {
            team: 0,
            run: 2,
            received: true,
            answered: None,
            message: r#"{"id":"a","content":{"text":"x"}}"#.into(),
        };
        let v: serde_json::Value = serde_json::from_str(&item.to_json()).unwrap();
        assert_eq!(v["run"], 2);
        assert_eq!(v["received"], true);
        assert_eq!(v["message"]["content"]["text"], "x");
        assert!(v.get("answered").is_none());
        let answered = FeedItem {
            answered: Some((42, Some("B".into()))),
            ..item
        };
        let v: serde_json::Value = serde_json::from_str(&answered.to_json()).unwrap();
        assert_eq!(v["answered"], serde_json::json!({"at": 42, "choice": "B"}));
        assert_eq!(v["message"]["id"], "a");
    }
}
