//! Moves and replacements: which path that disappeared and which path that appeared are the
//! same file. `fimd check` (a full comparison) and `fimd run` (a rescan after a kernel record)
//! both decide with [`pair`], so they say the same thing for the same change.
//!
//! The rule: a path gone and a path new are one file **moved** only when they are the same
//! inode: same device, inode number and type, and
//! - the same birth time (`statx(2)` `STATX_BTIME`) and inode generation (`FS_IOC_GETVERSION`,
//!   include/uapi/linux/fs.h) wherever both sides have one: a deleted file's inode number is
//!   handed to the next new file (ext4 does so at once), but not its birth time or generation;
//! - where the filesystem reports neither, the same content: the same SHA-256 for a regular file,
//!   the same target for a symlink, the same mode and owner for anything else.
//!
//! Anything else is a deletion and a creation, even with identical content (`cp` then `rm`).
use std::collections::HashMap;

use crate::baseline::entry::{Entry, FileKind};

/// Whether `old` and `new` have both recorded an identity (birth time or generation) and it
/// differs: another inode, even if it has the same number.
pub fn reborn(old: &Entry, new: &Entry) -> bool {
    let differs = |a: Option<i64>, b: Option<i64>| matches!((a, b), (Some(a), Some(b)) if a != b);
    differs(old.birth_ns, new.birth_ns)
        || differs(old.generation.map(i64::from), new.generation.map(i64::from))
}

/// Whether `new` is the same file as `old`, seen at another path (see the module's rule).
pub fn same_file(old: &Entry, new: &Entry) -> bool {
    if (old.dev, old.ino) != (new.dev, new.ino) || old.kind != new.kind || reborn(old, new) {
        return false;
    }
    let known = (old.birth_ns.is_some() && new.birth_ns.is_some())
        || (old.generation.is_some() && new.generation.is_some());
    known || same_content(old, new)
}

/// Without an identity to go by: what only the same file would have.
fn same_content(old: &Entry, new: &Entry) -> bool {
    match new.kind {
        FileKind::Regular => old.sha256.is_some() && old.sha256 == new.sha256,
        FileKind::Symlink => old.link_target == new.link_target,
        _ => (old.mode, old.uid, old.gid) == (new.mode, new.uid, new.gid),
    }
}

/// What became of the paths that disappeared and appeared.
#[derive(Debug, Default)]
pub struct Pairing {
    /// (before, after): the same file at a new path.
    pub moved: Vec<(Entry, Entry)>,
    pub deleted: Vec<Entry>,
    pub created: Vec<Entry>,
}

