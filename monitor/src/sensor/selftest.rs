//! `fimd selftest`: loads and attaches the sensor `fimd run` would choose on this host, makes
//! real changes to a file in a temporary directory from child processes, and checks that each
//! change arrives as a record naming the child's pid.
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use monitor_common::{ChangeRecord, Hook, InodeKey, VIOLATION_UNSEEN, VIOLATION_WRITE_BELOW};

use super::ebpf::{DEFAULT_RING_BYTES, kernel_dev};
use super::{Sensor, SensorError, SensorSpec};
use crate::config::SensorChoice;

/// How long a record may take to arrive before the self-test fails: generous, since the
/// sensor's own latency is about a millisecond (README, `bench realtime`).
const DEADLINE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum SelftestError {
    /// The sensor cannot load or attach here; the reason says why.
    #[error("no realtime sensor can work on this host")]
    Sensor(#[from] SensorError),
    #[error("self-test: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The sensor attached but did not report what it must.
    #[error("self-test failed: {0}")]
    Failed(String),
}

/// One change the self-test made and what the sensor reported for it.
#[derive(Debug)]
pub struct Observed {
    /// What the child did, e.g. `append`.
    pub action: &'static str,
    /// The child's program and pid.
    pub program: &'static str,
    pub pid: u32,
    /// The writer's pid (tgid) as the kernel recorded it.
    pub record_pid: u32,
    /// The hook that reported it (a tracepoint name), the task name in the record, and the
    /// time from the child's exit to the record's arrival.
    pub hook: String,
    pub comm: String,
    pub latency: Duration,
    /// The append-only checks' flags for the file after this change (`VIOLATION_*`).
    pub violations: u32,
}

/// What `fimd selftest` proved.
#[derive(Debug)]
pub struct Report {
    pub sensor: &'static str,
    pub hooks: Vec<String>,
    pub observed: Vec<Observed>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SelftestError {
    let what = what.into();
    move |source| SelftestError::Io { what, source }
}

/// Removes the temporary directory however the self-test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the self-test on the sensor `choice` selects (as `fimd run` would), with every hook
/// `run` may attach (the append-only checks included), on a file in the system's temporary
/// directory.
///
/// Errors: `Sensor` when no realtime sensor can load here (exit 2 with the reason), `Failed`
/// when a change went unreported or was attributed to the wrong process.
pub fn run(choice: SensorChoice) -> Result<Report, SelftestError> {
    let template = std::env::temp_dir().join("fimd-selftest-XXXXXX");
    let dir = TempDir(nix::unistd::mkdtemp(&template).map_err(|e| SelftestError::Io {
        what: format!("creating a directory like {}", template.display()),
        source: e.into(),
    })?);
    // Written before the sensor starts: fimd's own write is not a change to report.
    let file = dir.0.join("watched.log");
    std::fs::write(&file, b"selftest line 1\n").map_err(io(format!("writing {}", file.display())))?;
    let mut sensor = super::open(&SensorSpec {
        choice,
        ring_bytes: DEFAULT_RING_BYTES,
        append_hooks: true,
        roots: vec![dir.0.clone()],
        capacity: super::capacity_for(1),
        scratch: dir.0.clone(),
    })?;
    let meta = std::fs::metadata(&file).map_err(io(format!("stat {}", file.display())))?;
    let key = InodeKey {
        dev: kernel_dev(meta.dev()),
        _pad: 0,
        ino: meta.ino(),
    };
    sensor.watch(key, file.as_os_str().as_bytes(), false)?;
    sensor.watch_append(key, meta.len())?;
    let mut observed = Vec::new();

    // An O_APPEND write by a shell: a plain change, no append-only flag.
    let mut append = Command::new("sh");
    append
        .arg("-c")
        .arg("printf 'selftest line 2\\n' >> \"$0\"")
        .arg(&file);
    observed.push(change(sensor.as_mut(), key, "append", "sh", &mut append, None)?);
    if observed[0].violations & VIOLATION_WRITE_BELOW != 0 {
        return Err(SelftestError::Failed(format!(
            "an O_APPEND write was flagged as a write below the verified length (flags {:#x})",
            observed[0].violations
        )));
    }
    // An overwrite of the first byte by dd: a change and a write below the verified length.
    // The daemon's protocol (docs/sensor-design.md): re-arm, then stat. With multigrain
    // timestamps a queried ctime makes the next change take a new one, so the ctime hooks fire
    // even within the same clock tick as the previous change.
    sensor.rearm(key)?;
    std::fs::metadata(&file).map_err(io(format!("stat {}", file.display())))?;
    let mut overwrite = Command::new("dd");
    overwrite
        .arg(format!("of={}", file.display()))
        .args(["conv=notrunc", "status=none"]);
    let o = change(
        sensor.as_mut(),
        key,
        "overwrite",
        "dd",
        &mut overwrite,
        Some(b"S"),
    )?;
    // The eBPF sensor sees the offset; fanotify cannot, and says so for every append-only file.
    if o.violations & (VIOLATION_WRITE_BELOW | VIOLATION_UNSEEN) == 0 {
        return Err(SelftestError::Failed(format!(
            "dd (pid {}) wrote at offset 0 of an append-only file, but the {} sensor flagged nothing",
            o.pid,
            sensor.name()
        )));
    }
    observed.push(o);
    Ok(Report {
        sensor: sensor.name(),
        hooks: sensor.hooks(),
        observed,
    })
}

/// Runs `cmd` (feeding it `stdin`), then waits for the sensor's record of its change to `key`
/// and checks that the record names the child.
fn change(
    sensor: &mut dyn Sensor,
    key: InodeKey,
    action: &'static str,
    program: &'static str,
    cmd: &mut Command,
    stdin: Option<&[u8]>,
) -> Result<Observed, SelftestError> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().map_err(io(format!("starting {program}")))?;
    let pid = child.id();
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(bytes).map_err(io(format!("feeding {program}")))?;
    }
    let status = child.wait().map_err(io(format!("waiting for {program}")))?;
    if !status.success() {
        return Err(SelftestError::Failed(format!(
            "{program} (pid {pid}) failed: {status}"
        )));
    }
    let done = Instant::now();
    let mut records: Vec<ChangeRecord> = Vec::new();
    loop {
        records.clear();
        sensor.drain(&mut records);
        // Nothing else writes the file: the first record for it must name the child.
        if let Some(r) = records.iter().find(|r| r.key == key) {
            if r.tgid != pid {
                return Err(SelftestError::Failed(format!(
                    "{program} (pid {pid}) changed the watched file ({action}), but the record names \
                     pid {} ({})",
                    r.tgid,
                    comm(r)
                )));
            }
            let hook = Hook::try_from(r.hook).map_or_else(|h| format!("hook #{h}"), |h| h.name().to_owned());
            return Ok(Observed {
                action,
                program,
                pid,
                record_pid: r.tgid,
                hook,
                comm: comm(r),
                latency: done.elapsed(),
                violations: sensor.take_violations(&key),
            });
        }
        if done.elapsed() > DEADLINE {
            return Err(SelftestError::Failed(format!(
                "{program} (pid {pid}) changed a watched file ({action}) and no record arrived within \
                 {DEADLINE:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The record's task name, non-printable bytes escaped.
fn comm(r: &ChangeRecord) -> String {
    let n = r.comm.iter().position(|&b| b == 0).unwrap_or(r.comm.len());
    if n == 0 {
        // fanotify reads the name from /proc, gone once the writer was reaped.
        return "exited".into();
    }
    r.comm[..n].escape_ascii().to_string()
}
