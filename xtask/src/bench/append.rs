//! `cargo xtask bench append`: verifying 4 KiB appends to logs of growing size, with `fimd run`
//! (from the page checkpoint), a full rehash (`fimd check`) and AIDE's `growing` check.
//!
//! In a temporary directory (removed at the end) it:
//! 1. writes one log per size: real text when the size is at most `--real-up-to` and the disk has
//!    room (`statvfs`), else sparse (a hole, then 1 MiB of real text at the end); each is read once,
//!    untimed, before every tool, so all start from a warm page cache;
//! 2. runs `fimd init` and one `fimd run` on a configuration watching every log's directory with
//!    `policy = "append-only"`, then makes N rounds of one append (open O_APPEND, one 4 KiB write,
//!    close) to each log in turn, so load from elsewhere on the machine falls on every size alike.
//!    Each is timed from just before the write to the `appended` line with the new `file.size` in
//!    the alert file (followed with inotify). The first round has no checkpoint yet (a full hash):
//!    it is reported apart and left out of the percentiles. fimd's CPU time (user plus system, all
//!    threads: the sum /proc/PID/stat gives in clock ticks, read in nanoseconds from its process
//!    CPU clock) is counted from each write to the next;
//!
//! Then, one log at a time:
//! 3. a full rehash: `fimd init` on a configuration watching only the log (append-only), then,
//!    per run, one 4 KiB append and a timed `fimd check`: fimd's own hasher and the same
//!    judgement, as the periodic full comparison does it (sha256sum is no fair stand-in: coreutils
//!    hashes without the SHA extensions, several times slower than fimd);
//! 4. AIDE: `aide --init` with a rule of the same attributes plus `growing` on the log, then, per
//!    run, one 4 KiB append and a timed `aide --check`.
//!
//! Bytes read by `fimd check` and AIDE are the process's `rchar` (/proc/PID/io, read while it is
//! a zombie, before it is reaped). It needs root (fimd's eBPF sensor). It never fails on a missed
//! goal: it measures and prints.
use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::daemon::{Daemon, Tail};
use super::{aide_regex, tail, tool_version, usage_cpu_secs, verdict};

/// Goals, printed beside the measurements.
const LATENCY_GOAL_MS: f64 = 1.0;
/// "Independent of file size": the largest size's median latency within this factor of the
/// smallest's, and the same bytes read per append.
const INDEPENDENT_FACTOR: f64 = 1.5;

/// Bytes per append.
const APPEND: usize = 4096;
/// Real text at the end of a sparse log.
const SPARSE_TAIL: u64 = 1 << 20;
/// Free space left on the disk after writing a log of real data.
const DISK_MARGIN: u64 = 1 << 30;
/// How long one append may take to be reported before it counts as missing.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The appends stop after this many missing events in a row.
const MAX_MISSING_IN_A_ROW: usize = 10;
/// AIDE's attributes for the log: those of `bench baseline`, plus `growing` (AIDE 0.18): size,
/// mtime and ctime may grow, and the hash is compared on the file cut to the old size.
const AIDE_RULE: &str = "p+ftype+i+l+n+u+g+s+m+c+sha256+acl+xattrs+selinux+caps+growing";

/// A size given as `1M`, `1G`, `10G` (binary units) or bytes.
#[derive(Clone, Debug)]
pub struct Size {
    pub label: String,
    pub bytes: u64,
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Size, String> {
        let t = s.trim();
        let (num, shift) = match t.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let shift = match c.to_ascii_uppercase() {
                    'K' => 10,
                    'M' => 20,
                    'G' => 30,
                    'T' => 40,
                    _ => return Err(format!("{s:?}: use a K, M, G or T suffix, or bytes")),
                };
                (&t[..i], shift)
            }
            _ => (t, 0),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: not a size (1M, 1G, 10G, or bytes)"))?;
        let bytes = n
            .checked_mul(1 << shift)
            .filter(|&b| b > 0)
            .ok_or_else(|| format!("{s:?}: give a size above 0 that fits in 64 bits"))?;
        Ok(Size {
            label: t.to_owned(),
            bytes,
        })
    }
}

