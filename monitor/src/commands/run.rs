//! `fimd run`: the realtime daemon. The eBPF sensor reports each change of a watched inode with
//! the task that made it; the daemon re-arms the inode, rehashes what changed, compares it with
//! the baseline and alerts. See docs/sensor-design.md for the protocol.
use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use monitor_common::{ChangeRecord, Hook, InodeKey, RECORD_MMAP_WRITABLE};
use serde_json::{Value, json};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};

mod follow;

use super::state_writes::{self, Episode, StateWrites};
use super::watch_roots::{self, Roots};
use super::{EXIT_CLEAN, exit, open_baseline};
use crate::append::review::{self, open_regular};
use crate::append::state::{self as append_state, AppendState, Extended};
use crate::baseline::entry::{Entry, FileKind};
use crate::baseline::store::LedgerRow;
use crate::compare::{self, Action, Change, Kind, Mode, diff};
use crate::config::{Policy, Settings};
use crate::output::alert::{BaselineRef, Origin, hostname, to_json};
use crate::output::dispatch::Dispatcher;
use crate::scan::{self, ScanItem};
use crate::sensor::Sensor;
use crate::sensor::ebpf::kernel_dev;
use crate::telemetry::{Health, Metrics};

/// The task a kernel record names.
#[derive(Debug, Clone)]
struct Modifier {
    pid: u32,
    tgid: u32,
    uid: u32,
    comm: String,
    cgroup_id: u64,
    hook: &'static str,
}

impl Modifier {
    fn from_record(r: &ChangeRecord) -> Modifier {
        let end = r.comm.iter().position(|&b| b == 0).unwrap_or(r.comm.len());
        Modifier {
            pid: r.pid,
            tgid: r.tgid,
            uid: r.uid,
            comm: crate::output::path::path_text(&r.comm[..end]).0,
            cgroup_id: r.cgroup_id,
            hook: Hook::try_from(r.hook).map_or("unknown", Hook::name),
        }
    }

    /// ECS `process.*`, `user.id` and `container.id`; the executable and container come from
    /// /proc while the process lives.
    fn fields(&self, pods: &crate::attribution::PodDirectory) -> Vec<(&'static str, Value)> {
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.tgid))
            .ok()
            .map(|p| crate::output::path::path_text(p.as_os_str().as_bytes()).0);
        // The record names the thread (an io_uring worker is "iou-wrk-N"); the process name is
        // the thread group leader's, while it lives.
        let name = std::fs::read_to_string(format!("/proc/{}/comm", self.tgid))
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_else(|_| self.comm.clone());
        let mut process = json!({
            "pid": self.tgid,
            "name": name,
            "thread": { "id": self.pid, "name": self.comm },
        });
        if let Some(exe) = exe {
            process["executable"] = json!(exe);
        }
        let mut out = vec![("process", process)];
        // u32::MAX: the sensor could not learn the uid (the writer was gone).
        if self.uid != u32::MAX {
            out.push(("user", json!({ "id": self.uid.to_string() })));
        }
        if let Some(c) = crate::attribution::container_of_process(self.tgid) {
            let pod = c.pod_uid.as_deref().and_then(|uid| pods.lookup(uid));
            if let Value::Object(fields) = crate::attribution::ecs_fields(&c, pod.as_ref()) {
                for (k, v) in fields {
                    let k: &'static str = match k.as_str() {
                        "container" => "container",
                        "orchestrator" => "orchestrator",
                        "kubernetes" => "kubernetes",
                        _ => continue,
                    };
                    out.push((k, v));
                }
            }
        }
        out
    }
}

fn key_of(e: &Entry) -> InodeKey {
    InodeKey {
        dev: kernel_dev(e.dev),
        _pad: 0,
        ino: e.ino,
    }
}

struct Daemon {
    settings: Settings,
    /// The sealed baseline, by path: what alerts compare against.
    baseline: HashMap<Vec<u8>, Entry>,
    /// The last state seen of every watched path.
    seen: HashMap<Vec<u8>, Entry>,
    /// Watched inodes and the paths they have.
    paths: HashMap<InodeKey, Vec<Vec<u8>>>,
    sensor: Box<dyn Sensor>,
    sink: Dispatcher,
    /// Alerts of the rescan under way, written once it (and any new subtree) is done.
    outbox: Vec<Value>,
    /// Files to rehash later (memory-mapped, or found empty right after a truncation): path,
    /// when, who wrote, how many looks so far.
    rechecks: Vec<(Vec<u8>, std::time::Instant, Modifier, usize)>,
    origin: Origin,
    mode: Mode,
    /// Ledger and evidence writes, queued while the state store fails.
    writes: StateWrites,
    /// The configured watch paths and their identity when last looked at.
    roots: Roots,
    /// The directories holding watch roots, armed: a change there may move or replace a root.
    root_parents: HashMap<InodeKey, Vec<Vec<u8>>>,
    /// Append-only files: the hash state at their verified length, by path.
    appends: HashMap<Vec<u8>, AppendState>,
    /// Recent verified (length, SHA-256) of each append-only file, oldest first: a copy
    /// taken by copytruncate is judged against the last one it holds.
    checkpoints: HashMap<Vec<u8>, Vec<(u64, [u8; 32])>>,
    /// Log paths a rotation retired.
    retired: HashSet<Vec<u8>>,
    /// Append-only files to verify whole (not from their checkpoint) until then: the kernel
    /// reported a write below the verified length that may not have landed yet.
    full_until: HashMap<Vec<u8>, std::time::Instant>,
    /// Directories of rotating logs with changes waiting for quiet before they are judged as a
    /// whole (a rotation is several steps: rename, create, compress, delete).
    settling: HashMap<Vec<u8>, Settling>,
    /// Paths found gone and not yet paired with a new path: the other half of a move between
    /// directories may come in a later record. Reported deleted once `MOVE_WINDOW` passed.
    departed: Vec<(Entry, std::time::Instant, Option<Modifier>)>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    pods: crate::attribution::PodDirectory,
    /// The kinds of watch failure already alerted this run (each is counted every time).
    watch_failures_alerted: HashSet<&'static str>,
    /// The differences already alerted (persisted) and those outstanding.
    alerted: crate::alerted::Alerted,
    /// Alerts not sent because they were sent before (counted for the evidence record).
    suppressed: usize,
    /// Tokens of the alerts in the outbox, stored when it is sent.
    alerted_new: Vec<(Vec<u8>, Vec<u8>)>,
    /// The stored seal last taken over (or refused): another one means an `init` or `accept`.
    followed_seal: String,
}

struct Settling {
    due: std::time::Instant,
    paths: HashSet<Vec<u8>>,
    who: HashMap<Vec<u8>, Modifier>,
}

/// How long shutdown waits for queued alerts to be delivered.
const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a rotating log's directory must stay quiet before its changes are judged.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a path found gone waits for the new path of a move between two directories (whose
/// two records may be read in different batches) before it is reported deleted.
const MOVE_WINDOW: std::time::Duration = std::time::Duration::from_millis(300);
/// Recent verified states kept per append-only file.
const CHECKPOINTS: usize = 16;
/// After a write below the verified length was reported: how long to keep verifying whole.
const FULL_AFTER_VIOLATION: std::time::Duration = std::time::Duration::from_secs(2);

