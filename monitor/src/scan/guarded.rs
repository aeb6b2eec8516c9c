//! Calls on filesystems that may stop answering after they were entered (issue 12 §2): a FUSE
//! server, an NFS or SMB server that answered the mount point's stat and the first lookups,
//! then holds every read, listing or stat. A thread inside such a request waits until the
//! server answers, SIGKILL included (fs/fuse/dev.c `request_wait_answer`; NFS hard mounts
//! likewise), so every call below a mount of a type that can hang runs on a bounded set of
//! workers with a deadline (`deadline::Runner`). A mount whose call missed its deadline is
//! *not answering* until every such call returned: nothing more is asked of it meanwhile (no
//! thread is spent on it, the walk and the daemon's looks report it at once), and it is asked
//! again, and compared, once it answers. Local disk filesystems are called directly: they
//! cost no thread hop.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::deadline::{DeadlineError, Runner};

/// How long one call (a stat, a directory's opening and listing, a file's opening) below a
/// mount that can hang may take before the mount counts as not answering.
pub const OP_DEADLINE: Duration = Duration::from_secs(5);
/// Reading a file's content may take this long per byte more (8 MiB/s: a slow network
/// share still finishes; a server that answers nothing does not).
const READ_RATE_BYTES_PER_S: u64 = 8 << 20;
/// Threads that may be stuck in calls on mounts that do not answer, at most.
pub const WORKERS: usize = 16;
/// How long the list of mounts that can hang is reused before /proc/self/mountinfo is read
/// again (a mount made since is guarded from then on).
const MOUNTS_FOR: Duration = Duration::from_secs(1);

/// Filesystem types (mountinfo field 9, after " - ") whose calls wait on a server or a
/// process: network filesystems and FUSE (`fuse`, `fuse.sshfs`, `fuseblk`, ...).
const HANGABLE_TYPES: [&str; 14] = [
    "fuse",
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "9p",
    "ceph",
    "afs",
    "glusterfs",
    "lustre",
    "virtiofs",
    "ncpfs",
    "coda",
];

fn is_hangable_type(fs: &[u8]) -> bool {
    HANGABLE_TYPES.iter().any(|t| fs == t.as_bytes()) || fs.starts_with(b"fuse.") || fs == b"fuseblk"
}

/// A call on a mount that does not answer, or did not in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not compared: the filesystem mounted at {} is not answering (a hung network or FUSE mount; a call \
     missed its {} s deadline); looked at again when it answers",
    String::from_utf8_lossy(mount),
    OP_DEADLINE.as_secs()
)]
pub struct NotAnswering {
    /// The mount point, host path.
    pub mount: Vec<u8>,
}

struct Mounts {
    read_at: Instant,
    /// Mount points of the types that can hang, host paths.
    points: Arc<Vec<Vec<u8>>>,
}

static MOUNTS: Mutex<Option<Mounts>> = Mutex::new(None);
static RUNNER: OnceLock<Runner> = OnceLock::new();
/// Mounts not answering: by mount point, the calls on it that missed their deadline and have
/// not returned yet.
static HUNG: Mutex<Option<HashMap<Vec<u8>, usize>>> = Mutex::new(None);

fn runner() -> &'static Runner {
    RUNNER.get_or_init(|| Runner::new("call on a mount that can hang", WORKERS))
}

/// The mount points (host paths) of filesystems that can hang, from /proc/self/mountinfo,
/// read at most once per `MOUNTS_FOR`. Empty when unreadable.
pub fn hangable_mounts() -> Arc<Vec<Vec<u8>>> {
    let mut m = MOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = m.as_ref().filter(|m| m.read_at.elapsed() < MOUNTS_FOR) {
        return m.points.clone();
    }
    let points = Arc::new(
        std::fs::read("/proc/self/mountinfo")
            .map(|t| parse_hangable(&t))
            .unwrap_or_default(),
    );
    *m = Some(Mounts {
        read_at: Instant::now(),
        points: points.clone(),
    });
    points
}

fn parse_hangable(text: &[u8]) -> Vec<Vec<u8>> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let dash = fields.iter().position(|f| *f == b"-")?;
            let fs = fields.get(dash + 1)?;
            let point = fields.get(4)?;
            is_hangable_type(fs).then(|| super::mounts::unescape(point))
        })
        .collect()
}