pub(super) fn run(
    appends: usize,
    sizes: &[Size],
    runs: usize,
    dir: &Path,
    real_up_to: u64,
) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench append needs root: fimd run loads an eBPF sensor (run it with sudo)");
    }
    let load_start = load_average();
    let aide_version = tool_version()?;
    let fimd = crate::build_fimd()?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("fimd-bench-append-")
        .tempdir_in(dir)?;
    let top = fs::canonicalize(tmp.path())?;

    // 1. Every log at once: one daemon watches them all.
    let mut logs = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        // Numbered: the same size may be given twice.
        let dir = top.join(format!("{}-{}", i + 1, size.label));
        fs::create_dir_all(dir.join("logs"))?;
        let path = dir.join("logs/app.log");
        let data = make_log(&path, size, real_up_to)?;
        logs.push(Log {
            size: size.clone(),
            dir,
            path,
            data,
            appended: 0,
        });
    }

    // 2. fimd run, appending to each log in turn.
    let run = fimd_run(&fimd, &top, &mut logs, appends)?;

    // 3 and 4, one log at a time, which then goes (from the disk and the page cache).
    let mut results = Vec::new();
    for (mut log, fimd_appends) in logs.into_iter().zip(run.per_log) {
        eprintln!("xtask: ==== {}: full rehash and AIDE ====", log.size.label);
        // Back to its size before fimd's appends, so each tool hashes the size in the table.
        let f = fs::OpenOptions::new().write(true).open(&log.path)?;
        f.set_len(log.size.bytes)?;
        f.sync_all()?;
        drop(f);
        let check = full_rehash(&fimd, &mut log, runs)?;
        let aide = aide_growing(&mut log, runs)?;
        fs::remove_dir_all(&log.dir)?;
        results.push(SizeResult {
            size: log.size,
            data: log.data,
            fimd: fimd_appends,
            check,
            aide,
        });
    }
    print_report(&Report {
        dir: &top,
        aide_version: &aide_version,
        appends,
        runs,
        load_start,
        results: &results,
        gave_up: run.gave_up,
        lost: run.lost,
    });
    Ok(())
}

/// How a log was made.
enum Data {
    Real,
    /// A hole, then SPARSE_TAIL bytes of text; why it is not real.
    Sparse(String),
}

/// One log under test.
struct Log {
    size: Size,
    /// Everything about this log: the log's directory `logs`, configurations, tool output.
    dir: PathBuf,
    path: PathBuf,
    data: Data,
    /// Appends made so far, to make each distinct.
    appended: u64,
}

struct SizeResult {
    size: Size,
    data: Data,
    fimd: Appends,
    check: Checks,
    aide: Checks,
}

/// A generous bound on the time to hash `bytes` (50 MB/s).
fn hashing_time(bytes: u64) -> Duration {
    Duration::from_secs(bytes / 50_000_000)
}

/// Step 3: a full rehash per append: `fimd check` on a configuration watching only the log.
fn full_rehash(fimd: &Path, log: &mut Log, runs: usize) -> anyhow::Result<Checks> {
    let conf = log.dir.join("check.toml");
    write_conf(&conf, &log.dir.join("check-state"), &[&log.path], None)?;
    fimd_init(fimd, &conf, &log.dir.join("fimd-init-check.err"))?;
    warm(&log.path)?;
    let mut check = Checks::default();
    for i in 1..=runs {
        append(&log.path, &mut log.appended)?;
        let mut cmd = Command::new(fimd);
        cmd.arg("-c").arg(&conf).arg("check");
        let m = measured(&mut cmd, &log.dir, &format!("fimd-check-{i}"))?;
        // 0: clean (the append allowed by policy), 1: differences, 2: error.
        if m.code >= 2 {
            bail!("fimd check failed (exit {}):\n{}", m.code, m.log_tail);
        }
        check.push(m);
    }
    Ok(check)
}

