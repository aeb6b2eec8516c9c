//! A FUSE filesystem that answers, then hangs: a tiny read-only tree served from this process
//! (include/uapi/linux/fuse.h, protocol 7.31), and a switch that makes chosen requests go
//! unanswered from then on (a FUSE or NFS server that stalls after the mount was entered).
//! A request the server has read and not answered is waited out uninterruptibly
//! (fs/fuse/dev.c `request_wait_answer`: "Either request is already in userspace, or it was
//! forced. Wait it out."): a thread blocked on one is in D state, SIGKILL included, until the
//! server answers or the connection is aborted. `release` answers every held request with EIO
//! and answers again; dropping the mount releases it and detaches it.
//!
//! The tree: `/a.txt`, `/b.txt`, `/sub/c.txt`, `/sub/d.txt` (a few bytes each); a file can
//! be created (answered, then forgotten), which can arm the hang (`hang_after_create`). The root's
//! attributes are cached for an hour, so a stat of the mount point is answered from the cache
//! while the server hangs; everything else is asked again every time (validity 0).
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Requests that go unanswered once armed (bits for `hang`).
pub const HANG_READ: u32 = 1;
pub const HANG_READDIR: u32 = 2;
/// LOOKUP and GETATTR of anything but the root.
pub const HANG_STAT: u32 = 4;

// Opcodes (enum fuse_opcode).
const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const OPEN: u32 = 14;
const READ: u32 = 15;
const STATFS: u32 = 17;
const RELEASE: u32 = 18;
const FLUSH: u32 = 25;
const INIT: u32 = 26;
const OPENDIR: u32 = 27;
const READDIR: u32 = 28;
const RELEASEDIR: u32 = 29;
const CREATE: u32 = 35;
const INTERRUPT: u32 = 36;
const DESTROY: u32 = 38;
const BATCH_FORGET: u32 = 42;

/// sizeof(struct fuse_in_header), sizeof(struct fuse_out_header).
const IN_HEADER: usize = 40;
/// Read buffer: the kernel wants room for max_write plus a page of headers.
const BUF: usize = 256 * 1024;
const MAX_WRITE: u32 = 128 * 1024;

struct Node {
    ino: u64,
    parent: u64,
    name: &'static str,
    /// None: a directory.
    content: Option<&'static [u8]>,
}

const NODES: &[Node] = &[
    Node {
        ino: 1,
        parent: 1,
        name: "",
        content: None,
    },
    Node {
        ino: 2,
        parent: 1,
        name: "a.txt",
        content: Some(b"alpha on fuse\n"),
    },
    Node {
        ino: 3,
        parent: 1,
        name: "b.txt",
        content: Some(b"bravo on fuse\n"),
    },
    Node {
        ino: 4,
        parent: 1,
        name: "sub",
        content: None,
    },
    Node {
        ino: 5,
        parent: 4,
        name: "c.txt",
        content: Some(b"charlie on fuse\n"),
    },
    Node {
        ino: 6,
        parent: 4,
        name: "d.txt",
        content: Some(b"delta on fuse\n"),
    },
];

struct Shared {
    dev: OwnedFd,
    hang: AtomicU32,
    /// Armed as `hang` right after a CREATE is answered.
    hang_after_create: AtomicU32,
    stop: AtomicBool,
    /// Requests left unanswered (their `unique`).
    held: Mutex<Vec<u64>>,
    /// Requests ever held.
    held_total: AtomicUsize,
}

