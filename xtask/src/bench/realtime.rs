//! `cargo xtask bench realtime`: `fimd run`, once per sensor tier, side by side with auditd,
//! printing ratios.
//!
//! In a temporary directory under /tmp it baselines a watched tree, then measures, for each fimd
//! sensor tier given with `--sensor` (`[realtime] sensor` of the configuration fimd run gets):
//! 1. the latency from a writer's close() to the alert line, over sequential changes to one file
//!    (each of a distinct size, so its alert is recognised by path and `file.size`; the alert file
//!    is followed with inotify);
//! 2. a storm of 1-byte writes to one watched file: the alert lines for it (each kernel record
//!    leads to at most one alert), fimd's CPU time, and whether the last alert shows the file's
//!    final state;
//!
//! and then, for every column in turn:
//! 3. the cost to a writer of 1-byte writes (`dd bs=1 conv=notrunc`) to an unwatched and to a
//!    watched file with nothing running, with `fimd run` on each tier, and with auditd holding one
//!    `-w TREE -p wa` watch: median wall and CPU time of dd, and the overhead over nothing.
//!
//! With `--kernel`, `guest.rs` measures the writer overhead of each tier inside QEMU guests on
//! Debian's kernels instead, as ratios only.
//!
//! It needs root (fimd's sensors, auditd). A tier fimd cannot run here is an error printed in its
//! column (and the exit status), the other columns are still measured. auditd is skipped, with
//! the reason printed, when it cannot run here or another audit configuration is present. It
//! never fails on a missed goal.
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::daemon::{Daemon, Tail, stop_child};
use super::tail;

mod guest;
mod report;

pub(super) use guest::run as guest;

/// Goals, printed beside the measurements.
const LATENCY_P99_GOAL_MS: f64 = 20.0;
const UNWATCHED_GOAL_PCT: f64 = 5.0;
const WATCHED_GOAL_PCT: f64 = 25.0;
/// auditd's cost to the watched writer as measured in the issue, for reference.
const AUDITD_ISSUE_PCT: f64 = 28.0;
/// A storm is bounded when at most this share of its writes leaves the kernel as a record.
const STORM_BOUND: f64 = 0.01;

/// How long one change may take to be alerted before it counts as missing.
const ALERT_TIMEOUT: Duration = Duration::from_secs(2);
/// The latency run gives up after this many missing alerts in a row.
const MAX_MISSING_IN_A_ROW: usize = 10;
/// The audit key of the benchmark's watch, to find it in auditd's log.
const AUDIT_KEY: &str = "fimd-bench";
/// How long `fimd run` may take to attach and compare the benchmark trees.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A fimd sensor tier, as `[realtime] sensor` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Tier {
    /// eBPF where it loads, else fanotify (the start-up line says which attached).
    Auto,
    /// The ctime tracepoints.
    Ebpf,
    /// Filesystem marks with FID reporting.
    Fanotify,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Auto => "auto",
            Tier::Ebpf => "ebpf",
            Tier::Fanotify => "fanotify",
        })
    }
}

/// One fimd tier's latency run and storm, or why fimd could not run them.
struct TierRun {
    tier: Tier,
    result: Result<Realtime, String>,
}

pub(super) fn run(changes: usize, writes: u64, runs: usize, tiers: &[Tier]) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench realtime needs root: fimd run loads a kernel sensor, and auditd needs root too");
    }
    let mut distinct: Vec<Tier> = Vec::new();
    for &t in tiers {
        if !distinct.contains(&t) {
            distinct.push(t);
        }
    }
    let load_start = load_average();
    let fimd = crate::build_fimd()?;
    let dir = tempfile::Builder::new()
        .prefix("fimd-bench-rt-")
        .tempdir_in("/tmp")?;
    let l = Layout::new(dir.path(), writes, &distinct)?;

    // Whether auditd can be the peer here; decided before anything is measured.
    let audit = Audit::probe();
    if let Err(why) = &audit.peer {
        eprintln!("xtask: no auditd column: {why}");
    }

    let tier_runs: Vec<TierRun> = distinct
        .iter()
        .map(|&tier| TierRun {
            tier,
            result: realtime(&fimd, &l, tier, changes, writes).map_err(|e| {
                eprintln!("xtask: fimd {tier}: {e:#}");
                format!("{e:#}")
            }),
        })
        .collect();
    let overhead = overhead(&fimd, &l, &audit, &tier_runs, writes, runs)?;

    report::print(&report::Report {
        dir: &l.dir,
        changes,
        writes,
        runs,
        load_start,
        tiers: &tier_runs,
        overhead: &overhead,
        audit: &audit,
    });
    let failed: Vec<String> = overhead
        .columns
        .iter()
        .filter_map(|c| match (c.condition, &c.failed) {
            (Condition::Fimd(t), Some(_)) => Some(t.to_string()),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "fimd could not be measured on sensor tier(s) {}: see the report",
            failed.join(", ")
        );
    }
    Ok(())
}

