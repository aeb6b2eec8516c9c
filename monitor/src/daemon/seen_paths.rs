//! The last state seen of every watched path, held as an overlay on the sealed baseline: a
//! path whose state is its baseline entry costs a flag, and only states the baseline lacks or
//! differs from are held whole (heaptrack of `fimd run` on /usr: a second full entry per path
//! was 37 MB for 138k paths). With the names each directory holds: a rescan of a listed
//! directory looks at that directory's children only, and a directory found gone takes its
//! subtree through the index, so no kernel record costs O(watched paths).
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use crate::baseline::entry::Entry;
use crate::baseline::sorted::SortedEntries;
use crate::paths::{join, name_of, parent_of};

/// The seen paths and the baseline under them (see the module doc). Paths and names are
/// bytes: Linux names need not be UTF-8.
#[derive(Default)]
pub struct SeenPaths {
    /// The sealed baseline, sorted by path: what alerts compare against.
    base: SortedEntries,
    /// One flag per baseline entry (same index): whether its path's last seen state is that
    /// entry. A path is either flagged here, or held in `differs`, or not seen.
    base_seen: Vec<bool>,
    /// The last seen states that are not their path's baseline entry (a path the baseline
    /// lacks, or a state that differs from it), found by path (held once, in the entry).
    differs: HashSet<ByPath>,
    /// The names of the seen paths each directory path holds (the last component only). A
    /// directory's set lives as long as it holds a seen name, whether or not the directory
    /// itself is seen (a watch root's parent is not).
    children: HashMap<Vec<u8>, HashSet<Box<[u8]>>>,
}

/// An entry hashed and compared by its path, so a set of them is a map by path that does not
/// hold each path a second time as a key. Boxed: the table's empty slots (up to half of it
/// after a growth) then cost 8 bytes each, not an `Entry`'s 200-odd (heaptrack of `fimd run`
/// on /usr: 58 MB of table for 138k entries inline).
struct ByPath(Box<Entry>);

impl Hash for ByPath {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `[u8]` hashes: `Borrow` requires the same hash for the borrowed form.
        self.0.path[..].hash(state);
    }
}

impl PartialEq for ByPath {
    fn eq(&self, other: &ByPath) -> bool {
        self.0.path == other.0.path
    }
}

impl Eq for ByPath {}

impl Borrow<[u8]> for ByPath {
    fn borrow(&self) -> &[u8] {
        &self.0.path
    }
}

impl SeenPaths {
    /// Nothing seen yet, over `base`.
    pub fn new(base: SortedEntries) -> SeenPaths {
        SeenPaths {
            base_seen: vec![false; base.len()],
            base,
            ..SeenPaths::default()
        }
    }

