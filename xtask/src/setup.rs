//! `cargo xtask setup`: everything a fresh Debian machine needs, installed only when missing.
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::run_cmd;

/// Debian packages: LLVM 22 for bpf-linker; attr, acl and libcap2-bin for the xattr tests;
/// bpftool for the BTF test; fio for io_uring writes in the realtime tests; btrfs-progs and
/// xfsprogs (mkfs.btrfs, mkfs.xfs) for the realtime tests' loop-device filesystems; aide as the
/// benchmark peer; auditd as the realtime benchmark's peer (`cargo xtask bench realtime`);
/// rsyslog, the real syslog receiver the alert sink tests send to; gzip for the log rotation
/// tests; prometheus (promtool), strace, systemd (systemd-analyze) and util-linux (setpriv,
/// unshare) for the deployment tests.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "clang-22",
    "attr",
    "acl",
    "libcap2-bin",
    "bpftool",
    "fio",
    "btrfs-progs",
    "xfsprogs",
    "aide",
    "auditd",
    "rsyslog",
    "gzip",
    "prometheus",
    "strace",
    "systemd",
    "util-linux",
];
/// Python packages: kubernetes-validate bundles the Kubernetes JSON schemas, so the manifests
/// are validated offline (it brings PyYAML, which the deployment tests also use).
const PIP_PACKAGES: &[&str] = &["kubernetes-validate==1.37.0"];
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> anyhow::Result<()> {
    apt()?;
    pip()?;
    nightly()?;
    bpf_linker()?;
    eprintln!("xtask: setup complete");
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Into the `python3` first on PATH, which is the one the tests run.
fn pip() -> anyhow::Result<()> {
    let have = Command::new("python3")
        .args(["-c", "import kubernetes_validate, yaml"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if have {
        eprintln!("xtask: Python packages present: {}", PIP_PACKAGES.join(" "));
        return Ok(());
    }
    eprintln!("xtask: installing Python packages: {}", PIP_PACKAGES.join(" "));
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "install", "--quiet"])
        .args(PIP_PACKAGES)
        // Debian's own python refuses pip installs unless told.
        .env("PIP_BREAK_SYSTEM_PACKAGES", "1");
    run_cmd(&mut pip)
}

fn apt() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        eprintln!("xtask: Debian packages present: {}", PACKAGES.join(" "));
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    let sudo = !nix_is_root();
    let apt = |args: &[&str]| {
        let mut c = if sudo {
            Command::new("sudo")
        } else {
            Command::new("apt-get")
        };
        if sudo {
            c.arg("apt-get");
        }
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    run_cmd(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    run_cmd(&mut install)
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn nightly() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("rustup is needed to build the eBPF programs (nightly + rust-src)")?;
    if out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("rust-src"))
    {
        eprintln!("xtask: nightly toolchain with rust-src present");
        return Ok(());
    }
    eprintln!("xtask: installing the nightly toolchain with rust-src (the eBPF crate needs build-std)");
    run_cmd(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let have = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if have {
        eprintln!("xtask: bpf-linker {BPF_LINKER_VERSION} present");
        return Ok(());
    }
    let llvm = "/usr/lib/llvm-22";
    if !std::path::Path::new(llvm).exists() {
        bail!("{llvm} is missing: the llvm-22-dev package did not install");
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 80 s)");
    let path = format!("{llvm}/bin:{}", std::env::var("PATH").unwrap_or_default());
    run_cmd(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", llvm)
            .env("PATH", path),
    )
}
