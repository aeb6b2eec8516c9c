//! The watch index: the last state seen of every watched path, the paths each watched inode
//! has, the watch roots and the directories holding them, and the sensor that is armed for
//! them. Learning a path arms its inode; forgetting its last path disarms it.
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use monitor_common::InodeKey;

use super::alerts::AlertWriter;
use super::seen_paths::SeenPaths;
use super::watch_roots::{self, Roots};
use crate::baseline::entry::{Entry, FileKind};
use crate::baseline::sorted::SortedEntries;
use crate::config::Settings;
use crate::sensor::Sensor;
use crate::sensor::ebpf::kernel_dev;

/// The sensor's key for the inode of `e`.
pub fn key_of(e: &Entry) -> InodeKey {
    InodeKey {
        dev: kernel_dev(e.dev),
        _pad: 0,
        ino: e.ino,
    }
}

/// The paths of one inode: nearly always one, and nearly always a baseline path, named then
/// by its position in the baseline (no copy of the path: 57 bytes an entry on /usr, heaptrack
/// of `fimd run`); otherwise held, without a vector around a single one. 24 bytes a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Names {
    /// The path of the baseline's entry at this position (`SortedEntries`); kept right by
    /// `WatchIndex::set_baseline` and `replace_baseline` when positions move.
    Base(u32),
    One(Box<[u8]>),
    /// Hard links, or a name replaced while its old one is still held.
    Many(Vec<Box<[u8]>>),
}

impl Names {
    /// `path` alone, named by its baseline position when the baseline has it.
    fn new(path: &[u8], base: &SortedEntries) -> Names {
        match base.position(path).ok().and_then(|i| u32::try_from(i).ok()) {
            Some(i) => Names::Base(i),
            None => Names::One(path.into()),
        }
    }

    fn to_vec(&self, base: &SortedEntries) -> Vec<Vec<u8>> {
        match self {
            Names::Base(i) => vec![base.as_slice()[*i as usize].path.clone()],
            Names::One(p) => vec![p.to_vec()],
            Names::Many(v) => v.iter().map(|p| p.to_vec()).collect(),
        }
    }

    fn has(&self, path: &[u8], base: &SortedEntries) -> bool {
        match self {
            Names::Base(i) => base.as_slice()[*i as usize].path == path,
            Names::One(p) => &p[..] == path,
            Names::Many(v) => v.iter().any(|p| &p[..] == path),
        }
    }

    fn add(&mut self, path: &[u8], base: &SortedEntries) {
        if self.has(path, base) {
            return;
        }
        match self {
            Names::Many(v) => v.push(path.into()),
            _ => {
                let mut v: Vec<Box<[u8]>> = self.to_vec(base).into_iter().map(Into::into).collect();
                v.push(path.into());
                *self = Names::Many(v);
            }
        }
    }

    /// Drops `path`; true when no path is left.
    fn drop(&mut self, path: &[u8], base: &SortedEntries) -> bool {
        match self {
            Names::Many(v) => {
                v.retain(|p| &p[..] != path);
                v.is_empty()
            }
            _ => self.has(path, base),
        }
    }

    /// The baseline is about to gain an entry at position `at`: later positions move up.
    fn base_inserting(&mut self, at: usize) {
        if let Names::Base(i) = self
            && *i as usize >= at
        {
            *i += 1;
        }
    }

    /// The baseline is about to lose its entry at position `at` (in `base`): a path named by it
    /// is held instead, and later positions move down.
    fn base_removing(&mut self, at: usize, base: &SortedEntries) {
        match self {
            Names::Base(i) if *i as usize == at => {
                *self = Names::One(base.as_slice()[at].path.as_slice().into())
            }
            Names::Base(i) if *i as usize > at => *i -= 1,
            _ => {}
        }
    }
}

/// The watched inodes and their paths, in a table of 16-byte slots: the key packed into 12
/// bytes (align 4) and a 4-byte value, the baseline position of the inode's one path (below
/// `HELD`), or `HELD + n` for `held[n]`, where the rare rest is kept (paths the baseline lacks,
/// hard links). With `InodeKey` (align 8) and `Names` a slot took 40 bytes; the table has up
/// to twice as many slots as inodes.
#[derive(Default)]
struct InodePaths {
    map: HashMap<[u32; 3], u32>,
    held: Vec<Names>,
    /// Unused `held` slots.
    free: Vec<u32>,
}

const HELD: u32 = 1 << 31;

fn pack(key: &InodeKey) -> [u32; 3] {
    [key.dev, key.ino as u32, (key.ino >> 32) as u32]
}

