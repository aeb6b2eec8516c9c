//! `fimd selftest`: the sensor `fimd run` would choose loads, attaches, and reports real changes
//! made by child processes, naming each child.
mod common;

use std::process::Command;

/// The pid printed right after `after` on `line`.
fn pid_after(line: &str, after: &str) -> u32 {
    let at = line
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} not in {line}"));
    let digits: String = line[at + after.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no pid after {after:?} in {line}"))
}

/// Each change is reported by the process that made it: the pid the self-test gave the child
/// equals the record's.
fn assert_writers_named(stdout: &str) {
    for (action, program) in [("append", "sh"), ("overwrite", "dd")] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(action))
            .unwrap_or_else(|| panic!("no {action} line: {stdout}"));
        assert!(line.contains(&format!("by {program} (pid ")), "{line}");
        assert_eq!(
            pid_after(line, "(pid "),
            pid_after(line, "record from pid "),
            "{line}"
        );
    }
}

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
    assert_writers_named(&r.stdout);
    // The eBPF sensor reads the task name in the kernel, while the writer runs.
    for task in ["(sh)", "(dd)"] {
        assert!(r.stdout.contains(task), "no record names {task}: {}", r.stdout);
    }
    assert!(
        r.stdout.contains("flagged below the verified length"),
        "{}",
        r.stdout
    );
}

#[test]
fn selftest_with_a_forced_fanotify_sensor() {
    if !common::privileged("the fanotify sensor") {
        return;
    }
    let f = common::Fixture::with_config_extra("[realtime]\nsensor = \"fanotify\"");
    let r = f.fimd(&["selftest"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("sensor: fanotify"), "{}", r.stdout);
    assert!(r.stdout.contains("fanotify/FAN_MODIFY"), "{}", r.stdout);
    assert!(r.stdout.contains("offsets unseen"), "{}", r.stdout);
    assert_writers_named(&r.stdout);
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
    // Both tiers were tried, and each says what it lacks.
    assert!(r.stderr.contains("CAP_BPF"), "{}", r.stderr);
    assert!(r.stderr.contains("CAP_SYS_ADMIN"), "{}", r.stderr);
    assert!(!r.stdout.contains("realtime sensor OK"), "{}", r.stdout);
}
