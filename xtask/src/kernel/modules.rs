//! The kernel modules a guest loads (the loop device, the virtio disk, xfs and btrfs), with
//! their dependencies, taken from the kernel package's own `.ko` files. The package has no
//! `modules.dep` (`depmod` runs in its postinst), and the host may have no `modinfo`, so each
//! module's `depends=` entry is read from its `.modinfo` section (the `key=value\0` strings
//! `MODULE_INFO` and modpost write, include/linux/moduleparam.h and scripts/mod/modpost.c).
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The modules to load, dependencies first, and the wanted modules this kernel has neither
/// as a module nor built in (a fact about the kernel, for the guest to report).
pub struct Resolved {
    /// (module name, the uncompressed `.ko`), in load order.
    pub load: Vec<(String, Vec<u8>)>,
    /// Wanted names the kernel lacks entirely.
    pub absent: Vec<String>,
}

/// The kernel's module names as `depends=` spells them: `-` and `_` are the same to the
/// module loader (kernel/params.c `parameq`, kmod's `modname_normalize`).
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The directory holding `modules.builtin` under the unpacked package `root`
/// (`lib/modules/VERSION` or, from trixie on, `usr/lib/modules/VERSION`).
fn modules_dir(root: &Path) -> anyhow::Result<PathBuf> {
    for base in ["lib/modules", "usr/lib/modules"] {
        let Ok(dir) = fs::read_dir(root.join(base)) else {
            continue;
        };
        for e in dir.flatten() {
            if e.path().join("modules.builtin").exists() {
                return Ok(e.path());
            }
        }
    }
    bail!("{} has no lib/modules/*/modules.builtin", root.display())
}

/// Every `.ko` or `.ko.xz` under `dir`, by module name.
fn index(dir: &Path, out: &mut HashMap<String, PathBuf>) -> anyhow::Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            index(&p, out)?;
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".ko").or_else(|| name.strip_suffix(".ko.xz")) {
            out.insert(normalize(stem), p);
        }
    }
    Ok(())
}

/// A module file's bytes, decompressed when it is `.ko.xz` (busybox `insmod` takes plain ELF).
fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.extension().is_some_and(|x| x == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .context("xz -dc (xz-utils)")?;
        if !out.status.success() {
            bail!(
                "xz -dc {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out.stdout)
    } else {
        fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// The module names in a module's `depends=` entry (empty when it depends on none).
fn depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &ko[at + KEY.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(normalize)
        .collect()
}

/// Resolves `wanted` in the unpacked kernel package `root`.
///
/// Errors: the package has no module directory, a module cannot be read, or a dependency is
/// neither a module nor built in (a broken package, unlike a wanted module the kernel lacks).
pub fn resolve(root: &Path, wanted: &[&str]) -> anyhow::Result<Resolved> {
    let dir = modules_dir(root)?;
    let builtin: HashSet<String> = fs::read_to_string(dir.join("modules.builtin"))?
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .filter_map(|f| f.strip_suffix(".ko"))
        .map(normalize)
        .collect();
    let mut files = HashMap::new();
    index(&dir.join("kernel"), &mut files)?;
    let mut out = Resolved {
        load: Vec::new(),
        absent: Vec::new(),
    };
    let mut done = HashSet::new();
    for &name in wanted {
        let name = normalize(name);
        if !files.contains_key(&name) && !builtin.contains(&name) {
            out.absent.push(name);
            continue;
        }
        visit(&name, &files, &builtin, &mut done, &mut out.load, 0)?;
    }
    Ok(out)
}

/// Appends `name` after its dependencies (depth-first, each once).
fn visit(
    name: &str,
    files: &HashMap<String, PathBuf>,
    builtin: &HashSet<String>,
    done: &mut HashSet<String>,
    load: &mut Vec<(String, Vec<u8>)>,
    depth: usize,
) -> anyhow::Result<()> {
    if depth > 32 {
        bail!("module dependencies nest deeper than 32 at {name}: a cycle?");
    }
    if !done.insert(name.to_owned()) || builtin.contains(name) {
        return Ok(());
    }
    let path = files
        .get(name)
        .with_context(|| format!("module {name} is needed but is neither a .ko nor built in"))?;
    let ko = read_module(path)?;
    for dep in depends(&ko) {
        visit(&dep, files, builtin, done, load, depth + 1)?;
    }
    load.push((name.to_owned(), ko));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_reads_the_modinfo_entry() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=libcrc32c,zstd_compress,raid6-pq\0retpoline=Y\0";
        assert_eq!(depends(ko), ["libcrc32c", "zstd_compress", "raid6_pq"]);
        assert!(depends(b"\0depends=\0name=xfs\0").is_empty());
        assert!(depends(b"\0name=loop\0").is_empty());
    }

    #[test]
    fn dependencies_load_first_and_missing_filesystems_are_facts() {
        let root = std::env::temp_dir().join(format!("xtask-modules-{}", std::process::id()));
        let dir = root.join("lib/modules/9.9.9/kernel/fs");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            root.join("lib/modules/9.9.9/modules.builtin"),
            "kernel/lib/xor.ko\n",
        )
        .unwrap();
        fs::write(dir.join("btrfs.ko"), b"\0depends=libcrc32c,xor\0").unwrap();
        fs::write(dir.join("libcrc32c.ko"), b"\0depends=crc32c-generic\0").unwrap();
        fs::write(dir.join("crc32c_generic.ko"), b"\0depends=\0").unwrap();
        let r = resolve(&root, &["btrfs", "xfs", "libcrc32c"]).unwrap();
        let names: Vec<&str> = r.load.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["crc32c_generic", "libcrc32c", "btrfs"]);
        assert_eq!(r.absent, ["xfs"]);
        fs::write(dir.join("btrfs.ko"), b"\0depends=raid6_pq\0").unwrap();
        let e = resolve(&root, &["btrfs"]).err().unwrap().to_string();
        assert!(e.contains("raid6_pq"), "{e}");
        fs::remove_dir_all(&root).unwrap();
    }
}
