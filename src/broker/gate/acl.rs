//! What a client may do with topics: the ACL's rules on a checked user's
//! packets (an open broker and the engine's own login skip them) and the
//! limits on every client's subscriptions.
//!
//! A PUBLISH the user may not write is acknowledged and dropped; a
//! SUBSCRIBE gets a failure code for each filter the client may not hold
//! (the others are subscribed, and rumqttd's SUBACK is rebuilt to answer
//! every filter the client asked for); a delivery the user may not read is
//! withheld, and the gate acknowledges it to rumqttd in the client's place,
//! in the order rumqttd sent it ([`Deliveries`]).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::{
    Packet, PubAck, PubRec, Publish, SubAck, Subscribe, SubscribeFilter, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{FixedHeader, QoS};
use tracing::{debug, warn};

use super::frames::encode;
use super::relay::{Queue, forward, reply};
use super::{Conn, GateError, MAX_FILTERS_PER_CLIENT, Principal};

/// QoS 1 deliveries of rumqttd to a checked client not yet acknowledged,
/// in order, and whether each was withheld. rumqttd takes acknowledgements
/// only in the order it sent (an out-of-order PUBACK ends the connection),
/// so the gate acknowledges a withheld message only once the client has
/// acknowledged every delivery before it.
#[derive(Debug, Default)]
pub(super) struct Deliveries {
    /// Packet id, and whether the delivery was withheld.
    unacknowledged: VecDeque<(u16, bool)>,
}

impl Deliveries {
    /// rumqttd sent `pkid`; `withheld` when the client does not get it.
    fn sent(&mut self, pkid: u16, withheld: bool) {
        self.unacknowledged.push_back((pkid, withheld));
    }

    /// The client acknowledged `pkid`.
    fn acknowledged(&mut self, pkid: u16) {
        if let Some(at) = self.unacknowledged.iter().position(|(p, _)| *p == pkid) {
            self.unacknowledged.remove(at);
        }
    }

    /// The next withheld delivery the gate acknowledges now: the oldest
    /// unacknowledged one, when it was withheld.
    fn next_withheld(&mut self) -> Option<u16> {
        match self.unacknowledged.front() {
            Some(&(pkid, true)) => {
                self.unacknowledged.pop_front();
                Some(pkid)
            }
            _ => None,
        }
    }
}

