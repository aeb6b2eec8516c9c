//! The identity of each configured watch path. A watch root can be moved away and another
//! made in its place, deleted and recreated (a watched single file), or replaced by a symlink:
//! the inodes the sensor watches then no longer stand for the configured path. The daemon
//! notices it two ways: the kernel reports a change of the root's parent directory (armed like
//! any watched directory), and every tick of its loop `lstat`s each root (one system call per
//! watch) and compares what it finds with what it saw last.
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use monitor_common::InodeKey;

use crate::sensor::ebpf::kernel_dev;

/// What `lstat(2)` says a path is: device, inode and file type bits (`S_IFMT`); `None` when
/// nothing is there (or it cannot be looked at).
pub type Identity = Option<(u64, u64, u32)>;

/// The current identity of `path`, without following a symlink.
pub fn identity(path: &[u8]) -> Identity {
    #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
    crate::scan::long_paths::lstat(path).ok().map(|st| {
        (
            st.st_dev as u64,
            st.st_ino as u64,
            st.st_mode as u32 & libc::S_IFMT,
        )
    })
}

/// The sensor key of the directory holding `path`, when it can be looked at.
pub fn parent_key(path: &[u8]) -> Option<InodeKey> {
    let parent = std::path::Path::new(std::ffi::OsStr::from_bytes(path)).parent()?;
    let (dev, ino, _) = identity(parent.as_os_str().as_bytes())?;
    Some(InodeKey {
        dev: kernel_dev(dev),
        _pad: 0,
        ino,
    })
}

/// The configured watch paths and the identity each had when last looked at.
pub struct Roots {
    roots: Vec<(Vec<u8>, Identity)>,
}

impl Roots {
    /// Looks at every path now.
    pub fn new(paths: &[PathBuf]) -> Roots {
        Roots {
            roots: paths
                .iter()
                .map(|p| {
                    let b = p.as_os_str().as_bytes().to_vec();
                    let id = identity(&b);
                    (b, id)
                })
                .collect(),
        }
    }

    /// Whether `path` is a configured watch path.
    pub fn is_root(&self, path: &[u8]) -> bool {
        self.roots.iter().any(|(r, _)| r == path)
    }

    /// The configured watch paths.
    pub fn paths(&self) -> impl Iterator<Item = &[u8]> {
        self.roots.iter().map(|(r, _)| &r[..])
    }

    /// The roots whose identity changed since the last look (moved, deleted, recreated,
    /// replaced by something of another type), remembering what is there now.
    pub fn changed(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (path, id) in &mut self.roots {
            let now = identity(path);
            if now != *id {
                *id = now;
                out.push(path.clone());
            }
        }
        out
    }
}
