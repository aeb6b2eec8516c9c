//! Hashing one regular file safely: opened relative to its directory without following
//! symlinks, never blocking on a FIFO swapped in, reading no more than the size it had.
use std::cell::RefCell;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags, Stat, fstat, openat};
use sha2::{Digest, Sha256};

pub use super::links::Links;

/// Measured on /usr: 128 KiB reads cost a quarter of the kernel time of 256 KiB ones (the
/// destination stays in L2, where the hash then reads it).
const BUF_SIZE: usize = 128 * 1024;
/// How often a file that keeps changing under us is re-read before it is reported unstable.
const ATTEMPTS: usize = 3;

/// The read buffer, page-aligned: the kernel's copy from the page cache into a buffer at a
/// 16-byte offset (where malloc puts it) measured 3.3 times slower on this machine's AMD EPYC.
#[repr(C, align(4096))]
struct AlignedBuf([u8; BUF_SIZE]);

thread_local! {
    static BUF: RefCell<Box<AlignedBuf>> = RefCell::new(Box::new(AlignedBuf([0; BUF_SIZE])));
}

pub struct Hashed {
    /// The file's status after the final read: what the hash describes.
    pub stat: Stat,
    pub fd: OwnedFd,
    /// `None` when the file is larger than the configured cap.
    pub sha256: Option<[u8; 32]>,
    /// The file changed during every attempt; the hash may describe no state it ever had.
    pub unstable: bool,
    /// Bytes read into the hash, every attempt counted: 0 for a file over the cap.
    pub hashed_bytes: u64,
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
    /// Not a failure: the file is at least `Ask::later_from` bytes and is to be read later.
    /// Its size (bytes) and identity, for the caller to order and group what it left.
    #[error("left for later ({size} bytes)")]
    Later { size: u64, dev: u64, ino: u64 },
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

/// Hashes the file unless it is larger than `max`; `abort` stops a long read when the scan is
/// cancelled. The type is checked on the open descriptor, whatever the directory listing said.
pub fn hash_file(
    dir: impl AsFd,
    name: &CStr,
    max: Option<u64>,
    abort: &AtomicBool,
) -> Result<Hashed, HashError> {
    hash_file_with(dir, name, &Ask::new(max, abort))
}

/// A file's content as last hashed, with the status it had then. Every write to a file's
/// content changes its ctime (inode_set_ctime_current, called by file_update_time), and no
/// system call sets ctime: the same inode with the same size, mtime and ctime has the same
/// content. (Stores through a shared writable mapping on tmpfs change no time: callers never
/// reuse a file that was reported mapped, and rehash every file they were told changed.)
#[derive(Debug, Clone, Copy)]
pub struct KnownContent {
    pub dev: u64,
    pub ino: u64,
    /// Bytes.
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub sha256: [u8; 32],
}

impl KnownContent {
    /// The content `sha256` of a file whose status is `st`.
    #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
    pub fn of(st: &Stat, sha256: [u8; 32]) -> KnownContent {
        KnownContent {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size.max(0) as u64,
            mtime_ns: st.st_mtime as i64 * 1_000_000_000 + st.st_mtime_nsec as i64,
            ctime_ns: st.st_ctime as i64 * 1_000_000_000 + st.st_ctime_nsec as i64,
            sha256,
        }
    }

    /// Whether `st` is the status this content was hashed at.
    #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
    pub(super) fn describes(&self, st: &Stat) -> bool {
        st.st_dev as u64 == self.dev
            && st.st_ino as u64 == self.ino
            && st.st_size.max(0) as u64 == self.size
            && st.st_mtime as i64 * 1_000_000_000 + st.st_mtime_nsec as i64 == self.mtime_ns
            && st.st_ctime as i64 * 1_000_000_000 + st.st_ctime_nsec as i64 == self.ctime_ns
    }
}

/// How one file is hashed, and what spares reading it.
#[derive(Clone, Copy)]
pub struct Ask<'a> {
    /// Files larger than this (bytes) are recorded without a digest.
    pub max: Option<u64>,
    /// Set when the scan is cancelled: a long read stops (`HashError::Aborted`).
    pub abort: &'a AtomicBool,
    /// The content the caller recorded for this path: returned, not read, while the open
    /// descriptor's status is the one it describes.
    pub known: Option<&'a KnownContent>,
    /// Contents hashed earlier in this scan, by inode: another hard link to a file already
    /// read is not read again.
    pub links: Option<&'a Links>,
    /// Files of at least this many bytes are not read now: `HashError::Later` gives their
    /// size, for the caller to read them once the small ones are done (largest first).
    pub later_from: Option<u64>,
}

