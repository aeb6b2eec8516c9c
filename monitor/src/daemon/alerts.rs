//! The alert writer: the only part that builds alert documents and sends them. It owns the
//! outbox (alerts of the step under way, sent together once it is done), the origin stamped on
//! each, the sinks, the record of differences already alerted, and the change metrics.
//! Everything that turns a `Change` into a document happens here (`alert`), so a typed alert
//! replaces one function.
use std::collections::HashSet;
use std::sync::Arc;

use super::modifier::Modifier;
use super::state_writes::Episode;
use crate::alerted::Alerted;
use crate::attribution::PodDirectory;
use crate::baseline::seal::Key;
use crate::baseline::store::Store;
use crate::compare::{Change, Kind};
use crate::config::Settings;
use crate::output::alert::{BaselineRef, Origin};
use crate::output::dispatch::{Dispatcher, Shutdown};
use crate::output::typed::{Alert, EventKind};
use crate::sensor::SensorError;
use crate::telemetry::Metrics;

/// How many documents a stretch of the outbox held, by ECS `event.kind`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Alerts sent, plus those not sent because they were alerted before.
    pub alerts: usize,
    /// Allowed events (`appended`, `rotated`, ...).
    pub events: usize,
}

/// A mark in the outbox and the suppressed count, to tally what came after it.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    outbox: usize,
    suppressed: usize,
}

/// Builds, queues and sends every document the daemon emits (see the module doc).
pub struct AlertWriter {
    sink: Dispatcher,
    /// Documents of the step under way, sent by `send`.
    outbox: Vec<Alert>,
    origin: Origin,
    metrics: Arc<Metrics>,
    pods: PodDirectory,
    /// The sensor's name, for `fim.kernel.sensor`.
    sensor: &'static str,
    /// The differences already alerted (persisted) and those outstanding.
    alerted: Alerted,
    /// Alerts not sent because they were sent before (counted for the evidence record).
    suppressed: usize,
    /// Tokens of the alerts in the outbox, stored when it is sent.
    alerted_new: Vec<(Vec<u8>, Vec<u8>)>,
    /// The kinds of watch failure already alerted this run (each is counted every time).
    watch_failures_alerted: HashSet<&'static str>,
}

impl AlertWriter {
    pub fn new(
        sink: Dispatcher,
        origin: Origin,
        metrics: Arc<Metrics>,
        pods: PodDirectory,
        sensor: &'static str,
        alerted: Alerted,
    ) -> AlertWriter {
        AlertWriter {
            sink,
            outbox: Vec::new(),
            origin,
            metrics,
            pods,
            sensor,
            alerted,
            suppressed: 0,
            alerted_new: Vec::new(),
            watch_failures_alerted: HashSet::new(),
        }
    }

    /// The baseline the alerts name.
    pub fn baseline(&self) -> Option<&BaselineRef> {
        self.origin.baseline.as_ref()
    }

    /// Queues the document for `c`, with its writer when the kernel named one. An alert
    /// (`event.kind: alert`) goes out once per distinct difference, across restarts and
    /// reloads (`crate::alerted`); `key` makes its token.
    pub fn alert(&mut self, c: &Change, who: Option<&Modifier>, key: &Key) {
        if c.kind == Kind::Alert {
            let token = crate::alerted::token(key, c);
            let first = self.alerted.first(c.path(), token.clone());
            if let Some(p) = c.previous.as_ref().filter(|p| p.path != c.path()) {
                // Moved away: the old path's difference is this one.
                self.alerted.resolved(&p.path);
            }
            self.metrics
                .outstanding_differences
                .set(self.alerted.outstanding() as i64);
            if !first {
                self.suppressed += 1;
                return;
            }
            self.alerted_new.push((c.path().to_vec(), token));
        }
        self.metrics.count_change(c.action, c.kind);
        let mut alert = Alert::change(c, &self.origin);
        if let Some(m) = who {
            alert = alert.with_actor(&m.actor(&self.pods), self.sensor, m.hook, m.cgroup_id);
        }
        self.outbox.push(alert);
    }

    /// A path that matches its baseline again: a new difference there is alerted anew.
    pub fn resolved(&mut self, path: &[u8]) {
        self.alerted.resolved(path);
    }

    /// Sends the outbox and records, in one write, which differences it alerted. `store`:
    /// where to record them (best effort; `None` while the store cannot be written).
    pub fn send(&mut self, store: Option<&Store>) {
        for alert in std::mem::take(&mut self.outbox) {
            self.sink.send_alert(&alert);
        }
        let sent = std::mem::take(&mut self.alerted_new);
        if let Some(store) = store
            && let Err(e) = store.alerted_put(&sent)
        {
            eprintln!("fimd run: cannot record which differences were alerted: {e}");
        }
    }

