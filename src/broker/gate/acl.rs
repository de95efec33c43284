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
use super::{Conn, GateError, MAX_FILTERS_PER_CLIENT};

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
        if self.principal.may_publish(&publish.topic) {
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
        if !self.principal.is_checked() {
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
        let capped = self.principal.is_checked() && cap_at_qos1(&mut subscribe.filters);
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
        if !self.principal.may_subscribe(filter) {
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
        if !self.principal.is_checked() {
            return forward(to_client, frame).await;
        }
        let publish = Publish::read(header, frame.clone())?;
        let allowed = self.principal.may_receive(&publish.topic);
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
        let (name, client_id) = self.principal.who();
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use bytes::Bytes;
    use rumqttc::mqttbytes::v4::{
        Login, Packet, PubAck, PubRec, Publish, SubAck, Subscribe, SubscribeFilter,
        SubscribeReasonCode,
    };
    use rumqttc::mqttbytes::{self, FixedHeader, QoS};
    use tokio::sync::mpsc;

    use super::super::frames::encode;
    use super::super::relay::Queue;
    use super::super::{Conn, Gate, Inner, MAX_FILTERS_PER_CLIENT, Principal};
    use super::{Deliveries, Subscription, cap_at_qos1, merge_suback, plan_subscribe};
    use crate::broker::BrokerOptions;
    use crate::mqtt::acl::Acl;

    const ACL: &str = "user blue
topic read /exercise/blue/#
topic write /exercise/blue/commands
";
    const GRANTED: SubscribeReasonCode = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    const FAILED: SubscribeReasonCode = SubscribeReasonCode::Failure;

    fn gate(options: BrokerOptions) -> Arc<Inner> {
        let upstream = SocketAddr::from(([127, 0, 0, 1], 9));
        Gate::new(upstream, Login::new("scip-gate", "secret"), None, options).inner
    }

    /// The connection of `blue` (held to [`ACL`]), or of an unchecked
    /// client.
    fn conn(gate: &Arc<Inner>, blue: bool) -> Conn {
        let principal = match blue {
            true => Principal::User {
                name: "blue".to_owned(),
                client_id: "dashboard".to_owned(),
                acl: Arc::new(Acl::parse(ACL).unwrap()),
            },
            false => Principal::Unchecked,
        };
        Conn::new(gate.clone(), principal, 60)
    }

    /// Everything queued so far.
    fn taken<P>(queue: &mut mpsc::Receiver<(Bytes, P)>) -> Vec<Bytes> {
        std::iter::from_fn(|| queue.try_recv().ok().map(|(bytes, _)| bytes)).collect()
    }

    fn nothing() -> Vec<Bytes> {
        Vec::new()
    }

    fn header(frame: &Bytes) -> FixedHeader {
        mqttbytes::check(frame.iter(), usize::MAX).unwrap()
    }

    fn publish(topic: &str, qos: QoS, pkid: u16) -> Bytes {
        let mut publish = Publish::new(topic, qos, "x");
        publish.pkid = pkid;
        encode(Packet::Publish(publish)).unwrap()
    }

    fn puback(pkid: u16) -> Bytes {
        encode(Packet::PubAck(PubAck::new(pkid))).unwrap()
    }

    fn subscribe(pkid: u16, filters: &[(&str, QoS)]) -> Subscribe {
        Subscribe {
            pkid,
            filters: filters
                .iter()
                .map(|(path, qos)| SubscribeFilter::new((*path).to_owned(), *qos))
                .collect(),
        }
    }

    fn suback(pkid: u16, codes: Vec<SubscribeReasonCode>) -> Bytes {
        encode(Packet::SubAck(SubAck::new(pkid, codes))).unwrap()
    }

    /// Every withheld packet id the gate acknowledges now.
    fn releasable(deliveries: &mut Deliveries) -> Vec<u16> {
        std::iter::from_fn(|| deliveries.next_withheld()).collect()
    }

    #[test]
    fn a_withheld_delivery_waits_for_every_delivery_before_it() {
        let mut deliveries = Deliveries::default();
        for (pkid, withheld) in [(1, false), (2, true), (3, true), (4, false), (5, true)] {
            deliveries.sent(pkid, withheld);
        }
        assert_eq!(releasable(&mut deliveries), [0u16; 0]);
        deliveries.acknowledged(1);
        assert_eq!(releasable(&mut deliveries), [2, 3]);
        deliveries.acknowledged(9);
        assert_eq!(releasable(&mut deliveries), [0u16; 0]);
        deliveries.acknowledged(4);
        assert_eq!(releasable(&mut deliveries), [5]);
        // Nothing waits: a withheld delivery is acknowledged at once.
        deliveries.sent(6, true);
        assert_eq!(releasable(&mut deliveries), [6]);
        // The client acknowledges out of order.
        for (pkid, withheld) in [(7, false), (8, false), (9, true)] {
            deliveries.sent(pkid, withheld);
        }
        deliveries.acknowledged(8);
        assert_eq!(releasable(&mut deliveries), [0u16; 0]);
        deliveries.acknowledged(7);
        assert_eq!(releasable(&mut deliveries), [9]);
    }

    #[tokio::test]
    async fn rumqttd_gets_the_acknowledgements_of_withheld_deliveries_in_the_order_it_sent() {
        let gate = gate(BrokerOptions::default());
        let blue = conn(&gate, true);
        let (to_client, mut client) = Queue::new();
        let (to_upstream, mut upstream) = Queue::new();
        let sent = [
            publish("/exercise/blue/feed", QoS::AtLeastOnce, 1),
            publish("/exercise/red/feed", QoS::AtLeastOnce, 2),
            publish("/exercise/red/feed", QoS::AtLeastOnce, 3),
            publish("/exercise/blue/feed", QoS::AtLeastOnce, 4),
            publish("/exercise/red/feed", QoS::AtLeastOnce, 5),
            publish("/exercise/red/feed", QoS::AtMostOnce, 0),
            publish("/exercise/blue/feed", QoS::AtMostOnce, 0),
            publish("/exercise/red/feed", QoS::ExactlyOnce, 6),
        ];
        for frame in &sent {
            blue.deliver(header(frame), frame.clone(), &to_upstream, &to_client)
                .await
                .unwrap();
        }
        assert_eq!(
            taken(&mut client),
            [sent[0].clone(), sent[3].clone(), sent[6].clone()]
        );
        assert_eq!(
            taken(&mut upstream),
            [encode(Packet::PubRec(PubRec::new(6))).unwrap()]
        );
        assert!(blue.state().dropped_to_client.contains(&6));

        blue.client_acked(1, puback(1), &to_upstream).await.unwrap();
        assert_eq!(taken(&mut upstream), [puback(1), puback(2), puback(3)]);
        blue.client_acked(4, puback(4), &to_upstream).await.unwrap();
        assert_eq!(taken(&mut upstream), [puback(4), puback(5)]);
        let withheld = publish("/exercise/red/feed", QoS::AtLeastOnce, 7);
        blue.deliver(header(&withheld), withheld, &to_upstream, &to_client)
            .await
            .unwrap();
        assert_eq!(taken(&mut upstream), [puback(7)]);
        assert_eq!(taken(&mut client), nothing());

        // An unchecked client gets everything, and its acknowledgements
        // pass as they are.
        let engine = conn(&gate, false);
        for frame in &sent {
            engine
                .deliver(header(frame), frame.clone(), &to_upstream, &to_client)
                .await
                .unwrap();
        }
        assert_eq!(taken(&mut client), sent);
        engine
            .client_acked(2, puback(2), &to_upstream)
            .await
            .unwrap();
        assert_eq!(taken(&mut upstream), [puback(2)]);
    }

    #[tokio::test]
    async fn a_publish_the_user_may_not_write_is_acknowledged_and_dropped() {
        let gate = gate(BrokerOptions::default());
        let blue = conn(&gate, true);
        let (to_client, mut client) = Queue::new();
        let (to_upstream, mut upstream) = Queue::new();
        let cases = [
            (
                publish("/exercise/blue/commands", QoS::AtLeastOnce, 1),
                true,
                Vec::new(),
            ),
            (
                publish("/exercise/blue/feed", QoS::AtLeastOnce, 2),
                false,
                vec![puback(2)],
            ),
            (
                publish("/exercise/blue/feed", QoS::ExactlyOnce, 3),
                false,
                vec![encode(Packet::PubRec(PubRec::new(3))).unwrap()],
            ),
            (
                publish("/exercise/red/commands", QoS::AtMostOnce, 0),
                false,
                Vec::new(),
            ),
        ];
        for (frame, passed, answer) in cases {
            let packet = Publish::read(header(&frame), frame.clone()).unwrap();
            blue.publish(packet, frame.clone(), &to_upstream, &to_client)
                .await
                .unwrap();
            let expected = if passed {
                vec![frame.clone()]
            } else {
                Vec::new()
            };
            assert_eq!(taken(&mut upstream), expected, "{frame:02x?}");
            assert_eq!(taken(&mut client), answer, "{frame:02x?}");
        }
        assert!(blue.state().dropped_from_client.contains(&3));

        let engine = conn(&gate, false);
        let frame = publish("/exercise/red/commands", QoS::AtLeastOnce, 4);
        let packet = Publish::read(header(&frame), frame.clone()).unwrap();
        engine
            .publish(packet, frame.clone(), &to_upstream, &to_client)
            .await
            .unwrap();
        assert_eq!(taken(&mut upstream), [frame]);
        assert_eq!(taken(&mut client), nothing());
    }

    #[tokio::test]
    async fn a_subscribe_is_granted_filter_by_filter_and_answered_for_every_filter() {
        let gate = gate(BrokerOptions::default());
        let blue = conn(&gate, true);
        let engine = conn(&gate, false);
        let (to_client, mut client) = Queue::new();
        let (to_upstream, mut upstream) = Queue::new();
        let frame = |s: &Subscribe| encode(Packet::Subscribe(s.clone())).unwrap();

        // Some granted: rumqttd gets those (QoS 2 lowered to 1), and its
        // SUBACK is rebuilt for every filter the client asked for.
        let asked = subscribe(
            3,
            &[
                ("/exercise/blue/#", QoS::ExactlyOnce),
                ("/exercise/red/#", QoS::AtLeastOnce),
                ("/exercise/blue/feed", QoS::AtMostOnce),
            ],
        );
        blue.subscribe(asked.clone(), frame(&asked), &to_upstream, &to_client)
            .await
            .unwrap();
        let passed = subscribe(
            3,
            &[
                ("/exercise/blue/#", QoS::AtLeastOnce),
                ("/exercise/blue/feed", QoS::AtMostOnce),
            ],
        );
        assert_eq!(taken(&mut upstream), [frame(&passed)]);
        assert_eq!(taken(&mut client), nothing());
        let answer = suback(
            3,
            vec![GRANTED, SubscribeReasonCode::Success(QoS::AtMostOnce)],
        );
        blue.suback(header(&answer), answer, &to_client)
            .await
            .unwrap();
        assert_eq!(
            taken(&mut client),
            [suback(
                3,
                vec![
                    GRANTED,
                    FAILED,
                    SubscribeReasonCode::Success(QoS::AtMostOnce)
                ]
            )]
        );
        assert!(blue.state().partial.is_empty());

        // None granted: the gate answers, rumqttd hears nothing.
        let asked = subscribe(
            4,
            &[
                ("/exercise/red/#", QoS::AtLeastOnce),
                ("/other/#", QoS::AtMostOnce),
            ],
        );
        blue.subscribe(asked.clone(), frame(&asked), &to_upstream, &to_client)
            .await
            .unwrap();
        assert_eq!(taken(&mut upstream), nothing());
        assert_eq!(taken(&mut client), [suback(4, vec![FAILED, FAILED])]);

        // All granted as asked: the client's own packet, and rumqttd's
        // SUBACK as it is.
        let asked = subscribe(5, &[("/exercise/blue/feed", QoS::AtLeastOnce)]);
        blue.subscribe(asked.clone(), frame(&asked), &to_upstream, &to_client)
            .await
            .unwrap();
        assert_eq!(taken(&mut upstream), [frame(&asked)]);
        let answer = suback(5, vec![GRANTED]);
        blue.suback(header(&answer), answer.clone(), &to_client)
            .await
            .unwrap();
        assert_eq!(taken(&mut client), [answer]);

        // All granted, one lowered to QoS 1: rewritten, nothing to rebuild.
        let asked = subscribe(6, &[("/exercise/blue/feed", QoS::ExactlyOnce)]);
        blue.subscribe(asked.clone(), frame(&asked), &to_upstream, &to_client)
            .await
            .unwrap();
        let passed = subscribe(6, &[("/exercise/blue/feed", QoS::AtLeastOnce)]);
        assert_eq!(taken(&mut upstream), [frame(&passed)]);
        assert!(blue.state().partial.is_empty());

        // An unchecked client keeps QoS 2, and gets no shared subscription.
        let asked = subscribe(7, &[("/exercise/red/#", QoS::ExactlyOnce)]);
        engine
            .subscribe(asked.clone(), frame(&asked), &to_upstream, &to_client)
            .await
            .unwrap();
        assert_eq!(taken(&mut upstream), [frame(&asked)]);
        let asked = subscribe(8, &[("$share/g/exercise/#", QoS::AtLeastOnce)]);
        engine
            .subscribe(asked.clone(), frame(&asked), &to_upstream, &to_client)
            .await
            .unwrap();
        assert_eq!(taken(&mut upstream), nothing());
        assert_eq!(taken(&mut client), [suback(8, vec![FAILED])]);
    }

    #[test]
    fn filters_are_held_up_to_the_limits() {
        // rumqttd as a whole: two filters.
        let gate_of_two = gate(BrokerOptions {
            max_filters: 2,
            ..BrokerOptions::default()
        });
        let (one, other) = (conn(&gate_of_two, false), conn(&gate_of_two, false));
        assert!(one.may_hold("a"));
        assert!(one.may_hold("b"));
        assert!(one.may_hold("a"));
        assert!(!one.may_hold("c"));
        assert!(other.may_hold("b"));
        assert!(!other.may_hold("c"));

        // One client: MAX_FILTERS_PER_CLIENT.
        let gate = gate(BrokerOptions::default());
        let (one, other) = (conn(&gate, false), conn(&gate, false));
        for i in 0..MAX_FILTERS_PER_CLIENT {
            assert!(one.may_hold(&format!("/f/{i}")), "{i}");
        }
        assert!(!one.may_hold("/f/more"));
        assert!(one.may_hold("/f/0"));
        assert!(other.may_hold("/f/more"));
    }

    #[test]
    fn a_subscribe_is_planned_from_what_was_granted() {
        let asked = subscribe(
            1,
            &[
                ("a", QoS::AtLeastOnce),
                ("b", QoS::ExactlyOnce),
                ("c", QoS::AtMostOnce),
            ],
        );
        let mut capped = asked.clone();
        assert!(cap_at_qos1(&mut capped.filters));
        assert_eq!(
            capped,
            subscribe(
                1,
                &[
                    ("a", QoS::AtLeastOnce),
                    ("b", QoS::AtLeastOnce),
                    ("c", QoS::AtMostOnce)
                ]
            )
        );
        assert!(!cap_at_qos1(&mut capped.filters));

        let plan = |granted: &[bool], capped: bool| {
            plan_subscribe(asked.clone(), granted.to_vec(), capped)
        };
        assert_eq!(plan(&[true, true, true], false), Subscription::AsAsked);
        assert_eq!(
            plan(&[true, true, true], true),
            Subscription::Rewritten {
                subscribe: asked.clone(),
                partial: None
            }
        );
        assert_eq!(
            plan(&[false, false, false], true),
            Subscription::Refused(SubAck::new(1, vec![FAILED, FAILED, FAILED]))
        );
        assert_eq!(
            plan(&[false, true, false], false),
            Subscription::Rewritten {
                subscribe: subscribe(1, &[("b", QoS::ExactlyOnce)]),
                partial: Some(vec![false, true, false])
            }
        );
    }

    #[test]
    fn the_client_hears_of_every_filter_it_asked_for() {
        let ok = SubscribeReasonCode::Success(QoS::AtMostOnce);
        let check =
            |granted: &[bool], codes: &[SubscribeReasonCode], expected: &[SubscribeReasonCode]| {
                assert_eq!(
                    merge_suback(granted, codes.to_vec()),
                    expected,
                    "{granted:?} {codes:?}"
                );
            };
        check(&[true, false, true], &[GRANTED, ok], &[GRANTED, FAILED, ok]);
        check(&[false, true], &[FAILED], &[FAILED, FAILED]);
        // rumqttd answered fewer filters than it was given.
        check(&[true, true], &[ok], &[ok, FAILED]);
        check(&[false], &[], &[FAILED]);
    }
}
