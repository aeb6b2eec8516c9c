//! What the probes report: `/healthz` (liveness: the daemon loop still turns) and `/readyz`
//! (readiness: sensor attached, baseline verified, first full comparison done), set by the
//! daemon and read by the HTTP endpoint.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the loop may go without a tick before `/healthz` fails.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30);

/// What the probes report, set by the daemon. Lock-free: the loop updates it on every tick.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    /// Nanoseconds after `epoch` of the last tick.
    last_tick: AtomicU64,
    stale_after: Duration,
    sensor_attached: AtomicBool,
    baseline_verified: AtomicBool,
    reconciled: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Not ready, and alive for [`DEFAULT_STALE_AFTER`] from now (the first tick is due by then).
    pub fn new() -> Health {
        Self::with_stale_after(DEFAULT_STALE_AFTER)
    }

    pub fn with_stale_after(stale_after: Duration) -> Health {
        Health {
            epoch: Instant::now(),
            last_tick: AtomicU64::new(0),
            stale_after,
            sensor_attached: AtomicBool::new(false),
            baseline_verified: AtomicBool::new(false),
            reconciled: AtomicBool::new(false),
        }
    }

    /// The loop is alive. Cheap (one clock read, one store): call it on every loop turn and
    /// from long scans, so a legitimate long comparison does not look like a hang.
    pub fn tick(&self) {
        let ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_tick.store(ns, Ordering::Relaxed);
    }

    /// Time since the last tick (or since creation, before the first).
    pub fn since_tick(&self) -> Duration {
        let last = Duration::from_nanos(self.last_tick.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// `None` when alive, else why not.
    pub fn liveness_problem(&self) -> Option<String> {
        let since = self.since_tick();
        (since > self.stale_after).then(|| {
            format!(
                "daemon loop stalled: no tick for {:.1} s (limit {:.1} s)",
                since.as_secs_f64(),
                self.stale_after.as_secs_f64()
            )
        })
    }

    pub fn set_sensor_attached(&self, attached: bool) {
        self.sensor_attached.store(attached, Ordering::Relaxed);
    }

    /// The baseline's seal was checked and it loaded.
    pub fn set_baseline_verified(&self, verified: bool) {
        self.baseline_verified.store(verified, Ordering::Relaxed);
    }

    /// The first full comparison after (re)start is done: changes made while fimd was down
    /// have been reported.
    pub fn set_reconciled(&self, done: bool) {
        self.reconciled.store(done, Ordering::Relaxed);
    }

    /// All three conditions at once: `false` when a reload begins, `true` when a start is
    /// complete.
    pub fn set_ready(&self, ready: bool) {
        self.set_sensor_attached(ready);
        self.set_baseline_verified(ready);
        self.set_reconciled(ready);
    }

    /// What keeps the daemon from being ready; empty when ready.
    pub fn readiness_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.sensor_attached.load(Ordering::Relaxed) {
            out.push("no kernel sensor attached".to_owned());
        }
        if !self.baseline_verified.load(Ordering::Relaxed) {
            out.push("baseline not loaded and verified".to_owned());
        }
        if !self.reconciled.load(Ordering::Relaxed) {
            out.push("initial comparison with the baseline not done".to_owned());
        }
        out.extend(self.liveness_problem());
        out
    }
}
