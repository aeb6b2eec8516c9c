//! Hashing one regular file safely: opened relative to its directory without following
//! symlinks, never blocking on a FIFO swapped in, reading no more than the size it had.
use std::cell::RefCell;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags, Stat, fstat, openat};
use sha2::{Digest, Sha256};

const BUF_SIZE: usize = 256 * 1024;
/// How often a file that keeps changing under us is re-read before it is reported unstable.
const ATTEMPTS: usize = 3;

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; BUF_SIZE]);
}

pub struct Hashed {
    /// The file's status after the final read: what the hash describes.
    pub stat: Stat,
    pub fd: OwnedFd,
    pub sha256: [u8; 32],
    /// The file changed during every attempt; the hash may describe no state it ever had.
    pub unstable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot open: {0}")]
    Open(io::Error),
    #[error("cannot read: {0}")]
    Read(io::Error),
    #[error("was replaced by a {0} while being scanned")]
    Replaced(&'static str),
    #[error("scan aborted")]
    Aborted,
}

/// Opens `name` in `dir` for reading, with O_NOATIME where the kernel allows it.
pub fn open_regular(dir: impl AsFd, name: &CStr) -> io::Result<OwnedFd> {
    let base = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    match openat(dir.as_fd(), name, base | OFlags::NOATIME, Mode::empty()) {
        Ok(fd) => Ok(fd),
        // O_NOATIME needs ownership or CAP_FOWNER.
        Err(rustix::io::Errno::PERM) => Ok(openat(dir.as_fd(), name, base, Mode::empty())?),
        Err(e) => Err(e.into()),
    }
}

/// Hashes the file; `abort` stops a long read (a huge sparse file) when the scan is cancelled.
pub fn hash_file(dir: impl AsFd, name: &CStr, abort: &AtomicBool) -> Result<Hashed, HashError> {
    let fd = open_regular(dir, name).map_err(HashError::Open)?;
    let mut before = fstat(&fd).map_err(|e| HashError::Read(e.into()))?;
    let kind = crate::baseline::entry::FileKind::from_mode(before.st_mode as u32);
    if kind != crate::baseline::entry::FileKind::Regular {
        return Err(HashError::Replaced(kind.as_str()));
    }
    let _ = rustix::fs::fadvise(&fd, 0, None, rustix::fs::Advice::Sequential);
    let mut attempt = 0;
    loop {
        let sha256 = hash_prefix(&fd, before.st_size.max(0) as u64, abort)?;
        let after = fstat(&fd).map_err(|e| HashError::Read(e.into()))?;
        attempt += 1;
        let stable = same_content_state(&before, &after);
        if stable || attempt == ATTEMPTS {
            return Ok(Hashed {
                stat: after,
                fd,
                sha256,
                unstable: !stable,
            });
        }
        before = after;
    }
}

/// SHA-256 of the first `len` bytes (fewer if the file shrank).
fn hash_prefix(fd: &OwnedFd, len: u64, abort: &AtomicBool) -> Result<[u8; 32], HashError> {
    BUF.with_borrow_mut(|buf| {
        let mut hasher = Sha256::new();
        let mut off = 0u64;
        while off < len {
            if abort.load(Ordering::Relaxed) {
                return Err(HashError::Aborted);
            }
            let want = usize::try_from(len - off).unwrap_or(usize::MAX).min(buf.len());
            let n = match rustix::io::pread(fd, &mut buf[..want], off) {
                Ok(0) => break,
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(HashError::Read(e.into())),
            };
            hasher.update(&buf[..n]);
            off += n as u64;
        }
        Ok(hasher.finalize().into())
    })
}

fn same_content_state(a: &Stat, b: &Stat) -> bool {
    a.st_size == b.st_size
        && a.st_mtime == b.st_mtime
        && a.st_mtime_nsec == b.st_mtime_nsec
        && a.st_ctime == b.st_ctime
        && a.st_ctime_nsec == b.st_ctime_nsec
}
