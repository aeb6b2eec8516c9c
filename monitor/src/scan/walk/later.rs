//! Large files last, largest first. A walk meets files in directory order, so the one that
//! ends it can be the 150 MB libLLVM, read by one thread while the other cores idle: on /usr
//! that tail was a quarter of a second of a 4.4 s `init`. Files of at least `LATER_FROM` bytes
//! are set aside while the walk goes on, then read largest first (Graham's LPT rule: the
//! cores then finish within one small file of each other).
use std::ffi::CString;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::DirFd;

/// Files at least this large (bytes) are read after the rest of the walk. On /usr, 678 files
/// of 1 MiB or more hold 5.5 of its 7.2 GB.
pub(super) const LATER_FROM: u64 = 1 << 20;
/// Files set aside at most (each holds its directory open): past this, large files are read
/// when found.
const LATER_MAX: usize = 4096;

/// A large regular file to read after the walk.
pub(super) struct LaterFile {
    /// Bytes, when it was set aside.
    pub size: u64,
    /// (device, inode): the names of one file are read one after the other, so the first
    /// read serves the rest (`hash::Links`).
    pub id: (u64, u64),
    pub parent: DirFd,
    pub name: CString,
    pub logical: Vec<u8>,
}

#[derive(Default)]
pub(super) struct Later {
    files: Mutex<Vec<LaterFile>>,
    count: AtomicUsize,
}

impl Later {
    /// The size from which a file found now is set aside: `None` once `LATER_MAX` are.
    pub fn from(&self) -> Option<u64> {
        (self.count.load(Ordering::Relaxed) < LATER_MAX).then_some(LATER_FROM)
    }

    pub fn push(&self, file: LaterFile) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.files.lock().unwrap_or_else(|p| p.into_inner()).push(file);
    }

    /// What was set aside, as groups of the names of one file, the largest group last (to be
    /// taken with `pop`).
    pub fn take_groups(&self) -> Vec<Vec<LaterFile>> {
        let mut files = std::mem::take(&mut *self.files.lock().unwrap_or_else(|p| p.into_inner()));
        self.count.store(0, Ordering::Relaxed);
        files.sort_unstable_by_key(|f| (f.size, f.id));
        let mut groups: Vec<Vec<LaterFile>> = Vec::new();
        for f in files {
            match groups.last_mut() {
                Some(g) if g[0].id == f.id && g[0].size == f.size => g.push(f),
                _ => groups.push(vec![f]),
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn groups_come_largest_last_with_the_names_of_one_file_together() {
        let dir: DirFd =
            Arc::new(rustix::fs::open(".", rustix::fs::OFlags::PATH, rustix::fs::Mode::empty()).unwrap());
        let later = Later::default();
        for (size, ino, name) in [
            (5u64, 1u64, "a"),
            (9, 2, "b"),
            (5, 3, "c"),
            (9, 2, "d"),
            (7, 4, "e"),
        ] {
            later.push(LaterFile {
                size,
                id: (1, ino),
                parent: dir.clone(),
                name: CString::new(name).unwrap(),
                logical: name.as_bytes().to_vec(),
            });
        }
        // Within a group the order is free; across groups, smallest first.
        let names: Vec<Vec<String>> = later
            .take_groups()
            .iter()
            .map(|g| {
                let mut n: Vec<String> = g.iter().map(|f| f.name.to_string_lossy().into_owned()).collect();
                n.sort();
                n
            })
            .collect();
        let mut small = vec![names[0].clone(), names[1].clone()];
        small.sort();
        assert_eq!(small, [vec!["a"], vec!["c"]]);
        assert_eq!(names[2..], [vec!["e"], vec!["b", "d"]]);
        assert_eq!(later.from(), Some(LATER_FROM));
    }

    #[test]
    fn past_the_bound_nothing_more_is_set_aside() {
        let later = Later::default();
        later.count.store(LATER_MAX, Ordering::Relaxed);
        assert_eq!(later.from(), None);
    }
}
