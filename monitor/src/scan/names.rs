//! A directory's names and inode numbers, read without a `stat` of any of them: what the
//! daemon diffs against its index to look only at what a directory's change touched.
use std::collections::HashMap;

use rustix::fs::{OFlags, ResolveFlags};
use rustix::io::Errno;

/// The names in a directory (`.` and `..` left out), each with its inode number (`d_ino` of
/// `getdents64(2)`: for a mount point, the number of the directory under it).
pub type Names = HashMap<Vec<u8>, u64>;

/// Reads the names of the directory at `path` (any length: see `long_paths`). Follows no
/// symlink anywhere on the way, and opens nothing but a directory (`O_DIRECTORY`).
///
/// Errors: the `openat2(2)` or `getdents64(2)` errno (`ENOENT` gone, `ENOTDIR` not a
/// directory any more, `ELOOP`/`EXDEV` a symlink on the way, `EACCES`).
pub fn read(path: &[u8]) -> Result<Names, Errno> {
    let fd = super::long_paths::openat2(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    let mut out = HashMap::new();
    for entry in rustix::fs::Dir::read_from(&fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.insert(name.to_vec(), entry.ino());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn names_and_inode_numbers_without_dots_and_no_symlink_followed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a"), b"x").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        let odd = std::ffi::OsStr::from_bytes(b"\xff\xfe");
        std::fs::write(d.join(odd), b"y").unwrap();
        std::os::unix::fs::symlink(d.join("sub"), d.join("link")).unwrap();
        let names = read(d.as_os_str().as_bytes()).unwrap();
        assert_eq!(names.len(), 4);
        assert_eq!(names[&b"a"[..]], std::fs::metadata(d.join("a")).unwrap().ino());
        assert_eq!(
            names[&b"\xff\xfe"[..]],
            std::fs::metadata(d.join(odd)).unwrap().ino()
        );
        assert!(names.contains_key(&b"link"[..]));
        // Through a symlink, or of something not a directory: refused.
        assert!(read(d.join("link").as_os_str().as_bytes()).is_err());
        assert_eq!(
            read(d.join("a").as_os_str().as_bytes()).err(),
            Some(Errno::NOTDIR)
        );
        assert_eq!(
            read(d.join("none").as_os_str().as_bytes()).err(),
            Some(Errno::NOENT)
        );
    }
}
