//! Kernel sensors that report changes as they happen. The daemon sees them through `Sensor`,
//! so a fanotify fallback can stand in where eBPF cannot load.
pub mod btf;
pub mod ebpf;
pub mod fanotify;
pub mod selftest;

use std::os::fd::BorrowedFd;

use monitor_common::{ChangeRecord, InodeKey};

use std::path::PathBuf;

use crate::config::SensorChoice;

/// Why no sensor could be loaded, or a sensor operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error(transparent)]
    Ebpf(#[from] ebpf::EbpfError),
    #[error(transparent)]
    Fanotify(#[from] fanotify::FanotifyError),
    /// `sensor = "auto"` and neither tier loads.
    #[error("no realtime sensor loads here. eBPF: {ebpf}. fanotify: {fanotify}")]
    Neither {
        ebpf: ebpf::EbpfError,
        fanotify: fanotify::FanotifyError,
    },
}

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
    /// Makes sure changes on the filesystem holding `path` can be reported: a watch root
    /// replaced by a mount of another filesystem. The eBPF sensor sees every filesystem
    /// already; the fanotify sensor marks the new one.
    fn watch_filesystem(&mut self, _path: &std::path::Path) -> Result<(), SensorError> {
        Ok(())
    }
}

/// What `open` needs to choose and load a sensor.
#[derive(Debug, Clone)]
pub struct SensorSpec {
    /// `[realtime] sensor`.
    pub choice: SensorChoice,
    /// The eBPF ring buffer's size (bytes, a power of two, at least a page).
    pub ring_bytes: u32,
    /// Attach the append-only policy's write-offset checks (eBPF).
    pub append_hooks: bool,
    /// The watch roots: the fanotify sensor marks their filesystems.
    pub roots: Vec<PathBuf>,
}

/// The sensor `fimd run` uses on this host, loaded and attached: the one place that choice is
/// made, so `fimd selftest` proves exactly what `run` will use. `auto` tries eBPF (the ctime
/// tracepoints), then fanotify; a forced choice loads only that one.
///
/// Errors: the reason the chosen sensor (with `auto`: each one) cannot work here.
pub fn open(spec: &SensorSpec) -> Result<Box<dyn Sensor>, SensorError> {
    let fanotify = || fanotify::FanotifySensor::load(&spec.roots);
    match spec.choice {
        SensorChoice::Ebpf => Ok(Box::new(ebpf::EbpfSensor::load(
            spec.ring_bytes,
            spec.append_hooks,
        )?)),
        SensorChoice::Fanotify => Ok(Box::new(fanotify()?)),
        SensorChoice::Auto => match ebpf::EbpfSensor::load(spec.ring_bytes, spec.append_hooks) {
            Ok(s) => Ok(Box::new(s)),
            Err(ebpf) => match fanotify() {
                Ok(s) => {
                    eprintln!("fimd: the eBPF sensor cannot load ({ebpf}); using the fanotify sensor");
                    Ok(Box::new(s))
                }
                Err(fanotify) => Err(SensorError::Neither { ebpf, fanotify }),
            },
        },
    }
}
