//! `cargo xtask faults` (also run by `cargo xtask test`): injects faults into a running
//! `fimd run` while making real changes to its watched tree, then counts the changes that were
//! never alerted. Issue 12's "Done when": the daemon survives every fault, loses no change, and
//! stops within seconds of SIGTERM even while a writer holds a watched file's inode lock.
//!
//! Faults (each one a class from issue 12, with more than one member where the class has them):
//! - FIFOs planted in the watched tree (fimd must never open one);
//! - writers stuck inside write(2) on watched files, holding the inode lock: their source
//!   buffer is registered with userfaultfd and never filled (the stalled-FUSE-buffer case,
//!   without FUSE); the barrier's llseek would block on that lock;
//! - a large sparse file rewritten every 200 ms while unrelated files change (each of those
//!   alerts must come quickly, not after a rehash of the large file);
//! - writers killed with SIGKILL in the middle of rewriting watched files;
//! - a FUSE filesystem that never answers, mounted inside the watched tree (its mount point
//!   must be asked with a deadline, never entered while it hangs);
//! - `state_dir` on a small tmpfs filled to the last byte (disk full);
//! - another process holding an exclusive lock on the baseline database;
//! - SIGTERM while a writer is stuck (the daemon must stop within `STOP_WITHIN`; on ext4 and
//!   XFS it must also be reaped while the writer is still stuck);
//! - a FUSE filesystem that answers and then hangs (reads, listings, stats; `faults/fusefs.rs`),
//!   inside a watch that enters it, during `fimd check`, the daemon's start-up comparison and
//!   a realtime look (`faults/hang.rs`): an unrelated change's alert, `/healthz`, the report of
//!   the hung path and SIGTERM are measured, and the watchdog's forced exit (bound, status 2,
//!   message) is checked where it has to act. `FIMD_FAULTS_SKIP_HUNG=1` skips these cases,
//!   `FIMD_FAULTS_ONLY_HUNG=1` runs only them.
//!
//! `FIMD_FAULTS_FULL_CHECK=1` runs, instead, a measurement (`faults/fullcheck.rs`): an
//! unrelated change's alert latency during a scheduled full comparison of a 3 GiB tree.
//!
//! Needs root (the kernel sensor, mount, userfaultfd for kernel-mode faults).
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

mod fullcheck;
mod fuse;
mod fusefs;
mod hang;
mod stuck;
use fuse::HungMount;
use stuck::StuckWriter;

/// How long `fimd run` may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(120);
/// How long a change may take to be alerted while faults are going on (an alert later than
/// this is counted slow; one missing at the end is counted lost).
const ALERT_WITHIN: Duration = Duration::from_secs(10);
/// How long the busy large file's own alert may take: it is rehashed at most once per 5 s
/// (`daemon::blocking::BUSY_FILE_SETTLE`), and a rehash of it takes seconds (more in a debug
/// build on a loaded machine).
const LARGE_WITHIN: Duration = Duration::from_secs(60);
/// How long every alert may take to arrive once the faults are released.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// How long the daemon may take to stop after SIGTERM, in every state.
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// The large sparse file's size (bytes): a full read of it takes seconds.
const BIG: u64 = 4 << 30;

const CONFIG: &str = r#"# fault suite
state_dir = "{DIR}/state"

[[watch]]
path = "{DIR}/tree"
policy = "static"

[alerts]
jsonl = "{DIR}/alerts.jsonl"
"#;

/// One real change and what became of it.
struct Change {
    path: PathBuf,
    action: &'static str,
    made: Instant,
    alerted: Option<Duration>,
    /// Later than this is late.
    within: Duration,
}

/// The suite's counts, printed at the end.
#[derive(Default)]
struct Tally {
    faults: usize,
    changes: Vec<Change>,
}

impl Tally {
    fn fault(&mut self, what: &str) {
        self.faults += 1;
        eprintln!("faults: [{}] {what}", self.faults);
    }

    fn change(&mut self, path: &Path, action: &'static str) {
        self.changes.push(Change {
            path: path.to_owned(),
            action,
            made: Instant::now(),
            alerted: None,
            within: ALERT_WITHIN,
        });
    }
}

