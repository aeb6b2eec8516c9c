//! `cargo xtask bench …`: fimd side by side with its peers, printing ratios.
//!
//! `bench baseline` builds a baseline of one tree with `fimd init` and `aide --init`, then compares
//! it with `fimd check` and `aide --check`, with a warm page cache and (as root) a cold one. It
//! prints wall time and peak RSS of each tool, the speed-up of fimd over AIDE, and fimd's hashing
//! throughput against the machine's SHA-256 limit (one core's `openssl speed` times the cores),
//! each beside its goal. It never fails on a missed goal: it measures and prints.
//!
//! `bench realtime` runs `fimd run` on each sensor tier and measures the latency from a writer's
//! close() to the alert, the cost to writers of 1-byte writes with fimd and with auditd watching,
//! and a write storm (see bench/realtime.rs). With `--kernel`, it measures the writer overhead of
//! each tier inside QEMU guests on Debian's kernels instead, as ratios (bench/realtime/guest.rs).
//!
//! `bench scale` builds synthetic trees of 100k, 1M and 2M files and runs fimd `init`, `check`
//! and `run` against AIDE on each (see bench/scale.rs).
//!
//! `bench append` times fimd's verification of 4 KiB appends to logs of 1 MiB to 10 GiB against a
//! full rehash and AIDE's `growing` check (see bench/append.rs).
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Subcommand;

mod append;
mod daemon;
mod realtime;
mod scale;

#[derive(Subcommand)]
pub enum Which {
    /// `fimd init`/`check` against `aide --init`/`--check` on one tree.
    Baseline {
        /// The tree both tools watch (neither descends into other filesystems below it).
        #[arg(long, default_value = "/usr")]
        tree: PathBuf,
        /// Timed runs per measurement; the median time and the largest peak RSS are reported.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Skip the cold-cache runs (they need root to drop the page cache).
        #[arg(long)]
        no_cold: bool,
    },
    /// `fimd run` on each sensor tier against auditd: alert latency, writer overhead, and a write
    /// storm (needs root).
    Realtime {
        /// Sequential changes timed from the writer's close() to their alert line.
        #[arg(long, default_value_t = 1000)]
        changes: usize,
        /// One-byte writes per dd run, for the writer overhead and the storm.
        #[arg(long, default_value_t = 1_000_000)]
        writes: u64,
        /// dd runs per cell of the writer overhead table; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// fimd sensor tiers, each a column (`[realtime] sensor` of fimd run's configuration).
        /// In the guests, `ebpf` (or `auto`) is two columns: the fentry and the kprobe tier.
        #[arg(long, value_delimiter = ',', default_value = "ebpf,fanotify")]
        sensor: Vec<realtime::Tier>,
        /// Instead of this host: inside QEMU guests on these Debian kernels (5.10, 6.1, 6.12;
        /// repeatable), the writer overhead of each tier as ratios, over `--runs` interleaved
        /// rounds (see bench/realtime/guest.rs).
        #[arg(long)]
        kernel: Vec<String>,
    },
    /// 4 KiB appends to logs: `fimd run`'s verification vs a full rehash and AIDE (needs root).
    Append {
        /// Sequential appends timed under `fimd run`, per size.
        #[arg(long, default_value_t = 200)]
        appends: usize,
        /// Log sizes (K, M, G, T: binary units).
        #[arg(long, value_delimiter = ',', default_value = "1M,1G,10G")]
        sizes: Vec<append::Size>,
        /// Timed `fimd check` and `aide --check` runs per size; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Where the temporary directory with the logs goes.
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
        /// Larger logs are sparse (a hole, then 1 MiB of text), as are those the disk has no room for.
        #[arg(long, default_value = "1G")]
        real_up_to: append::Size,
    },
    /// Synthetic trees of 100k to 2M files: `fimd init`/`check`/`run` against AIDE, peak RSS,
    /// kernel maps, latency while all are watched, and a wide directory under creations (needs root).
    Scale {
        /// Tree sizes in files (k = 1,000, M = 1,000,000); each tree is removed before the next.
        #[arg(long, value_delimiter = ',', default_value = "100k,1M,2M")]
        files: Vec<scale::Count>,
        /// Where the trees go (2M files take about 10 GB).
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
        /// Rewrites of one watched file timed from close() to the alert, per size.
        #[arg(long, default_value_t = 200)]
        changes: usize,
        /// Timed init and check runs per tool and size; the median time is reported.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// fimd only: AIDE is not run (its `--init` alone takes 20+ minutes at 2M files).
        #[arg(long)]
        no_aide: bool,
        /// A `fimd` binary to measure instead of building this tree's (e.g. an earlier build,
        /// to compare two in one run).
        #[arg(long)]
        fimd: Option<PathBuf>,
    },
}