/// Step 4: `aide --check` with the `growing` attribute on the log, one append before each.
fn aide_growing(log: &mut Log, runs: usize) -> anyhow::Result<Checks> {
    let conf = log.dir.join("aide.conf");
    let db = log.dir.join("aide.db");
    let db_new = log.dir.join("aide.db.new");
    fs::write(
        &conf,
        format!(
            "# One append-only log: fimd's attributes, allowed to grow.\n\
             database_in=file:{}\n\
             database_out=file:{}\n\
             gzip_dbout=no\n\
             database_attrs=E\n\
             num_workers=100%\n\
             report_url=stdout\n\
             LOG = {AIDE_RULE}\n\
             {}$ LOG\n",
            db.display(),
            db_new.display(),
            aide_regex(&log.path)
        ),
    )?;
    let mut cmd = Command::new("aide");
    cmd.arg("--config").arg(&conf).arg("--config-check");
    let m = measured(&mut cmd, &log.dir, "aide-config-check")?;
    if m.code != 0 {
        bail!("aide --config-check failed (exit {}):\n{}", m.code, m.log_tail);
    }
    warm(&log.path)?;
    let mut cmd = Command::new("aide");
    cmd.arg("--config").arg(&conf).arg("--init");
    let m = measured(&mut cmd, &log.dir, "aide-init")?;
    if m.code != 0 {
        bail!("aide --init failed (exit {}):\n{}", m.code, m.log_tail);
    }
    fs::rename(&db_new, &db).with_context(|| format!("aide --init wrote no {}", db_new.display()))?;
    let mut aide = Checks::default();
    for i in 1..=runs {
        append(&log.path, &mut log.appended)?;
        let mut cmd = Command::new("aide");
        cmd.arg("--config").arg(&conf).arg("--check");
        let m = measured(&mut cmd, &log.dir, &format!("aide-check-{i}"))?;
        // 0: no change, 1-7: added/removed/changed bitmask, 14 and above: errors.
        if m.code >= 14 {
            bail!("aide --check failed (exit {}):\n{}", m.code, m.log_tail);
        }
        aide.push(m);
    }
    Ok(aide)
}

fn write_conf(conf: &Path, state: &Path, watches: &[&Path], alerts: Option<&Path>) -> anyhow::Result<()> {
    let toml = |p: &Path| serde_json::to_string(&p.to_string_lossy());
    let mut text = format!("state_dir = {}\n", toml(state)?);
    for w in watches {
        text.push_str(&format!(
            "\n[[watch]]\npath = {}\npolicy = \"append-only\"\n",
            toml(w)?
        ));
    }
    if let Some(a) = alerts {
        text.push_str(&format!("\n[alerts]\njsonl = {}\n", toml(a)?));
    }
    fs::write(conf, text)?;
    Ok(())
}

fn fimd_init(fimd: &Path, conf: &Path, err: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new(fimd);
    cmd.arg("-c")
        .arg(conf)
        .arg("init")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(err)?);
    eprintln!("xtask: $ {}", crate::show(&cmd));
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", crate::show(&cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}\n{}", crate::show(&cmd), tail(err));
    }
    eprintln!("xtask: fimd init took {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Free bytes for an unprivileged user on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let c = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and st valid for writes.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("statvfs {}", dir.display()));
    }
    #[allow(clippy::unnecessary_cast)] // field widths differ between architectures
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// 1 MiB of log-like text lines, distinct per `block`.
fn text_block(block: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 << 20);
    let mut x = block.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut line = 0u64;
    while out.len() < 1 << 20 {
        // xorshift64: varied numbers, so lines differ in length and content.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let l = format!(
            "2026-01-01T00:00:{:02}.{:06}Z host app[{}]: block {block} line {line} request {:016x} served in {} ms\n",
            x % 60,
            (x >> 8) % 1_000_000,
            1000 + (x >> 20) % 9000,
            x,
            (x >> 40) % 5000
        );
        out.extend_from_slice(l.as_bytes());
        line += 1;
    }
    out.truncate(1 << 20);
    out
}

