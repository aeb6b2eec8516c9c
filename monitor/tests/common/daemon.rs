//! `fimd run` driven from a test: start it on a fixture, read its stderr, wait for alerts.
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Fixture;

pub struct Daemon {
    pub child: Child,
    pub sink: PathBuf,
    /// What the daemon printed on stderr so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Daemon {
    /// Baselines the fixture, starts `fimd run` and waits until it says it is ready.
    pub fn start(f: &Fixture) -> Daemon {
        f.init();
        Daemon::start_on_baseline(f)
    }

    /// Starts `fimd run` on the existing baseline.
    pub fn start_on_baseline(f: &Fixture) -> Daemon {
        let sink = f.dir.path().join("alerts.jsonl");
        let text = fs::read_to_string(&f.config).unwrap();
        if !text.contains("[alerts]") {
            fs::write(
                &f.config,
                format!("{text}\n[alerts]\njsonl = {:?}\n", sink.display().to_string()),
            )
            .unwrap();
        }
        let mut child = Command::new(super::FIMD)
            .arg("-c")
            .arg(&f.config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink_log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("fimd run: {line}");
                sink_log.lock().unwrap().push(line);
            }
        });
        let mut d = Daemon { child, sink, log };
        d.wait_log("; ready");
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!("fimd run exited: {st}");
        }
        d
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to 30 s for a stderr line containing `needle`.
    pub fn wait_log(&self, needle: &str) {
        self.wait_log_count(needle, 1);
    }

    pub fn wait_log_count(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log().iter().filter(|l| l.contains(needle)).count() < n {
            assert!(
                Instant::now() < deadline,
                "fimd run never said {needle:?} ({n}×): {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn alerts(&self) -> Vec<Value> {
        fs::read_to_string(&self.sink)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
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
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.alerts();
            if let Some(a) = all.iter().find(|a| {
                a["file"]["path"] == p.as_str()
                    && actions.iter().any(|act| a["event"]["action"] == *act)
                    && a["process"]["pid"] == pid
                    && and(a)
            }) {
                return Ok(a.clone());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no {} alert for {p} by pid {pid} within 10 s; alerts for that path or by that pid: {}",
                    actions.join("/"),
                    summary(
                        all.iter()
                            .filter(|a| a["file"]["path"] == p.as_str() || a["process"]["pid"] == pid)
                    )
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
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

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
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
