//! btrfs under the eBPF sensor. `btrfs_getattr` reports a subvolume's own anonymous device
//! (`BTRFS_I(inode)->root->anon_dev`) as `st_dev`, not the superblock's, so the kernel programs
//! key btrfs inodes through three btrfs types (monitor-ebpf/src/kernel.rs, `device`). Those
//! types are in vmlinux's BTF when btrfs is built in, and in the module's own BTF
//! (/sys/kernel/btf/btrfs, Linux 5.11+) when it is a module, as in Debian's cloud kernels.
//! Where neither has them (a btrfs module on 5.10, or one loaded after fimd started), btrfs
//! keys cannot match and every btrfs watch would be silently blind: such watches are refused
//! with a reason instead (the daemon alerts `watch_failed`), and the scheduled full comparison
//! covers them (docs/sensor-design.md §9.9).
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt as _;

use monitor_common::{BTRFS_SUPER_MAGIC, InodeKey};

use super::btf::{BtfError, KernelBtf};
use super::ebpf::EbpfError;

/// Adds btrfs's module BTF to `btf` when vmlinux lacks `struct btrfs_inode` and the module's
/// BTF is there. Returns whether the btrfs types are now known.
///
/// Errors: /sys/kernel/btf/btrfs exists but cannot be read or parsed.
pub fn add_types(btf: &mut KernelBtf) -> Result<bool, BtfError> {
    if btf.member_offset("btrfs_inode", "root").is_ok() {
        return Ok(true);
    }
    Ok(btf.add_module("btrfs")? && btf.member_offset("btrfs_inode", "root").is_ok())
}

/// Refuses watches on btrfs when the programs cannot key btrfs inodes.
#[derive(Debug, Default)]
pub struct Guard {
    /// The programs know the btrfs types (`KernelLayout::btrfs`): nothing is refused.
    pub keys_known: bool,
    /// Per device (the key's): whether it is btrfs. One statfs per device.
    btrfs_devices: HashMap<u32, bool>,
}

impl Guard {
    /// A guard for programs that know the btrfs types (`keys_known`) or not.
    pub fn new(keys_known: bool) -> Guard {
        Guard {
            keys_known,
            btrfs_devices: HashMap::new(),
        }
    }

    /// Checks a watch of `key`, found at `path` (raw bytes), a directory when `is_dir`.
    ///
    /// Errors: `Unsupported` when `path` is on btrfs and the btrfs types are unknown.
    pub fn check(&mut self, key: &InodeKey, path: &[u8], is_dir: bool) -> Result<(), EbpfError> {
        if self.keys_known {
            return Ok(());
        }
        let btrfs = *self
            .btrfs_devices
            .entry(key.dev)
            .or_insert_with(|| on_btrfs(path, is_dir));
        if !btrfs {
            return Ok(());
        }
        Err(EbpfError::Unsupported {
            path: String::from_utf8_lossy(path).into_owned(),
            reason: "it is on btrfs, and the kernel offers no btrfs types to key its inodes by \
                     subvolume (btrfs is a module and /sys/kernel/btf/btrfs is missing: Linux \
                     5.11+ with CONFIG_DEBUG_INFO_BTF_MODULES has it, or the module was loaded \
                     after fimd started). Use [realtime] sensor = \"fanotify\" for btrfs, or rely \
                     on the scheduled full comparison"
                .into(),
        })
    }
}

/// Whether `path` is on btrfs: statfs(2) of the directory itself, or of a file's parent (so a
/// symlink's target is never looked at). An unreadable path counts as not btrfs.
fn on_btrfs(path: &[u8], is_dir: bool) -> bool {
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
    let dir = if is_dir {
        path
    } else {
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => return false,
        }
    };
    nix::sys::statfs::statfs(dir).is_ok_and(|s| s.filesystem_type().0 as u64 == BTRFS_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_btrfs_is_refused_and_only_without_its_types() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let key = InodeKey {
            dev: 1,
            _pad: 0,
            ino: 2,
        };
        let bytes = file.as_os_str().as_bytes();
        let mut guard = Guard::default();
        // Whatever filesystem the test directory is on, the answer matches statfs.
        let btrfs = on_btrfs(bytes, false);
        assert_eq!(guard.check(&key, bytes, false).is_err(), btrfs);
        guard.keys_known = true;
        assert!(guard.check(&key, bytes, false).is_ok());
        assert!(!on_btrfs(b"/nonexistent-fimd-dir/f", false));
        assert!(!on_btrfs(b"relative", false));
    }

    #[test]
    fn module_btf_continues_the_base_ids_and_strings() {
        // Base: [1] INT 'int'. Module (split): [2] STRUCT 'm' {int x at 0; int y at bit 32},
        // naming the base's 'int' by id 1 and its own strings after the base's.
        let btf_bytes = |words: &[u32], strings: &[u8]| {
            let types: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let (types_len, strings_len) = (types.len() as u32, strings.len() as u32);
            let mut b = vec![0x9f, 0xeb, 1, 0];
            b.extend(
                [24, 0, types_len, types_len, strings_len]
                    .iter()
                    .flat_map(|w| w.to_le_bytes()),
            );
            b.extend(&types);
            b.extend(strings);
            b
        };
        let base_strings = b"\0int\0";
        let mut btf = KernelBtf::parse(&btf_bytes(&[1, 1 << 24, 4, 32], base_strings)).unwrap();
        assert!(matches!(
            btf.member_offset("m", "y"),
            Err(BtfError::MissingStruct(_))
        ));
        let at = |off: usize| (base_strings.len() + off) as u32;
        #[rustfmt::skip]
        let module = [at(1), 4 << 24 | 2, 8, at(3), 1, 0, at(5), 1, 32];
        btf.add_split(&btf_bytes(&module, b"\0m\0x\0y\0")).unwrap();
        assert_eq!(btf.member_offset("m", "x").unwrap(), 0);
        assert_eq!(btf.member_offset("m", "y").unwrap(), 4);
        // A module naming a string past the combined table is malformed, not a panic.
        let mut bad = module;
        bad[0] = at(64);
        assert!(
            KernelBtf::parse(&btf_bytes(&[1, 1 << 24, 4, 32], base_strings))
                .unwrap()
                .add_split(&btf_bytes(&bad, b"\0m\0x\0y\0"))
                .is_err()
        );
    }
}