    /// The sealed baseline under the seen states.
    pub fn base(&self) -> &SortedEntries {
        &self.base
    }

    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        match self.differs.get(path) {
            Some(e) => Some(&*e.0),
            None => {
                let i = self.base.position(path).ok().filter(|&i| self.base_seen[i])?;
                Some(&self.base.as_slice()[i])
            }
        }
    }

    pub fn contains_key(&self, path: &[u8]) -> bool {
        self.differs.contains(path) || self.base.position(path).is_ok_and(|i| self.base_seen[i])
    }

    /// Seen paths (entries).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.differs.len() + self.base_seen.iter().filter(|&&s| s).count()
    }

    /// The seen states held whole (those the baseline lacks or differs from).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.differs.len()
    }

    /// Records `e` as the state of its path; returns the state it replaces.
    pub fn insert(&mut self, e: Entry) -> Option<Entry> {
        self.link(&e.path);
        let old = self.take(&e.path);
        self.place(e);
        old
    }

    /// Drops `path` (not what is below it); returns its last state.
    pub fn remove(&mut self, path: &[u8]) -> Option<Entry> {
        let old = self.take(path)?;
        if !self.children.contains_key(path) {
            self.unlink(path);
        }
        Some(old)
    }

    /// Sets the baseline's entry for `path` (`None`: drops it; `Some`: an entry whose own path is
    /// `path`), as a ledger row does; the state seen there stays what it was.
    pub fn set_base(&mut self, path: &[u8], entry: Option<Entry>) {
        debug_assert!(
            entry.as_ref().is_none_or(|e| e.path == path),
            "an entry for another path"
        );
        let seen = self.take(path);
        match (entry, self.base.position(path)) {
            (Some(e), Ok(_)) => {
                self.base.insert(e);
            }
            (Some(e), Err(i)) => {
                self.base.insert(e);
                self.base_seen.insert(i, false);
            }
            (None, Ok(i)) => {
                self.base.remove(path);
                self.base_seen.remove(i);
            }
            (None, Err(_)) => {}
        }
        if let Some(s) = seen {
            self.place(s);
        }
    }

    /// Takes `base` as the baseline (another process resealed it); every seen state stays what
    /// it was. O(entries).
    pub fn replace_base(&mut self, base: SortedEntries) {
        let old_seen = std::mem::replace(&mut self.base_seen, vec![false; base.len()]);
        let old_base = std::mem::replace(&mut self.base, base);
        for (e, seen) in old_base.into_entries().into_iter().zip(old_seen) {
            if seen {
                self.place(e);
            }
        }
        for d in std::mem::take(&mut self.differs) {
            self.place(*d.0);
        }
    }

    /// Takes the seen state of `path` out, leaving the children index as it is.
    fn take(&mut self, path: &[u8]) -> Option<Entry> {
        if let Some(d) = self.differs.take(path) {
            return Some(*d.0);
        }
        let i = self.base.position(path).ok().filter(|&i| self.base_seen[i])?;
        self.base_seen[i] = false;
        Some(self.base.as_slice()[i].clone())
    }

    /// Records `e` (its path not seen) as a flag when it is the baseline's entry, else whole.
    fn place(&mut self, e: Entry) {
        match self.base.position(&e.path) {
            Ok(i) if self.base.as_slice()[i] == e => self.base_seen[i] = true,
            _ => {
                self.differs.insert(ByPath(Box::new(e)));
            }
        }
    }

    /// Names `path` in its directory, and that directory in its own when it held no name yet:
    /// a path is reachable from every directory above it, seen or not (a watch root inside
    /// an excluded or unwatched directory).
    fn link(&mut self, path: &[u8]) {
        let mut path = path;
        while let Some(parent) = parent_of(path).filter(|p| *p != path) {
            let names = self.children.entry(parent.to_vec()).or_default();
            let first = names.is_empty();
            let name = name_of(path);
            if !names.contains(name) {
                names.insert(name.into());
            }
            if !first {
                break;
            }
            path = parent;
        }
    }

    /// Drops the name of `path` (neither seen nor holding names any more) from its directory,
    /// and that directory's from its own when it is left holding nothing and is not seen.
    fn unlink(&mut self, path: &[u8]) {
        let mut path = path.to_vec();
        while let Some(parent) = parent_of(&path).filter(|p| *p != &path[..]).map(<[u8]>::to_vec) {
            let Some(names) = self.children.get_mut(&parent) else {
                return;
            };
            names.remove(name_of(&path));
            if !names.is_empty() {
                return;
            }
            self.children.remove(&parent);
            if self.contains_key(&parent) {
                return;
            }
            path = parent;
        }
    }

    /// The seen paths directly in `dir` (any order): O(names in `dir`).
    pub fn children_of(&self, dir: &[u8]) -> Vec<Vec<u8>> {
        self.children
            .get(dir)
            .map(|names| {
                names
                    .iter()
                    .map(|n| join(dir, n))
                    .filter(|p| self.contains_key(p))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The seen paths below `dir` at any depth, `dir` itself excluded (any order): O(subtree).
    pub fn below(&self, dir: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_vec()];
        while let Some(d) = stack.pop() {
            let Some(names) = self.children.get(&d) else {
                continue;
            };
            for n in names {
                let p = join(&d, n);
                if self.children.contains_key(&p) {
                    stack.push(p.clone());
                }
                if self.contains_key(&p) {
                    out.push(p);
                }
            }
        }
        out
    }
}

/// The names a directory holds in the index, borrowed (see `SeenPaths::names_in`).
pub struct DirNames<'a>(Option<&'a HashSet<Box<[u8]>>>);

impl DirNames<'_> {
    /// Whether the directory holds `name` (a seen path, or a directory on the way to one): one
    /// lookup of the name alone, no path built.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.0.is_some_and(|names| names.contains(name))
    }

    /// Names held.
    pub fn len(&self) -> usize {
        self.0.map_or(0, HashSet::len)
    }

    /// The names held (any order).
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.0.into_iter().flatten().map(|n| &n[..])
    }
}

