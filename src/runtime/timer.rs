//! A precise sleep for exercise deadlines.
//!
//! tokio's timer wheel has 1 ms granularity and the runtime parks in whole
//! milliseconds, so `sleep_until` wakes up to about 2 ms late. One dedicated
//! thread sleeping on a condition variable (a high-resolution kernel timer)
//! wakes within tens of microseconds and hands the wake-up to the async task
//! through a oneshot channel. One thread serves every exercise in the process.
//!
//! Only for the real clock: under tokio's paused test clock use
//! `tokio::time::sleep_until`. An exercise actor is given a [`Sleeper`]
//! that says which of the two it waits on.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant as StdInstant;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How an exercise actor waits for its deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sleeper {
    /// The process-wide precise timer ([`global`]): the real clock, to tens
    /// of microseconds. What `run` and `serve` use.
    Precise,
    /// tokio's `sleep_until`: follows tokio's paused test clock, so a test
    /// can run an exercise's hours in moments (on the real clock it wakes up
    /// to about 2 ms late).
    Tokio,
}

/// A pending wake-up.
pub type Wake = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Sleeper {
    /// Resolves at `at` (or at once if it has passed).
    pub fn sleep_until(self, at: Instant) -> Wake {
        match self {
            Sleeper::Precise => Box::pin(global().sleep_until(at)),
            Sleeper::Tokio => Box::pin(tokio::time::sleep_until(at)),
        }
    }
}

/// The process-wide precise timer.
pub fn global() -> &'static PreciseTimer {
    static TIMER: OnceLock<PreciseTimer> = OnceLock::new();
    TIMER.get_or_init(PreciseTimer::start)
}

pub struct PreciseTimer {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<(StdInstant, u64)>>,
    waiters: std::collections::HashMap<u64, oneshot::Sender<()>>,
    next: u64,
}

impl PreciseTimer {
    fn start() -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("precise-timer".into())
            .spawn(move || worker.run())
            .expect("spawn the timer thread");
        Self { shared }
    }

    /// Resolves at `at` (or at once if it has passed). Dropping the future
    /// before then is fine: its wake-up is discarded.
    pub fn sleep_until(&self, at: Instant) -> impl Future<Output = ()> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        {
            let mut q = self.shared.queue.lock().expect("timer lock");
            let id = q.next;
            q.next += 1;
            q.heap.push(Reverse((at.into_std(), id)));
            q.waiters.insert(id, tx);
        }
        self.shared.changed.notify_one();
        async move {
            let _ = rx.await;
        }
    }
}

impl Shared {
    fn run(&self) {
        let mut q = self.queue.lock().expect("timer lock");
        loop {
            let now = StdInstant::now();
            while let Some(&Reverse((at, id))) = q.heap.peek() {
                if at > now {
                    break;
                }
                q.heap.pop();
                if let Some(tx) = q.waiters.remove(&id) {
                    let _ = tx.send(());
                }
            }
            // Forget waiters whose futures were dropped, so the map stays small.
            if q.waiters.len() > 1024 && q.waiters.len() > 2 * q.heap.len() {
                q.waiters.retain(|_, tx| !tx.is_closed());
            }
            q = match q.heap.peek() {
                Some(&Reverse((at, _))) => {
                    let wait = at.saturating_duration_since(StdInstant::now());
                    self.changed.wait_timeout(q, wait).expect("timer lock").0
                }
                None => self.changed.wait(q).expect("timer lock"),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;

    /// Generous, so a loaded machine cannot fail it: the point is that no
    /// wake-up is missed or grossly late, not how fast the timer is.
    const LATE_BOUND: Duration = Duration::from_millis(400);

    #[tokio::test]
    async fn wakes_in_order_and_on_time() {
        let timer = global();
        let start = Instant::now();
        // Requested out of order; further apart than the bound, so deadline
        // order is the only order in which they can wake within it.
        let offsets = [1500u64, 500, 1000, 0, 2000];
        let (woke_tx, mut woke_rx) = mpsc::unbounded_channel();
        let mut handles = Vec::new();
        for ms in offsets {
            let at = start + Duration::from_millis(ms);
            let sleep = timer.sleep_until(at);
            let woke_tx = woke_tx.clone();
            handles.push(tokio::spawn(async move {
                sleep.await;
                let _ = woke_tx.send(ms);
                (ms, Instant::now())
            }));
        }
        drop(woke_tx);
        for h in handles {
            let (ms, woke) = h.await.unwrap();
            let due = start + Duration::from_millis(ms);
            assert!(woke >= due, "woke before its deadline");
            let late = woke - due;
            assert!(
                late <= LATE_BOUND,
                "the wake-up due at +{ms} ms came {late:?} late"
            );
        }
        let mut order = Vec::new();
        while let Some(ms) = woke_rx.recv().await {
            order.push(ms);
        }
        assert_eq!(order, [0, 500, 1000, 1500, 2000], "not in deadline order");
        // A dropped sleep does not disturb the others.
        let next = Instant::now() + Duration::from_millis(500);
        drop(timer.sleep_until(next - Duration::from_millis(50)));
        timer.sleep_until(next).await;
        assert!(Instant::now() >= next);
        assert!(Instant::now() <= next + LATE_BOUND);
    }

    #[tokio::test(start_paused = true)]
    async fn the_tokio_sleeper_follows_the_paused_clock() {
        let start = Instant::now();
        let at = start + Duration::from_secs(3600);
        Sleeper::Tokio.sleep_until(at).await;
        assert_eq!(Instant::now(), at);
    }
}
