//! Kernel sensors that report changes as they happen. The daemon sees them through `Sensor`,
//! so a fanotify fallback can stand in where eBPF cannot load.
pub mod btf;
pub mod btrfs;
pub mod ebpf;
pub mod fanotify;
pub mod mappings;
pub mod selftest;
pub mod tier;

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
    /// Watches an inode, found at `path` (raw bytes), and arms it: its next change is reported.
    fn watch(&mut self, key: InodeKey, path: &[u8], is_dir: bool) -> Result<(), SensorError>;
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
    /// Per kernel program (its name in the object): failed kernel reads so far, each an event
    /// the program gave up on. Empty for a sensor without kernel programs.
    fn probe_errors(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// Locked kernel memory the sensor's maps take (bytes); 0 for a sensor without maps.
    fn kernel_bytes(&self) -> u64 {
        0
    }
    /// The /proc maps look's threads stuck in a read that has not returned (at most 2), and
    /// its looks that missed their deadline since the start (`mappings::MappedFiles`).
    fn maps_blocked(&self) -> (usize, u64) {
        (0, 0)
    }

    /// Makes sure changes on the filesystem holding `path` can be reported: a watch root
    /// replaced by a mount of another filesystem. The eBPF sensor sees every filesystem
    /// already; the fanotify sensor marks the new one.
    fn watch_filesystem(&mut self, _path: &std::path::Path) -> Result<(), SensorError> {
        Ok(())
    }
}

impl SensorError {
    /// The failure concerns this one inode (the eBPF maps are full, or fanotify cannot mark
    /// it): the sensor goes on working for the others.
    pub fn only_this_inode(&self) -> bool {
        matches!(
            self,
            SensorError::Ebpf(ebpf::EbpfError::Full { .. } | ebpf::EbpfError::Unsupported { .. })
                | SensorError::Fanotify(fanotify::FanotifyError::Mark { .. })
        )
    }

    /// The alert action naming why an inode is not watched.
    pub fn not_watched_action(&self) -> &'static str {
        match self {
            SensorError::Ebpf(ebpf::EbpfError::Full { .. }) => "watch_capacity_exceeded",
            _ => "watch_failed",
        }
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
    /// Inodes the eBPF sensor's maps hold (entries); see `capacity_for`.
    pub capacity: u32,
    /// A writable directory for the eBPF tiers' self-check file (created and unlinked at once):
    /// the daemon's state directory, writable under the shipped unit's `ProtectSystem=strict`,
    /// where /tmp may not be.
    pub scratch: PathBuf,
}

/// The eBPF maps' capacity for a baseline of `entries` inodes: a quarter more plus 16,384 for
/// files created while the daemon runs, within `config::WATCHED_INODES_RANGE`.
pub fn capacity_for(entries: usize) -> u32 {
    let want = entries as u64 + entries as u64 / 4 + 16_384;
    want.clamp(
        *crate::config::WATCHED_INODES_RANGE.start(),
        *crate::config::WATCHED_INODES_RANGE.end(),
    ) as u32
}

/// The sensor `fimd run` uses on this host, loaded and attached: the one place that choice is
/// made, so `fimd selftest` proves exactly what `run` will use. `auto` tries the eBPF tiers (the
/// ctime tracepoints, then fentry, then kprobes: `tier::Tier::ALL`), then fanotify; a forced
/// choice loads only that sensor (`ebpf`: the best eBPF tier that works).
///
/// Errors: the reason the chosen sensor (with `auto`: each one) cannot work here.
pub fn open(spec: &SensorSpec) -> Result<Box<dyn Sensor>, SensorError> {
    let fanotify = || fanotify::FanotifySensor::load(&spec.roots);
    let ebpf = || tier::load_best(spec.ring_bytes, spec.append_hooks, spec.capacity, &spec.scratch);
    match spec.choice {
        SensorChoice::Ebpf => Ok(Box::new(ebpf()?)),
        SensorChoice::Fanotify => Ok(Box::new(fanotify()?)),
        SensorChoice::Auto => match ebpf() {
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
