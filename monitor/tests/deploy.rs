//! The deployment artefacts under deploy/, checked offline by the programs that will interpret
//! them: the systemd unit by `systemd-analyze`, the alert rules by `promtool`, the Kubernetes
//! manifests by the Kubernetes JSON schemas (PyPI's kubernetes-validate) and against each other,
//! the ConfigMap's configuration by `fimd config check`. `fimd run` is run with exactly the
//! capabilities the unit leaves it, in an emulation of the unit's read-only view of the system,
//! and under strace to prove the unit's system call filter allows every call it makes.
//!
//! Tools: systemd-analyze (Debian `systemd`), promtool (`prometheus`), strace, setpriv and
//! unshare (`util-linux`), python3 with `kubernetes-validate` from PyPI (it brings PyYAML).
//! A missing tool fails the test under FIMD_REQUIRE_PRIVILEGED=1 and skips it elsewhere.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{FIMD, Fixture, privileged};
use serde_json::Value;

/// `systemd-analyze security --offline=true` of deploy/systemd/fimd.service, measured with
/// systemd 252 (Debian 12). A change that weakens the sandbox raises it and fails the test.
const MAX_EXPOSURE: f64 = 3.2;

/// Kubernetes versions whose schemas the manifests must satisfy: the oldest supported (1.30
/// brought securityContext.appArmorProfile) and the newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: &[Option<&str>] = &[Some("1.30.0"), None];

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn unit_path() -> PathBuf {
    repo("deploy/systemd/fimd.service")
}

fn required() -> bool {
    std::env::var_os("FIMD_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1")
}

/// Whether `program probe…` runs successfully. When it does not, the test fails under
/// FIMD_REQUIRE_PRIVILEGED=1 (CI must install it) and skips, loudly, elsewhere.
fn have(program: &str, probe: &[&str], install: &str) -> bool {
    let ok = Command::new(program)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if required() {
        panic!("{program} {probe:?} does not run: {install}; FIMD_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!(
        "SKIPPED: {program} is missing ({install}; set FIMD_REQUIRE_PRIVILEGED=1 to make this a failure)"
    );
    false
}

fn have_systemd_analyze() -> bool {
    have("systemd-analyze", &["--version"], "apt-get install systemd")
}

fn have_promtool() -> bool {
    have("promtool", &["--version"], "apt-get install prometheus")
}

fn have_python_yaml() -> bool {
    have(
        "python3",
        &["-c", "import yaml, kubernetes_validate"],
        "python3 -m pip install kubernetes-validate",
    )
}

/// Runs a command to completion: success, stdout, stderr.
fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every document of a YAML file, as JSON (PyYAML does the parsing).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let (ok, out, err) = output(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import json, sys, yaml\n\
         docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
         json.dump(docs, sys.stdout)",
            )
            .arg(path),
    );
    assert!(ok, "{} is not valid YAML: {err}", path.display());
    serde_json::from_str(&out).unwrap()
}

fn yaml_doc(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{} should hold one document", path.display());
    docs.remove(0)
}

// ---------------------------------------------------------------------------------------------
// The systemd unit

/// `(section, key, value)` of every assignment, in order.
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not an assignment in the unit: {line:?}"));
        assert!(
            !v.ends_with('\\'),
            "line continuations are not expected: {line:?}"
        );
        out.push((section.clone(), k.trim().to_owned(), v.trim().to_owned()));
    }
    out
}

fn unit_values(entries: &[(String, String, String)], key: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|(_, k, _)| k == key)
        .map(|(_, _, v)| v.clone())
        .collect()
}

/// The capabilities an assignment list grants (union of the lines), lower case without `CAP_`.
fn unit_caps(entries: &[(String, String, String)], key: &str) -> Vec<String> {
    let mut caps = BTreeSet::new();
    for v in unit_values(entries, key) {
        assert!(
            !v.starts_with('~'),
            "{key}= is expected as a list of what is kept: {v:?}"
        );
        if v.is_empty() {
            caps.clear();
        }
        for c in v.split_whitespace() {
            let c = c.to_ascii_lowercase();
            let c = c
                .strip_prefix("cap_")
                .unwrap_or_else(|| panic!("{key}: {c:?} lacks CAP_"));
            caps.insert(c.to_owned());
        }
    }
    caps.into_iter().collect()
}

