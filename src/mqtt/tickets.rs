//! Publishes matched to their acknowledgements, without I/O and without a
//! clock: the manager hands in rumqttc's events and the time it read.
//!
//! rumqttc has no "publish and await PUBACK": it reports
//! `Outgoing::Publish(pkid)` in the order requests were submitted, then
//! `Incoming::PubAck(pkid)`. So each submitted publish gets a ticket that
//! waits in a FIFO until its pkid is known, then in a map until
//! acknowledged. Every ticket has a deadline while the connection is up;
//! the deadlines are suspended while it is down, and on a reconnect where
//! the broker lost the session the tickets it took with it are reported
//! failed, so the engine retries them.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use rumqttc::QoS;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

/// Why one publish attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("no acknowledgement within {0} ms")]
    NotAcknowledged(u128),
    #[error("the broker lost the session before acknowledging")]
    SessionLost,
    #[error("the MQTT client has shut down")]
    Closed,
    /// Several nodes: this node's lease renewals stopped succeeding, so it
    /// may no longer own the exercise; nothing was sent.
    #[error("not sent: this node's lease is not renewed (it may no longer own the exercise)")]
    Untrusted,
}

/// The outcome of a publish that asked for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckEvent {
    /// Acknowledged (QoS 1) or written to the socket (QoS 0).
    Acked {
        tag: u64,
        at: Instant,
    },
    Failed {
        tag: u64,
        error: PublishError,
    },
}

/// Where to report a publish's outcome. Unbounded, and bounded by what the
/// owner publishes: at most an acknowledgement and a failure per attempt,
/// taken by the owner at every turn of its loop. (A bounded queue would make
/// one slow exercise stall every other's publishes, or lose an outcome.)
#[derive(Debug, Clone)]
pub struct AckTo {
    pub tag: u64,
    pub to: mpsc::UnboundedSender<AckEvent>,
}

type TicketId = u64;

struct Ticket {
    ack: Option<AckTo>,
    submitted: Instant,
    deadline: Option<Instant>,
    /// Already reported as failed by timeout; a late acknowledgement still counts.
    timed_out: bool,
    qos: QoS,
}

/// The publishes handed to rumqttc and not yet acknowledged.
pub(super) struct Tickets {
    /// No acknowledgement within this long (while connected) is a failed
    /// attempt.
    delivery_timeout: Duration,
    next_ticket: TicketId,
    tickets: HashMap<TicketId, Ticket>,
    /// Submitted to rumqttc, packet id not yet known; in submission order.
    unassigned: VecDeque<TicketId>,
    /// Sent with QoS 1, awaiting PUBACK.
    by_pkid: HashMap<u16, TicketId>,
    /// A publish rumqttc holds back until `pkid` is acknowledged.
    collided: Option<(u16, TicketId)>,
    deadlines: BTreeSet<(Instant, TicketId)>,
    /// Fresh publishes rumqttc took back from its channel when the
    /// connection failed, lost if the broker no longer has our session.
    at_risk: usize,
}

impl Tickets {
    pub(super) fn new(delivery_timeout: Duration) -> Self {
        Self {
            delivery_timeout,
            next_ticket: 0,
            tickets: HashMap::new(),
            unassigned: VecDeque::new(),
            by_pkid: HashMap::new(),
            collided: None,
            deadlines: BTreeSet::new(),
            at_risk: 0,
        }
    }

    /// A publish about to be handed to rumqttc at `now`: its ticket, due
    /// within the delivery timeout.
    pub(super) fn submit(&mut self, ack: Option<AckTo>, qos: QoS, now: Instant) -> TicketId {
        let id = self.next_ticket;
        self.next_ticket += 1;
        let deadline = now + self.delivery_timeout;
        self.tickets.insert(
            id,
            Ticket {
                ack,
                submitted: now,
                deadline: Some(deadline),
                timed_out: false,
                qos,
            },
        );
        self.deadlines.insert((deadline, id));
        self.unassigned.push_back(id);
        id
    }

