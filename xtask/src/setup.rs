//! `cargo xtask setup`: everything a fresh Debian machine needs, installed only when missing.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::ebpf_toolchain::{self, EbpfToolchain};
use crate::run_cmd;

/// Debian packages besides the pinned LLVM's (`llvm_packages`): attr, acl and libcap2-bin for the xattr tests;
/// bpftool for the BTF test; fio for io_uring writes in the realtime tests; btrfs-progs and
/// xfsprogs (mkfs.btrfs, mkfs.xfs) for the realtime tests' loop-device filesystems; aide as the
/// benchmark peer; auditd as the realtime benchmark's peer (`cargo xtask bench realtime`);
/// rsyslog, the real syslog receiver the alert sink tests send to; gzip for the log rotation
/// tests; prometheus (promtool), strace, systemd (systemd-analyze) and util-linux (setpriv,
/// unshare) for the deployment tests; busybox-static, cpio, xz-utils and e2fsprogs build the
/// QEMU guests' initramfs (`cargo xtask test --kernel`).
const PACKAGES: &[&str] = &[
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
    // logrotate: the append-only tests drive the real one through every rotation style.
    "logrotate",
    "prometheus",
    "strace",
    "systemd",
    "util-linux",
    "busybox-static",
    "cpio",
    "xz-utils",
    "e2fsprogs",
];
/// Python packages: kubernetes-validate bundles the Kubernetes JSON schemas, so the manifests
/// are validated offline (it brings PyYAML, which the deployment tests also use).
const PIP_PACKAGES: &[&str] = &["kubernetes-validate==1.37.0"];

/// Debian's LLVM of the pinned major, which bpf-linker links against (clang for C test programs).
fn llvm_packages(pin: &EbpfToolchain) -> Vec<String> {
    let n = pin.llvm;
    vec![
        format!("llvm-{n}-dev"),
        format!("libpolly-{n}-dev"),
        format!("clang-{n}"),
    ]
}

/// The pinned eBPF toolchain (`ebpf-toolchain.toml`).
pub fn pin() -> anyhow::Result<EbpfToolchain> {
    EbpfToolchain::load(&crate::root())
}

pub fn run() -> anyhow::Result<()> {
    let pin = pin()?;
    apt(&pin)?;
    pip()?;
    nightly(&pin)?;
    bpf_linker(&pin)?;
    qemu()?;
    eprintln!(
        "xtask: setup complete: eBPF toolchain {} + bpf-linker {} on LLVM {}",
        pin.nightly, pin.bpf_linker, pin.llvm
    );
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

fn apt(pin: &EbpfToolchain) -> anyhow::Result<()> {
    let mut wanted = llvm_packages(pin);
    wanted.extend(PACKAGES.iter().map(|p| p.to_string()));
    let missing: Vec<&str> = wanted
        .iter()
        .map(String::as_str)
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("xtask: Debian packages present: {}", wanted.join(" "));
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

/// The pinned nightly with rust-src (the eBPF crate builds `core` itself), and a check that its
/// LLVM major is the pin's.
fn nightly(pin: &EbpfToolchain) -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", &pin.nightly, "--installed"])
        .output()
        .context("rustup is needed to build the eBPF programs (https://rustup.rs)")?;
    if out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("rust-src"))
    {
        eprintln!("xtask: {} with rust-src present", pin.nightly);
    } else {
        eprintln!(
            "xtask: installing {} with rust-src (the eBPF crate needs build-std)",
            pin.nightly
        );
        run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            &pin.nightly,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let out = Command::new("rustup")
        .args(["run", &pin.nightly, "rustc", "-vV"])
        .output()
        .with_context(|| format!("running rustc of {}", pin.nightly))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let major = llvm_major_of_rustc(&text).with_context(|| {
        format!(
            "`rustup run {} rustc -vV` names no LLVM version:\n{text}",
            pin.nightly
        )
    })?;
    if major != pin.llvm {
        bail!(
            "{} is built on LLVM {major}, but {} says llvm = {}: bpf-linker built for LLVM {} cannot \
             read its bitcode. Pin a nightly on LLVM {} or move `llvm` to {major} (README: \
             \"Moving the eBPF toolchain pin\")",
            pin.nightly,
            ebpf_toolchain::FILE,
            pin.llvm,
            pin.llvm,
            pin.llvm
        );
    }
    Ok(())
}

/// The LLVM major in `rustc -vV` output ("LLVM version: 22.1.4").
pub fn llvm_major_of_rustc(verbose_version: &str) -> Option<u32> {
    verbose_version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))?
        .split('.')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The LLVM major a bpf-linker binary is linked against, from the `libLLVM` it loads
/// (Debian names it `libLLVM.so.22.1` or `libLLVM-22.so`); `None` when it links none
/// dynamically.
fn bpf_linker_llvm_major(binary: &Path) -> Option<u32> {
    let out = Command::new("ldd").arg(binary).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let name = l.split_whitespace().next()?;
        let rest = name
            .strip_prefix("libLLVM.so.")
            .or_else(|| name.strip_prefix("libLLVM-"))?;
        rest.split(['.', '-']).next()?.parse().ok()
    })
}

/// Where cargo installs binaries, and so where aya-build's cargo finds bpf-linker.
fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// What the installed bpf-linker is: `(version line, LLVM major)`, or `None` when absent.
fn installed_bpf_linker() -> Option<(String, Option<u32>)> {
    let out = Command::new("bpf-linker").arg("--version").output().ok()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = Command::new("which")
        .arg("bpf-linker")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| cargo_bin().join("bpf-linker"));
    Some((version, bpf_linker_llvm_major(&path)))
}