/// The temporary tree and files.
struct Layout {
    dir: PathBuf,
    /// The watched tree.
    tree: PathBuf,
    /// Rewritten for the latency measurement.
    latency: PathBuf,
    /// Written by dd for the watched overhead cells.
    watched: PathBuf,
    /// Outside the watched tree: written by dd for the unwatched overhead cells.
    unwatched: PathBuf,
    /// Written by dd for the storm.
    storm: PathBuf,
    alerts: PathBuf,
    logs: PathBuf,
}

impl Layout {
    /// The tree and files, and one fimd configuration per tier.
    fn new(dir: &Path, writes: u64, tiers: &[Tier]) -> anyhow::Result<Layout> {
        let dir = fs::canonicalize(dir)?;
        let tree = dir.join("tree");
        let logs = dir.join("logs");
        fs::create_dir_all(&tree)?;
        fs::create_dir_all(dir.join("plain"))?;
        fs::create_dir_all(&logs)?;
        let size = usize::try_from(writes)?;
        let l = Layout {
            latency: tree.join("latency"),
            watched: tree.join("dd"),
            unwatched: dir.join("plain/dd"),
            storm: tree.join("storm"),
            alerts: dir.join("alerts.jsonl"),
            tree,
            logs,
            dir,
        };
        // dd writes zeros over zeros here: the same work in every run.
        fs::write(&l.watched, vec![0u8; size])?;
        fs::write(&l.unwatched, vec![0u8; size])?;
        let toml = |p: &Path| serde_json::to_string(&p.to_string_lossy());
        for &tier in tiers {
            fs::write(
                l.config(tier),
                format!(
                    "state_dir = {}\n\n[[watch]]\npath = {}\n\n[alerts]\njsonl = {}\n\n\
                     [realtime]\nsensor = \"{tier}\"\n",
                    toml(&l.dir.join("state"))?,
                    toml(&l.tree)?,
                    toml(&l.alerts)?
                ),
            )?;
        }
        Ok(l)
    }

    /// `fimd run`'s configuration for one tier; they differ only in `[realtime] sensor`.
    fn config(&self, tier: Tier) -> PathBuf {
        self.dir.join(format!("fimd-{tier}.toml"))
    }

    /// The latency and storm files as every tier's run starts from.
    fn reset(&self, writes: u64) -> anyhow::Result<()> {
        // Every size used by the latency run is larger.
        fs::write(&self.latency, "initial\n")?;
        // dd's zeros replace this, so the final state differs from every state before it.
        fs::write(&self.storm, vec![b'x'; usize::try_from(writes)?])?;
        Ok(())
    }
}

