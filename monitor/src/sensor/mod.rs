//! Kernel sensors that report changes as they happen. The daemon sees them through `Sensor`,
//! so a fanotify fallback can stand in where eBPF cannot load.
pub mod btf;
pub mod ebpf;

use std::os::fd::BorrowedFd;

use monitor_common::{ChangeRecord, InodeKey};

pub use ebpf::EbpfError as SensorError;

pub trait Sensor {
    /// For logs and metrics: `ebpf`, later `fanotify`.
    fn name(&self) -> &'static str;
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