pub fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Baseline { tree, runs, no_cold } => baseline(&tree, runs.max(1), !no_cold),
        Which::Realtime {
            runs, sensor, kernel, ..
        } if !kernel.is_empty() => realtime::guest(&kernel, runs.max(1), &sensor),
        Which::Realtime {
            changes,
            writes,
            runs,
            sensor,
            kernel: _,
        } => realtime::run(changes.max(1), writes.max(1), runs.max(1), &sensor),
        Which::Append {
            appends,
            sizes,
            runs,
            dir,
            real_up_to,
        } => append::run(appends.max(1), &sizes, runs.max(1), &dir, real_up_to.bytes),
        Which::Scale {
            files,
            dir,
            changes,
            runs,
            no_aide,
            fimd,
        } => scale::run(
            &files,
            &dir,
            scale::Options {
                changes: changes.max(1),
                runs: runs.max(1),
                aide: !no_aide,
                fimd,
            },
        ),
    }
}

/// Goals, printed beside the measurements.
const INIT_SPEEDUP_GOAL: f64 = 15.0;
const CHECK_SPEEDUP_GOAL: f64 = 20.0;
const HASH_LIMIT_GOAL: f64 = 1.35;
const RSS_GOAL_MB: f64 = 100.0;

/// AIDE's attributes equivalent to what fimd records for every entry: permissions, file type,
/// inode, link target, link count, owner, group, size, mtime, ctime, SHA-256 of the content, and
/// every extended attribute (AIDE splits those into acl, xattrs, selinux and caps).
const AIDE_RULE: &str = "p+ftype+i+l+n+u+g+s+m+c+sha256+acl+xattrs+selinux+caps";

fn baseline(tree: &Path, runs: usize, cold: bool) -> anyhow::Result<()> {
    let tree = fs::canonicalize(tree).with_context(|| format!("cannot open {}", tree.display()))?;
    let aide_version = tool_version()?;
    let fimd = crate::build_fimd()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    eprintln!("xtask: walking {} to size it", tree.display());
    let stats = walk(&tree)?;
    eprintln!("xtask: measuring single-core SHA-256 with openssl speed");
    let sha_core = match openssl_sha256() {
        Ok(bps) => Some(bps),
        Err(e) => {
            eprintln!("xtask: no SHA-256 limit: {e:#}");
            None
        }
    };

    let dir = tempfile::Builder::new().prefix("fimd-bench-").tempdir()?;
    let bench = Bench::new(dir.path(), fimd, &tree, &stats.mounts, true)?;

    // Warm: one untimed fimd init reads every file, so both tools then start from a warm cache.
    eprintln!("xtask: warming the page cache with an untimed fimd init");
    bench.fimd_init("warmup")?;
    let mut rows = Vec::new();
    let warm_init = bench.pair(
        runs,
        "init-warm",
        None,
        |b, l| b.aide_init(l),
        |b, l| b.fimd_init(l),
    )?;
    let warm_check = bench.pair(
        runs,
        "check-warm",
        None,
        |b, l| b.aide_check(l),
        |b, l| b.fimd_check(l),
    )?;
    let entries = (bench.fimd_entries(), bench.aide_entries());
    rows.push(("init", "warm", INIT_SPEEDUP_GOAL, warm_init));
    rows.push(("check", "warm", CHECK_SPEEDUP_GOAL, warm_check));

    let cold_note = match cold_ready(cold) {
        Ok(()) => {
            let drop = Some(drop_caches as fn() -> anyhow::Result<()>);
            let init = bench.pair(
                runs,
                "init-cold",
                drop,
                |b, l| b.aide_init(l),
                |b, l| b.fimd_init(l),
            )?;
            let check = bench.pair(
                runs,
                "check-cold",
                drop,
                |b, l| b.aide_check(l),
                |b, l| b.fimd_check(l),
            )?;
            rows.insert(1, ("init", "cold", INIT_SPEEDUP_GOAL, init));
            rows.push(("check", "cold", CHECK_SPEEDUP_GOAL, check));
            None
        }
        Err(why) => {
            eprintln!("xtask: skipping the cold-cache runs: {why}");
            Some(why)
        }
    };

    let warm_fimd_init_secs = rows[0].3.fimd.secs;
    print_report(&Report {
        tree: &tree,
        aide_version: &aide_version,
        stats: &stats,
        entries,
        cores,
        runs,
        rows: &rows,
        cold_note,
        sha_core,
        warm_fimd_init_secs,
    });
    Ok(())
}

