//! The loop: starts the parts (baseline, sensor, sinks), reconciles with a full comparison,
//! tells systemd it is ready, then waits on the sensor, a tick, the schedule and the signals,
//! and hands each wakeup to the part it concerns. A reload replaces everything but the signal
//! streams, the metrics and the health probes.
use crate::telemetry::metrics::RescanReason;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use super::alerts::AlertWriter;
use super::appends::AppendTracker;
use super::recheck::RecheckQueue;
use super::rules::Rules;
use super::settle::{Departures, Settler};
use super::signals::{Control, Signals};
use super::state::Daemon;
use super::state_writes::StateWrites;
use super::watch_index::{WatchIndex, key_of};
use super::watch_roots::Roots;
use crate::baseline::entry::FileKind;
use crate::baseline::sorted::SortedEntries;
use crate::config::{Policy, Settings};
use crate::opening::{coverage_problem, host_mode, open_baseline};
use crate::output::alert::{BaselineRef, Origin, hostname};
use crate::output::dispatch::Dispatcher;
use crate::telemetry::{Health, Metrics};

/// How long shutdown waits for queued alerts to be delivered.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// How long past `SHUTDOWN_FLUSH` a SIGTERM may take to be obeyed before the watchdog exits.
const STOP_SLACK: Duration = Duration::from_secs(3);
/// How often the loop drains the sensor without a wakeup, checks for losses and rehashes
/// memory-mapped files.
const RECHECK_TICK: Duration = Duration::from_millis(100);