/// Writes the log: real text, or a hole and a real tail; says which.
fn make_log(log: &Path, size: &Size, real_up_to: u64) -> anyhow::Result<Data> {
    let dir = log.parent().expect("the log has a directory");
    let free = free_bytes(dir)?;
    let data = if size.bytes > real_up_to {
        Data::Sparse(format!("larger than --real-up-to {}", human(real_up_to)))
    } else if free < size.bytes + DISK_MARGIN {
        Data::Sparse(format!(
            "{} free on the disk, {} wanted with the margin",
            human(free),
            human(size.bytes + DISK_MARGIN)
        ))
    } else {
        Data::Real
    };
    let real = match &data {
        Data::Real => size.bytes,
        Data::Sparse(why) => {
            eprintln!("xtask: {} log sparse: {why}", size.label);
            size.bytes.min(SPARSE_TAIL)
        }
    };
    let started = Instant::now();
    let mut f = fs::File::create(log)?;
    // The hole: never allocated (no fallocate), read as zeros.
    f.set_len(size.bytes - real)?;
    f.seek(SeekFrom::End(0))?;
    let mut left = real;
    let mut block = 0;
    while left > 0 {
        let b = text_block(block);
        let n = left.min(b.len() as u64);
        f.write_all(&b[..usize::try_from(n)?])?;
        left -= n;
        block += 1;
    }
    // On the disk before anything is timed: writing back a fresh log would delay the daemon's
    // own fsyncs (ext4 data=ordered) and charge it to the appends.
    f.sync_all()?;
    drop(f);
    let len = fs::metadata(log)?.len();
    if len != size.bytes {
        bail!("{} is {len} bytes, not {}", log.display(), size.bytes);
    }
    eprintln!(
        "xtask: wrote {} ({} of real text) in {:.2} s",
        log.display(),
        human(real),
        started.elapsed().as_secs_f64()
    );
    Ok(data)
}