/// One tool's result for one measurement: median wall time (and that run's CPU time, user plus
/// system, which another load on the machine disturbs less), largest peak RSS.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    cpu_secs: f64,
    rss_kib: u64,
}

#[derive(Clone)]
struct Pair {
    aide: Sample,
    fimd: Sample,
}

/// The temporary state both tools work in.
struct Bench {
    fimd: PathBuf,
    fimd_conf: PathBuf,
    aide_conf: PathBuf,
    aide_db: PathBuf,
    aide_db_new: PathBuf,
    logs: PathBuf,
}

impl Bench {
    /// Writes both tools' configurations under `dir`; with `aide`, checks AIDE's (a run
    /// without AIDE, `bench scale --no-aide`, needs no AIDE installed).
    fn new(dir: &Path, fimd: PathBuf, tree: &Path, mounts: &[PathBuf], aide: bool) -> anyhow::Result<Bench> {
        let logs = dir.join("logs");
        fs::create_dir_all(&logs)?;
        let fimd_conf = dir.join("fimd.toml");
        let tree_toml = serde_json::to_string(&tree.to_string_lossy())?;
        let state_toml = serde_json::to_string(&dir.join("state").to_string_lossy())?;
        fs::write(
            &fimd_conf,
            format!(
                "state_dir = {state_toml}\n\n[[watch]]\npath = {tree_toml}\npolicy = \"static\"\n\
                 one_filesystem = true\n\n[scan]\nthreads = 0\n"
            ),
        )?;

        let aide_db = dir.join("aide.db");
        let aide_db_new = dir.join("aide.db.new");
        let aide_conf = dir.join("aide.conf");
        let mut conf = format!(
            "# Equivalent to the fimd configuration beside it.\n\
             database_in=file:{}\n\
             database_out=file:{}\n\
             gzip_dbout=no\n\
             # Don't hash AIDE's own database with every algorithm for the report: fimd doesn't.\n\
             database_attrs=E\n\
             # As many hashing workers as cores, like fimd's threads = 0 (AIDE's default is 1).\n\
             num_workers=100%\n\
             report_url=stdout\n\
             FIMD = {AIDE_RULE}\n",
            aide_db.display(),
            aide_db_new.display()
        );
        // AIDE has no one-filesystem option: leave out what lies below each other filesystem.
        for m in mounts {
            conf.push_str(&format!("!{}/.*\n", aide_regex(m)));
        }
        conf.push_str(&format!("{} FIMD\n", aide_regex(tree)));
        fs::write(&aide_conf, conf)?;
        let bench = Bench {
            fimd,
            fimd_conf,
            aide_conf,
            aide_db,
            aide_db_new,
            logs,
        };
        if aide {
            let mut check = Command::new("aide");
            check.arg("--config").arg(&bench.aide_conf).arg("--config-check");
            bench.timed("aide-config-check", &mut check, |c| c == 0)?;
        }
        Ok(bench)
    }

    /// Runs AIDE then fimd `runs` times each (calling `prepare` before every run), reporting the
    /// median time and the largest peak RSS of each.
    fn pair(
        &self,
        runs: usize,
        label: &str,
        prepare: Option<fn() -> anyhow::Result<()>>,
        aide: impl Fn(&Bench, &str) -> anyhow::Result<Sample>,
        fimd: impl Fn(&Bench, &str) -> anyhow::Result<Sample>,
    ) -> anyhow::Result<Pair> {
        let mut a = Vec::new();
        let mut f = Vec::new();
        for run in 1..=runs {
            if let Some(prepare) = prepare {
                prepare()?;
            }
            a.push(aide(self, &format!("aide-{label}-{run}"))?);
            if let Some(prepare) = prepare {
                prepare()?;
            }
            f.push(fimd(self, &format!("fimd-{label}-{run}"))?);
        }
        Ok(Pair {
            aide: summarise(a),
            fimd: summarise(f),
        })
    }

