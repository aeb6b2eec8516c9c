//! Fans alert documents out to the configured sinks, one thread and one bounded queue per sink.
//!
//! Threads rather than tasks so the same dispatcher serves the synchronous `fimd check` and the
//! tokio daemon. The caller (detection) never waits on a sink: `send` serialises the document
//! once and offers it to each queue; a full queue drops it for that sink and counts it.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec};
use serde_json::Value;

use super::sink::SinkError;
use super::{jsonl, syslog, webhook};
use crate::config::alerts::SinkSettings;

/// How long `Drop` waits for the sink threads to finish what they hold.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// One document as every sink receives it: serialised once, shared.
pub(crate) struct Doc {
    pub json: String,
    /// What a syslog header and structured data need, taken from the document when syslog is on.
    pub syslog: Option<syslog::Fields>,
}

/// A sink's share of the outcome counters.
#[derive(Clone)]
pub(crate) struct Counters {
    sent: Option<IntCounter>,
    retried: Option<IntCounter>,
    dropped: Option<IntCounter>,
    dropped_total: Arc<AtomicU64>,
}

impl Counters {
    fn new(vec: Option<&IntCounterVec>, sink: &str, dropped_total: Arc<AtomicU64>) -> Counters {
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
    fn new(cap: usize) -> Queue {
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
    fn push(&self, doc: Arc<Doc>) -> bool {
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

    /// Documents still waiting (not in flight): for messages about a backlog.
    pub fn waiting(&self) -> usize {
        self.lock().items.len()
    }

    /// A flush begins: a batching sink sends what it holds without waiting for more.
    fn begin_flush(&self) {
        self.lock().flushing += 1;
        self.wake.notify_all();
    }

    fn end_flush(&self) {
        self.lock().flushing -= 1;
    }

    /// Waits until everything accepted is settled, or the deadline.
    fn wait_idle(&self, deadline: Instant) -> bool {
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

    fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_all();
    }

    /// Stops the queue and empties it; returns how many documents it held (not in flight).
    fn stop_and_clear(&self) -> usize {
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

    /// Documents a sink thread took and has not settled.
    fn in_flight(&self) -> usize {
        self.lock().in_flight
    }
}

/// What `Dispatcher::shutdown` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown {
    /// Documents still queued or in flight when the deadline passed, now dropped.
    pub given_up: u64,
    /// Documents dropped since start, all sinks together, `given_up` included.
    pub dropped: u64,
}

/// What a sink thread is handed.
pub(crate) struct Worker {
    pub queue: Arc<Queue>,
    pub counters: Counters,
    pub backoff: Backoff,
}

struct SinkThread {
    name: &'static str,
    queue: Arc<Queue>,
    counters: Counters,
    thread: Option<JoinHandle<()>>,
}

/// The running sinks. Dropping it stops them, waiting a bounded time for what they hold.
pub struct Dispatcher {
    sinks: Vec<SinkThread>,
    syslog: bool,
    dropped: Arc<AtomicU64>,
}

impl Dispatcher {
    /// Starts one thread per configured sink. A file sink is opened here (a bad path fails the
    /// start); network sinks connect in their thread and keep retrying, so a SIEM that is down
    /// at start does not stop fimd.
    pub fn start(settings: &SinkSettings, outputs: Option<IntCounterVec>) -> Result<Dispatcher, SinkError> {
        let dropped = Arc::new(AtomicU64::new(0));
        let mut d = Dispatcher {
            sinks: Vec::new(),
            syslog: settings.syslog.is_some(),
            dropped: dropped.clone(),
        };
        let worker = |name: &'static str| {
            let counters = Counters::new(outputs.as_ref(), name, dropped.clone());
            Worker {
                queue: Arc::new(Queue::new(settings.queue)),
                counters,
                backoff: Backoff::new(settings.retry_first, settings.retry_max),
            }
        };
        if let Some(target) = &settings.jsonl {
            let out = jsonl::JsonlSink::open_target(target)?;
            d.spawn("jsonl", worker("jsonl"), move |w| jsonl::run(out, w))?;
        }
        if let Some(s) = &settings.syslog {
            let s = s.clone();
            d.spawn("syslog", worker("syslog"), move |w| syslog::run(&s, w))?;
        }
        if let Some(s) = &settings.webhook {
            let s = s.clone();
            d.spawn("webhook", worker("webhook"), move |w| webhook::run(&s, w))?;
        }
        Ok(d)
    }

    fn spawn(
        &mut self,
        name: &'static str,
        w: Worker,
        body: impl FnOnce(Worker) + Send + 'static,
    ) -> Result<(), SinkError> {
        let queue = w.queue.clone();
        let counters = w.counters.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fimd-{name}"))
            .spawn(move || body(w))
            .map_err(|err| SinkError::Thread { sink: name, err })?;
        self.sinks.push(SinkThread {
            name,
            queue,
            counters,
            thread: Some(thread),
        });
        Ok(())
    }

    /// Offers `doc` to every sink without waiting; a sink whose queue is full drops it (counted).
    pub fn send(&self, doc: &Value) {
        if self.sinks.is_empty() {
            return;
        }
        let json = match serde_json::to_string(doc) {
            Ok(j) => j,
            Err(e) => {
                // A Value always serialises; should that change, say so rather than lose it silently.
                eprintln!("fimd: cannot serialise an alert ({e}); dropped");
                for s in &self.sinks {
                    s.counters.dropped(1);
                }
                return;
            }
        };
        let doc = Arc::new(Doc {
            json,
            syslog: self.syslog.then(|| syslog::Fields::of(doc)),
        });
        for s in &self.sinks {
            if !s.queue.push(doc.clone()) {
                s.counters.dropped(1);
            }
        }
    }

    /// Waits until every document sent so far is delivered or given up, or `timeout` passes;
    /// true when everything settled in time.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        // Every sink starts on its share at once; then wait for each.
        for s in &self.sinks {
            s.queue.begin_flush();
        }
        // A sink that misses the deadline leaves none for the others: stop at the first.
        let done = self.sinks.iter().all(|s| s.queue.wait_idle(deadline));
        for s in &self.sinks {
            s.queue.end_flush();
        }
        done
    }

    /// Ends delivery: waits up to `timeout` for every sink to deliver what it holds, then gives
    /// up on the rest and counts it as dropped (a document still queued at shutdown was never
    /// delivered, so it is not "0 dropped"). The sinks are stopped afterwards; later `send`s
    /// are dropped and counted.
    pub fn shutdown(&mut self, timeout: Duration) -> Shutdown {
        let mut given_up = 0u64;
        if !self.flush(timeout) {
            for s in &self.sinks {
                let n = s.queue.stop_and_clear();
                s.counters.dropped(n);
                given_up += n as u64;
            }
        }
        let before = self.dropped();
        // A sink in the middle of an attempt sees the stop and counts its batch dropped itself;
        // one stuck in a network call past the grace is counted here.
        let stuck = self.stop_threads();
        given_up += self.dropped() - before + stuck;
        Shutdown {
            given_up,
            dropped: self.dropped() + stuck,
        }
    }

    /// Stops the sink threads, waiting `STOP_GRACE` for them; returns the documents held by
    /// those that did not stop (queued or in flight), which are lost.
    fn stop_threads(&mut self) -> u64 {
        for s in &self.sinks {
            s.queue.stop();
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut lost = 0;
        for s in &mut self.sinks {
            let Some(t) = s.thread.take() else { continue };
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                // Stuck in a network call: leave it; it ends with the process.
                let held = s.queue.waiting() + s.queue.in_flight();
                eprintln!(
                    "fimd: the {} alert sink did not stop within {} s; {held} alerts are lost",
                    s.name,
                    STOP_GRACE.as_secs(),
                );
                lost += held as u64;
            }
        }
        lost
    }

    /// Documents lost so far, all sinks together (queue full, or given up).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The sinks running, by name (`jsonl`, `syslog`, `webhook`).
    pub fn sinks(&self) -> Vec<&'static str> {
        self.sinks.iter().map(|s| s.name).collect()
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::alerts::WebhookSettings;

    /// A webhook whose server refuses every connection: what is sent stays queued, retried.
    fn failing_webhook(queue: usize) -> SinkSettings {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        SinkSettings {
            webhook: Some(WebhookSettings {
                url: format!("http://127.0.0.1:{port}/fim"),
                batch: 1,
                flush: Duration::from_millis(1),
                timeout: Duration::from_secs(1),
                headers: Vec::new(),
            }),
            queue,
            retry_first: Duration::from_secs(60),
            retry_max: Duration::from_secs(60),
            ..SinkSettings::default()
        }
    }

    #[test]
    fn alerts_still_queued_at_shutdown_are_counted_dropped() {
        let mut d = Dispatcher::start(&failing_webhook(100), None).unwrap();
        for i in 0..7 {
            d.send(&serde_json::json!({ "n": i }));
        }
        let began = Instant::now();
        let end = d.shutdown(Duration::from_millis(300));
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "shutdown waited {:?}",
            began.elapsed()
        );
        assert_eq!(
            end,
            Shutdown {
                given_up: 7,
                dropped: 7
            }
        );
        assert_eq!(d.dropped(), 7);
        // After shutdown nothing is taken, and what is offered is counted.
        d.send(&serde_json::json!({ "late": true }));
        assert_eq!(d.dropped(), 8);
    }

    #[test]
    fn queue_overflow_and_shutdown_add_up() {
        let mut d = Dispatcher::start(&failing_webhook(3), None).unwrap();
        for i in 0..10 {
            d.send(&serde_json::json!({ "n": i }));
        }
        let end = d.shutdown(Duration::from_millis(200));
        // One in flight and three queued are given up; six never fitted.
        assert_eq!(end.dropped, 10, "{end:?}");
        assert!((3..=4).contains(&end.given_up), "{end:?}");
    }

    #[test]
    fn a_clean_shutdown_drops_nothing() {
        let mut d = Dispatcher::start(&SinkSettings::default(), None).unwrap();
        d.send(&serde_json::json!({ "n": 1 }));
        assert_eq!(
            d.shutdown(Duration::from_secs(1)),
            Shutdown {
                given_up: 0,
                dropped: 0
            }
        );
    }
}