    /// rumqttc did not take the publish just submitted as `id` (its event
    /// loop is gone): reported closed.
    pub(super) fn withdraw(&mut self, id: TicketId) {
        self.unassigned.pop_back();
        if let Some(t) = self.tickets.remove(&id) {
            if let Some(at) = t.deadline {
                self.deadlines.remove(&(at, id));
            }
            fail(t.ack, PublishError::Closed);
        }
    }

    /// rumqttc wrote a publish: the oldest unassigned one, unless it is a
    /// resend of one we know or the one held back by a collision.
    pub(super) fn on_sent(&mut self, pkid: u16, now: Instant) {
        let id = match self.collided {
            Some((held, id)) if held == pkid && pkid != 0 => {
                self.collided = None;
                id
            }
            _ if pkid != 0 && self.by_pkid.contains_key(&pkid) => return,
            _ => match self.unassigned.pop_front() {
                Some(id) => id,
                None => return,
            },
        };
        let qos = self.tickets.get(&id).map(|t| t.qos);
        if pkid == 0 || qos == Some(QoS::AtMostOnce) {
            self.acknowledge(id, now);
        } else {
            self.by_pkid.insert(pkid, id);
        }
    }

    /// rumqttc holds the next publish back until `pkid` is acknowledged.
    pub(super) fn on_await_ack(&mut self, pkid: u16) {
        if let Some(id) = self.unassigned.pop_front() {
            self.collided = Some((pkid, id));
        }
    }

    /// The broker acknowledged `pkid`.
    pub(super) fn on_puback(&mut self, pkid: u16, now: Instant) {
        if let Some(id) = self.by_pkid.remove(&pkid) {
            self.acknowledge(id, now);
        }
    }

    /// The connection is down: no deadline runs while the broker is away;
    /// `at_risk` fresh publishes were taken back from rumqttc's channel.
    pub(super) fn suspend(&mut self, at_risk: usize) {
        self.at_risk = at_risk;
        self.deadlines.clear();
        for t in self.tickets.values_mut() {
            t.deadline = None;
        }
    }

    /// Connected at `now`: unless the broker kept our session, what it
    /// lost is reported failed; every ticket not timed out gets a fresh
    /// deadline.
    pub(super) fn resume(&mut self, session_present: bool, now: Instant) {
        if !session_present {
            // The broker forgot our session: rumqttc dropped what it would
            // have resent, and the oldest `at_risk` queued requests.
            let lost: Vec<TicketId> = self
                .by_pkid
                .drain()
                .map(|(_, id)| id)
                .chain(self.collided.take().map(|(_, id)| id))
                .chain(
                    self.unassigned
                        .drain(..self.at_risk.min(self.unassigned.len())),
                )
                .collect();
            for id in lost {
                if let Some(t) = self.tickets.remove(&id)
                    && !t.timed_out
                {
                    fail(t.ack, PublishError::SessionLost);
                }
            }
        }
        self.at_risk = 0;
        for (&id, t) in self.tickets.iter_mut() {
            if !t.timed_out {
                let at = now + self.delivery_timeout;
                t.deadline = Some(at);
                self.deadlines.insert((at, id));
            }
        }
    }

    /// The earliest deadline, if any runs.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// Reports every ticket due by `now` as not acknowledged; an
    /// acknowledgement may still come.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(t) = self.tickets.get_mut(&id) {
                t.deadline = None;
                t.timed_out = true;
                if let Some(ack) = &t.ack {
                    let _ = ack.to.send(AckEvent::Failed {
                        tag: ack.tag,
                        error: PublishError::NotAcknowledged(self.delivery_timeout.as_millis()),
                    });
                }
            }
        }
    }

    /// Whether every ticket left was reported failed by timeout.
    pub(super) fn all_timed_out(&self) -> bool {
        self.tickets.values().all(|t| t.timed_out)
    }

    /// Reports every ticket left as closed and forgets them all: the
    /// waiting queue, the packet ids and the deadlines with them, so a late
    /// PUBACK or a deadline after the close reports nothing.
    pub(super) fn close(&mut self) {
        for (_, ticket) in self.tickets.drain() {
            fail(ticket.ack, PublishError::Closed);
        }
        self.unassigned.clear();
        self.by_pkid.clear();
        self.collided = None;
        self.deadlines.clear();
    }

    fn acknowledge(&mut self, id: TicketId, now: Instant) {
        let Some(t) = self.tickets.remove(&id) else {
            return;
        };
        if let Some(at) = t.deadline {
            self.deadlines.remove(&(at, id));
        }
        if let Some(ack) = t.ack {
            let _ = ack.to.send(AckEvent::Acked {
                tag: ack.tag,
                at: now,
            });
        }
        debug!(
            latency_us = now.saturating_duration_since(t.submitted).as_micros() as u64,
            "acknowledged"
        );
    }
}