impl<'a> Ask<'a> {
    /// Hash whatever is found, up to `max` bytes.
    pub fn new(max: Option<u64>, abort: &'a AtomicBool) -> Ask<'a> {
        Ask {
            max,
            abort,
            known: None,
            links: None,
            later_from: None,
        }
    }
}

/// As `hash_file`, but a file whose open descriptor's status is one `ask` knows the content
/// of (`Ask::known`, `Ask::links`) is not read: that digest is returned (`hashed_bytes` 0). A
/// directory listed again because a name changed in it thus never rereads a large unchanged
/// file in it, and the thirteen names of one Mesa driver are read once.
pub fn hash_file_with(dir: impl AsFd, name: &CStr, ask: &Ask<'_>) -> Result<Hashed, HashError> {
    let fd = open_regular(dir, name).map_err(HashError::Open)?;
    let mut before = fstat(&fd).map_err(|e| HashError::Read(e.into()))?;
    let kind = crate::baseline::entry::FileKind::from_mode(before.st_mode as u32);
    if kind != crate::baseline::entry::FileKind::Regular {
        return Err(HashError::Replaced(kind.as_str()));
    }
    let linked = || ask.links.and_then(|l| l.get(&before));
    if let Some(k) = ask
        .known
        .filter(|k| k.describes(&before))
        .copied()
        .or_else(linked)
    {
        return Ok(Hashed {
            stat: before,
            fd,
            sha256: Some(k.sha256),
            unstable: false,
            hashed_bytes: 0,
        });
    }
    let size = before.st_size.max(0) as u64;
    if ask.max.is_some_and(|max| size > max) {
        return Ok(Hashed {
            stat: before,
            fd,
            sha256: None,
            unstable: false,
            hashed_bytes: 0,
        });
    }
    if ask.later_from.is_some_and(|from| size >= from) {
        #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
        return Err(HashError::Later {
            size,
            dev: before.st_dev as u64,
            ino: before.st_ino as u64,
        });
    }
    if size > BUF_SIZE as u64 {
        let _ = rustix::fs::fadvise(&fd, 0, None, rustix::fs::Advice::Sequential);
    }
    let mut attempt = 0;
    let mut hashed_bytes = 0;
    loop {
        let (sha256, read) = hash_prefix(&fd, &before, ask.abort)?;
        hashed_bytes += read;
        let after = fstat(&fd).map_err(|e| HashError::Read(e.into()))?;
        attempt += 1;
        let stable = same_content_state(&before, &after);
        if stable || attempt == ATTEMPTS {
            if stable && let Some(links) = ask.links {
                links.put(&after, sha256);
            }
            return Ok(Hashed {
                stat: after,
                fd,
                sha256: Some(sha256),
                unstable: !stable,
                hashed_bytes,
            });
        }
        before = after;
    }
}

/// SHA-256 of the first `st.st_size` bytes (fewer if the file shrank), and how many were read.
/// A file whose allocated blocks (`st_blocks`, 512-byte units: stat(2)) cover its size has no
/// hole worth skipping: it is read plainly, without the two lseek(2) calls per extent that
/// `feed` makes (two of the ten system calls per file of a `fimd init` of /usr/share). A hole
/// punched meanwhile reads as zeros, so the digest is the same either way.
fn hash_prefix(fd: &OwnedFd, st: &Stat, abort: &AtomicBool) -> Result<([u8; 32], u64), HashError> {
    let len = st.st_size.max(0) as u64;
    let mut hasher = Sha256::new();
    let read = if (st.st_blocks.max(0) as u64).saturating_mul(512) >= len {
        read_range(fd.as_fd(), &mut hasher, 0, len, abort)?
    } else {
        feed(fd, &mut hasher, 0, len, abort)?
    };
    Ok((hasher.finalize().into(), read))
}

/// Zeros standing for a hole: a hole reads as zeros (lseek(2), SEEK_HOLE), so it is hashed as
/// zeros without being read.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Feeds bytes `from..to` of `fd` into `hasher`; returns where it stopped (before `to` if the
/// file is shorter). Sparse files are read by extent (lseek(2) SEEK_DATA/SEEK_HOLE): holes are
/// fed as zeros, never read, so the digest is the same as a plain read's. A filesystem without
/// hole support reports the whole file as data (the kernel's generic_file_llseek_size), and
/// one that refuses the request (EINVAL) is read plainly.
pub fn feed(
    fd: impl AsFd,
    hasher: &mut Sha256,
    from: u64,
    to: u64,
    abort: &AtomicBool,
) -> Result<u64, HashError> {
    let fd = fd.as_fd();
    let mut off = from;
    while off < to {
        let Some((data, hole)) = next_extent(fd, off)? else {
            // No data at or after `off`: a hole up to the end of the file, or the file shrank.
            let size = fstat(fd).map_err(|e| HashError::Read(e.into()))?.st_size.max(0) as u64;
            return feed_zeros(hasher, off, to.min(size).max(off), abort);
        };
        off = feed_zeros(hasher, off, data.min(to), abort)?;
        if off >= to {
            break;
        }
        let end = hole.min(to);
        let stopped = read_range(fd, hasher, off, end, abort)?;
        if stopped < end {
            // Shorter than its extents said: it shrank while being read, as a plain read ends.
            return Ok(stopped);
        }
        off = end;
    }
    Ok(off.max(from))
}

/// The data extent at or after `off`: `(data start, hole start)`, or `None` when only a hole
/// (or nothing) follows. Without SEEK_DATA support, everything from `off` is one extent.
fn next_extent(fd: rustix::fd::BorrowedFd<'_>, off: u64) -> Result<Option<(u64, u64)>, HashError> {
    use rustix::fs::{SeekFrom, seek};
    let data = match seek(fd, SeekFrom::Data(off)) {
        Ok(d) => d,
        Err(rustix::io::Errno::NXIO) => return Ok(None),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => return Ok(Some((off, u64::MAX))),
        Err(e) => return Err(HashError::Read(e.into())),
    };
    let hole = match seek(fd, SeekFrom::Hole(data)) {
        Ok(h) => h,
        // Truncated between the two calls: no data left there.
        Err(rustix::io::Errno::NXIO) => return Ok(None),
        Err(e) => return Err(HashError::Read(e.into())),
    };
    Ok(Some((data, hole.max(data))))
}

/// Feeds `to - from` zero bytes; returns `to`.
fn feed_zeros(hasher: &mut Sha256, from: u64, to: u64, abort: &AtomicBool) -> Result<u64, HashError> {
    let mut off = from;
    while off < to {
        if abort.load(Ordering::Relaxed) {
            return Err(HashError::Aborted);
        }
        let n = usize::try_from(to - off).unwrap_or(usize::MAX).min(ZEROS.len());
        hasher.update(&ZEROS[..n]);
        off += n as u64;
    }
    Ok(off)
}

/// Reads bytes `from..to` into the hash; returns where it stopped (at end of file, if sooner).
fn read_range(
    fd: rustix::fd::BorrowedFd<'_>,
    hasher: &mut Sha256,
    from: u64,
    to: u64,
    abort: &AtomicBool,
) -> Result<u64, HashError> {
    BUF.with_borrow_mut(|buf| {
        let buf = &mut buf.0;
        let mut off = from;
        while off < to {
            if abort.load(Ordering::Relaxed) {
                return Err(HashError::Aborted);
            }
            let want = usize::try_from(to - off).unwrap_or(usize::MAX).min(buf.len());
            let n = match rustix::io::pread(fd, &mut buf[..want], off) {
                Ok(0) => break,
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(HashError::Read(e.into())),
            };
            hasher.update(&buf[..n]);
            off += n as u64;
        }
        Ok(off)
    })
}

fn same_content_state(a: &Stat, b: &Stat) -> bool {
    a.st_size == b.st_size
        && a.st_mtime == b.st_mtime
        && a.st_mtime_nsec == b.st_mtime_nsec
        && a.st_ctime == b.st_ctime
        && a.st_ctime_nsec == b.st_ctime_nsec
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::ffi::OsStrExt;

    static NEVER: AtomicBool = AtomicBool::new(false);

    fn with_known(known: &KnownContent) -> Ask<'_> {
        Ask {
            known: Some(known),
            ..Ask::new(None, &NEVER)
        }
    }