pub struct FuseFs {
    dir: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FuseFs {
    /// Mounts the tree on the existing directory `dir` and serves it on a thread.
    pub fn mount(dir: &Path) -> anyhow::Result<FuseFs> {
        let dev = super::fuse::mount_fuse(dir, c"fimd-fusefs", libc::O_NONBLOCK)?;
        let shared = Arc::new(Shared {
            dev,
            hang: AtomicU32::new(0),
            hang_after_create: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            held: Mutex::new(Vec::new()),
            held_total: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fusefs".into())
            .spawn(move || serve(&s))?;
        Ok(FuseFs {
            dir: dir.to_owned(),
            shared,
            thread: Some(thread),
        })
    }

    /// From now on, the requests in `mask` (`HANG_*`) are left unanswered.
    pub fn hang(&self, mask: u32) {
        self.shared.hang.store(mask, Ordering::SeqCst);
    }

    /// Once a file is created on the mount (the CREATE answered), the requests in `mask` are
    /// left unanswered: whoever looks at the new file's directory then finds it hung.
    pub fn hang_after_create(&self, mask: u32) {
        self.shared.hang_after_create.store(mask, Ordering::SeqCst);
    }

    /// Answers every held request with EIO and answers all requests again.
    pub fn release(&self) {
        let mut guard = self.shared.held.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.hang.store(0, Ordering::SeqCst);
        self.shared.hang_after_create.store(0, Ordering::SeqCst);
        let held: Vec<u64> = std::mem::take(&mut *guard);
        drop(guard);
        for unique in held {
            reply(&self.shared.dev, unique, -libc::EIO, &[]);
        }
    }

    /// Requests held unanswered so far.
    pub fn held(&self) -> usize {
        self.shared.held_total.load(Ordering::SeqCst)
    }
}

impl Drop for FuseFs {
    fn drop(&mut self) {
        self.release();
        if let Ok(target) = CString::new(self.dir.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid C string.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(s: &Shared) {
    let mut buf = vec![0u8; BUF];
    while !s.stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd {
            fd: s.dev.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            continue;
        }
        // SAFETY: `buf` is BUF bytes.
        let n = unsafe { libc::read(s.dev.as_raw_fd(), buf.as_mut_ptr().cast(), BUF) };
        if n < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ENOENT) => continue,
                // ENODEV: unmounted and gone.
                _ => return,
            }
        }
        let req = &buf[..n as usize];
        if req.len() < IN_HEADER {
            continue;
        }
        let opcode = u32_at(req, 4);
        let unique = u64_at(req, 8);
        let nodeid = u64_at(req, 16);
        let body = &req[IN_HEADER..];
        {
            // Decided and held under the lock `release` takes, so no request is held after a
            // release has answered the others.
            let mut held = s.held.lock().unwrap_or_else(|e| e.into_inner());
            let mask = s.hang.load(Ordering::SeqCst);
            let hang = match opcode {
                READ => mask & HANG_READ != 0,
                READDIR => mask & HANG_READDIR != 0,
                LOOKUP => mask & HANG_STAT != 0,
                GETATTR => mask & HANG_STAT != 0 && nodeid != 1,
                _ => false,
            };
            if hang {
                held.push(unique);
                s.held_total.fetch_add(1, Ordering::SeqCst);
                continue;
            }
        }
        match opcode {
            FORGET | BATCH_FORGET | INTERRUPT => {}
            INIT => {
                let mut out = Vec::with_capacity(64);
                put32(&mut out, 7); // major
                put32(&mut out, 31); // minor
                put32(&mut out, u32_at(body, 8)); // max_readahead, as asked
                put32(&mut out, 0); // flags: none (no readdirplus, no async read)
                out.extend_from_slice(&16u16.to_le_bytes()); // max_background
                out.extend_from_slice(&12u16.to_le_bytes()); // congestion_threshold
                put32(&mut out, MAX_WRITE);
                put32(&mut out, 1); // time_gran
                out.extend_from_slice(&32u16.to_le_bytes()); // max_pages
                out.extend_from_slice(&0u16.to_le_bytes()); // map_alignment
                put32(&mut out, 0); // flags2
                out.resize(64, 0);
                reply(&s.dev, unique, 0, &out);
            }
            LOOKUP => {
                let name = body.split(|&b| b == 0).next().unwrap_or_default();
                match NODES
                    .iter()
                    .find(|n| n.parent == nodeid && n.ino != 1 && n.name.as_bytes() == name)
                {
                    Some(n) => {
                        let mut out = Vec::with_capacity(128);
                        put64(&mut out, n.ino);
                        put64(&mut out, 0); // generation
                        put64(&mut out, 0); // entry_valid (s)
                        put64(&mut out, 0); // attr_valid (s)
                        put32(&mut out, 0);
                        put32(&mut out, 0);
                        attr(&mut out, n);
                        reply(&s.dev, unique, 0, &out);
                    }
                    None => reply(&s.dev, unique, -libc::ENOENT, &[]),
                }
            }
            GETATTR => match node(nodeid) {
                Some(n) => {
                    let mut out = Vec::with_capacity(104);
                    // The root's attributes are cached: the mount point answers a stat from the
                    // cache even while the server hangs.
                    put64(&mut out, if n.ino == 1 { 3600 } else { 0 });
                    put32(&mut out, 0);
                    put32(&mut out, 0);
                    attr(&mut out, n);
                    reply(&s.dev, unique, 0, &out);
                }
                None => reply(&s.dev, unique, -libc::ENOENT, &[]),
            },
            CREATE => {
                // struct fuse_create_in (16 bytes), then the name. The file is not kept: it
                // is never listed, and a lookup of it finds nothing.
                let n = Node {
                    ino: 100 + unique % 1000,
                    parent: nodeid,
                    name: "",
                    content: Some(b""),
                };
                let mut out = Vec::with_capacity(144);
                put64(&mut out, n.ino);
                for _ in 0..3 {
                    put64(&mut out, 0); // generation, entry_valid, attr_valid
                }
                put32(&mut out, 0);
                put32(&mut out, 0);
                attr(&mut out, &n);
                put64(&mut out, n.ino); // fuse_open_out: fh
                put32(&mut out, 0);
                put32(&mut out, 0);
                reply(&s.dev, unique, 0, &out);
                let _guard = s.held.lock().unwrap_or_else(|e| e.into_inner());
                let then = s.hang_after_create.load(Ordering::SeqCst);
                if then != 0 {
                    s.hang.store(then, Ordering::SeqCst);
                }
            }
            OPEN | OPENDIR => {
                let mut out = Vec::with_capacity(16);
                put64(&mut out, nodeid); // fh
                put32(&mut out, 0); // open_flags: no cache kept, so reads reach us
                put32(&mut out, 0);
                reply(&s.dev, unique, 0, &out);
            }
            READ => {
                let (offset, size) = (u64_at(body, 8) as usize, u32_at(body, 16) as usize);
                let data = node(nodeid).and_then(|n| n.content).unwrap_or_default();
                let from = offset.min(data.len());
                let to = (from + size).min(data.len());
                reply(&s.dev, unique, 0, &data[from..to]);
            }
            READDIR => {
                let (offset, size) = (u64_at(body, 8), u32_at(body, 16) as usize);
                let mut out = Vec::new();
                let entries = [(nodeid, ".", true), (1, "..", true)]
                    .into_iter()
                    .chain(
                        NODES
                            .iter()
                            .filter(|n| n.parent == nodeid && n.ino != 1)
                            .map(|n| (n.ino, n.name, n.content.is_none())),
                    )
                    .enumerate();
                for (i, (ino, name, dir)) in entries.skip(offset as usize) {
                    let len = (24 + name.len()).div_ceil(8) * 8;
                    if out.len() + len > size {
                        break;
                    }
                    put64(&mut out, ino);
                    put64(&mut out, i as u64 + 1); // the offset of the next entry
                    put32(&mut out, name.len() as u32);
                    put32(&mut out, if dir { libc::DT_DIR } else { libc::DT_REG } as u32);
                    out.extend_from_slice(name.as_bytes());
                    out.resize(out.len().div_ceil(8) * 8, 0);
                }
                reply(&s.dev, unique, 0, &out);
            }
            STATFS => {
                let mut out = Vec::with_capacity(80);
                for v in [1024u64, 0, 0, NODES.len() as u64, 0] {
                    put64(&mut out, v);
                }
                for v in [4096u32, 255, 4096, 0] {
                    put32(&mut out, v);
                }
                out.resize(80, 0);
                reply(&s.dev, unique, 0, &out);
            }
            RELEASE | RELEASEDIR | FLUSH | DESTROY => reply(&s.dev, unique, 0, &[]),
            // GETXATTR, LISTXATTR, ACCESS, IOCTL and the rest: not implemented (the kernel
            // remembers that for most of them).
            _ => reply(&s.dev, unique, -libc::ENOSYS, &[]),
        }
    }
}

fn node(ino: u64) -> Option<&'static Node> {
    NODES.iter().find(|n| n.ino == ino)
}

/// struct fuse_attr (88 bytes).
fn attr(out: &mut Vec<u8>, n: &Node) {
    let size = n.content.map_or(0, |c| c.len() as u64);
    put64(out, n.ino);
    put64(out, size);
    put64(out, size.div_ceil(512));
    for _ in 0..3 {
        put64(out, 1_700_000_000); // atime, mtime, ctime (s): fixed, the tree never changes
    }
    for _ in 0..3 {
        put32(out, 0);
    }
    put32(out, if n.content.is_some() { 0o100644 } else { 0o040755 });
    put32(out, if n.content.is_some() { 1 } else { 2 });
    put32(out, 0); // uid
    put32(out, 0); // gid
    put32(out, 0); // rdev
    put32(out, 4096); // blksize
    put32(out, 0); // flags
}

/// Writes one reply: struct fuse_out_header then `data`.
fn reply(dev: &OwnedFd, unique: u64, error: i32, data: &[u8]) {
    let mut out = Vec::with_capacity(16 + data.len());
    put32(&mut out, (16 + data.len()) as u32);
    out.extend_from_slice(&error.to_le_bytes());
    put64(&mut out, unique);
    out.extend_from_slice(data);
    // SAFETY: `out` is valid for its length. A failed reply (the request was interrupted and
    // is gone) needs nothing more.
    unsafe { libc::write(dev.as_raw_fd(), out.as_ptr().cast(), out.len()) };
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap_or_default()))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Serves the tree, then holds reads: a reader blocks until `release`.
    #[test]
    fn answers_then_hangs_then_releases() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting FUSE needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let fs = FuseFs::mount(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("sub/c.txt")).unwrap(),
            b"charlie on fuse\n"
        );
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["c.txt", "d.txt"]);
        fs.hang(HANG_READ);
        let p = dir.path().join("a.txt");
        let reader = std::thread::spawn(move || std::fs::read(p));
        std::thread::sleep(Duration::from_millis(500));
        assert!(!reader.is_finished(), "a read was answered while reads hang");
        assert_eq!(fs.held(), 1);
        // A stat of the mount point is still answered (from the cache).
        std::fs::metadata(dir.path()).unwrap();
        fs.release();
        fs.hang_after_create(HANG_READDIR);
        std::fs::write(dir.path().join("sub/new.txt"), b"").unwrap();
        let sub = dir.path().join("sub");
        let lister = std::thread::spawn(move || std::fs::read_dir(sub).map(|d| d.count()));
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            !lister.is_finished(),
            "a listing was answered after the create armed the hang"
        );
        fs.release();
        let _ = lister.join().unwrap();
        // EIO, or the data: the page cache asks again after a failed readahead.
        let _ = reader.join().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("b.txt")).unwrap(),
            b"bravo on fuse\n"
        );
    }
}
