//! `cargo xtask test --kernel VERSION`: fimd's realtime checks inside a QEMU guest booted on one
//! of Debian's kernels (the ones fimd's users run), with software emulation.
//!
//! - The kernel package comes from the host's own Debian mirror through a private apt
//!   configuration (its own sources, lists, cache and status under `target/kernel-matrix/`):
//!   the host's sources and /boot are never touched.
//! - The guest boots a small initramfs: busybox, the release `fimd` with the libraries `ldd`
//!   lists, `setfattr`, `fallocate` and two small C writers, the kernel's loop, virtio disk,
//!   xfs and btrfs modules with their dependencies (`kernel/modules.rs`), an ext4 image, and
//!   `kernel/init.sh`, which prints one `@@` line per check and `@@ exit=N` last.
//! - xfs and btrfs live on two virtio disks: images made on the host with the features the
//!   guest's kernel can mount (sparse files, so they cost neither initramfs nor guest memory).
//! - QEMU's exit status does not carry the guest's: the serial log is parsed instead, with the
//!   firmware's escape sequences stripped. A guest that does not boot, or prints no verdict
//!   within `GUEST_WITHIN`, is a failure.
//! - `cargo xtask bench realtime --kernel` boots the same kernels and initramfs with another
//!   `Payload` (bench/realtime/guest.rs): its own `/init`, a C writer, no extra disks, one vCPU
//!   under `-icount`; the files of each payload are named after it (`initramfs-NAME.cpio`,
//!   `serial-NAME.log`).
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::run_cmd;

mod modules;

/// A kernel line fimd supports and how to find its newest Debian package.
pub struct Kernel {
    /// What `--kernel` takes.
    pub version: &'static str,
    /// The package name starts so (the ABI number or patch level follows).
    prefix: &'static str,
    /// mkfs.xfs options leaving out the features this kernel cannot mount (bookworm's xfsprogs
    /// 6.1 turns on bigtime and inobtcount by default, and cannot parse its own
    /// /usr/share/xfsprogs/mkfs/lts_*.conf: "invalid config file option: nrext64").
    xfs_options: &'static [&'static str],
}

/// Debian 11 (5.10), Debian 12 and Amazon Linux 2023's line (6.1), Debian 13 and RHEL 10's (6.12):
/// with the host's 6.18 they bracket Ubuntu's and RHEL 9's kernels.
pub const KERNELS: &[Kernel] = &[
    Kernel {
        version: "5.10",
        prefix: "linux-image-5.10.0-",
        // As lts_5.10.conf: bigtime and inobtcount were experimental in 5.10.
        xfs_options: &["-m", "bigtime=0,inobtcount=0"],
    },
    Kernel {
        version: "6.1",
        prefix: "linux-image-6.1.0-",
        xfs_options: &[],
    },
    Kernel {
        version: "6.12",
        prefix: "linux-image-6.12.",
        xfs_options: &[],
    },
];

/// The suites holding those kernels, on the host's mirror.
const SUITES: &[(&str, &str)] = &[
    ("debian", "bullseye"),
    ("debian-security", "bullseye-security"),
    ("debian", "bookworm"),
    ("debian-security", "bookworm-security"),
    ("debian", "trixie"),
];

/// Boot, checks and power-off under TCG take 10 to 60 s; this is the test's hang guard.
const GUEST_WITHIN: Duration = Duration::from_secs(300);
/// The guest's ext4 filesystem (MiB), a loop device inside the guest.
const EXT4_MIB: u32 = 48;
/// The xfs disk (MiB): mkfs.xfs refuses filesystems under 300 MB from xfsprogs 5.19 on.
const XFS_MIB: u32 = 320;
/// The btrfs disk (MiB): above mkfs.btrfs's minimum for separate data and metadata (114 MiB).
const BTRFS_MIB: u32 = 256;
/// The modules the guest loads: the loop device (ext4 image), the virtio PCI transport and
/// disk (xfs and btrfs), and the two filesystems.
const MODULES: &[&str] = &["loop", "virtio_pci", "virtio_blk", "xfs", "btrfs"];