/// `fimd run`: serves until SIGTERM or SIGINT, reloading on SIGHUP. Errors: the baseline does
/// not open or verify, the sensor cannot attach, a sink cannot open, the state store fails to
/// read; a reload that cannot work keeps the running configuration instead.
pub fn run(settings: &Settings) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut signals = Signals::new()?;
        // --- faults: a SIGTERM not obeyed in time (a call stuck in the kernel) ends the process.
        super::stop::watchdog(SHUTDOWN_FLUSH + STOP_SLACK)?;
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
        let mut reason = RescanReason::Start;
        let result = loop {
            let served = serve(&settings, &mut signals, &metrics, &health, reason).await;
            match served {
                Err(e) => break Err(e),
                Ok(Control::Shutdown) => break Ok(()),
                // The new configuration and baseline take over; the full comparison at start
                // covers whatever changed while the sensor was being replaced.
                Ok(Control::Reload) => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                    reason = RescanReason::Reload;
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
    if let Some(p) = coverage_problem(&new, &baseline) {
        anyhow::bail!("{}: {}", new.source.display(), p.message);
    }
    if new.alerts.jsonl != running.alerts.jsonl
        && let Some(target) = &new.alerts.jsonl
    {
        crate::output::jsonl::JsonlSink::open_target(target)?;
    }
    Ok(new)
}

/// Loads the baseline, attaches the sensor, starts the sinks and arms what the baseline knows:
/// the daemon's parts, before the first comparison.
fn start(settings: &Settings, metrics: &Arc<Metrics>, health: &Arc<Health>) -> anyhow::Result<Daemon> {
    let (store, key, mut baseline) = open_baseline(settings)?;
    health.set_baseline_verified(true);
    metrics.baseline_generation.set(baseline.generation as i64);
    if let Some(p) = coverage_problem(settings, &baseline) {
        anyhow::bail!("{}: {}", settings.source.display(), p.message);
    }
    let mut sensor = crate::sensor::open(&crate::sensor::SensorSpec {
        choice: settings.sensor,
        ring_bytes: settings.ring_buffer_bytes,
        append_hooks: settings.watches.iter().any(|w| w.policy == Policy::AppendOnly),
        roots: settings.watches.iter().map(|w| w.path.clone()).collect(),
        capacity: settings
            .max_watched_inodes
            .unwrap_or_else(|| crate::sensor::capacity_for(baseline.entries.len())),
        scratch: settings.state_dir.clone(),
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
            // The full comparison learns every entry again and reports what failed.
            Err(e) if e.not_watched_action() == "watch_capacity_exceeded" => break,
            Err(e) if e.only_this_inode() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let origin = Origin {
        host: hostname(),
        scan: crate::output::alert::Scan::Realtime,
        root: None,
        baseline: Some(BaselineRef {
            generation: baseline.generation,
            seal: baseline.seal.clone(),
        }),
    };
    let sensor_name = sensor.name();
    let alerted = crate::alerted::Alerted::new(store.alerted()?);
    let roots = Roots::new(
        &settings
            .watches
            .iter()
            .map(|w| w.path.clone())
            .collect::<Vec<_>>(),
    );
    Ok(Daemon {
        rules: Rules {
            settings: settings.clone(),
            mode: host_mode(&baseline),
        },
        // Moved, not copied: the loaded rows become the baseline held, under the seen states.
        watch: WatchIndex::new(
            sensor,
            roots,
            SortedEntries::new(std::mem::take(&mut baseline.entries)),
        ),
        appends: AppendTracker::new(baseline.appends.clone(), baseline.retired.clone()),
        settler: Settler::counted(metrics.rotation_settling.clone()),
        departures: Departures::counted(metrics.rotation_settling.clone()),
        rechecks: RecheckQueue::default(),
        in_flight: Default::default(),
        alerts: AlertWriter::new(
            sink,
            origin,
            metrics.clone(),
            crate::attribution::PodDirectory::new(settings.host_root.clone()),
            sensor_name,
            alerted,
        ),
        writes: StateWrites::new(store, key, settings, metrics.clone()),
        metrics: metrics.clone(),
        health: health.clone(),
        followed_seal: baseline.seal,
        blocking: super::blocking::Blocking::new(metrics.clone()),
        paced: super::pace::Pacer::counted(metrics.directory_listings.clone()),
    })
}

/// Runs until a signal: starts the parts, reconciles, then reports every change the sensor
/// sees.
async fn serve(
    settings: &Settings,
    signals: &mut Signals,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    reason: RescanReason,
) -> anyhow::Result<Control> {
    health.set_ready(false);
    let mut d = start(settings, metrics, health)?;
    d.watch.arm_root_parents(&d.rules.settings, &mut d.alerts);
    // Before ready: what changed while fimd was down is judged first. A mount that does not
    // answer costs this comparison its deadline, and is reported, not waited for.
    tokio::task::block_in_place(|| d.full_check(reason))?;
    d.report_hung_mounts();
    health.set_reconciled(true);
    let fd = Readiness(d.watch.sensor().ready_fd().as_raw_fd());
    // SAFETY: the descriptor belongs to the sensor, which outlives this AsyncFd (both end with
    // this function, the AsyncFd first).
    let events = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot poll the {} sensor: {e}", d.watch.sensor().name()))?;
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
    // The scheduled comparison under way, on its own thread (`full_check`).
    let mut full: Option<super::full_check::FullCheck> = None;
    let mut lost = d.watch.sensor().lost();
    let mut records = Vec::new();
    let sensor = d.watch.sensor();
    metrics.sensor_kernel_bytes.set(sensor.kernel_bytes() as i64);
    eprintln!(
        "fimd run: {} sensor attached (hooks: {}), watching {} inodes ({} KiB of kernel maps); ready",
        sensor.name(),
        sensor.hooks().join(", "),
        d.watch.inodes(),
        sensor.kernel_bytes() >> 10
    );
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("watching {} inodes", d.watch.inodes())),
    ]);
    let control = loop {
        health.tick();
        tokio::select! {
            guard = events.readable() => {
                let mut guard = guard?;
                records.clear();
                d.watch.sensor_mut().drain(&mut records);
                guard.clear_ready();
                metrics.kernel_events.inc_by(records.len() as u64);
                tokio::task::block_in_place(|| d.handle(&records))?;
            }
            _ = tick.tick() => {
                // A wakeup can be missed (a record committed as readiness was cleared): drain on
                // every tick too, so nothing waits longer than one tick.
                records.clear();
                d.watch.sensor_mut().drain(&mut records);
                metrics.kernel_events.inc_by(records.len() as u64);
                tokio::task::block_in_place(|| {
                    let episode = d.writes.flush(false);
                    d.report_state(episode);
                    d.handle(&records)?;
                    d.check_roots(None)?;
                    d.recheck_due()?;
                    d.settle_due()?;
                    d.departed_due()?;
                    d.blocking_due()?;
                    d.report_hung_mounts();
                    d.follow_baseline()
                })?;
                metrics.set_probe_errors(&d.watch.sensor().probe_errors());
                // Anything the sensor could not deliver is repaired by a full comparison.
                let now = d.watch.sensor().lost();
                if now > lost {
                    eprintln!("fimd run: {} kernel events lost; rescanning every watch", now - lost);
                    metrics.kernel_events_lost.inc_by(now - lost);
                    metrics.count_rescan(RescanReason::Loss);
                    lost = now;
                    tokio::task::block_in_place(|| d.rescan_all())?;
                }
            }
            _ = sleep_until_opt(full_due), if full.is_none() => {
                full = Some(d.start_full(RescanReason::Scheduled)?);
            }
            msg = super::full_check::next_of(&mut full) => {
                let over = tokio::task::block_in_place(|| {
                    d.full_step(full.as_ref().expect("a comparison under way"), msg)
                })?;
                if over {
                    full = None;
                    d.report_hung_mounts();
                    full_due = next_full(tokio::time::Instant::now());
                }
            }
            control = signals.recv() => break control,
        }
    };
    drop(events);
    // Busy directories with records still within their pace are listed now, not dropped; a
    // failure here still lets the alerts already queued go out.
    if let Err(e) = tokio::task::block_in_place(|| d.flush_paced()) {
        eprintln!("fimd run: cannot list the busy directories still paced: {e:#}");
    }
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
    metrics.set_sensor_attached(d.watch.sensor().name(), false);
    let end = d.alerts.shutdown(SHUTDOWN_FLUSH);
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

/// The sensor's descriptor, for the reactor.
struct Readiness(std::os::fd::RawFd);

impl AsRawFd for Readiness {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
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
