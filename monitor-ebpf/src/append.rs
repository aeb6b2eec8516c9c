//! What the append-only policy needs to know from the kernel: whether bytes an append-only
//! file already had (below its verified length) may have been written.
//!
//! The write-family system calls are checked at entry (the `sys_enter` raw tracepoint),
//! before their data lands: the offset is
//! explicit (pwrite, splice, copy_file_range) or the descriptor's position (write, writev,
//! sendfile); O_APPEND and RWF_APPEND writes land at the end and need no check. A file that
//! io_uring takes, or that changes while mapped writable, has no offsets to check: userspace
//! verifies it whole. Truncation is seen by the change hooks (`note_change`).
use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_probe_read_user, macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use monitor_common::{
    InodeKey, O_APPEND, PROG_SYS_ENTER, PROG_URING_COMPLETE, PROG_URING_FILE, RWF_APPEND, VIOLATION_MMAP,
    VIOLATION_SHRINK, VIOLATION_URING, VIOLATION_WRITE_BELOW, WATCH_APPEND_ONLY, WatchVal,
};

use crate::kernel::{file_inode, file_of, inode_key, inode_size, layout, mmap_writable, read};
use crate::maps::{VIOLATIONS, WATCH, probe_error};

/// System call argument `n` (0..=5) from `struct pt_regs *regs`.
#[inline(always)]
fn arg(regs: u64, n: usize) -> Result<u64, i64> {
    let off = match n {
        0 => layout!(regs_args[0]),
        1 => layout!(regs_args[1]),
        2 => layout!(regs_args[2]),
        3 => layout!(regs_args[3]),
        4 => layout!(regs_args[4]),
        _ => layout!(regs_args[5]),
    };
    read(regs + off)
}

/// The append-only watch of `inode`, if it has one.
#[inline(always)]
fn append_watch(inode: u64) -> Result<Option<(InodeKey, WatchVal)>, i64> {
    let Some(key) = inode_key(inode)? else {
        return Ok(None);
    };
    // SAFETY: a map value copied out.
    let Some(w) = (unsafe { WATCH.get(&key) }) else {
        return Ok(None);
    };
    Ok((w.flags & WATCH_APPEND_ONLY != 0).then_some((key, *w)))
}

#[inline(always)]
fn violate(key: &InodeKey, flag: u32) {
    match VIOLATIONS.get_ptr_mut(key) {
        // SAFETY: a map value; racing writers can only lose a flag another one also set.
        Some(v) => unsafe { *v |= flag },
        None => {
            if VIOLATIONS.insert(key, &flag, u64::from(BPF_NOEXIST)).is_err()
                && let Some(v) = VIOLATIONS.get_ptr_mut(key)
            {
                // SAFETY: as above.
                unsafe { *v |= flag };
            }
        }
    }
}

/// `pos` for "at the descriptor's position".
const AT_F_POS: u64 = u64::MAX;

/// A write to `fd` at `pos` (`AT_F_POS`: at the descriptor's position, unless it appends).
/// Inlined: BPF calls pass scalars in registers only, and an `Option` would not fit.
#[inline(always)]
fn check_write(fd: u64, pos: u64) -> Result<(), i64> {
    let Some(file) = file_of(fd)? else {
        return Ok(());
    };
    let flags: u32 = read(file + layout!(file_f_flags))?;
    // O_APPEND writes land at the end whatever the offset (pwrite included, on Linux).
    if flags & O_APPEND != 0 {
        return Ok(());
    }
    let Some((key, w)) = append_watch(file_inode(file)?)? else {
        return Ok(());
    };
    let at = if pos == AT_F_POS {
        read::<i64>(file + layout!(file_f_pos))?.max(0) as u64
    } else {
        pos
    };
    if at < w.verified_len {
        violate(&key, VIOLATION_WRITE_BELOW);
    }
    Ok(())
}

/// An offset argument given by pointer (splice, copy_file_range): the descriptor's position
/// when NULL.
#[inline(always)]
fn user_offset(ptr: u64) -> u64 {
    if ptr == 0 {
        return AT_F_POS;
    }
    // SAFETY: a probe read of user memory; failure reads as offset 0 (checked as a write
    // at the start, the conservative answer).
    unsafe { bpf_probe_read_user(ptr as *const i64) }.map_or(0, |v| v.max(0) as u64)
}

/// Every system call's entry (one raw tracepoint: no per-call record is built); all but the
/// write family return at the first comparison.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn fimd_sys_enter(ctx: RawTracePointContext) -> i32 {
    let id: u64 = ctx.arg(1);
    let regs: u64 = ctx.arg(0);
    if try_sys_enter(regs, id).is_err() {
        probe_error(PROG_SYS_ENTER);
    }
    0
}