/// What a signal asks of the daemon.
enum Control {
    Shutdown,
    Reload,
}

/// The process's signal streams, made once and kept across reloads.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

pub fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut signals = Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        };
        // Made once: metrics and health outlive reloads.
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new());
        let cancel = tokio_util::sync::CancellationToken::new();
        let tasks = tokio_util::task::TaskTracker::new();
        if let Some(addr) = &settings.metrics_listen {
            let listener = crate::telemetry::server::bind(addr).await?;
            eprintln!("fimd run: metrics and probes on http://{addr}");
            tasks.spawn(crate::telemetry::server::serve(
                listener,
                metrics.clone(),
                health.clone(),
                cancel.clone(),
            ));
        }
        let mut settings = settings.clone();
        let mut reason = "start";
        let result = loop {
            let served = serve(&settings, &mut signals, &metrics, &health, reason).await;
            match served {
                Err(e) => break Err(e),
                Ok(Control::Shutdown) => break Ok(exit(EXIT_CLEAN)),
                // The new configuration and baseline take over; the full comparison at start
                // covers whatever changed while the sensor was being replaced.
                Ok(Control::Reload) => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                    reason = "reload";
                    match Settings::load(&settings.source)
                        .map_err(anyhow::Error::from)
                        .and_then(|s| reload_check(&settings, s))
                    {
                        Ok(s) => {
                            eprintln!("fimd run: SIGHUP: reloading {}", s.source.display());
                            settings = s;
                        }
                        Err(e) => eprintln!("fimd run: SIGHUP: keeping the running configuration: {e:#}"),
                    }
                }
            }
        };
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        cancel.cancel();
        tasks.close();
        tasks.wait().await;
        result
    })
}

/// Whether `new` can take over from `running` on a SIGHUP: its baseline opens, verifies and
/// was sealed for its watches (`fimd init` refuses pseudo-filesystems), and its alert file
/// opens. Checked before the running configuration is let go, so a reload that cannot work
/// leaves the daemon as it was instead of stopping it.
fn reload_check(running: &Settings, new: Settings) -> anyhow::Result<Settings> {
    let (_, _, baseline) = open_baseline(&new)?;
    if let Some(p) = super::coverage_problem(&new, &baseline) {
        anyhow::bail!("{}: {}", new.source.display(), p.message);
    }
    if new.alerts.jsonl != running.alerts.jsonl
        && let Some(target) = &new.alerts.jsonl
    {
        crate::output::jsonl::JsonlSink::open_target(target)?;
    }
    Ok(new)
}

/// Runs until a signal: loads the baseline, attaches the sensor, reconciles, then reports
/// every change the sensor sees.
async fn serve(
    settings: &Settings,
    signals: &mut Signals,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    reason: &'static str,
) -> anyhow::Result<Control> {
    health.set_ready(false);
    let (store, key, baseline) = open_baseline(settings)?;
    health.set_baseline_verified(true);
    metrics.baseline_generation.set(baseline.generation as i64);
    if let Some(p) = super::coverage_problem(settings, &baseline) {
        anyhow::bail!("{}: {}", settings.source.display(), p.message);
    }
    let mode = super::host_mode(&baseline);
    let mut sensor = crate::sensor::open(&crate::sensor::SensorSpec {
        choice: settings.sensor,
        ring_bytes: settings.ring_buffer_bytes,
        append_hooks: settings.watches.iter().any(|w| w.policy == Policy::AppendOnly),
        roots: settings.watches.iter().map(|w| w.path.clone()).collect(),
        capacity: settings
            .max_watched_inodes
            .unwrap_or_else(|| crate::sensor::capacity_for(baseline.entries.len())),
    })?;
    metrics.sensor_kernel_bytes.set(sensor.kernel_bytes() as i64);
    health.set_sensor_attached(true);
    metrics.set_sensor_attached(sensor.name(), true);
    metrics.set_sensor_hooks(sensor.name(), &sensor.hooks());
    let mut outputs = settings.alerts.clone();
    if outputs.jsonl.is_none() && outputs.syslog.is_none() && outputs.webhook.is_none() {
        outputs.jsonl = Some(crate::output::sink::JsonlTarget::Stdout);
    }
    // A slow or failed sink never blocks detection: each has a bounded queue of its own.
    let sink = Dispatcher::start(&outputs, Some(metrics.output_events.clone()))?;
    // Arm what the baseline knows before looking, so nothing changing meanwhile slips by.
    for e in &baseline.entries {
        match sensor.watch(key_of(e), &e.path, e.kind == FileKind::Directory) {
            Ok(()) => {}
            // The full comparison below learns every entry again and reports what failed.
            Err(e) if e.not_watched_action() == "watch_capacity_exceeded" => break,
            Err(e) if e.only_this_inode() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let sent = store.alerted()?;
    let mut d = Daemon {
        alerted: crate::alerted::Alerted::new(sent),
        suppressed: 0,
        alerted_new: Vec::new(),
        followed_seal: baseline.seal.clone(),
        baseline: baseline
            .entries
            .iter()
            .map(|e| (e.path.clone(), e.clone()))
            .collect(),
        seen: HashMap::new(),
        paths: HashMap::new(),
        sensor,
        sink,
        outbox: Vec::new(),
        rechecks: Vec::new(),
        origin: Origin {
            host: hostname(),
            scan: "realtime",
            root: None,
            baseline: Some(BaselineRef {
                generation: baseline.generation,
                seal: baseline.seal.clone(),
            }),
        },
        mode,
        settings: settings.clone(),
        writes: StateWrites::new(store, key, settings, metrics.clone()),
        roots: Roots::new(
            &settings
                .watches
                .iter()
                .map(|w| w.path.clone())
                .collect::<Vec<_>>(),
        ),
        root_parents: HashMap::new(),
        appends: baseline.appends.clone(),
        checkpoints: HashMap::new(),
        retired: baseline.retired.clone(),
        full_until: HashMap::new(),
        settling: HashMap::new(),
        departed: Vec::new(),
        metrics: metrics.clone(),
        health: health.clone(),
        pods: crate::attribution::PodDirectory::new(settings.host_root.clone()),
        watch_failures_alerted: HashSet::new(),
    };
    d.arm_root_parents()?;
    d.full_check(baseline.entries, reason)?;
    health.set_reconciled(true);
    let fd = Readiness(d.sensor.ready_fd().as_raw_fd());
    // SAFETY: the descriptor belongs to the sensor, which outlives this AsyncFd (both end with
    // this function, the AsyncFd first).
    let events = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot poll the {} sensor: {e}", d.sensor.name()))?;
    let mut tick = tokio::time::interval(RECHECK_TICK);
    // Checked: a time past what the clock can represent means no scheduled comparison, never a
    // panic (the configuration bounds both durations; this is the last line of defence).
    let next_full = |from: tokio::time::Instant| {
        settings.full_check.and_then(|every| {
            let jitter = settings.jitter.mul_f64(rand_fraction());
            from.checked_add(every)?.checked_add(jitter)
        })
    };
    let mut full_due = next_full(tokio::time::Instant::now());
    let mut lost = d.sensor.lost();
    let mut records = Vec::new();
    d.metrics.sensor_kernel_bytes.set(d.sensor.kernel_bytes() as i64);
    eprintln!(
        "fimd run: {} sensor attached (hooks: {}), watching {} inodes ({} KiB of kernel maps); ready",
        d.sensor.name(),
        d.sensor.hooks().join(", "),
        d.paths.len(),
        d.sensor.kernel_bytes() >> 10
    );
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("watching {} inodes", d.paths.len())),
    ]);
    let control = loop {
        health.tick();
        tokio::select! {
            guard = events.readable() => {
                let mut guard = guard?;
                records.clear();
                d.sensor.drain(&mut records);
                guard.clear_ready();
                metrics.kernel_events.inc_by(records.len() as u64);
                tokio::task::block_in_place(|| d.handle(&records))?;
            }
            _ = tick.tick() => {
                // A wakeup can be missed (a record committed as readiness was cleared): drain on
                // every tick too, so nothing waits longer than one tick.
                records.clear();
                d.sensor.drain(&mut records);
                metrics.kernel_events.inc_by(records.len() as u64);
                metrics.hash_queue_length.set(d.rechecks.len() as i64);
                tokio::task::block_in_place(|| {
                    let episode = d.writes.flush(false);
                    d.report_state(episode);
                    d.handle(&records)?;
                    d.check_roots(None)?;
                    d.recheck_due()?;
                    d.settle_due()?;
                    d.departed_due()?;
                    follow::follow_baseline(&mut d)
                })?;
                metrics.set_probe_errors(&d.sensor.probe_errors());
                // Anything the sensor could not deliver is repaired by a full comparison.
                let now = d.sensor.lost();
                if now > lost {
                    eprintln!("fimd run: {} kernel events lost; rescanning every watch", now - lost);
                    metrics.kernel_events_lost.inc_by(now - lost);
                    metrics.count_rescan("loss");
                    lost = now;
                    tokio::task::block_in_place(|| d.rescan_all())?;
                }
            }
            _ = sleep_until_opt(full_due) => {
                let entries = d.baseline_entries();
                tokio::task::block_in_place(|| d.full_check(entries, "scheduled"))?;
                full_due = next_full(tokio::time::Instant::now());
            }
            _ = signals.hup.recv() => break Control::Reload,
            _ = signals.term.recv() => break Control::Shutdown,
            _ = signals.int.recv() => break Control::Shutdown,
        }
    };
    drop(events);
    let episode = d.writes.flush(true);
    d.report_state(episode);
    if d.writes.queued() > 0 {
        eprintln!(
            "fimd run: {} ledger and evidence writes could not be stored and are lost (the state store is \
             failing); the next start compares everything again",
            d.writes.queued()
        );
    }
    health.set_ready(false);
    metrics.set_sensor_attached(d.sensor.name(), false);
    let end = d.sink.shutdown(SHUTDOWN_FLUSH);
    if end.given_up > 0 {
        eprintln!(
            "fimd run: alert sinks still held {} alerts after {} s: dropped ({} dropped in all)",
            end.given_up,
            SHUTDOWN_FLUSH.as_secs(),
            end.dropped
        );
    } else if end.dropped > 0 {
        eprintln!(
            "fimd run: {} alerts were dropped in all (a sink full or failing)",
            end.dropped
        );
    }
    eprintln!("fimd run: stopped");
    Ok(control)
}

