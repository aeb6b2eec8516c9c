//! Every map of the kernel programs, and the per-CPU counters they bump. Sizes here are
//! placeholders: the loader sets each from the configuration (`monitor/src/sensor/ebpf.rs`).
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use monitor_common::{COUNTERS_LEN, InodeKey, WatchVal, counter_probe_errors};

/// The watched inodes and what userspace knows of each.
#[map]
pub static WATCH: HashMap<InodeKey, WatchVal> = HashMap::with_max_entries(262_144, 0);
/// Inodes whose next change is reported: the first hit deletes the key (the atomic
/// test-and-clear) and emits one record; userspace re-arms after it has looked.
#[map]
pub static ARMED: HashMap<InodeKey, u32> = HashMap::with_max_entries(262_144, 0);
/// `ChangeRecord`s to userspace.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);
/// `monitor_common::COUNTER_*` slots, per CPU.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);
/// Sticky `VIOLATION_*` flags per append-only inode, taken (read and deleted) by userspace
/// when it verifies the file.
#[map]
pub static VIOLATIONS: HashMap<InodeKey, u32> = HashMap::with_max_entries(65_536, 0);

/// Adds one to counter slot `counter`.
#[inline(always)]
pub fn bump(counter: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter) {
        // SAFETY: a per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *c += 1 };
    }
}

/// Counts a failed kernel read (or helper) of program `program` (`monitor_common::PROG_*`):
/// the change it was looking at may be lost, and userspace exports the count.
#[inline(always)]
pub fn probe_error(program: u32) {
    bump(counter_probe_errors(program));
}
