//! The daemon's calls that can block on a file or a mount, kept off the event loop (issue 12
//! §2): the write barrier runs on `scan::deadline` workers and gives up after
//! `BARRIER_DEADLINE`, its path re-queued with backoff until the barrier passes (on ext4 and
//! XFS it only tries the inode lock, so it never sleeps on a stuck writer); large regular
//! files are rehashed in a `scan::pool` (at most once per `BUSY_FILE_SETTLE` each), so one busy
//! large file never delays another file's alert. Stuck threads are bounded and exported as
//! `fim_stuck_threads{operation}`, missed deadlines as `fim_blocking_timeouts_total`.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::modifier::Modifier;
use crate::baseline::entry::Entry;
use crate::config::Settings;
use crate::scan::deadline::{DeadlineError, Pending, Runner};
use crate::scan::pool::{HashPool, PoolConfig};
use crate::scan::{self, Problem, ScanItem};
use crate::telemetry::Metrics;

/// How long the loop waits for one barrier: the barrier usually passes in microseconds; a
/// writer holding the inode lock longer is stuck (a stalled FUSE buffer, a hung mount).
pub const BARRIER_DEADLINE: Duration = Duration::from_millis(200);
/// How long a first barrier asks again while a writer holds the file (when it can be asked
/// without waiting): about the deadline, so an ordinary write in progress is waited for.
const PROBE_FOR: Duration = Duration::from_millis(180);
/// How long `barriers_due` waits for a new barrier call's answer before leaving it running: a
/// probe without waiting (ext4, XFS) answers in microseconds.
const PROBE_WAIT: Duration = Duration::from_millis(5);
/// Barrier threads, at most: as many files can have a stuck writer before barriers fail fast.
const BARRIER_WORKERS: usize = 4;
/// The first and the longest wait before a deferred barrier is looked at again (doubling).
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Paths waiting for their barrier, at most (entries): beyond, a path is rescanned at once.
const MAX_DEFERRED: usize = 4096;
/// A regular file of this size or more (bytes) is rehashed in the pool, off the loop: its
/// hash takes about a second or more.
pub const LARGE_FILE: u64 = 64 << 20;
/// A large file changing all the time is rehashed at most once per this interval; every
/// change within it is covered by the next rehash (the newest request stands for all).
pub const BUSY_FILE_SETTLE: Duration = Duration::from_secs(5);
/// Rehash workers: large files use at most all but one (`scan::pool`).
const REHASH_WORKERS: usize = 2;
/// Large files waiting to be rehashed, at most (entries); beyond, the next full comparison.
const REHASH_QUEUE: usize = 1024;
/// A rehash running longer than this counts as stuck (16 GiB hash in well under a minute).
const REHASH_STUCK_AFTER: Duration = Duration::from_secs(120);

/// What a rehash of one large file found.
pub struct Rehashed {
    pub found: HashMap<Vec<u8>, Entry>,
    pub problems: Vec<Problem>,
}

/// A path whose barrier missed its deadline.
struct Deferred {
    /// The barrier call still running, if one could be started.
    call: Option<Pending<Barrier>>,
    mapped: bool,
    who: Modifier,
    attempts: u32,
    next: Instant,
}

/// The daemon's off-loop calls: barriers and large-file rehashes.
pub struct Blocking {
    barriers: Runner,
    deferred: HashMap<Vec<u8>, Deferred>,
    pool: HashPool<Vec<u8>, Rehashed>,
    /// The latest writer of each large file waiting in the pool.
    pool_who: HashMap<Vec<u8>, Option<Modifier>>,
    metrics: Arc<Metrics>,
    /// `barriers.timed_out()` and the mount stats' at the last export.
    exported_timeouts: u64,
    exported_mount_timeouts: u64,
    /// `scan::guarded`'s missed deadlines already exported.
    exported_hung_timeouts: u64,
    /// Mounts not answering already alerted, until they answer again.
    hung_alerted: std::collections::HashSet<Vec<u8>>,
    exported_maps_timeouts: u64,
}

impl Blocking {
    pub fn new(metrics: Arc<Metrics>) -> Blocking {
        Blocking {
            barriers: Runner::new("barrier", BARRIER_WORKERS),
            deferred: HashMap::new(),
            pool: HashPool::new(PoolConfig {
                workers: REHASH_WORKERS,
                queue: REHASH_QUEUE,
                large_bytes: LARGE_FILE,
                settle: BUSY_FILE_SETTLE,
                stuck_after: REHASH_STUCK_AFTER,
            }),
            pool_who: HashMap::new(),
            metrics,
            exported_timeouts: 0,
            // The mount stats' runner lives as long as the process, across reloads.
            exported_mount_timeouts: crate::scan::mounts::stuck().1,
            exported_hung_timeouts: crate::scan::guarded::stuck().1,
            hung_alerted: Default::default(),
            exported_maps_timeouts: 0,
        }
    }