/// How often the loop drains the sensor without a wakeup, checks for losses and rehashes
/// memory-mapped files.
const RECHECK_TICK: std::time::Duration = std::time::Duration::from_millis(100);
/// After a change through a shared writable mapping: when to look again. Stores through an
/// already-writable page raise no event (on tmpfs, writeback never write-protects it).
const MMAP_RECHECKS: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(500),
    std::time::Duration::from_secs(2),
];

/// The sensor's descriptor, for the reactor.
struct Readiness(std::os::fd::RawFd);

impl AsRawFd for Readiness {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

impl Daemon {
    /// A full comparison with the baseline, rehashing everything: at start (what changed while
    /// fimd was down), after a reload, and on the schedule. Learns every current inode and
    /// leaves an evidence record.
    fn full_check(&mut self, baseline: Vec<Entry>, reason: &'static str) -> anyhow::Result<()> {
        let seal = self
            .origin
            .baseline
            .as_ref()
            .map_or(String::new(), |b| b.seal.clone());
        let seal = seal.as_str();
        let started = std::time::Instant::now();
        let started_at = crate::output::alert::now_rfc3339();
        self.metrics.baseline_files.set(baseline.len() as i64);
        let mut scan = scan::start(&self.settings, Path::new("/"));
        let progress = scan.progress.clone();
        let mut current = Vec::new();
        let health = self.health.clone();
        let cmp = compare::compare(&self.settings, baseline, &mut scan, self.mode, |e| {
            health.tick();
            current.push(e.clone())
        });
        drop(scan);
        self.metrics.observe_hash_batch(
            progress.bytes.load(std::sync::atomic::Ordering::Relaxed),
            started.elapsed(),
        );
        for e in current {
            self.learn(e)?;
        }
        // Everything at once, rotations while fimd was down included: judged here, not settled.
        let changes = cmp.changes.into_iter().map(|c| (c, None)).collect();
        let before = self.outbox.len();
        // Recounted from scratch; what was alerted before is not sent again.
        self.alerted.clear_outstanding();
        let suppressed = self.suppressed;
        self.judge(changes, None)?;
        let sent_alerts = self.outbox[before..]
            .iter()
            .filter(|d| d["event"]["kind"] == "alert")
            .count();
        let events = self.outbox.len() - before - sent_alerts;
        let alerts = sent_alerts + (self.suppressed - suppressed);
        // Differences that are gone (put back as they were) are forgotten: a new change there
        // is alerted anew.
        // Best effort, like every state write: an unwritable store never stops detection.
        if let Some(store) = self.writes.store()
            && let Err(e) = store.alerted_retain(&self.alerted.outstanding_tokens())
        {
            eprintln!("fimd run: cannot record which differences were alerted: {e}");
        }
        self.metrics
            .outstanding_differences
            .set(self.alerted.outstanding() as i64);
        super::report_problems(&cmp.problems);
        super::report_metadata_only("run", &self.settings, &cmp.metadata_only);
        self.send_alerts()?;
        self.metrics.count_rescan(reason);
        self.metrics.full_check_done(started.elapsed());
        let record = super::Evidence {
            kind: reason,
            started_at: &started_at,
            took: started.elapsed(),
            files: cmp.scanned,
            differences: alerts,
            events,
            problems: cmp.problems.len(),
            seal,
            generation: self.origin.baseline.as_ref().map_or(0, |b| b.generation),
        }
        .to_json(&self.settings);
        let episode = self.writes.evidence(record);
        self.report_state(episode);
        Ok(())
    }