#[inline(always)]
fn try_sys_enter(regs: u64, id: u64) -> Result<(), i64> {
    if id == layout!(nr_write) || id == layout!(nr_writev) || id == layout!(nr_sendfile) {
        // write(fd, …), writev(fd, …), sendfile(out_fd, …): at out_fd's position.
        check_write(arg(regs, 0)?, AT_F_POS)
    } else if id == layout!(nr_pwrite64) || id == layout!(nr_pwritev) {
        // pwrite64(fd, buf, count, pos), pwritev(fd, iov, vlen, pos_l, pos_h).
        check_write(arg(regs, 0)?, arg(regs, 3)?)
    } else if id == layout!(nr_pwritev2) {
        // pwritev2(fd, iov, vlen, pos_l, pos_h, flags): -1 means the descriptor's position.
        if arg(regs, 5)? & RWF_APPEND != 0 {
            return Ok(());
        }
        let pos = arg(regs, 3)?;
        check_write(arg(regs, 0)?, if pos as i64 == -1 { AT_F_POS } else { pos })
    } else if id == layout!(nr_splice) || id == layout!(nr_copy_file_range) {
        // splice / copy_file_range(fd_in, off_in, fd_out, off_out, len, flags).
        check_write(arg(regs, 2)?, user_offset(arg(regs, 3)?))
    } else if id == layout!(nr_fallocate) {
        // fallocate(fd, mode, offset, len): punching, zeroing, collapsing or inserting a range
        // changes the bytes from `offset` on; plain allocation changes none.
        // FALLOC_FL_PUNCH_HOLE | COLLAPSE_RANGE | ZERO_RANGE | INSERT_RANGE | WRITE_ZEROES
        const CHANGES_CONTENT: u64 = 0x02 | 0x08 | 0x10 | 0x20 | 0x80;
        if arg(regs, 1)? & CHANGES_CONTENT != 0 {
            check_fallocate(arg(regs, 0)?, arg(regs, 2)?)
        } else {
            Ok(())
        }
    } else {
        Ok(())
    }
}

#[inline(always)]
fn check_fallocate(fd: u64, at: u64) -> Result<(), i64> {
    let Some(file) = file_of(fd)? else {
        return Ok(());
    };
    if let Some((key, w)) = append_watch(file_inode(file)?)?
        && at < w.verified_len
    {
        violate(&key, VIOLATION_WRITE_BELOW);
    }
    Ok(())
}

/// io_uring_file_get(req, fd): a request takes a file by descriptor, in the submitting task
/// or a worker sharing its table.
#[raw_tracepoint(tracepoint = "io_uring_file_get")]
pub fn fimd_uring_file(ctx: RawTracePointContext) -> i32 {
    if try_uring_file(&ctx).is_err() {
        probe_error(PROG_URING_FILE);
    }
    0
}

#[inline(always)]
fn try_uring_file(ctx: &RawTracePointContext) -> Result<(), i64> {
    let fd: u64 = ctx.arg::<u64>(1) & 0xffff_ffff;
    let Some(file) = file_of(fd)? else {
        return Ok(());
    };
    if let Some((key, _)) = append_watch(file_inode(file)?)? {
        violate(&key, VIOLATION_URING);
    }
    Ok(())
}

/// io_uring_complete(ctx, req, cqe): a request finished. `req->file` is set for requests on
/// registered (fixed) files too, which io_uring_file_get never sees; the flag makes userspace
/// verify the file whole at its next look (the write may already have been looked at).
#[raw_tracepoint(tracepoint = "io_uring_complete")]
pub fn fimd_uring_complete(ctx: RawTracePointContext) -> i32 {
    if try_uring_complete(&ctx).is_err() {
        probe_error(PROG_URING_COMPLETE);
    }
    0
}

#[inline(always)]
fn try_uring_complete(ctx: &RawTracePointContext) -> Result<(), i64> {
    let req: u64 = ctx.arg::<u64>(1);
    if req == 0 {
        return Ok(());
    }
    let file: u64 = read(req + layout!(io_kiocb_file))?;
    if file == 0 {
        return Ok(());
    }
    if let Some((key, _)) = append_watch(file_inode(file)?)? {
        violate(&key, VIOLATION_URING);
    }
    Ok(())
}

/// Called by the change hooks for every change of a watched inode: a size below the verified
/// length is a truncation; a change while mapped writable may be a store anywhere. A failed
/// read is charged to the calling `program` and skips only its own check.
#[inline(always)]
pub fn note_change(inode: u64, key: &InodeKey, w: &WatchVal, program: u32) {
    if w.flags & WATCH_APPEND_ONLY == 0 {
        return;
    }
    match inode_size(inode) {
        Ok(size) if size < w.verified_len => violate(key, VIOLATION_SHRINK),
        Ok(_) => {}
        Err(_) => probe_error(program),
    }
    match mmap_writable(inode) {
        Ok(true) => violate(key, VIOLATION_MMAP),
        Ok(false) => {}
        Err(_) => probe_error(program),
    }
}