fn fimd_init(fimd: &Path, config: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new(fimd);
    cmd.arg("-c").arg(config).arg("init").stdin(Stdio::null());
    eprintln!("xtask: $ {}", crate::show(&cmd));
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {}", crate::show(&cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}\n{}",
            crate::show(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// What one tier's `fimd run` did in the latency run and the storm.
struct Realtime {
    /// Its start-up line: the sensor that attached and its hooks.
    ready: String,
    latency: Latency,
    storm: Storm,
    /// Kernel events it reported lost during both.
    lost: u64,
}

/// The latency run then the storm under one tier's `fimd run`, from a fresh baseline of the
/// files as they start.
fn realtime(fimd: &Path, l: &Layout, tier: Tier, changes: usize, writes: u64) -> anyhow::Result<Realtime> {
    l.reset(writes)?;
    let config = l.config(tier);
    fimd_init(fimd, &config)?;
    let log = l.logs.join(format!("fimd-run-{tier}-latency-storm.err"));
    let daemon = Daemon::start(fimd, &config, log, READY_WITHIN)?;
    let mut alerts = Tail::open(&l.alerts)?;
    eprintln!(
        "xtask: {tier} latency: {changes} sequential changes to {}",
        l.latency.display()
    );
    let latency = latency(l, &daemon, &mut alerts, changes)?;
    eprintln!(
        "xtask: {tier} storm: {writes} one-byte writes to {}",
        l.storm.display()
    );
    let storm = storm(l, &daemon, &mut alerts, writes)?;
    let ready = daemon.ready.clone();
    let lost = daemon.stop()?;
    Ok(Realtime {
        ready,
        latency,
        storm,
        lost,
    })
}

fn alert_path(v: &Value) -> Option<&str> {
    v.get("file")?.get("path")?.as_str()
}

fn alert_size(v: &Value) -> Option<u64> {
    v.get("file")?.get("size")?.as_u64()
}

fn alert_sha256(v: &Value) -> Option<&str> {
    v.get("file")?.get("hash")?.get("sha256")?.as_str()
}

struct Latency {
    /// Per change, from close() to the alert line; None when it never came.
    samples: Vec<Option<Duration>>,
    /// Alert lines on the file during the run.
    lines: usize,
    fimd_cpu: f64,
    /// The run stopped early after this many missing alerts in a row.
    gave_up: bool,
}

/// Sequential changes to one watched file: open(O_TRUNC), one write of a distinct size, close;
/// then wait for the alert line with that size.
fn latency(l: &Layout, d: &Daemon, alerts: &mut Tail, changes: usize) -> anyhow::Result<Latency> {
    let path = l.latency.to_string_lossy().into_owned();
    let cpu0 = d.cpu_secs()?;
    let mut samples = Vec::with_capacity(changes);
    let mut lines = 0;
    let mut missing_in_a_row = 0;
    let mut gave_up = false;
    for i in 0..changes {
        let len = 20 + i;
        let mut content = format!("change {i} ").into_bytes();
        content.resize(len - 1, b'.');
        content.push(b'\n');
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&l.latency)?;
        f.write_all(&content)?;
        drop(f);
        let closed = Instant::now();
        let want = u64::try_from(len)?;
        let seen = alerts.wait(ALERT_TIMEOUT, |v| {
            if alert_path(v) != Some(&path) {
                return false;
            }
            lines += 1;
            alert_size(v) == Some(want)
        })?;
        samples.push(seen.map(|t| t.duration_since(closed)));
        if seen.is_some() {
            missing_in_a_row = 0;
        } else {
            missing_in_a_row += 1;
            eprintln!("xtask: latency: no alert for change {i} within {ALERT_TIMEOUT:?}");
            if missing_in_a_row == MAX_MISSING_IN_A_ROW {
                eprintln!("xtask: latency: {MAX_MISSING_IN_A_ROW} missing in a row; giving up");
                gave_up = true;
                break;
            }
        }
    }
    // Late extra alerts for the last change.
    alerts.wait(Duration::from_millis(200), |v| {
        if alert_path(v) == Some(&path) {
            lines += 1;
        }
        false
    })?;
    Ok(Latency {
        samples,
        lines,
        fimd_cpu: d.cpu_secs()? - cpu0,
        gave_up,
    })
}

struct Storm {
    dd: Sample,
    /// Alert lines on the file from the storm's start until 1 s of quiet.
    lines: usize,
    /// fimd's CPU time from dd's start to the alert of the final state (or the timeout).
    fimd_cpu: f64,
    /// Wall time over which fimd_cpu was spent.
    span: f64,
    /// From dd's exit to the alert showing the final state.
    catch_up: Option<Duration>,
    final_size: u64,
    final_sha256: String,
    /// The last alert on the file shows the final size and SHA-256.
    last_matches: bool,
    last: Option<(Option<u64>, Option<String>)>,
}

fn storm(l: &Layout, d: &Daemon, alerts: &mut Tail, writes: u64) -> anyhow::Result<Storm> {
    let path = l.storm.to_string_lossy().into_owned();
    let mut lines = 0;
    let mut last: Option<Value> = None;
    // Whatever is left of the latency run is not the storm's.
    alerts.lines()?;
    let started = Instant::now();
    let cpu0 = d.cpu_secs()?;
    let ran = dd(&l.storm, writes, &l.logs.join("dd-storm.err"))?;
    let dd_exit = Instant::now();
    let final_size = fs::metadata(&l.storm)?.len();
    let final_sha256 = sha256sum(&l.storm)?;
    let on_storm = |v: &Value, lines: &mut usize, last: &mut Option<Value>| {
        if alert_path(v) != Some(&path) {
            return false;
        }
        *lines += 1;
        *last = Some(v.clone());
        alert_size(v) == Some(final_size) && alert_sha256(v) == Some(final_sha256.as_str())
    };
    let seen = alerts.wait(Duration::from_secs(30), |v| on_storm(v, &mut lines, &mut last))?;
    let fimd_cpu = d.cpu_secs()? - cpu0;
    let span = started.elapsed().as_secs_f64();
    // Then until 1 s passes without another alert on the file (at most 10 s more).
    let quiet_from = Instant::now();
    loop {
        let before = lines;
        alerts.wait(Duration::from_secs(1), |v| {
            on_storm(v, &mut lines, &mut last);
            false
        })?;
        if lines == before || quiet_from.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let last = last.map(|v| (alert_size(&v), alert_sha256(&v).map(str::to_owned)));
    Ok(Storm {
        dd: ran,
        lines,
        fimd_cpu,
        span,
        catch_up: seen.map(|t| t.saturating_duration_since(dd_exit)),
        last_matches: last
            .as_ref()
            .is_some_and(|(s, h)| *s == Some(final_size) && h.as_deref() == Some(final_sha256.as_str())),
        final_size,
        final_sha256,
        last,
    })
}

fn sha256sum(path: &Path) -> anyhow::Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("cannot run sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed: {}", path.display(), out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .next()
        .context("no output from sha256sum")?
        .to_owned())
}

/// One dd run: wall time, and dd's CPU time (user plus system).
#[derive(Clone, Copy)]
struct Sample {
    wall: f64,
    cpu: f64,
}

/// `dd if=/dev/zero of=FILE bs=1 count=WRITES conv=notrunc`: as many reads as writes.
fn dd(file: &Path, writes: u64, err: &Path) -> anyhow::Result<Sample> {
    let mut cmd = Command::new("dd");
    cmd.arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .arg("bs=1")
        .arg(format!("count={writes}"))
        .args(["conv=notrunc", "status=none"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(err)?);
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", crate::show(&cmd)))?;
    let (status, usage) = super::wait_usage(child)?;
    let wall = started.elapsed().as_secs_f64();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!(
            "{} failed (wait status {status}):\n{}",
            crate::show(&cmd),
            tail(err)
        );
    }
    let cpu = super::usage_cpu_secs(&usage);
    eprintln!("xtask: [{:.3} s, {cpu:.3} s CPU] $ {}", wall, crate::show(&cmd));
    Ok(Sample { wall, cpu })
}

/// The rows of the writer overhead table.
const UNWATCHED: usize = 0;
const WATCHED: usize = 1;

/// What runs while dd writes, in one column of the writer overhead table.
#[derive(Clone, Copy, PartialEq)]
enum Condition {
    Nothing,
    Fimd(Tier),
    Auditd,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Nothing => f.write_str("nothing"),
            Condition::Fimd(tier) => write!(f, "fimd {tier}"),
            Condition::Auditd => f.write_str("auditd"),
        }
    }
}