impl InodePaths {
    fn with_capacity(inodes: usize) -> InodePaths {
        InodePaths {
            map: HashMap::with_capacity(inodes),
            ..InodePaths::default()
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    /// The value for `names`: a position, or a `held` slot (`reuse` if there is one already).
    fn store(held: &mut Vec<Names>, free: &mut Vec<u32>, names: Names, reuse: Option<u32>) -> u32 {
        match names {
            Names::Base(i) if i < HELD => {
                if let Some(slot) = reuse {
                    held[slot as usize] = Names::One(Box::default());
                    free.push(slot);
                }
                i
            }
            names => {
                let slot = match reuse.or_else(|| free.pop()) {
                    Some(slot) => {
                        held[slot as usize] = names;
                        slot
                    }
                    None => {
                        held.push(names);
                        (held.len() - 1) as u32
                    }
                };
                HELD + slot
            }
        }
    }

    fn load(held: &[Names], v: u32) -> Names {
        match v.checked_sub(HELD) {
            None => Names::Base(v),
            Some(slot) => held[slot as usize].clone(),
        }
    }

    fn to_vec(&self, key: &InodeKey, base: &SortedEntries) -> Option<Vec<Vec<u8>>> {
        let v = *self.map.get(&pack(key))?;
        Some(Self::load(&self.held, v).to_vec(base))
    }

    /// Changes the paths of `key` with `f` (starting from none: `None`); drops the inode when
    /// `f` leaves it none. Returns whether it has paths after.
    fn update(&mut self, key: &InodeKey, f: impl FnOnce(Option<Names>) -> Option<Names>) -> bool {
        let k = pack(key);
        let old = self.map.get(&k).copied();
        let reuse = old.and_then(|v| v.checked_sub(HELD));
        match f(old.map(|v| Self::load(&self.held, v))) {
            Some(names) => {
                let v = Self::store(&mut self.held, &mut self.free, names, reuse);
                self.map.insert(k, v);
                true
            }
            None => {
                if let Some(slot) = reuse {
                    self.held[slot as usize] = Names::One(Box::default());
                    self.free.push(slot);
                }
                self.map.remove(&k);
                false
            }
        }
    }

    /// Applies `f` to every inode's paths (baseline positions moving).
    fn for_each(&mut self, mut f: impl FnMut(&mut Names)) {
        let (held, free) = (&mut self.held, &mut self.free);
        for v in self.map.values_mut() {
            let reuse = v.checked_sub(HELD);
            let mut names = Self::load(held, *v);
            f(&mut names);
            *v = Self::store(held, free, names, reuse);
        }
    }
}

/// How a learned path is armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// Any change reports.
    Change,
    /// An append-only log: changes report, and the kernel records any write below
    /// `verified_len` (bytes).
    Append { verified_len: u64 },
}

/// The watched paths and inodes, and the sensor armed for them (see the module doc).
pub struct WatchIndex {
    sensor: Box<dyn Sensor>,
    /// The last state seen of every watched path, with each directory's names.
    seen: SeenPaths,
    /// Watched inodes and the paths they have.
    paths: InodePaths,
    /// The configured watch paths and their identity when last looked at.
    roots: Roots,
    /// The directories holding watch roots, armed: a change there may move or replace a root.
    root_parents: HashMap<InodeKey, Vec<Vec<u8>>>,
}

impl WatchIndex {
    /// Nothing learned yet, over the sealed baseline `base`.
    pub fn new(sensor: Box<dyn Sensor>, roots: Roots, base: SortedEntries) -> WatchIndex {
        WatchIndex {
            sensor,
            // Sized for the baseline: no growth (old and new table at once) while learning it.
            paths: InodePaths::with_capacity(base.len()),
            seen: SeenPaths::new(base),
            roots,
            root_parents: HashMap::new(),
        }
    }

    pub fn sensor(&self) -> &dyn Sensor {
        self.sensor.as_ref()
    }

    pub fn sensor_mut(&mut self) -> &mut dyn Sensor {
        self.sensor.as_mut()
    }

    /// The last state seen of every watched path, with each directory's names.
    pub fn seen(&self) -> &SeenPaths {
        &self.seen
    }

    /// The sealed baseline (held under the seen states: see `SeenPaths`).
    pub fn baseline(&self) -> &SortedEntries {
        self.seen.base()
    }

    /// Sets the baseline's entry for `path` (`None`: drops it); what was seen stays. A path
    /// new to the baseline, or one dropped from it, moves the positions after it: O(watched
    /// inodes), for ledger rows only (a log created or rotated), never per event.
    pub fn set_baseline(&mut self, path: &[u8], entry: Option<Entry>) {
        let base = self.seen.base();
        match (entry.is_some(), base.position(path)) {
            (true, Err(at)) => self.paths.for_each(|n| n.base_inserting(at)),
            (false, Ok(at)) => self.paths.for_each(|n| n.base_removing(at, base)),
            _ => {}
        }
        self.seen.set_base(path, entry);
    }

