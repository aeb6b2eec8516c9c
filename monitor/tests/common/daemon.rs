//! The one `fimd run` harness of the tests: start it on a fixture (directly or under a wrapper
//! such as `unshare`, `setpriv` or `strace`), wait for its log lines and alerts, signal and stop
//! it. Only the binary's external behaviour is used: its stderr, its JSON-lines alert file and
//! its exit status.
//!
//! Its stderr goes to a file, not a pipe: whatever fimd wrote before it did something else
//! observable (an sd_notify datagram, an alert) is in the file by then, so a test can order
//! the two without a reader thread racing it.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Fixture;

/// How long a daemon gets to say it is ready: loading the eBPF programs and the first full
/// comparison take seconds on a loaded machine.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long a log line the test caused gets to appear.
const LOG_WITHIN: Duration = Duration::from_secs(30);
/// How long an alert the test caused gets to appear.
const ALERT_WITHIN: Duration = Duration::from_secs(10);
/// How long `fimd run` gets to exit after SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(20);
/// How often the log and the alert file are read while waiting.
const POLL: Duration = Duration::from_millis(20);

/// Numbers each daemon's stderr file, so a fixture restarted by its test keeps every log.
static STARTED: AtomicUsize = AtomicUsize::new(0);

pub struct Daemon {
    /// The process started: fimd itself, or the wrapper that runs it.
    pub child: Child,
    /// The process that gets signals: fimd itself.
    pub fimd_pid: u32,
    /// The JSON-lines alert file of its configuration.
    pub sink: PathBuf,
    /// Where its stderr goes.
    stderr: PathBuf,
}

impl Daemon {
    /// `fimd -c CONFIG run` for `f`, for a test that adds to its environment or wraps it.
    pub fn command(f: &Fixture) -> Command {
        let mut c = Command::new(super::FIMD);
        c.arg("-c").arg(&f.config).arg("run");
        c
    }

    /// Baselines the fixture, starts `fimd run` and waits until it says it is ready.
    pub fn start(f: &Fixture) -> Daemon {
        f.init();
        Daemon::start_on_baseline(f)
    }

    /// Starts `fimd run` on the existing baseline and waits until it says it is ready.
    pub fn start_on_baseline(f: &Fixture) -> Daemon {
        let d = Daemon::spawn(f, Daemon::command(f));
        d.wait_log("; ready");
        d
    }

    /// Starts `cmd` (which runs `fimd run` on `f`, perhaps under a wrapper) without waiting.
    /// Alerts go to the `jsonl` file of `f`'s configuration; one is added, `DIR/alerts.jsonl`,
    /// when the configuration has no `[alerts]` table.
    pub fn spawn(f: &Fixture, mut cmd: Command) -> Daemon {
        let sink = alert_file(f);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let stderr = f.dir.path().join(format!("fimd-run-{n}.stderr"));
        let file = fs::File::create(&stderr).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let fimd_pid = child.id();
        Daemon {
            child,
            fimd_pid,
            sink,
            stderr,
        }
    }

