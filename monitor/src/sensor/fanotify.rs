//! The fanotify sensor: for hosts where no eBPF program can load (no BTF, no CAP_BPF, lockdown,
//! BPF disabled). It sees what fsnotify sees, with the writer's pid.
//!
//! - **Marks.** One `FAN_MARK_FILESYSTEM` mark per filesystem holding a watch (and per
//!   filesystem mounted below a watch), in a `FAN_CLASS_NOTIF` group reporting `FAN_REPORT_FID`
//!   and `FAN_REPORT_DFID_NAME` (Linux 5.9; fanotify(7)). Events name objects by file handle;
//!   `open_by_handle_at(2)` plus `fstat` turns a handle into the `InodeKey` the daemon watches,
//!   cached per handle.
//! - **What it sees.** `FAN_MODIFY` (write, writev, pwrite, splice, copy_file_range, sendfile,
//!   io_uring and O_DIRECT writes, truncate, fallocate), `FAN_ATTRIB` (chmod, chown, xattrs,
//!   times, link count), `FAN_CLOSE_WRITE`, and the directory-entry events `FAN_CREATE`,
//!   `FAN_DELETE`, `FAN_MOVED_FROM`/`FAN_MOVED_TO` (reported on the parent directory, which the
//!   daemon rescans), plus `FAN_DELETE_SELF`/`FAN_MOVE_SELF`.
//! - **What it cannot see.** Stores through a shared writable mapping raise no fsnotify event.
//!   The sensor reads `/proc/PID/maps` every `MAPS_PERIOD` and reports every watched file that
//!   is mapped shared and writable (the daemon writes it back and rehashes), and once more when
//!   the mapping is gone. A mapping made after the writer closed its descriptor and removed
//!   within one period is seen only by the next full comparison. Writers' offsets are not seen,
//!   so append-only files are always verified whole (`VIOLATION_UNSEEN`).
//! - **Attribution.** The event's pid is the writer's process (tgid). With `FAN_REPORT_PIDFD`
//!   (Linux 5.15) the event holds a pidfd, so the pid cannot be reused while fimd reads
//!   `/proc/PID`; the task name and uid come from there.
//! - **Losses.** A full event queue (16384 events, the kernel's default) gives
//!   `FAN_Q_OVERFLOW`: counted in `lost()`, which makes the daemon rescan every watch.
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use monitor_common::{
    ChangeRecord, HOOK_FAN_ATTRIB, HOOK_FAN_CLOSE_WRITE, HOOK_FAN_CREATE, HOOK_FAN_DELETE, HOOK_FAN_MODIFY,
    HOOK_FAN_MOVE, HOOK_PROC_MAPS, InodeKey, RECORD_MMAP_WRITABLE, VIOLATION_UNSEEN,
};

use super::ebpf::kernel_dev;

/// Events asked of every mark (include/uapi/linux/fanotify.h).
const MASK: u64 = libc::FAN_MODIFY
    | libc::FAN_ATTRIB
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_DELETE_SELF
    | libc::FAN_MOVE_SELF
    | libc::FAN_ONDIR;
const DIRENT: u64 = libc::FAN_CREATE | libc::FAN_DELETE | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO;

/// How often writable shared mappings of watched files are looked for in /proc.
pub const MAPS_PERIOD: Duration = Duration::from_secs(1);
/// Handles resolved to inodes, kept at most (entries); the cache is emptied when full.
const HANDLE_CACHE: usize = 1 << 16;
/// One read of the event queue (bytes).
const READ_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FanotifyError {
    #[error(
        "fanotify_init: {0}; the fanotify sensor needs CAP_SYS_ADMIN (filesystem marks) and Linux 5.9 or \
         newer (FAN_REPORT_DFID_NAME)"
    )]
    Init(std::io::Error),
    #[error(
        "fanotify_mark on the filesystem of {path}: {error}{hint}",
        hint = match error.raw_os_error() {
            Some(libc::ENODEV) => " (this filesystem reports no fsid to fanotify: on Linux before 5.13 tmpfs is \
                one of them; use the eBPF sensor or the scheduled full comparison there)",
            Some(libc::EPERM) => " (filesystem marks need CAP_SYS_ADMIN)",
            _ => "",
        }
    )]
    Mark { path: PathBuf, error: std::io::Error },
}

