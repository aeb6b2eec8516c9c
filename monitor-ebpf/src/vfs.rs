//! The change sensor for kernels without the ctime tracepoints (Linux 5.10 to 6.12): the
//! same `report` (WATCH filter, ARMED test-and-clear, one `ChangeRecord`) fed from
//! the kernel functions every inode time update goes through: fentry programs, and kprobes for
//! the two functions that return a struct (fentry refuses those) or for all of them where the
//! kernel has no BPF trampolines. docs/sensor-design.md §4b says why each function
//! catches its operations on every kernel in the range.
//!
//! - `current_time(inode)`: the timestamp every filesystem computes before it sets ctime/mtime
//!   on 5.10 and 6.1 (ext4, tmpfs, xfs, btrfs, `notify_change`); on 6.12 only `notify_change`
//!   (chmod, chown, utimes, truncate) still calls it out of line.
//! - `inode_set_ctime_current(inode)`: where 6.6 and later set ctime (6.12: ext4, tmpfs, xattr,
//!   rename, link, unlink, fallocate).
//! - `file_update_time(file)`, `file_modified(file)`, `kiocb_modified(iocb)`: the write path's
//!   time update, entered on every write (and on a shared mapping's write fault) whether or not
//!   the time then changes (6.0 and later: `file_modified_flags` tests FMODE_NOCMTIME inside).
//! - `generic_write_checks(iocb, from)`: the checks every write_iter of ext4, xfs, btrfs and
//!   tmpfs starts with. On 5.10 xfs skips `file_update_time` for FMODE_NOCMTIME writers (XFS
//!   "invisible I/O", descriptors from XFS_IOC_OPEN_BY_HANDLE): this is where those are seen.
//! - `d_instantiate(dentry, inode)`: a name now refers to an inode; its parent directory is
//!   reported. tmpfs's link (5.10 to 6.12) times the directory from the linked inode's
//!   `current_time`/`inode_set_ctime_current`, so the directory itself is seen only here.
//! - `security_inode_post_setxattr(dentry, …)`: after every successful setxattr
//!   (`__vfs_setxattr_noperm`, 5.10 to 6.12). tmpfs before 6.6 changes no time on setxattr
//!   (`shmem_xattr_handler_set`), so its xattrs are seen only here.
//!
//! `current_time` also runs for atime (`atime_needs_update`, on every read, and `touch_atime`
//! when it then updates atime): a read is no change, so `atime_needs_update` marks the reading
//! task for the inode until it returns false or `touch_atime` returns, and `current_time` skips
//! the inode that task is reading.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::HashMap,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use monitor_common::{
    HOOK_CURRENT_TIME, HOOK_D_DELETE, HOOK_D_INSTANTIATE, HOOK_FILE_MODIFIED, HOOK_FILE_UPDATE_TIME,
    HOOK_GENERIC_WRITE_CHECKS, HOOK_INODE_SET_CTIME_CURRENT, HOOK_KIOCB_MODIFIED, HOOK_POST_SETXATTR,
    PROG_VFS_ATIME, PROG_VFS_CTIME_CURRENT, PROG_VFS_CURRENT_TIME, PROG_VFS_D_DELETE, PROG_VFS_D_INSTANTIATE,
    PROG_VFS_FILE_MODIFIED, PROG_VFS_FILE_UPDATE_TIME, PROG_VFS_KIOCB_MODIFIED, PROG_VFS_POST_SETXATTR,
    PROG_VFS_WRITE_CHECKS,
};

use crate::change::report;
use crate::kernel::{file_inode, inode_key, layout, read};
use crate::maps::{WATCH, probe_error};

/// Tasks (pid_tgid) inside `atime_needs_update` for a watched inode → that inode's address.
/// An entry lives while the function runs; a full map only lets a read through as a recheck.
#[map]
static ATIME: HashMap<u64, u64> = HashMap::with_max_entries(16_384, 0);

