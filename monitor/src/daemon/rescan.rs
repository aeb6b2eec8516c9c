//! The pure decisions of a rescan: what a listing found against what was seen before, which
//! paths are gone, which new directories must be read whole, which paths are new and which
//! changed. The scanning and the judging stay with the loop; nothing here touches the
//! filesystem or the kernel.
use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::modifier::Modifier;
use super::seen_paths::SeenPaths;
use crate::baseline::entry::{Entry, FileKind};
use crate::compare::{Mode, diff, is_under};
use crate::paths::{join, parent_of};
use crate::scan::names::Listing;

/// Depth of a target scanned whole (`scan::start_at`).
pub const WHOLE: u32 = u32::MAX;

/// The paths seen before that a rescan found gone: those missing from a listed directory that
/// still exists (or is a watch root), everything missing below a subtree scanned whole, watch
/// roots found missing themselves, and whatever was seen below a directory found gone.
///
/// `listed`: the directories listed, with their depth (`WHOLE` for a subtree). A listed
/// directory that is itself gone says nothing of its entries: its parent's listing (which
/// changed too) finds it gone, and its entries with it, in one decision. `diffs`: the
/// directories of `listed` whose names were read (`diff_listing`): what they miss is all
/// that can be gone from them, O(missing) rather than O(entries).
pub fn gone(
    seen: &SeenPaths,
    found: &HashMap<Vec<u8>, Entry>,
    diffs: &HashMap<Vec<u8>, DirDiff>,
    listed: &[(Vec<u8>, u32)],
    missing_roots: &[&[u8]],
    is_root: impl Fn(&[u8]) -> bool,
) -> Vec<Vec<u8>> {
    // Only where a listing reaches, through the index: O(children) for a listed directory,
    // O(subtree) for one scanned whole, never O(seen).
    let mut gone: Vec<Vec<u8>> = Vec::new();
    let mut taken: HashSet<Vec<u8>> = HashSet::new();
    // A seen name its directory's listing still holds (not missing) is there, looked at or not.
    let listed_name = |p: &[u8]| {
        parent_of(p)
            .and_then(|d| diffs.get(d))
            .is_some_and(|diff| diff.missing.binary_search_by(|m| m[..].cmp(p)).is_err())
    };
    let mut take = |p: Vec<u8>, gone: &mut Vec<Vec<u8>>| {
        if !found.contains_key(&p) && !listed_name(&p) && seen.contains_key(&p) && taken.insert(p.clone()) {
            gone.push(p);
        }
    };
    for root in missing_roots {
        take(root.to_vec(), &mut gone);
    }
    for (dir, depth) in listed.iter().filter(|(d, _)| found.contains_key(d) || is_root(d)) {
        let reached = if *depth == WHOLE {
            seen.below(dir)
        } else if let Some(diff) = diffs.get(dir) {
            diff.missing.clone()
        } else {
            seen.children_of(dir)
        };
        for p in reached {
            take(p, &mut gone);
        }
    }
    // What was below a directory that is gone is gone from there too.
    let gone_dirs: Vec<Vec<u8>> = gone
        .iter()
        .filter(|p| seen.get(p).is_some_and(|e| e.kind == FileKind::Directory))
        .cloned()
        .collect();
    for d in gone_dirs {
        for p in seen.below(&d) {
            take(p, &mut gone);
        }
    }
    gone
}

/// What a directory's listing shows against the index (`diff_listing`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DirDiff {
    /// Paths to look at, sorted: names not seen before, and names whose inode number is not
    /// the one seen (replaced, renamed over, a mount point). The other names are the same
    /// inodes as before, armed each on its own: their own records report their changes.
    pub look: Vec<Vec<u8>>,
    /// Paths seen before that the listing no longer holds, sorted: for `gone`.
    pub missing: Vec<Vec<u8>>,
}