struct Column {
    condition: Condition,
    /// [row]: the dd samples.
    cells: [Vec<Sample>; 2],
    /// Per run: fimd's CPU time while dd wrote the watched file, or the records auditd logged
    /// with the benchmark's key.
    own: Vec<f64>,
    /// Why the column is empty: fimd could not run this tier, or auditd cannot run here.
    failed: Option<String>,
}

struct Overhead {
    /// Nothing, each fimd tier, auditd.
    columns: Vec<Column>,
}

/// dd to the unwatched then the watched file under each column's condition in turn, `runs`
/// times. A tier that failed its latency run is not started again.
fn overhead(
    fimd: &Path,
    l: &Layout,
    audit: &Audit,
    tiers: &[TierRun],
    writes: u64,
    runs: usize,
) -> anyhow::Result<Overhead> {
    let column = |condition, failed| Column {
        condition,
        cells: Default::default(),
        own: Vec::new(),
        failed,
    };
    let mut columns = vec![column(Condition::Nothing, None)];
    for t in tiers {
        let failed = t
            .result
            .as_ref()
            .err()
            .map(|_| "fimd run could not run this tier (see the top of the report)".to_owned());
        columns.push(column(Condition::Fimd(t.tier), failed));
    }
    columns.push(column(Condition::Auditd, audit.peer.clone().err()));
    for run in 1..=runs {
        for c in columns.iter_mut().filter(|c| c.failed.is_none()) {
            eprintln!("xtask: writer overhead, run {run} of {runs}: {}", c.condition);
            match measure(c, fimd, l, audit, writes, run) {
                Ok(()) => {}
                Err(e) if c.condition == Condition::Nothing => return Err(e),
                Err(e) => {
                    eprintln!("xtask: {}: no figures in this column: {e:#}", c.condition);
                    c.failed = Some(format!("{e:#}"));
                    c.cells = Default::default();
                }
            }
        }
    }
    Ok(Overhead { columns })
}

