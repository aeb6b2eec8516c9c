//! The rotation settler: a rotation is several steps (rename, create, compress, delete), so
//! changes in a rotating log's directory wait until the directory has been quiet for `SETTLE`,
//! then are judged together as one comparison of that directory. Also the move window: a path
//! found gone waits `MOVE_WINDOW` for the other half of a move between two directories.
//!
//! What either holds back is counted in `fim_rotation_settling` (entries: directories waiting
//! plus paths waiting), so an operator or a test sees when everything seen so far is judged.
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use prometheus::IntGauge;

use super::modifier::Modifier;
use super::rules::parent_of;
use crate::baseline::entry::Entry;
use crate::compare::Change;

/// How long a rotating log's directory must stay quiet before its changes are judged.
pub const SETTLE: Duration = Duration::from_secs(1);
/// How long a path found gone waits for the new path of a move between two directories (whose
/// two records may be read in different batches) before it is reported deleted.
pub const MOVE_WINDOW: Duration = Duration::from_millis(300);

/// The changes waiting in one directory.
#[derive(Debug)]
pub struct Settling {
    /// When the directory counts as quiet.
    pub due: Instant,
    /// The paths whose changes wait.
    pub paths: HashSet<Vec<u8>>,
    /// Their writers, where the kernel named one.
    pub who: HashMap<Vec<u8>, Modifier>,
}

impl Settling {
    /// Whether `c` is one of the changes this settling was about (by its path or, for a move,
    /// its old path): older differences in the directory were reported already.
    pub fn concerns(&self, c: &Change) -> bool {
        self.paths.contains(c.path()) || c.previous.as_ref().is_some_and(|p| self.paths.contains(&p.path))
    }
}

/// A share of `fim_rotation_settling`: the entries one holder (the settler, the departures)
/// has added, given back when it changes size or goes (a reload makes new holders).
#[derive(Debug, Default)]
struct Held {
    gauge: Option<IntGauge>,
    /// Entries this holder has added to the gauge.
    counted: usize,
}