/// `iocb->ki_filp->f_inode` (0 for none).
#[inline(always)]
fn kiocb_inode(iocb: u64) -> Result<u64, i64> {
    if iocb == 0 {
        return Ok(0);
    }
    inode_of_file(read(iocb + layout!(kiocb_ki_filp))?)
}

/// `current_time(inode)`: a change unless this task is inside `atime_needs_update` for it.
#[inline(always)]
fn on_current_time(inode: u64) -> Result<(), i64> {
    // SAFETY: a map value copied out.
    if let Some(&reading) = unsafe { ATIME.get(&bpf_get_current_pid_tgid()) } {
        if reading == inode {
            return Ok(());
        }
    }
    if unlinked(inode)? {
        return Ok(());
    }
    report(inode, HOOK_CURRENT_TIME, PROG_VFS_CURRENT_TIME)
}

/// `atime_needs_update(path, inode)` starts: mark the task when the inode is watched (the
/// lookup keeps the map to the few tasks reading watched files).
#[inline(always)]
fn on_atime_enter(inode: u64) -> Result<(), i64> {
    let Some(key) = inode_key(inode)? else {
        return Ok(());
    };
    // SAFETY: a lookup; nothing is kept.
    if unsafe { WATCH.get(&key) }.is_none() {
        return Ok(());
    }
    // A full map only lets this read through as a recheck: no change is hidden, no loss.
    let _ = ATIME.insert(&bpf_get_current_pid_tgid(), &inode, 0);
    Ok(())
}

/// The read is over: `atime_needs_update` said no update (returned false), or `touch_atime`,
/// which calls `current_time` once more for the update it then makes (5.10, 6.1), returned.
#[inline(always)]
fn on_atime_exit() {
    let _ = ATIME.remove(&bpf_get_current_pid_tgid());
}

/// Whether `inode` has no links left: a victim of unlink or rmdir (ext4 and tmpfs time the
/// parent of an rmdir from the victim on 5.10 and 6.1). Not a change at any path: `d_delete`
/// reports its parent, after the removal, with the remover.
#[inline(always)]
fn unlinked(inode: u64) -> Result<bool, i64> {
    if inode == 0 {
        return Ok(false);
    }
    Ok(read::<u32>(inode + layout!(inode_i_nlink))? == 0)
}

/// `file->f_inode` of a `struct file *` argument (0 for none).
#[inline(always)]
fn inode_of_file(file: u64) -> Result<u64, i64> {
    if file == 0 { Ok(0) } else { file_inode(file) }
}

/// Runs `f` and counts a failed kernel read against program `program` (`PROG_VFS_*`).
#[inline(always)]
fn counted(program: u32, f: impl FnOnce() -> Result<(), i64>) {
    if f().is_err() {
        probe_error(program);
    }
}

/// `d_delete(dentry)`: a name was removed (vfs_unlink, vfs_rmdir). On 5.10 and 6.1 ext4 and
/// tmpfs set the parent directory's times in rmdir from `current_time(victim)`, so the parent
/// is reported here: `dentry->d_parent->d_inode`.
#[inline(always)]
fn on_d_delete(dentry: u64) -> Result<(), i64> {
    report_parent(dentry, HOOK_D_DELETE, PROG_VFS_D_DELETE)
}

/// Reports `dentry->d_parent->d_inode` (nothing for a root, whose parent is itself).
#[inline(always)]
fn report_parent(dentry: u64, hook: u32, program: u32) -> Result<(), i64> {
    if dentry == 0 {
        return Ok(());
    }
    let parent = read::<u64>(dentry + layout!(dentry_d_parent))?;
    if parent == 0 || parent == dentry {
        return Ok(());
    }
    report(read::<u64>(parent + layout!(dentry_d_inode))?, hook, program)
}

// fentry programs: arguments from the BTF-typed context.