/// The deepest mount point in `mounts` at or above `path` (host paths).
pub fn mount_of<'m>(mounts: &'m [Vec<u8>], path: &[u8]) -> Option<&'m [u8]> {
    mounts
        .iter()
        .filter(|m| {
            path.starts_with(m) && (m.as_slice() == b"/" || path.len() == m.len() || path[m.len()] == b'/')
        })
        .max_by_key(|m| m.len())
        .map(Vec::as_slice)
}

/// Whether the mount at `mount` is not answering now.
pub fn is_hung(mount: &[u8]) -> bool {
    HUNG.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|h| h.contains_key(mount))
}

/// The mounts not answering now (host paths), for the report.
pub fn hung() -> Vec<Vec<u8>> {
    HUNG.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|h| h.keys().cloned().collect())
        .unwrap_or_default()
}

/// Threads stuck in calls on mounts that do not answer (at most 16), and the calls that missed
/// their deadline since the start.
pub fn stuck() -> (usize, u64) {
    RUNNER.get().map_or((0, 0), |r| (r.stuck(), r.timed_out()))
}

/// Runs `f`, a call on the file at `path` (host path), with `OP_DEADLINE` when `path` is on a
/// mount in `mounts` (`hangable_mounts`), directly otherwise.
///
/// Errors: `NotAnswering` when the mount is not answering already (`f` is not run), `f` did not
/// return in time (its thread is abandoned; the mount is not answering until it returns), or
/// every worker is stuck.
pub fn call<T, F>(mounts: &[Vec<u8>], path: &[u8], f: F) -> Result<T, NotAnswering>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    call_within(mounts, path, OP_DEADLINE, f)
}

/// As `call`, for reading `bytes` of content: the deadline grows with the size.
pub fn call_reading<T, F>(mounts: &[Vec<u8>], path: &[u8], bytes: u64, f: F) -> Result<T, NotAnswering>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let more = Duration::from_secs(bytes / READ_RATE_BYTES_PER_S);
    call_within(mounts, path, OP_DEADLINE + more, f)
}