/// The unit's bounding set (lower case, no `CAP_`) and its ambient set.
fn unit_capabilities() -> (Vec<String>, Vec<String>) {
    let entries = unit_entries(&fs::read_to_string(unit_path()).unwrap());
    let bounding = unit_caps(&entries, "CapabilityBoundingSet");
    let ambient = unit_caps(&entries, "AmbientCapabilities");
    assert!(!bounding.is_empty(), "the unit must bound the capability set");
    for a in &ambient {
        assert!(bounding.contains(a), "ambient {a} is not in the bounding set");
    }
    (bounding, ambient)
}

/// A copy of the unit in `dir` whose ExecStart runs the binary under test.
fn unit_copy(dir: &Path) -> PathBuf {
    let text = fs::read_to_string(unit_path()).unwrap();
    assert!(text.contains("/usr/local/bin/fimd"));
    let copy = dir.join("fimd.service");
    fs::write(&copy, text.replace("/usr/local/bin/fimd", FIMD)).unwrap();
    copy
}

#[test]
fn systemd_unit_verifies_keeps_its_exposure_and_never_blinds_the_monitor() {
    let entries = unit_entries(&fs::read_to_string(unit_path()).unwrap());
    let one = |key: &str| {
        let v = unit_values(&entries, key);
        assert_eq!(v.len(), 1, "{key}= should be set once: {v:?}");
        v[0].clone()
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("ExecStart"), "/usr/local/bin/fimd -c /etc/fimd/fimd.toml run");
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("SystemCallArchitectures"), "native");
    let rw = one("ReadWritePaths");
    for p in ["/var/lib/fimd", "/var/log/fimd"] {
        assert!(rw.split_whitespace().any(|w| w == p), "ReadWritePaths= lacks {p}");
    }
    for key in [
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "RestrictRealtime",
        "LockPersonality",
        "MemoryDenyWriteExecute",
    ] {
        assert_eq!(one(key), "yes", "{key}=");
    }
    // Each of these would hide from fimd files it watches or the processes it names.
    for key in [
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "InaccessiblePaths",
        "TemporaryFileSystem",
        "PrivateUsers",
        "DynamicUser",
        "RootDirectory",
        "RootImage",
    ] {
        assert!(
            unit_values(&entries, key).is_empty(),
            "{key}= would blind the monitor"
        );
    }
    for v in unit_values(&entries, "ProtectProc") {
        assert_eq!(v, "default", "ProtectProc={v} hides the writers' /proc/PID");
    }
    for v in unit_values(&entries, "ProcSubset") {
        assert_eq!(v, "all", "ProcSubset={v} hides the writers' /proc/PID");
    }
    let (bounding, _) = unit_capabilities();
    for cap in ["bpf", "perfmon", "dac_read_search"] {
        assert!(bounding.contains(&cap.to_owned()), "the unit must keep CAP_{cap}");
    }
    for cap in ["sys_admin", "dac_override", "sys_module", "net_admin"] {
        assert!(
            !bounding.contains(&cap.to_owned()),
            "CAP_{cap} is more than fimd needs"
        );
    }

    if !have_systemd_analyze() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = unit_copy(dir.path());
    let (ok, out, err) = output(Command::new("systemd-analyze").arg("verify").arg(&copy));
    // verify exits 0 on unknown keys and bad values, printing "FILE:LINE: …": none may appear.
    let complaints: Vec<&str> = err.lines().filter(|l| l.contains("fimd.service")).collect();
    assert!(ok && complaints.is_empty(), "systemd-analyze verify: {out}{err}");

    let (_, out, err) = output(
        Command::new("systemd-analyze")
            .args(["security", "--no-pager", "--offline=true"])
            .arg(&copy),
    );
    let score: f64 = out
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for fimd.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}{err}"));
    eprintln!("systemd-analyze security: exposure {score} (at most {MAX_EXPOSURE})");
    assert!(
        score <= MAX_EXPOSURE + 1e-9,
        "the unit's exposure rose to {score} (was {MAX_EXPOSURE}): {out}"
    );
}