/// Reads the whole file once (untimed), so each tool starts from a warm page cache.
fn warm(path: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf)? > 0 {}
    eprintln!(
        "xtask: warmed {} into the page cache in {:.2} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One 4 KiB append of text (open O_APPEND, write, close); returns the size after it and the
/// instant just before the write.
fn append(log: &Path, counter: &mut u64) -> anyhow::Result<(u64, Instant)> {
    *counter += 1;
    let mut content = format!("append {counter}: ").into_bytes();
    while content.len() < APPEND - 1 {
        content.extend_from_slice(b"lorem ipsum dolor sit amet ");
    }
    content.truncate(APPEND - 1);
    content.push(b'\n');
    let mut f = fs::OpenOptions::new().append(true).open(log)?;
    let before = Instant::now();
    f.write_all(&content)?;
    let size = f.metadata()?.len();
    drop(f);
    Ok((size, before))
}

/// What `fimd run` did with one log's appends.
#[derive(Default)]
struct Appends {
    /// The first append after the start: latency (None: missing) and bytes read.
    first: Option<(Option<Duration>, Option<u64>)>,
    /// The others: write to event; None when it never came.
    samples: Vec<Option<Duration>>,
    /// `fim.append.read_bytes` of the others' events.
    read: Vec<u64>,
    /// fimd's CPU time over the others, each from its write to the next append's write.
    cpu_secs: f64,
    /// Alert lines on the log that were not the awaited `appended` events.
    other_lines: usize,
    other_actions: Vec<String>,
}

impl Appends {
    fn other(&mut self, action: &str) {
        self.other_lines += 1;
        if !self.other_actions.iter().any(|a| a == action) {
            self.other_actions.push(action.to_owned());
        }
    }
}

struct Run {
    per_log: Vec<Appends>,
    /// The appends stopped after MAX_MISSING_IN_A_ROW missing events.
    gave_up: bool,
    /// Kernel events fimd reported lost.
    lost: u64,
}

/// Step 2: one `fimd run` watching every log's directory; `appends` rounds of one append to each
/// log in turn (so load from elsewhere on the machine falls on every size alike), each awaited.
fn fimd_run(fimd: &Path, top: &Path, logs: &mut [Log], appends: usize) -> anyhow::Result<Run> {
    let conf = top.join("run.toml");
    let alerts = top.join("alerts.jsonl");
    let dirs: Vec<&Path> = logs
        .iter()
        .map(|l| l.path.parent().expect("the log has a directory"))
        .collect();
    write_conf(&conf, &top.join("run-state"), &dirs, Some(&alerts))?;
    fimd_init(fimd, &conf, &top.join("fimd-init-run.err"))?;
    fs::write(&alerts, "")?;
    for l in logs.iter() {
        warm(&l.path)?;
    }
    // fimd run rehashes every watched file before it is ready.
    let total: u64 = logs.iter().map(|l| l.size.bytes).sum();
    let d = Daemon::start(
        fimd,
        &conf,
        top.join("fimd-run.err"),
        Duration::from_secs(60) + hashing_time(total),
    )?;
    let mut alerts = Tail::open(&alerts)?;
    let paths: Vec<String> = logs
        .iter()
        .map(|l| l.path.to_string_lossy().into_owned())
        .collect();
    let index = |v: &Value| {
        let p = v["file"]["path"].as_str()?;
        paths.iter().position(|q| q == p)
    };
    let mut out: Vec<Appends> = logs.iter().map(|_| Appends::default()).collect();
    let mut gave_up = false;
    let mut missing_in_a_row = 0;
    // The append whose CPU time is being counted, and fimd's CPU time at its write.
    let mut pending: Option<(usize, f64)> = None;
    eprintln!(
        "xtask: {appends} rounds of one {APPEND}-byte append to each of {} logs under fimd run",
        logs.len()
    );
    'rounds: for round in 0..appends {
        for i in 0..logs.len() {
            // The first append after the start is hashed whole (no checkpoint yet).
            let within = match round {
                0 => EVENT_TIMEOUT + hashing_time(logs[i].size.bytes),
                _ => EVENT_TIMEOUT,
            };
            let cpu = d.cpu_secs()?;
            if let Some((j, c)) = pending.take() {
                out[j].cpu_secs += cpu - c;
            }
            let (size, before) = append(&logs[i].path, &mut logs[i].appended)?;
            let mut read = None;
            let seen = alerts.wait(within, |v| {
                let Some(k) = index(v) else {
                    return false;
                };
                let action = v["event"]["action"].as_str().unwrap_or("?");
                let hit = k == i && action == "appended" && v["file"]["size"].as_u64() == Some(size);
                if hit {
                    read = v["fim"]["append"]["read_bytes"].as_u64();
                } else {
                    out[k].other(action);
                }
                hit
            })?;
            let latency = seen.map(|t| t.duration_since(before));
            if round == 0 {
                out[i].first = Some((latency, read));
            } else {
                out[i].samples.push(latency);
                out[i].read.extend(read);
                pending = Some((i, cpu));
            }
            if seen.is_some() {
                missing_in_a_row = 0;
            } else {
                missing_in_a_row += 1;
                eprintln!(
                    "xtask: no appended event for append {round} to the {} log within {within:?}",
                    logs[i].size.label
                );
                if missing_in_a_row == MAX_MISSING_IN_A_ROW {
                    eprintln!("xtask: {MAX_MISSING_IN_A_ROW} missing in a row; giving up");
                    gave_up = true;
                    break 'rounds;
                }
            }
        }
    }
    // Late lines, and the rest of the last append's CPU time.
    alerts.wait(Duration::from_millis(200), |v| {
        if let Some(k) = index(v) {
            out[k].other(v["event"]["action"].as_str().unwrap_or("?"));
        }
        false
    })?;
    if let Some((j, c)) = pending {
        out[j].cpu_secs += d.cpu_secs()? - c;
    }
    let lost = d.stop()?;
    Ok(Run {
        per_log: out,
        gave_up,
        lost,
    })
}

/// One timed run of a tool.
struct Measured {
    secs: f64,
    cpu_secs: f64,
    /// Bytes the process read (rchar), all files.
    rchar: Option<u64>,
    code: i32,
    log_tail: String,
}

/// The timed runs of one tool on one size.
#[derive(Default)]
struct Checks {
    runs: Vec<Measured>,
    /// Runs whose exit status said the append was not accepted (anything but 0: fimd check exits 0
    /// when the policy allows every difference, AIDE when `growing` hides the append).
    rejected: usize,
}