    fn fimd_init(&self, label: &str) -> anyhow::Result<Sample> {
        let mut cmd = Command::new(&self.fimd);
        cmd.arg("-c").arg(&self.fimd_conf).arg("init");
        self.timed(label, &mut cmd, |c| c == 0)
    }

    fn fimd_check(&self, label: &str) -> anyhow::Result<Sample> {
        let mut cmd = Command::new(&self.fimd);
        cmd.arg("-c").arg(&self.fimd_conf).arg("check");
        // 0: clean, 1: differences (the tree may change under us), 2: error.
        self.timed(label, &mut cmd, |c| c == 0 || c == 1)
    }

    fn aide_init(&self, label: &str) -> anyhow::Result<Sample> {
        let mut cmd = Command::new("aide");
        cmd.arg("--config").arg(&self.aide_conf).arg("--init");
        let sample = self.timed(label, &mut cmd, |c| c == 0)?;
        fs::rename(&self.aide_db_new, &self.aide_db)
            .with_context(|| format!("aide --init wrote no {}", self.aide_db_new.display()))?;
        Ok(sample)
    }

    fn aide_check(&self, label: &str) -> anyhow::Result<Sample> {
        let mut cmd = Command::new("aide");
        cmd.arg("--config").arg(&self.aide_conf).arg("--check");
        // 0: no change, 1-7: added/removed/changed bitmask, 14 and above: errors.
        self.timed(label, &mut cmd, |c| c < 14)
    }

    /// Runs `cmd` with its output in the log directory, measuring wall time and peak RSS.
    fn timed(&self, label: &str, cmd: &mut Command, ok: impl Fn(i32) -> bool) -> anyhow::Result<Sample> {
        let out = self.logs.join(format!("{label}.out"));
        let err = self.logs.join(format!("{label}.err"));
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&out)?)
            .stderr(fs::File::create(&err)?);
        eprintln!("xtask: [{label}] $ {}", crate::show(cmd));
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", crate::show(cmd)))?;
        let (status, usage) = wait_usage(child)?;
        let secs = started.elapsed().as_secs_f64();
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            bail!(
                "{} was killed by signal {}",
                crate::show(cmd),
                libc::WTERMSIG(status)
            );
        };
        if !ok(code) {
            bail!(
                "{} failed with exit status {code}:\n{}{}",
                crate::show(cmd),
                tail(&out),
                tail(&err)
            );
        }
        let rss_kib = u64::try_from(usage.ru_maxrss).unwrap_or(0);
        let cpu_secs = usage_cpu_secs(&usage);
        eprintln!(
            "xtask: [{label}] {secs:.2} s ({cpu_secs:.2} s CPU), peak RSS {:.1} MB, exit status {code}",
            mb(rss_kib)
        );
        Ok(Sample {
            secs,
            cpu_secs,
            rss_kib,
        })
    }

    /// Entries in the newest fimd baseline, from `fimd init: N entries, …`.
    fn fimd_entries(&self) -> Option<u64> {
        let text = fs::read_to_string(self.logs.join("fimd-init-warm-1.err")).ok()?;
        let line = text.lines().rev().find(|l| l.starts_with("fimd init: "))?;
        line["fimd init: ".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// Entries in the newest AIDE database, from `Number of entries:\tN`.
    fn aide_entries(&self) -> Option<u64> {
        let text = fs::read_to_string(self.logs.join("aide-init-warm-1.out")).ok()?;
        let line = text.lines().find(|l| l.starts_with("Number of entries:"))?;
        line["Number of entries:".len()..].trim().parse().ok()
    }
}

/// Waits for `child` (std's wait gives no resource usage), returning its wait status and usage.
fn wait_usage(child: std::process::Child) -> anyhow::Result<(libc::c_int, libc::rusage)> {
    let pid = libc::pid_t::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own unreaped child; status and usage are valid for writes. `child`
        // is never waited on through std afterwards (dropping a Child does not wait).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("wait4");
        }
    }
    drop(child);
    Ok((status, usage))
}