    /// Waits for a write in progress on `path` (see `barrier`), for at most `BARRIER_DEADLINE`.
    /// True when it passed (or cannot be waited for: not a regular file, queue full); false
    /// when it is deferred: `barriers_due` hands the path back once its barrier passes.
    pub fn barrier(&mut self, path: &[u8], mapped: bool, who: &Modifier) -> bool {
        // Already waiting: never a second thread on the same stuck file.
        if let Some(d) = self.deferred.get_mut(path) {
            d.who = who.clone();
            d.mapped |= mapped;
            return false;
        }
        // On a network or FUSE mount the read that follows has a deadline of its own
        // (`scan::guarded`): a server that stops answering must not pin every barrier worker
        // and so hold back the barriers of every other file.
        if crate::scan::guarded::mount_of(&crate::scan::guarded::hangable_mounts(), path).is_some() {
            return true;
        }
        let p = path.to_vec();
        let call = match self
            .barriers
            .start(BARRIER_DEADLINE, move || barrier(&p, mapped, PROBE_FOR))
        {
            Ok(mut call) => match call.wait(BARRIER_DEADLINE) {
                Some(Ok(Barrier::Passed)) | Some(Err(DeadlineError::Panicked { .. })) => return true,
                // Asked without waiting and a writer holds the file: asked again after a wait.
                Some(Ok(Barrier::Busy)) => None,
                Some(Err(_)) | None => Some(call),
            },
            Err(_) => None,
        };
        if self.deferred.len() >= MAX_DEFERRED {
            eprintln!(
                "fimd run: {} files wait for writers stuck in the kernel; {} is rehashed without waiting",
                self.deferred.len(),
                crate::output::path::path_text(path).0
            );
            return true;
        }
        eprintln!(
            "fimd run: a write to {} did not finish within {} ms (a writer stuck on a file or mount); \
             it is looked at again once it finishes",
            crate::output::path::path_text(path).0,
            BARRIER_DEADLINE.as_millis()
        );
        self.deferred.insert(
            path.to_vec(),
            Deferred {
                call,
                mapped,
                who: who.clone(),
                attempts: 0,
                next: Instant::now() + BACKOFF_FIRST,
            },
        );
        false
    }

    /// Whether `path` waits for its barrier (its writer is stuck).
    pub fn is_deferred(&self, path: &[u8]) -> bool {
        self.deferred.contains_key(path)
    }

    /// The deferred paths whose barrier passed by `now`, with their latest writer; the others
    /// are looked at again after a doubled wait (at most `BACKOFF_MAX`). Never blocks.
    pub fn barriers_due(&mut self, now: Instant) -> Vec<(Vec<u8>, Modifier)> {
        let mut passed = Vec::new();
        for (path, d) in self.deferred.iter_mut().filter(|(_, d)| d.next <= now) {
            let done = match &mut d.call {
                Some(call) => match call.poll() {
                    Some(Ok(Barrier::Passed)) | Some(Err(DeadlineError::Panicked { .. })) => true,
                    // The writer still holds the file: a new call at the next attempt.
                    Some(Ok(Barrier::Busy)) => {
                        d.call = None;
                        false
                    }
                    _ => false,
                },
                // Busy at the last call, or no worker was free: start one now.
                None => {
                    let (p, mapped) = (path.clone(), d.mapped);
                    let started = self
                        .barriers
                        .start(BARRIER_DEADLINE, move || barrier(&p, mapped, Duration::ZERO));
                    if let Ok(mut call) = started {
                        // A probe answers in microseconds: take its answer now if it is here.
                        match call.wait(PROBE_WAIT) {
                            Some(Ok(Barrier::Passed)) | Some(Err(DeadlineError::Panicked { .. })) => true,
                            Some(Ok(Barrier::Busy)) => false,
                            _ => {
                                d.call = Some(call);
                                false
                            }
                        }
                    } else {
                        false
                    }
                }
            };
            if done {
                passed.push(path.clone());
            } else {
                d.attempts = d.attempts.saturating_add(1);
                let wait = BACKOFF_FIRST.saturating_mul(1u32 << d.attempts.min(8));
                d.next = now + wait.min(BACKOFF_MAX);
            }
        }
        passed
            .into_iter()
            .filter_map(|p| self.deferred.remove(&p).map(|d| (p, d.who)))
            .collect()
    }

