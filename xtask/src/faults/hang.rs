//! Mounts that hang after answering (issue 12 §2): a FUSE filesystem inside a watch
//! (`one_filesystem = false`, so it is entered) answers the mount point's stat, its first
//! lookups and listings, then stops answering reads, listings or stats (`fusefs`). Three
//! moments, each one case: `fimd check`; the daemon's start-up full comparison; a realtime
//! record's look at a directory on the mount. In each, an unrelated change's alert must arrive
//! (its latency measured), `/healthz` must answer, the hung path must be reported, and SIGTERM
//! must end the process within seconds; a daemon that cannot stop by itself must be ended by
//! its watchdog (`monitor/src/daemon/stop.rs`) within its bound, with exit status 2 and a
//! message saying so.
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::fusefs::{FuseFs, HANG_READ, HANG_READDIR, HANG_STAT};
use super::{ALERT_WITHIN, Daemon, STOP_WITHIN, Tally, wait_alerts};

/// How long `fimd check` may take with a hung mount in its watch before it is stopped.
const CHECK_WITHIN: Duration = Duration::from_secs(30);
/// How long the daemon may take to be ready with a hung mount in its watch.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// The watchdog's bound: `SHUTDOWN_FLUSH` + `STOP_SLACK` (monitor/src/daemon/serve.rs).
const WATCHDOG: Duration = Duration::from_secs(8);
/// What a forced exit may take past the watchdog's bound (scheduling on a loaded machine).
const WATCHDOG_MARGIN: Duration = Duration::from_secs(2);
/// `stop::FORCED_EXIT`.
const FORCED_EXIT: i32 = 2;

const CONFIG: &str = r#"# fault suite: mounts that hang after answering
state_dir = "{DIR}/state"

[[watch]]
path = "{DIR}/tree"
policy = "static"

[[watch]]
path = "{DIR}/mnt"
policy = "static"
one_filesystem = false

[alerts]
jsonl = "{DIR}/alerts.jsonl"

[metrics]
listen = "127.0.0.1:{PORT}"
"#;

/// What one case measured.
pub(super) struct Outcome {
    pub case: &'static str,
    /// The unrelated change's alert latency (None: never within `ALERT_WITHIN`).
    pub alert: Option<Duration>,
    /// `/healthz`'s answer (status line, or why none).
    pub healthz: String,
    /// Whether the hung mount's path appeared in what the process said.
    pub reported: bool,
    /// From SIGTERM (or, for `check`, from its start when it ended by itself) to the exit.
    pub stop: Option<Duration>,
    pub status: Option<i32>,
    /// The main thread exited but the process could not be reaped until the mount answered.
    pub unreaped: bool,
    pub forced: bool,
    /// The watchdog's contract held: it ended the process within its bound plus a margin,
    /// with status 2 and a message saying it forced the exit (None: it did not act).
    pub watchdog_ok: Option<bool>,
    pub problems: Vec<String>,
}

impl Outcome {
    fn new(case: &'static str) -> Outcome {
        Outcome {
            case,
            alert: None,
            healthz: String::new(),
            reported: false,
            stop: None,
            status: None,
            unreaped: false,
            forced: false,
            watchdog_ok: None,
            problems: Vec::new(),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "{}: unrelated alert {}, /healthz {:?}, hung path reported: {}, stopped in {} (status {}{}{}){}",
            self.case,
            match (self.case.starts_with("check"), self.alert) {
                (true, _) => "n/a (one-shot)".to_string(),
                (false, None) => "NEVER".to_string(),
                (false, Some(a)) => format!("after {:.2} s", a.as_secs_f64()),
            },
            self.healthz.trim(),
            self.reported,
            self.stop
                .map_or("NEVER".to_string(), |s| format!("{:.2} s", s.as_secs_f64())),
            self.status.map_or("none".to_string(), |s| s.to_string()),
            if self.forced {
                ", forced by the watchdog"
            } else {
                ""
            },
            if self.unreaped {
                ", not reaped until the mount answered"
            } else {
                ""
            },
            if self.problems.is_empty() {
                String::new()
            } else {
                format!(" -- FAILED: {}", self.problems.join("; "))
            }
        )
    }
}

