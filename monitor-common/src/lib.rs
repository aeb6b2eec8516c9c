//! Types shared by the eBPF programs and the userspace daemon.
//!
//! Everything here is `#[repr(C)]` with explicit padding: these structs cross the
//! kernel/user boundary as raw bytes, and uninitialised padding fails the verifier.
//! Tags are plain `u32`s, decoded in userspace with `TryFrom`: never transmuted.
#![no_std]

/// Everything the kernel programs need to know about the running kernel's layout, in the one
/// read-only global `LAYOUT`: struct member offsets (bytes) read from the running kernel's BTF,
/// and this architecture's system call numbers, set once by the loader before the programs are
/// verified. raw_tracepoint programs read a member as `bpf_probe_read_kernel(base + off)`.
///
/// Adding an offset takes one field here and its BTF lookup in
/// `monitor/src/sensor/ebpf.rs::layout_from_btf`. Every field is a `u32`, so the struct has no
/// padding (asserted below): the loader copies it into the object as raw bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// `inode.i_sb`, `inode.i_ino`, `inode.i_mapping`, `inode.i_size`.
    pub inode_i_sb: u32,
    pub inode_i_ino: u32,
    pub inode_i_mapping: u32,
    pub inode_i_size: u32,
    /// `super_block.s_dev`, `super_block.s_magic`.
    pub sb_s_dev: u32,
    pub sb_s_magic: u32,
    /// `address_space.i_mmap_writable` (atomic_t).
    pub as_i_mmap_writable: u32,
    /// 1 when the kernel's BTF has the btrfs types (btrfs built in), else 0 and the three
    /// btrfs offsets are unused: btrfs reports a subvolume's own device in `st_dev`, found from
    /// the inode as `BTRFS_I(inode)->root->anon_dev`.
    pub btrfs: u32,
    /// `btrfs_inode.vfs_inode`, `btrfs_inode.root`, `btrfs_root.anon_dev`.
    pub btrfs_inode_vfs_inode: u32,
    pub btrfs_inode_root: u32,
    pub btrfs_root_anon_dev: u32,
    /// `kiocb.ki_filp`: for `iomap_dio_complete` (direct I/O data has landed).
    pub kiocb_ki_filp: u32,
    /// `file.f_inode`, `file.f_mode`, `file.f_pos`, `file.f_flags`.
    pub file_f_inode: u32,
    pub file_f_mode: u32,
    pub file_f_pos: u32,
    pub file_f_flags: u32,
    /// From the current task to a descriptor's `struct file`: `task_struct.files`,
    /// `files_struct.fdt`, `fdtable.max_fds`, `fdtable.fd`.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    /// 1 when the kernel's BTF has `io_kiocb.file` (io_uring built in), else 0.
    pub io_kiocb: u32,
    /// `io_kiocb.file`: the file an io_uring request used, registered (fixed) or not, read when
    /// the request completes (io_uring_complete). 0 is a valid offset: see `io_kiocb`.
    pub io_kiocb_file: u32,
    /// Where `struct pt_regs` keeps the six system call arguments.
    pub regs_args: [u32; 6],
    /// This architecture's write-family system call numbers, `u32::MAX` for none.
    pub nr_write: u32,
    pub nr_writev: u32,
    pub nr_pwrite64: u32,
    pub nr_pwritev: u32,
    pub nr_pwritev2: u32,
    pub nr_sendfile: u32,
    pub nr_splice: u32,
    pub nr_copy_file_range: u32,
    pub nr_fallocate: u32,
    /// `dentry.d_parent`, `dentry.d_inode`: the VFS tier's `d_delete` hook reports the parent
    /// directory of a removed entry (monitor-ebpf/src/vfs.rs).
    pub dentry_d_parent: u32,
    pub dentry_d_inode: u32,
    /// `inode.i_nlink` (in an anonymous union): the VFS tier skips unlinked victims.
    pub inode_i_nlink: u32,
}

/// The symbol of the `KernelLayout` global in the eBPF object.
pub const KERNEL_LAYOUT_GLOBAL: &str = "LAYOUT";

// No implicit padding: the size is the sum of its 40 u32 fields.
const _: () = assert!(core::mem::size_of::<KernelLayout>() == 40 * 4);

impl KernelLayout {
    /// The object's placeholder until the loader sets the real layout: every offset 0, no
    /// optional types, no system call numbers.
    pub const UNSET: KernelLayout = KernelLayout {
        inode_i_sb: 0,
        inode_i_ino: 0,
        inode_i_mapping: 0,
        inode_i_size: 0,
        sb_s_dev: 0,
        sb_s_magic: 0,
        as_i_mmap_writable: 0,
        btrfs: 0,
        btrfs_inode_vfs_inode: 0,
        btrfs_inode_root: 0,
        btrfs_root_anon_dev: 0,
        kiocb_ki_filp: 0,
        file_f_inode: 0,
        file_f_mode: 0,
        file_f_pos: 0,
        file_f_flags: 0,
        task_files: 0,
        files_fdt: 0,
        fdt_max_fds: 0,
        fdt_fd: 0,
        io_kiocb: 0,
        io_kiocb_file: 0,
        regs_args: [0; 6],
        nr_write: u32::MAX,
        nr_writev: u32::MAX,
        nr_pwrite64: u32::MAX,
        nr_pwritev: u32::MAX,
        nr_pwritev2: u32::MAX,
        nr_sendfile: u32::MAX,
        nr_splice: u32::MAX,
        nr_copy_file_range: u32::MAX,
        nr_fallocate: u32::MAX,
        dentry_d_parent: 0,
        dentry_d_inode: 0,
        inode_i_nlink: 0,
    };
}