pub(super) fn fail(ack: Option<AckTo>, error: PublishError) {
    if let Some(ack) = ack {
        let _ = ack.to.send(AckEvent::Failed {
            tag: ack.tag,
            error,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rumqttc::QoS;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::{AckEvent, AckTo, Tickets};

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// Tickets, and what they report for publishes asking for an outcome.
    struct Check {
        tickets: Tickets,
        outcomes: mpsc::UnboundedReceiver<AckEvent>,
        to: mpsc::UnboundedSender<AckEvent>,
        start: Instant,
    }

    impl Check {
        fn new() -> Self {
            let (to, outcomes) = mpsc::unbounded_channel();
            Self {
                tickets: Tickets::new(TIMEOUT),
                outcomes,
                to,
                start: Instant::now(),
            }
        }

        fn at(&self, secs: u64) -> Instant {
            self.start + Duration::from_secs(secs)
        }

        /// Submits a publish tagged `tag` at `secs`.
        fn submit(&mut self, tag: u64, qos: QoS, secs: u64) -> u64 {
            let ack = AckTo {
                tag,
                to: self.to.clone(),
            };
            self.tickets.submit(Some(ack), qos, self.at(secs))
        }

        /// The outcomes reported since the last look, as text: `+tag` for
        /// an acknowledgement (and its second), `-tag` and why for a
        /// failure.
        fn reported(&mut self) -> Vec<String> {
            let start = self.start;
            std::iter::from_fn(|| self.outcomes.try_recv().ok())
                .map(|event| match event {
                    AckEvent::Acked { tag, at } => {
                        format!("+{tag} at {}", (at - start).as_secs())
                    }
                    AckEvent::Failed { tag, error } => format!("-{tag} {error}"),
                })
                .collect()
        }
    }

    #[test]
    fn packet_ids_are_matched_in_submission_order_and_pubacks_to_them() {
        let mut c = Check::new();
        for tag in 1..=3 {
            c.submit(tag, QoS::AtLeastOnce, 0);
        }
        c.tickets.on_sent(10, c.at(0));
        c.tickets.on_sent(11, c.at(0));
        c.tickets.on_sent(12, c.at(0));
        assert_eq!(c.reported(), [""; 0]);
        c.tickets.on_puback(11, c.at(1));
        c.tickets.on_puback(10, c.at(2));
        c.tickets.on_puback(99, c.at(2));
        c.tickets.on_puback(11, c.at(2));
        assert_eq!(c.reported(), ["+2 at 1", "+1 at 2"]);
        // A resend of a publish in flight takes no new ticket.
        c.submit(4, QoS::AtLeastOnce, 3);
        c.tickets.on_sent(12, c.at(3));
        c.tickets.on_sent(13, c.at(3));
        c.tickets.on_puback(13, c.at(4));
        c.tickets.on_puback(12, c.at(4));
        assert_eq!(c.reported(), ["+4 at 4", "+3 at 4"]);
        assert!(c.tickets.all_timed_out());
        assert_eq!(c.tickets.next_deadline(), None);
    }

    #[test]
    fn a_qos_0_publish_is_done_once_written() {
        let mut c = Check::new();
        c.submit(1, QoS::AtMostOnce, 0);
        c.submit(2, QoS::AtLeastOnce, 0);
        c.submit(3, QoS::AtMostOnce, 0);
        c.tickets.on_sent(0, c.at(1));
        c.tickets.on_sent(7, c.at(1));
        c.tickets.on_sent(0, c.at(2));
        assert_eq!(c.reported(), ["+1 at 1", "+3 at 2"]);
        // Nothing submitted: a write is no one's.
        c.tickets.on_sent(0, c.at(2));
        c.tickets.on_puback(7, c.at(3));
        assert_eq!(c.reported(), ["+2 at 3"]);
    }

    /// rumqttc holds a publish back while its packet id is in use, and
    /// writes it once that is acknowledged.
    #[test]
    fn a_publish_held_back_by_a_packet_id_in_use_keeps_its_ticket() {
        let mut c = Check::new();
        c.submit(1, QoS::AtLeastOnce, 0);
        c.submit(2, QoS::AtLeastOnce, 0);
        c.submit(3, QoS::AtLeastOnce, 0);
        c.tickets.on_sent(1, c.at(0));
        c.tickets.on_await_ack(1);
        c.tickets.on_sent(2, c.at(0));
        c.tickets.on_puback(1, c.at(1));
        c.tickets.on_sent(1, c.at(1));
        c.tickets.on_puback(2, c.at(2));
        c.tickets.on_puback(1, c.at(3));
        assert_eq!(c.reported(), ["+1 at 1", "+3 at 2", "+2 at 3"]);
    }

    #[test]
    fn what_the_broker_lost_with_the_session_is_reported_failed() {
        let mut c = Check::new();
        for tag in 1..=6 {
            c.submit(tag, QoS::AtLeastOnce, 0);
        }
        c.tickets.on_sent(1, c.at(0));
        c.tickets.on_sent(2, c.at(0));
        c.tickets.on_await_ack(1);
        c.tickets.on_puback(2, c.at(1));
        assert_eq!(c.reported(), ["+2 at 1"]);
        // Down, with two fresh publishes taken back from rumqttc.
        c.tickets.suspend(2);
        c.tickets.resume(false, c.at(2));
        let mut lost = c.reported();
        lost.sort();
        assert_eq!(
            lost,
            [
                "-1 the broker lost the session before acknowledging",
                "-3 the broker lost the session before acknowledging",
                "-4 the broker lost the session before acknowledging",
                "-5 the broker lost the session before acknowledging",
            ]
        );
        // The one left is written after the reconnect, and acknowledged.
        c.tickets.on_sent(1, c.at(3));
        c.tickets.on_puback(1, c.at(3));
        assert_eq!(c.reported(), ["+6 at 3"]);
        // A packet id of the lost session is no one's any more.
        c.tickets.on_puback(2, c.at(3));
        assert_eq!(c.reported(), [""; 0]);
    }

    #[test]
    fn a_resumed_session_loses_nothing() {
        let mut c = Check::new();
        c.submit(1, QoS::AtLeastOnce, 0);
        c.submit(2, QoS::AtLeastOnce, 0);
        c.tickets.on_sent(1, c.at(0));
        c.tickets.suspend(1);
        c.tickets.resume(true, c.at(1));
        assert_eq!(c.reported(), [""; 0]);
        // rumqttc resends the first and writes the second.
        c.tickets.on_sent(1, c.at(1));
        c.tickets.on_sent(2, c.at(1));
        c.tickets.on_puback(1, c.at(2));
        c.tickets.on_puback(2, c.at(2));
        assert_eq!(c.reported(), ["+1 at 2", "+2 at 2"]);
        // The next reconnect has nothing at risk.
        c.submit(3, QoS::AtLeastOnce, 3);
        c.tickets.resume(false, c.at(3));
        assert_eq!(c.reported(), [""; 0]);
    }

    #[test]
    fn an_unacknowledged_publish_fails_at_its_deadline_and_may_still_be_acknowledged() {
        let mut c = Check::new();
        c.submit(1, QoS::AtLeastOnce, 0);
        c.submit(2, QoS::AtLeastOnce, 2);
        c.tickets.on_sent(1, c.at(2));
        c.tickets.on_sent(2, c.at(2));
        assert_eq!(c.tickets.next_deadline(), Some(c.at(5)));
        c.tickets.expire(c.at(4));
        assert_eq!(c.reported(), [""; 0]);
        c.tickets.expire(c.at(5));
        assert_eq!(c.reported(), ["-1 no acknowledgement within 5000 ms"]);
        assert_eq!(c.tickets.next_deadline(), Some(c.at(7)));
        assert!(!c.tickets.all_timed_out());
        c.tickets.on_puback(2, c.at(6));
        assert_eq!(c.reported(), ["+2 at 6"]);
        assert!(c.tickets.all_timed_out());
        assert_eq!(c.tickets.next_deadline(), None);
        // Late, but it counts.
        c.tickets.on_puback(1, c.at(9));
        assert_eq!(c.reported(), ["+1 at 9"]);
        // Timed out and then lost with the session: reported once.
        c.submit(3, QoS::AtLeastOnce, 10);
        c.tickets.on_sent(3, c.at(10));
        c.tickets.expire(c.at(15));
        c.tickets.suspend(0);
        c.tickets.resume(false, c.at(16));
        assert_eq!(c.reported(), ["-3 no acknowledgement within 5000 ms"]);
    }

    #[test]
    fn no_deadline_runs_while_disconnected() {
        let mut c = Check::new();
        c.submit(1, QoS::AtLeastOnce, 0);
        c.submit(2, QoS::AtLeastOnce, 0);
        c.tickets.on_sent(1, c.at(0));
        c.tickets.on_sent(2, c.at(0));
        c.tickets.expire(c.at(5));
        assert_eq!(c.reported().len(), 2);
        c.submit(3, QoS::AtLeastOnce, 6);
        c.tickets.on_sent(3, c.at(6));
        c.tickets.suspend(0);
        assert_eq!(c.tickets.next_deadline(), None);
        c.tickets.expire(c.at(100));
        assert_eq!(c.reported(), [""; 0]);
        // Back: a full delivery timeout from the reconnect, and none for
        // the tickets that already timed out.
        c.tickets.resume(true, c.at(200));
        assert_eq!(c.tickets.next_deadline(), Some(c.at(205)));
        c.tickets.expire(c.at(204));
        assert_eq!(c.reported(), [""; 0]);
        c.tickets.expire(c.at(205));
        assert_eq!(c.reported(), ["-3 no acknowledgement within 5000 ms"]);
        assert_eq!(c.tickets.next_deadline(), None);
    }

    #[test]
    fn a_publish_rumqttc_refuses_or_never_sends_is_reported_closed() {
        let mut c = Check::new();
        c.submit(1, QoS::AtLeastOnce, 0);
        let refused = c.submit(2, QoS::AtLeastOnce, 0);
        c.tickets.withdraw(refused);
        assert_eq!(c.reported(), ["-2 the MQTT client has shut down"]);
        assert_eq!(c.tickets.next_deadline(), Some(c.at(5)));
        // The refused one took no packet id.
        c.tickets.on_sent(1, c.at(1));
        c.tickets.on_puback(1, c.at(1));
        assert_eq!(c.reported(), ["+1 at 1"]);
        c.submit(3, QoS::AtLeastOnce, 2);
        c.submit(4, QoS::AtMostOnce, 2);
        c.tickets.on_sent(2, c.at(2));
        c.tickets.close();
        let mut closed = c.reported();
        closed.sort();
        assert_eq!(
            closed,
            [
                "-3 the MQTT client has shut down",
                "-4 the MQTT client has shut down"
            ]
        );
        assert!(c.tickets.all_timed_out());
        // Nothing is left waiting: no deadline, and a late PUBACK for the
        // closed publish (or a packet id for one still queued) reports nothing.
        assert_eq!(c.tickets.next_deadline(), None);
        c.tickets.on_puback(2, c.at(3));
        c.tickets.on_sent(3, c.at(3));
        c.tickets.expire(c.at(60));
        assert_eq!(c.reported(), Vec::<String>::new());
    }
}