/// CPU time, user plus system, in seconds.
fn usage_cpu_secs(usage: &libc::rusage) -> f64 {
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn summarise(mut samples: Vec<Sample>) -> Sample {
    samples.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    Sample {
        secs: samples[samples.len() / 2].secs,
        cpu_secs: samples[samples.len() / 2].cpu_secs,
        rss_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
    }
}

/// The last lines of a log, for an error message.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut s = String::new();
    for l in &lines[lines.len().saturating_sub(20)..] {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// `AIDE 0.18.3`, checking on the way that AIDE is installed.
fn tool_version() -> anyhow::Result<String> {
    let out = Command::new("aide")
        .arg("--version")
        .output()
        .context("cannot run aide (install it with `apt-get install aide`)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok(text.lines().next().unwrap_or("AIDE").trim().to_owned())
}

/// An absolute path as an AIDE rule regex: PCRE metacharacters escaped, plus AIDE's own ' ' and '@'.
fn aide_regex(path: &Path) -> String {
    let mut s = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '\\' => s.push_str("\\\\\\\\"),
            '.' | '^' | '$' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | ' ' | '@' => {
                s.push('\\');
                s.push(c);
            }
            _ => s.push(c),
        }
    }
    s
}

/// What a one-filesystem walk of the tree holds.
struct TreeStats {
    entries: u64,
    files: u64,
    /// Bytes of regular files, once per name (what AIDE reads).
    bytes: u64,
    /// Bytes of regular files, once per inode: fimd reads the names of one file once.
    distinct_bytes: u64,
    /// Directories on another filesystem than the tree's: kept, but not descended into.
    mounts: Vec<PathBuf>,
}

fn walk(root: &Path) -> anyhow::Result<TreeStats> {
    let dev = fs::symlink_metadata(root)?.dev();
    let mut stats = TreeStats {
        entries: 0,
        files: 0,
        bytes: 0,
        distinct_bytes: 0,
        mounts: Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        stats.entries += 1;
        if meta.is_file() {
            stats.files += 1;
            stats.bytes += meta.len();
            if meta.nlink() < 2 || seen.insert((meta.dev(), meta.ino())) {
                stats.distinct_bytes += meta.len();
            }
        } else if meta.is_dir() {
            if meta.dev() != dev {
                stats.mounts.push(path);
                continue;
            }
            let Ok(entries) = fs::read_dir(&path) else {
                continue;
            };
            for e in entries.flatten() {
                stack.push(e.path());
            }
        }
    }
    stats.mounts.sort();
    Ok(stats)
}

/// One core's SHA-256 throughput in bytes per second, from `openssl speed` on 1 MiB blocks.
fn openssl_sha256() -> anyhow::Result<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "2", "-bytes", "1048576", "-evp", "sha256"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("cannot run openssl")?;
    if !out.status.success() {
        bail!("openssl speed failed: {}", out.status);
    }
    // The last line reads `sha256   1514846.34k`, in thousands of bytes per second.
    let text = String::from_utf8_lossy(&out.stdout);
    let value = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("sha256"))
        .and_then(|l| l.split_whitespace().last())
        .context("no sha256 line in openssl speed's output")?;
    let kbps: f64 = value
        .trim_end_matches('k')
        .parse()
        .with_context(|| format!("cannot read {value:?} from openssl speed"))?;
    Ok(kbps * 1000.0)
}