/// Diffs the `listing` of `dir` (read without a `stat`) against what was seen in it, by name
/// bytes. A path is built only for a name that changed: the unchanged ones cost one lookup
/// each in a reused buffer, and no allocation. The names seen but no longer listed are found
/// without a second pass when every name the index holds for `dir` was listed (the count
/// matches, as when files are only created); otherwise by one pass over the index's names.
pub fn diff_listing(seen: &SeenPaths, dir: &[u8], listing: &Listing) -> DirDiff {
    let held = seen.names_in(dir);
    let mut path = join(dir, b"");
    let base = path.len();
    let (mut matched, mut look) = (0usize, Vec::new());
    for (name, ino) in listing.iter() {
        path.truncate(base);
        path.extend_from_slice(name);
        match seen.get(&path) {
            Some(e) => {
                matched += 1;
                if e.ino != ino {
                    look.push(path.clone());
                }
            }
            // Not seen: new, or a directory the index holds only on the way to a seen path.
            None => {
                matched += usize::from(held.contains(name));
                look.push(path.clone());
            }
        }
    }
    let mut missing = Vec::new();
    if matched < held.len() {
        let listed: HashSet<&[u8]> = listing.iter().map(|(name, _)| name).collect();
        for name in held.iter().filter(|n| !listed.contains(n)) {
            path.truncate(base);
            path.extend_from_slice(name);
            if seen.contains_key(&path) {
                missing.push(path.clone());
            }
        }
    }
    look.sort();
    missing.sort();
    DirDiff { look, missing }
}

/// Directories found that were not seen before and are not already inside a subtree scanned
/// whole: read whole now, so what came with them is judged with them (a move, not a deletion
/// and a creation), watched, and only then reported.
pub fn new_dirs(
    seen: &SeenPaths,
    found: &HashMap<Vec<u8>, Entry>,
    listed: &[(Vec<u8>, u32)],
) -> Vec<PathBuf> {
    found
        .values()
        .filter(|e| e.kind == FileKind::Directory && !seen.contains_key(&e.path))
        .filter(|e| {
            !listed
                .iter()
                .any(|(l, depth)| *depth == WHOLE && is_under(&e.path, l))
        })
        .map(|e| PathBuf::from(std::ffi::OsStr::from_bytes(&e.path)))
        .collect()
}

/// What a rescan found, against what was seen.
#[derive(Debug, Default)]
pub struct Found {
    /// Paths not seen before.
    pub created: Vec<Entry>,
    /// Paths seen before whose attributes differ now (by `mode`).
    pub changed: Vec<Entry>,
}

