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

    /// Reports every ticket left as closed.
    pub(super) fn close(&mut self) {
        for (_, ticket) in self.tickets.drain() {
            fail(ticket.ack, PublishError::Closed);
        }
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