fn call_within<T, F>(mounts: &[Vec<u8>], path: &[u8], deadline: Duration, f: F) -> Result<T, NotAnswering>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let Some(mount) = mount_of(mounts, path) else {
        return Ok(f());
    };
    let mount = mount.to_vec();
    if is_hung(&mount) {
        return Err(NotAnswering { mount });
    }
    // Decided once, under the lock: the caller gave up (the mount counts one more hung call),
    // or the call returned first (nothing to undo).
    let fate = Arc::new(Mutex::new(Fate::Running));
    let (job_fate, job_mount) = (fate.clone(), mount.clone());
    let job = move || {
        let out = f();
        let mut fate = job_fate.lock().unwrap_or_else(|e| e.into_inner());
        if *fate == Fate::Abandoned {
            let mut hung = HUNG.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = hung.as_mut()
                && let Some(n) = h.get_mut(&job_mount)
            {
                *n -= 1;
                if *n == 0 {
                    h.remove(&job_mount);
                    eprintln!(
                        "fimd: the filesystem mounted at {} answers again",
                        String::from_utf8_lossy(&job_mount)
                    );
                }
            }
        }
        *fate = Fate::Returned;
        out
    };
    // Every worker busy (a watch on a network share, read on many threads), none of them
    // stuck on this mount: wait for one, within the deadline.
    let asked = Instant::now();
    // Kept here while no worker takes it: a refused start drops only its wrapper.
    let slot = Arc::new(Mutex::new(Some(job)));
    let started = loop {
        let take = slot.clone();
        let started = runner().start(deadline, move || {
            let job = take.lock().unwrap_or_else(|e| e.into_inner()).take();
            job.map(|f| f())
        });
        match started {
            Err(DeadlineError::Saturated { .. }) if asked.elapsed() < deadline && !is_hung(&mount) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => break other,
        }
    };
    let result = started.and_then(|mut pending| {
        loop {
            if let Some(r) = pending.wait(deadline) {
                break r;
            }
        }
    });
    let result = match result {
        Ok(Some(out)) => Ok(out),
        Ok(None) => Err(DeadlineError::Panicked { what: "call" }),
        Err(e) => Err(e),
    };
    match result {
        Ok(out) => Ok(out),
        Err(DeadlineError::TimedOut { .. }) => {
            let mut fate = fate.lock().unwrap_or_else(|e| e.into_inner());
            if *fate == Fate::Running {
                *fate = Fate::Abandoned;
                *HUNG
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(HashMap::new)
                    .entry(mount.clone())
                    .or_insert(0) += 1;
            }
            Err(NotAnswering { mount })
        }
        Err(DeadlineError::Saturated { .. } | DeadlineError::Panicked { .. }) => Err(NotAnswering { mount }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Running,
    Returned,
    Abandoned,
}

/// lstat(2) of `path` (host path, any length), with a deadline on a mount that can hang.
/// Errors: the call's own; `Errno::TIMEDOUT` when the mount is not answering.
pub fn lstat(path: &[u8]) -> Result<rustix::fs::Stat, rustix::io::Errno> {
    let owned = path.to_vec();
    call(&hangable_mounts(), path, move || super::long_paths::lstat(&owned))
        .unwrap_or(Err(rustix::io::Errno::TIMEDOUT))
}

/// Whether `path` is known to be gone: lstat(2) fails, and not because its mount does not
/// answer (a path there is not taken for deleted).
pub fn gone(path: &[u8]) -> bool {
    lstat(path).is_err_and(|e| e != rustix::io::Errno::TIMEDOUT)
}

/// A directory's names (`names::read`), with a deadline on a mount that can hang.
/// Errors: the call's own; `Errno::TIMEDOUT` when the mount is not answering.
pub fn read_names(path: &[u8]) -> Result<super::names::Listing, rustix::io::Errno> {
    let owned = path.to_vec();
    call(&hangable_mounts(), path, move || super::names::read(&owned))
        .unwrap_or(Err(rustix::io::Errno::TIMEDOUT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_that_can_hang_are_found_by_type() {
        let text = b"22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
            40 22 0:35 / /mnt/f\\040s rw - fuse.sshfs u@h: rw\n\
            41 22 0:36 / /mnt/n rw shared:3 - nfs4 srv:/ rw\n\
            42 22 0:37 / /mnt/t rw - tmpfs tmpfs rw\n\
            43 22 0:38 / /mnt/b rw - fuseblk /dev/sdb1 rw\n\
            44 22 0:39 / /mnt/c rw - cifs //srv/s rw\n";
        let m = parse_hangable(text);
        assert_eq!(
            m,
            vec![
                b"/mnt/f s".to_vec(),
                b"/mnt/n".to_vec(),
                b"/mnt/b".to_vec(),
                b"/mnt/c".to_vec()
            ]
        );
    }

    #[test]
    fn a_path_belongs_to_the_deepest_mount_above_it() {
        let m = vec![b"/mnt".to_vec(), b"/mnt/a".to_vec(), b"/".to_vec()];
        assert_eq!(mount_of(&m, b"/mnt/a/x"), Some(&b"/mnt/a"[..]));
        assert_eq!(mount_of(&m, b"/mnt/a"), Some(&b"/mnt/a"[..]));
        assert_eq!(mount_of(&m, b"/mnt/ab"), Some(&b"/mnt"[..]));
        assert_eq!(mount_of(&m, b"/etc"), Some(&b"/"[..]));
        assert_eq!(mount_of(&m[..2], b"/etc"), None);
    }

    #[test]
    fn a_call_that_misses_its_deadline_marks_its_mount_until_it_returns() {
        let mounts = vec![b"/test-guarded-hang".to_vec()];
        let path = b"/test-guarded-hang/f".to_vec();
        // Off any mount that can hang: called directly.
        assert_eq!(call(&mounts, b"/elsewhere", || 7), Ok(7));
        assert_eq!(call(&mounts, &path, || 8), Ok(8));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let started = Instant::now();
        let r = call(&mounts, &path, move || rx.recv().is_ok());
        assert_eq!(
            r,
            Err(NotAnswering {
                mount: mounts[0].clone()
            })
        );
        assert!(started.elapsed() >= OP_DEADLINE);
        assert!(is_hung(&mounts[0]));
        // Not asked again while hung: at once, `f` not run.
        let again = Instant::now();
        assert!(call(&mounts, &path, || panic!("asked a hung mount")).is_err());
        assert!(again.elapsed() < Duration::from_secs(1));
        // The stuck call returns: the mount answers again.
        tx.send(()).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while is_hung(&mounts[0]) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!is_hung(&mounts[0]));
        assert_eq!(call(&mounts, &path, || 9), Ok(9));
    }
}