/// Every system call a `SystemCallFilter=@group name…` list stands for, from
/// `systemd-analyze syscall-filter` (groups nest).
struct SyscallGroups(BTreeMap<String, Vec<String>>);

impl SyscallGroups {
    fn load() -> SyscallGroups {
        let (ok, out, err) = output(Command::new("systemd-analyze").args(["syscall-filter", "--no-pager"]));
        assert!(ok, "systemd-analyze syscall-filter: {err}");
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in out.lines() {
            if line.starts_with('@') {
                current = Some(line.trim().to_owned());
                groups.insert(line.trim().to_owned(), Vec::new());
            } else if line.starts_with(' ') {
                let item = line.trim();
                if let (Some(g), false) = (&current, item.starts_with('#') || item.is_empty()) {
                    groups.get_mut(g).unwrap().push(item.to_owned());
                }
            } else {
                current = None;
            }
        }
        assert!(groups.contains_key("@system-service"), "unexpected output: {out}");
        SyscallGroups(groups)
    }

    fn expand(&self, item: &str, into: &mut BTreeSet<String>) {
        if item.starts_with('@') {
            let members = self
                .0
                .get(item)
                .unwrap_or_else(|| panic!("unknown system call group {item}"));
            for m in members {
                self.expand(m, into);
            }
        } else {
            into.insert(item.to_owned());
        }
    }

    /// What the unit's SystemCallFilter= lines allow: the first, an allow list; later `~` lines
    /// take away, later plain lines add.
    fn allowed_by_unit(&self) -> BTreeSet<String> {
        let entries = unit_entries(&fs::read_to_string(unit_path()).unwrap());
        let lines = unit_values(&entries, "SystemCallFilter");
        assert!(
            lines.first().is_some_and(|l| !l.starts_with('~')),
            "the unit's SystemCallFilter= should start with an allow list: {lines:?}"
        );
        let mut allowed = BTreeSet::new();
        for line in lines {
            let (deny, items) = match line.strip_prefix('~') {
                Some(rest) => (true, rest),
                None => (false, line.as_str()),
            };
            let mut set = BTreeSet::new();
            for item in items.split_whitespace() {
                self.expand(item, &mut set);
            }
            if deny {
                allowed.retain(|s| !set.contains(s));
            } else {
                allowed.extend(set);
            }
        }
        allowed
    }
}

#[test]
fn systemd_syscall_filter_allows_the_sensor_and_denies_process_writes() {
    if !have_systemd_analyze() {
        return;
    }
    let allowed = SyscallGroups::load().allowed_by_unit();
    for s in [
        "bpf",
        "perf_event_open",
        "openat2",
        "statx",
        "getdents64",
        "prlimit64",
        "flistxattr",
        "readlinkat",
        "epoll_wait",
        "sendmsg",
        "accept4",
    ] {
        assert!(allowed.contains(s), "SystemCallFilter= does not allow {s}");
    }
    // CAP_SYS_PTRACE is kept to read /proc/PID/exe, not to write into other processes.
    for s in [
        "ptrace",
        "process_vm_writev",
        "pidfd_getfd",
        "mount",
        "init_module",
        "kexec_load",
    ] {
        assert!(!allowed.contains(s), "SystemCallFilter= allows {s}");
    }
}

// ---------------------------------------------------------------------------------------------
// `fimd run` as the unit runs it

