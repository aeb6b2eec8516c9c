//! A pipeline self-test: counts `fchmodat` calls made by one process (set by the loader),
//! so userspace can prove that the object builds, loads, attaches and shares maps.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::map, macros::tracepoint, maps::Array,
    programs::TracePointContext,
};
use monitor_common::SELFTEST_SLOT;

/// Set by the loader before the program is verified.
#[unsafe(no_mangle)]
static SELFTEST_TGID: u32 = 0;

#[map]
static SELFTEST_HITS: Array<u64> = Array::with_max_entries(1, 0);

#[tracepoint]
pub fn fimd_selftest(ctx: TracePointContext) -> u32 {
    let _ = try_selftest(&ctx);
    0
}

fn try_selftest(_ctx: &TracePointContext) -> Result<(), ()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a read-only global the loader fills in; volatile so the compiler keeps the load.
    let target = unsafe { core::ptr::read_volatile(&SELFTEST_TGID) };
    if target == 0 || tgid != target {
        return Ok(());
    }
    let slot = SELFTEST_HITS.get_ptr_mut(SELFTEST_SLOT).ok_or(())?;
    // SAFETY: the pointer comes from the map and stays valid for this program run.
    unsafe { *slot += 1 };
    Ok(())
}
