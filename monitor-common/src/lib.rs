//! Types shared by the eBPF programs and the userspace daemon.
//!
//! Everything here is `#[repr(C)]` with explicit padding: these structs cross the
//! kernel/user boundary as raw bytes, and uninitialised padding fails the verifier.
//! Tags are plain `u32`s, decoded in userspace with `TryFrom`: never transmuted.
#![no_std]

/// Globals the loader fills with struct member offsets read from the running kernel's BTF.
pub const OFF_INODE_I_SB: &str = "OFF_INODE_I_SB";
pub const OFF_INODE_I_INO: &str = "OFF_INODE_I_INO";
pub const OFF_SB_S_DEV: &str = "OFF_SB_S_DEV";
pub const OFF_INODE_I_MAPPING: &str = "OFF_INODE_I_MAPPING";
pub const OFF_AS_I_MMAP_WRITABLE: &str = "OFF_AS_I_MMAP_WRITABLE";
pub const OFF_SB_S_MAGIC: &str = "OFF_SB_S_MAGIC";
/// btrfs reports a subvolume's own device in `st_dev`: these find it from the inode. Zero
/// `BTRFS_ENABLED` when the kernel's BTF lacks the btrfs types.
pub const BTRFS_ENABLED: &str = "BTRFS_ENABLED";
pub const OFF_BTRFS_INODE_VFS_INODE: &str = "OFF_BTRFS_INODE_VFS_INODE";
pub const OFF_BTRFS_INODE_ROOT: &str = "OFF_BTRFS_INODE_ROOT";
pub const OFF_BTRFS_ROOT_ANON_DEV: &str = "OFF_BTRFS_ROOT_ANON_DEV";
pub const BTRFS_SUPER_MAGIC: u64 = 0x9123_683E;
/// For `iomap_dio_complete`: direct I/O data has landed (its ctime changed before it did).
pub const OFF_KIOCB_KI_FILP: &str = "OFF_KIOCB_KI_FILP";
pub const OFF_FILE_F_INODE: &str = "OFF_FILE_F_INODE";
pub const OFF_FILE_F_MODE: &str = "OFF_FILE_F_MODE";
/// `FMODE_WRITE`, a stable kernel ABI bit.
pub const FMODE_WRITE: u32 = 0x2;
/// Offsets the append-only checks need: from the current task to a descriptor's `struct file`,
/// its position and flags, and an inode's size.
pub const OFF_TASK_FILES: &str = "OFF_TASK_FILES";
pub const OFF_FILES_FDT: &str = "OFF_FILES_FDT";
pub const OFF_FDT_MAX_FDS: &str = "OFF_FDT_MAX_FDS";
pub const OFF_FDT_FD: &str = "OFF_FDT_FD";
pub const OFF_FILE_F_POS: &str = "OFF_FILE_F_POS";
/// `io_kiocb.file`: the file an io_uring request used, registered (fixed) or not, read when the
/// request completes (io_uring_complete).
pub const OFF_IO_KIOCB_FILE: &str = "OFF_IO_KIOCB_FILE";
pub const OFF_FILE_F_FLAGS: &str = "OFF_FILE_F_FLAGS";
pub const OFF_INODE_I_SIZE: &str = "OFF_INODE_I_SIZE";
/// Globals with this architecture's system call numbers, and where `struct pt_regs` keeps
/// the six arguments.
pub const NR_GLOBALS: [&str; 9] = [
    "NR_WRITE",
    "NR_WRITEV",
    "NR_PWRITE64",
    "NR_PWRITEV",
    "NR_PWRITEV2",
    "NR_SENDFILE",
    "NR_SPLICE",
    "NR_COPY_FILE_RANGE",
    "NR_FALLOCATE",
];
pub const OFF_REGS_ARGS: [&str; 6] = [
    "OFF_REGS_ARG0",
    "OFF_REGS_ARG1",
    "OFF_REGS_ARG2",
    "OFF_REGS_ARG3",
    "OFF_REGS_ARG4",
    "OFF_REGS_ARG5",
];
pub const O_APPEND: u32 = 0o2000;
pub const RWF_APPEND: u64 = 0x10;

/// A watched inode: the kernel's `dev_t` (`major << 20 | minor`, not userspace's `st_dev`
/// encoding) and the inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// What userspace knows of a watched inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchVal {
    pub flags: u32,
    pub _pad: u32,
    /// Append-only files: the length up to which the content is verified. A write below it,
    /// or a size seen below it, is recorded in VIOLATIONS.
    pub verified_len: u64,
}

/// `WatchVal::flags`: the inode is a directory (a change means: rescan its entries).
pub const WATCH_IS_DIR: u32 = 1;
pub const WATCH_APPEND_ONLY: u32 = 2;

/// VIOLATIONS flags: why an append-only file's verified bytes may have changed.
/// A write (write, pwrite, writev, splice, copy_file_range, sendfile) at an offset below the
/// verified length, or fallocate punching, zeroing, collapsing or inserting there.
pub const VIOLATION_WRITE_BELOW: u32 = 1;
/// The size was seen below the verified length (truncation).
pub const VIOLATION_SHRINK: u32 = 2;
/// Changed while mapped shared and writable: stores leave no offsets behind.
pub const VIOLATION_MMAP: u32 = 4;
/// An io_uring request took the file: its offsets are not seen.
pub const VIOLATION_URING: u32 = 8;
/// The sensor cannot see write offsets at all (fanotify): every append is verified by reading
/// the whole file.
pub const VIOLATION_UNSEEN: u32 = 16;

