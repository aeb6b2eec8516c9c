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