/// A running `fimd run` (possibly under a wrapper) and what it printed on stderr.
struct Daemon {
    child: Child,
    /// The process that gets signals: fimd itself.
    fimd_pid: u32,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn spawn(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("fimd run: {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let fimd_pid = child.id();
        Daemon { child, fimd_pid, log }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to 60 s for `n` stderr lines containing `needle`.
    fn wait_log(&mut self, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log().iter().filter(|l| l.contains(needle)).count() < n {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "fimd run exited ({st}) before saying {needle:?}: {:?}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "fimd run never said {needle:?} ({n}×): {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on a process this test started.
        unsafe { libc::kill(self.fimd_pid as i32, sig) };
    }

    /// SIGTERM, then the exit status (within 20 s).
    fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "fimd run did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGKILL);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A baselined fixture whose alerts go to `DIR/log/alerts.jsonl`, plus `extra` configuration.
fn baselined(extra: &str) -> (Fixture, PathBuf) {
    let f = Fixture::new();
    f.init();
    let logs = f.dir.path().join("log");
    fs::create_dir(&logs).unwrap();
    let sink = logs.join("alerts.jsonl");
    let text = fs::read_to_string(&f.config).unwrap();
    fs::write(
        &f.config,
        format!(
            "{text}\n[alerts]\njsonl = {:?}\n{extra}",
            sink.display().to_string()
        ),
    )
    .unwrap();
    (f, sink)
}

/// A writer that lives on for a while after its write, so its /proc/PID/exe can be read.
struct Writer {
    child: Child,
}

impl Writer {
    fn append(path: &Path) -> Writer {
        let child = Command::new("python3")
            .args([
                "-c",
                "import sys, time\nwith open(sys.argv[1], 'a') as f:\n    f.write('tampered\\n')\ntime.sleep(5)",
            ])
            .arg(path)
            .spawn()
            .expect("python3");
        Writer { child }
    }

    /// What the writer runs now (python3 may be a wrapper script that execs it).
    fn exe(&self) -> PathBuf {
        fs::read_link(format!("/proc/{}/exe", self.child.id())).unwrap()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to 10 s for an `updated` alert on `path` by process `pid` in the JSON-lines `sink`.
fn expect_alert(sink: &Path, path: &Path, pid: u32) -> Value {
    let p = path.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alerts: Vec<Value> = fs::read_to_string(sink)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if let Some(a) = alerts.iter().find(|a| {
            a["file"]["path"] == p.as_str() && a["event"]["action"] == "updated" && a["process"]["pid"] == pid
        }) {
            return a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no updated alert for {p} by pid {pid} within 10 s; alerts: {alerts:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
    let mut d = Daemon::spawn(run_as_the_unit(&f, &logs, &bounding, &ambient));
    d.wait_log("ready", 1);

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
    let a = expect_alert(&sink, &target, w.pid());
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
    let (f, sink) = baselined("");
    let trace = f.dir.path().join("strace.txt");
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-c", "-o"])
        .arg(&trace)
        .args(["--", FIMD, "-c"])
        .arg(&f.config)
        .arg("run");
    let mut d = Daemon::spawn(c);
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
    d.wait_log("ready", 1);
    let target = f.path("a.txt");
    let w = Writer::append(&target);
    expect_alert(&sink, &target, w.pid());
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
    let (f, sink) = baselined("");
    let socket_path = f.dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut child = KillOnDrop(
        Command::new(FIMD)
            .arg("-c")
            .arg(&f.config)
            .arg("run")
            .env("NOTIFY_SOCKET", &socket_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let mut stderr = child.stderr.take().unwrap();
    // SAFETY: fcntl on a descriptor this test owns.
    unsafe {
        let fd = stderr.as_raw_fd();
        libc::fcntl(
            fd,
            libc::F_SETFL,
            libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
        );
    }
    let mut text = String::new();
    let mut drain = |text: &mut String| {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buf) {
            let s = String::from_utf8_lossy(&buf[..n]);
            eprint!("{s}");
            text.push_str(&s);
        }
    };
    // Each notification with whether stderr had said "ready" by then. A datagram is read before
    // stderr is drained: whatever fimd wrote before sending it is then in the pipe.
    let mut notes: Vec<(String, bool)> = Vec::new();
    let mut receive = |text: &mut String, notes: &mut Vec<(String, bool)>| {
        let mut batch = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            batch.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        drain(text);
        let ready = text.contains("ready");
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
        receive(&mut text, &mut notes);
        if let Some(st) = child.try_wait().unwrap() {
            panic!("fimd run exited ({st}) without READY=1: {text}");
        }
        if !said_ready && text.contains("ready") {
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
            assert!(ready, "READY=1 came before fimd said it was ready: {text}");
        }
    }
    // READY=1 means attached: a change right after it is reported.
    let target = f.path("a.txt");
    let w = Writer::append(&target);
    expect_alert(&sink, &target, w.pid());

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        receive(&mut text, &mut notes);
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "fimd run did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    receive(&mut text, &mut notes);
    assert_eq!(st.code(), Some(0), "{text}");
    assert!(has(&notes, "STOPPING=1"), "no STOPPING=1 at shutdown: {notes:?}");
    assert_eq!(
        notes.iter().filter(|(m, _)| m == "READY=1").count(),
        1,
        "READY=1 more than once without a reload: {notes:?}"
    );
}

/// A child process killed, if still running, when the test ends (or panics).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `GET path` on 127.0.0.1:port: status and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Some((status, body))
}

/// The `fim_*` metric names the alert rules use.
fn metrics_in_rules() -> BTreeSet<String> {
    let text = fs::read_to_string(repo("deploy/prometheus/fimd-rules.yml")).unwrap();
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("fim_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
fn metrics_endpoint_serves_the_probes_and_every_metric_the_rules_use() {
    if !privileged("fimd run's metrics endpoint")
        || !have("python3", &["--version"], "apt-get install python3")
    {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (f, sink) = baselined(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let mut c = Command::new(FIMD);
    c.arg("-c").arg(&f.config).arg("run");
    let mut d = Daemon::spawn(c);
    d.wait_log("ready", 1);
    let get =
        |path: &str| http_get(port, path).unwrap_or_else(|| panic!("GET {path} on 127.0.0.1:{port} failed"));
    assert_eq!(get("/healthz").0, 200, "/healthz");
    assert_eq!(get("/readyz").0, 200, "/readyz once ready");

    let target = f.path("a.txt");
    let w = Writer::append(&target);
    expect_alert(&sink, &target, w.pid());
    let (status, body) = get("/metrics");
    assert_eq!(status, 200, "/metrics: {body}");
    let exported: BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for name in metrics_in_rules() {
        assert!(
            exported.contains(name.as_str()),
            "/metrics lacks {name}, which the alert rules use:\n{body}"
        );
    }
    let sample = |prefix: &str| {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("/metrics has no {prefix}…:\n{body}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(sample("fim_sensor_attached{sensor=\"ebpf\"}"), 1.0);
    assert!(sample("fim_last_full_check_timestamp_seconds") > 0.0);
    let violations: f64 = body
        .lines()
        .filter(|l| l.starts_with("fim_integrity_changes_total{") && l.contains("kind=\"alert\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(violations >= 1.0, "the violation is not counted:\n{body}");
    assert_eq!(d.stop().code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// Prometheus rules

#[test]
fn prometheus_rules_pass_promtool_and_each_rule_is_tested_firing_and_silent() {
    if !have_promtool() || !have_python_yaml() {
        return;
    }
    let rules = repo("deploy/prometheus/fimd-rules.yml");
    let tests = repo("deploy/prometheus/fimd-rules.test.yml");
    let (ok, out, err) = output(Command::new("promtool").args(["check", "rules"]).arg(&rules));
    assert!(ok, "promtool check rules: {out}{err}");
    let (ok, out, err) = output(Command::new("promtool").args(["test", "rules"]).arg(&tests));
    assert!(ok, "promtool test rules: {out}{err}");

    let doc = yaml_doc(&rules);
    let mut alerts = BTreeSet::new();
    for g in doc["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().expect("only alerting rules");
            alerts.insert(name.to_owned());
            let sev = r["labels"]["severity"].as_str().unwrap_or_default();
            assert!(["critical", "warning"].contains(&sev), "{name}: severity {sev:?}");
            for a in ["summary", "description"] {
                assert!(r["annotations"][a].is_string(), "{name} lacks annotations.{a}");
            }
            assert!(
                r["annotations"]["description"]
                    .as_str()
                    .unwrap()
                    .contains("Runbook:"),
                "{name}'s description has no runbook hint"
            );
        }
    }
    for expected in [
        "FimdIntegrityViolation",
        "FimdKernelEventsLost",
        "FimdSensorDetached",
        "FimdFullCheckOverdue",
        "FimdDown",
        "FimdAbsent",
        "FimdAlertOutputDropping",
        "FimdBaselineRolledBack",
        "FimdDaemonSetNotFullyAvailable",
    ] {
        assert!(alerts.contains(expected), "no {expected} rule");
    }
    // Every rule has a test where it fires and one where it must not.
    let (mut fires, mut silent) = (BTreeSet::new(), BTreeSet::new());
    for t in yaml_doc(&tests)["tests"].as_array().unwrap() {
        for case in t["alert_rule_test"].as_array().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            let n = case["exp_alerts"].as_array().map_or(0, Vec::len);
            if n == 0 { &mut silent } else { &mut fires }.insert(name);
        }
    }
    for a in &alerts {
        assert!(fires.contains(a), "no test where {a} fires");
        assert!(silent.contains(a), "no test where {a} stays silent");
    }
}

#[test]
fn prometheusrule_carries_exactly_the_rules_file_groups() {
    if !have_python_yaml() {
        return;
    }
    let file = yaml_doc(&repo("deploy/prometheus/fimd-rules.yml"));
    let cr = yaml_doc(&repo("deploy/kubernetes/prometheusrule.yaml"));
    assert_eq!(cr["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(cr["kind"], "PrometheusRule");
    assert_eq!(cr["metadata"]["name"], "fimd");
    assert_eq!(cr["metadata"]["namespace"], "fimd");
    assert_eq!(
        cr["spec"]["groups"], file["groups"],
        "prometheusrule.yaml's spec.groups differ from deploy/prometheus/fimd-rules.yml: edit both"
    );
    let keys: Vec<&String> = cr["spec"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["groups"], "PrometheusRule spec holds only groups");
    if have_promtool() {
        let dir = tempfile::tempdir().unwrap();
        let extracted = dir.path().join("groups.json");
        fs::write(&extracted, serde_json::to_string(&cr["spec"]).unwrap()).unwrap();
        let (ok, out, err) = output(Command::new("promtool").args(["check", "rules"]).arg(&extracted));
        assert!(
            ok,
            "promtool check rules on the PrometheusRule's groups: {out}{err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes manifests

/// Every manifest under deploy/kubernetes, by file name.
fn manifests() -> BTreeMap<String, Value> {
    let dir = repo("deploy/kubernetes");
    let mut out = BTreeMap::new();
    for e in fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.insert(name, yaml_doc(&p));
        }
    }
    out
}

fn by_kind<'a>(m: &'a BTreeMap<String, Value>, kind: &str) -> &'a Value {
    let found: Vec<&Value> = m.values().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn is_custom(doc: &Value) -> bool {
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    api.starts_with("monitoring.coreos.com/") || api.starts_with("kustomize.config.k8s.io/")
}

#[test]
fn kubernetes_manifests_validate_against_the_kubernetes_schemas() {
    if !have_python_yaml() {
        return;
    }
    let m = manifests();
    let files: Vec<PathBuf> = m
        .iter()
        .filter(|(_, d)| !is_custom(d))
        .map(|(n, _)| repo("deploy/kubernetes").join(n))
        .collect();
    assert!(files.len() >= 5, "{files:?}");
    for version in KUBERNETES_VERSIONS {
        let mut c = Command::new("python3");
        c.args(["-m", "kubernetes_validate", "--strict"]);
        if let Some(v) = version {
            c.args(["-k", v]);
        }
        let (ok, out, err) = output(c.args(&files));
        let all = format!("{out}{err}");
        eprintln!("{all}");
        assert!(ok, "kubernetes-validate --strict {version:?}:\n{all}");
        assert_eq!(
            all.lines()
                .filter(|l| l.starts_with("INFO") && l.contains(" passed "))
                .count(),
            files.len(),
            "every manifest must be checked against a schema ({version:?}):\n{all}"
        );
        assert!(!all.contains("WARN") && !all.contains("ERROR"), "{all}");
    }
}

#[test]
fn kubernetes_manifests_agree_with_each_other_and_with_the_unit() {
    if !have_python_yaml() {
        return;
    }
    let m = manifests();
    let ns = by_kind(&m, "Namespace");
    let namespace = ns["metadata"]["name"].as_str().unwrap();
    assert_eq!(namespace, "fimd");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    for (file, d) in &m {
        if d["kind"] != "Namespace" && d["kind"] != "Kustomization" {
            assert_eq!(d["metadata"]["namespace"], namespace, "{file}: namespace");
        }
    }

    // kustomization.yaml lists every manifest, and names the image the pods use.
    let k = by_kind(&m, "Kustomization");
    let listed: BTreeSet<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let present: BTreeSet<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|n| *n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization.yaml resources");

    let ds = by_kind(&m, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "the DaemonSet's selector must match its pods");
    }
    assert_eq!(pod["hostPID"], true, "process attribution needs the host's /proc");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"], serde_json::json!([{"operator": "Exists"}]));
    let sa = by_kind(&m, "ServiceAccount");
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let inits = pod["initContainers"].as_array().unwrap();
    assert_eq!(inits.len(), 1);
    let init = &inits[0];
    let image = k["images"][0]["name"].as_str().unwrap();
    assert_eq!(c["image"], image);
    assert_eq!(init["image"], image);
    assert_eq!(
        c["command"],
        serde_json::json!(["fimd", "-c", "/etc/fimd/fimd.toml", "run"])
    );

    // The configuration: mounted where the command reads it, parsed by fimd itself below.
    let cm = by_kind(&m, "ConfigMap");
    let toml_text = cm["data"]["fimd.toml"].as_str().unwrap();
    let cfg: toml::Value = toml::from_str(toml_text).unwrap();
    let state_dir = cfg["state_dir"].as_str().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let mount = |ctr: &Value, path: &str| -> Value {
        ctr["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|mt| mt["mountPath"] == path)
            .unwrap_or_else(|| panic!("{} mounts nothing at {path}", ctr["name"]))
            .clone()
    };
    for ctr in [c, init] {
        let cfg_mount = mount(ctr, "/etc/fimd");
        assert_eq!(
            volume(cfg_mount["name"].as_str().unwrap())["configMap"]["name"],
            cm["metadata"]["name"]
        );
        let host = mount(ctr, "/host");
        assert_eq!(host["readOnly"], true, "the host's root must be read-only");
        assert_eq!(host["mountPropagation"], "HostToContainer");
        assert_eq!(volume(host["name"].as_str().unwrap())["hostPath"]["path"], "/");
        // The baseline survives pod restarts: on the node.
        let state = mount(ctr, state_dir);
        assert_eq!(
            volume(state["name"].as_str().unwrap())["hostPath"]["path"],
            state_dir
        );
        let sc = &ctr["securityContext"];
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["runAsUser"], 0);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        for r in ["requests", "limits"] {
            assert!(
                ctr["resources"][r]["memory"].is_string(),
                "{}: resources.{r}",
                ctr["name"]
            );
        }
    }
    for (path, host) in [
        ("/sys/kernel/btf", "/sys/kernel/btf"),
        ("/sys/kernel/tracing", "/sys/kernel/tracing"),
    ] {
        let mt = mount(c, path);
        assert_eq!(mt["readOnly"], true);
        assert_eq!(volume(mt["name"].as_str().unwrap())["hostPath"]["path"], host);
    }
    // The init container baselines a node only when it has none, and never replaces one.
    let script = init["command"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap();
    assert!(
        script.contains(&format!("test -e {state_dir}/baseline.db")),
        "{script}"
    );
    assert!(script.contains("fimd -c /etc/fimd/fimd.toml init"), "{script}");

    // The same capabilities as the systemd unit.
    let (bounding, _) = unit_capabilities();
    let mut added: Vec<String> = c["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_ascii_lowercase())
        .collect();
    added.sort();
    assert_eq!(
        added, bounding,
        "the DaemonSet and the systemd unit should grant the same capabilities"
    );
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        serde_json::json!(["DAC_READ_SEARCH"]),
        "init reads files and loads no eBPF"
    );

    let env = c["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "NODE_NAME" && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
        "NODE_NAME from the downward API"
    );

    // Metrics: the configured listener, the container port, the probes, the Service and the
    // ServiceMonitor line up.
    let listen = cfg["metrics"]["listen"].as_str().unwrap();
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        listen.starts_with("0.0.0.0:"),
        "metrics must listen on the pod IP: {listen}"
    );
    let ports = c["ports"].as_array().unwrap();
    let metrics_port = ports
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a port named metrics");
    assert_eq!(metrics_port["containerPort"], port);
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    let startup = &c["startupProbe"];
    let budget = startup["periodSeconds"].as_u64().unwrap() * startup["failureThreshold"].as_u64().unwrap();
    assert!(
        budget >= 15 * 60,
        "the initial comparison may take many minutes: startup budget {budget} s"
    );
    let svc = by_kind(&m, "Service");
    assert_eq!(
        svc["spec"]["clusterIP"], "None",
        "headless: one endpoint per node"
    );
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "the Service must select the fimd pods");
    }
    let svc_port = &svc["spec"]["ports"][0];
    assert_eq!(svc_port["name"], "metrics");
    assert_eq!(svc_port["port"], port);
    assert_eq!(svc_port["targetPort"], "metrics");

    let sm = by_kind(&m, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert!(sm["metadata"]["name"].is_string());
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "the ServiceMonitor must select the Service"
        );
    }
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!([namespace])
    );
    let endpoints = sm["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"], "metrics");
    assert_eq!(endpoints[0]["path"], "/metrics");
    // The rules expect job="fimd": a ServiceMonitor's job is its Service's name.
    assert!(sm["spec"]["jobLabel"].is_null());
    assert_eq!(svc["metadata"]["name"], "fimd");
}

#[test]
fn configmap_configuration_passes_fimd_config_check() {
    if !have_python_yaml() {
        return;
    }
    let cm = yaml_doc(&repo("deploy/kubernetes/configmap.yaml"));
    let text = cm["data"]["fimd.toml"].as_str().unwrap();
    // The watches name the host's paths under /host; here /host is a link to this machine's
    // root, so `config check` also proves they exist on a typical Linux host.
    assert!(text.contains("\"/host/"), "the watches should be under /host");
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/", dir.path().join("host")).unwrap();
    let rerooted = text.replace("\"/host/", &format!("\"{}/host/", dir.path().display()));
    let cfg = dir.path().join("fimd.toml");
    fs::write(&cfg, &rerooted).unwrap();
    let r = common::run({
        let mut c = Command::new(FIMD);
        c.arg("-c").arg(&cfg).args(["config", "check"]);
        c
    });
    assert_eq!(
        r.code, 0,
        "fimd config check on the ConfigMap's fimd.toml:\n{}{}",
        r.stdout, r.stderr
    );
}
