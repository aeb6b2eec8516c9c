//! The demo's realtime part: `fimd run` watches the sample tree while a separate process named
//! `intruder` changes it, and each alert is printed as it arrives with the writer and the time
//! from the change to the alert.
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::Value;

/// The intruder's steps: (step, what it does, path under the demo directory, the action the
/// daemon must report).
const STEPS: &[(&str, &str, &str, &str)] = &[
    (
        "overwrite",
        "overwrites the config file",
        "tree/etc/hosts",
        "updated",
    ),
    (
        "chmod",
        "makes the binary world-writable",
        "tree/bin/tool",
        "attributes_modified",
    ),
    ("append", "appends a line to the log", "logs/app.log", "appended"),
    (
        "edit",
        "edits a line already in the log",
        "logs/app.log",
        "updated",
    ),
];

/// How long the demo waits for the daemon to get ready, an alert to arrive, or the daemon to stop.
const READY_WITHIN: Duration = Duration::from_secs(60);
const ALERT_WITHIN: Duration = Duration::from_secs(10);
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// The intruder process (`xtask demo-writer DIR`, run from a copy named `intruder`): reads step
/// names on stdin, makes each change under `dir`, and answers with the change's wall-clock
/// time in ns since the epoch, taken right after the system call returned.
pub fn writer(dir: &Path) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for step in std::io::stdin().lock().lines() {
        let step = step?;
        match step.as_str() {
            "overwrite" => fs::write(
                dir.join("tree/etc/hosts"),
                "127.0.0.1 localhost\n10.6.6.6 updates.example.com\n",
            )?,
            "chmod" => fs::set_permissions(dir.join("tree/bin/tool"), fs::Permissions::from_mode(0o777))?,
            "append" => fs::File::options()
                .append(true)
                .open(dir.join("logs/app.log"))?
                .write_all(b"10:05 backup finished\n")?,
            // "10:00 ..." becomes "11:00 ...": a byte the daemon had already verified.
            "edit" => fs::File::options()
                .write(true)
                .open(dir.join("logs/app.log"))?
                .write_all_at(b"11", 0)?,
            other => bail!("unknown step {other:?}"),
        }
        writeln!(out, "{}", now_ns())?;
        out.flush()?;
    }
    Ok(())
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Stops the daemon however the demo ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn show(fimd: &Path, config: &Path, dir: &Path) -> anyhow::Result<()> {
    let alerts_file = dir.join("alerts.jsonl");
    let mut alerts = Alerts {
        offset: fs::metadata(&alerts_file).map_or(0, |m| m.len()),
        path: alerts_file,
        partial: String::new(),
    };
    eprintln!("\nRealtime: `fimd run` watches the tree and the logs.");
    eprintln!("$ fimd -c {} run", config.display());
    let mut child = Command::new(fimd)
        .arg("-c")
        .arg(config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} run", fimd.display()))?;
    let stderr = child.stderr.take().context("fimd run's stderr")?;
    let mut daemon = Daemon(child);
    let (tx, log) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    loop {
        match log.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                // The ready line names every hook: one line for the sensor, one for its hooks.
                match line
                    .split_once(" (hooks: ")
                    .and_then(|(head, rest)| Some((head, rest.split_once("), ")?)))
                {
                    Some((head, (hooks, tail))) => {
                        eprintln!("  {head}, {tail}");
                        eprintln!("  hooks: {hooks}");
                    }
                    None => eprintln!("  {line}"),
                }
                if line.ends_with("; ready") {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("fimd run exited before it was ready: {:?}", daemon.0.wait());
            }
        }
        if started.elapsed() > READY_WITHIN {
            bail!("fimd run was not ready within {READY_WITHIN:?}");
        }
    }

    // A copy of this program named `intruder`: its process name and executable say so.
    let intruder = dir.join("intruder");
    fs::copy(std::env::current_exe()?, &intruder).context("copying the intruder program")?;
    let mut writer = Command::new(&intruder)
        .arg("demo-writer")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the intruder")?;
    let pid = writer.id();
    let mut to_writer = writer.stdin.take().context("intruder stdin")?;
    let mut from_writer = BufReader::new(writer.stdout.take().context("intruder stdout")?);
    for (step, what, rel, action) in STEPS {
        let path = dir.join(rel);
        eprintln!("\nintruder (pid {pid}) {what}: {rel}");
        writeln!(to_writer, "{step}")?;
        let mut answer = String::new();
        from_writer.read_line(&mut answer)?;
        let changed_ns: u128 = answer
            .trim()
            .parse()
            .with_context(|| format!("the intruder failed at {step:?}: {answer:?}"))?;
        let mut seen_action = false;
        let deadline = Instant::now() + ALERT_WITHIN;
        // After the expected alert, a short grace for others the same change caused.
        let mut grace: Option<Instant> = None;
        while grace.is_none_or(|g| Instant::now() < g) {
            for alert in alerts.new_lines()? {
                let arrived_ns = now_ns();
                eprintln!("  {}", describe(&alert, dir, changed_ns, arrived_ns));
                if alert["file"]["path"] == path.to_string_lossy().as_ref()
                    && alert["event"]["action"] == *action
                {
                    seen_action = true;
                    grace.get_or_insert(Instant::now() + Duration::from_millis(300));
                }
            }
            if Instant::now() > deadline {
                break;
            }
            if let Ok(Some(st)) = daemon.0.try_wait() {
                bail!("fimd run exited: {st}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if !seen_action {
            bail!("no `{action}` alert for {rel} within {ALERT_WITHIN:?}");
        }
    }
    drop(to_writer);
    let _ = writer.wait();

    eprintln!("\nStopping the daemon (SIGTERM).");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(daemon.0.id() as libc::pid_t, libc::SIGTERM) };
    let stop = Instant::now();
    let status = loop {
        if let Some(st) = daemon.0.try_wait()? {
            break st;
        }
        if stop.elapsed() > STOP_WITHIN {
            bail!("fimd run did not stop within {STOP_WITHIN:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    while let Ok(line) = log.recv_timeout(Duration::from_millis(200)) {
        eprintln!("  {line}");
    }
    if !status.success() {
        bail!("fimd run stopped with {status}");
    }
    eprintln!(
        "  (exit status 0, {:.1} s after SIGTERM)",
        stop.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The alert file, read as it grows.
struct Alerts {
    path: PathBuf,
    offset: u64,
    /// A line written only in part so far.
    partial: String,
}

impl Alerts {
    fn new_lines(&mut self) -> anyhow::Result<Vec<Value>> {
        let mut f = match fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut text = String::new();
        self.offset += f.read_to_string(&mut text)? as u64;
        self.partial.push_str(&text);
        let Some(end) = self.partial.rfind('\n') else {
            return Ok(Vec::new());
        };
        let whole: String = self.partial.drain(..=end).collect();
        Ok(whole
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}

/// One short line: kind, action, path, writer and latency.
fn describe(alert: &Value, dir: &Path, changed_ns: u128, arrived_ns: u128) -> String {
    let kind = match alert["event"]["kind"].as_str() {
        Some("alert") => "ALERT",
        Some(other) => other,
        None => "?",
    };
    let path = alert["file"]["path"].as_str().unwrap_or("?");
    let rel = Path::new(path)
        .strip_prefix(dir)
        .map_or(path.to_owned(), |p| p.display().to_string());
    let who = match (
        alert["process"]["name"].as_str(),
        alert["process"]["pid"].as_u64(),
    ) {
        (Some(name), Some(pid)) => {
            let user = alert["user"]["id"]
                .as_str()
                .and_then(|uid| user_name(uid).or(Some(format!("uid {uid}"))))
                .unwrap_or_else(|| "?".into());
            format!("by {name} (pid {pid}, user {user})")
        }
        _ => "by ? (no writer recorded)".into(),
    };
    let latency_ms = arrived_ns.saturating_sub(changed_ns) as f64 / 1e6;
    format!(
        "{kind:<5} {:<19} {rel:<15} {who}  {latency_ms:.1} ms after the change",
        alert["event"]["action"].as_str().unwrap_or("?")
    )
}

/// The name of `uid` in /etc/passwd.
fn user_name(uid: &str) -> Option<String> {
    fs::read_to_string("/etc/passwd").ok()?.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_owned())
    })
}
