//! The fanotify sensor: for hosts where no eBPF program can load (no BTF, no CAP_BPF, lockdown,
//! BPF disabled). It sees what fsnotify sees, with the writer's pid.
//!
//! - **Marks.** An inode mark with `FAN_EVENT_ON_CHILD` on every watched directory (and on a
//!   watch root that is a file), in a `FAN_CLASS_NOTIF` group reporting `FAN_REPORT_FID` and
//!   `FAN_REPORT_DFID_NAME` (Linux 5.9; fanotify(7)), like inotify's directory watches. Writers
//!   of files outside the watches pay nothing: a filesystem mark, tried first, made every
//!   write on the filesystem an event (`cargo xtask bench realtime`: +202% wall time for an
//!   unwatched writer). Events name objects by file handle; `open_by_handle_at(2)` plus `fstat`
//!   turns a handle into the `InodeKey` the daemon watches, cached per handle.
//! - **Not seen through marks:** a write through a hard link whose other name lies outside
//!   every watch (the event goes to that name's directory). The full comparison covers it.
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

use monitor_common::{
    ChangeRecord, HOOK_FAN_ATTRIB, HOOK_FAN_CLOSE_WRITE, HOOK_FAN_CREATE, HOOK_FAN_DELETE, HOOK_FAN_MODIFY,
    HOOK_FAN_MOVE, InodeKey, VIOLATION_UNSEEN,
};

use super::ebpf::kernel_dev;
use super::mappings::{MAPS_PERIOD, MappedFiles, Writer};

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
            Some(libc::EPERM) => " (the fanotify sensor needs CAP_SYS_ADMIN)",
            _ => "",
        }
    )]
    Mark { path: PathBuf, error: std::io::Error },
}

/// The loaded fanotify sensor.
pub struct FanotifySensor {
    fd: OwnedFd,
    /// A directory on each filesystem with a mark, by fsid: `open_by_handle_at`'s mount_fd.
    mounts: HashMap<[i32; 2], OwnedFd>,
    /// Watched inodes and their `WATCH_*` flags.
    watched: HashMap<InodeKey, u32>,
    /// Watched inodes whose next change is reported (the eBPF sensor's ARMED in userspace).
    armed: HashSet<InodeKey>,
    /// fsid + handle type + handle bytes → inode.
    handles: HashMap<Vec<u8>, InodeKey>,
    /// Watched files mapped shared and writable, looked for in /proc.
    maps: MappedFiles,
    lost: u64,
    pidfd: bool,
    /// Watch roots, which are marked even when they are files.
    roots: HashSet<Vec<u8>>,
    buf: Vec<u8>,
}

impl FanotifySensor {
    /// Creates the group and marks each of `roots` (the rest is marked as the daemon watches
    /// it), so a sensor that can watch nothing fails here, at start.
    ///
    /// Errors: `Init` when fanotify is unavailable or unprivileged; `Mark` when no root can be
    /// marked (e.g. ENODEV: its filesystem reports no fsid).
    pub fn load(roots: &[PathBuf]) -> Result<FanotifySensor, FanotifyError> {
        let base = libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_REPORT_FID
            | libc::FAN_REPORT_DFID_NAME
            // One mark per watched directory: more than the default 8192 per user.
            | libc::FAN_UNLIMITED_MARKS;
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
            maps: MappedFiles::default(),
            lost: 0,
            pidfd,
            roots: roots.iter().map(|r| r.as_os_str().as_bytes().to_vec()).collect(),
            buf: vec![0; READ_BYTES],
        };
        // A root that cannot be marked (e.g. tmpfs before 5.13: no fsid) is reported by the
        // daemon when it learns it (`watch_failed`); only a sensor that can mark no root at all
        // is refused here.
        let mut first_error = None;
        let mut marked = 0;
        for root in roots {
            let is_dir = std::fs::symlink_metadata(root).is_ok_and(|m| m.is_dir());
            match s.mark(root.as_os_str().as_bytes(), is_dir) {
                Ok(()) => marked += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if marked == 0 => Err(e),
            _ => Ok(s),
        }
    }