#[fentry(function = "file_update_time")]
pub fn fimd_fe_file_update_time(ctx: FEntryContext) -> i32 {
    counted(PROG_VFS_FILE_UPDATE_TIME, || {
        report(
            inode_of_file(ctx.arg(0))?,
            HOOK_FILE_UPDATE_TIME,
            PROG_VFS_FILE_UPDATE_TIME,
        )
    });
    0
}

#[fentry(function = "file_modified")]
pub fn fimd_fe_file_modified(ctx: FEntryContext) -> i32 {
    counted(PROG_VFS_FILE_MODIFIED, || {
        report(
            inode_of_file(ctx.arg(0))?,
            HOOK_FILE_MODIFIED,
            PROG_VFS_FILE_MODIFIED,
        )
    });
    0
}

#[fentry(function = "kiocb_modified")]
pub fn fimd_fe_kiocb_modified(ctx: FEntryContext) -> i32 {
    counted(PROG_VFS_KIOCB_MODIFIED, || {
        report(
            kiocb_inode(ctx.arg(0))?,
            HOOK_KIOCB_MODIFIED,
            PROG_VFS_KIOCB_MODIFIED,
        )
    });
    0
}

#[fentry(function = "d_delete")]
pub fn fimd_fe_d_delete(ctx: FEntryContext) -> i32 {
    counted(PROG_VFS_D_DELETE, || on_d_delete(ctx.arg(0)));
    0
}

#[fentry(function = "generic_write_checks")]
pub fn fimd_fe_write_checks(ctx: FEntryContext) -> i32 {
    counted(PROG_VFS_WRITE_CHECKS, || {
        report(
            kiocb_inode(ctx.arg(0))?,
            HOOK_GENERIC_WRITE_CHECKS,
            PROG_VFS_WRITE_CHECKS,
        )
    });
    0
}

#[fentry(function = "d_instantiate")]
pub fn fimd_fe_d_instantiate(ctx: FEntryContext) -> i32 {
    counted(PROG_VFS_D_INSTANTIATE, || {
        report_parent(ctx.arg(0), HOOK_D_INSTANTIATE, PROG_VFS_D_INSTANTIATE)
    });
    0
}

/// `dentry->d_inode` of a `struct dentry *` argument (0 for none).
#[inline(always)]
fn inode_of_dentry(dentry: u64) -> Result<u64, i64> {
    if dentry == 0 {
        Ok(0)
    } else {
        read(dentry + layout!(dentry_d_inode))
    }
}

#[fentry(function = "security_inode_post_setxattr")]
pub fn fimd_fe_post_setxattr(ctx: FEntryContext) -> i32 {
    counted(PROG_VFS_POST_SETXATTR, || {
        report(
            inode_of_dentry(ctx.arg(0))?,
            HOOK_POST_SETXATTR,
            PROG_VFS_POST_SETXATTR,
        )
    });
    0
}

#[fentry(function = "atime_needs_update")]
pub fn fimd_fe_atime_enter(ctx: FEntryContext) -> i32 {
    counted(PROG_VFS_ATIME, || on_atime_enter(ctx.arg(1)));
    0
}

/// The return value follows the two arguments in an fexit context.
#[fexit(function = "atime_needs_update")]
pub fn fimd_fx_atime_exit(ctx: FExitContext) -> i32 {
    if ctx.arg::<u64>(2) & 0xff == 0 {
        on_atime_exit();
    }
    0
}

#[fexit(function = "touch_atime")]
pub fn fimd_fx_touch_atime(_ctx: FExitContext) -> i32 {
    on_atime_exit();
    0
}

// kprobes: arguments from `struct pt_regs`. `current_time` and `inode_set_ctime_current`
// return a struct, which fentry cannot attach to: both tiers use these kprobes for them.

#[kprobe]
pub fn fimd_kp_current_time(ctx: ProbeContext) -> u32 {
    counted(PROG_VFS_CURRENT_TIME, || {
        on_current_time(ctx.arg::<u64>(0).unwrap_or(0))
    });
    0
}