    /// Counts, and reports, an inode the sensor could not be made to watch (its maps are full,
    /// or fanotify cannot mark it): `fim_watch_failures_total` (and, for full maps,
    /// `fim_sensor_watch_full_total`) every time; on stderr and as one alert naming the watch the
    /// first time of each kind, because what it covers now waits for the full comparison.
    pub fn cannot_watch(&mut self, settings: &Settings, path: &[u8], why: &SensorError) {
        use std::os::unix::ffi::OsStrExt;
        self.metrics.watch_failures.inc();
        let action = why.not_watched_action();
        if action == "watch_capacity_exceeded" {
            self.metrics.watch_full.inc();
        }
        if !self.watch_failures_alerted.insert(action) {
            return;
        }
        let watch = settings
            .watches
            .iter()
            .find(|w| path.starts_with(w.path.as_os_str().as_bytes()))
            .map_or_else(|| path.to_vec(), |w| w.path.as_os_str().as_bytes().to_vec());
        let reason = format!(
            "{why}; what of this watch is not watched is compared only by the scheduled full comparison \
             (schedule.full_check) until then (fim_watch_failures_total counts every such inode)"
        );
        eprintln!(
            "fimd run: cannot watch {}: {reason}",
            crate::paths::path_text(path).0
        );
        self.outbox
            .push(Alert::coverage(action, &watch, &reason, &self.origin));
    }

    /// Alerts (once per episode, `Blocking::newly_hung`) that the filesystem mounted at `mount`
    /// inside a watch stopped answering: what is below it is not compared until it answers.
    pub fn mount_not_answering(&mut self, mount: &[u8]) {
        let reason = format!(
            "the filesystem mounted here inside a watch is not answering (a hung network or FUSE mount): \
             what is below it is not compared until it answers; fim_stuck_threads{{operation=\"hung_mount\"}} \
             counts the threads waiting on it (at most {})",
            crate::scan::guarded::WORKERS
        );
        eprintln!("fimd run: {}: {reason}", crate::paths::path_text(mount).0);
        self.outbox.push(Alert::coverage(
            "mount_not_answering",
            mount,
            &reason,
            &self.origin,
        ));
    }

    /// Says so when the state store at `database` starts failing (an alert, once per
    /// episode, naming the `queued` writes) or recovers. Sent at once.
    pub fn state_episode(&mut self, episode: Episode, database: &str, queued: usize) {
        let doc = match episode {
            Episode::Quiet => return,
            Episode::Failing(reason) => {
                eprintln!("fimd run: the state store is failing: {reason}; queuing its writes");
                Alert::state_store_failing(&reason, database, queued, &self.origin)
            }
            Episode::Recovered(n) => {
                eprintln!("fimd run: the state store works again: {n} queued writes stored");
                Alert::state_store_recovered(database, n, &self.origin)
            }
        };
        self.sink.send_alert(&doc);
    }

    /// A full comparison starts: outstanding differences are recounted from scratch.
    pub fn begin_full(&mut self) -> Mark {
        self.alerted.clear_outstanding();
        Mark {
            outbox: self.outbox.len(),
            suppressed: self.suppressed,
        }
    }

    /// What was queued (or suppressed) since `mark`, by kind.
    pub fn tally(&self, mark: Mark) -> Tally {
        let docs = &self.outbox[mark.outbox..];
        let sent_alerts = docs.iter().filter(|a| a.kind() == EventKind::Alert).count();
        Tally {
            alerts: sent_alerts + (self.suppressed - mark.suppressed),
            events: docs.len() - sent_alerts,
        }
    }

    /// After a full comparison: forgets, in `store`, the differences that are gone (put back as
    /// they were), so a new change there is alerted anew. Best effort, like every state write.
    pub fn end_full(&mut self, store: Option<&Store>) {
        if let Some(store) = store
            && let Err(e) = store.alerted_retain(&self.alerted.outstanding_tokens())
        {
            eprintln!("fimd run: cannot record which differences were alerted: {e}");
        }
        self.metrics
            .outstanding_differences
            .set(self.alerted.outstanding() as i64);
    }

    /// Another baseline was taken over: the differences alerted are those `sent` records,
    /// and those outstanding the ones `still` says still differ.
    pub fn take_over(
        &mut self,
        baseline: BaselineRef,
        sent: Option<HashSet<Vec<u8>>>,
        still: impl FnMut(&[u8]) -> bool,
    ) {
        self.origin.baseline = Some(baseline);
        if let Some(sent) = sent {
            self.alerted.reload_sent(sent);
        }
        self.alerted.retain_outstanding(still);
        self.metrics
            .outstanding_differences
            .set(self.alerted.outstanding() as i64);
    }

    /// Delivers what the sinks hold, waiting at most `flush`.
    pub fn shutdown(&mut self, flush: std::time::Duration) -> Shutdown {
        self.sink.shutdown(flush)
    }
}
