//! `cargo xtask bench scale`: fimd against AIDE on synthetic trees of 100k, 1M and 2M files.
//!
//! For each size it builds a tree (mixed sizes, a few deep and a few wide directories) under
//! `--dir`, then times `fimd init` against `aide --init` and `fimd check` against `aide --check`
//! (wall time, CPU time, peak RSS, each pair in one run), starts `fimd run` and reports its
//! time to ready, its peak RSS, the kernel map memory it says it locked, and the close()→alert
//! latency of rewrites of one watched file while the whole tree is watched. On the first size
//! it also runs the wide-directory case of issue 13: a directory of 10,000 entries receiving 100
//! creations per second, with the daemon's CPU time over that span and the count of creations
//! that got their alert. It measures and prints; it never fails on a missed goal, only when a
//! tool fails or alerts go missing.
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::daemon::{Daemon, Tail};
use super::{Bench, Pair, Sample, mb};

/// How `bench scale` runs, beyond the sizes and the directory.
pub struct Options {
    /// Rewrites of one watched file timed from close() to the alert, per size.
    pub changes: usize,
    /// Timed init and check runs per tool and size.
    pub runs: usize,
    /// Whether AIDE runs beside fimd (`--no-aide`: not; its columns show "-").
    pub aide: bool,
    /// A prebuilt `fimd` to measure instead of this tree's release build.
    pub fimd: Option<std::path::PathBuf>,
}

/// A file count such as `100k` or `2M` (decimal: k = 1,000, M = 1,000,000).
#[derive(Clone, Copy, Debug)]
pub struct Count(pub u64);

impl std::str::FromStr for Count {
    type Err = String;

