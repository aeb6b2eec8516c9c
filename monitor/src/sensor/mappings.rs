//! Files mapped shared and writable, found in `/proc/PID/maps`. A store through such a mapping
//! makes no system call: fanotify never sees it, and on tmpfs (whose pages are never
//! write-protected) the eBPF sensor sees only the first one. Both sensors look here every
//! `MAPS_PERIOD` for the candidates they know, report each one still mapped, and once more each
//! one whose mapping went away.
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use monitor_common::{ChangeRecord, HOOK_PROC_MAPS, InodeKey, RECORD_MMAP_WRITABLE};

/// How often writable shared mappings of watched files are looked for in /proc.
pub const MAPS_PERIOD: Duration = Duration::from_secs(1);

/// Candidates mapped shared and writable at the last look, with a process mapping each.
#[derive(Default)]
pub struct MappedFiles {
    mapped: HashMap<InodeKey, u32>,
    next: Option<Instant>,
}

impl MappedFiles {
    /// Every `MAPS_PERIOD` (when any candidate exists): a record (`RECORD_MMAP_WRITABLE`, hook
    /// `proc_maps`) for each of `candidates` mapped shared and writable now, and a last one
    /// (no flag) for each that was at the last look and is not now. Returns the keys reported,
    /// or `None` when it did not look this time.
    pub fn poll<V>(
        &mut self,
        candidates: &HashMap<InodeKey, V>,
        out: &mut Vec<ChangeRecord>,
    ) -> Option<Vec<InodeKey>> {
        let now = Instant::now();
        if candidates.is_empty() || self.next.is_some_and(|t| now < t) {
            return None;
        }
        self.next = Some(now + MAPS_PERIOD);
        let current = mapped_writable(candidates);
        let mut reported = Vec::new();
        for (key, pid) in &current {
            out.push(Writer::read(*pid, None).record(*key, HOOK_PROC_MAPS, RECORD_MMAP_WRITABLE));
            reported.push(*key);
        }
        for (key, pid) in &self.mapped {
            if !current.contains_key(key) && candidates.contains_key(key) {
                out.push(Writer::read(*pid, None).record(*key, HOOK_PROC_MAPS, 0));
                reported.push(*key);
            }
        }
        self.mapped = current;
        Some(reported)
    }

    /// Whether `key` was mapped shared and writable at the last look.
    pub fn is_mapped(&self, key: &InodeKey) -> bool {
        self.mapped.contains_key(key)
    }

    pub fn forget(&mut self, key: &InodeKey) {
        self.mapped.remove(key);
    }
}

/// The writing process as /proc shows it when the event is read.
pub(super) struct Writer {
    pid: u32,
    uid: u32,
    comm: [u8; 16],
}

impl Writer {
    /// Reads `/proc/PID`. With a pidfd, the pid cannot have been reused meanwhile; without one
    /// (or once the process has been reaped) the name and uid may be missing: uid is then
    /// `u32::MAX`.
    pub(super) fn read(pid: u32, pidfd: Option<&OwnedFd>) -> Writer {
        let mut comm = [0u8; 16];
        if pidfd.is_some_and(exited) {
            // Reaped already: the pid may name another process by now.
            return Writer {
                pid,
                uid: u32::MAX,
                comm,
            };
        }
        if let Ok(name) = std::fs::read(format!("/proc/{pid}/comm")) {
            let name = name.strip_suffix(b"\n").unwrap_or(&name);
            let n = name.len().min(15);
            comm[..n].copy_from_slice(&name[..n]);
        }
        let mut uid = u32::MAX;
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let id = |prefix: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .and_then(|rest| rest.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            };
            // The effective uid: the second field of "Uid:" (proc(5)).
            uid = id("Uid:").unwrap_or(u32::MAX);
        }
        Writer { pid, uid, comm }
    }

    pub(super) fn record(&self, key: InodeKey, hook: u32, flags: u32) -> ChangeRecord {
        ChangeRecord {
            key,
            cgroup_id: 0,
            pid: self.pid,
            tgid: self.pid,
            uid: self.uid,
            hook,
            flags,
            comm: self.comm,
            _pad: 0,
        }
    }
}

/// Whether the process of a pidfd has exited (pidfd_open(2): it polls readable then).
fn exited(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLIN != 0 }
}

/// Watched inodes mapped shared and writable by some process, with one such process, from
/// every `/proc/PID/maps` (proc(5): "rw-s"/"-w-s" permissions, device "MAJ:MIN" in hex, inode).
fn mapped_writable<V>(watched: &HashMap<InodeKey, V>) -> HashMap<InodeKey, u32> {
    let mut out = HashMap::new();
    if watched.is_empty() {
        return out;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(maps) = std::fs::read(format!("/proc/{pid}/maps")) else {
            continue;
        };
        for line in maps.split(|&b| b == b'\n') {
            let mut f = line.split(|&b| b == b' ').filter(|s| !s.is_empty());
            let (Some(_range), Some(perms), Some(_off), Some(dev), Some(ino)) =
                (f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            if perms.len() < 4 || perms[1] != b'w' || perms[3] != b's' {
                continue;
            }
            let (Some(dev), Some(ino)) = (
                parse_dev(dev),
                std::str::from_utf8(ino).ok().and_then(|i| i.parse().ok()),
            ) else {
                continue;
            };
            let key = InodeKey { dev, _pad: 0, ino };
            if watched.contains_key(&key) {
                out.entry(key).or_insert(pid);
            }
        }
    }
    out
}

/// "fd:01" (hex major:minor) as the kernel's `dev_t` (major << 20 | minor).
fn parse_dev(s: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(s).ok()?;
    let (maj, min) = s.split_once(':')?;
    let (maj, min) = (
        u32::from_str_radix(maj, 16).ok()?,
        u32::from_str_radix(min, 16).ok()?,
    );
    Some((maj << 20) | (min & 0xfffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_devices_decode() {
        assert_eq!(parse_dev(b"fd:01"), Some((0xfd << 20) | 1));
        assert_eq!(parse_dev(b"00:2a"), Some(0x2a));
        assert_eq!(parse_dev(b"zz:01"), None);
    }
}