    /// The baseline as a sorted list, for a full comparison.
    fn baseline_entries(&self) -> Vec<Entry> {
        let mut v: Vec<Entry> = self.baseline.values().cloned().collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    /// Arms the directories holding the watch roots.
    fn arm_root_parents(&mut self) -> anyhow::Result<()> {
        let roots: Vec<Vec<u8>> = self.roots.paths().map(<[u8]>::to_vec).collect();
        for root in roots {
            if let Some(key) = watch_roots::parent_key(&root) {
                let parent = Path::new(std::ffi::OsStr::from_bytes(&root))
                    .parent()
                    .map_or_else(Vec::new, |p| p.as_os_str().as_bytes().to_vec());
                // Named by the root it is for: the parent is watched on the root's behalf.
                if let Err(e) = self.sensor.watch(key, &parent, true) {
                    self.cannot_watch(&root, &e);
                }
                self.root_parents.entry(key).or_default().push(root);
            }
        }
        Ok(())
    }

    /// Rescans, whole, every watch root whose identity changed since the last look (moved
    /// away, deleted, recreated, replaced by a symlink): alerts on the root itself and on what
    /// is under it, then learns and arms what is there now. `who`: the writers the kernel named
    /// in the root's parent directory.
    fn check_roots(&mut self, who: Option<&HashMap<Vec<u8>, Modifier>>) -> anyhow::Result<()> {
        let changed = self.roots.changed();
        if changed.is_empty() {
            return Ok(());
        }
        for root in &changed {
            eprintln!(
                "fimd run: watch root {} is no longer what was watched; rescanning it",
                crate::output::path::path_text(root).0
            );
        }
        self.metrics.count_rescan("root");
        for root in &changed {
            // Perhaps another filesystem mounted there now.
            if watch_roots::identity(root).is_some()
                && let Err(e) = self
                    .sensor
                    .watch_filesystem(Path::new(std::ffi::OsStr::from_bytes(root)))
            {
                self.cannot_watch(root, &e);
            }
        }
        let targets = changed
            .into_iter()
            .map(|p| (PathBuf::from(std::ffi::OsStr::from_bytes(&p)), u32::MAX))
            .collect();
        self.rescan(targets, who)
    }

    fn rescan_all(&mut self) -> anyhow::Result<()> {
        let roots: Vec<PathBuf> = self.settings.watches.iter().map(|w| w.path.clone()).collect();
        let targets = roots.into_iter().map(|p| (p, u32::MAX)).collect();
        self.rescan(targets, None)
    }

    /// Records a path's current state and watches its inode.
    fn learn(&mut self, e: Entry) -> anyhow::Result<()> {
        let key = key_of(&e);
        // Replaced by another inode (renamed over): the old inode no longer has this name.
        if self.seen.get(&e.path).is_some_and(|old| key_of(old) != key) {
            self.forget(&e.path.clone());
        }
        let paths = self.paths.entry(key).or_default();
        if !paths.contains(&e.path) {
            paths.push(e.path.clone());
        }
        let watched = if e.kind == FileKind::Regular && self.policy(&e.path) == Policy::AppendOnly {
            // One insert: never a moment without the verified length.
            let verified = self.verified_len(&e);
            self.sensor
                .watch_append(key, verified)
                .and_then(|()| self.sensor.rearm(key))
        } else {
            self.sensor.watch(key, &e.path, e.kind == FileKind::Directory)
        };
        // Never fatal: the path is still compared on every full comparison.
        if let Err(err) = watched {
            self.cannot_watch(&e.path, &err);
        }
        self.seen.insert(e.path.clone(), e);
        Ok(())
    }

    /// Counts, and reports, an inode the sensor could not be made to watch (its maps are full,
    /// or fanotify cannot mark it): `fim_watch_failures_total` (and, for full maps,
    /// `fim_sensor_watch_full_total`) every time; on stderr and as one alert naming the watch the
    /// first time of each kind, because what it covers now waits for the full comparison.
    fn cannot_watch(&mut self, path: &[u8], why: &crate::sensor::SensorError) {
        self.metrics.watch_failures.inc();
        let action = why.not_watched_action();
        if action == "watch_capacity_exceeded" {
            self.metrics.watch_full.inc();
        }
        if !self.watch_failures_alerted.insert(action) {
            return;
        }
        let watch = self
            .settings
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
            crate::output::path::path_text(path).0
        );
        self.outbox.push(crate::output::alert::coverage_alert(
            action,
            &watch,
            &reason,
            &self.origin,
        ));
    }

    fn forget(&mut self, path: &[u8]) {
        if let Some(e) = self.seen.remove(path) {
            let key = key_of(&e);
            if let Some(paths) = self.paths.get_mut(&key) {
                paths.retain(|p| p != path);
                if paths.is_empty() {
                    self.paths.remove(&key);
                    self.sensor.unwatch(&key);
                }
            }
        }
    }

    fn handle(&mut self, records: &[ChangeRecord]) -> anyhow::Result<()> {
        let mut targets = Vec::new();
        let mut who: HashMap<Vec<u8>, Modifier> = HashMap::new();
        let mut appends = Vec::new();
        let mut root_who: HashMap<Vec<u8>, Modifier> = HashMap::new();
        let mut roots_touched = false;
        for r in records {
            // A change in a directory holding a watch root: the root may have been moved,
            // deleted, recreated or replaced.
            if let Some(roots) = self.root_parents.get(&r.key) {
                // Any process may have changed that directory: fimd itself (its alert file may
                // be there) is never the one that moved a root.
                let by = (r.tgid != std::process::id()).then(|| Modifier::from_record(r));
                if let Some(m) = by {
                    for root in roots.clone() {
                        root_who.insert(root, m.clone());
                    }
                }
                roots_touched = true;
                self.sensor.rearm(r.key)?;
            }
            // A record still in the ring for an inode no longer watched: nothing to re-arm.
            if !self.paths.contains_key(&r.key) {
                continue;
            }
            // Re-arm first: a change from now on reports again (docs/sensor-design.md §5).
            self.sensor.rearm(r.key)?;
            let modifier = Modifier::from_record(r);
            let mut violations = None;
            for p in self.paths.get(&r.key).cloned().unwrap_or_default() {
                let is_dir = self.seen.get(&p).is_some_and(|e| e.kind == FileKind::Directory);
                let mapped = r.flags & RECORD_MMAP_WRITABLE != 0;
                barrier(&p, mapped);
                if self.append_verifiable(&p) {
                    let v = *violations.get_or_insert_with(|| self.sensor.take_violations(&r.key));
                    let v = if mapped {
                        v | monitor_common::VIOLATION_MMAP
                    } else {
                        v
                    };
                    appends.push((p, v, modifier.clone()));
                    continue;
                }
                // A later look already planned now stands for this writer's change too.
                for r in self.rechecks.iter_mut().filter(|(q, ..)| *q == p) {
                    r.2 = modifier.clone();
                }
                if mapped {
                    self.rechecks.retain(|(q, ..)| *q != p);
                    self.rechecks.push((
                        p.clone(),
                        std::time::Instant::now() + MMAP_RECHECKS[0],
                        modifier.clone(),
                        0,
                    ));
                }
                who.insert(p.clone(), modifier.clone());
                targets.push((PathBuf::from(std::ffi::OsStr::from_bytes(&p)), u32::from(is_dir)));
            }
        }
        for (path, violations, m) in appends {
            if let Some(target) = self.verify_append(&path, violations, &m)? {
                who.insert(path, m);
                targets.push(target);
            }
        }
        self.send_alerts()?;
        if roots_touched {
            self.check_roots(Some(&root_who))?;
        }
        if targets.is_empty() {
            return Ok(());
        }
        self.rescan(targets, Some(&who))?;
        // A file found empty was most likely just truncated (`>`, O_TRUNC) with its write
        // still to land; on an empty file the barrier takes no lock, so look once more.
        let now = std::time::Instant::now();
        for (path, m) in who {
            let empty = self
                .seen
                .get(&path)
                .is_some_and(|e| e.kind == FileKind::Regular && e.size == 0);
            if empty && !self.rechecks.iter().any(|(q, ..)| *q == path) {
                self.rechecks
                    .push((path, now + MMAP_RECHECKS[0], m, MMAP_RECHECKS.len() - 1));
            }
        }
        Ok(())
    }