    /// Takes `base` as the baseline; what was seen stays. O(watched inodes).
    pub fn replace_baseline(&mut self, base: SortedEntries) {
        let old = self.seen.base();
        self.paths.for_each(|n| {
            if let Names::Base(i) = n {
                *n = Names::One(old.as_slice()[*i as usize].path.as_slice().into());
            }
        });
        self.seen.replace_base(base);
        let new = self.seen.base();
        self.paths.for_each(|n| {
            if let Names::One(p) = n {
                *n = Names::new(p, new);
            }
        });
    }

    /// The paths a watched inode has; `None` when it is not watched.
    pub fn paths_of(&self, key: &InodeKey) -> Option<Vec<Vec<u8>>> {
        self.paths.to_vec(key, self.seen.base())
    }

    /// Watched inodes (entries).
    pub fn inodes(&self) -> usize {
        self.paths.len()
    }

    /// The watch roots held by the directory of `key`, when it holds some.
    pub fn roots_in(&self, key: &InodeKey) -> Option<&Vec<Vec<u8>>> {
        self.root_parents.get(key)
    }

    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    /// The watch roots whose identity changed since the last look.
    pub fn roots_changed(&mut self) -> Vec<Vec<u8>> {
        self.roots.changed()
    }

    /// Arms the directories holding the watch roots.
    pub fn arm_root_parents(&mut self, settings: &Settings, alerts: &mut AlertWriter) {
        let roots: Vec<Vec<u8>> = self.roots.paths().map(<[u8]>::to_vec).collect();
        for root in roots {
            if let Some(key) = watch_roots::parent_key(&root) {
                let parent = Path::new(std::ffi::OsStr::from_bytes(&root))
                    .parent()
                    .map_or_else(Vec::new, |p| p.as_os_str().as_bytes().to_vec());
                // Named by the root it is for: the parent is watched on the root's behalf.
                if let Err(e) = self.sensor.watch(key, &parent, true) {
                    alerts.cannot_watch(settings, &root, &e);
                }
                self.root_parents.entry(key).or_default().push(root);
            }
        }
    }

    /// Records a path's current state and arms its inode. An inode the sensor cannot watch is
    /// never fatal (the path is still compared on every full comparison): `alerts` reports it.
    pub fn learn(&mut self, e: Entry, arm: Arm, settings: &Settings, alerts: &mut AlertWriter) {
        let key = key_of(&e);
        // Replaced by another inode (renamed over): the old inode no longer has this name.
        if self.seen.get(&e.path).is_some_and(|old| key_of(old) != key) {
            self.forget(&e.path.clone());
        }
        let base = self.seen.base();
        self.paths.update(&key, |names| {
            Some(match names {
                Some(mut names) => {
                    names.add(&e.path, base);
                    names
                }
                None => Names::new(&e.path, base),
            })
        });
        let watched = match arm {
            // One insert: never a moment without the verified length.
            Arm::Append { verified_len } => self
                .sensor
                .watch_append(key, verified_len)
                .and_then(|()| self.sensor.rearm(key)),
            Arm::Change => self.sensor.watch(key, &e.path, e.kind == FileKind::Directory),
        };
        if let Err(err) = watched {
            alerts.cannot_watch(settings, &e.path, &err);
        }
        self.seen.insert(e);
    }

