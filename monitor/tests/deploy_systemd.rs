//! deploy/systemd/fimd.service, checked offline by `systemd-analyze`: it verifies, keeps its
//! exposure score, never takes from the monitor what it needs to see changes, and its system
//! call filter allows the sensor's calls and denies writes into other processes.
//!
//! Tools: systemd-analyze (Debian `systemd`). A missing tool fails the test under
//! FIMD_REQUIRE_PRIVILEGED=1 and skips it elsewhere.
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::FIMD;
use common::deploy::{
    SyscallGroups, have_systemd_analyze, output, unit_capabilities, unit_entries, unit_path, unit_values,
};

/// `systemd-analyze security --offline=true` of deploy/systemd/fimd.service, measured with
/// systemd 252 (Debian 12). A change that weakens the sandbox raises it and fails the test.
const MAX_EXPOSURE: f64 = 3.2;

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