    /// A file of `len` bytes holding `data` extents (offset, bytes) and holes elsewhere.
    fn sparse(dir: &std::path::Path, name: &str, len: u64, data: &[(u64, &[u8])]) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        for (at, bytes) in data {
            f.seek(SeekFrom::Start(*at)).unwrap();
            f.write_all(bytes).unwrap();
        }
        f.set_len(len).unwrap();
        path
    }

    fn hashed(path: &std::path::Path) -> Hashed {
        let dir = std::fs::File::open(path.parent().unwrap()).unwrap();
        let name = std::ffi::CString::new(path.file_name().unwrap().as_bytes()).unwrap();
        hash_file(&dir, &name, None, &NEVER).unwrap()
    }

    /// Bytes this thread read through read(2)-family calls (proc(5), /proc/thread-self/io).
    fn rchar() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A file's name, length, and data extents (offset, bytes).
    type Layout<'a> = (&'a str, u64, Vec<(u64, &'a [u8])>);

    #[test]
    fn sparse_layouts_hash_as_a_plain_read() {
        let dir = tempfile::tempdir().unwrap();
        let mib = 1 << 20;
        let page = vec![0xa5u8; 4096];
        let odd = vec![0x3cu8; 10_000];
        let layouts: Vec<Layout> = vec![
            ("dense", 10_000, vec![(0, &odd[..])]),
            ("empty", 0, vec![]),
            ("only_a_hole", 8 * mib, vec![]),
            ("hole_at_end", 8 * mib, vec![(0, &page[..])]),
            ("hole_at_start", 8 * mib + 4096, vec![(8 * mib, &page[..])]),
            (
                "data_at_both_ends",
                16 * mib,
                vec![(0, &page[..]), (16 * mib - 4096, &page[..])],
            ),
            (
                "alternating",
                6 * mib + 123,
                vec![
                    (0, &odd[..]),
                    (2 * mib + 5, &odd[..]),
                    (4 * mib, &page[..]),
                    (6 * mib, &[7u8; 123][..]),
                ],
            ),
            ("unaligned_tail", 3 * mib + 1, vec![(3 * mib, &[1u8][..])]),
        ];
        for (name, len, data) in layouts {
            let path = sparse(dir.path(), name, len, &data);
            let plain: [u8; 32] = Sha256::digest(std::fs::read(&path).unwrap()).into();
            let h = hashed(&path);
            assert_eq!(
                h.sha256,
                Some(plain),
                "{name}: the digest differs from a plain read"
            );
            assert_eq!(h.stat.st_size as u64, len, "{name}");
            assert!(!h.unstable, "{name}");
        }
    }

    #[test]
    fn ranges_of_a_sparse_file_hash_as_a_plain_read() {
        let dir = tempfile::tempdir().unwrap();
        let page = vec![0x5au8; 4096];
        let path = sparse(
            dir.path(),
            "f",
            1 << 22,
            &[(1 << 20, &page[..]), (3 << 20, &page[..])],
        );
        let bytes = std::fs::read(&path).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        for (from, to) in [
            (0, 1 << 22),
            (100, (1 << 20) + 100),
            ((1 << 20) + 4000, 3 << 20),
            (5 << 20, 6 << 20),
        ] {
            let mut h = Sha256::new();
            let stopped = feed(&f, &mut h, from, to, &NEVER).unwrap();
            let end = (to as usize).min(bytes.len());
            assert_eq!(stopped, end.max(from as usize) as u64, "{from}..{to}");
            let want: [u8; 32] = Sha256::digest(&bytes[(from as usize).min(end)..end]).into();
            let got: [u8; 32] = h.finalize().into();
            assert_eq!(got, want, "{from}..{to}");
        }
    }

    #[test]
    fn known_content_is_reused_only_while_the_status_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = sparse(dir.path(), "f", 1 << 20, &[(0, &[9u8; 100][..])]);
        let first = hashed(&path);
        let st = first.stat;
        let known = KnownContent::of(&st, [0xee; 32]);
        let d = std::fs::File::open(dir.path()).unwrap();
        let name = std::ffi::CString::new("f").unwrap();
        // Unchanged: the known digest (deliberately not the real one), nothing read.
        let h = hash_file_with(&d, &name, &with_known(&known)).unwrap();
        assert_eq!((h.sha256, h.hashed_bytes), (Some([0xee; 32]), 0));
        // Any write changes ctime: hashed again, for real.
        std::thread::sleep(std::time::Duration::from_millis(20));
        rustix::io::pwrite(
            std::fs::OpenOptions::new().write(true).open(&path).unwrap(),
            b"x",
            5,
        )
        .unwrap();
        let h = hash_file_with(&d, &name, &with_known(&known)).unwrap();
        let plain: [u8; 32] = Sha256::digest(std::fs::read(&path).unwrap()).into();
        assert_eq!(h.sha256, Some(plain));
        assert_eq!(h.hashed_bytes, 1 << 20);
        // Another inode under the name: hashed.
        std::fs::remove_file(&path).unwrap();
        sparse(dir.path(), "f", 1 << 20, &[(0, &[9u8; 100][..])]);
        let h = hash_file_with(&d, &name, &with_known(&known)).unwrap();
        assert_ne!(h.sha256, Some([0xee; 32]));
    }

    #[test]
    fn holes_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let page = vec![1u8; 4096];
        // 1 GiB of hole with a page of data at each end.
        let len = 1u64 << 30;
        let path = sparse(dir.path(), "big", len, &[(0, &page[..]), (len - 4096, &page[..])]);
        let before = rchar();
        let h = hashed(&path);
        let read = rchar() - before;
        assert!(read < 1 << 20, "{read} bytes read for 8 KiB of data");
        assert_eq!(h.hashed_bytes, len, "holes count as hashed bytes");
    }
}