fn work_dir() -> PathBuf {
    crate::root().join("target/kernel-matrix")
}

/// Runs the guest checks on each of `versions` (all of `KERNELS` when empty), then says which
/// failed. Errors: any kernel that fails to download, boot or pass.
pub fn run(versions: &[String]) -> anyhow::Result<()> {
    let chosen = chosen(versions)?;
    let fimd = crate::build_fimd()?;
    let apt = Apt::new(&work_dir().join("apt"))?;
    let mut failed = Vec::new();
    for k in chosen {
        let started = Instant::now();
        match boot_payload(&apt, k, &fimd, &test_payload()).and_then(|log| verdict(&log, k.version)) {
            Ok(()) => eprintln!(
                "xtask: kernel {}: all checks passed ({:.1} s)",
                k.version,
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!(
                    "xtask: kernel {}: FAILED ({:.1} s): {e:#}",
                    k.version,
                    started.elapsed().as_secs_f64()
                );
                failed.push(k.version);
            }
        }
    }
    if !failed.is_empty() {
        bail!("the kernel matrix failed on {}", failed.join(", "));
    }
    Ok(())
}

/// The kernels `--kernel` names (all of `KERNELS` when none). Errors: a version not in `KERNELS`.
pub(crate) fn chosen(versions: &[String]) -> anyhow::Result<Vec<&'static Kernel>> {
    Ok(if versions.is_empty() {
        KERNELS.iter().collect()
    } else {
        versions
            .iter()
            .map(|v| {
                KERNELS.iter().find(|k| k.version == v).with_context(|| {
                    format!(
                        "--kernel {v}: not one of {}",
                        KERNELS.iter().map(|k| k.version).collect::<Vec<_>>().join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?
    })
}

/// What a guest runs (the realtime checks of `cargo xtask test --kernel`, or the writer
/// benchmark of `cargo xtask bench realtime --kernel`): its `/init`, the extra C programs it
/// needs, its disks, QEMU's CPU options and its hang guard.
pub(crate) struct Payload {
    /// Names its initramfs, cpio and serial log under the package's directory.
    pub name: &'static str,
    /// The guest's `/init` (a busybox shell script printing `@@` lines, `@@ exit=N` last).
    pub init: String,
    /// (binary name, C source), built with the host's `cc` into the guest's /bin.
    pub programs: &'static [(&'static str, &'static str)],
    /// Whether the guest gets the xfs and btrfs virtio disks.
    pub disks: bool,
    /// QEMU's CPU arguments: `-smp`, and the benchmark's `-icount`.
    pub qemu: &'static [&'static str],
    /// The hang guard: the guest must power off within this.
    pub within: Duration,
}

/// The realtime checks of `cargo xtask test --kernel`.
fn test_payload() -> Payload {
    Payload {
        name: "test",
        init: include_str!("kernel/init.sh").to_owned(),
        // Writers busybox has no tool for: through a shared mapping, and xfs's invisible I/O.
        programs: &[
            ("mmap_write", include_str!("kernel/mmap_write.c")),
            ("nocmtime_write", include_str!("kernel/nocmtime_write.c")),
        ],
        disks: true,
        qemu: &["-smp", "2"],
        within: GUEST_WITHIN,
    }
}

/// A private apt configuration naming the kernel suites on the host's mirror.
pub(crate) struct Apt {
    conf: PathBuf,
}

impl Apt {
    /// The configuration under `target/kernel-matrix/apt`, its lists fetched when older than a
    /// day. Errors: no Debian mirror in the host's sources, or `apt-get update` fails.
    pub(crate) fn open() -> anyhow::Result<Apt> {
        Apt::new(&work_dir().join("apt"))
    }

    fn new(dir: &Path) -> anyhow::Result<Apt> {
        let mirror = host_mirror()?;
        for sub in ["lists/partial", "cache/archives/partial", "parts"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let status = dir.join("status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let sources: String = SUITES
            .iter()
            .map(|(archive, suite)| format!("deb [signed-by={keyring}] {mirror}/{archive} {suite} main\n"))
            .collect();
        fs::write(dir.join("sources.list"), sources)?;
        let d = dir.display();
        let conf = dir.join("apt.conf");
        fs::write(
            &conf,
            format!(
                "Dir::State \"{d}\";\nDir::State::Lists \"{d}/lists\";\nDir::State::status \"{d}/status\";\n\
                 Dir::Cache \"{d}/cache\";\nDir::Etc::SourceList \"{d}/sources.list\";\n\
                 Dir::Etc::SourceParts \"{d}/parts\";\nAPT::Architecture \"amd64\";\n\
                 APT::Sandbox::User \"root\";\n"
            ),
        )?;
        let apt = Apt { conf };
        // Lists older than a day are fetched again (about 10 s).
        let fresh = fs::metadata(dir.join("lists"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < Duration::from_secs(86_400))
            && fs::read_dir(dir.join("lists"))?.count() > 2;
        if !fresh {
            run_cmd(apt.cmd("apt-get").args(["update", "-q"]))?;
        }
        Ok(apt)
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("APT_CONFIG", &self.conf);
        c
    }

    /// The newest `linux-image-…-cloud-amd64` package of `k`.
    fn newest(&self, k: &Kernel) -> anyhow::Result<String> {
        let out = self
            .cmd("apt-cache")
            .args([
                "search",
                "--names-only",
                &format!("^{}", k.prefix.replace('.', "\\.")),
            ])
            .output()
            .context("apt-cache search")?;
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.ends_with("-cloud-amd64") && !n.contains("-dbg"))
            .map(str::to_owned)
            .collect();
        names.sort_by_key(|n| version_key(n));
        names
            .pop()
            .with_context(|| format!("no {}*-cloud-amd64 package in the configured suites", k.prefix))
    }
}

/// The host's Debian mirror (the `URIs:` of deb822 sources, or a `deb` line), without the
/// archive name: e.g. `http://host` for `http://host/debian`.
pub(crate) fn host_mirror() -> anyhow::Result<String> {
    let mut text = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            if e.path()
                .extension()
                .is_some_and(|x| x == "sources" || x == "list")
            {
                text.push('\n');
                text.push_str(&fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .find_map(|w| w.strip_suffix("/debian").filter(|m| m.contains("://")))
        .map(str::to_owned)
        .context("no Debian mirror (a URI ending in /debian) in /etc/apt/sources.list{,.d}")
}

/// Sort key: the numbers in a package name, in order ("6.12.117+deb13" → [6, 12, 117, 13]).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Downloads and unpacks `k`'s newest package (once), builds `payload`'s initramfs, boots it
/// and returns its serial log (raw bytes, escape sequences included). Errors: the download, the
/// initramfs, or a guest that does not power off within `payload.within`.
pub(crate) fn boot_payload(apt: &Apt, k: &Kernel, fimd: &Path, payload: &Payload) -> anyhow::Result<Vec<u8>> {
    let package = apt.newest(k)?;
    let dir = work_dir().join(&package);
    let unpacked = dir.join("root");
    if !unpacked.join("boot").exists() {
        fs::create_dir_all(&dir)?;
        let debs = dir.join("debs");
        fs::create_dir_all(&debs)?;
        // Not run_cmd: it runs in the workspace root, and apt-get download writes to the cwd.
        let status = apt
            .cmd("apt-get")
            .args(["download", "-q", &package])
            .current_dir(&debs)
            .status()
            .context("apt-get download")?;
        if !status.success() {
            bail!("apt-get download {package} failed: {status}");
        }
        let deb = fs::read_dir(&debs)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .context("apt-get download left no .deb")?;
        run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    }
    let vmlinuz = find(&unpacked.join("boot"), |n| n.starts_with("vmlinuz-"))?
        .with_context(|| format!("{package} has no boot/vmlinuz-*"))?;
    let initrd = initramfs(&dir, &unpacked, fimd, payload)?;
    let disks = if payload.disks {
        disks(&dir, k)?
    } else {
        Vec::new()
    };
    eprintln!(
        "xtask: kernel {}: booting {package} under QEMU (TCG) for the {}",
        k.version, payload.name
    );
    let log = dir.join(format!("serial-{}.log", payload.name));
    boot(&vmlinuz, &initrd, &disks, payload, &log)?;
    Ok(fs::read(&log)?)
}

/// Fresh xfs and btrfs images for `k`'s guest: (disk serial, image), the serial naming the
/// filesystem (the guest finds its disk by /sys/block/vd*/serial).
fn disks(dir: &Path, k: &Kernel) -> anyhow::Result<Vec<(&'static str, PathBuf)>> {
    let xfs = dir.join("xfs.img");
    let btrfs = dir.join("btrfs.img");
    for (image, mib) in [(&xfs, XFS_MIB), (&btrfs, BTRFS_MIB)] {
        let _ = fs::remove_file(image);
        fs::File::create(image)?.set_len(u64::from(mib) << 20)?;
    }
    run_cmd(
        Command::new("mkfs.xfs")
            .args(["-q", "-f"])
            .args(k.xfs_options)
            .arg(&xfs),
    )
    .context("mkfs.xfs (xfsprogs)")?;
    // btrfs-progs 6.2's defaults (extref, skinny-metadata, no-holes, free-space-tree) all
    // mount from Linux 4.5 on: no profile is needed for 5.10.
    run_cmd(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&btrfs)).context("mkfs.btrfs (btrfs-progs)")?;
    Ok(vec![("xfs", xfs), ("btrfs", btrfs)])
}

/// The first entry of `dir` (searched recursively) whose file name satisfies `pick`.
fn find(dir: &Path, pick: impl Fn(&str) -> bool + Copy) -> anyhow::Result<Option<PathBuf>> {
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            if let Some(found) = find(&p, pick)? {
                return Ok(Some(found));
            }
        } else if e.file_name().to_str().is_some_and(pick) {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Copies `from` to `root/to`, creating its directory.
fn put(root: &Path, from: &Path, to: &str) -> anyhow::Result<()> {
    let dest = root.join(to.trim_start_matches('/'));
    fs::create_dir_all(dest.parent().context("a destination has a parent")?)?;
    fs::copy(from, &dest).with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
    Ok(())
}

/// The shared libraries `ldd` lists for `binary`, as absolute paths.
fn libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("ldd")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from)
        .collect())
}

/// Builds the guest's initramfs (an uncompressed newc cpio) and returns its path.
fn initramfs(dir: &Path, kernel: &Path, fimd: &Path, payload: &Payload) -> anyhow::Result<PathBuf> {
    let root = dir.join(format!("initramfs-{}", payload.name));
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    for d in ["bin", "proc", "sys", "dev", "mnt", "tmp"] {
        fs::create_dir_all(root.join(d))?;
    }
    put(&root, Path::new("/bin/busybox"), "bin/busybox")
        .context("busybox-static is needed (cargo xtask setup installs it)")?;
    let init = root.join("init");
    fs::write(&init, &payload.init)?;
    let mut tools = vec![
        fimd.to_owned(),
        PathBuf::from("/usr/bin/setfattr"),
        PathBuf::from("/usr/bin/fallocate"),
    ];
    for &(name, source) in payload.programs {
        let binary = dir.join(name);
        let c = dir.join(format!("{name}.c"));
        fs::write(&c, source)?;
        run_cmd(Command::new("cc").args(["-O2", "-o"]).arg(&binary).arg(&c))
            .with_context(|| format!("a C compiler (cc) is needed to build the guest's {name}"))?;
        tools.push(binary);
    }
    for tool in &tools {
        let name = tool.file_name().context("a tool has a name")?.to_string_lossy();
        put(&root, tool, &format!("bin/{name}"))?;
        for lib in libraries(tool)? {
            put(&root, &lib, &lib.to_string_lossy())?;
        }
    }
    // Modules in dependency order, and the wanted ones this kernel lacks, for init.sh.
    let resolved = modules::resolve(kernel, MODULES)?;
    fs::create_dir_all(root.join("modules"))?;
    let mut order = String::new();
    for (name, ko) in &resolved.load {
        fs::write(root.join(format!("modules/{name}.ko")), ko)?;
        order.push_str(name);
        order.push('\n');
    }
    fs::write(root.join("modules/order"), order)?;
    fs::write(root.join("modules/absent"), resolved.absent.join("\n"))?;
    let image = root.join("ext4.img");
    fs::File::create(&image)?.set_len(u64::from(EXT4_MIB) << 20)?;
    run_cmd(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))?;
    let mut perms = fs::metadata(&init)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(&init, perms)?;
    let cpio = dir.join(format!("initramfs-{}.cpio", payload.name));
    let list = Command::new("find")
        .arg(".")
        .current_dir(&root)
        .output()
        .context("find")?;
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&cpio)?)
        .spawn()
        .context("cpio is needed (cargo xtask setup installs it)")?;
    child
        .stdin
        .take()
        .context("cpio stdin")?
        .write_all(&list.stdout)?;
    if !child.wait()?.success() {
        bail!("cpio failed building {}", cpio.display());
    }
    Ok(cpio)
}

/// Boots `payload`'s guest with `disks` (serial, raw image) as virtio disks and its serial
/// console in `log`, killing it after `payload.within`.
fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    disks: &[(&str, PathBuf)],
    payload: &Payload,
    log: &Path,
) -> anyhow::Result<()> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-cpu", "max", "-m", "1024"])
        .args(payload.qemu)
        .args(["-nodefaults", "-nographic", "-no-reboot", "-serial", "stdio"]);
    for (serial, image) in disks {
        qemu.arg("-drive")
            .arg(format!("if=none,id={serial},format=raw,file={}", image.display()))
            .arg("-device")
            .arg(format!("virtio-blk-pci,drive={serial},serial={serial}"));
    }
    qemu.arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(log)?)
        .stderr(Stdio::inherit());
    let mut child = qemu
        .spawn()
        .context("qemu-system-x86_64 is needed (cargo xtask setup installs it)")?;
    let started = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        if started.elapsed() > payload.within {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the guest did not power off within {:?}", payload.within);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prints the guest's `@@` lines and checks its `@@ exit=0`.
pub(crate) fn verdict(serial: &[u8], version: &str) -> anyhow::Result<()> {
    let text = strip_escapes(&String::from_utf8_lossy(serial));
    let mut exit = None;
    for line in text.lines() {
        let Some(rest) = line.trim_end_matches('\r').strip_prefix("@@ ") else {
            continue;
        };
        eprintln!("xtask: kernel {version}: {rest}");
        if let Some(n) = rest.strip_prefix("exit=") {
            exit = n.trim().parse::<u32>().ok();
        }
    }
    match exit {
        Some(0) => Ok(()),
        Some(n) => bail!("{n} check(s) failed in the guest"),
        None => {
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            bail!(
                "the guest printed no verdict (did it boot?); the serial log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        }
    }
}

/// Removes ANSI/VT100 escape sequences (ESC [ … final byte, and ESC c etc.).
pub(crate) fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_package_sorts_by_numbers() {
        let mut v = [
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.12.9+deb13-cloud-amd64",
            "linux-image-6.12.117+deb13-cloud-amd64",
        ];
        v.sort_by_key(|n| version_key(n));
        assert_eq!(v.last(), Some(&"linux-image-6.12.117+deb13-cloud-amd64"));
    }

    #[test]
    fn escapes_are_stripped_and_verdicts_read() {
        assert_eq!(strip_escapes("\u{1b}[2J\u{1b}[01;01H@@ ok x\u{1b}c"), "@@ ok x");
        assert!(verdict(b"junk\n\x1b[0m@@ ok a\r\n@@ exit=0\r\n", "t").is_ok());
        assert!(verdict(b"@@ FAIL a: b\n@@ exit=1\n", "t").is_err());
        assert!(verdict(b"Kernel panic\n", "t").is_err());
    }
}