    /// Puts an inode mark on `path` (never following a symlink): with `FAN_EVENT_ON_CHILD` for a
    /// directory, so its entries' events come too. Keeps a directory of each new filesystem for
    /// `open_by_handle_at`.
    fn mark(&mut self, path: &[u8], is_dir: bool) -> Result<(), FanotifyError> {
        let err = |error| FanotifyError::Mark {
            path: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
            error,
        };
        let c = CString::new(path).map_err(|_| err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
        let mask = if is_dir {
            MASK | libc::FAN_EVENT_ON_CHILD
        } else {
            MASK
        };
        // A path the kernel does not take whole (PATH_MAX) is marked relative to its parent,
        // opened one component at a time, as the scan sees it.
        let (dirfd, name) = if path.len() > crate::scan::long_paths::PATH_MAX_BYTES {
            let (dir, last) = crate::scan::long_paths::parent(path)
                .map_err(|e| err(std::io::Error::from_raw_os_error(e.raw_os_error())))?;
            let last =
                CString::new(last).map_err(|_| err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
            (Some(dir), last)
        } else {
            (None, c.clone())
        };
        // SAFETY: the group descriptor is open, `dirfd` (when set) an open directory and `name`
        // a valid path; FAN_MARK_DONT_FOLLOW marks a symlink itself, never its target.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_DONT_FOLLOW,
                mask,
                dirfd.as_ref().map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd),
                name.as_ptr(),
            )
        };
        if rc < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // open_by_handle_at refuses an O_PATH mount_fd: a directory opened for reading (this
        // one, or the one holding a file root). O_NOFOLLOW: never through a symlink.
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
        let parent = Path::new(std::ffi::OsStr::from_bytes(path))
            .parent()
            .and_then(|p| CString::new(p.as_os_str().as_bytes()).ok());
        let dir = if is_dir {
            open_dir(&c)
        } else {
            parent.as_ref().and_then(open_dir)
        };
        if let Some(dir) = dir
            && let Ok(fsid) = fsid_of(dir.as_fd())
            && !self.mounts.contains_key(&fsid)
        {
            // Since 6.5 fanotify marks filesystems whose handles cannot be opened again (ramfs,
            // …): every event there would name an unknown file. Refuse such a filesystem here.
            if let Err(error) = decodable(&dir) {
                // SAFETY: as above; removes the mark just added.
                unsafe {
                    libc::fanotify_mark(
                        self.fd.as_raw_fd(),
                        libc::FAN_MARK_REMOVE | libc::FAN_MARK_DONT_FOLLOW,
                        mask,
                        dirfd.as_ref().map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd),
                        name.as_ptr(),
                    )
                };
                return Err(err(error));
            }
            self.mounts.insert(fsid, dir);
        }
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
        // Stores through shared writable mappings raise no fsnotify event: every watched file
        // is a candidate.
        for key in self.maps.poll(&self.watched, out).unwrap_or_default() {
            self.armed.remove(&key);
        }
    }

    fn watch(&mut self, key: InodeKey, path: &[u8], is_dir: bool) -> Result<(), super::SensorError> {
        let flags = if is_dir { monitor_common::WATCH_IS_DIR } else { 0 };
        let new = self.watched.insert(key, flags).is_none();
        self.armed.insert(key);
        // A file's events come through its directory's mark; a root that is a file has its own.
        if new && (is_dir || self.roots.contains(path)) {
            match self.mark(path, is_dir) {
                Ok(()) => {}
                // Gone since the scan saw it: its parent's event tells the daemon.
                Err(FanotifyError::Mark { error, .. })
                    if matches!(
                        error.raw_os_error(),
                        Some(libc::ENOENT | libc::ENOTDIR | libc::ESTALE)
                    ) => {}
                Err(e) => {
                    self.watched.remove(&key);
                    self.armed.remove(&key);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    fn unwatch(&mut self, key: &InodeKey) {
        self.watched.remove(key);
        self.armed.remove(key);
        self.maps.forget(key);
    }

    fn watch_filesystem(&mut self, path: &Path) -> Result<(), super::SensorError> {
        // Inode marks: the root directory now there is marked like any directory (also when
        // the daemon learns it); marking it now makes a failure show at once.
        Ok(self.mark(path.as_os_str().as_bytes(), true)?)
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

    fn maps_blocked(&self) -> (usize, u64) {
        self.maps.blocked()
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

/// Whether file handles of the filesystem holding `dir` can be opened again: encodes the
/// directory's own handle (name_to_handle_at(2), AT_EMPTY_PATH) and opens it by handle.
fn decodable(dir: &OwnedFd) -> Result<(), std::io::Error> {
    // struct file_handle with room for MAX_HANDLE_SZ (128) bytes of handle.
    let mut fh = [0u32; 2 + 32];
    fh[0] = 128;
    let mut mount_id: libc::c_int = 0;
    // SAFETY: fh is a file_handle with handle_bytes set to the room it has; "" with
    // AT_EMPTY_PATH names `dir` itself.
    let rc = unsafe {
        libc::name_to_handle_at(
            dir.as_raw_fd(),
            c"".as_ptr(),
            fh.as_mut_ptr().cast::<libc::file_handle>(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fh now holds the handle the kernel wrote; O_PATH opens no data.
    let raw = unsafe {
        libc::open_by_handle_at(
            dir.as_raw_fd(),
            fh.as_mut_ptr().cast::<libc::file_handle>(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor open_by_handle_at just returned.
    drop(unsafe { OwnedFd::from_raw_fd(raw) });
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_telling_hook_is_named() {
        assert_eq!(hook_of(libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE), HOOK_FAN_MODIFY);
        assert_eq!(hook_of(libc::FAN_CREATE | libc::FAN_ONDIR), HOOK_FAN_CREATE);
        assert_eq!(hook_of(libc::FAN_MOVED_TO), HOOK_FAN_MOVE);
        assert_eq!(hook_of(libc::FAN_ATTRIB), HOOK_FAN_ATTRIB);
        assert_eq!(hook_of(libc::FAN_CLOSE_WRITE), HOOK_FAN_CLOSE_WRITE);
    }
}