    /// Hands a large regular file (`size` bytes, `LARGE_FILE` or more) to the rehash pool.
    /// False when the pool is full: the caller rescans it itself.
    pub fn rehash_later(
        &mut self,
        settings: &Settings,
        path: &[u8],
        size: u64,
        who: Option<Modifier>,
    ) -> bool {
        let settings = settings.clone();
        let target = PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
            path,
        ));
        let submitted = self.pool.submit(path.to_vec(), size, move || {
            let mut scan = scan::start_at(&settings, vec![(target, 0)]);
            let mut out = Rehashed {
                found: HashMap::new(),
                problems: Vec::new(),
            };
            while let Some(item) = scan.next_item() {
                match item {
                    ScanItem::Entry(e) | ScanItem::Unstable(e) | ScanItem::MetadataOnly(e) => {
                        out.found.insert(e.path.clone(), e);
                    }
                    ScanItem::Problem(p) => out.problems.push(p),
                }
            }
            out
        });
        match submitted {
            Ok(_) => {
                // The newest writer stands for the next rehash; an older one is kept if this
                // change came from no known process.
                let slot = self.pool_who.entry(path.to_vec()).or_default();
                if who.is_some() {
                    *slot = who;
                }
                true
            }
            Err(_) => false,
        }
    }

    /// The large files rehashed since the last call, with their writer. Never blocks.
    pub fn rehashed(&mut self) -> Vec<(Vec<u8>, Rehashed, Option<Modifier>)> {
        self.pool
            .poll()
            .into_iter()
            .map(|(path, r)| {
                let who = self.pool_who.remove(&path).flatten();
                (path, r, who)
            })
            .collect()
    }

    /// Large files waiting for or in a rehash.
    pub fn rehashing(&self) -> usize {
        self.pool.waiting() + self.pool.running()
    }

    /// Mounts that stopped answering (`scan::guarded`) since the last call: each once, until it
    /// answers again (then it may be reported again). Those that answer again are forgotten.
    pub fn newly_hung(&mut self) -> Vec<Vec<u8>> {
        let hung = crate::scan::guarded::hung();
        self.hung_alerted.retain(|m| hung.contains(m));
        hung.into_iter()
            .filter(|m| self.hung_alerted.insert(m.clone()))
            .collect()
    }

    /// Sets `fim_stuck_threads` and counts new missed deadlines; `maps`: the sensor's /proc
    /// maps look's (`Sensor::maps_blocked`).
    pub fn export(&mut self, maps: (usize, u64)) {
        let m = &self.metrics;
        m.stuck_threads
            .with_label_values(&["barrier"])
            .set(self.barriers.stuck() as i64);
        m.stuck_threads
            .with_label_values(&["rehash"])
            .set(self.pool.stuck() as i64);
        let t = self.barriers.timed_out();
        m.blocking_timeouts
            .with_label_values(&["barrier"])
            .inc_by(t.saturating_sub(self.exported_timeouts));
        self.exported_timeouts = t;
        let (stuck, t) = crate::scan::mounts::stuck();
        m.stuck_threads.with_label_values(&["mount"]).set(stuck as i64);
        m.blocking_timeouts
            .with_label_values(&["mount"])
            .inc_by(t.saturating_sub(self.exported_mount_timeouts));
        self.exported_mount_timeouts = t;
        let (stuck, t) = crate::scan::guarded::stuck();
        m.stuck_threads
            .with_label_values(&["hung_mount"])
            .set(stuck as i64);
        m.blocking_timeouts
            .with_label_values(&["hung_mount"])
            .inc_by(t.saturating_sub(self.exported_hung_timeouts));
        self.exported_hung_timeouts = t;
        m.stuck_threads
            .with_label_values(&["proc_maps"])
            .set(maps.0 as i64);
        m.blocking_timeouts
            .with_label_values(&["proc_maps"])
            .inc_by(maps.1.saturating_sub(self.exported_maps_timeouts));
        self.exported_maps_timeouts = maps.1;
    }
}

/// What one barrier call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Barrier {
    /// No write is in progress on the file any more (or it cannot be waited for).
    Passed,
    /// A writer holds the file's inode lock now: found without waiting; asked again later.
    Busy,
}

/// Filesystems whose direct read takes the inode lock (`i_rwsem`) with a trylock when asked
/// not to wait (RWF_NOWAIT), and answers EAGAIN when it is held, on every kernel from 5.10:
/// ext4 (fs/ext4/file.c `ext4_dio_read_iter`, since 5.5) and XFS (fs/xfs/xfs_file.c
/// `xfs_file_dio_read` / `xfs_ilock_iocb`; XFS_IOLOCK is `i_rwsem`). Magic numbers from
/// include/uapi/linux/magic.h (ext2/ext3 mounted by the ext4 driver share EXT4's).
const NOWAIT_LOCK_FILESYSTEMS: [u64; 2] = [0xEF53, 0x5846_5342];

/// The probe's read offset (bytes): far past the end of any file ext4 (16 TiB) or XFS can
/// hold in practice, 64 KiB aligned, with room for the read before 2^63. A direct read there
/// returns 0 bytes right after taking the lock (fs/iomap/direct-io.c: `pos >= i_size`), so it
/// never reads data, never waits for page cache writeback and never does I/O.
const PROBE_OFFSET: u64 = (i64::MAX as u64 & !0xFFFF) - 0x10000;