// Read access for a directory's diff against its listing (`rescan::diff_listing`).
impl SeenPaths {
    /// The names `dir` holds (last components: seen paths, and directories not seen on the way
    /// to one), without building a path: O(1).
    pub fn names_in(&self, dir: &[u8]) -> DirNames<'_> {
        DirNames(self.children.get(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::entry::FileKind;

    fn e(path: &[u8], kind: FileKind) -> Entry {
        Entry {
            kind,
            size: 0,
            sha256: None,
            ..Entry::test_file(path)
        }
    }

    fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        v.sort();
        v
    }

    /// A seen tree over a baseline that records half of it as seen (`/w/a`, `/w/sub`,
    /// `/w/sub/deep/c`), `/w/sub/b` otherwise, and not `/w` nor `/w/sub/deep`: the index
    /// works the same whichever way a state is held.
    fn tree() -> SeenPaths {
        let base = SortedEntries::new(vec![
            e(b"/w/a", FileKind::Regular),
            e(b"/w/sub", FileKind::Directory),
            Entry {
                size: 7,
                ..e(b"/w/sub/b", FileKind::Regular)
            },
            e(b"/w/sub/deep/c", FileKind::Regular),
        ]);
        let mut s = SeenPaths::new(base);
        for (p, k) in [
            (&b"/w"[..], FileKind::Directory),
            (b"/w/a", FileKind::Regular),
            (b"/w/sub", FileKind::Directory),
            (b"/w/sub/b", FileKind::Regular),
            (b"/w/sub/deep", FileKind::Directory),
            (b"/w/sub/deep/c", FileKind::Regular),
        ] {
            s.insert(e(p, k));
        }
        assert_eq!(
            s.held(),
            3,
            "/w, /w/sub/b and /w/sub/deep differ from the baseline"
        );
        s
    }

    #[test]
    fn states_equal_to_the_baseline_are_not_held_twice() {
        let mut s = SeenPaths::new(SortedEntries::new(vec![
            e(b"/w/a", FileKind::Regular),
            e(b"/w/b", FileKind::Regular),
        ]));
        // Nothing is seen before it is learned, even what the baseline has.
        assert!(s.get(b"/w/a").is_none() && !s.contains_key(b"/w/a"));
        assert!(s.children_of(b"/w").is_empty());
        assert!(s.insert(e(b"/w/a", FileKind::Regular)).is_none());
        assert_eq!(s.get(b"/w/a"), Some(&e(b"/w/a", FileKind::Regular)));
        assert_eq!((s.len(), s.held()), (1, 0));
        // A change is held whole; back to the baseline's state, it is a flag again.
        let grown = Entry {
            size: 5,
            ..e(b"/w/a", FileKind::Regular)
        };
        assert_eq!(s.insert(grown.clone()), Some(e(b"/w/a", FileKind::Regular)));
        assert_eq!((s.get(b"/w/a"), s.held()), (Some(&grown), 1));
        assert_eq!(s.insert(e(b"/w/a", FileKind::Regular)), Some(grown));
        assert_eq!((s.len(), s.held()), (1, 0));
        // Removed: gone from the seen states, still in the baseline.
        assert_eq!(s.remove(b"/w/a"), Some(e(b"/w/a", FileKind::Regular)));
        assert!(s.get(b"/w/a").is_none() && s.base().get(b"/w/a").is_some());
        assert!(s.children_of(b"/w").is_empty());
        assert!(s.remove(b"/w/b").is_none(), "never seen");
    }

    #[test]
    fn the_baseline_moves_under_the_seen_states_without_changing_them() {
        let a = e(b"/w/a", FileKind::Regular);
        let a2 = Entry { size: 2, ..a.clone() };
        let mut s = SeenPaths::new(SortedEntries::new(vec![a.clone()]));
        s.insert(a.clone());
        s.insert(e(b"/w/new", FileKind::Regular));
        // A ledger row advances /w/a: what was seen (the old state) stays seen, now held.
        s.set_base(b"/w/a", Some(a2.clone()));
        assert_eq!((s.get(b"/w/a"), s.held()), (Some(&a), 2));
        // The new state seen: a flag again.
        s.insert(a2.clone());
        assert_eq!(s.held(), 1);
        // A path new to the baseline that is seen as recorded; one not seen stays unseen.
        s.set_base(b"/w/new", Some(e(b"/w/new", FileKind::Regular)));
        s.set_base(b"/w/unseen", Some(e(b"/w/unseen", FileKind::Regular)));
        assert_eq!((s.len(), s.held()), (2, 0));
        assert!(!s.contains_key(b"/w/unseen"));
        // Dropped from the baseline: still seen.
        s.set_base(b"/w/a", None);
        assert_eq!((s.get(b"/w/a"), s.held()), (Some(&a2), 1));
        s.set_base(b"/w/absent", None);
        // Another baseline taken over: every seen state stays, held as it now compares.
        s.replace_base(SortedEntries::new(vec![
            a2.clone(),
            e(b"/w/unseen", FileKind::Regular),
        ]));
        assert_eq!(s.get(b"/w/a"), Some(&a2));
        assert_eq!(s.get(b"/w/new"), Some(&e(b"/w/new", FileKind::Regular)));
        assert!(!s.contains_key(b"/w/unseen"));
        assert_eq!((s.len(), s.held()), (2, 1));
        assert_eq!(
            sorted(s.children_of(b"/w")),
            vec![b"/w/a".to_vec(), b"/w/new".to_vec()]
        );
    }

    #[test]
    fn created_paths_are_children_of_their_directory() {
        let mut s = tree();
        assert_eq!(
            sorted(s.children_of(b"/w")),
            vec![b"/w/a".to_vec(), b"/w/sub".to_vec()]
        );
        s.insert(e(b"/w/new", FileKind::Regular));
        // Learned again (a change): still one child.
        s.insert(e(b"/w/a", FileKind::Regular));
        assert_eq!(s.children_of(b"/w").len(), 3);
        // The watch root's parent holds the root, though it is not seen itself.
        assert_eq!(s.children_of(b"/"), vec![b"/w".to_vec()]);
        assert!(s.children_of(b"/w/a").is_empty());
    }

    #[test]
    fn deleted_paths_leave_their_directory_and_empty_sets_go() {
        let mut s = tree();
        assert!(s.remove(b"/w/sub/deep/c").is_some());
        assert!(s.children_of(b"/w/sub/deep").is_empty());
        assert!(!s.children.contains_key(&b"/w/sub/deep"[..]));
        assert!(s.remove(b"/w/sub/deep/c").is_none());
        assert_eq!(
            sorted(s.children_of(b"/w/sub")),
            vec![b"/w/sub/b".to_vec(), b"/w/sub/deep".to_vec()]
        );
    }

    #[test]
    fn renames_within_and_across_directories_move_the_name() {
        let mut s = tree();
        // Within /w: a -> a2.
        let old = s.remove(b"/w/a").unwrap();
        s.insert(Entry {
            path: b"/w/a2".to_vec(),
            ..old
        });
        assert_eq!(
            sorted(s.children_of(b"/w")),
            vec![b"/w/a2".to_vec(), b"/w/sub".to_vec()]
        );
        // Across: /w/sub/b -> /w/sub/deep/b.
        let old = s.remove(b"/w/sub/b").unwrap();
        s.insert(Entry {
            path: b"/w/sub/deep/b".to_vec(),
            ..old
        });
        assert_eq!(s.children_of(b"/w/sub"), vec![b"/w/sub/deep".to_vec()]);
        assert_eq!(
            sorted(s.children_of(b"/w/sub/deep")),
            vec![b"/w/sub/deep/b".to_vec(), b"/w/sub/deep/c".to_vec()]
        );
        assert_eq!(s.len(), 6);
    }

    #[test]
    fn a_directory_reaches_its_whole_subtree_and_loses_it_when_removed() {
        let mut s = tree();
        assert_eq!(
            sorted(s.below(b"/w/sub")),
            vec![
                b"/w/sub/b".to_vec(),
                b"/w/sub/deep".to_vec(),
                b"/w/sub/deep/c".to_vec()
            ]
        );
        assert_eq!(s.below(b"/w").len(), 5);
        for p in s.below(b"/w/sub") {
            s.remove(&p);
        }
        s.remove(b"/w/sub");
        assert_eq!(s.below(b"/w"), vec![b"/w/a".to_vec()]);
        assert!(s.below(b"/w/sub").is_empty());
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_path_under_an_unseen_directory_is_reached_and_its_links_go_with_it() {
        let mut s = tree();
        // /w/skipped is not seen (excluded), a watch root below it is.
        s.insert(e(b"/w/skipped/root/f", FileKind::Regular));
        assert!(s.children_of(b"/w").iter().all(|p| p != b"/w/skipped"));
        assert!(s.below(b"/w").contains(&b"/w/skipped/root/f".to_vec()));
        s.remove(b"/w/skipped/root/f");
        assert!(!s.children.contains_key(&b"/w/skipped"[..]));
        assert!(!s.children.contains_key(&b"/w/skipped/root"[..]));
        assert_eq!(
            sorted(s.children_of(b"/w")),
            vec![b"/w/a".to_vec(), b"/w/sub".to_vec()]
        );
        // A seen directory removed before its children stays linked while it holds them.
        s.remove(b"/w/sub");
        assert!(s.below(b"/w").contains(&b"/w/sub/deep/c".to_vec()));
        for p in [&b"/w/sub/b"[..], b"/w/sub/deep/c", b"/w/sub/deep"] {
            s.remove(p);
        }
        assert_eq!(s.children.len(), 2, "only / and /w hold names now");
    }

    #[test]
    fn names_that_are_not_utf8_are_kept_as_bytes() {
        let mut s = tree();
        let odd = b"/w/sub/\xff\xfe name";
        let dir = b"/w/\x80dir";
        s.insert(e(odd, FileKind::Regular));
        s.insert(e(dir, FileKind::Directory));
        s.insert(e(b"/w/\x80dir/\xc3", FileKind::Regular));
        assert!(s.children_of(b"/w/sub").contains(&odd.to_vec()));
        assert_eq!(s.below(dir), vec![b"/w/\x80dir/\xc3".to_vec()]);
        s.remove(odd);
        assert!(!s.children_of(b"/w/sub").contains(&odd.to_vec()));
        assert!(s.below(b"/w").contains(&b"/w/\x80dir/\xc3".to_vec()));
    }
}
