//! The daemon's Prometheus metrics, in a registry of their own (no process collector: the
//! exporter of the node already reports process resources).
//!
//! Label values are a small fixed set each (sensor, reason, action, kind, sink, result): no label
//! may ever carry a path, pid, uid, container id or anything else that varies with what is
//! watched, or every distinct value would become a series kept forever. The helpers take
//! `&'static str` label values for that reason; what varies belongs in the alerts.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::compare::{Action, Kind};

pub use super::labels::{
    BLOCKING_OPERATIONS, CHANGE_ACTIONS, CHANGE_KINDS, LISTING_OUTCOMES, RESCAN_REASONS, RescanReason,
    SENSORS,
};
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Rehash batch durations: 100 µs (one small file) up to a minute (a large tree after a loss).
const HASH_BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// Every metric the daemon exports. Made once per process (it outlives configuration reloads)
/// and shared as `Arc<Metrics>`; every handle is cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    /// `fim_build_info{version}`: always 1.
    pub build_info: IntGaugeVec,
    /// `fim_start_time_seconds`: when this process made its metrics, unix time.
    pub start_time: Gauge,
    /// `fim_sensor_attached{sensor}`: 1 while that sensor reports changes.
    pub sensor_attached: IntGaugeVec,
    /// `fim_sensor_watch_full_total`: inodes the sensor could not watch because its map was
    /// full (each covered by the scheduled full comparison instead).
    pub watch_full: IntCounter,
    /// `fim_sensor_kernel_bytes`: locked kernel memory of the sensor's maps (bytes).
    pub sensor_kernel_bytes: IntGauge,
    /// `fim_sensor_hook{sensor,hook}`: 1 for each kernel hook the attached sensor uses (a
    /// handful per sensor: `Sensor::hooks`).
    pub sensor_hooks: IntGaugeVec,
    /// `fim_kernel_events_total`: records drained from the kernel.
    pub kernel_events: IntCounter,
    /// `fim_kernel_events_lost_total`: records the kernel could not deliver, and failed kernel
    /// reads (`Sensor::lost`; the reads also per program in `fim_sensor_probe_errors_total`).
    pub kernel_events_lost: IntCounter,
    /// `fim_sensor_probe_errors_total{program}`: failed kernel reads per eBPF program (one of
    /// `monitor_common::PROGRAMS`), each a change or write check the program gave up on.
    /// Counted per CPU in the kernel's COUNTERS map; copied here by [`Metrics::set_probe_errors`].
    pub probe_errors: IntCounterVec,
    /// `fim_rescans_total{reason}`: full comparisons, by [`RESCAN_REASONS`].
    pub rescans: IntCounterVec,
    /// `fim_hash_queue_length`: files waiting to be rehashed.
    pub hash_queue_length: IntGauge,
    /// `fim_hashed_bytes_total`.
    pub hashed_bytes: IntCounter,
    /// `fim_hash_duration_seconds`: one observation per rehash batch.
    pub hash_duration: Histogram,
    /// `fim_integrity_changes_total{action,kind}`: kind is `alert` or `event`.
    pub integrity_changes: IntCounterVec,
    /// `fim_append_verified_bytes_total`: bytes appended to files whose earlier content was
    /// verified unchanged.
    pub append_verified_bytes: IntCounter,
    /// `fim_baseline_files`: entries in the loaded baseline.
    pub baseline_files: IntGauge,
    /// `fim_baseline_generation`: the loaded baseline's generation (1 at the first `init`,
    /// +1 on every `init` and `accept`), set at start and on reload. It never goes down unless
    /// an older copy of the baseline was put back: the `FimdBaselineRolledBack` rule.
    pub baseline_generation: IntGauge,
    /// `fim_outstanding_differences`: differences from the baseline the daemon knows of and
    /// has alerted (each once), not yet accepted: recounted by every full comparison, then kept
    /// up by realtime alerts and by files that match the baseline again.
    pub outstanding_differences: IntGauge,
    /// `fim_last_full_check_timestamp_seconds`: when the last full comparison ended, unix time.
    pub last_full_check_timestamp: Gauge,
    /// `fim_last_full_check_duration_seconds`.
    pub last_full_check_duration: Gauge,
    /// `fim_output_events_total{sink,result}`: sink is jsonl, syslog or webhook; result is
    /// sent, retried or dropped. Incremented by the output sinks.
    pub output_events: IntCounterVec,
    /// `fim_state_write_failures_total`: attempts to write ledger rows or evidence records to
    /// the state store that failed (full filesystem, locked or read-only database); each one
    /// is retried.
    pub state_write_failures: IntCounter,
    /// `fim_state_queue_length`: ledger rows and evidence records waiting in memory for the
    /// state store (bounded: `commands::state_writes`).
    pub state_queue_length: IntGauge,
    /// `fim_state_writes_dropped_total`: queued state writes dropped because the queue was full.
    pub state_writes_dropped: IntCounter,
    /// `fim_watch_failures_total`: inodes or filesystems the sensor could not be made to watch
    /// (its inode map full, a filesystem fanotify cannot mark); changes there are found only
    /// by full comparisons. Each is reported on stderr, the first as a `watch_failed` alert.
    pub watch_failures: IntCounter,
    /// `fim_rotation_settling`: changes the daemon holds back, in entries: directories of
    /// rotating logs waiting to be quiet for `daemon::settle::SETTLE` (1 s) before their changes
    /// are judged together, plus paths found gone waiting out `MOVE_WINDOW` (300 ms) for the
    /// other half of a move. 0 once everything seen so far is judged; it stays above 0 only while
    /// a directory keeps changing.
    pub rotation_settling: IntGauge,
    // --- faults: blocking calls with a deadline (scan::deadline, scan::pool) ---
    /// `fim_stuck_threads{operation}`: threads abandoned inside a call on a file or mount that
    /// has not returned (bounded per operation), by [`BLOCKING_OPERATIONS`].
    pub stuck_threads: IntGaugeVec,
    /// `fim_blocking_timeouts_total{operation}`: calls that missed their deadline (each retried
    /// later, or skipped and counted), by [`BLOCKING_OPERATIONS`].
    pub blocking_timeouts: IntCounterVec,
    /// `fim_directory_listings_total{outcome}`: directories whose names were read for a change,
    /// and records within a busy directory's pace, by [`LISTING_OUTCOMES`] (`daemon::pace`).
    pub directory_listings: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        // Names, labels and buckets are constants: an error here is a bug, caught by any test.
        const BUG: &str = "fimd metric definitions are valid and distinct";
        let registry = Registry::new();
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone())).expect(BUG);
            c
        }
        let opts = Opts::new;
        let m = Metrics {
            build_info: reg(
                &registry,
                IntGaugeVec::new(opts("fim_build_info", "fimd build; always 1"), &["version"]).expect(BUG),
            ),
            start_time: reg(
                &registry,
                Gauge::new("fim_start_time_seconds", "When fimd started, unix time").expect(BUG),
            ),
            sensor_attached: reg(
                &registry,
                IntGaugeVec::new(
                    opts(
                        "fim_sensor_attached",
                        "1 while this kernel sensor reports changes",
                    ),
                    &["sensor"],
                )
                .expect(BUG),
            ),
            watch_full: reg(
                &registry,
                IntCounter::new(
                    "fim_sensor_watch_full_total",
                    "Inodes not watched in the kernel because the sensor's map was full",
                )
                .expect(BUG),
            ),
            sensor_kernel_bytes: reg(
                &registry,
                IntGauge::new("fim_sensor_kernel_bytes", "Locked kernel memory of the sensor's maps, bytes")
                    .expect(BUG),
            ),
            sensor_hooks: reg(
                &registry,
                IntGaugeVec::new(
                    opts(
                        "fim_sensor_hook",
                        "1 for each kernel hook the attached sensor uses",
                    ),
                    &["sensor", "hook"],
                )
                .expect(BUG),
            ),
            kernel_events: reg(
                &registry,
                IntCounter::new(
                    "fim_kernel_events_total",
                    "Change records received from the kernel",
                )
                .expect(BUG),
            ),
            kernel_events_lost: reg(
                &registry,
                IntCounter::new(
                    "fim_kernel_events_lost_total",
                    "Change records the kernel could not deliver (each loss triggers a rescan)",
                )
                .expect(BUG),
            ),
            probe_errors: reg(
                &registry,
                IntCounterVec::new(
                    opts(
                        "fim_sensor_probe_errors_total",
                        "Failed kernel reads per eBPF program (each an event the program gave up on)",
                    ),
                    &["program"],
                )
                .expect(BUG),
            ),
            rescans: reg(
                &registry,
                IntCounterVec::new(
                    opts(
                        "fim_rescans_total",
                        "Full comparisons with the baseline, by reason",
                    ),
                    &["reason"],
                )
                .expect(BUG),
            ),
            hash_queue_length: reg(
                &registry,
                IntGauge::new("fim_hash_queue_length", "Files waiting to be rehashed").expect(BUG),
            ),
            hashed_bytes: reg(
                &registry,
                IntCounter::new("fim_hashed_bytes_total", "Bytes read to hash file content").expect(BUG),
            ),
            hash_duration: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new("fim_hash_duration_seconds", "Time to rehash one batch of files")
                        .buckets(HASH_BUCKETS.to_vec()),
                )
                .expect(BUG),
            ),
            integrity_changes: reg(
                &registry,
                IntCounterVec::new(
                    opts(
                        "fim_integrity_changes_total",
                        "Differences found, by action and whether they were alerts or events",
                    ),
                    &["action", "kind"],
                )
                .expect(BUG),
            ),
            append_verified_bytes: reg(
                &registry,
                IntCounter::new(
                    "fim_append_verified_bytes_total",
                    "Bytes appended to files whose earlier content was verified unchanged",
                )
                .expect(BUG),
            ),
            baseline_files: reg(
                &registry,
                IntGauge::new("fim_baseline_files", "Entries in the loaded baseline").expect(BUG),
            ),
            baseline_generation: reg(
                &registry,
                IntGauge::new(
                    "fim_baseline_generation",
                    "Generation of the loaded baseline (+1 on every init and accept; lower means rolled back)",
                )
                .expect(BUG),
            ),
            outstanding_differences: reg(
                &registry,
                IntGauge::new(
                    "fim_outstanding_differences",
                    "Differences from the baseline alerted and not yet accepted",
                )
                .expect(BUG),
            ),
            last_full_check_timestamp: reg(
                &registry,
                Gauge::new(
                    "fim_last_full_check_timestamp_seconds",
                    "When the last full comparison with the baseline ended, unix time",
                )
                .expect(BUG),
            ),
            last_full_check_duration: reg(
                &registry,
                Gauge::new(
                    "fim_last_full_check_duration_seconds",
                    "How long the last full comparison with the baseline took",
                )
                .expect(BUG),
            ),
            output_events: reg(
                &registry,
                IntCounterVec::new(
                    opts(
                        "fim_output_events_total",
                        "Events handed to an output sink, by outcome",
                    ),
                    &["sink", "result"],
                )
                .expect(BUG),
            ),
            state_write_failures: reg(
                &registry,
                IntCounter::new(
                    "fim_state_write_failures_total",
                    "Writes to the state store (ledger, evidence) that failed and were queued for retry",
                )
                .expect(BUG),
            ),
            state_queue_length: reg(
                &registry,
                IntGauge::new(
                    "fim_state_queue_length",
                    "Ledger rows and evidence records waiting in memory for the state store",
                )
                .expect(BUG),
            ),
            state_writes_dropped: reg(
                &registry,
                IntCounter::new(
                    "fim_state_writes_dropped_total",
                    "Queued state store writes dropped because the queue was full",
                )
                .expect(BUG),
            ),
            watch_failures: reg(
                &registry,
                IntCounter::new(
                    "fim_watch_failures_total",
                    "Inodes or filesystems the sensor could not watch (found only by full comparisons)",
                )
                .expect(BUG),
            ),
            rotation_settling: reg(
                &registry,
                IntGauge::new(
                    "fim_rotation_settling",
                    "Rotating log directories waiting to be quiet and paths gone waiting for a move, \
                     not judged yet",
                )
                .expect(BUG),
            ),
            stuck_threads: reg(
                &registry,
                IntGaugeVec::new(
                    opts(
                        "fim_stuck_threads",
                        "Threads abandoned in a call on a file or mount that has not returned",
                    ),
                    &["operation"],
                )
                .expect(BUG),
            ),
            blocking_timeouts: reg(
                &registry,
                IntCounterVec::new(
                    opts(
                        "fim_blocking_timeouts_total",
                        "Calls on a file or mount that missed their deadline",
                    ),
                    &["operation"],
                )
                .expect(BUG),
            ),
            directory_listings: reg(
                &registry,
                IntCounterVec::new(
                    opts(
                        "fim_directory_listings_total",
                        "Directories listed for a change, and records folded into a busy one's next listing",
                    ),
                    &["outcome"],
                )
                .expect(BUG),
            ),
            registry,
        };
        for o in LISTING_OUTCOMES {
            m.directory_listings.with_label_values(&[o]);
        }
        for op in BLOCKING_OPERATIONS {
            m.stuck_threads.with_label_values(&[op]).set(0);
            m.blocking_timeouts.with_label_values(&[op]);
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m.start_time.set(unix_seconds(SystemTime::now()));
        // Known label values start at 0, so rate() and absent() work before the first event.
        for s in SENSORS {
            m.sensor_attached.with_label_values(&[s]).set(0);
        }
        for r in RESCAN_REASONS {
            m.rescans.with_label_values(&[r]);
        }
        for (program, _) in monitor_common::PROGRAMS {
            m.probe_errors.with_label_values(&[program]);
        }
        // An alert rule's increase() needs the series before the first change, not at it.
        for action in CHANGE_ACTIONS {
            for kind in CHANGE_KINDS {
                m.integrity_changes.with_label_values(&[action, kind]);
            }
        }
        m
    }

    /// Marks `sensor` (one of [`SENSORS`]) attached or detached.
    pub fn set_sensor_attached(&self, sensor: &'static str, attached: bool) {
        self.sensor_attached
            .with_label_values(&[sensor])
            .set(i64::from(attached));
    }

    /// Exports the hooks `sensor` attached (`Sensor::hooks`), replacing any exported before.
    pub fn set_sensor_hooks(&self, sensor: &'static str, hooks: &[String]) {
        self.sensor_hooks.reset();
        for h in hooks {
            self.sensor_hooks.with_label_values(&[sensor, h.as_str()]).set(1);
        }
    }

    /// Brings `fim_sensor_probe_errors_total` up to the sensor's totals (`Sensor::probe_errors`:
    /// per program, since it was loaded). A total below the exported count (a reloaded sensor
    /// starts again at 0) adds nothing: a counter never goes down.
    pub fn set_probe_errors(&self, totals: &[(&'static str, u64)]) {
        for &(program, total) in totals {
            let c = self.probe_errors.with_label_values(&[program]);
            c.inc_by(total.saturating_sub(c.get()));
        }
    }

    /// Counts a full comparison.
    pub fn count_rescan(&self, reason: RescanReason) {
        self.rescans.with_label_values(&[reason.as_str()]).inc();
    }

    /// Counts one difference found, as an alert or as an allowed event.
    pub fn count_change(&self, action: Action, kind: Kind) {
        self.integrity_changes
            .with_label_values(&[action.as_str(), kind.as_str()])
            .inc();
    }

    /// Counts one event handed to an output sink.
    pub fn count_output(&self, sink: &'static str, result: &'static str) {
        self.output_events.with_label_values(&[sink, result]).inc();
    }

    /// Records one rehash batch: the bytes read and how long it took.
    pub fn observe_hash_batch(&self, bytes: u64, took: Duration) {
        self.hashed_bytes.inc_by(bytes);
        self.hash_duration.observe(took.as_secs_f64());
    }

    /// Records a full comparison that ended now after `took`.
    pub fn full_check_done(&self, took: Duration) {
        self.last_full_check_timestamp
            .set(unix_seconds(SystemTime::now()));
        self.last_full_check_duration.set(took.as_secs_f64());
    }

    /// The text exposition format (version 0.0.4), as served on `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            // Only a malformed family fails, which the definitions above rule out; say so in
            // the scrape rather than failing it.
            out.push_str(&format!("# fimd: cannot encode metrics: {e}\n"));
        }
        out
    }

    /// The content type of [`Metrics::encode`]'s output.
    pub fn content_type(&self) -> &'static str {
        prometheus::TEXT_FORMAT
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_and_preset_series_are_exported() {
        let m = Metrics::new();
        let text = m.encode();
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!("fim_build_info{{version=\"{version}\"}} 1\n")),
            "{text}"
        );
        for s in SENSORS {
            assert!(
                text.contains(&format!("fim_sensor_attached{{sensor=\"{s}\"}} 0\n")),
                "{text}"
            );
        }
        for r in RESCAN_REASONS {
            assert!(
                text.contains(&format!("fim_rescans_total{{reason=\"{r}\"}} 0\n")),
                "{text}"
            );
        }
        for (program, _) in monitor_common::PROGRAMS {
            assert!(
                text.contains(&format!(
                    "fim_sensor_probe_errors_total{{program=\"{program}\"}} 0\n"
                )),
                "{text}"
            );
        }
        let start: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("fim_start_time_seconds "))
            .expect("start time exported")
            .parse()
            .unwrap();
        let now = unix_seconds(SystemTime::now());
        assert!(start > now - 60.0 && start <= now, "start {start}, now {now}");
    }

    /// The label sets come from the enums; their values are what dashboards and the alert rules
    /// in deploy/ name, so a renamed variant string fails here.
    #[test]
    fn label_sets_are_the_enums_values() {
        assert_eq!(RESCAN_REASONS, ["start", "loss", "reload", "scheduled", "root"]);
        assert_eq!(CHANGE_KINDS, ["alert", "event"]);
        assert_eq!(
            CHANGE_ACTIONS,
            [
                "created",
                "updated",
                "deleted",
                "moved",
                "attributes_modified",
                "appended",
                "truncated",
                "rotated"
            ]
        );
        let text = Metrics::new().encode();
        for r in RESCAN_REASONS {
            assert!(
                text.contains(&format!("fim_rescans_total{{reason=\"{r}\"}} 0")),
                "{r}"
            );
        }
    }

    #[test]
    fn helpers_update_the_series_they_name() {
        let m = Metrics::new();
        m.set_sensor_attached("ebpf", true);
        m.count_rescan(RescanReason::Loss);
        m.count_rescan(RescanReason::Loss);
        m.count_change(Action::Updated, Kind::Alert);
        m.count_change(Action::Created, Kind::Event);
        m.count_output("webhook", "retried");
        m.observe_hash_batch(4096, Duration::from_millis(3));
        m.full_check_done(Duration::from_millis(1500));
        m.baseline_generation.set(7);
        m.outstanding_differences.set(3);
        m.set_probe_errors(&[("fimd_ctime_xchg", 2), ("fimd_sys_enter", 5)]);
        // Totals, not increments: the same totals again add nothing, a larger one the difference,
        // a smaller one (a reloaded sensor) nothing.
        m.set_probe_errors(&[("fimd_ctime_xchg", 2), ("fimd_sys_enter", 7)]);
        m.set_probe_errors(&[("fimd_ctime_xchg", 1)]);
        let text = m.encode();
        for line in [
            "fim_sensor_attached{sensor=\"ebpf\"} 1",
            "fim_sensor_attached{sensor=\"fanotify\"} 0",
            "fim_rescans_total{reason=\"loss\"} 2",
            "fim_integrity_changes_total{action=\"updated\",kind=\"alert\"} 1",
            "fim_integrity_changes_total{action=\"created\",kind=\"event\"} 1",
            "fim_output_events_total{result=\"retried\",sink=\"webhook\"} 1",
            "fim_hashed_bytes_total 4096",
            "fim_hash_duration_seconds_count 1",
            // 3 ms falls in the 5 ms bucket and every larger one, not in the 2.5 ms one.
            "fim_hash_duration_seconds_bucket{le=\"0.0025\"} 0",
            "fim_hash_duration_seconds_bucket{le=\"0.005\"} 1",
            "fim_hash_duration_seconds_bucket{le=\"60\"} 1",
            "fim_last_full_check_duration_seconds 1.5",
            "fim_baseline_generation 7",
            "fim_outstanding_differences 3",
            "fim_sensor_probe_errors_total{program=\"fimd_ctime_xchg\"} 2",
            "fim_sensor_probe_errors_total{program=\"fimd_sys_enter\"} 7",
            "fim_sensor_probe_errors_total{program=\"fimd_uring_file\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
