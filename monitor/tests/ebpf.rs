//! The eBPF pipeline: the object built by aya-build loads, attaches and counts real system calls.
mod common;

use std::process::Command;

#[test]
fn selftest_loads_attaches_and_counts() {
    if !common::privileged("loading eBPF programs") {
        return;
    }
    let r = common::run({
        let mut c = Command::new(common::FIMD);
        c.arg("selftest");
        c
    });
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("counted 3 system calls"), "{}", r.stdout);
}
