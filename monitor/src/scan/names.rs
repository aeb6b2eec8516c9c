//! A directory's names and inode numbers, read without a `stat` of any of them: what the
//! daemon diffs against its index to look only at what a directory's change touched.
use rustix::fs::{OFlags, ResolveFlags};
use rustix::io::Errno;

/// The names in a directory (`.` and `..` left out), each with its inode number (`d_ino` of
/// `getdents64(2)`: for a mount point, the number of the directory under it), in the order
/// the directory gave them. The names share one buffer: a listing of 10,000 names costs a few
/// allocations (the buffers growing), not one per name.
#[derive(Debug, Default, Clone)]
pub struct Listing {
    /// Every name's bytes, one after the other.
    bytes: Vec<u8>,
    /// Per name: its end in `bytes` (it starts where the previous one ends) and its inode number.
    ends: Vec<(usize, u64)>,
}

impl Listing {
    /// Adds `name` with inode number `ino`.
    pub fn push(&mut self, name: &[u8], ino: u64) {
        self.bytes.extend_from_slice(name);
        self.ends.push((self.bytes.len(), ino));
    }

    /// The names (bytes, not UTF-8 necessarily) with their inode numbers.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|(end, _)| *end));
        starts
            .zip(&self.ends)
            .map(|(start, (end, ino))| (&self.bytes[start..*end], *ino))
    }

    /// Names listed.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the directory held no name.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl<'a> FromIterator<(&'a [u8], u64)> for Listing {
    fn from_iter<I: IntoIterator<Item = (&'a [u8], u64)>>(iter: I) -> Self {
        let mut out = Listing::default();
        for (name, ino) in iter {
            out.push(name, ino);
        }
        out
    }
}

/// Reads the names of the directory at `path` (any length: see `long_paths`). Follows no
/// symlink anywhere on the way, and opens nothing but a directory (`O_DIRECTORY`).
///
/// Errors: the `openat2(2)` or `getdents64(2)` errno (`ENOENT` gone, `ENOTDIR` not a
/// directory any more, `ELOOP`/`EXDEV` a symlink on the way, `EACCES`).
pub fn read(path: &[u8]) -> Result<Listing, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    // O_NOATIME, as the walk opens directories: a listing does not write the directory's inode
    // (relatime would, after every change of it: fs/inode.c, relatime_need_update). Only the
    // owner or CAP_FOWNER may ask for it (EPERM otherwise): then without.
    let fd = match super::long_paths::openat2(path, flags | OFlags::NOATIME, resolve) {
        Err(Errno::PERM) => super::long_paths::openat2(path, flags, resolve),
        other => other,
    }?;
    let mut out = Listing::default();
    for entry in rustix::fs::Dir::read_from(&fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push(name, entry.ino());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
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
        let listing = read(d.as_os_str().as_bytes()).unwrap();
        assert_eq!(listing.len(), 4);
        let names: HashMap<&[u8], u64> = listing.iter().collect();
        assert_eq!(names.len(), 4, "each name once");
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
        let empty = tempfile::tempdir().unwrap();
        assert!(read(empty.path().as_os_str().as_bytes()).unwrap().is_empty());
    }

    #[test]
    fn a_listing_gives_back_each_name_and_number_in_order() {
        let listing: Listing = [(&b"a"[..], 1), (b"", 2), (b"\xff\xfe long name", 3), (b"b", 4)]
            .into_iter()
            .collect();
        let back: Vec<(&[u8], u64)> = listing.iter().collect();
        assert_eq!(
            back,
            vec![(&b"a"[..], 1), (b"", 2), (b"\xff\xfe long name", 3), (b"b", 4)]
        );
        assert_eq!(listing.len(), 4);
    }
}