/// Whether cold-cache runs can happen, or why not.
fn cold_ready(wanted: bool) -> Result<(), String> {
    if !wanted {
        return Err("--no-cold given".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("dropping the page cache needs root".into());
    }
    drop_caches().map_err(|e| format!("{e:#}"))
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`.
fn drop_caches() -> anyhow::Result<()> {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3").context("cannot write /proc/sys/vm/drop_caches")
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn verdict(met: bool) -> &'static str {
    if met { "ok" } else { "MISSED" }
}

struct Report<'a> {
    tree: &'a Path,
    aide_version: &'a str,
    stats: &'a TreeStats,
    entries: (Option<u64>, Option<u64>),
    cores: usize,
    runs: usize,
    rows: &'a [(&'a str, &'a str, f64, Pair)],
    cold_note: Option<String>,
    sha_core: Option<f64>,
    warm_fimd_init_secs: f64,
}

fn print_report(r: &Report) {
    let count = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    println!();
    println!(
        "fimd vs {} on {}: {} entries (fimd {}, AIDE {}), {} regular files, {:.2} GB; {} cores; \
         median of {} timed run(s)",
        r.aide_version,
        r.tree.display(),
        r.stats.entries,
        count(r.entries.0),
        count(r.entries.1),
        r.stats.files,
        r.stats.bytes as f64 / 1e9,
        r.cores,
        r.runs
    );
    println!("AIDE rule {AIDE_RULE}, num_workers=100%, database_attrs=E, uncompressed database");
    if r.stats.mounts.is_empty() {
        println!("no other filesystem is mounted below {}", r.tree.display());
    } else {
        println!(
            "{} other filesystem(s) below the tree left out of both: {}",
            r.stats.mounts.len(),
            r.stats
                .mounts
                .iter()
                .map(|m| m.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!();
    println!(
        "{:<12} {:>9} {:>9} {:>10}  {:<13} {:>9} {:>9}  goal (fimd)",
        "", "AIDE s", "fimd s", "AIDE/fimd", "goal", "AIDE MB", "fimd MB"
    );
    for (op, cache, goal, p) in r.rows {
        let ratio = p.aide.secs / p.fimd.secs.max(1e-9);
        let rss = mb(p.fimd.rss_kib);
        println!(
            "{:<12} {:>9.2} {:>9.2} {:>9.1}x  {:<13} {:>9.1} {:>9.1}  < {RSS_GOAL_MB:.0} MB {}",
            format!("{op} {cache}"),
            p.aide.secs,
            p.fimd.secs,
            ratio,
            format!(">= {goal:.0}x {}", verdict(ratio >= *goal)),
            mb(p.aide.rss_kib),
            rss,
            verdict(rss < RSS_GOAL_MB),
        );
    }
    if let Some(why) = &r.cold_note {
        println!("(cold-cache runs skipped: {why})");
    }
    println!();
    println!("CPU time (user + system), less disturbed than wall time by other load on the machine:");
    println!(
        "{:<12} {:>9} {:>9} {:>10}",
        "", "AIDE cpu", "fimd cpu", "AIDE/fimd"
    );
    for (op, cache, _, p) in r.rows {
        println!(
            "{:<12} {:>9.2} {:>9.2} {:>9.1}x",
            format!("{op} {cache}"),
            p.aide.cpu_secs,
            p.fimd.cpu_secs,
            p.aide.cpu_secs / p.fimd.cpu_secs.max(1e-9)
        );
    }
    if let Ok(load) = fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!("load average at the end: {}", load.join(" "));
    }
    println!();
    let fimd_gbps = r.stats.bytes as f64 / r.warm_fimd_init_secs.max(1e-9) / 1e9;
    match r.sha_core {
        Some(core) => {
            let limit = core * r.cores as f64 / 1e9;
            let gap = limit / fimd_gbps.max(1e-12);
            println!(
                "hashing: fimd init (warm) {fimd_gbps:.2} GB/s; SHA-256 limit {limit:.2} GB/s \
                 ({} cores x {:.2} GB/s, openssl speed); limit/fimd {gap:.2}x, goal <= {HASH_LIMIT_GOAL}x {}",
                r.cores,
                core / 1e9,
                verdict(gap <= HASH_LIMIT_GOAL)
            );
            // Hard links: AIDE reads every name, fimd each file once per scan.
            let distinct = r.stats.distinct_bytes as f64 / 1e9;
            println!(
                "         counting each hard-linked file once ({distinct:.2} of {:.2} GB): fimd {:.2} GB/s, \
                 limit/fimd {:.2}x",
                r.stats.bytes as f64 / 1e9,
                distinct / r.warm_fimd_init_secs.max(1e-9),
                limit * r.warm_fimd_init_secs / distinct.max(1e-12)
            );
        }
        None => println!("hashing: fimd init (warm) {fimd_gbps:.2} GB/s; SHA-256 limit unknown"),
    }
}