impl Checks {
    fn push(&mut self, m: Measured) {
        if m.code != 0 {
            eprintln!(
                "xtask: exit status {}: the append was not accepted:\n{}",
                m.code, m.log_tail
            );
            self.rejected += 1;
        }
        self.runs.push(m);
    }

    /// The median run by wall time.
    fn median(&self) -> Option<&Measured> {
        let mut v: Vec<&Measured> = self.runs.iter().collect();
        v.sort_by(|a, b| a.secs.total_cmp(&b.secs));
        v.get(v.len() / 2).copied()
    }
}

/// Runs `cmd` with its output in `dir`, measuring wall and CPU time and the bytes it read.
fn measured(cmd: &mut Command, dir: &Path, label: &str) -> anyhow::Result<Measured> {
    let out = dir.join(format!("{label}.out"));
    let err = dir.join(format!("{label}.err"));
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(&out)?)
        .stderr(fs::File::create(&err)?);
    eprintln!("xtask: [{label}] $ {}", crate::show(cmd));
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", crate::show(cmd)))?;
    let pid = libc::pid_t::try_from(child.id())?;
    // Wait for the exit without reaping: a zombie's /proc/PID/io still holds its totals.
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our own unreaped child; info is valid for writes.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                libc::id_t::try_from(pid)?,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("waitid");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rchar = fs::read_to_string(format!("/proc/{pid}/io")).ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("rchar:"))
            .and_then(|n| n.trim().parse().ok())
    });
    let (status, usage) = super::wait_usage(child)?;
    if !libc::WIFEXITED(status) {
        bail!(
            "{} was killed by signal {}",
            crate::show(cmd),
            libc::WTERMSIG(status)
        );
    }
    let code = libc::WEXITSTATUS(status);
    let cpu_secs = usage_cpu_secs(&usage);
    eprintln!(
        "xtask: [{label}] {secs:.3} s ({cpu_secs:.3} s CPU), read {}, exit status {code}",
        rchar.map_or_else(|| "?".into(), human)
    );
    Ok(Measured {
        secs,
        cpu_secs,
        rchar,
        code,
        log_tail: tail(&out) + &tail(&err),
    })
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Bytes in binary units: `4.0 KiB`, `1.00 GiB`.
fn human(b: u64) -> String {
    let b = b as f64;
    let k = 1024.0;
    if b < k {
        format!("{b:.0} B")
    } else if b < k * k {
        format!("{:.1} KiB", b / k)
    } else if b < k * k * k {
        format!("{:.1} MiB", b / (k * k))
    } else {
        format!("{:.2} GiB", b / (k * k * k))
    }
}

/// Nearest-rank percentile; a missing event counts as slower than any.
fn percentile(sorted: &[Option<Duration>], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "missing".into(),
        |d| format!("{:.3} ms", d.as_secs_f64() * 1e3),
    )
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

struct Report<'a> {
    dir: &'a Path,
    aide_version: &'a str,
    appends: usize,
    runs: usize,
    load_start: String,
    results: &'a [SizeResult],
    /// fimd's appends stopped early after missing events.
    gave_up: bool,
    /// Kernel events fimd reported lost during the appends.
    lost: u64,
}

/// The per-size figures the table and the verdicts share.
struct Row<'a> {
    r: &'a SizeResult,
    p50: Option<Duration>,
    p99: Option<Duration>,
    max: Option<Duration>,
    missing: usize,
    mean_read: Option<f64>,
    cpu_per_append: f64,
    check: Option<&'a Measured>,
    aide: Option<&'a Measured>,
}

fn row(r: &SizeResult) -> Row<'_> {
    let mut sorted = r.fimd.samples.clone();
    // None (missing) sorts last.
    sorted.sort_by_key(|s| s.unwrap_or(Duration::MAX));
    let found = sorted.iter().flatten().count();
    Row {
        r,
        p50: percentile(&sorted, 50.0),
        p99: percentile(&sorted, 99.0),
        max: sorted.iter().flatten().last().copied(),
        missing: sorted.len() - found,
        mean_read: (!r.fimd.read.is_empty())
            .then(|| r.fimd.read.iter().sum::<u64>() as f64 / r.fimd.read.len() as f64),
        cpu_per_append: r.fimd.cpu_secs / r.fimd.samples.len().max(1) as f64,
        check: r.check.median(),
        aide: r.aide.median(),
    }
}

