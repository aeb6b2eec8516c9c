//! The change sensor: every ctime change of a watched inode, with the task that made it.
//!
//! Hooks (see docs/sensor-design.md): `ctime_ns_xchg` fires for every real ctime change on
//! multigrain filesystems (data, metadata and, through the parent directory, names);
//! `inode_set_ctime_to_ts` for explicit ctime sets. Both run in the modifying task.
//! Coalescing: userspace arms an inode by inserting it in ARMED; the first hit deletes the key
//! (the atomic test-and-clear) and emits one record; later hits only update PENDING.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::{map, raw_tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use monitor_common::{
    BTRFS_SUPER_MAGIC, COUNTER_EMITTED, COUNTER_HITS, COUNTER_PENDING_FULL, COUNTER_RB_DROPS, COUNTERS_LEN,
    ChangeRecord, FMODE_WRITE, HOOK_CTIME_SET, HOOK_CTIME_XCHG, HOOK_DIO_COMPLETE, InodeKey, KernelLayout,
    Pending, RECORD_MMAP_WRITABLE, WatchVal,
};

/// The running kernel's member offsets and system call numbers, set by the loader from BTF
/// (`monitor_common::KernelLayout`).
#[unsafe(no_mangle)]
pub(crate) static LAYOUT: KernelLayout = KernelLayout::UNSET;

/// One field of `LAYOUT` (`layout!(file_f_inode)`, `layout!(regs_args[2])`), widened for
/// address arithmetic.
macro_rules! layout {
    ($($field:tt)+) => {
        crate::change::layout_field(&crate::change::LAYOUT.$($field)+)
    };
}
pub(crate) use layout;

/// Reads a field of `LAYOUT`; volatile, so the load is not folded to the placeholder the
/// loader replaces after compilation.
#[inline(always)]
pub(crate) fn layout_field(field: &u32) -> u64 {
    // SAFETY: a valid reference to a read-only global.
    u64::from(unsafe { core::ptr::read_volatile(field) })
}

#[map]
pub(crate) static WATCH: HashMap<InodeKey, WatchVal> = HashMap::with_max_entries(262_144, 0);
#[map]
static ARMED: HashMap<InodeKey, u32> = HashMap::with_max_entries(262_144, 0);
#[map]
static PENDING: HashMap<InodeKey, Pending> = HashMap::with_max_entries(65_536, 0);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

#[raw_tracepoint(tracepoint = "ctime_ns_xchg")]
pub fn fimd_ctime_xchg(ctx: RawTracePointContext) -> i32 {
    let _ = try_change(&ctx, HOOK_CTIME_XCHG);
    0
}

#[raw_tracepoint(tracepoint = "inode_set_ctime_to_ts")]
pub fn fimd_ctime_set(ctx: RawTracePointContext) -> i32 {
    let _ = try_change(&ctx, HOOK_CTIME_SET);
    0
}

/// Direct I/O completed: its ctime changed when it started, before the data landed (xfs
/// holds only a shared lock meanwhile), so the landing is a change of its own.
#[raw_tracepoint(tracepoint = "iomap_dio_complete")]
pub fn fimd_dio_complete(ctx: RawTracePointContext) -> i32 {
    let _ = try_dio_complete(&ctx);
    0
}

fn try_dio_complete(ctx: &RawTracePointContext) -> Result<(), i64> {
    let iocb: u64 = ctx.arg(0);
    if iocb == 0 {
        return Ok(());
    }
    // SAFETY: probe reads of kernel memory.
    let inode = unsafe {
        let file: u64 =
            bpf_probe_read_kernel((iocb + layout!(kiocb_ki_filp)) as *const u64).map_err(|e| e as i64)?;
        if file == 0 {
            return Ok(());
        }
        let mode: u32 =
            bpf_probe_read_kernel((file + layout!(file_f_mode)) as *const u32).map_err(|e| e as i64)?;
        if mode & FMODE_WRITE == 0 {
            return Ok(());
        }
        bpf_probe_read_kernel((file + layout!(file_f_inode)) as *const u64).map_err(|e| e as i64)?
    };
    report(inode, HOOK_DIO_COMPLETE)
}

fn bump(counter: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter) {
        // SAFETY: a per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *c += 1 };
    }
}