    /// Rehashes memory-mapped files whose next look is due.
    fn recheck_due(&mut self) -> anyhow::Result<()> {
        let now = std::time::Instant::now();
        if !self.rechecks.iter().any(|(_, at, ..)| *at <= now) {
            return Ok(());
        }
        let (due, mut later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rechecks)
            .into_iter()
            .partition(|(_, at, ..)| *at <= now);
        let mut who = HashMap::new();
        let mut targets = Vec::new();
        for (path, _, m, looks) in due {
            if let Some(next) = MMAP_RECHECKS.get(looks + 1) {
                later.push((path.clone(), now + *next, m.clone(), looks + 1));
            }
            // A ctime newer than what was seen means a newer change, and the re-armed inode
            // reported it: its own record rescans it and names its writer, not this look.
            #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
            let ctime = crate::scan::long_paths::lstat(&path)
                .map(|st| st.st_ctime as i64 * 1_000_000_000 + st.st_ctime_nsec as i64);
            if ctime.is_ok_and(|c| self.seen.get(&path).is_some_and(|e| e.ctime_ns != c)) {
                continue;
            }
            targets.push((PathBuf::from(std::ffi::OsStr::from_bytes(&path)), 0));
            who.insert(path, m);
        }
        self.rechecks = later;
        self.rescan(targets, Some(&who))
    }

    /// Scans `targets` and alerts on every difference from what was last seen.
    fn rescan(
        &mut self,
        targets: Vec<(PathBuf, u32)>,
        who: Option<&HashMap<Vec<u8>, Modifier>>,
    ) -> anyhow::Result<()> {
        // Where absence means deletion: the entries of listed directories, and everything
        // below a subtree scanned whole.
        let listed: Vec<(Vec<u8>, u32)> = targets
            .iter()
            .filter(|(_, d)| *d > 0)
            .map(|(p, d)| (p.as_os_str().as_bytes().to_vec(), *d))
            .collect();
        let target_paths: Vec<PathBuf> = targets.iter().map(|(p, _)| p.clone()).collect();
        let started = std::time::Instant::now();
        let mut scan = scan::start_at(&self.settings, targets);
        let progress = scan.progress.clone();
        let mut found: HashMap<Vec<u8>, Entry> = HashMap::new();
        let mut problems = Vec::new();
        while let Some(item) = scan.next_item() {
            match item {
                ScanItem::Entry(e) | ScanItem::Unstable(e) | ScanItem::MetadataOnly(e) => {
                    found.insert(e.path.clone(), e);
                }
                ScanItem::Problem(p) => problems.push(p),
            }
        }
        drop(scan);
        self.metrics.observe_hash_batch(
            progress.bytes.load(std::sync::atomic::Ordering::Relaxed),
            started.elapsed(),
        );
        // A target stat'ed while being removed (its own record raced its parent's) was seen by
        // the stat but not by the parent's listing, which waits for the removal to finish:
        // what no longer exists now was not found.
        let vanished: Vec<Vec<u8>> = target_paths
            .iter()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .filter(|p| found.contains_key(p))
            // Relative to the parent: a path of PATH_MAX bytes or more is still there.
            .filter(|p| crate::scan::long_paths::lstat(p).is_err())
            .collect();
        found.retain(|p, _| !vanished.iter().any(|v| compare::is_under(p, v)));
        // A new directory may already hold files (a directory moved in, or renamed): its whole
        // subtree is read now, so what came with it is judged with it (a move, not a deletion
        // and a creation), watched, and only then reported.
        let mut new_dirs: Vec<PathBuf> = found
            .values()
            .filter(|e| e.kind == FileKind::Directory && !self.seen.contains_key(&e.path))
            .map(|e| PathBuf::from(std::ffi::OsStr::from_bytes(&e.path)))
            .collect();
        new_dirs.retain(|d| {
            let b = d.as_os_str().as_bytes();
            !listed
                .iter()
                .any(|(l, depth)| *depth == u32::MAX && compare::is_under(b, l))
        });
        if !new_dirs.is_empty() {
            let mut scan = scan::start_at(
                &self.settings,
                new_dirs.into_iter().map(|p| (p, u32::MAX)).collect(),
            );
            while let Some(item) = scan.next_item() {
                match item {
                    ScanItem::Entry(e) | ScanItem::Unstable(e) | ScanItem::MetadataOnly(e) => {
                        found.entry(e.path.clone()).or_insert(e);
                    }
                    ScanItem::Problem(p) => problems.push(p),
                }
            }
        }
        // A watch root is in no watched directory's listing: its own absence is its deletion.
        let missing_roots: Vec<&Path> = target_paths
            .iter()
            .filter(|p| self.roots.is_root(p.as_os_str().as_bytes()))
            .filter(|p| !found.contains_key(p.as_os_str().as_bytes()))
            .filter(|p| crate::scan::long_paths::lstat(p.as_os_str().as_bytes()).is_err())
            .map(PathBuf::as_path)
            .collect();
        super::report_problems(&problems);
        let modifier_for = |path: &[u8]| -> Option<Modifier> {
            let who = who?;
            let mut p = Some(Path::new(std::ffi::OsStr::from_bytes(path)));
            while let Some(cur) = p {
                if let Some(m) = who.get(cur.as_os_str().as_bytes()) {
                    return Some(m.clone());
                }
                p = cur.parent();
            }
            None
        };
        // Entries gone from a listed directory (or, in a full rescan, from anywhere). A listed
        // directory that is itself gone says nothing of its entries: its parent's listing
        // (which changed too) finds it gone, and its entries with it, in one decision.
        let is_root = |p: &[u8]| {
            self.settings
                .watches
                .iter()
                .any(|w| w.path.as_os_str().as_bytes() == p)
        };
        let listed: Vec<(Vec<u8>, u32)> = listed
            .into_iter()
            .filter(|(d, _)| found.contains_key(d) || is_root(d))
            .collect();
        let mut gone: Vec<Vec<u8>> = self
            .seen
            .keys()
            .filter(|p| !found.contains_key(*p))
            .filter(|p| {
                missing_roots.iter().any(|r| r.as_os_str().as_bytes() == &p[..])
                    || listed.iter().any(|(dir, depth)| {
                        parent_of(p) == Some(&dir[..])
                            || (*depth == u32::MAX && compare::is_under(p, dir) && *p != dir)
                    })
            })
            .cloned()
            .collect();
        // What was below a directory that is gone is gone from there too.
        let gone_dirs: Vec<Vec<u8>> = gone
            .iter()
            .filter(|p| self.seen.get(*p).is_some_and(|e| e.kind == FileKind::Directory))
            .cloned()
            .collect();
        if !gone_dirs.is_empty() {
            let listed_gone: HashSet<&Vec<u8>> = gone.iter().collect();
            let below: Vec<Vec<u8>> = self
                .seen
                .keys()
                .filter(|p| !found.contains_key(*p) && !listed_gone.contains(p))
                .filter(|p| gone_dirs.iter().any(|d| compare::is_under(p, d)))
                .cloned()
                .collect();
            gone.extend(below);
        }
        let mut created: Vec<Entry> = Vec::new();
        let mut changes: Vec<(Change, Option<Modifier>)> = Vec::new();
        for (path, e) in found {
            match self.seen.get(&path) {
                Some(old) if diff(old, &e, self.mode).is_empty() => {}
                Some(old) => {
                    let change = self.change_against_baseline(&e, Some(old));
                    self.learn(e)?;
                    match change {
                        Some(c) => changes.push((c, modifier_for(&path))),
                        None => self.alerted.resolved(&path),
                    }
                }
                None => created.push(e),
            }
        }
        // A new path of an inode known under another name that no longer holds it: moved here
        // (its old directory's record may come later, or never for a watch root's parent).
        for c in &created {
            for p in self.paths.get(&key_of(c)).cloned().unwrap_or_default() {
                let left = std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(&p))
                    .map_or(true, |md| std::os::unix::fs::MetadataExt::ino(&md) != c.ino);
                if left && !gone.contains(&p) && self.seen.contains_key(&p) {
                    gone.push(p);
                }
            }
        }
        let now = std::time::Instant::now();
        let mut due: HashMap<Vec<u8>, (std::time::Instant, Option<Modifier>)> = HashMap::new();
        let mut gone: Vec<Entry> = gone
            .into_iter()
            .map(|p| {
                let old = self.seen.get(&p).cloned().expect("listed from seen");
                self.forget(&p);
                due.insert(p.clone(), (now + MOVE_WINDOW, modifier_for(&p)));
                old
            })
            .collect();
        for (old, at, m) in std::mem::take(&mut self.departed) {
            due.insert(old.path.clone(), (at, m));
            gone.push(old);
        }
        // The same decision as a full comparison's (`fimd check`): see `crate::moves`.
        let pairing = crate::moves::pair(gone, created);
        for (old, new) in pairing.moved {
            let path = old.path.clone();
            let who = due.remove(&path).and_then(|(_, m)| m);
            // Against the baseline where it has the old path, as `fimd check` reports it.
            let before = self.baseline.get(&old.path).cloned().unwrap_or(old);
            self.learn(new.clone())?;
            let policy = self.policy(&new.path);
            changes.push((compare::moved(before, new, self.mode, policy), who));
        }
        for old in pairing.deleted {
            let (at, who) = due.remove(&old.path).unwrap_or((now, None));
            self.departed.push((old, at, who));
        }
        for c in pairing.created {
            let path = c.path.clone();
            let change = self.change_against_baseline(&c, None);
            self.learn(c)?;
            if let Some(change) = change {
                changes.push((change, modifier_for(&path)));
            }
        }
        self.judge(changes, Some(SETTLE))?;
        self.departed_due()?;
        self.send_alerts()
    }

