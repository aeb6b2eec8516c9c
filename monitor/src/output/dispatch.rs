//! Fans alert documents out to the configured sinks, one thread and one bounded queue per sink.
//!
//! Threads rather than tasks so the same dispatcher serves the synchronous `fimd check` and the
//! tokio daemon. The caller (detection) never waits on a sink: `send` serialises the document
//! once and offers it to each queue; a full queue drops it for that sink and counts it.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;
use serde_json::Value;

use super::doc::{Doc, Fields};
use super::queue::{Backoff, Counters, Queue, Worker};
use super::sink::SinkError;
use super::typed::Alert;
use super::{jsonl, syslog, webhook};
use crate::config::alerts::SinkSettings;

/// How long `Drop` waits for the sink threads to finish what they hold.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What `Dispatcher::shutdown` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown {
    /// Documents still queued or in flight when the deadline passed, now dropped.
    pub given_up: u64,
    /// Documents dropped since start, all sinks together, `given_up` included.
    pub dropped: u64,
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

    /// Offers `alert` to every sink without waiting; a sink whose queue is full drops it
    /// (counted). Syslog's header and structured data come from its typed parts.
    pub fn send_alert(&self, alert: &Alert) {
        self.offer(|| alert.json(), || alert.syslog_fields());
    }

    /// Offers a document given as JSON (one fimd did not build as an [`Alert`]); syslog reads
    /// its header and structured data out of it.
    pub fn send(&self, doc: &Value) {
        self.offer(|| serde_json::to_string(doc), || Fields::of(doc));
    }

    /// Serialises the document once (`json`) and offers it to every sink.
    fn offer(&self, json: impl FnOnce() -> serde_json::Result<String>, fields: impl FnOnce() -> Fields) {
        if self.sinks.is_empty() {
            return;
        }
        let json = match json() {
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
            syslog: self.syslog.then(fields),
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
        let flushed = self.flush(timeout);
        // Read before anything is stopped: a sink in the middle of an attempt sees the stop and
        // counts its batch dropped itself, at once, and that batch was given up too. (Read after
        // the stop, a sink woken first made "still held" miss it.)
        let before = self.dropped();
        if !flushed {
            for s in &self.sinks {
                let n = s.queue.stop_and_clear();
                s.counters.dropped(n);
            }
        }
        // One stuck in a network call past the grace is counted dropped by `stop_threads`, once.
        self.stop_threads();
        let dropped = self.dropped();
        Shutdown {
            given_up: dropped - before,
            dropped,
        }
    }

    /// Stops the sink threads, waiting `STOP_GRACE` for them; the documents held by those that
    /// did not stop (queued or in flight) are lost, counted dropped here (and not again by the
    /// thread should it finish later). Returns how many.
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
                let held = s.queue.abandon();
                s.counters.dropped(held);
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

    /// Waits (on the queue's state, not a sleep) until the sink thread has taken the first
    /// document and holds it, failing and waiting to retry, so what follows stays queued.
    fn wait_in_flight(d: &Dispatcher) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while d.sinks[0].queue.in_flight() == 0 {
            assert!(
                Instant::now() < deadline,
                "the webhook thread never took the first alert"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn alerts_still_queued_at_shutdown_are_counted_dropped() {
        let mut d = Dispatcher::start(&failing_webhook(100), None).unwrap();
        d.send(&serde_json::json!({ "n": 0 }));
        wait_in_flight(&d);
        for i in 1..7 {
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
        d.send(&serde_json::json!({ "n": 0 }));
        wait_in_flight(&d);
        for i in 1..10 {
            d.send(&serde_json::json!({ "n": i }));
        }
        let end = d.shutdown(Duration::from_millis(200));
        // One in flight and three queued are given up; six never fitted.
        assert_eq!(end.dropped, 10, "{end:?}");
        assert_eq!(end.given_up, 4, "{end:?}");
        assert_eq!(d.dropped(), 10);
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
