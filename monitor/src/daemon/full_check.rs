//! The full comparison with the baseline (at start, after a reload, on the schedule), walked
//! and compared on a thread of its own: the walk may take minutes (every file rehashed) or wait
//! out a mount that stopped answering (`scan::guarded`), and the loop goes on handling records
//! meanwhile. The thread compares against the baseline as it was when the comparison began
//! (`SortedEntries::shared`, copy on write) and hands the loop what it finds through a bounded
//! channel: entries to learn (and arm) as they come, then the comparison, judged on the loop.
//! Measured (`FIMD_FAULTS_FULL_CHECK=1 cargo xtask faults`, 96 files, 3 GiB): on the loop, an
//! unrelated change's alert waited 8.9 s behind a 9.5 s comparison; off it, an alert made 0.5 s
//! into a 1.75 s comparison came after 0.05 s, as when idle.
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::state::Daemon;
use crate::baseline::entry::Entry;
use crate::compare::{self, Comparison};
use crate::evidence::Evidence;
use crate::problems::{report_metadata_only, report_problems};
use crate::scan;
use crate::telemetry::metrics::RescanReason;

/// Entries sent to the loop at once.
const BATCH: usize = 256;
/// Batches waiting for the loop, at most: the walk waits for the loop rather than hold the
/// tree in memory (256 entries of ~200 bytes a batch: 3 MB).
const BATCHES: usize = 64;

/// What the comparison's thread hands the loop.
pub enum FullMsg {
    /// Entries the walk found, to learn (and arm).
    Found(Vec<Entry>),
    /// The walk is over: the comparison, and the bytes it hashed.
    Done(Box<(Comparison, u64)>),
}

/// A full comparison under way: the loop receives from it (`next`) and hands each message to
/// `Daemon::full_step` until that says it is over.
pub struct FullCheck {
    rx: tokio::sync::mpsc::Receiver<FullMsg>,
    reason: RescanReason,
    started: Instant,
    started_at: String,
    seal: String,
    generation: u64,
}

impl FullCheck {
    /// The next message; `None` when the thread ended without finishing (it panicked).
    pub async fn next(&mut self) -> Option<FullMsg> {
        self.rx.recv().await
    }
}

/// Waits for the next message of `full`, or forever when there is none under way.
pub async fn next_of(full: &mut Option<FullCheck>) -> Option<FullMsg> {
    match full {
        Some(f) => f.next().await,
        None => std::future::pending().await,
    }
}

/// The comparison's view from its thread: the baseline it began with, and a channel for what
/// it finds.
struct Remote {
    baseline: Arc<Vec<Entry>>,
    tx: tokio::sync::mpsc::Sender<FullMsg>,
    batch: Vec<Entry>,
}

impl Remote {
    fn flush(&mut self) {
        if !self.batch.is_empty() {
            // The loop gone (the daemon stopping): nothing to learn any more.
            let _ = self
                .tx
                .blocking_send(FullMsg::Found(std::mem::take(&mut self.batch)));
        }
    }
}

impl compare::Against for Remote {
    fn baseline(&self) -> &[Entry] {
        &self.baseline
    }

    fn found(&mut self, e: &Entry) {
        self.batch.push(e.clone());
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }
}

impl Daemon {
    /// Starts a full comparison on its own thread. Errors: the thread cannot be started.
    pub fn start_full(&mut self, reason: RescanReason) -> anyhow::Result<FullCheck> {
        let (seal, generation) = self
            .alerts
            .baseline()
            .map_or((String::new(), 0), |b| (b.seal.clone(), b.generation));
        self.metrics.baseline_files.set(self.baseline().len() as i64);
        let (tx, rx) = tokio::sync::mpsc::channel(BATCHES);
        let baseline = self.baseline().shared();
        let (settings, mode) = (self.rules.settings.clone(), self.rules.mode);
        std::thread::Builder::new()
            .name("fimd-full-check".into())
            .spawn(move || {
                let mut scan = scan::start(&settings, Path::new("/"));
                let progress = scan.progress.clone();
                let mut remote = Remote {
                    baseline,
                    tx,
                    batch: Vec::new(),
                };
                let cmp = compare::compare_against(&settings, &mut remote, &mut scan, mode);
                remote.flush();
                drop(scan);
                let bytes = progress.bytes.load(std::sync::atomic::Ordering::Relaxed);
                let _ = remote.tx.blocking_send(FullMsg::Done(Box::new((cmp, bytes))));
            })
            .map_err(|e| anyhow::anyhow!("cannot start the full comparison's thread: {e}"))?;
        Ok(FullCheck {
            rx,
            reason,
            started: Instant::now(),
            started_at: crate::output::alert::now_rfc3339(),
            seal,
            generation,
        })
    }