/// `fimd run` as a child, its stderr in a file.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!(
                "fimd run exited ({st}) under the faults; its log:\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            // Never a blocking wait: a thread of fimd's stuck in the kernel (a hung mount)
            // would hold the suite too. What is not reaped in 5 s is left to init.
            let until = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A tmpfs mounted for the suite, unmounted (lazily: a stuck user must not hang us) at the end.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Children killed at the end whatever happened.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the suite with `fimd` (built in release when `None`).
pub fn run(fimd: Option<PathBuf>) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the fault suite needs root (the kernel sensor, mount, userfaultfd)");
    }
    let fimd = match fimd {
        Some(p) => p,
        None => crate::build_fimd()?,
    };
    if std::env::var_os("FIMD_FAULTS_FULL_CHECK").is_some() {
        // The measurement of alert latency during a scheduled full comparison, alone.
        return fullcheck::run(&fimd);
    }
    if std::env::var_os("FIMD_FAULTS_ONLY_HUNG").is_some() {
        // Only the hung-mount cases (while working on them).
        let mut t = Tally::default();
        let hung = hang::run(&fimd, &mut t)?;
        for o in &hung {
            eprintln!("faults: hung mount, {}", o.line());
        }
        return Ok(());
    }
    let dir = tempfile::Builder::new().prefix("fimd-faults-").tempdir()?;
    let d = dir.path();
    let tree = d.join("tree");
    fs::create_dir_all(&tree)?;
    for name in [
        "stuck.txt",
        "stuck2.txt",
        "quiet-1.txt",
        "quiet-2.txt",
        "locked.txt",
        "sigterm.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain((0..3).map(|i| format!("killed-{i}.txt")))
    .chain((0..4).map(|i| format!("busy-{i}.txt")))
    {
        fs::write(tree.join(&name), format!("{name}: baseline content\n"))?;
    }
    let big = fs::File::create(tree.join("big.img"))?;
    big.set_len(BIG)?;
    big.write_all_at(b"head", 0)?;
    big.write_all_at(b"tail", BIG - 4)?;
    drop(big);
    let state = d.join("state");
    fs::create_dir_all(&state)?;
    crate::run_cmd(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m,mode=0700", "fimd-faults"])
            .arg(&state),
    )?;
    let _mount = Mount(state.clone());
    let config = d.join("fimd.toml");
    fs::write(&config, CONFIG.replace("{DIR}", &d.display().to_string()))?;
    let status = Command::new(&fimd).arg("-c").arg(&config).arg("init").status()?;
    if !status.success() {
        bail!("fimd init failed: {status}");
    }
    let mut daemon = start(&fimd, &config, d)?;
    let mut t = Tally::default();
    let mut children = Children(Vec::new());
    let alerts = d.join("alerts.jsonl");

    // 1. FIFOs planted in the tree, one with a writer waiting on it: never opened by fimd.
    for i in 0..2 {
        let fifo = tree.join(format!("fifo-{i}"));
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())?;
        // SAFETY: a valid path.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o644) } != 0 {
            bail!("mkfifo {}: {}", fifo.display(), std::io::Error::last_os_error());
        }
        t.fault(&format!("FIFO planted in the watch: {}", fifo.display()));
        t.change(&fifo, "created");
    }
    children.0.push(
        Command::new("sh")
            .arg("-c")
            .arg(format!("echo x > {}", tree.join("fifo-1").display()))
            .spawn()?,
    );
    let after = tree.join("after-fifo.txt");
    fs::write(&after, "made after the FIFOs\n")?;
    t.change(&after, "created");
    wait_alerts(&alerts, &mut t, ALERT_WITHIN)?;
    daemon.alive()?;

    // 2. Writers stuck in write(2) holding the inode lock; other files change meanwhile.
    let stuck1 = StuckWriter::start(&tree.join("stuck.txt")).context("a stuck writer")?;
    t.fault("a writer stuck inside write(2) on stuck.txt (userfaultfd source buffer)");
    std::thread::sleep(Duration::from_millis(500));
    for i in 1..=2 {
        let p = tree.join(format!("quiet-{i}.txt"));
        fs::write(&p, format!("changed while a writer is stuck ({i})\n"))?;
        t.change(&p, "updated");
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_alerts(&alerts, &mut t, ALERT_WITHIN)?;
    daemon.alive()?;

    // 3. A large sparse file rewritten every 200 ms; unrelated files change meanwhile.
    t.fault(&format!("a {} GiB sparse file rewritten every 200 ms", BIG >> 30));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let toucher = {
        let stop = stop.clone();
        let path = tree.join("big.img");
        std::thread::spawn(move || -> std::io::Result<()> {
            let f = fs::OpenOptions::new().write(true).open(path)?;
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                f.write_all_at(&n.to_le_bytes(), (n * 7919 * 4096) % (BIG - 8))?;
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(())
        })
    };
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(1500));
        let p = tree.join(format!("busy-{i}.txt"));
        fs::write(&p, format!("changed while the large file is busy ({i})\n"))?;
        t.change(&p, "updated");
    }
    wait_alerts(&alerts, &mut t, ALERT_WITHIN)?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    toucher.join().expect("the toucher thread")?;
    t.change(&tree.join("big.img"), "updated");
    if let Some(c) = t.changes.last_mut() {
        c.within = LARGE_WITHIN;
    }
    daemon.alive()?;

    // 4. Writers killed with SIGKILL while rewriting watched files.
    let mut writers = Vec::new();
    for i in 0..3 {
        let p = tree.join(format!("killed-{i}.txt"));
        writers.push(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "i=0; while :; do echo \"$i\" > {}; i=$((i+1)); done",
                    p.display()
                ))
                .spawn()?,
        );
        t.change(&p, "updated");
    }
    std::thread::sleep(Duration::from_millis(700));
    for w in &mut writers {
        w.kill()?;
        w.wait()?;
        t.fault("a writer killed with SIGKILL while rewriting its file");
    }
    daemon.alive()?;

    // 4b. A FUSE mount that never answers, inside the watch; changes next to it.
    let hung_dir = tree.join("hung");
    fs::create_dir(&hung_dir)?;
    t.change(&hung_dir, "created");
    wait_alerts(&alerts, &mut t, ALERT_WITHIN)?;
    let hung = HungMount::mount(&hung_dir)?;
    t.fault("a FUSE filesystem that never answers, mounted inside the watch");
    for i in 0..2 {
        let p = tree.join(format!("beside-hung-{i}.txt"));
        fs::write(&p, "made next to a hung mount\n")?;
        t.change(&p, "created");
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_alerts(&alerts, &mut t, ALERT_WITHIN)?;
    daemon.alive()?;

    // 5. Disk full on state_dir.
    let filler = state.join("filler");
    fill(&filler)?;
    t.fault("state_dir's filesystem filled to the last byte");
    for i in 0..2 {
        let p = tree.join(format!("diskfull-{i}.txt"));
        fs::write(&p, "made while the state store is full\n")?;
        t.change(&p, "created");
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_alerts(&alerts, &mut t, ALERT_WITHIN)?;
    daemon.alive()?;
    fs::remove_file(&filler)?;

    // 6. The baseline database locked by another process.
    let db = state.join("baseline.db");
    let mut locker = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(600)",
        )
        .arg(&db)
        .stdout(Stdio::piped())
        .spawn()
        .context("python3 (sqlite3) to lock the database")?;
    let mut line = String::new();
    BufReader::new(locker.stdout.take().context("locker stdout")?).read_line(&mut line)?;
    if line.trim() != "locked" {
        bail!("could not lock {}: {line:?}", db.display());
    }
    children.0.push(locker);
    t.fault("the baseline database held under an exclusive lock by another process");
    let p = tree.join("locked.txt");
    fs::write(&p, "changed while the database is locked\n")?;
    t.change(&p, "updated");
    let p = tree.join("locked-new.txt");
    fs::write(&p, "made while the database is locked\n")?;
    t.change(&p, "created");
    wait_alerts(&alerts, &mut t, ALERT_WITHIN)?;
    daemon.alive()?;
    for c in &mut children.0 {
        let _ = c.kill();
        let _ = c.wait();
    }

    // Release the first stuck writer: its own change must be alerted too.
    stuck1.release()?;
    t.change(&tree.join("stuck.txt"), "updated");
    wait_alerts(&alerts, &mut t, SETTLE_WITHIN)?;
    daemon.alive()?;

    // 7. SIGTERM while a writer is stuck holding a watched file's inode lock.
    let stuck2 = StuckWriter::start(&tree.join("stuck2.txt")).context("a second stuck writer")?;
    t.fault("SIGTERM while a writer is stuck inside write(2) on a watched file");
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(daemon.child.id() as libc::pid_t, libc::SIGTERM) };
    let asked = Instant::now();
    // On ext4 and XFS the barrier asks whether a writer holds the lock without waiting for it
    // (monitor/src/daemon/blocking.rs `probe`), so no thread of fimd's sleeps on the lock and
    // the process must be reaped while the writer is still stuck. Elsewhere (tmpfs, btrfs) the
    // barrier waits on the lock: a thread inside that wait sleeps uninterruptibly (D state) and
    // cannot end before the lock is released, so there the main thread's exit (a zombie
    // leader) counts as stopped, and the kernel reaps the process once the writer lets go.
    let reap_while_stuck = nowait_lock_fs(&tree);
    let leader_exited = |pid: u32| {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
    };
    let mut stopped = None;
    let mut exited = false;
    while asked.elapsed() <= STOP_WITHIN {
        if let Some(st) = daemon.child.try_wait()? {
            stopped = Some(st);
            break;
        }
        if !reap_while_stuck && leader_exited(daemon.child.id()) {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop_took = asked.elapsed();
    drop(hung);
    if stopped.is_none() {
        let pid = daemon.child.id();
        let threads: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten()
                    .filter_map(|t| fs::read_to_string(t.path().join("stat")).ok())
                    .map(|s| {
                        s.split(") ")
                            .nth(1)
                            .unwrap_or("")
                            .chars()
                            .next()
                            .unwrap_or('?')
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default();
        eprintln!("faults: after SIGTERM, fimd's threads are in states {threads:?} (main thread first)");
    }
    let barrier_deferred = fs::read_to_string(&daemon.log)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("stuck2.txt") && l.contains("did not finish within"));
    stuck2.release()?;
    if exited {
        // Released: the kernel reaps it now.
        let until = Instant::now() + STOP_WITHIN;
        while stopped.is_none() && Instant::now() < until {
            stopped = daemon.child.try_wait()?;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let kept = std::env::temp_dir().join("fimd-faults.log");
    let _ = fs::copy(&daemon.log, &kept);
    eprintln!("faults: fimd's log is kept in {}", kept.display());

    // 8. Mounts that hang after answering: `check`, the start-up comparison, a realtime look.
    //    FIMD_FAULTS_SKIP_HUNG skips them.
    let hung = if std::env::var_os("FIMD_FAULTS_SKIP_HUNG").is_some() {
        eprintln!("faults: the hung-mount cases are skipped (FIMD_FAULTS_SKIP_HUNG)");
        Vec::new()
    } else {
        hang::run(&fimd, &mut t)?
    };

    let lost: Vec<&Change> = t.changes.iter().filter(|c| c.alerted.is_none()).collect();
    let slow: Vec<&Change> = t
        .changes
        .iter()
        .filter(|c| c.alerted.is_some_and(|a| a > c.within))
        .collect();
    let slowest = t
        .changes
        .iter()
        .filter_map(|c| c.alerted)
        .max()
        .unwrap_or_default();
    eprintln!(
        "\nfaults: {} faults injected, {} changes made, {} changes lost, {} alerted later than {:?} \
         ({:?} for the busy large file itself; slowest {:.2} s); SIGTERM stopped the daemon in {:.2} s",
        t.faults,
        t.changes.len(),
        lost.len(),
        slow.len(),
        ALERT_WITHIN,
        LARGE_WITHIN,
        slowest.as_secs_f64(),
        stop_took.as_secs_f64()
    );
    for o in &hung {
        eprintln!("faults: hung mount, {}", o.line());
    }
    let watchdog: Vec<bool> = hung.iter().filter_map(|o| o.watchdog_ok).collect();
    if !hung.is_empty() {
        eprintln!(
            "faults: the watchdog forced {} exits, {} of them within its bound with status 2 and its message",
            watchdog.len(),
            watchdog.iter().filter(|ok| **ok).count()
        );
    }
    for c in &lost {
        eprintln!("faults: lost: {} {}", c.action, c.path.display());
    }
    for c in &slow {
        eprintln!(
            "faults: slow: {} {} after {:?}",
            c.action,
            c.path.display(),
            c.alerted.unwrap_or_default()
        );
    }
    if reap_while_stuck {
        eprintln!(
            "faults: the tree is on ext4/XFS: fimd was {} while the writer was still stuck",
            if stopped.is_some() { "reaped" } else { "NOT reaped" }
        );
        if stopped.is_none() {
            bail!("fimd run was not reaped within {STOP_WITHIN:?} of SIGTERM while a writer was stuck");
        }
    }
    if !barrier_deferred {
        bail!("fimd run never deferred stuck2.txt's barrier: the stuck writer was not seen holding the file");
    }
    if !exited && stopped.is_none() {
        bail!("fimd run did not stop within {STOP_WITHIN:?} of SIGTERM while a writer was stuck");
    }
    match stopped {
        Some(st) if st.success() => {}
        Some(st) => bail!("fimd run stopped with {st} after SIGTERM"),
        None => bail!("fimd run exited on SIGTERM but was not reaped once the stuck writer was released"),
    }
    let hung_failed = hung.iter().filter(|o| !o.problems.is_empty()).count();
    if hung_failed > 0 {
        bail!(
            "{hung_failed} of {} hung-mount cases failed (see above)",
            hung.len()
        );
    }
    if !lost.is_empty() || !slow.is_empty() {
        bail!(
            "{} changes lost and {} alerted late under faults; fimd's log:\n{}",
            lost.len(),
            slow.len(),
            fs::read_to_string(&daemon.log).unwrap_or_default()
        );
    }
    Ok(())
}

/// Whether `path` is on ext4 or XFS, whose direct reads answer "locked" without waiting
/// (magic numbers from include/uapi/linux/magic.h).
fn nowait_lock_fs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string and a zeroed statfs the call fills.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    [0xEF53u64, 0x5846_5342].contains(&(st.f_type as u64))
}

/// Writes `template` as `d/fimd.toml` with `{DIR}` replaced by `d` and `{PORT}` by a free
/// local port (for `[metrics] listen`); returns the file and the port.
fn write_config(d: &Path, template: &str) -> anyhow::Result<(PathBuf, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = d.join("fimd.toml");
    fs::write(
        &config,
        template
            .replace("{DIR}", &d.display().to_string())
            .replace("{PORT}", &port.to_string()),
    )?;
    Ok((config, port))
}

/// Starts `fimd run` with its stderr in `log`, without waiting for it.
fn spawn(fimd: &Path, config: &Path, log: PathBuf) -> anyhow::Result<Daemon> {
    let child = Command::new(fimd)
        .arg("-c")
        .arg(config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {} run", fimd.display()))?;
    Ok(Daemon { child, log })
}

/// Starts `fimd run` and waits for its ready line.
fn start(fimd: &Path, config: &Path, d: &Path) -> anyhow::Result<Daemon> {
    let mut daemon = spawn(fimd, config, d.join("fimd.log"))?;
    let started = Instant::now();
    while !fs::read_to_string(&daemon.log)?
        .lines()
        .any(|l| l.ends_with("; ready"))
    {
        daemon.alive()?;
        if started.elapsed() > READY_WITHIN {
            bail!("fimd run was not ready within {READY_WITHIN:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(daemon)
}

/// Waits up to `within` for an alert on every change not alerted yet, noting when each came.
fn wait_alerts(alerts: &Path, t: &mut Tally, within: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + within;
    loop {
        let text = fs::read_to_string(alerts).unwrap_or_default();
        let docs: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let now = Instant::now();
        for c in t.changes.iter_mut().filter(|c| c.alerted.is_none()) {
            let path = c.path.to_string_lossy();
            let seen = docs.iter().any(|a| {
                a["file"]["path"] == path.as_ref()
                    && a["event"]["action"] == c.action
                    && a["event"]["kind"] == "alert"
            });
            if seen {
                c.alerted = Some(now - c.made);
            }
        }
        if t.changes.iter().all(|c| c.alerted.is_some()) || now > until {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `path` until its filesystem is full.
fn fill(path: &Path) -> anyhow::Result<()> {
    let mut f = fs::File::create(path)?;
    let chunk = vec![0xffu8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e).with_context(|| format!("filling {}", path.display())),
        }
    }
    // The last bytes, one at a time.
    while let Ok(1) = f.write(&chunk[..1]) {}
    Ok(())
}
