//! Pseudo-filesystems: kernel state presented as files (proc, sysfs, cgroup, tracefs, …).
//! Their contents change with every process, mount or counter and describe no installed
//! software, so a baseline of them is a list of future false alarms: no watch may be on one.
//!
//! They are recognised by the filesystem type `statfs(2)` reports (`f_type`), never by path: a
//! proc mounted at `/srv/p` is proc, and a real directory named `/proc` in an image is not.

use std::os::fd::AsFd;
use std::path::Path;

/// Filesystem magic numbers (`statfs.f_type`) of the pseudo-filesystems no watch may be on,
/// with the name `mount -t` takes. Values from the kernel's `include/uapi/linux/magic.h`
/// (Linux 6.18), except the three marked, which the kernel defines in the file named.
pub const PSEUDO_FILESYSTEMS: &[(u32, &str)] = &[
    (0x9fa0, "proc"),             // PROC_SUPER_MAGIC
    (0x6265_6572, "sysfs"),       // SYSFS_MAGIC
    (0x1cd1, "devpts"),           // DEVPTS_SUPER_MAGIC
    (0x0027_e0eb, "cgroup"),      // CGROUP_SUPER_MAGIC
    (0x6367_7270, "cgroup2"),     // CGROUP2_SUPER_MAGIC
    (0x6462_6720, "debugfs"),     // DEBUGFS_MAGIC
    (0x7472_6163, "tracefs"),     // TRACEFS_MAGIC
    (0x7363_6673, "securityfs"),  // SECURITYFS_MAGIC
    (0xcafe_4a11, "bpf"),         // BPF_FS_MAGIC
    (0x6165_676c, "pstore"),      // PSTOREFS_MAGIC
    (0xde5e_81e4, "efivarfs"),    // EFIVARFS_MAGIC
    (0xf97c_ff8c, "selinuxfs"),   // SELINUX_MAGIC
    (0x4341_5d53, "smackfs"),     // SMACK_MAGIC
    (0x5a3c_69f0, "apparmorfs"),  // AAFS_MAGIC
    (0x0765_5821, "resctrl"),     // RDTGROUP_SUPER_MAGIC
    (0x4249_4e4d, "binfmt_misc"), // BINFMTFS_MAGIC
    (0x6e73_6673, "nsfs"),        // NSFS_MAGIC
    (0x6c6f_6f70, "binder"),      // BINDERFS_SUPER_MAGIC
    (0x9fa1, "openpromfs"),       // OPENPROM_SUPER_MAGIC
    (0x9fa2, "usbfs"),            // USBDEVICE_SUPER_MAGIC
    (0x6265_6570, "configfs"),    // CONFIGFS_MAGIC, fs/configfs/mount.c
    (0x6573_5543, "fusectl"),     // FUSECTL_SUPER_MAGIC, fs/fuse/control.c
    (0x1980_0202, "mqueue"),      // MQUEUE_MAGIC, ipc/mqueue.c
];

/// The pseudo-filesystem a `statfs.f_type` names, if it is one. Only the low 32 bits count:
/// `f_type` is signed on some architectures, and every magic number fits in 32 bits.
pub fn pseudo_name(f_type: u64) -> Option<&'static str> {
    let magic = (f_type & 0xffff_ffff) as u32;
    PSEUDO_FILESYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// The pseudo-filesystem an open descriptor (`O_PATH` is enough) lives on, if any; `None`
/// too when `fstatfs` fails, so a failure here never hides a real filesystem.
pub fn pseudo_fs_of(fd: impl AsFd) -> Option<&'static str> {
    let st = rustix::fs::fstatfs(fd).ok()?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures
    pseudo_name(st.f_type as u64)
}

/// The pseudo-filesystem `path` (following symlinks) lives on, if any.
pub fn pseudo_fs_at(path: &Path) -> std::io::Result<Option<&'static str>> {
    let st = rustix::fs::statfs(path)?;
    #[allow(clippy::unnecessary_cast)]
    Ok(pseudo_name(st.f_type as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_and_sys_are_pseudo_and_tmp_is_not() {
        assert_eq!(pseudo_fs_at(Path::new("/proc")).unwrap(), Some("proc"));
        assert_eq!(pseudo_fs_at(Path::new("/proc/self")).unwrap(), Some("proc"));
        assert_eq!(pseudo_fs_at(Path::new("/sys")).unwrap(), Some("sysfs"));
        assert_eq!(pseudo_fs_at(Path::new("/")).unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(pseudo_fs_at(dir.path()).unwrap(), None);
    }

    #[test]
    fn the_table_has_no_duplicates_and_high_magics_match() {
        for (i, (m, n)) in PSEUDO_FILESYSTEMS.iter().enumerate() {
            assert!(
                PSEUDO_FILESYSTEMS[i + 1..].iter().all(|(o, _)| o != m),
                "{n}: duplicate magic {m:#x}"
            );
        }
        // A 32-bit kernel's signed f_type, sign-extended to 64 bits.
        assert_eq!(pseudo_name(0xffff_ffff_cafe_4a11), Some("bpf"));
        assert_eq!(pseudo_name(0xef53), None, "ext4 is a real filesystem");
    }
}