/// The loaded fanotify sensor.
pub struct FanotifySensor {
    fd: OwnedFd,
    /// A descriptor on each marked filesystem, by fsid: `open_by_handle_at`'s mount_fd.
    mounts: HashMap<[i32; 2], OwnedFd>,
    /// Watched inodes and their `WATCH_*` flags.
    watched: HashMap<InodeKey, u32>,
    /// Watched inodes whose next change is reported (the eBPF sensor's ARMED in userspace).
    armed: HashSet<InodeKey>,
    /// fsid + handle type + handle bytes → inode.
    handles: HashMap<Vec<u8>, InodeKey>,
    /// Watched files mapped shared and writable at the last look, with a process mapping them.
    mapped: HashMap<InodeKey, u32>,
    next_maps: Instant,
    lost: u64,
    pidfd: bool,
    marked: Vec<PathBuf>,
    buf: Vec<u8>,
}

impl FanotifySensor {
    /// Creates the group and marks the filesystem of each path in `roots`, and of every
    /// filesystem mounted below one.
    ///
    /// Errors: `Init` when fanotify is unavailable or unprivileged; `Mark` when a root's own
    /// filesystem cannot be marked. A filesystem mounted below a root that cannot be marked is
    /// skipped with a warning (the scheduled full comparison still covers it).
    pub fn load(roots: &[PathBuf]) -> Result<FanotifySensor, FanotifyError> {
        let base = libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_REPORT_FID
            | libc::FAN_REPORT_DFID_NAME;
        let flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as libc::c_uint;
        // SAFETY: plain system call.
        let (raw, pidfd) = match unsafe { libc::fanotify_init(base | libc::FAN_REPORT_PIDFD, flags) } {
            fd if fd >= 0 => (fd, true),
            // Before 5.15: no pidfds.
            _ => (unsafe { libc::fanotify_init(base, flags) }, false),
        };
        if raw < 0 {
            return Err(FanotifyError::Init(std::io::Error::last_os_error()));
        }
        // SAFETY: a descriptor fanotify_init just returned, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut s = FanotifySensor {
            fd,
            mounts: HashMap::new(),
            watched: HashMap::new(),
            armed: HashSet::new(),
            handles: HashMap::new(),
            mapped: HashMap::new(),
            next_maps: Instant::now(),
            lost: 0,
            pidfd,
            marked: Vec::new(),
            buf: vec![0; READ_BYTES],
        };
        for root in roots {
            s.mark(root)?;
            for below in mounts_below(root) {
                if let Err(e) = s.mark(&below) {
                    eprintln!("fimd: warning: fanotify sensor: {e}; only full comparisons cover it");
                }
            }
        }
        Ok(s)
    }

    fn mark(&mut self, path: &Path) -> Result<(), FanotifyError> {
        let err = |error| FanotifyError::Mark {
            path: path.to_owned(),
            error,
        };
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
        // open_by_handle_at refuses an O_PATH mount_fd: open a directory for reading (the
        // root, or the directory holding a root that is a file). O_NOFOLLOW: a root that is a
        // symlink is the scan's business, never followed here.
        let open_dir = |p: &CString| {
            // SAFETY: valid NUL-terminated path.
            let raw = unsafe {
                libc::open(
                    p.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                )
            };
            // SAFETY: a descriptor open just returned.
            (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
        };
        let parent = path
            .parent()
            .and_then(|p| CString::new(p.as_os_str().as_bytes()).ok());
        let dir = match open_dir(&c).or_else(|| parent.as_ref().and_then(open_dir)) {
            Some(d) => d,
            None => return Err(err(std::io::Error::last_os_error())),
        };
        let fsid = fsid_of(dir.as_fd()).map_err(err)?;
        if self.mounts.contains_key(&fsid) {
            return Ok(());
        }
        // SAFETY: the group descriptor is open and `c` a valid path; FAN_MARK_DONT_FOLLOW
        // marks a symlink itself, never what it points to.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM | libc::FAN_MARK_DONT_FOLLOW,
                MASK,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if rc < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        self.mounts.insert(fsid, dir);
        self.marked.push(path.to_owned());
        Ok(())
    }

    /// The inode a file handle names, from the cache or `open_by_handle_at`; `None` when the
    /// object is gone (ESTALE) or its filesystem is not marked.
    fn resolve(&mut self, fsid: [i32; 2], handle: &[u8]) -> Option<InodeKey> {
        let mut id = Vec::with_capacity(8 + handle.len());
        id.extend_from_slice(&fsid[0].to_ne_bytes());
        id.extend_from_slice(&fsid[1].to_ne_bytes());
        id.extend_from_slice(handle);
        if let Some(k) = self.handles.get(&id) {
            return Some(*k);
        }
        let mount = self.mounts.get(&fsid)?;
        // struct file_handle: u32 handle_bytes, i32 handle_type, then the bytes; `handle` is
        // that whole struct as the event carries it. Copied into a u32-aligned buffer.
        let mut fh = vec![0u32; handle.len().div_ceil(4)];
        // SAFETY: fh holds at least handle.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(handle.as_ptr(), fh.as_mut_ptr().cast::<u8>(), handle.len()) };
        // SAFETY: fh is a complete struct file_handle (the kernel wrote it); O_PATH opens no data.
        let raw = unsafe {
            libc::open_by_handle_at(
                mount.as_raw_fd(),
                fh.as_mut_ptr().cast::<libc::file_handle>(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESTALE) {
                // Not knowing which inode changed is a loss: the daemon rescans.
                self.lost += 1;
            }
            return None;
        }
        // SAFETY: a descriptor open_by_handle_at just returned.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let st = rustix::fs::fstat(&fd).ok()?;
        #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
        let key = InodeKey {
            dev: kernel_dev(st.st_dev as u64),
            _pad: 0,
            ino: st.st_ino as u64,
        };
        if self.handles.len() >= HANDLE_CACHE {
            self.handles.clear();
        }
        self.handles.insert(id, key);
        Some(key)
    }

    /// Parses one read of the queue into records for armed, watched inodes.
    fn parse(&mut self, len: usize, out: &mut Vec<ChangeRecord>) {
        let buf = std::mem::take(&mut self.buf);
        let mut at = 0;
        const META: usize = std::mem::size_of::<libc::fanotify_event_metadata>();
        while at + META <= len {
            // SAFETY: META bytes are in the buffer; read_unaligned needs no alignment, and the
            // struct is plain integers.
            let m: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
            let event_len = m.event_len as usize;
            if event_len < META || at + event_len > len {
                break;
            }
            let event = &buf[at..at + event_len];
            at += event_len;
            if m.mask & libc::FAN_Q_OVERFLOW != 0 {
                self.lost += 1;
                continue;
            }
            if m.fd >= 0 {
                // Not asked for with FID reporting, but never leak one.
                // SAFETY: the kernel installed this descriptor for us.
                drop(unsafe { OwnedFd::from_raw_fd(m.fd) });
            }
            let mut object = None;
            let mut parent = None;
            let mut pidfd = None;
            let mut info = &event[m.metadata_len as usize..];
            while info.len() >= 4 {
                let (kind, ilen) = (info[0], u16::from_ne_bytes([info[2], info[3]]) as usize);
                if ilen < 4 || ilen > info.len() {
                    break;
                }
                let rec = &info[..ilen];
                info = &info[ilen..];
                match kind {
                    libc::FAN_EVENT_INFO_TYPE_FID | libc::FAN_EVENT_INFO_TYPE_DFID_NAME | 3 => {
                        // header (4), fsid (8), struct file_handle (8 + handle_bytes), name.
                        if rec.len() < 20 {
                            continue;
                        }
                        let fsid = [
                            i32::from_ne_bytes(rec[4..8].try_into().unwrap_or_default()),
                            i32::from_ne_bytes(rec[8..12].try_into().unwrap_or_default()),
                        ];
                        let bytes = u32::from_ne_bytes(rec[12..16].try_into().unwrap_or_default()) as usize;
                        let Some(handle) = rec.get(12..20 + bytes) else {
                            continue;
                        };
                        if kind == libc::FAN_EVENT_INFO_TYPE_FID {
                            object = Some((fsid, handle.to_vec()));
                        } else {
                            parent = Some((fsid, handle.to_vec()));
                        }
                    }
                    libc::FAN_EVENT_INFO_TYPE_PIDFD if rec.len() >= 8 => {
                        let fd = i32::from_ne_bytes(rec[4..8].try_into().unwrap_or_default());
                        if fd >= 0 {
                            // SAFETY: the kernel installed this pidfd for us.
                            pidfd = Some(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                    _ => {}
                }
            }
            let hook = hook_of(m.mask);
            let mut keys = Vec::with_capacity(2);
            // A directory-entry event changes the parent (rescanned by the daemon); any other
            // event changes the object itself.
            if m.mask & DIRENT != 0 {
                keys.extend(parent.and_then(|(f, h)| self.resolve(f, &h)));
            } else {
                keys.extend(object.and_then(|(f, h)| self.resolve(f, &h)));
            }
            let mut who = None;
            for key in keys {
                if !self.watched.contains_key(&key) || !self.armed.remove(&key) {
                    continue;
                }
                let w = who.get_or_insert_with(|| Writer::read(m.pid as u32, pidfd.as_ref()));
                out.push(w.record(key, hook, 0));
            }
        }
        self.buf = buf;
    }

    /// Reports watched files mapped shared and writable (stores through them raise no event),
    /// and once more each file whose mapping went away since the last look.
    fn scan_maps(&mut self, out: &mut Vec<ChangeRecord>) {
        let now = mapped_writable(&self.watched);
        for (key, pid) in &now {
            self.armed.remove(key);
            out.push(Writer::read(*pid, None).record(*key, HOOK_PROC_MAPS, RECORD_MMAP_WRITABLE));
        }
        for (key, pid) in &self.mapped {
            if !now.contains_key(key) && self.watched.contains_key(key) {
                self.armed.remove(key);
                out.push(Writer::read(*pid, None).record(*key, HOOK_PROC_MAPS, 0));
            }
        }
        self.mapped = now;
    }
}

impl super::Sensor for FanotifySensor {
    fn name(&self) -> &'static str {
        "fanotify"
    }

    fn hooks(&self) -> Vec<String> {
        let mut v: Vec<String> = [
            "FAN_MODIFY",
            "FAN_ATTRIB",
            "FAN_CLOSE_WRITE",
            "FAN_CREATE",
            "FAN_DELETE",
        ]
        .iter()
        .chain(&[
            "FAN_MOVED_FROM",
            "FAN_MOVED_TO",
            "FAN_DELETE_SELF",
            "FAN_MOVE_SELF",
        ])
        .map(|e| format!("fanotify/{e}"))
        .collect();
        if self.pidfd {
            v.push("fanotify/FAN_REPORT_PIDFD".into());
        }
        v.push(format!("proc_maps/every {} ms", MAPS_PERIOD.as_millis()));
        v
    }

    fn ready_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn drain(&mut self, out: &mut Vec<ChangeRecord>) {
        loop {
            // SAFETY: reading into our own buffer of that length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if n <= 0 {
                break;
            }
            self.parse(n as usize, out);
        }
        if Instant::now() >= self.next_maps {
            self.next_maps = Instant::now() + MAPS_PERIOD;
            self.scan_maps(out);
        }
    }

    fn watch(&mut self, key: InodeKey, is_dir: bool) -> Result<(), super::SensorError> {
        let flags = if is_dir { monitor_common::WATCH_IS_DIR } else { 0 };
        self.watched.insert(key, flags);
        self.armed.insert(key);
        Ok(())
    }

    fn unwatch(&mut self, key: &InodeKey) {
        self.watched.remove(key);
        self.armed.remove(key);
        self.mapped.remove(key);
    }

    fn watch_filesystem(&mut self, path: &Path) -> Result<(), super::SensorError> {
        Ok(self.mark(path)?)
    }

    fn watch_append(&mut self, key: InodeKey, _verified_len: u64) -> Result<(), super::SensorError> {
        self.watched.insert(key, monitor_common::WATCH_APPEND_ONLY);
        Ok(())
    }

    fn take_violations(&mut self, key: &InodeKey) -> u32 {
        match self.watched.get(key) {
            Some(f) if f & monitor_common::WATCH_APPEND_ONLY != 0 => VIOLATION_UNSEEN,
            _ => 0,
        }
    }

    fn rearm(&mut self, key: InodeKey) -> Result<(), super::SensorError> {
        if self.watched.contains_key(&key) {
            self.armed.insert(key);
        }
        Ok(())
    }

    fn lost(&self) -> u64 {
        self.lost
    }
}

/// The hook to name for an event mask, the most telling first.
fn hook_of(mask: u64) -> u32 {
    if mask & libc::FAN_MODIFY != 0 {
        HOOK_FAN_MODIFY
    } else if mask & (libc::FAN_CREATE) != 0 {
        HOOK_FAN_CREATE
    } else if mask & (libc::FAN_DELETE | libc::FAN_DELETE_SELF) != 0 {
        HOOK_FAN_DELETE
    } else if mask & (libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO | libc::FAN_MOVE_SELF) != 0 {
        HOOK_FAN_MOVE
    } else if mask & libc::FAN_ATTRIB != 0 {
        HOOK_FAN_ATTRIB
    } else {
        HOOK_FAN_CLOSE_WRITE
    }
}

/// The writing process as /proc shows it when the event is read.
struct Writer {
    pid: u32,
    uid: u32,
    gid: u32,
    comm: [u8; 16],
}

impl Writer {
    /// Reads `/proc/PID`. With a pidfd, the pid cannot have been reused meanwhile; without one
    /// (or once the process has been reaped) the name and ids may be missing: uid and gid are
    /// then `u32::MAX`.
    fn read(pid: u32, pidfd: Option<&OwnedFd>) -> Writer {
        let mut comm = [0u8; 16];
        if pidfd.is_some_and(exited) {
            // Reaped already: the pid may name another process by now.
            return Writer {
                pid,
                uid: u32::MAX,
                gid: u32::MAX,
                comm,
            };
        }
        if let Ok(name) = std::fs::read(format!("/proc/{pid}/comm")) {
            let name = name.strip_suffix(b"\n").unwrap_or(&name);
            let n = name.len().min(15);
            comm[..n].copy_from_slice(&name[..n]);
        }
        let (mut uid, mut gid) = (u32::MAX, u32::MAX);
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let id = |prefix: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .and_then(|rest| rest.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            };
            // The effective ids: the second field of "Uid:" and "Gid:" (proc(5)).
            uid = id("Uid:").unwrap_or(u32::MAX);
            gid = id("Gid:").unwrap_or(u32::MAX);
        }
        Writer { pid, uid, gid, comm }
    }

    fn record(&self, key: InodeKey, hook: u32, flags: u32) -> ChangeRecord {
        ChangeRecord {
            key,
            ktime_ns: 0,
            cgroup_id: 0,
            pid: self.pid,
            tgid: self.pid,
            uid: self.uid,
            gid: self.gid,
            hook,
            flags,
            comm: self.comm,
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

/// The fsid fanotify reports for the filesystem of `fd` (statfs(2) `f_fsid`).
fn fsid_of(fd: BorrowedFd<'_>) -> Result<[i32; 2], std::io::Error> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the struct on success.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful call; fsid_t is two ints (statfs(2)), read as such.
    Ok(unsafe { std::ptr::read_unaligned(std::ptr::addr_of!((*st.as_ptr()).f_fsid).cast::<[i32; 2]>()) })
}

/// Mount points strictly below `root`, from /proc/self/mountinfo (proc(5)); octal escapes in
/// the mount point (`\040` for a space) are decoded.
fn mounts_below(root: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(p))))
        .filter(|p| p != root && p.starts_with(root))
        .collect()
}

fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 3 < s.len() && s[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Watched inodes mapped shared and writable by some process, with one such process, from
/// every `/proc/PID/maps` (proc(5): "rw-s"/"-w-s" permissions, device "MAJ:MIN" in hex, inode).
fn mapped_writable(watched: &HashMap<InodeKey, u32>) -> HashMap<InodeKey, u32> {
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
    fn maps_device_and_mount_escapes_decode() {
        assert_eq!(parse_dev(b"fd:01"), Some((0xfd << 20) | 1));
        assert_eq!(parse_dev(b"00:2a"), Some(0x2a));
        assert_eq!(parse_dev(b"zz:01"), None);
        assert_eq!(unescape(b"/mnt/a\\040b"), b"/mnt/a b");
        assert_eq!(unescape(b"/x\\134y"), b"/x\\y");
        assert_eq!(unescape(b"/plain"), b"/plain");
    }

    #[test]
    fn the_most_telling_hook_is_named() {
        assert_eq!(hook_of(libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE), HOOK_FAN_MODIFY);
        assert_eq!(hook_of(libc::FAN_CREATE | libc::FAN_ONDIR), HOOK_FAN_CREATE);
        assert_eq!(hook_of(libc::FAN_MOVED_TO), HOOK_FAN_MOVE);
        assert_eq!(hook_of(libc::FAN_ATTRIB), HOOK_FAN_ATTRIB);
        assert_eq!(hook_of(libc::FAN_CLOSE_WRITE), HOOK_FAN_CLOSE_WRITE);
    }
}