    /// Reports the paths found gone whose `MOVE_WINDOW` passed without a new path: deleted.
    fn departed_due(&mut self) -> anyhow::Result<()> {
        let now = std::time::Instant::now();
        if !self.departed.iter().any(|(_, at, _)| *at <= now) {
            return Ok(());
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.departed)
            .into_iter()
            .partition(|(_, at, _)| *at <= now);
        self.departed = later;
        let mut changes = Vec::new();
        for (old, _, who) in due {
            let path = old.path.clone();
            // Back at its path meanwhile: judged there (against the baseline) when found.
            if self.seen.contains_key(&path) {
                continue;
            }
            let change = Change {
                action: Action::Deleted,
                kind: Kind::Alert,
                extra: Vec::new(),
                policy: self.policy(&path),
                current: None,
                previous: Some(self.baseline.get(&path).cloned().unwrap_or(old)),
                changes: Vec::new(),
            };
            changes.push((change, who));
        }
        self.judge(changes, Some(SETTLE))?;
        self.send_alerts()
    }

    /// Whether a change of `path` can be judged as an append: an append-only regular file with
    /// a known content to verify against.
    /// A file created since the baseline, or a rotated log (which must not change at all),
    /// is judged by the general path.
    fn append_verifiable(&self, path: &[u8]) -> bool {
        let watch = self
            .settings
            .watch_for(Path::new(std::ffi::OsStr::from_bytes(path)));
        watch.is_some_and(|w| w.policy == Policy::AppendOnly && !w.rotate.matches(name_of(path)))
            && self.seen.get(path).is_some_and(|e| e.kind == FileKind::Regular)
            && self
                .baseline
                .get(path)
                .is_some_and(|b| b.kind == FileKind::Regular && b.sha256.is_some())
    }

    /// The length up to which an append-only file's content is verified.
    fn verified_len(&self, e: &Entry) -> u64 {
        match self.baseline.get(&e.path) {
            Some(b) if b.ino == e.ino && b.dev == e.dev => b.size,
            // Not the baseline's inode: nothing of it is vouched for yet.
            Some(_) => 0,
            None => e.size,
        }
    }