impl Conn {
    /// A client's PUBLISH: passed on, or acknowledged and dropped when the
    /// user may not write its topic.
    pub(super) async fn publish(
        &self,
        publish: Publish,
        frame: Bytes,
        to_upstream: &Queue,
        to_client: &Queue,
    ) -> Result<(), GateError> {
        let Principal::User {
            name,
            client_id,
            acl,
        } = &self.principal
        else {
            return self.up(to_upstream, frame).await;
        };
        if acl.may_publish(Some(name), client_id, &publish.topic) {
            return self.up(to_upstream, frame).await;
        }
        self.refused("publish", &publish.topic);
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => reply(to_client, Packet::PubAck(PubAck::new(publish.pkid)))?,
            QoS::ExactlyOnce => {
                self.state().dropped_from_client.insert(publish.pkid);
                reply(to_client, Packet::PubRec(PubRec::new(publish.pkid)))?;
            }
        }
        Ok(())
    }

    /// A client's PUBACK, passed on; then the withheld deliveries that
    /// waited for it are acknowledged.
    pub(super) async fn client_acked(
        &self,
        pkid: u16,
        frame: Bytes,
        to_upstream: &Queue,
    ) -> Result<(), GateError> {
        if matches!(self.principal, Principal::Unchecked) {
            return self.up(to_upstream, frame).await;
        }
        let mut deliveries = self.deliveries.lock().await;
        self.up(to_upstream, frame).await?;
        deliveries.acknowledged(pkid);
        self.ack_withheld(&mut deliveries, to_upstream).await
    }

    /// A SUBSCRIBE, filter by filter under the ACL.
    pub(super) async fn subscribe(
        &self,
        mut subscribe: Subscribe,
        frame: Bytes,
        to_upstream: &Queue,
        to_client: &Queue,
    ) -> Result<(), GateError> {
        // QoS 2 deliveries to a checked user would need their own ordering
        // of withheld messages; it is granted at most QoS 1 (MQTT lets the
        // server grant less than asked).
        let capped =
            matches!(self.principal, Principal::User { .. }) && cap_at_qos1(&mut subscribe.filters);
        let granted: Vec<bool> = subscribe
            .filters
            .iter()
            .map(|f| self.may_hold(&f.path))
            .collect();
        match plan_subscribe(subscribe, granted, capped) {
            Subscription::AsAsked => self.up(to_upstream, frame).await,
            Subscription::Refused(suback) => reply(to_client, Packet::SubAck(suback)),
            Subscription::Rewritten { subscribe, partial } => {
                if let Some(granted) = partial {
                    self.state().partial.insert(subscribe.pkid, granted);
                }
                self.up(to_upstream, encode(Packet::Subscribe(subscribe))?)
                    .await
            }
        }
    }

    /// Whether the client may subscribe to `filter`: the ACL (for a checked
    /// user), no shared subscription, and room under the limits; a filter
    /// granted here counts as held by the client and by rumqttd.
    fn may_hold(&self, filter: &str) -> bool {
        if let Principal::User {
            name,
            client_id,
            acl,
        } = &self.principal
            && !acl.may_subscribe(Some(name), client_id, filter)
        {
            self.refused("subscribe", filter);
            return false;
        }
        // rumqttd panics for good when the one member of a shared group
        // leaves a persistent session with a delivery unacknowledged
        // (`router/routing.rs`, "group must exists"); MQTT 3.1.1 has no
        // shared subscriptions, so none are passed on.
        if filter.starts_with("$share/") {
            self.refused("share", filter);
            return false;
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.contains(filter) {
            return true;
        }
        if held.len() >= MAX_FILTERS_PER_CLIENT {
            self.refused("filters", filter);
            return false;
        }
        let mut known = self.gate.filters.lock().unwrap_or_else(|e| e.into_inner());
        if !known.contains(filter) {
            if known.len() >= self.gate.options.max_filters {
                drop(known);
                self.refused("filters", filter);
                return false;
            }
            known.insert(filter.to_owned());
        }
        held.insert(filter.to_owned());
        true
    }

    /// rumqttd's SUBACK, answering every filter the client asked for when
    /// some were left out of the SUBSCRIBE rumqttd got.
    pub(super) async fn suback(
        &self,
        header: FixedHeader,
        frame: Bytes,
        to_client: &Queue,
    ) -> Result<(), GateError> {
        let suback = SubAck::read(header, frame.clone())?;
        let Some(granted) = self.state().partial.remove(&suback.pkid) else {
            return forward(to_client, frame).await;
        };
        let merged = merge_suback(&granted, suback.return_codes);
        forward(
            to_client,
            encode(Packet::SubAck(SubAck::new(suback.pkid, merged)))?,
        )
        .await
    }

    /// A PUBLISH of rumqttd to the client: delivered, or withheld when the
    /// user may not read its topic.
    pub(super) async fn deliver(
        &self,
        header: FixedHeader,
        frame: Bytes,
        to_upstream: &Queue,
        to_client: &Queue,
    ) -> Result<(), GateError> {
        let Principal::User {
            name,
            client_id,
            acl,
        } = &self.principal
        else {
            return forward(to_client, frame).await;
        };
        let publish = Publish::read(header, frame.clone())?;
        let allowed = acl.may_receive(Some(name), client_id, &publish.topic);
        if !allowed {
            metrics::counter!("scip_broker_refused_total", "action" => "deliver").increment(1);
        }
        match (publish.qos, allowed) {
            (QoS::AtMostOnce, true) => forward(to_client, frame).await?,
            (QoS::AtMostOnce, false) => {}
            (QoS::AtLeastOnce, _) => {
                let mut deliveries = self.deliveries.lock().await;
                deliveries.sent(publish.pkid, !allowed);
                if allowed {
                    drop(deliveries);
                    forward(to_client, frame).await?;
                } else {
                    self.ack_withheld(&mut deliveries, to_upstream).await?;
                }
            }
            // Not granted by the gate; passed on should rumqttd send one
            // anyway.
            (QoS::ExactlyOnce, true) => forward(to_client, frame).await?,
            (QoS::ExactlyOnce, false) => {
                self.state().dropped_to_client.insert(publish.pkid);
                self.reply_up(to_upstream, Packet::PubRec(PubRec::new(publish.pkid)))?;
            }
        }
        Ok(())
    }

    /// Acknowledges to rumqttd the withheld deliveries whose predecessors
    /// are all acknowledged.
    async fn ack_withheld(
        &self,
        deliveries: &mut Deliveries,
        to_upstream: &Queue,
    ) -> Result<(), GateError> {
        while let Some(pkid) = deliveries.next_withheld() {
            self.up(to_upstream, encode(Packet::PubAck(PubAck::new(pkid)))?)
                .await?;
        }
        Ok(())
    }

    /// Counts a refused publish or subscribe; the first of a connection is
    /// logged as a warning, the rest at debug level.
    fn refused(&self, action: &'static str, topic: &str) {
        metrics::counter!("scip_broker_refused_total", "action" => action).increment(1);
        let (name, client_id) = match &self.principal {
            Principal::User {
                name, client_id, ..
            } => (name.as_str(), client_id.as_str()),
            Principal::Unchecked => ("", ""),
        };
        if !self.warned.swap(true, Ordering::Relaxed) {
            warn!(user = name, client_id, action, topic, "MQTT access refused");
        } else {
            debug!(user = name, client_id, action, topic, "MQTT access refused");
        }
    }
}

