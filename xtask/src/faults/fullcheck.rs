//! A measurement, not a pass/fail case: how long an unrelated change's alert waits while a
//! scheduled full comparison of a large tree runs. The scheduled comparison walks and
//! compares on a thread of its own (monitor/src/daemon/full_check.rs) and the loop only learns
//! what it finds, so realtime alerts need not wait for it (when it ran on the loop: an alert
//! waited 8.9 s behind a 9.5 s comparison). Run with
//! `FIMD_FAULTS_FULL_CHECK=1 cargo xtask faults` (about two minutes and `FILES` x `FILE_BYTES`
//! of disk).
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::{Tally, wait_alerts};

/// Files in the large tree, and the bytes of each (under the daemon's 64 MiB large-file
/// threshold, so the full comparison hashes them itself, as it does most files).
const FILES: usize = 96;
const FILE_BYTES: usize = 32 << 20;
/// `schedule.full_check`'s shortest setting (monitor/src/config/schedule.rs).
const EVERY: Duration = Duration::from_secs(60);

const CONFIG: &str = r#"# fault suite: alert latency during a scheduled full comparison
state_dir = "{DIR}/state"

[[watch]]
path = "{DIR}/tree"
policy = "static"

[alerts]
jsonl = "{DIR}/alerts.jsonl"

[schedule]
full_check = "1m"
jitter = "0"

[metrics]
listen = "127.0.0.1:{PORT}"
"#;

/// Builds the tree, starts the daemon, changes one small file while idle and one while the
/// first scheduled full comparison runs; prints both latencies and the comparison's length.
pub(super) fn run(fimd: &Path) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("fimd-fullcheck-").tempdir()?;
    let d = dir.path();
    let tree = d.join("tree");
    fs::create_dir_all(tree.join("data"))?;
    fs::create_dir_all(d.join("state"))?;
    let mut block = vec![0u8; FILE_BYTES];
    for (i, b) in block.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
    }
    for i in 0..FILES {
        block[..8].copy_from_slice(&(i as u64).to_le_bytes());
        fs::File::create(tree.join(format!("data/{i:03}.bin")))?.write_all(&block)?;
    }
    for name in ["idle.txt", "during.txt"] {
        fs::write(tree.join(name), format!("{name}: baseline\n"))?;
    }
    let (config, port) = super::write_config(d, CONFIG)?;
    let status = std::process::Command::new(fimd)
        .arg("-c")
        .arg(&config)
        .arg("init")
        .status()?;
    if !status.success() {
        bail!("fimd init (full check tree) failed: {status}");
    }
    let mut daemon = super::start(fimd, &config, d)?;
    let ready = Instant::now();
    let alerts = d.join("alerts.jsonl");
    let start_up = last_full_check(port);

    let mut t = Tally::default();
    std::thread::sleep(Duration::from_secs(5));
    fs::write(tree.join("idle.txt"), "changed while idle\n")?;
    t.change(&tree.join("idle.txt"), "updated");
    wait_alerts(&alerts, &mut t, Duration::from_secs(30))?;

    // The first scheduled comparison starts `EVERY` after the ready line (jitter 0).
    let at = ready + EVERY + Duration::from_millis(500);
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
    fs::write(tree.join("during.txt"), "changed during a full comparison\n")?;
    t.change(&tree.join("during.txt"), "updated");
    wait_alerts(&alerts, &mut t, Duration::from_secs(120))?;
    // The scheduled comparison's length, once it has been exported.
    let until = Instant::now() + Duration::from_secs(120);
    let mut scheduled = last_full_check(port);
    while scheduled.1 == start_up.1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
        scheduled = last_full_check(port);
    }
    daemon.alive()?;
    let l = |i: usize| {
        t.changes[i]
            .alerted
            .map_or("never".to_string(), |a| format!("{:.2} s", a.as_secs_f64()))
    };
    eprintln!(
        "faults: full comparison: {FILES} files, {} MiB; start-up comparison {:.2} s, scheduled one {:.2} s; \
         an unrelated change's alert took {} while idle and {} when made 0.5 s into the scheduled comparison",
        (FILES * FILE_BYTES) >> 20,
        start_up.0,
        scheduled.0,
        l(0),
        l(1)
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(daemon.child.id() as libc::pid_t, libc::SIGTERM) };
    Ok(())
}

/// `fim_last_full_check_duration_seconds` and `fim_last_full_check_timestamp_seconds` from
/// `/metrics` (0 when unreadable).
fn last_full_check(port: u16) -> (f64, f64) {
    use std::io::Read;
    let text = (|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    })()
    .unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("fim_last_full_check_duration_seconds "),
        value("fim_last_full_check_timestamp_seconds "),
    )
}