pub const BTRFS_SUPER_MAGIC: u64 = 0x9123_683E;
/// `FMODE_WRITE`, a stable kernel ABI bit.
pub const FMODE_WRITE: u32 = 0x2;
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
pub const HOOK_D_DELETE: u32 = 9;
pub const HOOK_GENERIC_WRITE_CHECKS: u32 = 10;
pub const HOOK_D_INSTANTIATE: u32 = 11;
pub const HOOK_POST_SETXATTR: u32 = 12;
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
    DDelete,
    GenericWriteChecks,
    DInstantiate,
    PostSetxattr,
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
            HOOK_D_DELETE => Ok(Hook::DDelete),
            HOOK_GENERIC_WRITE_CHECKS => Ok(Hook::GenericWriteChecks),
            HOOK_D_INSTANTIATE => Ok(Hook::DInstantiate),
            HOOK_POST_SETXATTR => Ok(Hook::PostSetxattr),
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
            Hook::DDelete => "d_delete",
            Hook::GenericWriteChecks => "generic_write_checks",
            Hook::DInstantiate => "d_instantiate",
            Hook::PostSetxattr => "security_inode_post_setxattr",
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

/// One change to a watched inode, sent when the inode was armed (at most one per re-arm):
/// the inode and the task that changed it, as the kernel saw them at the change.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ChangeRecord {
    pub key: InodeKey,
    /// The task's cgroup v2 id (0 from the fanotify sensor, which cannot see it).
    pub cgroup_id: u64,
    /// Thread id, thread group (process) id, and uid of the task (eBPF: the real uid,
    /// `bpf_get_current_uid_gid`; fanotify: the effective uid from /proc).
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    /// `HOOK_*`: the hook that saw the change.
    pub hook: u32,
    /// `RECORD_*` bits.
    pub flags: u32,
    /// The task's name (`TASK_COMM_LEN` bytes, NUL-padded).
    pub comm: [u8; 16],
    pub _pad: u32,
}

// No implicit padding: 16 + 8 + 5 * 4 + 16 + 4 bytes.
const _: () = assert!(core::mem::size_of::<ChangeRecord>() == 64);

/// `ChangeRecord::flags`: the file has shared writable mappings, so stores through them
/// change it without a system call; userspace writes it back (write-protecting the pages,
/// so the next store faults and reports) before hashing.
pub const RECORD_MMAP_WRITABLE: u32 = 1;

/// The kernel programs, in `PROG_*` order: (program name in the object, raw tracepoint).
/// The first three report changes; the last three are the append-only write checks.
/// Then the VFS tier's (Linux 5.10 to 6.12, monitor-ebpf/src/vfs.rs): (its fentry program, or
/// the kprobe for the two functions fentry cannot attach to, and the kernel function); its
/// kprobe variant `fimd_kp_*` of each counts in the same slot (only one variant is attached).
pub const PROGRAMS: [(&str, &str); 16] = [
    ("fimd_ctime_xchg", "ctime_ns_xchg"),
    ("fimd_ctime_set", "inode_set_ctime_to_ts"),
    ("fimd_dio_complete", "iomap_dio_complete"),
    ("fimd_sys_enter", "sys_enter"),
    ("fimd_uring_file", "io_uring_file_get"),
    ("fimd_uring_complete", "io_uring_complete"),
    ("fimd_kp_current_time", "current_time"),
    ("fimd_kp_ctime_current", "inode_set_ctime_current"),
    ("fimd_fe_file_update_time", "file_update_time"),
    ("fimd_fe_file_modified", "file_modified"),
    ("fimd_fe_kiocb_modified", "kiocb_modified"),
    ("fimd_fe_d_delete", "d_delete"),
    ("fimd_fe_atime_enter", "atime_needs_update"),
    ("fimd_fe_write_checks", "generic_write_checks"),
    ("fimd_fe_d_instantiate", "d_instantiate"),
    ("fimd_fe_post_setxattr", "security_inode_post_setxattr"),
];
pub const PROG_CTIME_XCHG: u32 = 0;
pub const PROG_CTIME_SET: u32 = 1;
pub const PROG_DIO_COMPLETE: u32 = 2;
pub const PROG_SYS_ENTER: u32 = 3;
pub const PROG_URING_FILE: u32 = 4;
pub const PROG_URING_COMPLETE: u32 = 5;
pub const PROG_VFS_CURRENT_TIME: u32 = 6;
pub const PROG_VFS_CTIME_CURRENT: u32 = 7;
pub const PROG_VFS_FILE_UPDATE_TIME: u32 = 8;
pub const PROG_VFS_FILE_MODIFIED: u32 = 9;
pub const PROG_VFS_KIOCB_MODIFIED: u32 = 10;
pub const PROG_VFS_D_DELETE: u32 = 11;
pub const PROG_VFS_ATIME: u32 = 12;
pub const PROG_VFS_WRITE_CHECKS: u32 = 13;
pub const PROG_VFS_D_INSTANTIATE: u32 = 14;
pub const PROG_VFS_POST_SETXATTR: u32 = 15;

/// Per-CPU counters in `COUNTERS`: records the ring buffer had no room for (each one a
/// loss userspace repairs by a rescan), then per program the failed kernel reads that made it
/// give up on an event (`counter_probe_errors`).
pub const COUNTER_RB_DROPS: u32 = 0;
pub const COUNTERS_LEN: u32 = 1 + PROGRAMS.len() as u32;

/// The `COUNTERS` slot of program `program`'s (`PROG_*`) failed reads.
pub const fn counter_probe_errors(program: u32) -> u32 {
    1 + program
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, repr(C), every padding byte is an explicit field.
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::WatchVal {}
    unsafe impl aya::Pod for super::ChangeRecord {}
    unsafe impl aya::Pod for super::KernelLayout {}
}