    /// Takes one message of `full` (`None`: its thread ended early). Returns whether the
    /// comparison is over: judged, alerted and recorded as evidence.
    pub fn full_step(&mut self, full: &FullCheck, msg: Option<FullMsg>) -> anyhow::Result<bool> {
        match msg {
            Some(FullMsg::Found(entries)) => {
                for e in entries {
                    // A record handled since the walk read this path learned a newer state:
                    // the older one does not replace it.
                    let newer = self
                        .watch
                        .seen()
                        .get(&e.path)
                        .is_some_and(|s| s.ctime_ns > e.ctime_ns);
                    if !newer {
                        self.learn(e);
                    }
                }
                Ok(false)
            }
            Some(FullMsg::Done(done)) => {
                let (cmp, bytes) = *done;
                self.full_done(full, cmp, bytes)?;
                Ok(true)
            }
            None => {
                eprintln!(
                    "fimd run: the full comparison stopped early (internal error); the next one compares \
                     everything again"
                );
                Ok(true)
            }
        }
    }

    /// A full comparison, waited for (at start and after a reload, before ready). Must run
    /// where blocking is allowed (`tokio::task::block_in_place`).
    pub fn full_check(&mut self, reason: RescanReason) -> anyhow::Result<()> {
        let mut full = self.start_full(reason)?;
        loop {
            let msg = full.rx.blocking_recv();
            self.health.tick();
            if self.full_step(&full, msg)? {
                return Ok(());
            }
        }
    }

    /// Judges what the comparison found, alerts, and leaves an evidence record.
    fn full_done(&mut self, full: &FullCheck, cmp: Comparison, bytes: u64) -> anyhow::Result<()> {
        self.metrics.observe_hash_batch(bytes, full.started.elapsed());
        report_problems(&cmp.problems);
        report_metadata_only("run", &self.rules.settings, &cmp.metadata_only);
        let generation_now = self.alerts.baseline().map_or(0, |b| b.generation);
        if generation_now != full.generation {
            // Judged against a baseline that was replaced meanwhile (`follow_baseline`): its
            // differences may be accepted ones. The next comparison judges against the new one.
            eprintln!(
                "fimd run: the baseline changed during the full comparison (generation {} to {generation_now}); \
                 its differences are not judged",
                full.generation
            );
            return Ok(());
        }
        // Everything at once, rotations while fimd was down included: judged here, not settled.
        let changes = cmp.changes.into_iter().map(|c| (c, None)).collect();
        // Recounted from scratch; what was alerted before is not sent again.
        let mark = self.alerts.begin_full();
        self.judge(changes, None)?;
        let tally = self.alerts.tally(mark);
        self.alerts.end_full(self.writes.store());
        self.send_alerts();
        self.metrics.count_rescan(full.reason);
        self.metrics.full_check_done(full.started.elapsed());
        let record = Evidence {
            kind: full.reason.as_str(),
            started_at: &full.started_at,
            took: full.started.elapsed(),
            files: cmp.scanned,
            differences: tally.alerts,
            events: tally.events,
            problems: cmp.problems.len(),
            seal: &full.seal,
            generation: full.generation,
        }
        .to_json(&self.rules.settings);
        let episode = self.writes.evidence(record);
        self.report_state(episode);
        super::state::release_freed_memory();
        Ok(())
    }
}