/// The device userspace sees in `st_dev`: the superblock's, but on btrfs the subvolume's own
/// anonymous device (`BTRFS_I(inode)->root->anon_dev`), as `btrfs_getattr` reports it.
#[inline(always)]
fn device(inode: u64, sb: u64) -> Result<u32, i64> {
    // SAFETY: probe reads of kernel memory.
    unsafe {
        if layout!(btrfs) != 0 {
            let magic: u64 =
                bpf_probe_read_kernel((sb + layout!(sb_s_magic)) as *const u64).map_err(|e| e as i64)?;
            if magic == BTRFS_SUPER_MAGIC {
                let btrfs_inode = inode - layout!(btrfs_inode_vfs_inode);
                let root: u64 =
                    bpf_probe_read_kernel((btrfs_inode + layout!(btrfs_inode_root)) as *const u64)
                        .map_err(|e| e as i64)?;
                return bpf_probe_read_kernel((root + layout!(btrfs_root_anon_dev)) as *const u32)
                    .map_err(|e| e as i64);
            }
        }
        bpf_probe_read_kernel((sb + layout!(sb_s_dev)) as *const u32).map_err(|e| e as i64)
    }
}

/// Whether `inode->i_mapping->i_mmap_writable > 0`.
#[inline(always)]
pub(crate) fn mmap_writable(inode: u64) -> bool {
    // SAFETY: probe reads; failures read as "no".
    unsafe {
        let Ok(mapping) = bpf_probe_read_kernel((inode + layout!(inode_i_mapping)) as *const u64) else {
            return false;
        };
        if mapping == 0 {
            return false;
        }
        bpf_probe_read_kernel((mapping + layout!(as_i_mmap_writable)) as *const i32).is_ok_and(|n| n > 0)
    }
}

fn try_change(ctx: &RawTracePointContext, hook: u32) -> Result<(), i64> {
    report(ctx.arg(0), hook)
}

/// The watch-map key of `inode`: its device as userspace sees it, and its number.
#[inline(always)]
pub(crate) fn inode_key(inode: u64) -> Result<Option<InodeKey>, i64> {
    if inode == 0 {
        return Ok(None);
    }
    // SAFETY: probe reads of kernel memory; a bad address yields an error, not a fault.
    let (sb, ino) = unsafe {
        let sb: u64 =
            bpf_probe_read_kernel((inode + layout!(inode_i_sb)) as *const u64).map_err(|e| e as i64)?;
        let ino: u64 =
            bpf_probe_read_kernel((inode + layout!(inode_i_ino)) as *const u64).map_err(|e| e as i64)?;
        (sb, ino)
    };
    if sb == 0 || ino == 0 {
        return Ok(None);
    }
    let dev = device(inode, sb)?;
    Ok(Some(InodeKey { dev, _pad: 0, ino }))
}

/// Filters `inode` against the watch set, coalesces, and reports the first change after an arm.
pub(crate) fn report(inode: u64, hook: u32) -> Result<(), i64> {
    let Some(key) = inode_key(inode)? else {
        return Ok(());
    };
    // SAFETY: a map value copied out.
    let Some(w) = (unsafe { WATCH.get(&key) }).copied() else {
        return Ok(());
    };
    crate::append::note_change(inode, &key, &w);
    // Only watched inodes get this far.
    bump(COUNTER_HITS);
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    let now = unsafe { bpf_ktime_get_ns() };
    let (pid, tgid, uid, gid) = (
        pid_tgid as u32,
        (pid_tgid >> 32) as u32,
        uid_gid as u32,
        (uid_gid >> 32) as u32,
    );

    match PENDING.get_ptr_mut(&key) {
        Some(p) => {
            // SAFETY: a map value; concurrent updates may interleave, which only blurs the
            // best-effort count and last modifier.
            unsafe {
                (*p).count += 1;
                (*p).last_ns = now;
                (*p).pid = pid;
                (*p).tgid = tgid;
                (*p).uid = uid;
                (*p).comm = comm;
            }
        }
        None => {
            let p = Pending {
                count: 1,
                last_ns: now,
                pid,
                tgid,
                uid,
                _pad: 0,
                comm,
            };
            if PENDING.insert(&key, &p, u64::from(BPF_NOEXIST)).is_err() {
                bump(COUNTER_PENDING_FULL);
            }
        }
    }

    // The first hit after userspace armed the inode wins the delete and reports.
    if ARMED.remove(&key).is_ok() {
        let flags = if mmap_writable(inode) {
            RECORD_MMAP_WRITABLE
        } else {
            0
        };
        match EVENTS.reserve::<ChangeRecord>(0) {
            Some(mut entry) => {
                entry.write(ChangeRecord {
                    key,
                    ktime_ns: now,
                    // SAFETY: helper without preconditions.
                    cgroup_id: unsafe { bpf_get_current_cgroup_id() },
                    pid,
                    tgid,
                    uid,
                    gid,
                    hook,
                    flags,
                    comm,
                });
                entry.submit(0);
                bump(COUNTER_EMITTED);
            }
            None => {
                // Re-arm so the next hit retries; userspace sees the drop and sweeps PENDING.
                let _ = ARMED.insert(&key, &1, 0);
                bump(COUNTER_RB_DROPS);
            }
        }
    }
    Ok(())
}