    /// Judges a change of an append-only file from what was verified: reads only the bytes
    /// past its checkpoint unless the kernel saw a write below the verified length. Returns a
    /// rescan target when the path is no longer the same regular file.
    fn verify_append(
        &mut self,
        path: &[u8],
        violations: u32,
        who: &Modifier,
    ) -> anyhow::Result<Option<(PathBuf, u32)>> {
        use monitor_common::{VIOLATION_SHRINK, VIOLATION_WRITE_BELOW};
        let rescan = Some((PathBuf::from(std::ffi::OsStr::from_bytes(path)), 0));
        let Some(base) = self.baseline.get(path).cloned() else {
            return Ok(rescan);
        };
        let Some(fd) = open_regular(Path::new("/"), path) else {
            return Ok(rescan);
        };
        let st = rustix::fs::fstat(&fd)?;
        #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
        let (dev, ino, size) = (st.st_dev as u64, st.st_ino as u64, st.st_size.max(0) as u64);
        if (dev, ino) != (base.dev, base.ino) {
            return Ok(rescan);
        }
        let key = key_of(&base);
        // From here on, a write below what is about to be read is recorded by the kernel.
        self.sensor.watch_append(key, size.max(base.size))?;
        let now = std::time::Instant::now();
        let st_now = self
            .appends
            .get(path)
            .filter(|a| a.len == base.size && Some(a.sha256) == base.sha256);
        let whole =
            violations != 0 || st_now.is_none() || self.full_until.get(path).is_some_and(|t| *t > now);
        let sha = base.sha256.expect("verifiable entries have a hash");
        let started = std::time::Instant::now();
        let outcome = match st_now {
            Some(a) if !whole => append_state::extend(&fd, a, size),
            _ => append_state::full(&fd, size, Some((base.size, sha))),
        };
        if let Ok(Extended::Intact { read, .. }) = &outcome {
            self.metrics.observe_hash_batch(*read, started.elapsed());
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                eprintln!("fimd run: {}: {e}", crate::output::path::path_text(path).0);
                return Ok(rescan);
            }
        };
        let current_sha = match &outcome {
            Extended::Intact { state, .. } => Some(state.sha256),
            _ => match append_state::full(&fd, size, None) {
                Ok(Extended::Intact { state, .. }) => Some(state.sha256),
                _ => None,
            },
        };
        let xattrs = crate::scan::xattr::read_fd(&fd).unwrap_or_default();
        let flags = crate::scan::flags::read_fd(&fd).unwrap_or_default();
        let (birth_ns, generation) = (
            crate::scan::identity::birth_fd(&fd),
            crate::scan::identity::generation_fd(&fd),
        );
        #[allow(clippy::unnecessary_cast)]
        let cur = Entry {
            path: path.to_vec(),
            kind: FileKind::Regular,
            size,
            mode: st.st_mode as u32 & 0o7777,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            ino,
            dev,
            nlink: st.st_nlink as u64,
            mtime_ns: st.st_mtime as i64 * 1_000_000_000 + st.st_mtime_nsec as i64,
            ctime_ns: st.st_ctime as i64 * 1_000_000_000 + st.st_ctime_nsec as i64,
            sha256: current_sha,
            link_target: None,
            xattrs,
            flags,
            birth_ns,
            generation,
        };
        let policy = Policy::AppendOnly;
        let change = |action, kind, changes: Vec<&'static str>| Change {
            action,
            kind,
            policy,
            current: Some(cur.clone()),
            previous: Some(base.clone()),
            changes,
            extra: Vec::new(),
        };
        let meta: Vec<&'static str> = diff(&base, &cur, self.mode)
            .into_iter()
            .filter(|k| !["content", "size", "mtime", "ctime"].contains(k))
            .collect();
        let rotating = self.watch_rotates(path);
        let mut out = None;
        if !meta.is_empty() {
            out = Some(change(Action::AttributesModified, Kind::Alert, meta));
        } else {
            match outcome {
                // The kernel saw it shorter than verified: truncated, whatever was written since.
                Extended::Intact { .. } | Extended::Changed if violations & VIOLATION_SHRINK != 0 => {
                    out = Some(change(Action::Truncated, Kind::Alert, vec!["size", "content"]));
                }
                Extended::Intact { state, read } => {
                    if violations & VIOLATION_WRITE_BELOW != 0 {
                        self.full_until.insert(path.to_vec(), now + FULL_AFTER_VIOLATION);
                    }
                    if size > base.size {
                        let mut c = change(Action::Appended, Kind::Event, vec!["size", "content"]);
                        c.extra.push((
                            "append",
                            json!({
                                "verified_bytes": base.size,
                                "appended_bytes": size - base.size,
                                "read_bytes": read,
                            }),
                        ));
                        // The event goes out before the ledger write it does not depend on.
                        self.alert(&c, Some(who))?;
                        self.send_alerts()?;
                        self.metrics.append_verified_bytes.inc_by(size - base.size);
                        self.advance(&cur, state)?;
                    }
                }
                Extended::Changed => out = Some(change(Action::Updated, Kind::Alert, vec!["content"])),
                Extended::Shorter if rotating => {
                    // Perhaps copytruncate: judged with the rest of the rotation.
                    self.defer(path, Some(who.clone()));
                }
                Extended::Shorter => {
                    out = Some(change(Action::Truncated, Kind::Alert, vec!["size", "content"]))
                }
            }
        }
        self.learn(cur)?;
        if let Some(c) = out {
            self.alert(&c, Some(who))?;
        }
        Ok(None)
    }

    /// The baseline advances to `cur`, verified: in memory, in the kernel and in the ledger.
    fn advance(&mut self, cur: &Entry, state: AppendState) -> anyhow::Result<()> {
        let prev = self.baseline.get(&cur.path).or(self.seen.get(&cur.path));
        if let Some(sha) = prev.and_then(|p| p.sha256.map(|s| (p.size, s))) {
            let cps = self.checkpoints.entry(cur.path.clone()).or_default();
            cps.push(sha);
            if cps.len() > CHECKPOINTS {
                cps.remove(0);
            }
        }
        let row = LedgerRow {
            path: cur.path.clone(),
            entry: Some(cur.clone()),
            append: Some(state),
        };
        self.apply_ledger(vec![row])
    }

    /// Persists what policy advanced and takes it as the baseline.
    fn apply_ledger(&mut self, rows: Vec<LedgerRow>) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let episode = self.writes.ledger(rows.clone());
        self.report_state(episode);
        for row in rows {
            match row.entry {
                Some(e) => {
                    self.retired.remove(&row.path);
                    // A new log at this path: the old one's checkpoints describe other bytes.
                    if self.baseline.get(&row.path).is_none_or(|b| b.ino != e.ino) {
                        self.checkpoints.remove(&row.path);
                        // What the kernel recorded for this inode number before now belongs to
                        // bytes this row was judged by whole, or to another file that had the
                        // number (a rotated file deleted, its number given to the new log).
                        if e.kind == FileKind::Regular {
                            self.sensor.take_violations(&key_of(&e));
                        }
                    }
                    if e.kind == FileKind::Regular && self.policy(&e.path) == Policy::AppendOnly {
                        self.sensor.watch_append(key_of(&e), e.size)?;
                    }
                    self.baseline.insert(row.path.clone(), e);
                }
                None => {
                    self.baseline.remove(&row.path);
                    self.checkpoints.remove(&row.path);
                    self.retired.insert(row.path.clone());
                }
            }
            match row.append {
                Some(a) => self.appends.insert(row.path, a),
                None => self.appends.remove(&row.path),
            };
        }
        Ok(())
    }

    fn watch_rotates(&self, path: &[u8]) -> bool {
        self.settings
            .watch_for(Path::new(std::ffi::OsStr::from_bytes(path)))
            .is_some_and(|w| w.policy == Policy::AppendOnly && !w.rotate.is_empty())
    }

    /// Holds a change in a rotating log's directory until the directory is quiet.
    fn defer(&mut self, path: &[u8], who: Option<Modifier>) {
        let dir = parent_of(path).unwrap_or(b"/").to_vec();
        let s = self.settling.entry(dir).or_insert_with(|| Settling {
            due: std::time::Instant::now(),
            paths: HashSet::new(),
            who: HashMap::new(),
        });
        s.due = std::time::Instant::now() + SETTLE;
        s.paths.insert(path.to_vec());
        if let Some(m) = who {
            s.who.insert(path.to_vec(), m);
        }
    }

    /// Alerts on changes, after the append-only policy judged them. Under a rotating watch they
    /// wait (`settle`) for the rotation to finish, unless told to judge now.
    fn judge(
        &mut self,
        changes: Vec<(Change, Option<Modifier>)>,
        settle: Option<std::time::Duration>,
    ) -> anyhow::Result<()> {
        let mut now = Vec::new();
        for (c, m) in changes {
            if settle.is_some() && c.policy == Policy::AppendOnly && self.watch_rotates(c.path()) {
                if let Some(prev) = &c.previous {
                    self.defer(&prev.path.clone(), m.clone());
                }
                self.defer(c.path(), m);
            } else {
                now.push((c, m));
            }
        }
        if now.is_empty() {
            return Ok(());
        }
        let who: HashMap<Vec<u8>, Modifier> = now
            .iter()
            .filter_map(|(c, m)| Some((c.path().to_vec(), m.clone()?)))
            .collect();
        let reviewed = review::review(
            &review::Context {
                settings: &self.settings,
                root: Path::new("/"),
                mode: self.mode,
                base: &self.baseline,
                retired: &self.retired,
                checkpoints: &self.checkpoints,
            },
            now.into_iter().map(|(c, _)| c).collect(),
        );
        self.apply_ledger(reviewed.ledger)?;
        for c in &reviewed.changes {
            let m = who
                .get(c.path())
                .or_else(|| c.previous.as_ref().and_then(|p| who.get(&p.path)));
            self.alert(c, m)?;
        }
        Ok(())
    }

    /// Judges the rotating directories that have been quiet long enough: the baseline's entries
    /// there against what is there now, as one comparison.
    fn settle_due(&mut self) -> anyhow::Result<()> {
        let now = std::time::Instant::now();
        let due: Vec<Vec<u8>> = self
            .settling
            .iter()
            .filter(|(_, s)| s.due <= now)
            .map(|(d, _)| d.clone())
            .collect();
        for dir in due {
            let s = self.settling.remove(&dir).expect("listed");
            let mut base: Vec<Entry> = self
                .baseline
                .values()
                .filter(|e| e.path == dir || parent_of(&e.path) == Some(&dir[..]))
                .cloned()
                .collect();
            base.sort_by(|a, b| a.path.cmp(&b.path));
            let target = PathBuf::from(std::ffi::OsStr::from_bytes(&dir));
            let mut scan = scan::start_at(&self.settings, vec![(target, 1)]);
            let mut found = Vec::new();
            let cmp = compare::compare(&self.settings, base, &mut scan, self.mode, |e| {
                found.push(e.clone())
            });
            drop(scan);
            for e in found {
                self.learn(e)?;
            }
            super::report_problems(&cmp.problems);
            // Only what this settling was about: older differences were reported already.
            let ours: Vec<(Change, Option<Modifier>)> = cmp
                .changes
                .into_iter()
                .filter(|c| {
                    s.paths.contains(c.path())
                        || c.previous.as_ref().is_some_and(|p| s.paths.contains(&p.path))
                })
                .map(|c| {
                    let m = s.who.get(c.path()).cloned();
                    (c, m)
                })
                .collect();
            self.judge(ours, None)?;
        }
        self.send_alerts()
    }

    /// Says so when the state store starts failing (an alert, once per episode) or recovers.
    fn report_state(&mut self, episode: Episode) {
        let db = self.settings.state_dir.join("baseline.db").display().to_string();
        let doc = match episode {
            Episode::Quiet => return,
            Episode::Failing(reason) => {
                eprintln!("fimd run: the state store is failing: {reason}; queuing its writes");
                state_writes::failing_alert(&reason, &db, self.writes.queued(), &self.origin)
            }
            Episode::Recovered(n) => {
                eprintln!("fimd run: the state store works again: {n} queued writes stored");
                state_writes::recovered_event(&db, n, &self.origin)
            }
        };
        self.sink.send(&doc);
    }

    fn send_alerts(&mut self) -> anyhow::Result<()> {
        for doc in std::mem::take(&mut self.outbox) {
            self.sink.send(&doc);
        }
        // Remembered as sent, in one write per batch.
        let sent = std::mem::take(&mut self.alerted_new);
        if let Some(store) = self.writes.store()
            && let Err(e) = store.alerted_put(&sent)
        {
            eprintln!("fimd run: cannot record which differences were alerted: {e}");
        }
        Ok(())
    }

    fn policy(&self, path: &[u8]) -> Policy {
        self.settings
            .watch_for(Path::new(std::ffi::OsStr::from_bytes(path)))
            .map_or(Policy::Static, |w| w.policy)
    }

    /// The alert for `e` against the baseline (static policy: every difference stays reported
    /// until `fimd accept`), or for a path the baseline lacks, against its last seen state;
    /// `None` when it matches again.
    fn change_against_baseline(&self, e: &Entry, seen: Option<&Entry>) -> Option<Change> {
        let policy = self.policy(&e.path);
        match self.baseline.get(&e.path).or(seen) {
            None => Some(Change {
                action: Action::Created,
                kind: Kind::Alert,
                extra: Vec::new(),
                policy,
                current: Some(e.clone()),
                previous: None,
                changes: Vec::new(),
            }),
            Some(b) => {
                let changes = diff(b, e, self.mode);
                if changes.is_empty() {
                    return None;
                }
                let action = if changes
                    .iter()
                    .any(|c| ["type", "content", "size", "link_target"].contains(c))
                {
                    Action::Updated
                } else {
                    Action::AttributesModified
                };
                Some(Change {
                    action,
                    kind: Kind::Alert,
                    extra: Vec::new(),
                    policy,
                    current: Some(e.clone()),
                    previous: Some(b.clone()),
                    changes,
                })
            }
        }
    }

    fn alert(&mut self, c: &Change, who: Option<&Modifier>) -> anyhow::Result<()> {
        // Each distinct difference once, across restarts and reloads (`crate::alerted`).
        if c.kind == Kind::Alert {
            let token = crate::alerted::token(self.writes.key(), c);
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
                return Ok(());
            }
            self.alerted_new.push((c.path().to_vec(), token));
        }
        self.metrics
            .count_change(c.action.as_str(), c.kind == Kind::Alert);
        let mut doc = to_json(c, &self.origin);
        if let (Some(m), Some(obj)) = (who, doc.as_object_mut()) {
            for (k, v) in m.fields(&self.pods) {
                obj.insert(k.into(), v);
            }
            if let Some(fim) = obj.get_mut("fim").and_then(Value::as_object_mut) {
                fim.insert(
                    "kernel".into(),
                    json!({ "sensor": self.sensor.name(), "hook": m.hook, "cgroup_id": m.cgroup_id }),
                );
            }
        }
        self.outbox.push(doc);
        Ok(())
    }
}

