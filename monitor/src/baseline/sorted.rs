//! The baseline's entries held in memory once, sorted by path: found by binary search, walked
//! in order by a full comparison without a copy. A hash map by path would hold each path twice
//! (key and entry) and its empty slots (up to half the table after a growth) cost an entry's
//! 200 bytes each (heaptrack of `fimd run` on /usr, 138k entries: 59 MB of table).
use super::entry::Entry;
use crate::paths::parent_of;

/// Entries sorted by path, one per path (see the module doc).
#[derive(Debug, Default, Clone)]
pub struct SortedEntries {
    /// Shared with a full comparison running off the daemon's loop (`shared`); a change made
    /// meanwhile copies them first (copy on write), so the comparison sees the baseline it began
    /// with.
    entries: std::sync::Arc<Vec<Entry>>,
}

impl SortedEntries {
    /// Takes `entries` in any order; of two with the same path, the later one stays (as rows
    /// applied in order).
    pub fn new(mut entries: Vec<Entry>) -> SortedEntries {
        // Stable: the later of two equal paths stays last, and `dedup_by` keeps the first of a
        // run, so reverse each run's choice by swapping it in.
        // Loaded baselines come sorted (`ORDER BY path`): no sort, no scratch buffer.
        if !entries.is_sorted_by(|a, b| a.path < b.path) {
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            entries.dedup_by(|later, earlier| {
                let same = later.path == earlier.path;
                if same {
                    std::mem::swap(later, earlier);
                }
                same
            });
        }
        entries.shrink_to_fit();
        SortedEntries {
            entries: std::sync::Arc::new(entries),
        }
    }

    /// Where `path` is (`Ok`) or would go (`Err`): O(log entries).
    pub fn position(&self, path: &[u8]) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| e.path.as_slice().cmp(path))
    }

    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        self.position(path).ok().map(|i| &self.entries[i])
    }

    pub fn contains_key(&self, path: &[u8]) -> bool {
        self.position(path).is_ok()
    }

    /// Records `e` for its path; returns what it replaces. A path new to the baseline moves the
    /// entries after it (a `memmove`, ~200 bytes an entry): new baseline paths come only from
    /// ledger rows (a log created or rotated) and followed baselines, never per event.
    pub fn insert(&mut self, e: Entry) -> Option<Entry> {
        match self.position(&e.path) {
            Ok(i) => Some(std::mem::replace(
                &mut std::sync::Arc::make_mut(&mut self.entries)[i],
                e,
            )),
            Err(i) => {
                std::sync::Arc::make_mut(&mut self.entries).insert(i, e);
                None
            }
        }
    }

    /// Drops `path`; returns its entry.
    pub fn remove(&mut self, path: &[u8]) -> Option<Entry> {
        self.position(path)
            .ok()
            .map(|i| std::sync::Arc::make_mut(&mut self.entries).remove(i))
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in path order.
    /// The entries, shared (no copy): what a comparison off the loop reads while this one
    /// may change (copy on write).
    pub fn shared(&self) -> std::sync::Arc<Vec<Entry>> {
        self.entries.clone()
    }

    pub fn as_slice(&self) -> &[Entry] {
        &self.entries
    }

    /// The entries in path order, taken.
    pub fn into_entries(self) -> Vec<Entry> {
        std::sync::Arc::try_unwrap(self.entries).unwrap_or_else(|shared| (*shared).clone())
    }

    /// The entries in path order.
    pub fn values(&self) -> std::slice::Iter<'_, Entry> {
        self.entries.iter()
    }

    /// The entries directly in directory `dir` (`/` for the root), in path order: a range of
    /// the sorted entries (the directory's subtree, whose paths all start with `dir/`), so the
    /// cost is the subtree's, not the baseline's.
    pub fn children(&self, dir: &[u8]) -> impl Iterator<Item = &Entry> + '_ {
        let dir = dir.to_vec();
        let prefix: Vec<u8> = if dir == b"/" {
            b"/".to_vec()
        } else {
            [&dir[..], b"/"].concat()
        };
        let from = self
            .entries
            .partition_point(|e| e.path.as_slice() < prefix.as_slice());
        self.entries[from..]
            .iter()
            .take_while(move |e| e.path.starts_with(&prefix))
            .filter(move |e| parent_of(&e.path) == Some(dir.as_slice()))
    }
}

impl FromIterator<Entry> for SortedEntries {
    fn from_iter<I: IntoIterator<Item = Entry>>(iter: I) -> SortedEntries {
        SortedEntries::new(iter.into_iter().collect())
    }
}

