//! What stands between the dispatcher and one sink thread: a bounded queue that also tells
//! `flush` when everything accepted is settled, the sink's outcome counters, and the pause
//! between delivery attempts.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec};

use super::doc::Doc;

/// A sink's share of the outcome counters.
#[derive(Clone)]
pub(crate) struct Counters {
    sent: Option<IntCounter>,
    retried: Option<IntCounter>,
    dropped: Option<IntCounter>,
    dropped_total: Arc<AtomicU64>,
}

impl Counters {
    pub(super) fn new(vec: Option<&IntCounterVec>, sink: &str, dropped_total: Arc<AtomicU64>) -> Counters {
        let get = |result: &str| vec.map(|v| v.with_label_values(&[sink, result]));
        Counters {
            sent: get("sent"),
            retried: get("retried"),
            dropped: get("dropped"),
            dropped_total,
        }
    }

    pub fn sent(&self, n: usize) {
        if let Some(c) = &self.sent {
            c.inc_by(n as u64);
        }
    }

    /// One failed attempt that will be tried again.
    pub fn retried(&self) {
        if let Some(c) = &self.retried {
            c.inc();
        }
    }

    pub fn dropped(&self, n: usize) {
        if let Some(c) = &self.dropped {
            c.inc_by(n as u64);
        }
        self.dropped_total.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Exponential pause between delivery attempts.
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The pause before the next attempt (at least `floor`, e.g. a server's Retry-After).
    pub fn next(&mut self, floor: Duration) -> Duration {
        let d = self.next.max(floor).min(self.max);
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Arc<Doc>>,
    /// Taken by the sink thread and not yet delivered or given up.
    in_flight: usize,
    /// Callers waiting in `flush`: a batching sink sends what it has at once.
    flushing: usize,
    stopping: bool,
    /// The dispatcher gave up waiting for the sink thread and counted what it held as dropped:
    /// whatever the thread reports later is not counted again.
    abandoned: bool,
}

/// A bounded queue between the callers and one sink thread, which also tells `flush` when
/// everything accepted has been settled (delivered or given up).
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    /// Wakes the sink thread: a document, a flush or a stop.
    wake: Condvar,
    /// Wakes `flush`: the queue is empty and nothing is in flight.
    idle: Condvar,
    cap: usize,
}

impl Queue {
    pub(super) fn new(cap: usize) -> Queue {
        Queue {
            state: Mutex::new(QueueState::default()),
            wake: Condvar::new(),
            idle: Condvar::new(),
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panicking sink thread must not take detection down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// False when the queue is full (or stopping): the caller counts the drop.
    pub(super) fn push(&self, doc: Arc<Doc>) -> bool {
        let mut st = self.lock();
        if st.stopping || st.items.len() >= self.cap {
            return false;
        }
        st.items.push_back(doc);
        drop(st);
        self.wake.notify_one();
        true
    }

    /// Up to `max` documents, waiting for the first one as long as it takes and then up to
    /// `linger` for the batch to fill (not when a flush or stop is asked). `None` once stopping
    /// with nothing left.
    pub fn take(&self, max: usize, linger: Duration) -> Option<Vec<Arc<Doc>>> {
        let mut st = self.lock();
        while st.items.is_empty() {
            if st.stopping {
                return None;
            }
            st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let until = Instant::now() + linger;
        while st.items.len() < max && st.flushing == 0 && !st.stopping {
            let now = Instant::now();
            if now >= until {
                break;
            }
            st = self
                .wake
                .wait_timeout(st, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let n = st.items.len().min(max);
        st.in_flight += n;
        Some(st.items.drain(..n).collect())
    }

    /// `n` documents taken are now delivered or given up.
    pub fn settle(&self, n: usize) {
        let mut st = self.lock();
        st.in_flight -= n.min(st.in_flight);
        if st.in_flight == 0 && st.items.is_empty() {
            self.idle.notify_all();
        }
    }

    /// Sleeps `d` unless stopping; true when stopping.
    pub fn pause(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut st = self.lock();
        while !st.stopping {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            st = self
                .wake
                .wait_timeout(st, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    pub fn stopping(&self) -> bool {
        self.lock().stopping
    }

    /// A flush begins: a batching sink sends what it holds without waiting for more.
    pub(super) fn begin_flush(&self) {
        self.lock().flushing += 1;
        self.wake.notify_all();
    }

    pub(super) fn end_flush(&self) {
        self.lock().flushing -= 1;
    }

    /// Waits until everything accepted is settled, or the deadline.
    pub(super) fn wait_idle(&self, deadline: Instant) -> bool {
        let mut st = self.lock();
        loop {
            if st.items.is_empty() && st.in_flight == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .idle
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub(super) fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_all();
    }

    /// Stops the queue and empties it; returns how many documents it held (not in flight).
    pub(super) fn stop_and_clear(&self) -> usize {
        let mut st = self.lock();
        st.stopping = true;
        let n = st.items.len();
        st.items.clear();
        if st.in_flight == 0 {
            self.idle.notify_all();
        }
        drop(st);
        self.wake.notify_all();
        n
    }

    /// The dispatcher gives up on a sink thread that does not stop: empties the queue and returns
    /// what the thread held (queued and in flight), for the caller to count dropped. Done under
    /// the lock the thread counts under, so each document is counted once, whenever the thread
    /// gets to run again.
    pub(super) fn abandon(&self) -> usize {
        let mut st = self.lock();
        st.stopping = true;
        st.abandoned = true;
        let n = st.items.len() + st.in_flight;
        st.items.clear();
        st.in_flight = 0;
        drop(st);
        self.wake.notify_all();
        self.idle.notify_all();
        n
    }

    /// Documents a sink thread took and has not settled.
    #[cfg(test)]
    pub(super) fn in_flight(&self) -> usize {
        self.lock().in_flight
    }
}

/// What a sink thread is handed.
pub(crate) struct Worker {
    pub queue: Arc<Queue>,
    pub counters: Counters,
    pub backoff: Backoff,
}

impl Worker {
    /// `n` documents taken were delivered (not counted once the dispatcher abandoned the thread:
    /// it counted them dropped already).
    pub fn sent(&self, n: usize) {
        let st = self.queue.lock();
        if !st.abandoned {
            self.counters.sent(n);
        }
    }

    /// `n` documents taken were given up (counted once, see `sent`).
    pub fn dropped(&self, n: usize) {
        let st = self.queue.lock();
        if !st.abandoned {
            self.counters.dropped(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Arc<Doc> {
        Arc::new(Doc {
            json: "{}".into(),
            syslog: None,
        })
    }

    /// A sink thread abandoned by the dispatcher and reporting later (stuck past the grace,
    /// then unstuck) does not count its documents a second time.
    #[test]
    fn what_an_abandoned_thread_held_is_counted_once() {
        let total = Arc::new(AtomicU64::new(0));
        let w = Worker {
            queue: Arc::new(Queue::new(10)),
            counters: Counters::new(None, "test", total.clone()),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(1)),
        };
        for _ in 0..3 {
            assert!(w.queue.push(doc()));
        }
        let batch = w.queue.take(1, Duration::ZERO).unwrap();
        assert_eq!((batch.len(), w.queue.in_flight()), (1, 1));
        let held = w.queue.abandon();
        assert_eq!(held, 3);
        w.counters.dropped(held);
        // The thread wakes, gives up its batch, settles: nothing more is counted.
        w.dropped(batch.len());
        w.sent(batch.len());
        w.queue.settle(batch.len());
        assert_eq!(total.load(Ordering::Relaxed), 3);
        assert!(w.queue.take(1, Duration::ZERO).is_none());
        assert!(!w.queue.push(doc()));
    }
}
