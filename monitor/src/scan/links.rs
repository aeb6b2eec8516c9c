//! Hard links within one scan: a file with several names is read once. /usr on a Debian host
//! holds Mesa's drivers as 13 names of one 25 MB file and git's helpers as 143 names of one
//! 3.8 MB file: 0.86 GB of the 7.2 GB its names add up to.
use std::collections::HashMap;
use std::sync::Mutex;

use rustix::fs::Stat;

use super::hash::KnownContent;

/// Inodes remembered at most (about 80 bytes each): a tree of millions of hard links (a
/// backup made with `cp -al`) is still read, link by link, past this.
const LINKS_MAX: usize = 65_536;

/// The contents hashed in this scan of files with more than one name, by (device, inode).
#[derive(Default)]
pub struct Links {
    map: Mutex<HashMap<(u64, u64), KnownContent>>,
}

impl Links {
    /// The content of the file whose open descriptor's status is `st`, if another of its names
    /// was hashed in this scan and nothing changed it since (`KnownContent::describes`).
    #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
    pub fn get(&self, st: &Stat) -> Option<KnownContent> {
        if (st.st_nlink as u64) < 2 {
            return None;
        }
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(st.st_dev as u64, st.st_ino as u64))
            .filter(|k| k.describes(st))
            .copied()
    }

    /// Remembers the content `sha256` of a file with more than one name, read whole and
    /// unchanged while read (status `st` before and after).
    #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
    pub fn put(&self, st: &Stat, sha256: [u8; 32]) {
        if (st.st_nlink as u64) < 2 {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() < LINKS_MAX {
            map.insert((st.st_dev as u64, st.st_ino as u64), KnownContent::of(st, sha256));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::hash::{Ask, hash_file_with};
    use sha2::{Digest, Sha256};
    use std::ffi::CString;
    use std::sync::atomic::AtomicBool;

    static NEVER: AtomicBool = AtomicBool::new(false);

    fn hash(dir: &std::fs::File, name: &str, links: &Links) -> crate::scan::hash::Hashed {
        let ask = Ask {
            links: Some(links),
            ..Ask::new(None, &NEVER)
        };
        hash_file_with(dir, &CString::new(name).unwrap(), &ask).unwrap()
    }

    #[test]
    fn a_second_name_of_a_file_is_not_read_until_the_file_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        std::fs::write(&a, vec![7u8; 300_000]).unwrap();
        std::fs::hard_link(&a, tmp.path().join("b")).unwrap();
        std::fs::hard_link(&a, tmp.path().join("c")).unwrap();
        std::fs::write(tmp.path().join("lone"), b"one name").unwrap();
        let dir = std::fs::File::open(tmp.path()).unwrap();
        let links = Links::default();
        let want: [u8; 32] = Sha256::digest(std::fs::read(&a).unwrap()).into();

        let first = hash(&dir, "a", &links);
        assert_eq!((first.sha256, first.hashed_bytes), (Some(want), 300_000));
        for other in ["b", "c"] {
            let h = hash(&dir, other, &links);
            assert_eq!((h.sha256, h.hashed_bytes), (Some(want), 0), "{other}: read again");
        }
        // A file with one name is never remembered.
        hash(&dir, "lone", &links);
        assert_eq!(links.map.lock().unwrap().len(), 1);

        // Written through one name: every name is read again, and shows the new content.
        std::thread::sleep(std::time::Duration::from_millis(20));
        rustix::io::pwrite(std::fs::OpenOptions::new().write(true).open(&a).unwrap(), b"x", 9).unwrap();
        let changed: [u8; 32] = Sha256::digest(std::fs::read(&a).unwrap()).into();
        let h = hash(&dir, "b", &links);
        assert_eq!((h.sha256, h.hashed_bytes), (Some(changed), 300_000));
        let h = hash(&dir, "c", &links);
        assert_eq!((h.sha256, h.hashed_bytes), (Some(changed), 0));

        // A name made another file with two names and the same size: another inode, read.
        std::fs::remove_file(tmp.path().join("c")).unwrap();
        std::fs::write(tmp.path().join("c"), vec![8u8; 300_000]).unwrap();
        std::fs::hard_link(tmp.path().join("c"), tmp.path().join("d")).unwrap();
        let h = hash(&dir, "c", &links);
        assert_eq!(h.hashed_bytes, 300_000);
        assert_ne!(h.sha256, Some(changed));
    }
}