    /// Drops `path`; its inode is disarmed when it was its last path.
    pub fn forget(&mut self, path: &[u8]) {
        if let Some(e) = self.seen.remove(path) {
            let key = key_of(&e);
            let (base, mut emptied) = (self.seen.base(), false);
            self.paths.update(&key, |names| {
                let mut names = names?;
                emptied = names.drop(path, base);
                (!emptied).then_some(names)
            });
            if emptied {
                self.sensor.unwatch(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Names;
    use crate::baseline::entry::Entry;
    use crate::baseline::sorted::SortedEntries;

    fn base(paths: &[&[u8]]) -> SortedEntries {
        paths.iter().map(|p| Entry::test_file(p)).collect()
    }

    #[test]
    fn an_inode_holds_one_path_or_several_and_says_when_none_is_left() {
        for b in [base(&[]), base(&[b"/w/a", b"/w/b"])] {
            let mut n = Names::new(b"/w/a", &b);
            n.add(b"/w/a", &b);
            assert_eq!(n.to_vec(&b), vec![b"/w/a".to_vec()]);
            n.add(b"/w/\xffhard", &b);
            assert_eq!(n.to_vec(&b), vec![b"/w/a".to_vec(), b"/w/\xffhard".to_vec()]);
            assert!(!n.drop(b"/w/a", &b));
            assert!(!n.drop(b"/w/other", &b));
            assert!(n.drop(b"/w/\xffhard", &b));
            let mut one = Names::new(b"/w/b", &b);
            assert!(!one.drop(b"/w/c", &b));
            assert!(one.drop(b"/w/b", &b));
        }
    }

    #[test]
    fn the_inode_table_holds_positions_inline_and_the_rest_aside() {
        use super::{HELD, InodePaths};
        use monitor_common::InodeKey;
        let key = |ino: u64| InodeKey { dev: 7, _pad: 0, ino };
        let b = base(&[b"/w/a", b"/w/b"]);
        let mut t = InodePaths::with_capacity(2);
        let add = |t: &mut InodePaths, k: &InodeKey, path: &[u8]| {
            t.update(k, |n| {
                let mut n = n.unwrap_or_else(|| Names::new(path, &b));
                n.add(path, &b);
                Some(n)
            })
        };
        // Inodes above 2^32 keep their high half.
        let (k1, k2, k3) = (key(1), key(1 << 40 | 1), key(3));
        add(&mut t, &k1, b"/w/a");
        add(&mut t, &k2, b"/w/new");
        assert_eq!(
            t.map[&super::pack(&k1)],
            0,
            "a baseline path: its position, inline"
        );
        assert_eq!(t.map[&super::pack(&k2)], HELD, "another path: held aside");
        assert_eq!(t.to_vec(&k1, &b), Some(vec![b"/w/a".to_vec()]));
        assert_eq!(t.to_vec(&k2, &b), Some(vec![b"/w/new".to_vec()]));
        assert_eq!(t.to_vec(&k3, &b), None);
        // A hard link to a baseline path moves aside; dropping both frees the slot for reuse.
        add(&mut t, &k1, b"/w/\xfflink");
        assert_eq!(t.to_vec(&k1, &b).map(|v| v.len()), Some(2));
        assert!(t.update(&k1, |n| {
            let mut n = n?;
            (!n.drop(b"/w/a", &b)).then_some(n)
        }));
        assert_eq!(t.to_vec(&k1, &b), Some(vec![b"/w/\xfflink".to_vec()]));
        assert!(!t.update(&k2, |_| None));
        assert_eq!((t.len(), t.free.len()), (1, 1));
        add(&mut t, &k3, b"/w/other");
        assert_eq!((t.len(), t.free.len(), t.held.len()), (2, 0, 2));
        let k4 = key(4);
        add(&mut t, &k4, b"/w/b");
        // Positions moving: every inode's paths still resolve.
        t.for_each(|n| n.base_inserting(0));
        let b2 = base(&[b"/w/0", b"/w/a", b"/w/b"]);
        assert_eq!(t.to_vec(&k3, &b2), Some(vec![b"/w/other".to_vec()]));
        assert_eq!(t.to_vec(&k4, &b2), Some(vec![b"/w/b".to_vec()]));
        assert_eq!(t.map[&super::pack(&k4)], 2);
        assert_eq!(std::mem::size_of::<([u32; 3], u32)>(), 16);
    }

    #[test]
    fn a_baseline_path_is_named_by_its_position_and_kept_right_when_positions_move() {
        assert!(std::mem::size_of::<Names>() <= 24);
        let mut b = base(&[b"/w/a", b"/w/c"]);
        let (mut a, mut c, mut x) = (
            Names::new(b"/w/a", &b),
            Names::new(b"/w/c", &b),
            Names::new(b"/w/x", &b),
        );
        assert_eq!((&a, &c), (&Names::Base(0), &Names::Base(1)));
        assert_eq!(x, Names::One(b"/w/x"[..].into()));
        // /w/b enters the baseline before /w/c.
        let at = b.position(b"/w/b").unwrap_err();
        [&mut a, &mut c, &mut x]
            .into_iter()
            .for_each(|n| n.base_inserting(at));
        b.insert(Entry::test_file(b"/w/b"));
        assert_eq!(
            (a.to_vec(&b), c.to_vec(&b)),
            (vec![b"/w/a".to_vec()], vec![b"/w/c".to_vec()])
        );
        // /w/a leaves it: its name is held, /w/c moves down.
        let at = b.position(b"/w/a").unwrap();
        [&mut a, &mut c, &mut x]
            .into_iter()
            .for_each(|n| n.base_removing(at, &b));
        b.remove(b"/w/a");
        assert_eq!(a, Names::One(b"/w/a"[..].into()));
        assert_eq!(
            (c.to_vec(&b), x.to_vec(&b)),
            (vec![b"/w/c".to_vec()], vec![b"/w/x".to_vec()])
        );
        assert!(c.drop(b"/w/c", &b));
    }
}
