//! Kernel sensors that report changes as they happen. The daemon sees them through `Sensor`,
//! so a fanotify fallback can stand in where eBPF cannot load.
pub mod btf;
pub mod ebpf;
pub mod selftest;

use std::os::fd::BorrowedFd;

use monitor_common::{ChangeRecord, InodeKey};

pub use ebpf::EbpfError as SensorError;

pub trait Sensor {
    /// For logs and metrics: `ebpf`, later `fanotify`.
    fn name(&self) -> &'static str;
    /// The kernel hooks in use, as `<program type>/<hook>` (e.g. `raw_tracepoint/ctime_ns_xchg`),
    /// for the start-up line, metrics and alerts.
    fn hooks(&self) -> Vec<String>;
    /// Readable when changes wait to be drained.
    fn ready_fd(&self) -> BorrowedFd<'_>;
    /// Appends the changes reported since the last call.
    fn drain(&mut self, out: &mut Vec<ChangeRecord>);
    /// Watches an inode and arms it: its next change is reported.
    fn watch(&mut self, key: InodeKey, is_dir: bool) -> Result<(), SensorError>;
    fn unwatch(&mut self, key: &InodeKey);
    /// Marks a watched file append-only, verified up to `verified_len`: the sensor records
    /// any sign that bytes below it changed. Called again as the verified length grows.
    fn watch_append(&mut self, key: InodeKey, verified_len: u64) -> Result<(), SensorError>;
    /// The `monitor_common::VIOLATION_*` flags recorded for an append-only file since the
    /// last call, cleared.
    fn take_violations(&mut self, key: &InodeKey) -> u32;
    /// Re-arms an inode after its change was taken: the next change reports again.
    fn rearm(&mut self, key: InodeKey) -> Result<(), SensorError>;
    /// Changes the sensor could not deliver so far (each one calls for a rescan).
    fn lost(&self) -> u64;
}

/// The sensor `fimd run` uses on this host, loaded and attached: the one place that choice is
/// made, so `fimd selftest` proves exactly what `run` will use.
///
/// `ring_bytes` is the kernel-to-daemon ring buffer's size (bytes, a power of two, at least a
/// page); `append_hooks` adds the append-only policy's write-offset checks.
///
/// Errors: the reason no realtime sensor can work here (no BTF, missing privileges or hooks).
pub fn open(ring_bytes: u32, append_hooks: bool) -> Result<Box<dyn Sensor>, SensorError> {
    Ok(Box::new(ebpf::EbpfSensor::load(ring_bytes, append_hooks)?))
}