/// Runs the three cases; their changes go into `t`. Returns what each measured.
pub(super) fn run(fimd: &Path, t: &mut Tally) -> anyhow::Result<Vec<Outcome>> {
    let dir = tempfile::Builder::new().prefix("fimd-hang-").tempdir()?;
    let d = dir.path();
    let tree = d.join("tree");
    fs::create_dir_all(&tree)?;
    for i in 0..4 {
        fs::write(tree.join(format!("t-{i}.txt")), format!("t-{i}: baseline\n"))?;
    }
    let mount = d.join("mnt/fuse");
    fs::create_dir_all(&mount)?;
    fs::create_dir_all(d.join("state"))?;
    let fuse = FuseFs::mount(&mount).context("the answering FUSE filesystem")?;
    let (config, port) = super::write_config(d, CONFIG)?;
    let status = Command::new(fimd).arg("-c").arg(&config).arg("init").status()?;
    if !status.success() {
        bail!("fimd init (hung mounts) failed: {status}");
    }
    let alerts = d.join("alerts.jsonl");
    let hung_text = mount.display().to_string();
    let site = Site {
        alerts: alerts.clone(),
        port,
        hung_text: hung_text.clone(),
    };
    let mut out = Vec::new();

    // 1. `fimd check` while reads on the mount hang.
    fuse.hang(HANG_READ);
    t.fault("a FUSE mount inside a watch that hangs on read after answering, during fimd check");
    let mut o = Outcome::new("check, reads hang");
    let log = d.join("check.log");
    let started = Instant::now();
    let mut check = Command::new(fimd)
        .arg("-c")
        .arg(&config)
        .arg("check")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log)?)
        .stderr(fs::File::create(d.join("check.err"))?)
        .spawn()?;
    let ended = wait_exit(&mut check, CHECK_WITHIN)?;
    match ended {
        Some(st) => {
            o.stop = Some(started.elapsed());
            o.status = st.code();
        }
        None => {
            o.problems
                .push(format!("did not finish within {CHECK_WITHIN:?} by itself"));
            stop(&mut o, &mut check, &fuse)?;
        }
    }
    let said = fs::read_to_string(&log).unwrap_or_default()
        + &fs::read_to_string(d.join("check.err")).unwrap_or_default();
    o.reported = said.contains(&hung_text);
    if !o.reported {
        o.problems.push("the hung path was not reported".into());
    }
    o.healthz = "n/a (one-shot)".into();
    if fuse.held() == 0 {
        bail!("fimd check never reached the hung mount: the case proves nothing");
    }
    // `check` is one-shot: the unrelated change is the daemon's, in the next cases.
    fuse.release();
    out.push(o);

    // 2. The daemon's start-up full comparison while listings on the mount hang.
    fuse.hang(HANG_READDIR);
    t.fault(
        "a FUSE mount inside a watch that hangs on getdents after answering, during the start-up comparison",
    );
    let mut o = Outcome::new("start-up comparison, listings hang");
    let mut daemon = super::spawn(fimd, &config, d.join("fimd-startup.log"))?;
    let ready = wait_log(&daemon.log, "; ready", READY_WITHIN);
    if !ready {
        o.problems.push(format!("not ready within {READY_WITHIN:?}"));
    }
    daemon_case(&mut o, &mut daemon, &fuse, t, &tree.join("t-0.txt"), &site)?;
    out.push(o);

    // 3. A realtime record's look at a directory on the mount, which hangs from the moment a
    //    file is created there (listings and stats).
    let mut o = Outcome::new("realtime look, listings and stats hang");
    let mut daemon = super::spawn(fimd, &config, d.join("fimd-look.log"))?;
    if !wait_log(&daemon.log, "; ready", READY_WITHIN) {
        bail!("fimd run (hung mounts, look case) was not ready within {READY_WITHIN:?}");
    }
    // The case is about a look that reaches the mount: it must have asked something since the
    // create. Counted before it: the daemon asks a mount that stopped answering once and then
    // not again until it answers, so a look faster than this thread would go unseen after.
    let before = fuse.held();
    fuse.hang_after_create(HANG_READDIR | HANG_STAT);
    fs::write(mount.join("sub/new.txt"), b"")?;
    t.fault(
        "a FUSE mount inside a watch that hangs on getdents and stat after a create, during a realtime look",
    );
    let until = Instant::now() + Duration::from_secs(15);
    while fuse.held() == before && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    if fuse.held() == before {
        o.problems
            .push("the realtime look never reached the hung mount within 15 s of the create".into());
    }
    daemon_case(&mut o, &mut daemon, &fuse, t, &tree.join("t-1.txt"), &site)?;
    out.push(o);
    drop(fuse);
    Ok(out)
}

/// Where the cases' daemon writes and listens, and the hung mount's path as printed.
struct Site {
    alerts: PathBuf,
    port: u16,
    hung_text: String,
}

