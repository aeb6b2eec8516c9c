//! Files mapped shared and writable, found in `/proc/PID/maps`. A store through such a mapping
//! makes no system call: fanotify never sees it, and on tmpfs (whose pages are never
//! write-protected) the eBPF sensor sees only the first one. Both sensors look here every
//! `MAPS_PERIOD` for the candidates they know, report each one still mapped, and once more each
//! one whose mapping went away.
//!
//! Reading a process's maps takes its `mmap_lock` (fs/proc/task_mmu.c), which a process stuck
//! in a page fault on a hung mount can hold for ever: the look runs off the event loop on a
//! `scan::deadline` worker, and its result is taken at a later poll. A look that misses its
//! deadline is abandoned (the worker counts as stuck), and the process it was reading is
//! skipped from then on (counted in `skipped`).
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use monitor_common::{ChangeRecord, HOOK_PROC_MAPS, InodeKey, RECORD_MMAP_WRITABLE};

use crate::scan::deadline::{Pending, Runner};

/// How often writable shared mappings of watched files are looked for in /proc.
pub const MAPS_PERIOD: Duration = Duration::from_secs(1);
/// How long one look at every process may take: a few hundred processes take milliseconds.
pub const MAPS_DEADLINE: Duration = Duration::from_secs(3);
/// Workers for looks: one runs, the other replaces it while it is stuck.
const MAPS_WORKERS: usize = 2;
/// Processes skipped because reading their maps got stuck, at most (entries).
const MAX_SKIPPED: usize = 1024;
/// Mappings one look returns, at most (entries): a bound on hosts with many shared mappings.
const MAX_MAPPINGS: usize = 1 << 16;

/// Every file mapped shared and writable at one look, with a process mapping it.
type Found = HashMap<InodeKey, Writer>;

/// A look under way, and the process it is reading now.
struct Look {
    call: Pending<Found>,
    reading: Arc<AtomicU32>,
}

/// Candidates mapped shared and writable at the last look, with a process mapping each.
pub struct MappedFiles {
    mapped: HashMap<InodeKey, Writer>,
    next: Option<Instant>,
    look: Option<Look>,
    runner: Runner,
    /// Processes whose maps could not be read in time: never read again.
    skip: Arc<Mutex<HashSet<u32>>>,
}

impl Default for MappedFiles {
    fn default() -> MappedFiles {
        MappedFiles {
            mapped: HashMap::new(),
            next: None,
            look: None,
            runner: Runner::new("proc maps scan", MAPS_WORKERS),
            skip: Arc::new(Mutex::new(HashSet::new())),
        }
    }
}

impl MappedFiles {
    /// Every `MAPS_PERIOD` (when any candidate exists) starts a look off the loop; at a later
    /// call, once the look is done: a record (`RECORD_MMAP_WRITABLE`, hook `proc_maps`) for
    /// each of `candidates` mapped shared and writable then, and a last one (no flag) for each
    /// that was at the look before and is not now. Returns the keys reported, or `None` when no
    /// look ended this time. Never blocks.
    pub fn poll<V>(
        &mut self,
        candidates: &HashMap<InodeKey, V>,
        out: &mut Vec<ChangeRecord>,
    ) -> Option<Vec<InodeKey>> {
        if let Some(look) = &mut self.look {
            let result = look.call.poll()?;
            let reading = look.reading.load(Ordering::Relaxed);
            self.look = None;
            let found = match result {
                Ok(found) => found,
                Err(crate::scan::deadline::DeadlineError::TimedOut { .. }) => {
                    let mut skip = self.skip.lock().unwrap_or_else(|e| e.into_inner());
                    if reading != 0 && skip.len() < MAX_SKIPPED {
                        skip.insert(reading);
                    }
                    eprintln!(
                        "fimd: reading /proc/{reading}/maps did not finish within {} s (the process is \
                         stuck on a file or mount): it is no longer looked at for shared writable mappings",
                        MAPS_DEADLINE.as_secs()
                    );
                    return None;
                }
                Err(_) => return None,
            };
            return Some(self.report(found, candidates, out));
        }
        let now = Instant::now();
        if candidates.is_empty() || self.next.is_some_and(|t| now < t) {
            return None;
        }
        self.next = Some(now + MAPS_PERIOD);
        let reading = Arc::new(AtomicU32::new(0));
        let (r, skip) = (reading.clone(), self.skip.clone());
        // Busy or stuck workers: this period is skipped, the next one tries again.
        if let Ok(call) = self
            .runner
            .start(MAPS_DEADLINE, move || mapped_writable(&r, &skip))
        {
            self.look = Some(Look { call, reading });
        }
        None
    }

