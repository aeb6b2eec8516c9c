//! Inode flags (what `lsattr` shows and `chattr` sets: immutable, append-only, …), read with
//! the `FS_IOC_GETFLAGS` ioctl on a descriptor the scan already holds, as AIDE's `e2fsattrs`
//! does. Only regular files and directories are asked: devices and FIFOs are never opened.
//!
//! The bits are the kernel's `FS_*_FL` constants from `include/uapi/linux/fs.h`; ext4, btrfs,
//! xfs and f2fs map their own flags onto them. tmpfs answers for a few of them; filesystems
//! without the ioctl answer ENOTTY, EOPNOTSUPP or EINVAL, and fimd then records "none".
use std::os::fd::AsFd;

/// `FS_SECRM_FL`: secure deletion (`s`).
pub const SECRM: u32 = 0x0000_0001;
/// `FS_UNRM_FL`: undelete (`u`).
pub const UNRM: u32 = 0x0000_0002;
/// `FS_COMPR_FL`: compress file (`c`).
pub const COMPR: u32 = 0x0000_0004;
/// `FS_SYNC_FL`: synchronous updates (`S`).
pub const SYNC: u32 = 0x0000_0008;
/// `FS_IMMUTABLE_FL`: immutable file (`i`).
pub const IMMUTABLE: u32 = 0x0000_0010;
/// `FS_APPEND_FL`: writes to file may only append (`a`).
pub const APPEND: u32 = 0x0000_0020;
/// `FS_NODUMP_FL`: do not dump file (`d`).
pub const NODUMP: u32 = 0x0000_0040;
/// `FS_NOATIME_FL`: do not update atime (`A`).
pub const NOATIME: u32 = 0x0000_0080;
/// `FS_DIRTY_FL`, `FS_COMPRBLK_FL`: compression internals, set by the filesystem.
const DIRTY_COMPRBLK: u32 = 0x0000_0300;
/// `FS_NOCOMP_FL`: do not compress (`m`).
pub const NOCOMP: u32 = 0x0000_0400;
/// `FS_ENCRYPT_FL`: encrypted file (`E`).
pub const ENCRYPT: u32 = 0x0000_0800;
/// `FS_INDEX_FL`: hash-indexed directory (`I`), set by ext4 itself as a directory grows.
const INDEX: u32 = 0x0000_1000;
/// `FS_IMAGIC_FL`: AFS directory, filesystem-internal.
const IMAGIC: u32 = 0x0000_2000;
/// `FS_JOURNAL_DATA_FL`: journal file data (`j`).
pub const JOURNAL_DATA: u32 = 0x0000_4000;
/// `FS_NOTAIL_FL`: no tail merging (`t`).
pub const NOTAIL: u32 = 0x0000_8000;
/// `FS_DIRSYNC_FL`: synchronous directory updates (`D`).
pub const DIRSYNC: u32 = 0x0001_0000;
/// `FS_TOPDIR_FL`: top of directory hierarchies (`T`).
pub const TOPDIR: u32 = 0x0002_0000;
/// `FS_HUGE_FILE_FL`, `FS_EXTENT_FL`: ext4 layout (`h`, `e`), set by the filesystem.
const HUGE_EXTENT: u32 = 0x000c_0000;
/// `FS_VERITY_FL`: fs-verity protected file (`V`).
pub const VERITY: u32 = 0x0010_0000;
/// `FS_EA_INODE_FL`, `FS_EOFBLOCKS_FL`: filesystem internals.
const EA_INODE_EOFBLOCKS: u32 = 0x0060_0000;
/// `FS_NOCOW_FL`: no copy-on-write (`C`).
pub const NOCOW: u32 = 0x0080_0000;
/// `FS_DAX_FL`: direct access (`x`).
pub const DAX: u32 = 0x0200_0000;
/// `FS_INLINE_DATA_FL`: data stored in the inode (`N`), set by ext4 itself.
const INLINE_DATA: u32 = 0x1000_0000;
/// `FS_PROJINHERIT_FL`: new files inherit the project id (`P`).
pub const PROJINHERIT: u32 = 0x2000_0000;
/// `FS_CASEFOLD_FL`: case-insensitive directory (`F`).
pub const CASEFOLD: u32 = 0x4000_0000;