fn print_report(rep: &Report) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rows: Vec<Row> = rep.results.iter().map(row).collect();
    println!();
    println!(
        "Verifying {APPEND}-byte appends to a log: fimd run vs a full rehash (fimd check) vs {} `growing`",
        rep.aide_version
    );
    println!(
        "in {}: Linux {}, {cores} cores; load average at the start {}",
        rep.dir.display(),
        kernel.trim(),
        rep.load_start
    );
    println!(
        "page cache warm for every tool (each log read once, untimed, before); fimd: one `fimd run` watching every \
         log, {} rounds of one append (open O_APPEND, write, close) to each log in turn, each timed from the write \
         to its `appended` line; the first round (no checkpoint yet) is apart; full rehash and AIDE, on the log cut \
         back to its size: median of {} run(s), one append before each; appends are {APPEND} bytes, so a log stays \
         page-aligned and each reads no old partial page (an unaligned log reads up to {} bytes more)",
        rep.appends,
        rep.runs,
        APPEND - 1
    );
    for r in rep.results {
        let how = match &r.data {
            Data::Real => "real text".to_owned(),
            Data::Sparse(why) => format!("sparse: a hole, then {} of text ({why})", human(SPARSE_TAIL)),
        };
        println!("  {:>5} log: {} bytes, {how}", r.size.label, r.size.bytes);
    }
    println!();
    println!(
        "{:>5} | {:>9} {:>9} {:>9} {:>10} {:>9} | {:>10} {:>10} {:>10} | {:>10} {:>10} {:>10} | {:>10} {:>10}",
        "size",
        "fimd p50",
        "fimd p99",
        "fimd max",
        "read/app",
        "CPU/app",
        "full rehash",
        "CPU",
        "read",
        "AIDE grow",
        "CPU",
        "read",
        "rehash/p50",
        "AIDE/p50"
    );
    let dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
    for w in &rows {
        let p50 = w.p50.map(|d| d.as_secs_f64());
        let ratio = |m: Option<&Measured>| match (m, p50) {
            (Some(m), Some(p)) if p > 0.0 => format!("{:.0}x", m.secs / p),
            _ => "-".into(),
        };
        let ms3 = |d: Option<Duration>| dash(d.map(|d| format!("{:.3} ms", d.as_secs_f64() * 1e3)));
        println!(
            "{:>5} | {:>9} {:>9} {:>9} {:>10} {:>9} | {:>11} {:>10} {:>10} | {:>10} {:>10} {:>10} | {:>10} {:>10}",
            w.r.size.label,
            ms3(w.p50),
            ms3(w.p99),
            ms3(w.max),
            dash(w.mean_read.map(|b| human(b.round() as u64))),
            format!("{:.3} ms", w.cpu_per_append * 1e3),
            dash(w.check.map(|m| secs(m.secs))),
            dash(w.check.map(|m| secs(m.cpu_secs))),
            dash(w.check.and_then(|m| m.rchar).map(human)),
            dash(w.aide.map(|m| secs(m.secs))),
            dash(w.aide.map(|m| secs(m.cpu_secs))),
            dash(w.aide.and_then(|m| m.rchar).map(human)),
            ratio(w.check),
            ratio(w.aide),
        );
    }
    println!(
        "fimd p50/p99/max: write to event, including the daemon's verification; read/app: mean fim.append.read_bytes; \
         CPU/app: fimd's user+system time per append (its process CPU clock, all threads)"
    );
    println!(
        "full rehash: `fimd check` on the log alone (its own hasher; also judges the append); read: rchar of the \
         process (/proc/PID/io), all files; AIDE grow: `aide --check`, rule {AIDE_RULE}"
    );
    println!();
    for w in &rows {
        let f = &w.r.fimd;
        let first = match f.first {
            Some((lat, read)) => format!(
                "first append after the start (no checkpoint yet) {}, read {}",
                ms(lat),
                dash(read.map(human))
            ),
            None => "no first append".into(),
        };
        let mut notes = vec![first];
        // How the others spread: the tail is where the goal is missed.
        let over = |ms: f64| {
            f.samples
                .iter()
                .flatten()
                .filter(|d| d.as_secs_f64() * 1e3 > ms)
                .count()
        };
        notes.push(format!(
            "of {} appends, over 1 ms: {}, over 2 ms: {}, over 10 ms: {}, over 100 ms: {}",
            f.samples.len(),
            over(1.0),
            over(2.0),
            over(10.0),
            over(100.0)
        ));
        if w.missing > 0 {
            notes.push(format!("{} of {} events missing", w.missing, f.samples.len()));
        }
        if f.other_lines > 0 {
            notes.push(format!(
                "{} other alert line(s) on the log ({})",
                f.other_lines,
                f.other_actions.join(", ")
            ));
        }
        if w.r.check.rejected > 0 {
            notes.push(format!(
                "fimd check did not accept the append in {} run(s)",
                w.r.check.rejected
            ));
        }
        if w.r.aide.rejected > 0 {
            notes.push(format!(
                "AIDE reported the append as a change in {} run(s)",
                w.r.aide.rejected
            ));
        }
        println!("{:>5}: {}", w.r.size.label, notes.join("; "));
    }
    if rep.gave_up {
        println!("fimd's appends stopped after {MAX_MISSING_IN_A_ROW} missing events in a row");
    }
    println!("kernel events fimd reported lost: {}", rep.lost);
    println!();
    let worst = |f: fn(&Row) -> Option<Duration>| rows.iter().map(f).max().flatten();
    let under = |d: Option<Duration>| d.is_some_and(|d| d.as_secs_f64() * 1e3 < LATENCY_GOAL_MS);
    let all_found = rows.iter().all(|w| w.missing == 0);
    let (p50_worst, p99_worst) = (worst(|w| w.p50), worst(|w| w.p99));
    println!(
        "goal under {LATENCY_GOAL_MS:.0} ms per append: worst p50 {} {}, worst p99 {} {}, worst CPU per append {:.3} ms {}",
        ms(p50_worst),
        verdict(all_found && under(p50_worst)),
        ms(p99_worst),
        verdict(all_found && under(p99_worst)),
        rows.iter().map(|w| w.cpu_per_append).fold(0.0, f64::max) * 1e3,
        verdict(rows.iter().all(|w| w.cpu_per_append * 1e3 < LATENCY_GOAL_MS)),
    );
    let small = rows.iter().min_by_key(|w| w.r.size.bytes);
    let large = rows.iter().max_by_key(|w| w.r.size.bytes);
    if let (Some(small), Some(large)) = (small, large)
        && large.r.size.bytes > small.r.size.bytes
    {
        let reads: Vec<String> = rows
            .iter()
            .map(|w| dash(w.mean_read.map(|b| format!("{b:.0}"))))
            .collect();
        let same_read = reads.windows(2).all(|p| p[0] == p[1]) && reads[0] != "-";
        let factor = match (small.p50, large.p50) {
            (Some(s), Some(l)) => Some(l.as_secs_f64() / s.as_secs_f64().max(1e-9)),
            _ => None,
        };
        println!(
            "goal independent of size: bytes read per append {} ({}), p50 {} / {} = {} (<= {INDEPENDENT_FACTOR}x) {}; \
             CPU per append {} / {} = {:.2}x",
            if same_read { "equal" } else { "differ" },
            reads.join(", "),
            large.r.size.label,
            small.r.size.label,
            factor.map_or_else(|| "?".into(), |f| format!("{f:.2}x")),
            verdict(same_read && factor.is_some_and(|f| f <= INDEPENDENT_FACTOR)),
            large.r.size.label,
            small.r.size.label,
            large.cpu_per_append / small.cpu_per_append.max(1e-12)
        );
    }
    println!("load average at the end: {}", load_average());
}