#[kprobe]
pub fn fimd_kp_ctime_current(ctx: ProbeContext) -> u32 {
    counted(PROG_VFS_CTIME_CURRENT, || {
        let inode = ctx.arg::<u64>(0).unwrap_or(0);
        if unlinked(inode)? {
            return Ok(());
        }
        report(inode, HOOK_INODE_SET_CTIME_CURRENT, PROG_VFS_CTIME_CURRENT)
    });
    0
}

#[kprobe]
pub fn fimd_kp_file_update_time(ctx: ProbeContext) -> u32 {
    counted(PROG_VFS_FILE_UPDATE_TIME, || {
        report(
            inode_of_file(ctx.arg::<u64>(0).unwrap_or(0))?,
            HOOK_FILE_UPDATE_TIME,
            PROG_VFS_FILE_UPDATE_TIME,
        )
    });
    0
}

#[kprobe]
pub fn fimd_kp_file_modified(ctx: ProbeContext) -> u32 {
    counted(PROG_VFS_FILE_MODIFIED, || {
        report(
            inode_of_file(ctx.arg::<u64>(0).unwrap_or(0))?,
            HOOK_FILE_MODIFIED,
            PROG_VFS_FILE_MODIFIED,
        )
    });
    0
}

#[kprobe]
pub fn fimd_kp_kiocb_modified(ctx: ProbeContext) -> u32 {
    counted(PROG_VFS_KIOCB_MODIFIED, || {
        report(
            kiocb_inode(ctx.arg::<u64>(0).unwrap_or(0))?,
            HOOK_KIOCB_MODIFIED,
            PROG_VFS_KIOCB_MODIFIED,
        )
    });
    0
}

#[kprobe]
pub fn fimd_kp_d_delete(ctx: ProbeContext) -> u32 {
    counted(PROG_VFS_D_DELETE, || on_d_delete(ctx.arg::<u64>(0).unwrap_or(0)));
    0
}

#[kprobe]
pub fn fimd_kp_write_checks(ctx: ProbeContext) -> u32 {
    counted(PROG_VFS_WRITE_CHECKS, || {
        report(
            kiocb_inode(ctx.arg::<u64>(0).unwrap_or(0))?,
            HOOK_GENERIC_WRITE_CHECKS,
            PROG_VFS_WRITE_CHECKS,
        )
    });
    0
}

#[kprobe]
pub fn fimd_kp_d_instantiate(ctx: ProbeContext) -> u32 {
    counted(PROG_VFS_D_INSTANTIATE, || {
        report_parent(
            ctx.arg::<u64>(0).unwrap_or(0),
            HOOK_D_INSTANTIATE,
            PROG_VFS_D_INSTANTIATE,
        )
    });
    0
}

#[kprobe]
pub fn fimd_kp_post_setxattr(ctx: ProbeContext) -> u32 {
    counted(PROG_VFS_POST_SETXATTR, || {
        report(
            inode_of_dentry(ctx.arg::<u64>(0).unwrap_or(0))?,
            HOOK_POST_SETXATTR,
            PROG_VFS_POST_SETXATTR,
        )
    });
    0
}

#[kprobe]
pub fn fimd_kp_atime_enter(ctx: ProbeContext) -> u32 {
    counted(PROG_VFS_ATIME, || on_atime_enter(ctx.arg::<u64>(1).unwrap_or(0)));
    0
}

#[kretprobe]
pub fn fimd_kr_atime_exit(ctx: RetProbeContext) -> u32 {
    if ctx.ret::<u64>() & 0xff == 0 {
        on_atime_exit();
    }
    0
}

#[kretprobe]
pub fn fimd_kr_touch_atime(_ctx: RetProbeContext) -> u32 {
    on_atime_exit();
    0
}