/// One run of one column: dd to the unwatched then the watched file, under its condition.
fn measure(
    c: &mut Column,
    fimd: &Path,
    l: &Layout,
    audit: &Audit,
    writes: u64,
    run: usize,
) -> anyhow::Result<()> {
    let err = l.logs.join("dd.err");
    match c.condition {
        Condition::Nothing => {
            let _quiet = audit.quiet()?;
            c.cells[UNWATCHED].push(dd(&l.unwatched, writes, &err)?);
            c.cells[WATCHED].push(dd(&l.watched, writes, &err)?);
        }
        Condition::Fimd(tier) => {
            let _quiet = audit.quiet()?;
            let log = l.logs.join(format!("fimd-run-{tier}-overhead-{run}.err"));
            let d = Daemon::start(fimd, &l.config(tier), log, READY_WITHIN)?;
            c.cells[UNWATCHED].push(dd(&l.unwatched, writes, &err)?);
            let cpu0 = d.cpu_secs()?;
            c.cells[WATCHED].push(dd(&l.watched, writes, &err)?);
            c.own.push(d.cpu_secs()? - cpu0);
            d.stop()?;
        }
        Condition::Auditd => {
            let a = Auditd::start(audit, l, run)?;
            c.cells[UNWATCHED].push(dd(&l.unwatched, writes, &err)?);
            c.cells[WATCHED].push(dd(&l.watched, writes, &err)?);
            c.own.push(a.stop()? as f64);
        }
    }
    Ok(())
}

/// The kernel's audit state, probed once.
struct Audit {
    /// auditctl works here (the kernel has audit, nothing else configures it): the benchmark may
    /// add and remove its own rules.
    control: bool,
    /// `enabled` before the benchmark, restored after each auditd run.
    enabled: u32,
    /// Ok when auditd can be measured, else why not.
    peer: Result<(), String>,
}

impl Audit {
    fn probe() -> Audit {
        let mut a = Audit {
            control: false,
            enabled: 0,
            peer: Ok(()),
        };
        match Audit::status() {
            Err(why) => a.peer = Err(why),
            Ok((_, pid)) if pid != 0 => {
                a.peer = Err(format!(
                    "an audit daemon (pid {pid}) already runs; not touching its rules"
                ));
            }
            Ok((2, _)) => a.peer = Err("the audit configuration is locked (enabled 2)".into()),
            Ok((enabled, _)) => match auditctl(&["-l"]) {
                Ok(rules) if rules.trim() == "No rules" => {
                    a.control = true;
                    a.enabled = enabled;
                }
                Ok(rules) => {
                    a.peer = Err(format!(
                        "the kernel already holds audit rules; not touching them: {}",
                        rules.trim().replace('\n', "; ")
                    ));
                }
                Err(why) => a.peer = Err(why),
            },
        }
        if a.peer.is_ok() && which("auditd").is_none() {
            a.peer = Err("auditd is not installed (cargo xtask setup installs it)".into());
        }
        a
    }

    /// `enabled` and `pid` from `auditctl -s`.
    fn status() -> Result<(u32, u32), String> {
        let text = auditctl(&["-s"])?;
        let field = |name: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<u32>()
                    .ok()
            })
        };
        match (field("enabled"), field("pid")) {
            (Some(enabled), Some(pid)) => Ok((enabled, pid)),
            _ => Err(format!("cannot read auditctl -s: {}", text.trim())),
        }
    }

    /// Keeps syscall auditing off for tasks started while the guard lives (`-a never,task`).
    ///
    /// Once audit has been enabled since boot, every new task gets an audit context and takes
    /// the syscall audit slow path, even with auditd stopped and audit disabled; this keeps the
    /// "nothing" and "fimd" columns free of that whatever ran before.
    fn quiet(&self) -> anyhow::Result<Option<NeverTask>> {
        if !self.control {
            return Ok(None);
        }
        auditctl(&["-a", "never,task"]).map_err(anyhow::Error::msg)?;
        Ok(Some(NeverTask))
    }
}