impl Held {
    fn set(&mut self, now: usize) {
        if let Some(g) = &self.gauge {
            g.add(now as i64 - self.counted as i64);
        }
        self.counted = now;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// Directories of rotating logs with changes waiting for quiet.
#[derive(Debug, Default)]
pub struct Settler {
    dirs: HashMap<Vec<u8>, Settling>,
    held: Held,
}

impl Settler {
    /// A settler whose waiting directories count in `gauge` (`fim_rotation_settling`).
    pub fn counted(gauge: IntGauge) -> Settler {
        Settler {
            held: Held {
                gauge: Some(gauge),
                counted: 0,
            },
            ..Settler::default()
        }
    }

    /// Holds a change of `path` until its directory is quiet: `SETTLE` after `now`, the
    /// latest change in the directory.
    pub fn defer(&mut self, path: &[u8], who: Option<Modifier>, now: Instant) {
        let dir = parent_of(path).unwrap_or(b"/").to_vec();
        let s = self.dirs.entry(dir).or_insert_with(|| Settling {
            due: now,
            paths: HashSet::new(),
            who: HashMap::new(),
        });
        s.due = now + SETTLE;
        s.paths.insert(path.to_vec());
        if let Some(m) = who {
            s.who.insert(path.to_vec(), m);
        }
        self.held.set(self.dirs.len());
    }

    /// The directories quiet at `now`, removed from the settler, in path order.
    pub fn take_due(&mut self, now: Instant) -> Vec<(Vec<u8>, Settling)> {
        let mut due: Vec<Vec<u8>> = self
            .dirs
            .iter()
            .filter(|(_, s)| s.due <= now)
            .map(|(d, _)| d.clone())
            .collect();
        due.sort();
        let due = due
            .into_iter()
            .map(|d| {
                let s = self.dirs.remove(&d).expect("listed");
                (d, s)
            })
            .collect();
        self.held.set(self.dirs.len());
        due
    }
}

/// One path found gone, waiting for the new path of a move.
#[derive(Debug, Clone)]
pub struct Departed {
    pub entry: Entry,
    /// When it is reported deleted.
    pub at: Instant,
    pub who: Option<Modifier>,
}

/// Paths found gone and not yet paired with a new path.
#[derive(Debug, Default)]
pub struct Departures {
    items: Vec<Departed>,
    held: Held,
}

impl Departures {
    /// Departures whose waiting paths count in `gauge` (`fim_rotation_settling`).
    pub fn counted(gauge: IntGauge) -> Departures {
        Departures {
            items: Vec::new(),
            held: Held {
                gauge: Some(gauge),
                counted: 0,
            },
        }
    }

    pub fn push(&mut self, d: Departed) {
        self.items.push(d);
        self.held.set(self.items.len());
    }

    /// Every path waiting, to be paired again with what a rescan created.
    pub fn take_all(&mut self) -> Vec<Departed> {
        self.held.set(0);
        std::mem::take(&mut self.items)
    }

    /// The paths whose window passed at `now`: deleted, unless back meanwhile.
    pub fn take_due(&mut self, now: Instant) -> Vec<Departed> {
        if !self.items.iter().any(|d| d.at <= now) {
            return Vec::new();
        }
        let (due, later) = std::mem::take(&mut self.items)
            .into_iter()
            .partition(|d| d.at <= now);
        self.items = later;
        self.held.set(self.items.len());
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Policy;

    fn entry(path: &[u8]) -> Entry {
        Entry::test_file(path)
    }

    #[test]
    fn a_directory_settles_only_after_its_last_change_is_quiet() {
        let t0 = Instant::now();
        let mut s = Settler::default();
        s.defer(b"/var/log/app.log", None, t0);
        s.defer(b"/var/log/app.log.1", None, t0 + Duration::from_millis(800));
        assert!(
            s.take_due(t0 + SETTLE).is_empty(),
            "the second change restarted the wait"
        );
        let due = s.take_due(t0 + Duration::from_millis(800) + SETTLE);
        assert_eq!(due.len(), 1);
        let (dir, settling) = &due[0];
        assert_eq!(dir, b"/var/log");
        assert_eq!(settling.paths.len(), 2);
        assert!(s.take_due(t0 + Duration::from_secs(60)).is_empty(), "taken once");
    }

    #[test]
    fn directories_settle_apart_and_keep_their_writers() {
        let t0 = Instant::now();
        let w = Modifier {
            pid: 7,
            tgid: 7,
            uid: 0,
            comm: "logrotate".into(),
            cgroup_id: 1,
            hook: "path_rename",
        };
        let mut s = Settler::default();
        s.defer(b"/b/x.log", Some(w.clone()), t0);
        s.defer(b"/a/y.log", None, t0 + Duration::from_millis(10));
        s.defer(b"/top", None, t0 + Duration::from_secs(3));
        let due = s.take_due(t0 + Duration::from_secs(2));
        let dirs: Vec<&[u8]> = due.iter().map(|(d, _)| &d[..]).collect();
        assert_eq!(dirs, vec![&b"/a"[..], &b"/b"[..]]);
        assert_eq!(due[1].1.who.get(&b"/b/x.log"[..]), Some(&w));
        assert_eq!(s.take_due(t0 + Duration::from_secs(5))[0].0, b"/");
    }

    #[test]
    fn a_settling_concerns_its_paths_and_moves_from_them() {
        let t0 = Instant::now();
        let mut s = Settler::default();
        s.defer(b"/l/app.log", None, t0);
        let (_, settling) = s.take_due(t0 + SETTLE).pop().unwrap();
        let moved = crate::compare::moved(
            entry(b"/l/app.log"),
            entry(b"/l/app.log.1"),
            crate::compare::Mode::Full,
            Policy::AppendOnly,
        );
        assert!(settling.concerns(&moved));
        assert!(settling.concerns(&Change::deleted(entry(b"/l/app.log"), Policy::AppendOnly)));
        assert!(!settling.concerns(&Change::created(entry(b"/l/other.log"), Policy::AppendOnly)));
    }

    #[test]
    fn departures_wait_for_their_window() {
        let t0 = Instant::now();
        let mut d = Departures::default();
        for (p, ms) in [(&b"/a"[..], 0u64), (b"/b", 300), (b"/c", 600)] {
            d.push(Departed {
                entry: entry(p),
                at: t0 + Duration::from_millis(ms),
                who: None,
            });
        }
        assert!(d.take_due(t0 - Duration::from_millis(1)).is_empty());
        let due: Vec<Vec<u8>> = d
            .take_due(t0 + MOVE_WINDOW)
            .into_iter()
            .map(|x| x.entry.path)
            .collect();
        assert_eq!(due, vec![b"/a".to_vec(), b"/b".to_vec()]);
        assert_eq!(d.take_all().len(), 1);
        assert!(d.take_due(t0 + Duration::from_secs(9)).is_empty());
    }

    #[test]
    fn what_is_held_back_is_counted_until_judged_or_dropped() {
        let gauge = IntGauge::new("fim_rotation_settling", "test").unwrap();
        let t0 = Instant::now();
        let mut s = Settler::counted(gauge.clone());
        let mut d = Departures::counted(gauge.clone());
        s.defer(b"/l/app.log", None, t0);
        s.defer(b"/l/app.log.1", None, t0);
        assert_eq!(gauge.get(), 1, "one directory, however many paths");
        s.defer(b"/m/app.log", None, t0 + Duration::from_millis(500));
        assert_eq!(gauge.get(), 2);
        for (p, ms) in [(&b"/a"[..], 0u64), (b"/b", 400)] {
            d.push(Departed {
                entry: entry(p),
                at: t0 + Duration::from_millis(ms),
                who: None,
            });
        }
        assert_eq!(gauge.get(), 4, "directories and departures share the gauge");
        assert_eq!(s.take_due(t0 + SETTLE).len(), 1);
        assert_eq!(gauge.get(), 3);
        assert_eq!(d.take_due(t0 + MOVE_WINDOW).len(), 1);
        assert_eq!(gauge.get(), 2);
        assert_eq!(d.take_all().len(), 1);
        assert_eq!(gauge.get(), 1);
        // A reload drops the settler with a directory still waiting: its share goes with it.
        drop(s);
        assert_eq!(gauge.get(), 0);
        drop(d);
        assert_eq!(gauge.get(), 0);
        // Uncounted holders (tests, tools) touch no gauge.
        let mut quiet = Settler::default();
        quiet.defer(b"/l/x", None, t0);
        assert_eq!(gauge.get(), 0);
    }
}