/// bpf-linker of the pinned version, built against Debian's LLVM of the pinned major;
/// rebuilt when the one installed is another version or links another LLVM.
fn bpf_linker(pin: &EbpfToolchain) -> anyhow::Result<()> {
    let fits = |(version, major): &(String, Option<u32>)| {
        version.contains(&pin.bpf_linker) && *major == Some(pin.llvm)
    };
    match installed_bpf_linker() {
        Some(found) if fits(&found) => {
            eprintln!(
                "xtask: bpf-linker {} on LLVM {} present",
                pin.bpf_linker, pin.llvm
            );
            return Ok(());
        }
        Some((version, major)) => eprintln!(
            "xtask: the installed bpf-linker ({version}, LLVM {}) is not the pinned {} on LLVM {}: rebuilding",
            major.map_or("unknown".into(), |m| m.to_string()),
            pin.bpf_linker,
            pin.llvm
        ),
        None => {}
    }
    let llvm = format!("/usr/lib/llvm-{}", pin.llvm);
    if !Path::new(&llvm).exists() {
        bail!(
            "{llvm} is missing: install Debian's llvm-{n}-dev (`apt-get install llvm-{n}-dev libpolly-{n}-dev`)",
            n = pin.llvm
        );
    }
    eprintln!(
        "xtask: building bpf-linker {} against LLVM {} (about 80 s)",
        pin.bpf_linker, pin.llvm
    );
    let path = format!("{llvm}/bin:{}", std::env::var("PATH").unwrap_or_default());
    let feature = format!("llvm-{}", pin.llvm);
    run_cmd(
        Command::new("cargo")
            .args(["install", "--force", "bpf-linker", "--version", &pin.bpf_linker])
            .args(["--no-default-features", "--features", &feature])
            .env("LLVM_PREFIX", &llvm)
            .env("PATH", path),
    )?;
    match installed_bpf_linker() {
        Some(found) if fits(&found) => Ok(()),
        found => bail!(
            "after `cargo install bpf-linker --version {v} --no-default-features --features {feature}` \
             (with LLVM_PREFIX={llvm}), bpf-linker is {found:?}, not {v} on LLVM {n}: is {} first on PATH?",
            cargo_bin().display(),
            v = pin.bpf_linker,
            n = pin.llvm,
        ),
    }
}

/// QEMU for the kernel matrix. Debian 12's own qemu-system-x86 (7.2) conflicts with the
/// machine's qemu-utils 10, so it comes from `<codename>-backports`, named in a private sources
/// list (with the host's own suites, for its dependencies) with private lists and cache: the
/// host's apt sources are never changed.
fn qemu() -> anyhow::Result<()> {
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("xtask: qemu-system-x86_64 present");
        return Ok(());
    }
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_owned())
        .context("/etc/os-release has no VERSION_CODENAME: install qemu-system-x86 by hand")?;
    let mirror = crate::kernel::host_mirror()?;
    let dir = crate::root().join("target/kernel-matrix/host-apt");
    for sub in ["lists/partial", "cache/archives/partial", "parts"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let keyring = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]";
    std::fs::write(
        dir.join("sources.list"),
        format!(
            "deb {keyring} {mirror}/debian {codename} main\ndeb {keyring} {mirror}/debian {codename}-updates main\n\
             deb {keyring} {mirror}/debian-security {codename}-security main\n\
             deb {keyring} {mirror}/debian {codename}-backports main\n"
        ),
    )?;
    let opts: Vec<String> = [
        ("Dir::State::Lists", "lists"),
        ("Dir::Cache", "cache"),
        ("Dir::Etc::SourceList", "sources.list"),
        ("Dir::Etc::SourceParts", "parts"),
    ]
    .iter()
    .flat_map(|(k, v)| ["-o".to_owned(), format!("{k}={}", dir.join(v).display())])
    .collect();
    eprintln!("xtask: installing qemu-system-x86 from {codename}-backports (for the kernel matrix)");
    run_cmd(Command::new("apt-get").args(&opts).args(["update", "-q"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(&opts)
            .args(["install", "-y", "-q", "--no-install-recommends", "-t"])
            .arg(format!("{codename}-backports"))
            .arg("qemu-system-x86")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_llvm_major_is_read_from_rustc() {
        let v = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major_of_rustc(v), Some(22));
        assert_eq!(llvm_major_of_rustc("LLVM version: 23.1.4"), Some(23));
        assert_eq!(llvm_major_of_rustc("rustc 1.95.0"), None);
    }

    #[test]
    fn the_pin_must_be_a_dated_nightly_with_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &str| std::fs::write(dir.path().join(ebpf_toolchain::FILE), text).unwrap();
        write("nightly = \"nightly-2026-05-20\"\nllvm = 22\nbpf-linker = \"0.13.0\"\n");
        let pin = EbpfToolchain::load(dir.path()).unwrap();
        assert_eq!((pin.nightly.as_str(), pin.llvm), ("nightly-2026-05-20", 22));
        for bad in [
            "nightly = \"nightly\"\nllvm = 22\nbpf-linker = \"0.13.0\"\n",
            "nightly = \"nightly-2026-5-20\"\nllvm = 22\nbpf-linker = \"0.13.0\"\n",
            "nightly = \"nightly-2026-05-20\"\nbpf-linker = \"0.13.0\"\n",
            "nightly = \"nightly-2026-05-20\"\nllvm = 22\nbpf-linker = \"0.13.0\"\nextra = 1\n",
        ] {
            write(bad);
            assert!(EbpfToolchain::load(dir.path()).is_err(), "accepted {bad:?}");
        }
        // The repository's own pin passes.
        EbpfToolchain::load(&crate::root()).unwrap();
    }
}