/// Removes `-a never,task` when dropped.
struct NeverTask;

impl Drop for NeverTask {
    fn drop(&mut self) {
        if let Err(e) = auditctl(&["-d", "never,task"]) {
            eprintln!("xtask: cannot remove the audit rule -a never,task: {e}");
        }
    }
}

/// Runs auditctl, returning its standard output, or why it failed.
fn auditctl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("auditctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run auditctl (cargo xtask setup installs auditd): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "auditctl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first `name` on PATH (sbin included).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A running `auditd -n` with the benchmark's watch on the tree; torn down when dropped: the rule
/// removed, auditd stopped, and the kernel's `enabled` flag restored.
struct Auditd {
    child: Option<Child>,
    tree: PathBuf,
    watch_added: bool,
    /// The kernel's `enabled` flag to restore (auditd leaves it set when it exits), until done.
    restore_enabled: Option<u32>,
    log: PathBuf,
    daemon_log: PathBuf,
}

impl Auditd {
    fn start(audit: &Audit, l: &Layout, run: usize) -> anyhow::Result<Auditd> {
        let conf_dir = l.dir.join(format!("audit-{run}"));
        fs::DirBuilder::new().mode(0o750).create(&conf_dir)?;
        let log = conf_dir.join("audit.log");
        // The system's configuration, but logging here.
        let system = fs::read_to_string("/etc/audit/auditd.conf").unwrap_or_default();
        let mut conf: String = system
            .lines()
            .filter(|l| !l.trim_start().starts_with("log_file"))
            .map(|l| format!("{l}\n"))
            .collect();
        conf.push_str(&format!("log_file = {}\n", log.display()));
        // auditd refuses a configuration that others may write.
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(conf_dir.join("auditd.conf"))?
            .write_all(conf.as_bytes())?;
        let daemon_log = l.logs.join(format!("auditd-{run}.err"));
        let out = fs::File::create(&daemon_log)?;
        let mut cmd = Command::new(which("auditd").context("auditd is not installed")?);
        cmd.arg("-n")
            .arg("-c")
            .arg(&conf_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        eprintln!("xtask: $ {}", crate::show(&cmd));
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", crate::show(&cmd)))?;
        let mut a = Auditd {
            child: Some(child),
            tree: l.tree.clone(),
            watch_added: false,
            restore_enabled: Some(audit.enabled),
            log,
            daemon_log,
        };
        // Ready once the kernel knows it as the audit daemon.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child = a.child.as_mut().expect("started");
            if let Some(st) = child.try_wait()? {
                a.child = None;
                bail!("auditd exited at once ({st}):\n{}", tail(&a.daemon_log));
            }
            if let Ok((_, pid)) = Audit::status()
                && pid == child.id()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("auditd did not register with the kernel within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let tree = a.tree.to_string_lossy().into_owned();
        auditctl(&["-w", &tree, "-p", "wa", "-k", AUDIT_KEY]).map_err(anyhow::Error::msg)?;
        a.watch_added = true;
        Ok(a)
    }

    /// Tears down, returning how many records auditd logged with the benchmark's key.
    fn stop(mut self) -> anyhow::Result<usize> {
        self.teardown()?;
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        Ok(text.lines().filter(|l| l.contains(AUDIT_KEY)).count())
    }

    fn teardown(&mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if self.watch_added {
            let tree = self.tree.to_string_lossy().into_owned();
            match auditctl(&["-W", &tree, "-p", "wa", "-k", AUDIT_KEY]) {
                Ok(_) => self.watch_added = false,
                Err(e) => problems.push(e),
            }
        }
        if let Some(mut child) = self.child.take() {
            let st = stop_child(&mut child, Duration::from_secs(10));
            eprintln!("xtask: auditd stopped: {st}");
        }
        if let Some(enabled) = self.restore_enabled {
            match auditctl(&["-e", &enabled.to_string()]) {
                Ok(_) => self.restore_enabled = None,
                Err(e) => problems.push(e),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("cannot tear auditd down: {}", problems.join("; "))
        }
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("xtask: {e:#}");
        }
    }
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
