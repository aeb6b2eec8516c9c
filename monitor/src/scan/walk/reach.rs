//! Reaching a watch from the host's root (its parents opened component by component, never
//! through a symlink), and the entry recorded for what the walk found.
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use rustix::fs::{Mode, OFlags, Stat, openat};

use super::Walker;
use crate::baseline::entry::{Entry, FileKind};
use crate::fstype;

/// Opens the parents of a watched path from `cur` component by component, refusing symlinks;
/// returns the parent, the last component, and the pseudo-filesystem the path is on, if any.
/// Errors: why the path cannot be reached.
pub(super) fn resolve(
    mut cur: OwnedFd,
    parents: &[Vec<u8>],
    last: Vec<u8>,
) -> Result<(OwnedFd, CString, Option<&'static str>), String> {
    for c in parents {
        let name = CString::new(c.clone()).expect("no NUL in a path component");
        match openat(
            &cur,
            name.as_c_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => cur = fd,
            Err(e) => {
                let why = if e == rustix::io::Errno::NOTDIR || e == rustix::io::Errno::LOOP {
                    "is a symlink or not a directory; fimd never follows symlinks, so watch the real path"
                        .to_string()
                } else {
                    e.to_string()
                };
                return Err(format!(
                    "cannot reach the watch: component {:?} {why}",
                    String::from_utf8_lossy(c)
                ));
            }
        }
    }
    let name = CString::new(last).expect("no NUL in a path component");
    // Where the watch is opened, not only in `config check` and `init`: a baseline from
    // before this check, or a filesystem mounted over the watch since.
    let pseudo = openat(
        &cur,
        name.as_c_str(),
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
    .and_then(|fd| fstype::pseudo_fs_of(&fd));
    Ok((cur, name, pseudo))
}

impl Walker<'_> {
    /// `ids`: birth time and inode generation (see [`identity`]).
    #[allow(clippy::unnecessary_cast, clippy::too_many_arguments)] // stat field widths differ between architectures
    pub(super) fn entry_from(
        &self,
        st: &Stat,
        path: Vec<u8>,
        sha256: Option<[u8; 32]>,
        link_target: Option<Vec<u8>>,
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
        flags: Option<u32>,
        ids: (Option<i64>, Option<u32>),
    ) -> Entry {
        self.progress.entries.fetch_add(1, Ordering::Relaxed);
        let mode = st.st_mode as u32;
        Entry {
            path,
            kind: FileKind::from_mode(mode),
            size: st.st_size.max(0) as u64,
            mode: mode & 0o7777,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            nlink: st.st_nlink as u64,
            mtime_ns: st.st_mtime as i64 * 1_000_000_000 + st.st_mtime_nsec as i64,
            ctime_ns: st.st_ctime as i64 * 1_000_000_000 + st.st_ctime_nsec as i64,
            sha256,
            link_target,
            xattrs,
            flags,
            birth_ns: ids.0,
            generation: ids.1,
        }
    }
}
