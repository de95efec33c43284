//! One client's connection past its CONNECT: the two directions between
//! the client and rumqttd, every packet framed and checked on its way (the
//! topic rules of a checked user are `acl`'s), the gate's own pings to
//! rumqttd, and the bounded queues towards either side.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::PacketType;
use rumqttc::mqttbytes::v4::{Packet, PubComp, PubRel};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::frames::{FromClient, encode, from_client, read_frame};
use super::{Conn, GateError, State};

/// Packets queued towards one side of a connection.
const QUEUE: usize = 256;
/// Bytes queued towards one side of a connection.
const QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// How long a closing connection may take to pass on what it has queued.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

impl Conn {
    pub(super) async fn relay<S>(
        &self,
        client: S,
        buf: BytesMut,
        upstream: TcpStream,
        from_upstream: BytesMut,
    ) -> Result<(), GateError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut client_r, mut client_w) = tokio::io::split(client);
        let (mut upstream_r, mut upstream_w) = upstream.into_split();
        let (to_client, mut client_queue) = Queue::new();
        let (to_upstream, mut upstream_queue) = Queue::new();
        let result = tokio::select! {
            r = self.client_to_broker(&mut client_r, buf, &to_upstream, &to_client) => r,
            r = self.broker_to_client(&mut upstream_r, from_upstream, &to_upstream, &to_client) => r,
            r = write_queue(&mut client_queue, &mut client_w) => r,
            r = write_queue(&mut upstream_queue, &mut upstream_w) => r,
            r = self.keep_upstream_alive(&to_upstream) => r,
        };
        // Whatever was read is passed on before both sides close (a client's
        // last PUBLISH before it hangs up, say).
        let _ = timeout(DRAIN_TIMEOUT, async {
            drop((to_client, to_upstream));
            let _ = write_queue(&mut upstream_queue, &mut upstream_w).await;
            let _ = write_queue(&mut client_queue, &mut client_w).await;
        })
        .await;
        result
    }

    /// Client to rumqttd: every packet checked against MQTT, PUBLISH and
    /// SUBSCRIBE against the ACL.
    async fn client_to_broker<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        mut buf: BytesMut,
        to_upstream: &Queue,
        to_client: &Queue,
    ) -> Result<(), GateError> {
        loop {
            let next = match self.client_idle {
                Some(idle) => timeout(idle, read_frame(reader, &mut buf))
                    .await
                    .map_err(|_| GateError::KeepAlive)??,
                None => read_frame(reader, &mut buf).await?,
            };
            let Some((header, frame)) = next else {
                return Ok(());
            };
            match from_client(header, frame.clone())? {
                FromClient::Publish(publish) => {
                    self.publish(publish, frame, to_upstream, to_client).await?
                }
                FromClient::PubAck(pkid) => self.client_acked(pkid, frame, to_upstream).await?,
                FromClient::PubRel(pkid) => {
                    if self.state().dropped_from_client.remove(&pkid) {
                        reply(to_client, Packet::PubComp(PubComp::new(pkid)))?;
                    } else {
                        self.up(to_upstream, frame).await?;
                    }
                }
                FromClient::Subscribe(subscribe) => {
                    self.subscribe(subscribe, frame, to_upstream, to_client)
                        .await?
                }
                FromClient::Disconnect => {
                    // The client closes now; anything after is not read.
                    self.up(to_upstream, frame).await?;
                    return Ok(());
                }
                FromClient::Unsubscribe(filters) => {
                    {
                        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                        for filter in &filters {
                            held.remove(filter);
                        }
                    }
                    self.up(to_upstream, frame).await?
                }
                FromClient::Other => self.up(to_upstream, frame).await?,
            }
        }
    }

    /// rumqttd to the client: deliveries checked, partial SUBACKs rebuilt,
    /// answers to the gate's own pings kept back.
    async fn broker_to_client<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        mut buf: BytesMut,
        to_upstream: &Queue,
        to_client: &Queue,
    ) -> Result<(), GateError> {
        while let Some((header, frame)) = read_frame(reader, &mut buf).await? {
            match header.packet_type()? {
                PacketType::PingResp => {
                    let ours = self
                        .gate_pings
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                        .is_ok();
                    if !ours {
                        forward(to_client, frame).await?;
                    }
                }
                PacketType::Publish => self.deliver(header, frame, to_upstream, to_client).await?,
                PacketType::PubRel => {
                    let pubrel = PubRel::read(header, frame.clone())?;
                    if self.state().dropped_to_client.remove(&pubrel.pkid) {
                        self.reply_up(to_upstream, Packet::PubComp(PubComp::new(pubrel.pkid)))?;
                    } else {
                        forward(to_client, frame).await?;
                    }
                }
                PacketType::SubAck => self.suback(header, frame, to_client).await?,
                _ => forward(to_client, frame).await?,
            }
        }
        Ok(())
    }

    /// Pings rumqttd whenever half its keep-alive passed with nothing sent,
    /// so a quiet client (keep-alive 0, or long) keeps its connection.
    async fn keep_upstream_alive(&self, to_upstream: &Queue) -> Result<(), GateError> {
        let every = self.upstream_keep_alive / 2;
        let ping = encode(Packet::PingReq)?;
        loop {
            tokio::time::sleep(every).await;
            if self.sent_upstream.swap(false, Ordering::AcqRel) {
                continue;
            }
            self.gate_pings.fetch_add(1, Ordering::AcqRel);
            match to_upstream.try_send(ping.clone()) {
                Ok(()) => {}
                // A full queue is on its way to rumqttd anyway.
                Err(GateError::Stuck) => {
                    self.gate_pings.fetch_sub(1, Ordering::AcqRel);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues `frame` for rumqttd.
    pub(super) async fn up(&self, to_upstream: &Queue, frame: Bytes) -> Result<(), GateError> {
        self.sent_upstream.store(true, Ordering::Release);
        forward(to_upstream, frame).await
    }

    /// An answer of the gate's own to rumqttd, queued without waiting.
    /// An answer of the gate's own to rumqttd, queued without waiting.
    pub(super) fn reply_up(&self, to_upstream: &Queue, packet: Packet) -> Result<(), GateError> {
        self.sent_upstream.store(true, Ordering::Release);
        reply(to_upstream, packet)
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) async fn forward(queue: &Queue, frame: Bytes) -> Result<(), GateError> {
    queue.send(frame).await
}

/// An answer of the gate's own, queued without waiting: a side whose queue
/// is full does not read, and the connection is closed.
pub(super) fn reply(queue: &Queue, packet: Packet) -> Result<(), GateError> {
    queue.try_send(encode(packet)?)
}

/// Packets on their way to one side of a connection, bounded by count and
/// by bytes, so that a peer that does not read holds at most
/// [`QUEUE_BYTES`] (plus one packet) of the gate's memory, whatever the
/// size of its packets. Cheap to clone.
#[derive(Clone)]
pub(super) struct Queue {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<tokio::sync::Semaphore>,
}

/// A queued packet and its share of the queue's bytes, given back once it
/// is written.
type Queued = (Bytes, tokio::sync::OwnedSemaphorePermit);

impl Queue {
    pub(super) fn new() -> (Self, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let bytes = Arc::new(tokio::sync::Semaphore::new(QUEUE_BYTES));
        (Self { tx, bytes }, rx)
    }

    /// A packet's weight in the byte budget: its size, at most the whole
    /// budget (a packet bigger than it waits for an empty queue).
    fn weight(bytes: &Bytes) -> u32 {
        bytes.len().clamp(1, QUEUE_BYTES) as u32
    }

    async fn send(&self, bytes: Bytes) -> Result<(), GateError> {
        let permit = self
            .bytes
            .clone()
            .acquire_many_owned(Self::weight(&bytes))
            .await
            .map_err(|_| GateError::Closed)?;
        self.tx
            .send((bytes, permit))
            .await
            .map_err(|_| GateError::Closed)
    }

    fn try_send(&self, bytes: Bytes) -> Result<(), GateError> {
        let permit = self
            .bytes
            .clone()
            .try_acquire_many_owned(Self::weight(&bytes))
            .map_err(|e| match e {
                tokio::sync::TryAcquireError::NoPermits => GateError::Stuck,
                tokio::sync::TryAcquireError::Closed => GateError::Closed,
            })?;
        self.tx.try_send((bytes, permit)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => GateError::Stuck,
            mpsc::error::TrySendError::Closed(_) => GateError::Closed,
        })
    }
}

/// Writes what is queued until every sender is gone.
async fn write_queue<W: AsyncWrite + Unpin>(
    queue: &mut mpsc::Receiver<Queued>,
    writer: &mut W,
) -> Result<(), GateError> {
    while let Some((bytes, _permit)) = queue.recv().await {
        writer.write_all(&bytes).await?;
        while let Ok((more, _permit)) = queue.try_recv() {
            writer.write_all(&more).await?;
        }
        writer.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::{GateError, QUEUE_BYTES, Queue};

    /// A peer that does not read holds at most the queue's bytes of the
    /// gate's memory, however big its packets.
    #[tokio::test]
    async fn a_queue_holds_at_most_its_bytes() {
        let (queue, mut written) = Queue::new();
        let half = Bytes::from(vec![0u8; QUEUE_BYTES / 2]);
        queue.try_send(half.clone()).unwrap();
        queue.try_send(half.clone()).unwrap();
        assert!(matches!(
            queue.try_send(Bytes::from_static(b"x")),
            Err(GateError::Stuck)
        ));
        let waiting = tokio::spawn({
            let queue = queue.clone();
            let half = half.clone();
            async move { queue.send(half).await }
        });
        // Once one is written, its bytes are free again.
        drop(written.recv().await.unwrap());
        waiting.await.unwrap().unwrap();
        assert!(matches!(
            queue.try_send(Bytes::from_static(b"x")),
            Err(GateError::Stuck)
        ));
    }
}