/// The hook that saw a change (`ChangeRecord::hook`): the eBPF sensor's tracepoints, then the
/// fanotify sensor's event types (include/uapi/linux/fanotify.h) and its scan of writable
/// shared mappings in /proc/PID/maps.
pub const HOOK_CTIME_XCHG: u32 = 1;
pub const HOOK_CTIME_SET: u32 = 2;
pub const HOOK_DIO_COMPLETE: u32 = 3;
/// The VFS tier (Linux 5.10 to 6.12; fentry, or kprobes): the kernel functions it hooks.
pub const HOOK_CURRENT_TIME: u32 = 4;
pub const HOOK_INODE_SET_CTIME_CURRENT: u32 = 5;
pub const HOOK_FILE_UPDATE_TIME: u32 = 6;
pub const HOOK_FILE_MODIFIED: u32 = 7;
pub const HOOK_KIOCB_MODIFIED: u32 = 8;
pub const HOOK_FAN_MODIFY: u32 = 16;
pub const HOOK_FAN_ATTRIB: u32 = 17;
pub const HOOK_FAN_CLOSE_WRITE: u32 = 18;
pub const HOOK_FAN_CREATE: u32 = 19;
pub const HOOK_FAN_DELETE: u32 = 20;
pub const HOOK_FAN_MOVE: u32 = 21;
pub const HOOK_PROC_MAPS: u32 = 22;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    CtimeXchg,
    CtimeSet,
    DioComplete,
    CurrentTime,
    InodeSetCtimeCurrent,
    FileUpdateTime,
    FileModified,
    KiocbModified,
    FanModify,
    FanAttrib,
    FanCloseWrite,
    FanCreate,
    FanDelete,
    FanMove,
    ProcMaps,
}

impl TryFrom<u32> for Hook {
    type Error = u32;
    fn try_from(v: u32) -> Result<Hook, u32> {
        match v {
            HOOK_CTIME_XCHG => Ok(Hook::CtimeXchg),
            HOOK_CTIME_SET => Ok(Hook::CtimeSet),
            HOOK_DIO_COMPLETE => Ok(Hook::DioComplete),
            HOOK_CURRENT_TIME => Ok(Hook::CurrentTime),
            HOOK_INODE_SET_CTIME_CURRENT => Ok(Hook::InodeSetCtimeCurrent),
            HOOK_FILE_UPDATE_TIME => Ok(Hook::FileUpdateTime),
            HOOK_FILE_MODIFIED => Ok(Hook::FileModified),
            HOOK_KIOCB_MODIFIED => Ok(Hook::KiocbModified),
            HOOK_FAN_MODIFY => Ok(Hook::FanModify),
            HOOK_FAN_ATTRIB => Ok(Hook::FanAttrib),
            HOOK_FAN_CLOSE_WRITE => Ok(Hook::FanCloseWrite),
            HOOK_FAN_CREATE => Ok(Hook::FanCreate),
            HOOK_FAN_DELETE => Ok(Hook::FanDelete),
            HOOK_FAN_MOVE => Ok(Hook::FanMove),
            HOOK_PROC_MAPS => Ok(Hook::ProcMaps),
            other => Err(other),
        }
    }
}

impl Hook {
    /// The kernel's name for the hook: a tracepoint, a kernel function, a fanotify event type, or
    /// `proc_maps`.
    pub fn name(self) -> &'static str {
        match self {
            Hook::CtimeXchg => "ctime_ns_xchg",
            Hook::CtimeSet => "inode_set_ctime_to_ts",
            Hook::DioComplete => "iomap_dio_complete",
            Hook::CurrentTime => "current_time",
            Hook::InodeSetCtimeCurrent => "inode_set_ctime_current",
            Hook::FileUpdateTime => "file_update_time",
            Hook::FileModified => "file_modified",
            Hook::KiocbModified => "kiocb_modified",
            Hook::FanModify => "FAN_MODIFY",
            Hook::FanAttrib => "FAN_ATTRIB",
            Hook::FanCloseWrite => "FAN_CLOSE_WRITE",
            Hook::FanCreate => "FAN_CREATE",
            Hook::FanDelete => "FAN_DELETE",
            Hook::FanMove => "FAN_MOVE",
            Hook::ProcMaps => "proc_maps",
        }
    }
}

/// One change to a watched inode, sent when the inode was armed (at most one per re-arm).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ChangeRecord {
    pub key: InodeKey,
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub gid: u32,
    pub hook: u32,
    /// `RECORD_*` bits.
    pub flags: u32,
    pub comm: [u8; 16],
}

/// `ChangeRecord::flags`: the file has shared writable mappings, so stores through them
/// change it without a system call; userspace writes it back (write-protecting the pages,
/// so the next store faults and reports) before hashing.
pub const RECORD_MMAP_WRITABLE: u32 = 1;

/// Changes since the last record, kept per inode until userspace takes them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    pub count: u64,
    pub last_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
}

/// Per-CPU counters in `COUNTERS`.
pub const COUNTER_HITS: u32 = 0;
pub const COUNTER_EMITTED: u32 = 1;
pub const COUNTER_RB_DROPS: u32 = 2;
pub const COUNTER_PENDING_FULL: u32 = 3;
pub const COUNTERS_LEN: u32 = 4;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, repr(C), every padding byte is an explicit field.
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::WatchVal {}
    unsafe impl aya::Pod for super::ChangeRecord {}
    unsafe impl aya::Pod for super::Pending {}
}