/// Pairs each path that disappeared (`gone`, its last known state) with the path that appeared
/// (`new`) that is the same file, if any; the rest are deletions and creations. Each side is
/// paired at most once (two hard links renamed pair one to one). Pure: no system calls.
pub fn pair(gone: Vec<Entry>, new: Vec<Entry>) -> Pairing {
    let mut by_inode: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for (i, g) in gone.iter().enumerate() {
        by_inode.entry((g.dev, g.ino)).or_default().push(i);
    }
    let mut taken = vec![false; gone.len()];
    let mut out = Pairing::default();
    let mut moved_idx = Vec::new();
    for n in new {
        let hit = by_inode
            .get(&(n.dev, n.ino))
            .and_then(|c| c.iter().copied().find(|&i| !taken[i] && same_file(&gone[i], &n)));
        match hit {
            Some(i) => {
                taken[i] = true;
                moved_idx.push((i, n));
            }
            None => out.created.push(n),
        }
    }
    let mut gone: Vec<Option<Entry>> = gone.into_iter().map(Some).collect();
    for (i, n) in moved_idx {
        out.moved.push((gone[i].take().expect("paired once"), n));
    }
    out.deleted = gone.into_iter().flatten().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, ino: u64, birth: Option<i64>, generation: Option<u32>, sha: u8) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: FileKind::Regular,
            size: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            ino,
            dev: 1,
            nlink: 1,
            mtime_ns: 1,
            ctime_ns: 1,
            sha256: Some([sha; 32]),
            link_target: None,
            xattrs: Vec::new(),
            flags: Some(0),
            birth_ns: birth,
            generation,
        }
    }

    fn paths(v: &[Entry]) -> Vec<&[u8]> {
        v.iter().map(|e| &e.path[..]).collect()
    }

    #[test]
    fn a_renamed_inode_is_a_move_even_when_its_content_changed() {
        let p = pair(
            vec![file("/t/b", 7, Some(100), Some(3), 1)],
            vec![file("/t/n1", 7, Some(100), Some(3), 2)],
        );
        assert_eq!(p.moved.len(), 1);
        assert_eq!(
            (&p.moved[0].0.path[..], &p.moved[0].1.path[..]),
            (&b"/t/b"[..], &b"/t/n1"[..])
        );
        assert!(p.deleted.is_empty() && p.created.is_empty());
    }

    #[test]
    fn a_reused_inode_number_is_a_deletion_and_a_creation() {
        // Another birth time, or another generation, is another inode.
        for new in [
            file("/t/n1", 7, Some(200), Some(3), 1),
            file("/t/n1", 7, Some(100), Some(4), 1),
            file("/t/n1", 7, Some(200), None, 1),
            file("/t/n1", 7, None, Some(4), 1),
        ] {
            let p = pair(vec![file("/t/b", 7, Some(100), Some(3), 1)], vec![new]);
            assert!(p.moved.is_empty(), "{p:?}");
            assert_eq!(paths(&p.deleted), vec![&b"/t/b"[..]]);
            assert_eq!(paths(&p.created), vec![&b"/t/n1"[..]]);
        }
        let mut dir_old = file("/t/d", 7, Some(100), Some(3), 0);
        dir_old.kind = FileKind::Directory;
        dir_old.sha256 = None;
        let mut dir_new = dir_old.clone();
        dir_new.path = b"/t/e".to_vec();
        dir_new.birth_ns = Some(200);
        dir_new.generation = Some(4);
        let p = pair(vec![dir_old.clone()], vec![dir_new]);
        assert!(p.moved.is_empty() && p.deleted.len() == 1 && p.created.len() == 1);
        // The same directory renamed.
        let mut renamed = dir_old.clone();
        renamed.path = b"/t/e".to_vec();
        assert_eq!(pair(vec![dir_old], vec![renamed]).moved.len(), 1);
    }

    #[test]
    fn without_an_identity_only_matching_content_is_a_move() {
        let same = pair(
            vec![file("/t/b", 7, None, None, 1)],
            vec![file("/t/n1", 7, None, None, 1)],
        );
        assert_eq!(same.moved.len(), 1);
        let other = pair(
            vec![file("/t/b", 7, None, None, 1)],
            vec![file("/t/n1", 7, None, None, 2)],
        );
        assert!(other.moved.is_empty() && other.deleted.len() == 1 && other.created.len() == 1);
        // One side without an identity (a baseline from a filesystem without birth times).
        let half = pair(
            vec![file("/t/b", 7, None, None, 1)],
            vec![file("/t/n1", 7, Some(5), Some(1), 2)],
        );
        assert!(half.moved.is_empty());
        let mut unhashed = file("/t/b", 7, None, None, 1);
        unhashed.sha256 = None;
        let mut unhashed_new = unhashed.clone();
        unhashed_new.path = b"/t/n1".to_vec();
        assert!(pair(vec![unhashed], vec![unhashed_new]).moved.is_empty());
    }

    #[test]
    fn the_same_content_at_another_inode_is_not_a_move() {
        // cp b n1 && rm b
        let p = pair(
            vec![file("/t/b", 7, Some(100), Some(3), 1)],
            vec![file("/t/n1", 8, Some(150), Some(5), 1)],
        );
        assert!(p.moved.is_empty() && p.deleted.len() == 1 && p.created.len() == 1);
    }

    #[test]
    fn hard_links_pair_one_to_one_and_types_must_agree() {
        let p = pair(
            vec![
                file("/t/a", 7, Some(1), None, 1),
                file("/t/b", 7, Some(1), None, 1),
            ],
            vec![
                file("/t/c", 7, Some(1), None, 1),
                file("/t/d", 7, Some(1), None, 1),
            ],
        );
        assert_eq!(p.moved.len(), 2);
        let mut link = file("/t/n1", 7, Some(1), None, 1);
        link.kind = FileKind::Symlink;
        let p = pair(vec![file("/t/a", 7, Some(1), None, 1)], vec![link]);
        assert!(p.moved.is_empty());
        let mut other_dev = file("/t/n1", 7, Some(1), None, 1);
        other_dev.dev = 2;
        assert!(
            pair(vec![file("/t/a", 7, Some(1), None, 1)], vec![other_dev])
                .moved
                .is_empty()
        );
    }
}