/// The daemon's part of a case: an unrelated change, `/healthz`, the report, SIGTERM.
fn daemon_case(
    o: &mut Outcome,
    daemon: &mut Daemon,
    fuse: &FuseFs,
    t: &mut Tally,
    unrelated: &Path,
    site: &Site,
) -> anyhow::Result<()> {
    fs::write(unrelated, format!("changed while a mount hangs ({})\n", o.case))?;
    t.change(unrelated, "updated");
    wait_alerts(&site.alerts, t, ALERT_WITHIN)?;
    o.alert = t.changes.last().and_then(|c| c.alerted);
    if o.alert.is_none() {
        o.problems.push("the unrelated change was not alerted".into());
    }
    // Answered at all, within 2 s: a 503 (the loop does not turn) is a truthful answer.
    o.healthz = healthz(site.port);
    if !o.healthz.starts_with("HTTP/") {
        o.problems.push("/healthz did not answer".into());
    }
    o.reported = fs::read_to_string(&daemon.log)
        .unwrap_or_default()
        .contains(&site.hung_text);
    if !o.reported {
        o.problems.push("the hung path was not reported".into());
    }
    stop(o, &mut daemon.child, fuse)?;
    let (took, st) = (o.stop, o.status);
    o.forced = fs::read_to_string(&daemon.log)
        .unwrap_or_default()
        .contains("exiting now");
    if let Some(took) = took {
        if o.forced {
            // The watchdog's own contract: within its bound, status 2, and it says so.
            o.watchdog_ok = Some(took <= WATCHDOG + WATCHDOG_MARGIN && st == Some(FORCED_EXIT));
            if o.watchdog_ok == Some(false) {
                o.problems.push(format!(
                    "the watchdog's exit took {took:?} (bound {WATCHDOG:?} + {WATCHDOG_MARGIN:?}) with status {st:?} (expected {FORCED_EXIT})"
                ));
            }
        } else if st != Some(0) {
            o.problems.push(format!("stopped with status {st:?}"));
        }
    }
    let kept = std::env::temp_dir().join(format!(
        "fimd-hang-{}.log",
        o.case.split(',').next().unwrap_or("case").replace(' ', "-")
    ));
    let _ = fs::copy(&daemon.log, &kept);
    Ok(())
}

fn wait_log(log: &PathBuf, what: &str, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if fs::read_to_string(log).unwrap_or_default().contains(what) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn wait_exit(child: &mut Child, within: Duration) -> anyhow::Result<Option<std::process::ExitStatus>> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(None)
}

/// SIGTERM, then waits up to `STOP_WITHIN` for the main thread to exit; then releases the
/// mount (its held requests answered with EIO) and reaps the process. Notes in `o` how long
/// the exit took, the status, and whether the process could be reaped before the release.
fn stop(o: &mut Outcome, child: &mut Child, fuse: &FuseFs) -> anyhow::Result<()> {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let asked = Instant::now();
    let pid = child.id();
    // The main thread's exit: reaped, or a zombie leader whose other threads still wait.
    let leader_exited = || {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
    };
    let mut reaped = None;
    let mut exited = None;
    while asked.elapsed() <= STOP_WITHIN {
        if let Some(st) = child.try_wait()? {
            reaped = Some(st);
            exited = Some(asked.elapsed());
            break;
        }
        if exited.is_none() && leader_exited() {
            exited = Some(asked.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    o.stop = exited;
    if reaped.is_none() {
        eprintln!(
            "faults: {}: after SIGTERM, fimd's threads: {}",
            o.case,
            threads(pid)
        );
    }
    if exited.is_none() {
        o.problems
            .push(format!("did not stop within {STOP_WITHIN:?} of SIGTERM"));
    } else if reaped.is_none() {
        // Reported, not failed: a thread inside a FUSE request the server has read cannot end
        // before the server answers, whatever the process does (fs/fuse/dev.c
        // `request_wait_answer`), so no in-process fix can make it reapable.
        o.unreaped = true;
    }
    fuse.release();
    if reaped.is_none() {
        reaped = wait_exit(child, STOP_WITHIN)?;
    }
    if reaped.is_none() {
        let _ = child.kill();
        reaped = wait_exit(child, STOP_WITHIN)?;
    }
    o.status = reaped.and_then(|st| st.code());
    Ok(())
}

/// Each thread of `pid` as `name:state:wchan`, for the report.
fn threads(pid: u32) -> String {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return "gone".into();
    };
    let mut out: Vec<String> = dir
        .flatten()
        .map(|t| {
            let read = |f: &str| fs::read_to_string(t.path().join(f)).unwrap_or_default();
            let stat = read("stat");
            let state = stat.rsplit_once(") ").map_or("?", |(_, r)| &r[..1]).to_string();
            // FIMD_FAULTS_STACKS=1: each thread's kernel stack and, for a path call, its path.
            let stack = if std::env::var_os("FIMD_FAULTS_STACKS").is_some() {
                let sc = read("syscall");
                let path = sc
                    .split(' ')
                    .nth(2)
                    .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
                    .and_then(|addr| {
                        use std::os::unix::fs::FileExt;
                        let f = fs::File::open(format!("/proc/{pid}/mem")).ok()?;
                        let mut b = vec![0u8; 256];
                        f.read_at(&mut b, addr).ok()?;
                        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                        Some(String::from_utf8_lossy(&b[..end]).into_owned())
                    })
                    .unwrap_or_default();
                format!("[{sc} {path}]")
            } else {
                String::new()
            };
            format!(
                "{}:{}:{}{stack}",
                read("comm").trim(),
                state,
                read("wchan").trim()
            )
        })
        .collect();
    out.sort();
    out.join(" ")
}

/// `GET /healthz` with a 2 s deadline: the status line, or why there is none.
fn healthz(port: u16) -> String {
    let run = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(2),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text.lines().next().unwrap_or("").to_string() + " ")
    };
    run().unwrap_or_else(|e| format!("no answer: {e}"))
}
