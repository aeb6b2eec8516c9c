//! `fimd run` under a benchmark: start it, wait until it is ready, read its CPU time, tail its
//! alert file, stop it.
use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::tail;

/// A running `fimd run`, stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
pub(super) struct Daemon {
    child: Option<Child>,
    pid: u32,
    /// Its start-up line, `fimd run: … sensor attached (hooks: …), watching N inodes; ready`.
    pub(super) ready: String,
    log: PathBuf,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts `fimd run` and waits until it says it is ready; its stderr goes to `log`.
    pub(super) fn start(
        fimd: &Path,
        config: &Path,
        log: PathBuf,
        within: Duration,
    ) -> anyhow::Result<Daemon> {
        let mut cmd = Command::new(fimd);
        cmd.arg("-c")
            .arg(config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        eprintln!("xtask: $ {}", crate::show(&cmd));
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", crate::show(&cmd)))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut out = fs::File::create(&log)?;
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(out, "{line}");
                // `fimd run: … watching N inodes; ready`
                if line.starts_with("fimd run: ") && line.ends_with("; ready") {
                    let _ = tx.send(line.clone());
                }
            }
        });
        let mut d = Daemon {
            pid: child.id(),
            child: Some(child),
            ready: String::new(),
            log,
            reader: Some(reader),
        };
        let deadline = Instant::now() + within;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    d.ready = line;
                    eprintln!(
                        "xtask: fimd run ready after {:.2} s",
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(d);
                }
                // The reader ends at EOF: fimd exited.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = d.halt();
                    bail!(
                        "fimd run exited before it was ready ({status}):\n{}",
                        tail(&d.log)
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() > deadline => {
                    d.halt();
                    bail!(
                        "fimd run was not ready after {} s:\n{}",
                        within.as_secs(),
                        tail(&d.log)
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// fimd's CPU time so far, user plus system, all threads (exited ones too): its process CPU
    /// clock, in nanoseconds, or else utime + stime of /proc/PID/stat, in clock ticks.
    pub(super) fn cpu_secs(&self) -> anyhow::Result<f64> {
        let pid = libc::pid_t::try_from(self.pid)?;
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pid is our own running child; clock and ts are valid for writes.
        unsafe {
            let mut ts: libc::timespec = std::mem::zeroed();
            if libc::clock_getcpuclockid(pid, &mut clock) == 0 && libc::clock_gettime(clock, &mut ts) == 0 {
                return Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9);
            }
        }
        let path = format!("/proc/{}/stat", self.pid);
        let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        // The command name may hold spaces and parentheses: the fields follow the last ')'.
        let rest = &text[text.rfind(')').context("no ')' in /proc/PID/stat")? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest starts at field 3 (state); utime and stime are fields 14 and 15.
        let ticks =
            |i: usize| -> anyhow::Result<u64> { Ok(fields.get(i).context("short /proc/PID/stat")?.parse()?) };
        let total = ticks(11)? + ticks(12)?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
        Ok(total as f64 / hz as f64)
    }

    /// fimd's peak resident set so far, in KiB (`VmHWM` of /proc/PID/status).
    pub(super) fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .with_context(|| format!("no VmHWM in {path}"))?;
        Ok(line.trim().trim_end_matches("kB").trim().parse()?)
    }

    /// Stops fimd, returning how many kernel events it reported lost.
    pub(super) fn stop(mut self) -> anyhow::Result<u64> {
        let status = self.halt();
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        if !log.lines().any(|l| l == "fimd run: stopped") {
            bail!("fimd run did not stop cleanly ({status}):\n{}", tail(&self.log));
        }
        // `fimd run: N kernel events lost; rescanning every watch`
        Ok(log
            .lines()
            .filter_map(|l| l.strip_prefix("fimd run: ")?.split_once(" kernel events lost"))
            .filter_map(|(n, _)| n.parse::<u64>().ok())
            .sum())
    }

    /// SIGTERM, SIGKILL after 10 s; waits, and joins the stderr reader.
    pub(super) fn halt(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "already stopped".into();
        };
        let status = stop_child(&mut child, Duration::from_secs(10));
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.halt();
    }
}

/// SIGTERM, waits up to `grace`, then SIGKILL and waits; describes the exit.
pub(super) fn stop_child(child: &mut Child, grace: Duration) -> String {
    if let Ok(Some(st)) = child.try_wait() {
        return st.to_string();
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: pid is our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(st)) => return st.to_string(),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return format!("cannot wait: {e}"),
        }
    }
    let _ = child.kill();
    match child.wait() {
        Ok(st) => format!("killed after {} s: {st}", grace.as_secs()),
        Err(e) => format!("cannot wait: {e}"),
    }
}

/// Follows the alert file from its current end, one JSON document per complete line.
pub(super) struct Tail {
    file: fs::File,
    partial: Vec<u8>,
    /// IN_MODIFY on the alert file, to wake as soon as a line lands; polling when unavailable.
    inotify: Option<OwnedFd>,
}

impl Tail {
    pub(super) fn open(path: &Path) -> anyhow::Result<Tail> {
        let mut file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        file.seek(SeekFrom::End(0))?;
        Ok(Tail {
            file,
            partial: Vec::new(),
            inotify: inotify_modify(path),
        })
    }

    /// The documents of the lines completed since the last call, and the instant they were read
    /// (before parsing, which this debug build is slow at).
    pub(super) fn lines(&mut self) -> anyhow::Result<(Vec<Value>, Instant)> {
        let before = self.partial.len();
        self.file.read_to_end(&mut self.partial)?;
        let read_at = Instant::now();
        let mut out = Vec::new();
        if self.partial.len() == before {
            return Ok((out, read_at));
        }
        let mut start = 0;
        while let Some(i) = self.partial[start..].iter().position(|&b| b == b'\n') {
            if let Ok(v) = serde_json::from_slice(&self.partial[start..start + i]) {
                out.push(v);
            }
            start += i + 1;
        }
        self.partial.drain(..start);
        Ok((out, read_at))
    }

    /// Hands every new document to `hit` until it returns true for one (the instant that line was
    /// read is returned) or `timeout` passes (None).
    pub(super) fn wait(
        &mut self,
        timeout: Duration,
        mut hit: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Option<Instant>> {
        let deadline = Instant::now() + timeout;
        loop {
            let (docs, read_at) = self.lines()?;
            let mut found = false;
            for d in &docs {
                found |= hit(d);
            }
            if found {
                return Ok(Some(read_at));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.block(deadline - now);
        }
    }

    /// Sleeps until the alert file is modified, at most `max` (and at most 5 ms, in case a
    /// notification is missed).
    pub(super) fn block(&self, max: Duration) {
        let Some(fd) = &self.inotify else {
            std::thread::sleep(max.min(Duration::from_micros(200)));
            return;
        };
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(max.as_millis().clamp(1, 5)).unwrap_or(5);
        // SAFETY: p is one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, ms) } > 0 {
            let mut buf = [0u8; 4096];
            // SAFETY: buf is valid for writes of its length; the descriptor is non-blocking.
            while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        }
    }
}

/// A non-blocking inotify descriptor watching `path` for IN_MODIFY.
pub(super) fn inotify_modify(path: &Path) -> Option<OwnedFd> {
    // SAFETY: inotify_init1 has no preconditions.
    let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if raw < 0 {
        return None;
    }
    // SAFETY: raw is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: fd is an inotify descriptor and c a NUL-terminated path.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) };
    (wd >= 0).then_some(fd)
}
