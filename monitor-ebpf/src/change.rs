//! The change sensor: every ctime change of a watched inode, with the task that made it.
//!
//! Hooks (see docs/sensor-design.md): `ctime_ns_xchg` fires for every real ctime change on
//! multigrain filesystems (data, metadata and, through the parent directory, names);
//! `inode_set_ctime_to_ts` for explicit ctime sets; `iomap_dio_complete` when direct I/O data
//! lands. All run in the modifying task.
//! Coalescing: userspace arms an inode by inserting it in ARMED; the first hit deletes the key
//! (the atomic test-and-clear) and emits one record; later hits until the re-arm only reach
//! the append-only checks. The rehash userspace makes after the record covers them.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use monitor_common::{
    COUNTER_RB_DROPS, ChangeRecord, FMODE_WRITE, HOOK_CTIME_SET, HOOK_CTIME_XCHG, HOOK_DIO_COMPLETE,
    PROG_CTIME_SET, PROG_CTIME_XCHG, PROG_DIO_COMPLETE, RECORD_MMAP_WRITABLE,
};

use crate::kernel::{file_inode, inode_key, layout, mmap_writable, read};
use crate::maps::{ARMED, EVENTS, WATCH, bump, probe_error};

#[raw_tracepoint(tracepoint = "ctime_ns_xchg")]
pub fn fimd_ctime_xchg(ctx: RawTracePointContext) -> i32 {
    if report(ctx.arg(0), HOOK_CTIME_XCHG, PROG_CTIME_XCHG).is_err() {
        probe_error(PROG_CTIME_XCHG);
    }
    0
}

#[raw_tracepoint(tracepoint = "inode_set_ctime_to_ts")]
pub fn fimd_ctime_set(ctx: RawTracePointContext) -> i32 {
    if report(ctx.arg(0), HOOK_CTIME_SET, PROG_CTIME_SET).is_err() {
        probe_error(PROG_CTIME_SET);
    }
    0
}

/// Direct I/O completed: its ctime changed when it started, before the data landed (xfs
/// holds only a shared lock meanwhile), so the landing is a change of its own.
#[raw_tracepoint(tracepoint = "iomap_dio_complete")]
pub fn fimd_dio_complete(ctx: RawTracePointContext) -> i32 {
    if try_dio_complete(&ctx).is_err() {
        probe_error(PROG_DIO_COMPLETE);
    }
    0
}

fn try_dio_complete(ctx: &RawTracePointContext) -> Result<(), i64> {
    let iocb: u64 = ctx.arg(0);
    if iocb == 0 {
        return Ok(());
    }
    let file: u64 = read(iocb + layout!(kiocb_ki_filp))?;
    if file == 0 {
        return Ok(());
    }
    let mode: u32 = read(file + layout!(file_f_mode))?;
    if mode & FMODE_WRITE == 0 {
        return Ok(());
    }
    report(file_inode(file)?, HOOK_DIO_COMPLETE, PROG_DIO_COMPLETE)
}

/// Filters `inode` against the watch set and reports the first change after an arm.
/// `program` (`PROG_*`) is charged with the failed reads that do not stop the report.
#[inline(always)]
pub(crate) fn report(inode: u64, hook: u32, program: u32) -> Result<(), i64> {
    let Some(key) = inode_key(inode)? else {
        return Ok(());
    };
    // SAFETY: a map value copied out.
    let Some(w) = (unsafe { WATCH.get(&key) }).copied() else {
        return Ok(());
    };
    crate::append::note_change(inode, &key, &w, program);
    // The first hit after userspace armed the inode wins the delete and reports.
    if ARMED.remove(&key).is_err() {
        return Ok(());
    }
    let flags = match mmap_writable(inode) {
        Ok(true) => RECORD_MMAP_WRITABLE,
        Ok(false) => 0,
        Err(_) => {
            probe_error(program);
            0
        }
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    match EVENTS.reserve::<ChangeRecord>(0) {
        Some(mut entry) => {
            entry.write(ChangeRecord {
                key,
                // SAFETY: helper without preconditions.
                cgroup_id: unsafe { bpf_get_current_cgroup_id() },
                pid: pid_tgid as u32,
                tgid: (pid_tgid >> 32) as u32,
                uid: bpf_get_current_uid_gid() as u32,
                hook,
                flags,
                comm: bpf_get_current_comm().unwrap_or([0; 16]),
                _pad: 0,
            });
            entry.submit(0);
        }
        None => {
            // Re-arm so the next hit retries; userspace sees the drop and rescans.
            let _ = ARMED.insert(&key, &1, 0);
            bump(COUNTER_RB_DROPS);
        }
    }
    Ok(())
}