    /// Every whole line fimd has written on stderr so far. A line still being written (one
    /// `eprintln!` may take several write(2)s) is left for the next look; file names in it are
    /// bytes, so a line that is not UTF-8 is read lossily, not dropped.
    pub fn log(&self) -> Vec<String> {
        let mut bytes = fs::read(&self.stderr).unwrap_or_default();
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(whole);
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits for a stderr line containing `needle` (60 s for the ready line, 30 s for others).
    pub fn wait_log(&self, needle: &str) {
        self.wait_log_count(needle, 1);
    }

    /// Waits for `n` stderr lines containing `needle`; fails at once if fimd exits first.
    pub fn wait_log_count(&self, needle: &str, n: usize) {
        let within = if needle.contains("ready") {
            READY_WITHIN
        } else {
            LOG_WITHIN
        };
        let deadline = Instant::now() + within;
        while self.log().iter().filter(|l| l.contains(needle)).count() < n {
            if let Some(st) = self.exited() {
                // It may have said it just before exiting.
                if self.log().iter().filter(|l| l.contains(needle)).count() >= n {
                    return;
                }
                panic!(
                    "fimd run exited ({st}) before saying {needle:?} ({n}×): {:#?}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "fimd run never said {needle:?} ({n}×) within {within:?}: {:#?}",
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }

    /// How the process started ended, once it has (without reaping it: `Child::wait` still can).
    pub fn exited(&self) -> Option<String> {
        // SAFETY: an all-zero siginfo_t is valid; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child; WNOWAIT leaves it to be reaped by `Child::wait`.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                self.child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid and si_status are set by waitid when it found an exited child.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if r != 0 || pid == 0 {
            return None;
        }
        Some(if info.si_code == libc::CLD_EXITED {
            format!("exit status {status}")
        } else {
            format!("signal {status}")
        })
    }

    /// Sends `sig` to fimd.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on a process this test started.
        unsafe { libc::kill(self.fimd_pid as i32, sig) };
    }

    /// SIGTERM, then the exit status of the process started (within 20 s).
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + STOP_WITHIN;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "fimd run did not stop within {STOP_WITHIN:?} of SIGTERM: {:#?}",
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Every document in the alert file so far.
    pub fn alerts(&self) -> Vec<Value> {
        fs::read_to_string(&self.sink)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Reads the alert file every 20 ms until `found` makes something of the documents so far,
    /// for up to `within`; on time out, the documents then.
    pub fn poll<T>(
        &self,
        within: Duration,
        mut found: impl FnMut(&[Value]) -> Option<T>,
    ) -> Result<T, Vec<Value>> {
        let deadline = Instant::now() + within;
        loop {
            let all = self.alerts();
            if let Some(t) = found(&all) {
                return Ok(t);
            }
            if Instant::now() > deadline {
                return Err(all);
            }
            std::thread::sleep(POLL);
        }
    }

    /// As `poll`, failing the test on time out with `failure`'s account of the documents.
    pub fn wait_until<T>(
        &self,
        within: Duration,
        found: impl FnMut(&[Value]) -> Option<T>,
        failure: impl FnOnce(&[Value]) -> String,
    ) -> T {
        self.poll(within, found)
            .unwrap_or_else(|all| panic!("within {within:?}: {}", failure(&all)))
    }

    /// Waits up to 10 s for the first document satisfying `ok`; the failure names `what` and
    /// lists every document that did arrive.
    pub fn wait_doc(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        self.wait_until(
            ALERT_WITHIN,
            |all| all.iter().find(|a| ok(a)).cloned(),
            |all| format!("no {what}; got: {all:#?}"),
        )
    }

    /// Waits for an alert on `path` with `action`, made by process `pid`.
    pub fn expect(&self, path: &Path, action: &str, pid: u32) -> Value {
        self.expect_where(path, action, pid, |_| true)
    }

    /// As `expect`, for an alert that also satisfies `and`.
    pub fn expect_where(&self, path: &Path, action: &str, pid: u32, and: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(path, &[action], pid, and)
            .unwrap_or_else(|e| panic!("{e}; all alerts: {:#?}", self.alerts()))
    }

    /// Waits up to 10 s for an alert on `path` with one of `actions`, made by process `pid`
    /// and satisfying `and`; the error lists the alerts that did arrive for `path` or by `pid`.
    pub fn wait_for(
        &self,
        path: &Path,
        actions: &[&str],
        pid: u32,
        and: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let p = path.display().to_string();
        self.poll(ALERT_WITHIN, |all| {
            all.iter()
                .find(|a| {
                    a["file"]["path"] == p.as_str()
                        && actions.iter().any(|act| a["event"]["action"] == *act)
                        && a["process"]["pid"] == pid
                        && and(a)
                })
                .cloned()
        })
        .map_err(|all| {
            format!(
                "no {} alert for {p} by pid {pid} within {ALERT_WITHIN:?}; alerts for that path or by that pid: {}",
                actions.join("/"),
                summary(
                    all.iter()
                        .filter(|a| a["file"]["path"] == p.as_str() || a["process"]["pid"] == pid)
                )
            )
        })
    }

    /// Proves the daemon has handled every change made before this call, instead of sleeping:
    /// appends a line to the watched file `marker` and waits for the document on it with
    /// `action` by the appending process, whose pid it returns (to tell the marker's alert
    /// from others). The kernel reports records in order and the daemon handles them in
    /// order, so once the marker's document is out, whatever the earlier changes raise is out
    /// too: a test that must prove something did NOT happen asserts after this.
    pub fn drain(&self, marker: &Path, action: &str) -> u32 {
        let pid = by(
            "sh",
            &["-c", &format!("echo drain marker >> '{}'", marker.display())],
        );
        self.expect(marker, action, pid);
        pid
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + STOP_WITHIN;
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    self.signal(libc::SIGKILL);
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
        // What it said, shown with the test's output when the test fails.
        for line in self.log() {
            eprintln!("fimd run: {line}");
        }
    }
}

/// The `[alerts] jsonl` file of `f`'s configuration, after adding `DIR/alerts.jsonl` when the
/// configuration has no `[alerts]` table.
fn alert_file(f: &Fixture) -> PathBuf {
    let text = fs::read_to_string(&f.config).unwrap();
    let default = f.dir.path().join("alerts.jsonl");
    if !text.contains("[alerts]") {
        fs::write(
            &f.config,
            format!("{text}\n[alerts]\njsonl = {:?}\n", default.display().to_string()),
        )
        .unwrap();
        return default;
    }
    let doc: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.config.display()));
    doc.get("alerts")
        .and_then(|a| a.get("jsonl"))
        .and_then(|j| j.as_str())
        .map_or(default, PathBuf::from)
}

/// One line per alert: action, path, pid, process name and the start of the content hash.
pub fn summary<'a>(alerts: impl Iterator<Item = &'a Value>) -> String {
    let lines: Vec<String> = alerts
        .map(|a| {
            format!(
                "{} {} by pid {} ({}), sha256 {:.12}",
                a["event"]["action"],
                a["file"]["path"],
                a["process"]["pid"],
                a["process"]["name"],
                a["file"]["hash"]["sha256"].as_str().unwrap_or("-")
            )
        })
        .collect();
    if lines.is_empty() {
        "none".to_owned()
    } else {
        format!("[{}]", lines.join("; "))
    }
}

/// Runs a program to completion, returning its pid.
pub fn by(program: &str, args: &[&str]) -> u32 {
    let mut c = Command::new(program)
        .args(args)
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let pid = c.id();
    let st = c.wait().unwrap();
    assert!(st.success(), "{program} {args:?}: {st}");
    pid
}

pub fn py(script: &str, path: &Path) -> u32 {
    by("python3", &["-c", script, path.to_str().unwrap()])
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
