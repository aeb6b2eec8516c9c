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

/// The paths of one inode: nearly always one, held without a vector around it (24 bytes a
/// slot, no second allocation; heaptrack of `fimd run` on /usr).
#[derive(Debug, Clone)]
enum Names {
    One(Box<[u8]>),
    /// Hard links, or a name replaced while its old one is still held.
    Many(Vec<Box<[u8]>>),
}

impl Names {
    fn to_vec(&self) -> Vec<Vec<u8>> {
        match self {
            Names::One(p) => vec![p.to_vec()],
            Names::Many(v) => v.iter().map(|p| p.to_vec()).collect(),
        }
    }

    fn add(&mut self, path: &[u8]) {
        match self {
            Names::One(p) if &p[..] == path => {}
            Names::One(p) => *self = Names::Many(vec![std::mem::take(p), path.into()]),
            Names::Many(v) if v.iter().any(|p| &p[..] == path) => {}
            Names::Many(v) => v.push(path.into()),
        }
    }

    /// Drops `path`; true when no path is left.
    fn drop(&mut self, path: &[u8]) -> bool {
        match self {
            Names::One(p) => &p[..] == path,
            Names::Many(v) => {
                v.retain(|p| &p[..] != path);
                v.is_empty()
            }
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
    paths: HashMap<InodeKey, Names>,
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
            seen: SeenPaths::new(base),
            paths: HashMap::new(),
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

    /// Sets the baseline's entry for `path` (`None`: drops it); what was seen stays.
    pub fn set_baseline(&mut self, path: &[u8], entry: Option<Entry>) {
        self.seen.set_base(path, entry);
    }

    /// Takes `base` as the baseline; what was seen stays.
    pub fn replace_baseline(&mut self, base: SortedEntries) {
        self.seen.replace_base(base);
    }

    /// The paths a watched inode has; `None` when it is not watched.
    pub fn paths_of(&self, key: &InodeKey) -> Option<Vec<Vec<u8>>> {
        self.paths.get(key).map(Names::to_vec)
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
        match self.paths.get_mut(&key) {
            Some(names) => names.add(&e.path),
            None => {
                self.paths.insert(key, Names::One(e.path.as_slice().into()));
            }
        }
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
            if let Some(names) = self.paths.get_mut(&key)
                && names.drop(path)
            {
                self.paths.remove(&key);
                self.sensor.unwatch(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Names;

    #[test]
    fn an_inode_holds_one_path_or_several_and_says_when_none_is_left() {
        let mut n = Names::One(b"/w/a"[..].into());
        n.add(b"/w/a");
        assert_eq!(n.to_vec(), vec![b"/w/a".to_vec()]);
        n.add(b"/w/\xffhard");
        assert_eq!(n.to_vec(), vec![b"/w/a".to_vec(), b"/w/\xffhard".to_vec()]);
        assert!(!n.drop(b"/w/a"));
        assert!(!n.drop(b"/w/other"));
        assert!(n.drop(b"/w/\xffhard"));
        let mut one = Names::One(b"/w/b"[..].into());
        assert!(!one.drop(b"/w/c"));
        assert!(one.drop(b"/w/b"));
    }
}