/// One page, aligned for a direct read.
#[repr(C, align(4096))]
struct ProbeBlock([u8; 4096]);

/// Asks whether a writer holds `f`'s inode lock without waiting for it: a direct read with
/// RWF_NOWAIT past the end of the file, which the filesystem answers after a shared trylock
/// of `i_rwsem` (see `NOWAIT_LOCK_FILESYSTEMS`). `None`: the filesystem cannot be asked so.
fn probe(f: &std::os::fd::OwnedFd) -> Option<Barrier> {
    let mut block = Box::new(ProbeBlock([0; 4096]));
    let mut bufs = [std::io::IoSliceMut::new(&mut block.0)];
    match rustix::io::preadv2(f, &mut bufs, PROBE_OFFSET, rustix::io::ReadWriteFlags::NOWAIT) {
        Ok(_) => Some(Barrier::Passed),
        // The trylock failed: a writer holds the lock (or waits for it).
        Err(rustix::io::Errno::AGAIN) => Some(Barrier::Busy),
        // EOPNOTSUPP (no FMODE_NOWAIT), EINVAL (no direct I/O on this file): the waiting way.
        Err(_) => None,
    }
}

/// Waits for a write in progress: its timestamp changed before its data landed, and the
/// filesystems take the inode lock here (docs/sensor-design.md §5, measured). A file mapped
/// shared and writable is written back first: that write-protects its pages, so a store after
/// this point faults and reports again, and one before it is in what is hashed. Runs on a
/// barrier worker. On ext4 and XFS the lock is only tried (`probe`), again for up to
/// `probe_for` while it is held, then `Busy` is returned: no thread ever sleeps on a stuck
/// writer's lock there, so SIGTERM ends and reaps the process at once. Elsewhere `llseek`
/// (tmpfs `shmem_file_llseek`, btrfs `btrfs_file_llseek` take `i_rwsem`) waits for it: a
/// writer stuck holding the lock blocks this thread (never the loop) uninterruptibly, and the
/// process then exits on SIGTERM but is reaped only once the writer lets go.
fn barrier(path: &[u8], mmap_writable: bool, probe_for: Duration) -> Barrier {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    // O_PATH first: no symlink anywhere on the way, and nothing but a regular file is opened
    // for reading (a device swapped in must not be opened).
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let Ok(fd) = crate::scan::long_paths::openat2(path, OFlags::PATH | OFlags::CLOEXEC, resolve) else {
        return Barrier::Passed;
    };
    let regular = rustix::fs::fstat(&fd)
        .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile);
    if !regular {
        return Barrier::Passed;
    }
    // Reopened through /proc: the same inode, read-only, never re-resolved.
    let reopen = |extra: OFlags| {
        rustix::fs::open(
            format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | extra,
            Mode::empty(),
        )
    };
    // Where the filesystem can say whether a writer holds the lock without waiting for it,
    // ask so: a thread waiting on `i_rwsem` sleeps uninterruptibly (D state), and a process
    // with such a thread cannot be reaped until the writer lets go, whatever signal it gets.
    let nowait = rustix::fs::fstatfs(&fd).is_ok_and(|s| NOWAIT_LOCK_FILESYSTEMS.contains(&(s.f_type as u64)));
    if nowait {
        // O_NOATIME: the probe's read must not touch the file's atime (EPERM when not the
        // owner and without CAP_FOWNER: then without it).
        let direct = reopen(OFlags::DIRECT | OFlags::NOATIME).or_else(|_| reopen(OFlags::DIRECT));
        let answer = direct.ok().and_then(|f| {
            // Asked again, sleeping (interruptibly) between asks, until `probe_for` has passed.
            let until = std::time::Instant::now() + probe_for;
            let mut pause = Duration::from_micros(100);
            loop {
                match probe(&f) {
                    Some(Barrier::Busy) if std::time::Instant::now() + pause < until => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(10));
                    }
                    answer => return answer,
                }
            }
        });
        match answer {
            Some(Barrier::Busy) => return Barrier::Busy,
            Some(Barrier::Passed) => {
                if mmap_writable && let Ok(f) = reopen(OFlags::empty()) {
                    let _ = rustix::fs::fdatasync(&f);
                }
                return Barrier::Passed;
            }
            None => {}
        }
    }
    let Ok(f) = reopen(OFlags::empty()) else {
        return Barrier::Passed;
    };
    if mmap_writable {
        let _ = rustix::fs::fdatasync(&f);
    }
    let _ = rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(0));
    let _ = rustix::io::pread(&f, &mut [0u8; 1], 0);
    Barrier::Passed
}
