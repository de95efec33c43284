//! The bench's own subscriber to every exercise's timer, on a thread and
//! runtime of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, QoS};
use tokio::time::Instant;

use crate::WATCH_THREAD;
use crate::common;

/// A subscriber to every exercise's timer on a thread and runtime of its
/// own: (arrival, exercise index, `current`) of each "running" timer
/// message that arrives while `recording`.
pub struct TimerWatch {
    pub recording: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: std::thread::JoinHandle<Vec<(Instant, usize, u32)>>,
}

impl TimerWatch {
    pub fn start(port: u16) -> Self {
        let recording = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let flag = recording.clone();
        let thread = std::thread::Builder::new()
            .name(WATCH_THREAD.into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("subscriber runtime");
                runtime.block_on(watch_timers(port, flag, stopped, ready_tx))
            })
            .expect("subscriber thread");
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the timer subscriber is subscribed");
        Self {
            recording,
            stop: Some(stop),
            thread,
        }
    }

    pub fn finish(mut self) -> Vec<(Instant, usize, u32)> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.join().expect("subscriber thread")
    }
}

async fn watch_timers(
    port: u16,
    recording: Arc<AtomicBool>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<()>,
) -> Vec<(Instant, usize, u32)> {
    #[derive(serde::Deserialize)]
    struct Timer {
        current: u32,
        status: String,
    }
    let (options, net) =
        common::client_options(&format!("timer-watch-{}", std::process::id()), port);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    eventloop.set_network_options(net);
    client
        .subscribe("/exercise/+/timer", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    loop {
        if let Event::Incoming(Incoming::SubAck(_)) =
            eventloop.poll().await.expect("subscriber connects")
        {
            break;
        }
    }
    let _ = ready.send(());
    let mut seen = Vec::with_capacity(1 << 16);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let at = Instant::now();
                    if !recording.load(Ordering::Relaxed) {
                        continue;
                    }
                    let index = p
                        .topic
                        .strip_prefix("/exercise/load-")
                        .and_then(|t| t.strip_suffix("/timer"))
                        .and_then(|i| i.parse().ok());
                    if let (Some(index), Ok(t)) = (index, serde_json::from_slice::<Timer>(&p.payload))
                        && t.status == "running"
                    {
                        seen.push((at, index, t.current));
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("the timer subscriber lost its connection: {e}"),
            },
        }
    }
    let _ = client.disconnect().await;
    seen
}