/// Baseline entries found by path, whatever holds them: the daemon's `SortedEntries`, or the
/// map of append-only entries `check` builds.
pub trait EntriesByPath {
    fn get(&self, path: &[u8]) -> Option<&Entry>;
    /// The entries directly in directory `dir` (an absolute path without a trailing slash;
    /// `/` for the root), any order. The rotation review asks this for each rotated file, so
    /// it costs the directory's subtree in the daemon's sorted baseline, not the baseline.
    fn children<'a>(&'a self, dir: &[u8]) -> Box<dyn Iterator<Item = &'a Entry> + 'a>;
}

impl EntriesByPath for SortedEntries {
    fn get(&self, path: &[u8]) -> Option<&Entry> {
        SortedEntries::get(self, path)
    }

    fn children<'a>(&'a self, dir: &[u8]) -> Box<dyn Iterator<Item = &'a Entry> + 'a> {
        Box::new(SortedEntries::children(self, dir))
    }
}

impl EntriesByPath for std::collections::HashMap<Vec<u8>, Entry> {
    fn get(&self, path: &[u8]) -> Option<&Entry> {
        std::collections::HashMap::get(self, path)
    }

    fn children<'a>(&'a self, dir: &[u8]) -> Box<dyn Iterator<Item = &'a Entry> + 'a> {
        let dir = dir.to_vec();
        Box::new(
            std::collections::HashMap::values(self)
                .filter(move |e| parent_of(&e.path) == Some(dir.as_slice())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(s: &SortedEntries) -> Vec<&[u8]> {
        s.values().map(|e| &e.path[..]).collect()
    }

    /// A directory's children, asked of both holders: not its grandchildren, not a sibling
    /// directory sharing its name as a prefix (`/d2`, `/d-x`, `/d.log` sort around `/d/`), and
    /// names that are not UTF-8.
    #[test]
    fn children_are_the_direct_entries_of_a_directory() {
        let all: Vec<Entry> = [
            &b"/d"[..],
            b"/d-x",
            b"/d.log",
            b"/d/a",
            b"/d/sub",
            b"/d/sub/deep",
            b"/d/\xfe",
            b"/d2",
            b"/d2/a",
            b"/top",
        ]
        .into_iter()
        .map(Entry::test_file)
        .collect();
        let sorted = SortedEntries::new(all.clone());
        let map: std::collections::HashMap<Vec<u8>, Entry> =
            all.into_iter().map(|e| (e.path.clone(), e)).collect();
        let holders: [&dyn EntriesByPath; 2] = [&sorted, &map];
        for h in holders {
            let of = |dir: &[u8]| {
                let mut v: Vec<Vec<u8>> = h.children(dir).map(|e| e.path.clone()).collect();
                v.sort();
                v
            };
            assert_eq!(
                of(b"/d"),
                vec![b"/d/a".to_vec(), b"/d/sub".to_vec(), b"/d/\xfe".to_vec()]
            );
            assert_eq!(of(b"/d/sub"), vec![b"/d/sub/deep".to_vec()]);
            assert_eq!(of(b"/d2"), vec![b"/d2/a".to_vec()]);
            assert_eq!(
                of(b"/"),
                vec![
                    b"/d".to_vec(),
                    b"/d-x".to_vec(),
                    b"/d.log".to_vec(),
                    b"/d2".to_vec(),
                    b"/top".to_vec(),
                ]
            );
            assert!(of(b"/d/a").is_empty());
            assert!(of(b"/none").is_empty());
        }
    }

    #[test]
    fn entries_stay_sorted_and_one_per_path() {
        let mut s = SortedEntries::new(vec![
            Entry::test_file(b"/w/b"),
            Entry::test_file(b"/w/\xff"),
            Entry {
                size: 1,
                ..Entry::test_file(b"/w/a")
            },
            Entry {
                size: 2,
                ..Entry::test_file(b"/w/a")
            },
        ]);
        assert_eq!(paths(&s), vec![&b"/w/a"[..], b"/w/b", b"/w/\xff"]);
        // The later of two rows for one path stays.
        assert_eq!(s.get(b"/w/a").map(|e| e.size), Some(2));
        assert!(s.insert(Entry::test_file(b"/w/a/x")).is_none());
        assert!(s.insert(Entry::test_file(b"/")).is_none());
        assert_eq!(
            s.insert(Entry {
                size: 9,
                ..Entry::test_file(b"/w/b")
            })
            .map(|e| e.size),
            Some(1)
        );
        assert_eq!(
            paths(&s),
            vec![&b"/"[..], b"/w/a", b"/w/a/x", b"/w/b", b"/w/\xff"]
        );
        assert_eq!(s.get(b"/w/b").map(|e| e.size), Some(9));
        assert!(s.remove(b"/w/a/x").is_some());
        assert!(s.remove(b"/w/a/x").is_none());
        assert!(!s.contains_key(b"/w/a/x"));
        assert_eq!(s.len(), 4);
        assert!(s.get(b"/w/c").is_none());
    }
}
