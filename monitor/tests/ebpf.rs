//! `fimd selftest`: the sensor `fimd run` would choose loads, attaches, and reports real changes
//! made by child processes, naming each child.
mod common;

use std::process::Command;

#[test]
fn selftest_attaches_run_sensor_and_names_writers() {
    if !common::privileged("loading eBPF programs") {
        return;
    }
    let r = common::run({
        let mut c = Command::new(common::FIMD);
        c.arg("selftest");
        c
    });
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("sensor: ebpf"), "{}", r.stdout);
    // The same hooks `fimd run` attaches with an append-only watch.
    for hook in [
        "raw_tracepoint/ctime_ns_xchg",
        "raw_tracepoint/inode_set_ctime_to_ts",
        "raw_tracepoint/sys_enter",
    ] {
        assert!(r.stdout.contains(hook), "{hook} missing: {}", r.stdout);
    }
    // Each change is reported by the process that made it: the pid printed for the child
    // equals the record's.
    for (action, program) in [("append", "sh"), ("overwrite", "dd")] {
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with(action))
            .unwrap_or_else(|| panic!("no {action} line: {}", r.stdout));
        let pid = |after: &str| -> u32 {
            let rest = &line[line.find(after).unwrap() + after.len()..];
            rest[..rest.find(')').unwrap()].parse().unwrap()
        };
        assert!(line.contains(&format!("by {program} (pid ")), "{line}");
        assert_eq!(pid("(pid "), pid("record from pid "), "{line}");
        assert!(
            line.contains(&format!("({program})")),
            "record names another task: {line}"
        );
    }
    assert!(
        r.stdout.contains("flagged below the verified length"),
        "{}",
        r.stdout
    );
}

#[test]
fn selftest_without_privilege_exits_2_with_reason() {
    if !common::privileged("running fimd as an unprivileged user") {
        return;
    }
    let r = common::fimd_as_nobody(std::path::Path::new("/nonexistent.toml"), &["selftest"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("no realtime sensor can work on this host"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("realtime sensor OK"), "{}", r.stdout);
}