/// What goes to rumqttd for a SUBSCRIBE once each filter is granted or not.
#[derive(Debug, PartialEq, Eq)]
enum Subscription {
    /// The client's packet, as it is: every filter granted as asked.
    AsAsked,
    /// Nothing: no filter is granted, and this is the client's answer.
    Refused(SubAck),
    /// A SUBSCRIBE of the granted filters at the QoS granted; `partial`
    /// (which of the client's filters were granted) when some were left
    /// out, to rebuild rumqttd's SUBACK for the client.
    Rewritten {
        subscribe: Subscribe,
        partial: Option<Vec<bool>>,
    },
}

/// Lowers every QoS 2 filter to QoS 1; true when there was one.
fn cap_at_qos1(filters: &mut [SubscribeFilter]) -> bool {
    let capped = filters.iter().any(|f| f.qos == QoS::ExactlyOnce);
    for filter in filters {
        if filter.qos == QoS::ExactlyOnce {
            filter.qos = QoS::AtLeastOnce;
        }
    }
    capped
}

/// What rumqttd gets for `subscribe`, whose filters were `granted` one by
/// one and `capped` to QoS 1.
fn plan_subscribe(mut subscribe: Subscribe, granted: Vec<bool>, capped: bool) -> Subscription {
    if granted.iter().all(|g| *g) && !capped {
        Subscription::AsAsked
    } else if !granted.iter().any(|g| *g) {
        let codes = vec![SubscribeReasonCode::Failure; granted.len()];
        Subscription::Refused(SubAck::new(subscribe.pkid, codes))
    } else if granted.iter().all(|g| *g) {
        Subscription::Rewritten {
            subscribe,
            partial: None,
        }
    } else {
        let mut keep = granted.iter();
        subscribe.filters.retain(|_| *keep.next().unwrap_or(&false));
        Subscription::Rewritten {
            subscribe,
            partial: Some(granted),
        }
    }
}

/// The client's SUBACK codes: rumqttd's `codes` for the filters it got, in
/// order, and a failure for each filter left out.
fn merge_suback(granted: &[bool], codes: Vec<SubscribeReasonCode>) -> Vec<SubscribeReasonCode> {
    let mut codes = codes.into_iter();
    granted
        .iter()
        .map(|g| match g {
            true => codes.next().unwrap_or(SubscribeReasonCode::Failure),
            false => SubscribeReasonCode::Failure,
        })
        .collect()
}
