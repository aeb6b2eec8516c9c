//! `fimd run` as deploy/systemd/fimd.service runs it: with exactly the capabilities the unit
//! leaves it, in an emulation of the unit's read-only view of the system, under strace to prove
//! the unit's system call filter allows every call it makes, and speaking sd_notify.
//!
//! Tools: strace, setpriv and unshare (`util-linux`), systemd-analyze (Debian `systemd`),
//! python3. A missing tool fails the test under FIMD_REQUIRE_PRIVILEGED=1 and skips it elsewhere.
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::deploy::{SyscallGroups, Writer, baselined, have, have_systemd_analyze, unit_capabilities};
use common::{FIMD, Fixture, privileged};

const CAP_NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

fn cap_mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| {
            let bit = CAP_NAMES
                .iter()
                .position(|n| n == c)
                .unwrap_or_else(|| panic!("unknown capability {c}"));
            1u64 << bit
        })
        .fold(0, |a, b| a | b)
}

/// `CapBnd` and `CapEff` of a process.
fn process_caps(pid: u32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"));
        u64::from_str_radix(line.trim(), 16).unwrap()
    };
    (field("CapBnd:"), field("CapEff:"))
}

/// `setpriv` arguments leaving uid 0 with exactly `caps` (and `ambient`), no new privileges.
fn setpriv_args(caps: &[String], ambient: &[String]) -> Vec<String> {
    let list = |set: &[String]| {
        std::iter::once("-all".to_owned())
            .chain(set.iter().map(|c| format!("+{c}")))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut args = vec![
        format!("--bounding-set={}", list(caps)),
        format!("--inh-caps={}", list(ambient)),
        "--no-new-privs".to_owned(),
    ];
    if !ambient.is_empty() {
        args.push(format!("--ambient-caps={}", list(ambient)));
    }
    args
}

/// The unit's view of the system, emulated in a private mount namespace before `exec "$@"`:
/// ProtectSystem=strict with ReadWritePaths= (every mount read-only but /dev and the state and
/// alert directories), ReadOnlyPaths=/proc, ProtectKernelTunables= (/sys read-only,
/// /proc/kallsyms and /proc/kcore inaccessible) and ProtectControlGroups=.
const SANDBOX: &str = r#"set -e
state="$1"; logs="$2"; mask="$3"; shift 3
mount --make-rprivate /
mount --bind "$state" "$state"
mount --bind "$logs" "$logs"
for f in /proc/kallsyms /proc/kcore; do
  if [ -e "$f" ]; then mount --bind "$mask" "$f"; fi
done
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r m; do
  case "$m" in
    /dev|/dev/*|"$state"|"$logs") ;;
    *) mount -o remount,bind,ro "$m" 2>/dev/null || echo "sandbox: $m stays writable" >&2 ;;
  esac
done
if [ -w / ] || [ -w /proc/self/comm ]; then echo "sandbox: / or /proc is writable" >&2; exit 1; fi
exec "$@"
"#;

/// `fimd run` on `f` as the unit would start it: in the sandbox, uid 0 with only `caps`.
fn run_as_the_unit(f: &Fixture, logs: &Path, caps: &[String], ambient: &[String]) -> Command {
    let mask = f.dir.path().join("inaccessible");
    fs::write(&mask, "").unwrap();
    fs::set_permissions(&mask, fs::Permissions::from_mode(0o000)).unwrap();
    let mut c = Command::new("unshare");
    c.args(["--mount", "--", "sh", "-c", SANDBOX, "sandbox"])
        .arg(&f.state)
        .arg(logs)
        .arg(&mask)
        .arg("setpriv")
        .args(setpriv_args(caps, ambient))
        .args(["--", FIMD, "-c"])
        .arg(&f.config)
        .arg("run")
        // As the unit's Environment= does: SQLite's temporary files beside the baseline.
        .env("SQLITE_TMPDIR", &f.state)
        .env_remove("NOTIFY_SOCKET");
    c
}

fn have_privileged_tools(what: &str) -> bool {
    privileged(what)
        && have("setpriv", &["--version"], "apt-get install util-linux")
        && have("unshare", &["--version"], "apt-get install util-linux")
        && have("python3", &["--version"], "apt-get install python3")
}

#[test]
fn run_works_with_exactly_the_units_capabilities_in_its_sandbox() {
    if !have_privileged_tools("running fimd with the unit's capabilities") {
        return;
    }
    let (bounding, ambient) = unit_capabilities();
    let (f, sink) = baselined("");
    let logs = sink.parent().unwrap().to_owned();
    let mut d = Daemon::spawn(&f, run_as_the_unit(&f, &logs, &bounding, &ambient));
    d.wait_log("ready");

    let (bnd, eff) = process_caps(d.fimd_pid);
    let want = cap_mask(&bounding);
    assert_eq!(
        bnd, want,
        "bounding set {bnd:#x}, the unit's is {want:#x} ({bounding:?})"
    );
    assert_eq!(
        eff, want,
        "effective set {eff:#x}, the unit's is {want:#x} ({bounding:?})"
    );

    // A full-root writer, as an intruder would be.
    let target = f.path("a.txt");
    let w = Writer::append(&target);
    let a = d.expect(&target, "updated", w.pid());
    eprintln!("alert: {a}");
    if bounding.iter().any(|c| c == "sys_ptrace") {
        assert_eq!(
            a["process"]["executable"],
            w.exe().display().to_string().as_str(),
            "CAP_SYS_PTRACE is in the unit to name the writer's executable: {a}"
        );
    }
    let st = d.stop();
    assert_eq!(st.code(), Some(0), "fimd run did not stop cleanly: {:?}", d.log());
}

#[test]
fn run_without_cap_bpf_or_cap_perfmon_fails_with_status_2() {
    if !have_privileged_tools("running fimd without CAP_BPF") {
        return;
    }
    let (bounding, _) = unit_capabilities();
    let (f, _) = baselined("");
    for missing in ["bpf", "perfmon"] {
        let caps: Vec<String> = bounding.iter().filter(|c| *c != missing).cloned().collect();
        let mut c = Command::new("setpriv");
        c.args(setpriv_args(&caps, &[]))
            .args(["--", FIMD, "-c"])
            .arg(&f.config)
            .arg("run");
        let r = common::run(c);
        assert_eq!(
            r.code, 2,
            "without CAP_{missing}: status {}: {}",
            r.code, r.stderr
        );
        assert!(
            r.stderr.contains("fimd: error:") && r.stderr.contains("eBPF"),
            "without CAP_{missing}, fimd run should say why: {}",
            r.stderr
        );
    }
}

/// `strace -c` output: the names of the system calls made.
fn strace_summary(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with(|c: char| c.is_ascii_digit()) && !l.ends_with("total")
        })
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect()
}

#[test]
fn run_makes_only_system_calls_the_units_filter_allows() {
    if !privileged("tracing fimd run's system calls")
        || !have("strace", &["-V"], "apt-get install strace")
        || !have_systemd_analyze()
        || !have("python3", &["--version"], "apt-get install python3")
    {
        return;
    }
    let allowed = SyscallGroups::load().allowed_by_unit();
    let (f, _) = baselined("");
    let trace = f.dir.path().join("strace.txt");
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-c", "-o"])
        .arg(&trace)
        .args(["--", FIMD, "-c"])
        .arg(&f.config)
        .arg("run");
    let mut d = Daemon::spawn(&f, c);
    // Signals go to fimd, strace's child (strace first forks short-lived children of its own to
    // probe ptrace features: find the one running fimd).
    let deadline = Instant::now() + Duration::from_secs(10);
    d.fimd_pid = 'found: loop {
        let kids =
            fs::read_to_string(format!("/proc/{0}/task/{0}/children", d.child.id())).unwrap_or_default();
        for pid in kids.split_whitespace() {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.starts_with(FIMD.as_bytes()) && cmdline.ends_with(b"run\0") {
                break 'found pid.parse().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "strace started no fimd");
        std::thread::sleep(Duration::from_millis(5));
    };
    d.wait_log("ready");
    let target = f.path("a.txt");
    let w = Writer::append(&target);
    d.expect(&target, "updated", w.pid());
    let st = d.stop();
    assert!(st.success(), "fimd run under strace: {st}: {:?}", d.log());
    let used = strace_summary(&fs::read_to_string(&trace).unwrap());
    assert!(used.contains("bpf"), "the trace looks wrong: {used:?}");
    let denied: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    eprintln!("fimd run made {} distinct system calls", used.len());
    assert!(
        denied.is_empty(),
        "fimd run makes system calls the unit's SystemCallFilter= denies: {denied:?}"
    );
}

#[test]
fn run_notifies_ready_only_once_ready_and_stopping_at_shutdown() {
    if !privileged("fimd run's sd_notify protocol")
        || !have("python3", &["--version"], "apt-get install python3")
    {
        return;
    }
    let (f, _) = baselined("");
    let socket_path = f.dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut d = Daemon::spawn(&f, {
        let mut c = Daemon::command(&f);
        c.env("NOTIFY_SOCKET", &socket_path);
        c
    });
    // Each notification with whether stderr had said "ready" by then. A datagram is read before
    // stderr is looked at: whatever fimd wrote before sending it is then in the file.
    let mut notes: Vec<(String, bool)> = Vec::new();
    let receive = |d: &Daemon, notes: &mut Vec<(String, bool)>| {
        let mut batch = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            batch.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        // fimd's stderr is a file: what it wrote before sending these is in it now.
        let ready = d.log().iter().any(|l| l.contains("ready"));
        for msg in batch {
            eprintln!("sd_notify: {msg:?}");
            notes.extend(msg.lines().map(|l| (l.to_owned(), ready)));
        }
    };
    let has = |notes: &[(String, bool)], what: &str| notes.iter().any(|(m, _)| m == what);
    // READY=1 within 60 s, and within 5 s of stderr's "ready".
    let mut deadline = Instant::now() + Duration::from_secs(60);
    let mut said_ready = false;
    while !has(&notes, "READY=1") {
        receive(&d, &mut notes);
        if let Some(st) = d.exited() {
            panic!("fimd run exited ({st}) without READY=1: {:#?}", d.log());
        }
        if !said_ready && d.log().iter().any(|l| l.contains("ready")) {
            said_ready = true;
            deadline = deadline.min(Instant::now() + Duration::from_secs(5));
        }
        assert!(
            Instant::now() < deadline,
            "no READY=1 on $NOTIFY_SOCKET (stderr said ready: {said_ready}); notifications: {notes:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for (m, ready) in &notes {
        if m == "READY=1" {
            assert!(
                ready,
                "READY=1 came before fimd said it was ready: {:#?}",
                d.log()
            );
        }
    }
    // READY=1 means attached: a change right after it is reported.
    let target = f.path("a.txt");
    let w = Writer::append(&target);
    d.expect(&target, "updated", w.pid());

    // The socket keeps what fimd sent until it stopped.
    let st = d.stop();
    receive(&d, &mut notes);
    assert_eq!(st.code(), Some(0), "{:#?}", d.log());
    assert!(has(&notes, "STOPPING=1"), "no STOPPING=1 at shutdown: {notes:?}");
    assert_eq!(
        notes.iter().filter(|(m, _)| m == "READY=1").count(),
        1,
        "READY=1 more than once without a reload: {notes:?}"
    );
}
