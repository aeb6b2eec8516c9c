//! Looking at a path of any length, as the scan does. A path of `PATH_MAX` (4096) bytes or
//! more makes every system call that takes it whole fail with `ENAMETOOLONG`, while the scan
//! opens each directory relative to its parent and sees the file. The daemon's own looks
//! (is it still there, wait for a write in progress) walk the same way, so nothing a path's
//! length allows `check` to see is invisible to `run`.
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

/// The longest path (bytes, without its NUL) the kernel takes whole: `PATH_MAX` - 1.
pub const PATH_MAX_BYTES: usize = 4095;

/// The directory holding `path`'s last component, opened `O_PATH` relative to `/` one
/// component at a time without following a symlink, and that last component. Each
/// component is at most `NAME_MAX` bytes, so any depth works.
pub fn parent(path: &[u8]) -> Result<(OwnedFd, &[u8]), Errno> {
    let root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    parent_at(root, path)
}

/// As [`parent`], for `path` relative to the directory `dir` (a leading `/` is ignored).
pub fn parent_at(dir: OwnedFd, path: &[u8]) -> Result<(OwnedFd, &[u8]), Errno> {
    let comps: Vec<&[u8]> = path.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
    let (last, parents) = comps.split_last().ok_or(Errno::INVAL)?;
    let mut dir = dir;
    for c in parents {
        dir = rustix::fs::openat(
            &dir,
            os(c),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    Ok((dir, last))
}

/// `lstat(2)` of `path`, whatever its length: whole when the kernel takes it, else relative
/// to its parent opened by [`parent`] (which follows no symlink on the way).
pub fn lstat(path: &[u8]) -> Result<Stat, Errno> {
    if path.len() <= PATH_MAX_BYTES {
        return rustix::fs::statat(rustix::fs::CWD, os(path), AtFlags::SYMLINK_NOFOLLOW);
    }
    let (dir, last) = parent(path)?;
    rustix::fs::statat(&dir, os(last), AtFlags::SYMLINK_NOFOLLOW)
}

/// Opens `path` with `openat2(2)`, whatever its length: whole when the kernel takes it, else
/// its last component relative to its parent opened by [`parent`].
pub fn openat2(path: &[u8], flags: OFlags, resolve: ResolveFlags) -> Result<OwnedFd, Errno> {
    if path.len() <= PATH_MAX_BYTES {
        return rustix::fs::openat2(rustix::fs::CWD, os(path), flags, Mode::empty(), resolve);
    }
    let (dir, last) = parent(path)?;
    rustix::fs::openat2(&dir, os(last), flags, Mode::empty(), resolve)
}

fn os(b: &[u8]) -> &std::ffi::OsStr {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_longer_than_path_max_is_seen_relative_to_its_parent() {
        let top = tempfile::tempdir().unwrap();
        let mut p = top.path().to_path_buf();
        let name = "d".repeat(200);
        while p.as_os_str().len() <= 4200 {
            p.push(&name);
            // create_dir goes whole: make it relative to the parent instead.
            let (dir, last) = parent(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).unwrap();
            rustix::fs::mkdirat(&dir, os(last), Mode::from_raw_mode(0o755)).unwrap();
        }
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec();
        assert_eq!(
            rustix::fs::statat(rustix::fs::CWD, os(&bytes), AtFlags::SYMLINK_NOFOLLOW).err(),
            Some(Errno::NAMETOOLONG)
        );
        let st = lstat(&bytes).unwrap();
        assert_eq!(
            rustix::fs::FileType::from_raw_mode(st.st_mode),
            rustix::fs::FileType::Directory
        );
        let mut missing = bytes.clone();
        missing.extend_from_slice(b"/nothing");
        assert_eq!(lstat(&missing).err(), Some(Errno::NOENT));
        // The temporary directory cannot remove what it cannot reach by path either.
        let _ = std::process::Command::new("rm")
            .arg("-rf")
            .arg(top.path())
            .status();
    }
}