fn name_of(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

fn parent_of(path: &[u8]) -> Option<&[u8]> {
    let i = path.iter().rposition(|&b| b == b'/')?;
    Some(if i == 0 { b"/" } else { &path[..i] })
}

/// Waits for a write in progress: its timestamp changed before its data landed, and the
/// filesystems take the inode lock here (docs/sensor-design.md §5, measured). A file mapped
/// shared and writable is written back first: that write-protects its pages, so a store after
/// this point faults and reports again, and one before it is in what is hashed.
fn barrier(path: &[u8], mmap_writable: bool) {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    // O_PATH first: no symlink anywhere on the way, and nothing but a regular file is opened
    // for reading (a device swapped in must not be opened).
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let Ok(fd) = crate::scan::long_paths::openat2(path, OFlags::PATH | OFlags::CLOEXEC, resolve) else {
        return;
    };
    let regular = rustix::fs::fstat(&fd)
        .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile);
    if !regular {
        return;
    }
    // Reopened through /proc: the same inode, read-only, never re-resolved.
    let Ok(f) = rustix::fs::open(
        format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    if mmap_writable {
        let _ = rustix::fs::fdatasync(&f);
    }
    let _ = rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(0));
    let _ = rustix::io::pread(&f, &mut [0u8; 1], 0);
}

/// A uniform fraction in [0, 1), for the schedule's jitter.
fn rand_fraction() -> f64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Sleeps until `at`, or forever when there is no schedule.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