/// Bits the filesystem sets and clears on its own (layout, indexing, inline data): recording
/// them would report a directory that grew, or a file ext4 moved out of its inode.
pub const FILESYSTEM_OWNED: u32 =
    DIRTY_COMPRBLK | INDEX | IMAGIC | HUGE_EXTENT | EA_INODE_EOFBLOCKS | INLINE_DATA;

/// Recorded flags and their names: ECS `file.attributes` values and `lsattr` letters.
pub const NAMES: [(u32, &str, char); 19] = [
    (SECRM, "secure_deletion", 's'),
    (UNRM, "undeletable", 'u'),
    (SYNC, "sync", 'S'),
    (DIRSYNC, "dirsync", 'D'),
    (IMMUTABLE, "immutable", 'i'),
    (APPEND, "append", 'a'),
    (NODUMP, "nodump", 'd'),
    (NOATIME, "noatime", 'A'),
    (COMPR, "compressed", 'c'),
    (ENCRYPT, "encrypted", 'E'),
    (JOURNAL_DATA, "journal_data", 'j'),
    (NOTAIL, "notail", 't'),
    (TOPDIR, "topdir", 'T'),
    (NOCOW, "nocow", 'C'),
    (NOCOMP, "nocompress", 'm'),
    (VERITY, "verity", 'V'),
    (DAX, "dax", 'x'),
    (PROJINHERIT, "projinherit", 'P'),
    (CASEFOLD, "casefold", 'F'),
];

/// The recorded flags of an open regular file or directory: the `FS_*_FL` bits but those the
/// filesystem owns; `Ok(None)` where the filesystem has no such flags (ENOTTY, EOPNOTSUPP,
/// EINVAL), which is recorded as "none".
pub fn read_fd(fd: impl AsFd) -> std::io::Result<Option<u32>> {
    match rustix::fs::ioctl_getflags(fd) {
        Ok(f) => Ok(Some(f.bits() & !FILESYSTEM_OWNED)),
        Err(e)
            if e == rustix::io::Errno::NOTTY
                || e == rustix::io::Errno::OPNOTSUPP
                || e == rustix::io::Errno::INVAL =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The names of the set flags (ECS `file.attributes`); a bit without a name shows as hex.
pub fn names(flags: u32) -> Vec<String> {
    let mut out: Vec<String> = NAMES
        .iter()
        .filter(|(bit, _, _)| flags & bit != 0)
        .map(|(_, name, _)| (*name).to_owned())
        .collect();
    let known = NAMES.iter().fold(0, |acc, (bit, _, _)| acc | bit);
    let rest = flags & !known;
    for b in 0..32 {
        if rest & (1 << b) != 0 {
            out.push(format!("0x{:08x}", 1u32 << b));
        }
    }
    out
}

/// The flags as `lsattr` letters (`----ia--`-like, only the set ones: `ia`), `-` for none set,
/// `none` when not recorded.
pub fn letters(flags: Option<u32>) -> String {
    match flags {
        None => "none".into(),
        Some(0) => "-".into(),
        Some(f) => {
            let mut s: String = NAMES
                .iter()
                .filter(|(bit, _, _)| f & bit != 0)
                .map(|(_, _, c)| *c)
                .collect();
            let known = NAMES.iter().fold(0, |acc, (bit, _, _)| acc | bit);
            if f & !known != 0 {
                s.push_str(&format!("+0x{:x}", f & !known));
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_letters() {
        assert_eq!(names(IMMUTABLE | APPEND), vec!["immutable", "append"]);
        assert_eq!(letters(Some(IMMUTABLE | APPEND)), "ia");
        assert_eq!(letters(Some(0)), "-");
        assert_eq!(letters(None), "none");
        assert_eq!(names(0x0100_0000), vec!["0x01000000"]);
        assert_eq!(FILESYSTEM_OWNED & NAMES.iter().fold(0, |a, (b, _, _)| a | b), 0);
    }

    #[test]
    fn a_directory_on_the_test_filesystem_answers() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::open(dir.path()).unwrap();
        // Whatever the filesystem, the answer is flags or "none", never an error.
        let flags = read_fd(&f).unwrap();
        assert!(flags.is_none_or(|f| f & FILESYSTEM_OWNED == 0));
    }
}
