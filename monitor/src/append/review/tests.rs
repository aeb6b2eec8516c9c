//! The review of rotations, on real files in a temporary directory.
use std::io::Write;

use sha2::{Digest, Sha256};

use super::*;

/// A directory of logs watched append-only with `rotate = ["app.log.*"]`, and what the
/// baseline says of it.
struct Logs {
    dir: tempfile::TempDir,
    settings: Settings,
    base: HashMap<Vec<u8>, Entry>,
}

fn entry_of(path: &Path) -> Entry {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    Entry {
        path: path.as_os_str().as_bytes().to_vec(),
        kind: FileKind::Regular,
        size: m.len(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        ino: m.ino(),
        dev: m.dev(),
        nlink: m.nlink(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        sha256: Some(Sha256::digest(std::fs::read(path).unwrap()).into()),
        link_target: None,
        xattrs: Default::default(),
        flags: None,
        birth_ns: None,
        generation: None,
    }
}

impl Logs {
    fn new(log: &str) -> Logs {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.log"), log).unwrap();
        let text = format!(
            "state_dir = \"/nonexistent\"\n[[watch]]\npath = {:?}\npolicy = \"append-only\"\n\
             rotate = [\"app.log.*\"]\n",
            dir.path().display().to_string()
        );
        let settings = Settings::parse(Path::new("fimd.toml"), &text).unwrap();
        let mut logs = Logs {
            dir,
            settings,
            base: HashMap::new(),
        };
        logs.base = logs.now();
        logs
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn now(&self) -> HashMap<Vec<u8>, Entry> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| entry_of(&e.unwrap().path()))
            .map(|e| (e.path.clone(), e))
            .collect()
    }

    /// What a comparison finds (path by path, then moves paired), judged; the ledger
    /// applied to the baseline as the store does (row by row, the last one wins).
    fn look(&mut self) -> Vec<Change> {
        let now = self.now();
        let mut changes = Vec::new();
        let (mut gone, mut new) = (Vec::new(), Vec::new());
        for (p, b) in &self.base {
            match now.get(p) {
                Some(n) => {
                    let d = crate::compare::diff(b, n, Mode::Full);
                    if !d.is_empty() {
                        let content = d.iter().any(|k| ["content", "size"].contains(k));
                        let action = if content {
                            Action::Updated
                        } else {
                            Action::AttributesModified
                        };
                        changes.push(Change::alert(
                            action,
                            Policy::AppendOnly,
                            Some(b.clone()),
                            Some(n.clone()),
                            d,
                        ));
                    }
                }
                None => gone.push(b.clone()),
            }
        }
        new.extend(now.values().filter(|n| !self.base.contains_key(&n.path)).cloned());
        let pairing = crate::moves::pair(gone, new);
        for (o, n) in pairing.moved {
            changes.push(crate::compare::moved(o, n, Mode::Full, Policy::AppendOnly));
        }
        changes.extend(
            pairing
                .deleted
                .into_iter()
                .map(|e| Change::deleted(e, Policy::AppendOnly)),
        );
        changes.extend(
            pairing
                .created
                .into_iter()
                .map(|e| Change::created(e, Policy::AppendOnly)),
        );
        changes.sort_by(|a, b| a.path().cmp(b.path()));
        let retired = HashSet::new();
        let checkpoints = HashMap::new();
        let ctx = Context {
            settings: &self.settings,
            root: Path::new("/"),
            mode: Mode::Full,
            base: &self.base,
            retired: &retired,
            checkpoints: &checkpoints,
        };
        let out = review(&ctx, changes);
        for row in out.ledger {
            match row.entry {
                Some(e) => self.base.insert(row.path, e),
                None => self.base.remove(&row.path),
            };
        }
        out.changes
    }

    fn mv(&self, from: &str, to: &str) {
        std::fs::rename(self.path(from), self.path(to)).unwrap();
    }
}

fn alerts(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .filter(|c| c.kind == crate::compare::Kind::Alert)
        .map(|c| format!("{} {}", c.action.as_str(), String::from_utf8_lossy(c.path())))
        .collect()
}

#[test]
fn a_chain_shifted_between_two_looks_is_one_rotation() {
    let mut l = Logs::new("a\n");
    l.mv("app.log", "app.log.1");
    std::fs::write(l.path("app.log"), "b\n").unwrap();
    assert_eq!(alerts(&l.look()), Vec::<String>::new(), "first generation");
    // Every name is replaced by another inode; none is gone.
    l.mv("app.log.1", "app.log.2");
    l.mv("app.log", "app.log.1");
    std::fs::write(l.path("app.log"), "c\n").unwrap();
    let seen = l.look();
    assert_eq!(alerts(&seen), Vec::<String>::new(), "second generation");
    assert_eq!(
        seen.iter().filter(|c| c.action == Action::Rotated).count(),
        2,
        "app.log -> .1 and .1 -> .2"
    );
    assert!(l.look().is_empty(), "the baseline took the chain");
    // Delaycompress after the shift: .1 -> .2, then .2 compressed, all between two looks.
    l.mv("app.log.2", "app.log.3");
    l.mv("app.log.1", "app.log.2");
    l.mv("app.log", "app.log.1");
    std::fs::write(l.path("app.log"), "d\n").unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&std::fs::read(l.path("app.log.2")).unwrap())
        .unwrap();
    std::fs::write(l.path("app.log.2.gz"), gz.finish().unwrap()).unwrap();
    std::fs::remove_file(l.path("app.log.2")).unwrap();
    assert_eq!(
        alerts(&l.look()),
        Vec::<String>::new(),
        "compressed after the shift"
    );
    assert!(l.look().is_empty());
    // A rotated file whose content changed at its new name is still an alert.
    l.mv("app.log.3", "app.log.4");
    std::fs::write(l.path("app.log.4"), "A\n").unwrap();
    let seen = alerts(&l.look());
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].ends_with("app.log.4"), "{seen:?}");
}

#[test]
fn copytruncate_seen_late_is_a_rotation_whatever_the_new_length() {
    for line in ["x\n", "a line at least as long as the verified length\n"] {
        let mut l = Logs::new("first\nsecond\n");
        std::fs::copy(l.path("app.log"), l.path("app.log.1")).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(l.path("app.log"))
            .unwrap();
        f.set_len(0).unwrap();
        (&f).write_all(line.as_bytes()).unwrap();
        let seen = l.look();
        assert_eq!(alerts(&seen), Vec::<String>::new(), "{line:?}");
        let log = seen
            .iter()
            .find(|c| c.path() == l.path("app.log").as_os_str().as_bytes());
        assert_eq!(log.map(|c| c.action), Some(Action::Rotated), "{line:?}");
        assert!(l.look().is_empty(), "{line:?}");
        // No copy this time: the same rewrite is an alert.
        std::fs::write(l.path("app.log"), "y".repeat(line.len() + 10)).unwrap();
        assert_eq!(alerts(&l.look()).len(), 1, "{line:?}");
    }
}