    /// The records for one look's findings; returns the keys reported.
    fn report<V>(
        &mut self,
        found: Found,
        candidates: &HashMap<InodeKey, V>,
        out: &mut Vec<ChangeRecord>,
    ) -> Vec<InodeKey> {
        let current: HashMap<InodeKey, Writer> = found
            .into_iter()
            .filter(|(k, _)| candidates.contains_key(k))
            .collect();
        let mut reported = Vec::new();
        for (key, writer) in &current {
            out.push(writer.record(*key, HOOK_PROC_MAPS, RECORD_MMAP_WRITABLE));
            reported.push(*key);
        }
        for (key, writer) in &self.mapped {
            if !current.contains_key(key) && candidates.contains_key(key) {
                out.push(writer.record(*key, HOOK_PROC_MAPS, 0));
                reported.push(*key);
            }
        }
        self.mapped = current;
        reported
    }

    /// Whether `key` was mapped shared and writable at the last look.
    pub fn is_mapped(&self, key: &InodeKey) -> bool {
        self.mapped.contains_key(key)
    }

    pub fn forget(&mut self, key: &InodeKey) {
        self.mapped.remove(key);
    }

    /// Look workers abandoned in a read that has not returned (at most 2).
    pub fn stuck(&self) -> usize {
        self.runner.stuck()
    }

    /// Look workers stuck (at most 2), and looks that missed their deadline since the start.
    pub fn blocked(&self) -> (usize, u64) {
        (self.runner.stuck(), self.runner.timed_out())
    }

    /// Processes skipped because reading their maps got stuck.
    pub fn skipped(&self) -> usize {
        self.skip.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The writing process as /proc shows it when the event is read.
#[derive(Clone)]
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

/// Every inode mapped shared and writable by some process, with one such process as /proc
/// shows it, from every `/proc/PID/maps` (proc(5): "rw-s"/"-w-s" permissions, device "MAJ:MIN"
/// in hex, inode), skipping the processes in `skip`. `reading` holds the pid being read.
fn mapped_writable(reading: &AtomicU32, skip: &Mutex<HashSet<u32>>) -> Found {
    let mut out = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    let skip = skip.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if skip.contains(&pid) {
            continue;
        }
        reading.store(pid, Ordering::Relaxed);
        let Ok(maps) = std::fs::read(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let mut writer = None;
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
            if out.len() >= MAX_MAPPINGS {
                break;
            }
            let key = InodeKey { dev, _pad: 0, ino };
            if let std::collections::hash_map::Entry::Vacant(slot) = out.entry(key) {
                slot.insert(writer.get_or_insert_with(|| Writer::read(pid, None)).clone());
            }
        }
    }
    reading.store(0, Ordering::Relaxed);
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

    /// Polls until a look ends (at most 10 s), checking that no poll blocks.
    fn look(m: &mut MappedFiles, candidates: &HashMap<InodeKey, ()>) -> Vec<ChangeRecord> {
        let until = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while Instant::now() < until {
            let t = Instant::now();
            let done = m.poll(candidates, &mut out);
            assert!(
                t.elapsed() < Duration::from_millis(200),
                "a poll took {:?}",
                t.elapsed()
            );
            if done.is_some() {
                return out;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no look ended in 10 s");
    }

    #[test]
    fn a_shared_writable_mapping_is_found_off_the_loop_and_its_end_reported() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mapped");
        std::fs::write(&path, [0u8; 4096]).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let md = f.metadata().unwrap();
        let key = InodeKey {
            dev: ((libc::major(md.dev()) as u32) << 20) | libc::minor(md.dev()) as u32,
            _pad: 0,
            ino: md.ino(),
        };
        // SAFETY: a fresh shared mapping of a file we own, unmapped below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        let candidates = HashMap::from([(key, ())]);
        let mut m = MappedFiles::default();
        let out = look(&mut m, &candidates);
        let mine: Vec<_> = out.iter().filter(|r| r.key == key).collect();
        assert_eq!(mine.len(), 1, "one record for the mapped file");
        assert_eq!(mine[0].flags, RECORD_MMAP_WRITABLE);
        assert_eq!(mine[0].hook, HOOK_PROC_MAPS);
        assert_eq!(mine[0].pid, std::process::id());
        assert!(m.is_mapped(&key));
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(map, 4096) };
        // The next look that ends reports the mapping gone, without the flag.
        let until = Instant::now() + Duration::from_secs(10);
        let mut last = None;
        while last.is_none() && Instant::now() < until {
            let out = look(&mut m, &candidates);
            last = out.into_iter().find(|r| r.key == key && r.flags == 0);
        }
        assert!(last.is_some(), "the end of the mapping was reported");
        assert!(!m.is_mapped(&key));
        assert_eq!((m.stuck(), m.skipped()), (0, 0));
    }

    #[test]
    fn maps_devices_decode() {
        assert_eq!(parse_dev(b"fd:01"), Some((0xfd << 20) | 1));
        assert_eq!(parse_dev(b"00:2a"), Some(0x2a));
        assert_eq!(parse_dev(b"zz:01"), None);
    }
}
