//! The append-only policy, with real file operations: appends are events, any other change of
//! verified bytes alerts, rotations within the configured names are events. In realtime mode
//! (`fimd run`, needs root) and in `fimd check`.
mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::daemon::{Daemon, by, py, s};
use common::metrics::{free_port, wait_metric_at_most};
use common::{Fixture, privileged, sh};
use serde_json::Value;

const ROTATING: &str = "policy = \"append-only\"\nrotate = [\"app.log.*\", \"app.log-*\"]";

/// A watch of `keys` holding a 20,000-line `app.log`; the daemon's metrics on a free port
/// (`settle` reads them).
fn log_fixture(keys: &str) -> Fixture {
    let f = Fixture::with_config_extra(keys);
    let text = fs::read_to_string(&f.config).unwrap();
    let port = free_port();
    fs::write(
        &f.config,
        format!("{text}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let lines: String = (0..20_000)
        .map(|i| format!("line {i} of the original log\n"))
        .collect();
    fs::write(f.path("app.log"), lines).unwrap();
    f
}

fn kind(a: &Value) -> &str {
    a["event"]["kind"].as_str().unwrap_or("")
}

/// Alerts (not events) on `path` so far.
fn alerts_on(d: &Daemon, path: &Path) -> Vec<Value> {
    d.alerts()
        .into_iter()
        .filter(|a| a["file"]["path"] == s(path) && kind(a) == "alert")
        .collect()
}

/// Waits for a document on `path` with `action` and `kind`, by any process.
fn wait_doc(d: &Daemon, path: &Path, action: &str, want_kind: &str) -> Value {
    d.wait_doc(&format!("{want_kind} {action} on {}", path.display()), |a| {
        a["file"]["path"] == s(path) && a["event"]["action"] == action && kind(a) == want_kind
    })
}

/// The port of the daemon's metrics in `f`'s configuration (`log_fixture`).
fn metrics_port(f: &Fixture) -> u16 {
    let text = fs::read_to_string(&f.config).unwrap();
    let (_, rest) = text
        .split_once("listen = \"127.0.0.1:")
        .expect("a log_fixture configuration");
    rest[..rest.find('"').unwrap()].parse().unwrap()
}

/// Waits until the daemon has judged every change made so far in a rotating log's directory.
/// It holds such changes until the directory has been quiet for `SETTLE` (1 s) and counts what
/// it holds in `fim_rotation_settling`. First, twice, a line appended to `sub/b.conf` (another
/// directory; an append is judged at once, never held) and its `appended` event awaited: the
/// daemon handles records in order and ends a batch before it handles the next, so once the
/// second marker's event is out, every earlier change has been looked at and, if held, counted.
/// Then the gauge must fall to 0: everything held is judged (up to 15 s).
fn settle(f: &Fixture, d: &Daemon) {
    let marker = f.path("sub/b.conf");
    d.drain(&marker, "appended");
    d.drain(&marker, "appended");
    wait_metric_at_most(metrics_port(f), "fim_rotation_settling", 0.0);
}

fn append_by(path: &Path, text: &str) -> u32 {
    py(
        &format!("import sys; f = open(sys.argv[1], 'a'); f.write({text:?}); f.close()"),
        path,
    )
}

#[test]
fn appends_from_several_writers_are_events_and_advance_the_baseline() {
    if !privileged("fimd run") {
        return;
    }
    let f = log_fixture(ROTATING);
    let log = f.path("app.log");
    let d = Daemon::start(&f);
    // Three writers appending concurrently, then a shell's `>>`.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            std::process::Command::new("python3")
                .args([
                    "-c",
                    &format!(
                        "import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)\n\
                         for i in range(200): os.write(fd, b'writer {w} line %d\\n' % i)\n"
                    ),
                    s(&log),
                ])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut w in writers {
        assert!(w.wait().unwrap().success());
    }
    // Every writer's bytes verified (an event may carry several writers' appends).
    let size = fs::metadata(&log).unwrap().len();
    d.wait_doc(&format!("appended event verifying up to {size} bytes"), |a| {
        a["file"]["size"] == size && a["event"]["action"] == "appended"
    });
    let pid = by("sh", &["-c", &format!("echo from the shell >> {}", s(&log))]);
    let ev = d.expect(&log, "appended", pid);
    assert_eq!(kind(&ev), "event");
    let verified = ev["fim"]["append"]["verified_bytes"].as_u64().unwrap();
    let read = ev["fim"]["append"]["read_bytes"].as_u64().unwrap();
    let appended = ev["fim"]["append"]["appended_bytes"].as_u64().unwrap();
    assert!(
        read < appended + 4096,
        "read {read} bytes to verify {appended} appended to {verified}"
    );
    settle(&f, &d);
    assert!(
        alerts_on(&d, &log).is_empty(),
        "appends alerted: {:#?}",
        alerts_on(&d, &log)
    );
    drop(d);
    // The baseline advanced: a check finds nothing, not even an append.
    let (code, docs) = f.check();
    assert_eq!(code, 0, "{docs:#?}");
    assert!(docs.is_empty(), "{docs:#?}");
}

#[test]
fn changes_to_verified_bytes_alert_with_their_process() {
    if !privileged("fimd run") {
        return;
    }
    let f = log_fixture("policy = \"append-only\"");
    let log = f.path("app.log");
    let d = Daemon::start(&f);

    // A byte changed in the middle, then an append: both through one process.
    let pid = py(
        "import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY)\nos.pwrite(fd, b'X', 1000)\n\
         os.lseek(fd, 0, os.SEEK_END)\nos.write(fd, b'an innocent line\\n')\n",
        &log,
    );
    let a = d.expect(&log, "updated", pid);
    assert_eq!(kind(&a), "alert");
    let accept = f.fimd(&["accept"]);
    assert_eq!(accept.code, 0, "{}", accept.stderr);
    drop(d);

    // Truncated, then the same number of bytes written back.
    let d = Daemon::start_on_baseline(&f);
    let len = fs::metadata(&log).unwrap().len();
    let pid = py(
        &format!(
            "import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)\n\
             os.write(fd, b'y' * {len})\n"
        ),
        &log,
    );
    let a = d.expect(&log, "truncated", pid);
    assert_eq!(kind(&a), "alert");
    drop(d);
    assert_eq!(f.fimd(&["accept"]).code, 0);

    // Rewritten with the same first half and a new, longer tail.
    let d = Daemon::start_on_baseline(&f);
    let pid = py(
        "import sys\ndata = open(sys.argv[1], 'rb').read()\nf = open(sys.argv[1], 'wb')\n\
         f.write(data[: len(data) // 2] + b'z' * len(data))\n",
        &log,
    );
    let a = d
        .wait_for(&log, &["truncated", "updated"], pid, |a| kind(a) == "alert")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kind(&a), "alert");
    drop(d);
    assert_eq!(f.fimd(&["accept"]).code, 0);

    // Replaced by a symlink to a file with the same content.
    let d = Daemon::start_on_baseline(&f);
    let copy = f.dir.path().join("copy.log");
    fs::copy(&log, &copy).unwrap();
    let pid = by("ln", &["-sfn", s(&copy), s(&log)]);
    d.wait_for(&log, &["updated", "deleted", "created", "moved"], pid, |a| {
        kind(a) == "alert"
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Appends until one is verified from the checkpoint (the first after a start may read the
/// whole file), so what follows is judged by what the kernel saw.
fn warm(d: &Daemon, log: &Path) {
    for _ in 0..2 {
        let pid = append_by(log, "warm-up line\n");
        let ev = d.expect(log, "appended", pid);
        if ev["fim"]["append"]["read_bytes"].as_u64().unwrap() < 8192 {
            return;
        }
    }
    panic!(
        "appends are never verified from the checkpoint: {:#?}",
        d.alerts()
    );
}

#[test]
fn every_way_of_writing_below_the_verified_length_alerts() {
    if !privileged("fimd run") {
        return;
    }
    let f = log_fixture("policy = \"append-only\"");
    let log = f.path("app.log");
    f.init();
    // Each rewrites bytes far below the last checkpoint (a different place each time), then
    // appends, in one process: only the kernel's record of the offset tells this from an append.
    let ways = [
        ("pwrite", "os.pwrite(fd, b'X', 1000)"),
        ("lseek+write", "os.lseek(fd, 2000, 0); os.write(fd, b'X')"),
        ("pwritev", "os.pwritev(fd, [b'X'], 3000)"),
        ("pwritev2", "os.pwritev(fd, [b'X'], 4000, 0)"),
        (
            "copy_file_range",
            "src = os.open('/etc/passwd', os.O_RDONLY); os.copy_file_range(src, fd, 1, 0, 5000)",
        ),
        (
            "fallocate punch",
            "import ctypes; ctypes.CDLL(None).fallocate(fd, 3, 8192, 4096)",
        ),
    ];
    for (name, code) in ways {
        let d = Daemon::start_on_baseline(&f);
        warm(&d, &log);
        let script = format!(
            "import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY)\n{code}\n\
             os.lseek(fd, 0, os.SEEK_END); os.write(fd, b'an innocent line\\n')\n"
        );
        let pid = py(&script, &log);
        let a = d
            .wait_for(&log, &["updated"], pid, |a| kind(a) == "alert")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(kind(&a), "alert", "{name}");
        drop(d);
        let r = f.fimd(&["accept"]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
    }
}

#[test]
fn hole_punching_and_chmod_are_alerts() {
    if !privileged("fimd run") {
        return;
    }
    let f = log_fixture("policy = \"append-only\"");
    let log = f.path("app.log");
    let d = Daemon::start(&f);
    let pid = by(
        "fallocate",
        &["--punch-hole", "--offset", "4096", "--length", "4096", s(&log)],
    );
    d.expect_where(&log, "updated", pid, |a| kind(a) == "alert");
    let pid = by("chmod", &["0666", s(&log)]);
    d.expect_where(&log, "attributes_modified", pid, |a| kind(a) == "alert");
}

#[test]
fn rotations_within_the_configured_names_are_events() {
    if !privileged("fimd run") {
        return;
    }
    let f = log_fixture(ROTATING);
    let log = f.path("app.log");
    let d = Daemon::start(&f);
    append_by(&log, "before the first rotation\n");
    wait_doc(&d, &log, "appended", "event");

    // create style: rename, then a new log.
    let r1 = f.path("app.log.1");
    sh("mv", &[s(&log), s(&r1)]);
    fs::write(&log, "").unwrap();
    wait_doc(&d, &r1, "rotated", "event");
    append_by(&log, "first line of the new log\n");
    settle(&f, &d);

    // delaycompress: the rotated file compressed, the uncompressed one deleted.
    sh("gzip", &[s(&r1)]);
    let gz = f.path("app.log.1.gz");
    let ev = wait_doc(&d, &gz, "rotated", "event");
    assert_eq!(ev["fim"]["rotation"]["compressed"], true, "{ev:#}");

    // dateext.
    append_by(&log, "second generation\n");
    settle(&f, &d);
    let dated = f.path("app.log-20261123");
    sh("mv", &[s(&log), s(&dated)]);
    fs::write(&log, "").unwrap();
    wait_doc(&d, &dated, "rotated", "event");
    settle(&f, &d);

    // copytruncate, with lines written between the copy and the truncation.
    append_by(&log, &"third generation\n".repeat(200));
    settle(&f, &d);
    let copied = f.path("app.log-20261124");
    sh("cp", &[s(&log), s(&copied)]);
    append_by(&log, "written between copy and truncate\n");
    sh("truncate", &["-s", "0", s(&log)]);
    append_by(&log, "after copytruncate\n");
    let ev = wait_doc(&d, &log, "rotated", "event");
    assert_eq!(ev["fim"]["rotation"]["copytruncate"], true, "{ev:#}");
    settle(&f, &d);

    let alerts: Vec<Value> = d.alerts().into_iter().filter(|a| kind(a) == "alert").collect();
    assert!(alerts.is_empty(), "rotations alerted: {alerts:#?}");
    drop(d);
    let (code, docs) = f.check();
    assert_eq!(code, 0, "after the rotations, check still differs: {docs:#?}");
}

#[test]
fn rotations_outside_the_names_or_with_other_content_alert() {
    if !privileged("fimd run") {
        return;
    }
    let f = log_fixture(ROTATING);
    let log = f.path("app.log");
    let d = Daemon::start(&f);
    // Renamed to a name no pattern allows.
    let old = f.path("app.old");
    let pid = by("mv", &[s(&log), s(&old)]);
    d.wait_for(&old, &["moved"], pid, |a| kind(a) == "alert")
        .unwrap_or_else(|e| panic!("{e}"));
    sh("mv", &[s(&old), s(&log)]);
    settle(&f, &d);
    drop(d);
    assert_eq!(f.fimd(&["accept"]).code, 0);

    // A "copy" that is not the log's content, then the log truncated.
    let d = Daemon::start_on_baseline(&f);
    fs::write(f.path("app.log.1"), "forged history\n").unwrap();
    sh("truncate", &["-s", "0", s(&log)]);
    wait_doc(&d, &log, "truncated", "alert");
    wait_doc(&d, &f.path("app.log.1"), "created", "alert");
}

#[test]
fn a_rotation_while_stopped_is_judged_at_start() {
    if !privileged("fimd run") {
        return;
    }
    let f = log_fixture(ROTATING);
    let log = f.path("app.log");
    let d = Daemon::start(&f);
    append_by(&log, "verified while running\n");
    wait_doc(&d, &log, "appended", "event");
    drop(d);
    // Rotated and compressed while fimd is down.
    let r1 = f.path("app.log.1");
    sh("mv", &[s(&log), s(&r1)]);
    fs::write(&log, "new log\n").unwrap();
    sh("gzip", &[s(&r1)]);
    let d = Daemon::start_on_baseline(&f);
    let ev = wait_doc(&d, &f.path("app.log.1.gz"), "rotated", "event");
    assert_eq!(ev["fim"]["rotation"]["compressed"], true);
    settle(&f, &d);
    let alerts: Vec<Value> = d.alerts().into_iter().filter(|a| kind(a) == "alert").collect();
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn check_judges_appends_truncation_and_rotation() {
    let f = log_fixture(ROTATING);
    let log = f.path("app.log");
    f.init();
    fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut w| std::io::Write::write_all(&mut w, b"appended\n"))
        .unwrap();
    let (code, docs) = f.check();
    assert_eq!(code, 0, "{docs:#?}");
    assert_eq!(docs.len(), 1, "{docs:#?}");
    assert_eq!(
        (docs[0]["event"]["action"].as_str(), kind(&docs[0])),
        (Some("appended"), "event")
    );
    // Nothing new: nothing reported (the check advanced the baseline).
    let (code, docs) = f.check();
    assert_eq!((code, docs.len()), (0, 0), "{docs:#?}");

    // Rotation by rename and compression.
    sh("mv", &[s(&log), s(&f.path("app.log.1"))]);
    fs::write(&log, "").unwrap();
    sh("gzip", &[s(&f.path("app.log.1"))]);
    let (code, docs) = f.check();
    assert_eq!(code, 0, "{docs:#?}");
    assert!(
        docs.iter().any(|d| d["event"]["action"] == "rotated"),
        "{docs:#?}"
    );

    // Log clearing.
    fs::write(&log, "one line\n").unwrap();
    assert_eq!(f.check().0, 0);
    fs::write(&log, "").unwrap();
    let (code, docs) = f.check();
    assert_eq!(code, 1, "{docs:#?}");
    assert_eq!(docs[0]["event"]["action"], "truncated");
}

/// io_uring writes below the verified length, through a plain descriptor and through a
/// registered (fixed) file, which io_uring_file_get never sees: each is an alert, never an
/// `appended` event, and the baseline does not take the tampered hash.
#[test]
fn io_uring_writes_below_the_verified_length_alert_through_plain_and_fixed_files() {
    if !privileged("fimd run") {
        return;
    }
    let f = log_fixture("policy = \"append-only\"");
    let log = f.path("app.log");
    f.init();
    // Each round writes fio's pattern somewhere it has not been yet, so the bytes really change.
    for (name, fixed, offset) in [("plain", "0", 1000), ("registered", "1", 3000)] {
        let d = Daemon::start_on_baseline(&f);
        warm(&d, &log);
        let pid = by(
            "fio",
            &[
                "--name=tamper",
                &format!("--filename={}", s(&log)),
                "--ioengine=io_uring",
                "--rw=write",
                "--bs=4",
                "--size=4",
                &format!("--offset={offset}"),
                &format!("--registerfiles={fixed}"),
                "--fallocate=none",
                "--thread",
                "--minimal",
            ],
        );
        // The write changed verified bytes but not the size: the alert may come with that
        // change or with the next append, never as an `appended` event for it.
        let next = append_by(&log, "an innocent line\n");
        let a = d
            .wait_for(&log, &["updated"], pid, |a| kind(a) == "alert")
            .or_else(|_| d.wait_for(&log, &["updated"], next, |a| kind(a) == "alert"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(kind(&a), "alert", "{name}");
        drop(d);
        // The tampered content is still a difference: it never entered the baseline.
        let (code, _) = f.check();
        assert_eq!(code, 1, "{name}: check after the io_uring write");
        let r = f.fimd(&["accept"]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
    }
}

fn append_line(path: &Path, line: &str) {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut w| std::io::Write::write_all(&mut w, line.as_bytes()))
        .unwrap();
}

/// Rewrites one byte of `path` in place (the same inode, the same length).
fn tamper(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], at).unwrap();
}

fn alerts_of(docs: &[Value]) -> Vec<&Value> {
    docs.iter().filter(|d| kind(d) == "alert").collect()
}

/// The whole chain shifted by hand between two checks (`.1` -> `.2`, the log -> `.1`, a new
/// log): the comparison sees every name replaced, and the judge sees one rotation.
#[test]
fn a_chain_shifted_between_two_checks_is_one_rotation() {
    let f = Fixture::with_config_extra("policy = \"append-only\"\nrotate = [\"app.log.*\"]");
    let (log, r1, r2) = (f.path("app.log"), f.path("app.log.1"), f.path("app.log.2"));
    fs::write(&log, "a\n").unwrap();
    f.init();
    sh("mv", &[s(&log), s(&r1)]);
    fs::write(&log, "b\n").unwrap();
    let (code, docs) = f.check();
    assert_eq!(code, 0, "first generation: {docs:#?}");
    sh("mv", &[s(&r1), s(&r2)]);
    sh("mv", &[s(&log), s(&r1)]);
    fs::write(&log, "c\n").unwrap();
    let (code, docs) = f.check();
    assert_eq!(code, 0, "second generation: {docs:#?}");
    assert!(
        docs.iter()
            .any(|d| d["file"]["path"] == s(&r1) && d["event"]["action"] == "rotated"),
        "{docs:#?}"
    );
    let (code, docs) = f.check();
    assert_eq!((code, docs.len()), (0, 0), "the check after: {docs:#?}");
    // A third generation, then the oldest changed: an alert, on every later check.
    sh("mv", &[s(&r2), s(&f.path("app.log.3"))]);
    sh("mv", &[s(&r1), s(&r2)]);
    sh("mv", &[s(&log), s(&r1)]);
    fs::write(&log, "d\n").unwrap();
    let (code, docs) = f.check();
    assert_eq!(code, 0, "third generation: {docs:#?}");
    tamper(&f.path("app.log.3"), 0);
    for _ in 0..2 {
        let (code, docs) = f.check();
        assert_eq!(code, 1, "{docs:#?}");
        assert_eq!(alerts_of(&docs).len(), 1, "{docs:#?}");
        assert_eq!(alerts_of(&docs)[0]["file"]["path"], s(&f.path("app.log.3")));
    }
}

/// copytruncate found after the application wrote again: the copy holds the verified content
/// and the log is the same inode, so a rotation, whatever the length of the new line.
#[test]
fn copytruncate_seen_late_is_a_rotation_whatever_the_new_length() {
    for new_line in [
        "short\n",
        "a line that is longer than everything the log held before it\n",
    ] {
        let f = Fixture::with_config_extra(ROTATING);
        let log = f.path("app.log");
        fs::write(&log, "first line\nsecond line\n").unwrap();
        f.init();
        sh("cp", &[s(&log), s(&f.path("app.log.1"))]);
        fs::write(&log, "").unwrap();
        append_line(&log, new_line);
        let (code, docs) = f.check();
        assert_eq!(code, 0, "{new_line:?}: {docs:#?}");
        let ev = docs
            .iter()
            .find(|d| d["file"]["path"] == s(&log))
            .unwrap_or_else(|| panic!("{docs:#?}"));
        assert_eq!(ev["event"]["action"], "rotated", "{ev:#}");
        assert_eq!(ev["fim"]["rotation"]["copytruncate"], true, "{ev:#}");
        // Without a copy, the same rewrite is an alert.
        fs::write(&log, "x".repeat(new_line.len() + 40)).unwrap();
        let (code, docs) = f.check();
        assert_eq!(code, 1, "{new_line:?}: {docs:#?}");
    }
}

/// Drives the real logrotate with a private configuration and state file.
struct Logrotate {
    conf: std::path::PathBuf,
    state: std::path::PathBuf,
}

impl Logrotate {
    fn new(f: &Fixture, directives: &str) -> Logrotate {
        assert!(
            Path::new("/usr/sbin/logrotate").exists(),
            "logrotate is not installed (cargo xtask setup installs it)"
        );
        let conf = f.dir.path().join("logrotate.conf");
        let state = f.dir.path().join("logrotate.state");
        fs::write(
            &conf,
            format!("{} {{\n{directives}\nmissingok\n}}\n", s(&f.path("app.log"))),
        )
        .unwrap();
        Logrotate { conf, state }
    }

    fn cycle(&self) {
        sh(
            "/usr/sbin/logrotate",
            &["-s", s(&self.state), "-f", s(&self.conf)],
        );
    }
}

const STYLES: &[(&str, &str)] = &[
    ("create", "rotate 3\ncreate\nnocompress"),
    ("copytruncate", "rotate 3\ncopytruncate\nnocompress"),
    (
        "compress+delaycompress",
        "rotate 3\ncreate\ncompress\ndelaycompress",
    ),
    ("compress", "rotate 3\ncreate\ncompress"),
    (
        "dateext",
        "rotate 3\ncreate\ndateext\ndateformat -%Y%m%d-%s\nnocompress",
    ),
    ("rotate 0", "rotate 0\ncreate\nnocompress"),
];

fn logrotate_cycles_under_check(style: &str) {
    let (_, directives) = STYLES.iter().find(|(n, _)| *n == style).unwrap();
    let f = log_fixture(ROTATING);
    let log = f.path("app.log");
    let lr = Logrotate::new(&f, directives);
    f.init();
    for cycle in 0..6 {
        for i in 0..50 {
            append_line(&log, &format!("cycle {cycle} line {i}\n"));
        }
        let (code, docs) = f.check();
        assert_eq!(code, 0, "{style}, cycle {cycle}, after appending: {docs:#?}");
        if style == "dateext" {
            // One rotated name per second.
            std::thread::sleep(Duration::from_millis(1100));
        }
        lr.cycle();
        let (code, docs) = f.check();
        assert_eq!(code, 0, "{style}, cycle {cycle}, after rotating: {docs:#?}");
    }
    append_line(&log, "the last line\n");
    assert_eq!(f.check().0, 0, "{style}: the last append");
    // A changed line in the newest plain rotated file, or in the live log.
    let rotated = fs::read_dir(&f.tree)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("app.log") && n != "app.log" && !n.ends_with(".gz")
        })
        .max_by_key(|p| fs::metadata(p).unwrap().modified().unwrap());
    let target = rotated.unwrap_or_else(|| log.clone());
    tamper(&target, 3);
    let (code, docs) = f.check();
    assert_eq!(code, 1, "{style}: {} changed: {docs:#?}", target.display());
    assert!(
        alerts_of(&docs).iter().any(|d| d["file"]["path"] == s(&target)),
        "{style}: {docs:#?}"
    );
}

#[test]
fn logrotate_create_over_many_cycles_under_check() {
    logrotate_cycles_under_check("create");
}

#[test]
fn logrotate_copytruncate_over_many_cycles_under_check() {
    logrotate_cycles_under_check("copytruncate");
}

#[test]
fn logrotate_compress_delaycompress_over_many_cycles_under_check() {
    logrotate_cycles_under_check("compress+delaycompress");
}

#[test]
fn logrotate_compress_over_many_cycles_under_check() {
    logrotate_cycles_under_check("compress");
}

#[test]
fn logrotate_dateext_over_many_cycles_under_check() {
    logrotate_cycles_under_check("dateext");
}

fn logrotate_cycles_under_run(style: &str) {
    if !privileged("fimd run") {
        return;
    }
    let (_, directives) = STYLES.iter().find(|(n, _)| *n == style).unwrap();
    let f = log_fixture(ROTATING);
    let log = f.path("app.log");
    let lr = Logrotate::new(&f, directives);
    let d = Daemon::start(&f);
    for cycle in 0..5 {
        append_by(&log, &format!("cycle {cycle}\n").repeat(20));
        settle(&f, &d);
        if style == "dateext" {
            // One rotated name per second (logrotate's clock, not the daemon).
            std::thread::sleep(Duration::from_millis(1100));
        }
        lr.cycle();
        settle(&f, &d);
        let alerts: Vec<Value> = d.alerts().into_iter().filter(|a| kind(a) == "alert").collect();
        assert!(alerts.is_empty(), "{style}, cycle {cycle}: {alerts:#?}");
    }
    drop(d);
    let (code, docs) = f.check();
    assert_eq!(code, 0, "{style}: check after the daemon: {docs:#?}");
}

#[test]
fn logrotate_create_and_copytruncate_under_run() {
    logrotate_cycles_under_run("create");
    logrotate_cycles_under_run("copytruncate");
}

#[test]
fn logrotate_compress_delaycompress_and_compress_under_run() {
    logrotate_cycles_under_run("compress+delaycompress");
    logrotate_cycles_under_run("compress");
}

#[test]
fn logrotate_dateext_under_run() {
    logrotate_cycles_under_run("dateext");
}

/// The documents a check sent to the JSON-lines sink at `sink`, as (action, file name) of
/// each alert.
fn sent_alerts(sink: &Path) -> Vec<(String, String)> {
    fs::read_to_string(sink)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|d| kind(d) == "alert")
        .map(|d| {
            let name = d["file"]["path"]
                .as_str()
                .unwrap_or("")
                .rsplit('/')
                .next()
                .unwrap()
                .to_string();
            (d["event"]["action"].as_str().unwrap().to_string(), name)
        })
        .collect()
}

/// `fimd check` lists every outstanding difference on stdout and exits 1, but sends each to the
/// sinks once: a second check sends nothing new, a new difference is sent once, and a
/// difference that went away and came back is sent again.
#[test]
fn check_sends_each_difference_to_the_sinks_once() {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("alerts.jsonl");
    let f = Fixture::with_config_extra(&format!("[alerts]\njsonl = {:?}", s(&sink)));
    f.init();
    let count = |action: &str, name: &str| {
        sent_alerts(&sink)
            .iter()
            .filter(|(a, n)| a == action && n == name)
            .count()
    };
    let check = |want_on_stdout: usize| {
        let r = f.fimd(&["check", "--json"]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        let alerts: Vec<Value> = r
            .json_lines()
            .into_iter()
            .filter(|d| kind(d) == "alert")
            .collect();
        assert_eq!(
            alerts.len(),
            want_on_stdout,
            "stdout lists everything: {alerts:#?}"
        );
        r.stderr
    };
    fs::write(f.path("a.txt"), "changed\n").unwrap();
    check(1);
    assert_eq!(count("updated", "a.txt"), 1);
    let stderr = check(1);
    assert_eq!(sent_alerts(&sink).len(), 1, "the second check sent nothing new");
    assert!(stderr.contains("1 differences already alerted"), "{stderr}");
    // A new difference: sent once, the old one not again.
    fs::write(f.path("sub/b.conf"), "key = other\n").unwrap();
    check(2);
    check(2);
    assert_eq!((count("updated", "a.txt"), count("updated", "b.conf")), (1, 1));
    // Deleted, put back (another difference), deleted again: the deletion is sent again.
    fs::remove_file(f.path("sub/b.conf")).unwrap();
    check(2);
    check(2);
    assert_eq!(count("deleted", "b.conf"), 1);
    fs::write(f.path("sub/b.conf"), "key = value\n").unwrap();
    check(2);
    fs::remove_file(f.path("sub/b.conf")).unwrap();
    check(2);
    assert_eq!(count("deleted", "b.conf"), 2, "{:#?}", sent_alerts(&sink));
    assert_eq!(count("updated", "a.txt"), 1, "{:#?}", sent_alerts(&sink));
}

/// logrotate `rotate 0`: the old log is removed, not kept (`create`: renamed then deleted;
/// `copytruncate`: truncated with no copy).
const ROTATE_0: &[(&str, &str)] = &[
    ("rotate 0 create", "rotate 0\ncreate\nnocompress"),
    ("rotate 0 copytruncate", "rotate 0\ncopytruncate\nnocompress"),
];

/// A watch whose rotations keep nothing, as its configuration says.
const KEEPS_NONE: &str = "policy = \"append-only\"\nrotate_keeps_none = true";

/// Under check: with `rotate_keeps_none`, five `rotate 0` cycles are rotations (events naming
/// the lost bytes) and a change of the live log's verified part still alerts; without it the
/// first cycle is an alert, on every later check.
#[test]
fn logrotate_rotate_0_under_check() {
    for (style, directives) in ROTATE_0 {
        let f = log_fixture(KEEPS_NONE);
        let log = f.path("app.log");
        let lr = Logrotate::new(&f, directives);
        f.init();
        for cycle in 0..5 {
            for i in 0..50 {
                append_line(&log, &format!("cycle {cycle} line {i}\n"));
            }
            let (code, docs) = f.check();
            assert_eq!(code, 0, "{style}, cycle {cycle}, after appending: {docs:#?}");
            lr.cycle();
            let (code, docs) = f.check();
            assert_eq!(code, 0, "{style}, cycle {cycle}, after rotating: {docs:#?}");
            let ev = docs
                .iter()
                .find(|d| d["file"]["path"] == s(&log))
                .unwrap_or_else(|| panic!("{style}, cycle {cycle}: {docs:#?}"));
            assert_eq!(ev["event"]["action"], "rotated", "{ev:#}");
            assert_eq!(ev["fim"]["rotation"]["kept_none"], true, "{ev:#}");
            assert!(
                ev["fim"]["rotation"]["lost_bytes"].as_u64().unwrap() > 0,
                "{ev:#}"
            );
        }
        append_line(&log, "the last line\n");
        assert_eq!(f.check().0, 0, "{style}: the last append");
        tamper(&log, 3);
        let (code, docs) = f.check();
        assert_eq!(code, 1, "{style}: {docs:#?}");
        assert_eq!(alerts_of(&docs)[0]["file"]["path"], s(&log), "{docs:#?}");

        // Without the setting, the same rotation is a wiped log.
        let f = log_fixture("policy = \"append-only\"");
        let lr = Logrotate::new(&f, directives);
        f.init();
        lr.cycle();
        for _ in 0..2 {
            let (code, docs) = f.check();
            assert_eq!(code, 1, "{style} without rotate_keeps_none: {docs:#?}");
            assert_eq!(
                alerts_of(&docs)[0]["file"]["path"],
                s(&f.path("app.log")),
                "{docs:#?}"
            );
        }
    }
}

/// Under run: the same, judged as it happens.
#[test]
fn logrotate_rotate_0_under_run() {
    if !privileged("fimd run") {
        return;
    }
    for (style, directives) in ROTATE_0 {
        let f = log_fixture(KEEPS_NONE);
        let log = f.path("app.log");
        let lr = Logrotate::new(&f, directives);
        let d = Daemon::start(&f);
        for cycle in 0..5 {
            append_by(&log, &format!("cycle {cycle}\n").repeat(20));
            settle(&f, &d);
            lr.cycle();
            d.wait_doc(&format!("{style}, cycle {cycle}: rotated"), |a| {
                a["file"]["path"] == s(&log)
                    && a["event"]["action"] == "rotated"
                    && a["fim"]["rotation"]["kept_none"] == true
                    && d.alerts()
                        .iter()
                        .filter(|b| b["event"]["action"] == "rotated")
                        .count()
                        > cycle
            });
            settle(&f, &d);
            let alerts: Vec<Value> = d.alerts().into_iter().filter(|a| kind(a) == "alert").collect();
            assert!(alerts.is_empty(), "{style}, cycle {cycle}: {alerts:#?}");
        }
        // The live log's verified part changed: an alert.
        append_by(&log, "verified\n".repeat(10).as_str());
        wait_doc(&d, &log, "appended", "event");
        tamper(&log, 3);
        wait_doc(&d, &log, "updated", "alert");
        drop(d);

        let f = log_fixture("policy = \"append-only\"");
        let log = f.path("app.log");
        let lr = Logrotate::new(&f, directives);
        let d = Daemon::start(&f);
        lr.cycle();
        d.wait_doc(&format!("{style} without rotate_keeps_none: an alert"), |a| {
            a["file"]["path"] == s(&log) && kind(a) == "alert"
        });
    }
}

/// Under run, after a rotation: the rotated copy changed in place, a line removed from it, the
/// copy replaced by other content, and the new live log's verified part changed each alert.
#[test]
fn tampering_after_a_rotation_alerts_under_run() {
    if !privileged("fimd run") {
        return;
    }
    let f = log_fixture(ROTATING);
    let (log, r1) = (f.path("app.log"), f.path("app.log.1"));
    let d = Daemon::start(&f);
    let rotate = |d: &Daemon| {
        sh("mv", &[s(&log), s(&r1)]);
        fs::write(&log, "").unwrap();
        wait_doc(d, &r1, "rotated", "event");
        append_by(&log, &"a line of the new log\n".repeat(20));
        wait_doc(d, &log, "appended", "event");
        settle(&f, d);
    };
    let rotated_alert = |d: &Daemon, what: &str, pid: u32| {
        d.wait_for(&r1, &["updated", "truncated", "attributes_modified"], pid, |a| {
            kind(a) == "alert"
        })
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    };
    rotate(&d);
    // Changed in place.
    let pid = py(
        "import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY)\nos.pwrite(fd, b'X', 100)\n",
        &r1,
    );
    rotated_alert(&d, "changed in place", pid);
    drop(d);
    assert_eq!(f.check().0, 1, "the change is still a difference");
    assert_eq!(f.fimd(&["accept"]).code, 0);

    // A line removed, in place (the same inode, shorter).
    let d = Daemon::start_on_baseline(&f);
    rotate(&d);
    let pid = py(
        "import sys\np = sys.argv[1]\nlines = open(p, 'rb').readlines()\n\
         f = open(p, 'r+b'); f.write(b''.join(lines[:5] + lines[6:])); f.truncate(); f.close()\n",
        &r1,
    );
    rotated_alert(&d, "a line removed", pid);
    drop(d);
    assert_eq!(f.fimd(&["accept"]).code, 0);

    // Replaced by other content (a new inode renamed over it).
    let d = Daemon::start_on_baseline(&f);
    rotate(&d);
    // Made outside the watch (the same filesystem), so the rename is the only change seen.
    let forged = f.dir.path().join("forged.tmp");
    fs::write(&forged, "forged history\n").unwrap();
    sh("mv", &[s(&forged), s(&r1)]);
    // Whoever the alert names (the rename, or the writer of the inode): an alert with the
    // forged content.
    d.wait_doc("an alert on the replaced rotated copy", |a| {
        a["file"]["path"] == s(&r1)
            && kind(a) == "alert"
            && a["file"]["size"] == 15
            && ["updated", "moved", "created"].contains(&a["event"]["action"].as_str().unwrap_or(""))
    });
    drop(d);
    assert_eq!(f.fimd(&["accept"]).code, 0);

    // The new live log's verified part changed.
    let d = Daemon::start_on_baseline(&f);
    rotate(&d);
    let pid = py(
        "import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY)\nos.pwrite(fd, b'X', 5)\n\
         os.lseek(fd, 0, os.SEEK_END); os.write(fd, b'an innocent line\\n')\n",
        &log,
    );
    d.wait_for(&log, &["updated"], pid, |a| kind(a) == "alert")
        .unwrap_or_else(|e| panic!("live log: {e}"));
}
