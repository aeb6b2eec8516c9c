//! The task a kernel record names as the writer of a change.
use monitor_common::{ChangeRecord, Hook};

use crate::attribution::{Actor, PodDirectory};

/// The writer of a change, as the sensor recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modifier {
    /// The thread id (kernel `pid`).
    pub pid: u32,
    /// The process id (kernel `tgid`).
    pub tgid: u32,
    /// `u32::MAX` when the sensor could not learn it (the writer was gone).
    pub uid: u32,
    /// The thread's name (kernel `comm`, at most 16 bytes).
    pub comm: String,
    pub cgroup_id: u64,
    /// The kernel hook that saw the change (`Hook::name`), or "unknown".
    pub hook: &'static str,
}

impl Modifier {
    pub fn from_record(r: &ChangeRecord) -> Modifier {
        let end = r.comm.iter().position(|&b| b == 0).unwrap_or(r.comm.len());
        Modifier {
            pid: r.pid,
            tgid: r.tgid,
            uid: r.uid,
            comm: crate::paths::path_text(&r.comm[..end]).0,
            cgroup_id: r.cgroup_id,
            hook: Hook::try_from(r.hook).map_or("unknown", Hook::name),
        }
    }

    /// This writer as an alert names it (`process.*`, `user.id`, `container.*`; see
    /// `attribution::Actor`), read from /proc and the cgroup now.
    pub fn actor(&self, pods: &PodDirectory) -> Actor {
        Actor::of(self.tgid, self.pid, &self.comm, self.uid, pods)
    }
}

/// Records drained right after a look (a rescan's scan) and before its changes were judged:
/// a change the look found may be a newer writer's, whose record was still in flight when the
/// batch, the root check, the recheck or the settle began. Their writers name those changes
/// (`Daemon::writers_after_look`); the records then wait here to be handled like any other
/// (re-armed, rescanned) at the start of the next batch, which empties this. Bounded by one
/// drain of the sensor (its ring or queue) per rescan between two batches (a handful per tick).
#[derive(Debug, Default)]
pub struct InFlight {
    pub records: Vec<ChangeRecord>,
}

impl InFlight {
    /// The records waiting, oldest first, leaving none.
    pub fn take(&mut self) -> Vec<ChangeRecord> {
        std::mem::take(&mut self.records)
    }
}