    fn from_str(s: &str) -> Result<Count, String> {
        let (digits, mult) = match s.as_bytes().last() {
            Some(b'k' | b'K') => (&s[..s.len() - 1], 1_000),
            Some(b'm' | b'M') => (&s[..s.len() - 1], 1_000_000),
            _ => (s, 1),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{s}` is not a file count (e.g. 100k, 1M, 2M)"))?;
        match n.checked_mul(mult) {
            Some(n) if n >= 1_000 => Ok(Count(n)),
            _ => Err(format!("`{s}`: use at least 1k files and at most u64")),
        }
    }
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            n if n % 1_000_000 == 0 => write!(f, "{}M", n / 1_000_000),
            n if n % 1_000 == 0 => write!(f, "{}k", n / 1_000),
            n => write!(f, "{n}"),
        }
    }
}

/// Entries of the wide directory of issue 13's case.
const WIDE_ENTRIES: u64 = 10_000;
/// Creations per second in that directory, and for how long.
const WIDE_RATE: u64 = 100;
const WIDE_SECS: u64 = 10;
/// `fimd run` must be ready within this, even on 2M files in a debug-slow VM.
const READY_WITHIN: Duration = Duration::from_secs(600);
const ALERT_TIMEOUT: Duration = Duration::from_secs(10);

/// One size's results.
struct Row {
    files: Count,
    /// Files and directories actually made.
    entries: u64,
    tree_bytes: u64,
    init: Pair,
    check: Pair,
    run: RunSample,
}

struct RunSample {
    ready_secs: f64,
    rss_kib: u64,
    /// As `fimd run` reports it at ready: `(N KiB of kernel maps)`.
    kernel_kib: Option<u64>,
    /// close()→alert, sorted.
    latencies: Vec<Duration>,
    missing: usize,
    wide: Option<Wide>,
}

struct Wide {
    /// Listings of directories and records paced over the span
    /// (`fim_directory_listings_total`), when the fimd measured exports them.
    listings: Option<(f64, f64)>,
    created: u64,
    alerted: u64,
    /// Creation to its alert as read by the bench (every 10 ms at most while creating), sorted.
    latencies: Vec<Duration>,
    secs: f64,
    fimd_cpu: f64,
}

pub(super) fn run(sizes: &[Count], dir: &Path, opts: Options) -> anyhow::Result<()> {
    let Options {
        changes,
        runs,
        aide,
        fimd,
    } = opts;
    let aide_version = if aide {
        super::tool_version()?
    } else {
        "AIDE (not run: --no-aide)".to_owned()
    };
    let fimd = match fimd {
        Some(f) => std::fs::canonicalize(&f).with_context(|| format!("no fimd binary at {}", f.display()))?,
        None => crate::build_fimd()?,
    };
    // Not run: a sample of nothing, shown as "-".
    let skipped = |_: &Bench, _: &str| {
        Ok(Sample {
            secs: 0.0,
            cpu_secs: 0.0,
            rss_kib: 0,
        })
    };
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut rows = Vec::new();
    for (i, &files) in sizes.iter().enumerate() {
        let work = tempfile::Builder::new()
            .prefix(&format!("fimd-scale-{files}-"))
            .tempdir_in(dir)
            .with_context(|| format!("cannot make a directory in {}", dir.display()))?;
        let tree = work.path().join("tree");
        eprintln!("xtask: scale {files}: building the tree in {}", tree.display());
        let started = Instant::now();
        let made = build_tree(&tree, files.0, i == 0)?;
        eprintln!(
            "xtask: scale {files}: {} entries, {:.1} GiB, built in {:.1} s",
            made.entries,
            made.bytes as f64 / (1u64 << 30) as f64,
            started.elapsed().as_secs_f64()
        );
        let bench = Bench::new(work.path(), fimd.clone(), &tree, &[], aide)?;
        let init = bench.pair(
            runs,
            &format!("init-{files}"),
            None,
            |b, l| if aide { b.aide_init(l) } else { skipped(b, l) },
            |b, l| b.fimd_init(l),
        )?;
        let check = bench.pair(
            runs,
            &format!("check-{files}"),
            None,
            |b, l| if aide { b.aide_check(l) } else { skipped(b, l) },
            |b, l| b.fimd_check(l),
        )?;
        let run = run_daemon(&fimd, work.path(), &bench, &tree, files, changes, i == 0)?;
        rows.push(Row {
            files,
            entries: made.entries,
            tree_bytes: made.bytes,
            init,
            check,
            run,
        });
        // The tables so far, before the tree's removal (minutes at 2M files): the last printed
        // is the whole report.
        print_report(&aide_version, &rows, changes, &fimd);
        // Keep the disk for the next size: trees of 2M files take about 10 GB.
        drop(work);
    }
    let missing: usize = rows.iter().map(|r| r.run.missing).sum();
    let wide_missing: u64 = rows
        .iter()
        .filter_map(|r| r.run.wide.as_ref())
        .map(|w| w.created - w.alerted)
        .sum();
    if missing > 0 || wide_missing > 0 {
        bail!("{missing} rewrites and {wide_missing} creations got no alert (see the table)");
    }
    Ok(())
}

struct Made {
    entries: u64,
    bytes: u64,
}

/// A deterministic xorshift64* stream, so every run builds the same tree.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A file size drawn from a mix like /etc and /usr: most files small, a few large.
/// 60 % below 256 B, 35 % below 4 KiB, 4.9 % below 64 KiB, 0.1 % up to 1 MiB.
fn file_size(rng: &mut Rng) -> usize {
    let r = rng.next();
    let pick = r % 1000;
    let span = match pick {
        0..600 => 256,
        600..950 => 4096,
        950..999 => 65_536,
        _ => 1 << 20,
    };
    usize::try_from((r >> 10) % span).unwrap_or(0)
}

/// Builds `files` regular files under `root`:
/// - 4 deep chains of 40 levels with one file per level;
/// - 2 wide directories of up to 20,000 files each (the larger sizes' biggest directories);
/// - the rest in directories of 100 files, 100 directories per group;
/// - with `wide_case`, the directory `wide-live` of 10,000 entries that the run part adds to.
fn build_tree(root: &Path, files: u64, wide_case: bool) -> anyhow::Result<Made> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ files);
    let mut made = Made { entries: 0, bytes: 0 };
    let data = vec![b'f'; 1 << 20];
    let write = |path: &Path, made: &mut Made, rng: &mut Rng| -> anyhow::Result<()> {
        let len = file_size(rng);
        // A distinct first line, so no two files share content.
        let head = format!("{}\n", made.entries);
        let mut f = fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        f.write_all(head.as_bytes())?;
        f.write_all(&data[..len])?;
        made.entries += 1;
        made.bytes += (head.len() + len) as u64;
        Ok(())
    };
    fs::create_dir_all(root)?;
    let mut left = files;
    for chain in 0..4 {
        let mut d = root.join(format!("deep{chain}"));
        for level in 0..40 {
            if left == 0 {
                break;
            }
            fs::create_dir_all(&d)?;
            write(&d.join(format!("f{level}")), &mut made, &mut rng)?;
            left -= 1;
            d.push(format!("d{level}"));
        }
    }
    for w in 0..2 {
        let d = root.join(format!("wide{w}"));
        fs::create_dir_all(&d)?;
        for i in 0..(files / 20).min(20_000).min(left) {
            write(&d.join(format!("entry-{i:06}")), &mut made, &mut rng)?;
            left -= 1;
        }
    }
    if wide_case {
        let d = root.join("wide-live");
        fs::create_dir_all(&d)?;
        for i in 0..WIDE_ENTRIES.min(left) {
            write(&d.join(format!("old-{i:05}")), &mut made, &mut rng)?;
            left -= 1;
        }
    }
    let mut group = 0;
    while left > 0 {
        for dir in 0..100 {
            if left == 0 {
                break;
            }
            let d = root.join(format!("g{group:03}/d{dir:02}"));
            fs::create_dir_all(&d)?;
            for i in 0..100.min(left) {
                write(&d.join(format!("file{i:02}.conf")), &mut made, &mut rng)?;
                left -= 1;
            }
        }
        group += 1;
    }
    // The latency file, rewritten by the run part.
    fs::write(root.join("latency.conf"), "initial\n")?;
    made.entries += 1;
    Ok(made)
}

/// `fimd run` on the tree: time to ready, peak RSS, kernel maps, latency, and the wide case.
fn run_daemon(
    fimd: &Path,
    work: &Path,
    bench: &Bench,
    tree: &Path,
    files: Count,
    changes: usize,
    wide_case: bool,
) -> anyhow::Result<RunSample> {
    let alerts = work.join("alerts.jsonl");
    let config = work.join("fimd-run.toml");
    let base = fs::read_to_string(&bench.fimd_conf)?;
    let alerts_toml = serde_json::to_string(&alerts.to_string_lossy())?;
    // Metrics on a port the kernel just handed out, for the wide case's listing counts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    fs::write(
        &config,
        format!("{base}\n[alerts]\njsonl = {alerts_toml}\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    )?;
    fs::write(&alerts, "")?;
    let log = bench.logs.join(format!("fimd-run-{files}.err"));
    let started = Instant::now();
    let daemon = Daemon::start(fimd, &config, log, READY_WITHIN)?;
    let ready_secs = started.elapsed().as_secs_f64();
    let kernel_kib = kernel_kib(&daemon.ready);
    let mut tail = Tail::open(&alerts)?;

    let target = tree.join("latency.conf");
    let want_path = target.to_string_lossy().into_owned();
    let mut latencies = Vec::with_capacity(changes);
    let mut missing = 0;
    for i in 0..changes {
        let len = 20 + i;
        let mut content = format!("change {i} ").into_bytes();
        content.resize(len - 1, b'.');
        content.push(b'\n');
        fs::write(&target, &content)?;
        let closed = Instant::now();
        let want = u64::try_from(len)?;
        let seen = tail.wait(ALERT_TIMEOUT, |v| {
            path_of(v) == Some(&want_path) && v.pointer("/file/size").and_then(Value::as_u64) == Some(want)
        })?;
        match seen {
            Some(t) => latencies.push(t.duration_since(closed)),
            None => {
                missing += 1;
                eprintln!("xtask: scale {files}: no alert for rewrite {i} within {ALERT_TIMEOUT:?}");
            }
        }
    }
    latencies.sort();

    let wide = if wide_case {
        Some(wide_creations(&daemon, &mut tail, &tree.join("wide-live"), port)?)
    } else {
        None
    };
    let rss_kib = daemon.peak_rss_kib()?;
    let lost = daemon.stop()?;
    if lost > 0 {
        eprintln!("xtask: scale {files}: fimd reported {lost} kernel events lost");
    }
    Ok(RunSample {
        ready_secs,
        rss_kib,
        kernel_kib,
        latencies,
        missing,
        wide,
    })
}

/// 100 creations per second for 10 s in the directory of 10,000 entries; counts their alerts.
fn wide_creations(daemon: &Daemon, tail: &mut Tail, dir: &Path, port: u16) -> anyhow::Result<Wide> {
    let total = WIDE_RATE * WIDE_SECS;
    let listings0 = listings(port);
    let cpu0 = daemon.cpu_secs()?;
    let started = Instant::now();
    let mut names = std::collections::HashMap::new();
    let mut alerted = 0;
    let mut latencies = Vec::new();
    let mut count = |docs: Vec<Value>, names: &mut std::collections::HashMap<String, Instant>| {
        for d in docs {
            if d.pointer("/event/action").and_then(Value::as_str) == Some("created")
                && let Some(p) = path_of(&d)
                && let Some(at) = names.remove(p)
            {
                alerted += 1;
                latencies.push(at.elapsed());
            }
        }
    };
    for i in 0..total {
        let path = dir.join(format!("new-{i:05}"));
        fs::write(&path, format!("new {i}\n"))?;
        names.insert(path.to_string_lossy().into_owned(), Instant::now());
        let due = started + Duration::from_millis(i * 1000 / WIDE_RATE);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        count(tail.lines()?.0, &mut names);
    }
    let deadline = Instant::now() + ALERT_TIMEOUT;
    while !names.is_empty() && Instant::now() < deadline {
        tail.block(Duration::from_millis(5));
        count(tail.lines()?.0, &mut names);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort();
    let listings = listings0
        .zip(listings(port))
        .map(|((l0, p0), (l, p))| (l - l0, p - p0));
    Ok(Wide {
        listings,
        created: total,
        alerted,
        latencies,
        secs,
        fimd_cpu: daemon.cpu_secs()? - cpu0,
    })
}

/// `fim_directory_listings_total` for `listed` and `paced` from fimd's /metrics on `port`;
/// `None` when it does not answer or has no such family (a fimd before it).
fn listings(port: u16) -> Option<(f64, f64)> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        c,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    c.read_to_string(&mut text).ok()?;
    let value = |outcome: &str| -> Option<f64> {
        let series = format!("fim_directory_listings_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))?
            .trim()
            .parse()
            .ok()
    };
    Some((value("listed")?, value("paced")?))
}

fn path_of(v: &Value) -> Option<&str> {
    v.pointer("/file/path")?.as_str()
}

/// N of `… (N KiB of kernel maps); ready`.
fn kernel_kib(ready: &str) -> Option<u64> {
    let end = ready.find(" KiB of kernel maps")?;
    ready[..end].rsplit('(').next()?.parse().ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i].as_secs_f64() * 1e3)
}

/// Milliseconds with two decimals, or "-".
fn ms(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.2}"))
}

fn ratio(fimd: f64, aide: f64) -> String {
    if fimd > 0.0 && aide > 0.0 {
        format!("{:.1}x", aide / fimd)
    } else {
        "-".into()
    }
}

fn print_report(aide_version: &str, rows: &[Row], changes: usize, fimd: &Path) {
    println!();
    println!("# bench scale: fimd vs {aide_version} on synthetic trees");
    println!();
    println!("fimd: {}", fimd.display());
    println!();
    println!("Each pair ran in this one run, AIDE first, with the tree in the page cache (just written).");
    println!("\"x\" is AIDE's figure over fimd's: above 1 fimd is faster or smaller.");
    println!();
    println!(
        "| files | entries | data GiB | step | AIDE s | fimd s | speed-up | AIDE peak RSS MB | fimd peak RSS MB | RSS ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    // A tool not run (`--no-aide`) measured nothing: "-".
    let or_dash = |v: f64, text: String| if v > 0.0 { text } else { "-".to_owned() };
    for r in rows {
        for (step, p) in [("init", &r.init), ("check", &r.check)] {
            println!(
                "| {} | {} | {:.2} | {step} | {} | {:.2} | {} | {} | {:.0} | {} |",
                r.files,
                r.entries,
                r.tree_bytes as f64 / (1u64 << 30) as f64,
                or_dash(p.aide.secs, format!("{:.2}", p.aide.secs)),
                p.fimd.secs,
                ratio(p.fimd.secs, p.aide.secs),
                or_dash(p.aide.rss_kib as f64, format!("{:.0}", mb(p.aide.rss_kib))),
                mb(p.fimd.rss_kib),
                ratio(p.fimd.rss_kib as f64, p.aide.rss_kib as f64),
            );
        }
    }
    println!();
    println!("`fimd run` (AIDE has no realtime mode): start to ready, peak RSS, kernel maps, and");
    println!("close()→alert of {changes} rewrites of one file while the whole tree is watched.");
    println!();
    println!(
        "| files | ready s | peak RSS MB | RSS per entry B | kernel maps MiB | p50 ms | p99 ms | max ms | missing |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let s = &r.run;
        println!(
            "| {} | {:.2} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
            r.files,
            s.ready_secs,
            mb(s.rss_kib),
            s.rss_kib as f64 * 1024.0 / r.entries.max(1) as f64,
            s.kernel_kib
                .map_or("-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0)),
            ms(percentile(&s.latencies, 0.50)),
            ms(percentile(&s.latencies, 0.99)),
            ms(s.latencies.last().map(|d| d.as_secs_f64() * 1e3)),
            s.missing,
        );
    }
    for r in rows {
        if let Some(w) = &r.run.wide {
            println!();
            println!(
                "Wide directory ({WIDE_ENTRIES} entries, {WIDE_RATE} creations/s for {WIDE_SECS} s, {} files watched): \
                 {}/{} creations alerted (creation to alert p50 {} ms, p99 {} ms, max {} ms); fimd CPU {:.2} s \
                 over {:.1} s = {:.1} % of one core; {}.",
                r.files,
                w.alerted,
                w.created,
                ms(percentile(&w.latencies, 0.50)),
                ms(percentile(&w.latencies, 0.99)),
                ms(w.latencies.last().map(|d| d.as_secs_f64() * 1e3)),
                w.fimd_cpu,
                w.secs,
                100.0 * w.fimd_cpu / w.secs.max(1e-9),
                w.listings
                    .map_or("directory listings not exported".to_owned(), |(l, p)| format!(
                        "{l:.0} directory listings, {p:.0} records paced"
                    )),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn counts_parse_with_decimal_suffixes_and_refuse_nonsense() {
        assert_eq!("100k".parse::<Count>().unwrap().0, 100_000);
        assert_eq!("2M".parse::<Count>().unwrap().0, 2_000_000);
        assert_eq!("1500".parse::<Count>().unwrap().0, 1_500);
        assert!("12".parse::<Count>().is_err());
        assert!("k".parse::<Count>().is_err());
        assert!("99999999999999999999M".parse::<Count>().is_err());
        assert_eq!(Count(2_000_000).to_string(), "2M");
        assert_eq!(Count(100_000).to_string(), "100k");
    }

    #[test]
    fn the_tree_has_the_files_asked_for_with_deep_and_wide_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        let made = build_tree(&root, 15_000, true).unwrap();
        // The files asked for, plus the latency file.
        assert_eq!(made.entries, 15_001);
        let mut files = 0;
        let mut deepest = 0;
        for e in walkdir(&root) {
            files += 1;
            deepest = deepest.max(e.components().count() - root.components().count());
        }
        assert_eq!(files, 15_001);
        assert!(deepest >= 40, "deepest file at depth {deepest}");
        assert_eq!(fs::read_dir(root.join("wide-live")).unwrap().count(), 10_000);
        assert_eq!(fs::read_dir(root.join("wide0")).unwrap().count(), 750);
    }

    fn walkdir(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }

    #[test]
    fn the_kernel_map_figure_is_read_from_the_ready_line() {
        let line = "fimd run: ebpf sensor attached (hooks: raw_tracepoint/ctime_ns_xchg), watching 138184 inodes \
                    (42472 KiB of kernel maps); ready";
        assert_eq!(kernel_kib(line), Some(42_472));
        assert_eq!(kernel_kib("fimd run: fanotify sensor attached; ready"), None);
    }
}