/// Sorts `found` into new and changed paths; paths the same as seen are dropped.
pub fn classify(seen: &SeenPaths, found: HashMap<Vec<u8>, Entry>, mode: Mode) -> Found {
    let mut out = Found::default();
    for (path, e) in found {
        match seen.get(&path) {
            Some(old) if diff(old, &e, mode).is_empty() => {}
            Some(_) => out.changed.push(e),
            None => out.created.push(e),
        }
    }
    out.created.sort_by(|a, b| a.path.cmp(&b.path));
    out.changed.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The writer the kernel named for `path` or, failing that, for its nearest directory.
pub fn modifier_for(who: Option<&HashMap<Vec<u8>, Modifier>>, path: &[u8]) -> Option<Modifier> {
    let who = who?;
    let mut p = Some(Path::new(std::ffi::OsStr::from_bytes(path)));
    while let Some(cur) = p {
        if let Some(m) = who.get(cur.as_os_str().as_bytes()) {
            return Some(m.clone());
        }
        p = cur.parent();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, kind: FileKind, ino: u64) -> Entry {
        Entry {
            kind,
            ino,
            sha256: (kind == FileKind::Regular).then_some([ino as u8; 32]),
            flags: Some(0),
            ..Entry::test_file(path.as_bytes())
        }
    }

    fn tree(entries: &[(&str, FileKind)]) -> HashMap<Vec<u8>, Entry> {
        entries
            .iter()
            .enumerate()
            .map(|(i, (p, k))| (p.as_bytes().to_vec(), e(p, *k, i as u64 + 1)))
            .collect()
    }

    fn index(entries: &HashMap<Vec<u8>, Entry>) -> SeenPaths {
        let mut s = SeenPaths::default();
        for e in entries.values() {
            s.insert(e.clone());
        }
        s
    }

    fn sorted(mut v: Vec<Vec<u8>>) -> Vec<String> {
        v.sort();
        v.into_iter().map(|p| String::from_utf8(p).unwrap()).collect()
    }

    fn none() -> HashMap<Vec<u8>, DirDiff> {
        HashMap::new()
    }

    const D: FileKind = FileKind::Directory;
    const F: FileKind = FileKind::Regular;

    fn seen() -> SeenPaths {
        index(&tree(&[
            ("/w", D),
            ("/w/a", F),
            ("/w/b", F),
            ("/w/sub", D),
            ("/w/sub/c", F),
            ("/w/sub/deep", D),
            ("/w/sub/deep/d", F),
        ]))
    }

    #[test]
    fn gone_from_a_listed_directory_only() {
        let seen = seen();
        // /w listed (depth 1): /w/b is missing; /w/sub/c is not in this listing's reach.
        let found = tree(&[("/w", D), ("/w/a", F), ("/w/sub", D)]);
        let listed = vec![(b"/w".to_vec(), 1)];
        assert_eq!(
            sorted(gone(&seen, &found, &none(), &listed, &[], |_| false)),
            vec!["/w/b"]
        );
        // Nothing listed (a file's own record): nothing is gone.
        assert!(gone(&seen, &found, &none(), &[], &[], |_| false).is_empty());
    }

    #[test]
    fn a_gone_directory_takes_what_was_below_it() {
        let seen = seen();
        let found = tree(&[("/w", D), ("/w/a", F), ("/w/b", F)]);
        let listed = vec![(b"/w".to_vec(), 1)];
        assert_eq!(
            sorted(gone(&seen, &found, &none(), &listed, &[], |_| false)),
            vec!["/w/sub", "/w/sub/c", "/w/sub/deep", "/w/sub/deep/d"]
        );
    }

    #[test]
    fn a_listed_directory_itself_gone_says_nothing_unless_a_root() {
        let seen = seen();
        let found = tree(&[("/w", D), ("/w/a", F), ("/w/b", F), ("/w/sub", D)]);
        // /w/sub/deep listed but not found: its parent's listing decides.
        let listed = vec![(b"/w/sub/deep".to_vec(), 1)];
        assert!(gone(&seen, &found, &none(), &listed, &[], |_| false).is_empty());
        // A watch root is in no listing: its own absence is its deletion, with what it held.
        let nothing = HashMap::new();
        let root = vec![(b"/w".to_vec(), WHOLE)];
        let all = gone(&seen, &nothing, &none(), &root, &[b"/w"], |p| p == b"/w");
        assert_eq!(sorted(all).len(), seen.len());
    }

    #[test]
    fn a_subtree_scanned_whole_finds_deep_losses() {
        let seen = seen();
        let found = tree(&[
            ("/w", D),
            ("/w/a", F),
            ("/w/b", F),
            ("/w/sub", D),
            ("/w/sub/deep", D),
        ]);
        let whole = vec![(b"/w".to_vec(), WHOLE)];
        assert_eq!(
            sorted(gone(&seen, &found, &none(), &whole, &[], |_| false)),
            vec!["/w/sub/c", "/w/sub/deep/d"]
        );
        let shallow = vec![(b"/w".to_vec(), 1)];
        assert!(gone(&seen, &found, &none(), &shallow, &[], |_| false).is_empty());
    }

    fn listing(names: &[(&[u8], u64)]) -> Listing {
        names.iter().copied().collect()
    }

    fn diffs(seen: &SeenPaths, dir: &[u8], names: &[(&[u8], u64)]) -> HashMap<Vec<u8>, DirDiff> {
        [(dir.to_vec(), diff_listing(seen, dir, &listing(names)))].into()
    }

    #[test]
    fn a_listing_names_what_is_there_without_looking_at_it() {
        let seen = seen();
        // /w changed: its names read; /w/a is new, /w/sub the same inode, /w/b gone.
        let names: &[(&[u8], u64)] = &[(b"a", 2), (b"sub", 4), (b"x", 50)];
        assert_eq!(
            sorted(diff_listing(&seen, b"/w", &listing(names)).look),
            vec!["/w/x"],
            "only the new name; /w/a and /w/sub are the inodes seen"
        );
        // /w/a renamed over by another inode: looked at.
        let over = listing(&[(b"a", 77), (b"sub", 4)]);
        assert_eq!(sorted(diff_listing(&seen, b"/w", &over).look), vec!["/w/a"]);
        // Only the directory and what was looked at were found.
        let found = tree(&[("/w", D), ("/w/x", F)]);
        let listed = vec![(b"/w".to_vec(), 1)];
        assert_eq!(
            sorted(gone(
                &seen,
                &found,
                &diffs(&seen, b"/w", names),
                &listed,
                &[],
                |_| false
            )),
            vec!["/w/b"]
        );
        // /w/sub gone from the listing takes its subtree, still without a look at /w/a.
        let listings = diffs(&seen, b"/w", &[(b"a", 2)]);
        assert_eq!(
            sorted(gone(&seen, &found, &listings, &listed, &[], |_| false)),
            vec!["/w/b", "/w/sub", "/w/sub/c", "/w/sub/deep", "/w/sub/deep/d"]
        );
        // Names that are not UTF-8.
        let names = listing(&[(b"\xff", 9)]);
        assert_eq!(
            diff_listing(&seen, b"/w/sub", &names).look,
            vec![b"/w/sub/\xff".to_vec()]
        );
    }

    #[test]
    fn a_diff_builds_paths_only_for_new_replaced_and_missing_names() {
        let mut seen = seen();
        for (p, ino) in [
            (&b"/w/\xff\xfe"[..], 60),
            (b"/w/caf\xc3\xa9", 61),
            (b"/w/\x80gone", 62),
        ] {
            seen.insert(Entry {
                ino,
                ..Entry::test_file(p)
            });
        }
        // Unchanged: every name listed with the inode seen. Nothing to look at, nothing missing.
        let same: &[(&[u8], u64)] = &[
            (b"a", 2),
            (b"b", 3),
            (b"sub", 4),
            (b"\xff\xfe", 60),
            (b"caf\xc3\xa9", 61),
            (b"\x80gone", 62),
        ];
        assert_eq!(diff_listing(&seen, b"/w", &listing(same)), DirDiff::default());
        // New (one not UTF-8), replaced (another inode, one not UTF-8), and missing (one not
        // UTF-8), in a listing in the directory's own order.
        let d = diff_listing(
            &seen,
            b"/w",
            &listing(&[
                (b"\xfe\x01new", 70),
                (b"sub", 4),
                (b"\xff\xfe", 71),
                (b"a", 72),
                (b"new", 73),
                (b"caf\xc3\xa9", 61),
            ]),
        );
        assert_eq!(
            d.look,
            vec![
                b"/w/a".to_vec(),
                b"/w/new".to_vec(),
                b"/w/\xfe\x01new".to_vec(),
                b"/w/\xff\xfe".to_vec()
            ]
        );
        assert_eq!(d.missing, vec![b"/w/b".to_vec(), b"/w/\x80gone".to_vec()]);
        // As many names as before, yet one of them new and one missing: the count alone does
        // not hide a loss.
        let d = diff_listing(
            &seen,
            b"/w",
            &listing(&[
                (b"a", 2),
                (b"b", 3),
                (b"sub", 4),
                (b"\xff\xfe", 60),
                (b"caf\xc3\xa9", 61),
                (b"x", 9),
            ]),
        );
        assert_eq!(d.look, vec![b"/w/x".to_vec()]);
        assert_eq!(d.missing, vec![b"/w/\x80gone".to_vec()]);
        // A directory the index holds nothing in: every name is new; an empty listing of a
        // directory that held names misses them all.
        let d = diff_listing(&seen, b"/elsewhere", &listing(&[(b"f", 1)]));
        assert_eq!((d.look, d.missing.len()), (vec![b"/elsewhere/f".to_vec()], 0));
        let d = diff_listing(&seen, b"/w/sub", &Listing::default());
        assert_eq!(sorted(d.missing), vec!["/w/sub/c", "/w/sub/deep"]);
    }

    #[test]
    fn a_directory_not_seen_on_the_way_to_a_seen_path_is_neither_new_nor_missing_twice() {
        let mut seen = seen();
        // /w/skip is not seen (excluded); a watch root below it is.
        seen.insert(Entry::test_file(b"/w/skip/root/f"));
        let names: &[(&[u8], u64)] = &[(b"a", 2), (b"b", 3), (b"sub", 4), (b"skip", 80)];
        let d = diff_listing(&seen, b"/w", &listing(names));
        // Looked at, as any name not seen (the scan's rules decide), never missing.
        assert_eq!(d.look, vec![b"/w/skip".to_vec()]);
        assert!(d.missing.is_empty());
        let d = diff_listing(&seen, b"/w", &listing(&names[..3]));
        assert!(d.look.is_empty());
        assert!(
            d.missing.is_empty(),
            "not seen itself: its own absence is no deletion here"
        );
    }

    #[test]
    fn new_directories_are_read_whole_unless_inside_a_whole_scan() {
        let seen = seen();
        let found = tree(&[
            ("/w", D),
            ("/w/new", D),
            ("/w/sub", D),
            ("/w/new2", D),
            ("/w/f", F),
        ]);
        let mut dirs = new_dirs(&seen, &found, &[(b"/w".to_vec(), 1)]);
        dirs.sort();
        assert_eq!(dirs, vec![PathBuf::from("/w/new"), PathBuf::from("/w/new2")]);
        assert!(new_dirs(&seen, &found, &[(b"/w".to_vec(), WHOLE)]).is_empty());
    }

    #[test]
    fn found_paths_are_new_changed_or_the_same() {
        let seen = seen();
        let mut found = tree(&[("/w/x", F)]);
        found.insert(b"/w/a".to_vec(), seen.get(b"/w/a").unwrap().clone());
        let mut b = seen.get(b"/w/b").unwrap().clone();
        b.mode = 0o600;
        found.insert(b.path.clone(), b);
        let mut c = seen.get(b"/w/sub/c").unwrap().clone();
        c.ino = 99; // only identity: the same in a portable comparison
        found.insert(c.path.clone(), c);
        let full = classify(&seen, found.clone(), Mode::Full);
        let names = |v: &[Entry]| v.iter().map(|e| e.path.clone()).collect::<Vec<_>>();
        assert_eq!(names(&full.created), vec![b"/w/x".to_vec()]);
        assert_eq!(names(&full.changed), vec![b"/w/b".to_vec(), b"/w/sub/c".to_vec()]);
        let portable = classify(&seen, found, Mode::Portable);
        assert_eq!(names(&portable.changed), vec![b"/w/b".to_vec()]);
    }

    #[test]
    fn the_writer_of_a_path_or_of_its_nearest_directory() {
        let m = |pid| Modifier {
            pid,
            tgid: pid,
            uid: 0,
            comm: "x".into(),
            cgroup_id: 0,
            hook: "path_rename",
        };
        let who: HashMap<Vec<u8>, Modifier> = [(b"/w".to_vec(), m(1)), (b"/w/sub/c".to_vec(), m(2))].into();
        assert_eq!(modifier_for(Some(&who), b"/w/sub/c").map(|m| m.pid), Some(2));
        assert_eq!(modifier_for(Some(&who), b"/w/sub/deep/d").map(|m| m.pid), Some(1));
        assert_eq!(modifier_for(Some(&who), b"/elsewhere"), None);
        assert_eq!(modifier_for(None, b"/w"), None);
    }
}
