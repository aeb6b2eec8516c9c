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
        Logs::with(log, "")
    }

    /// With more keys in the watch table.
    fn with(log: &str, keys: &str) -> Logs {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.log"), log).unwrap();
        let text = format!(
            "state_dir = \"/nonexistent\"\n[[watch]]\npath = {:?}\npolicy = \"append-only\"\n\
             rotate = [\"app.log.*\"]\n{keys}\n",
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
                        let content = d
                            .iter()
                            .any(|k| matches!(k, Attribute::Content | Attribute::Size));
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

fn actions(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| {
            let kind = if c.kind == crate::compare::Kind::Alert {
                "alert"
            } else {
                "event"
            };
            format!(
                "{kind} {} {}",
                c.action.as_str(),
                name_of(c.path()).escape_ascii()
            )
        })
        .collect()
}

const KEEPS_NONE: &str = "rotate_keeps_none = true";

/// logrotate `rotate 0`: the log renamed, a new one created, the renamed one deleted (create),
/// or the log truncated with no copy (copytruncate), in the orders that can be seen between two
/// looks. With `rotate_keeps_none` each is one rotation; without it, each is an alert.
#[test]
fn a_rotation_keeping_nothing_is_an_event_only_where_configured() {
    type Step = fn(&Logs);
    let create: Step = |l| {
        l.mv("app.log", "app.log.1");
        std::fs::write(l.path("app.log"), "").unwrap();
        std::fs::remove_file(l.path("app.log.1")).unwrap();
    };
    let create_then_written: Step = |l| {
        l.mv("app.log", "app.log.1");
        std::fs::remove_file(l.path("app.log.1")).unwrap();
        std::fs::write(l.path("app.log"), "x\n").unwrap();
    };
    let copytruncate: Step = copytruncate_in_place;
    let copytruncate_then_written: Step = |l| {
        copytruncate_in_place(l);
        std::fs::OpenOptions::new()
            .append(true)
            .open(l.path("app.log"))
            .unwrap()
            .write_all(b"y\n")
            .unwrap();
    };
    for (name, step) in [
        ("create", create),
        ("create, then written", create_then_written),
        ("copytruncate", copytruncate),
        ("copytruncate, then written", copytruncate_then_written),
    ] {
        let mut l = Logs::with("verified line one\nverified line two\n", KEEPS_NONE);
        for generation in 0..3 {
            step(&l);
            let seen = l.look();
            assert_eq!(
                actions(&seen),
                vec!["event rotated app.log"],
                "{name}, generation {generation}"
            );
            let r = &seen[0].extra;
            let rotation = &r.iter().find(|(k, _)| *k == "rotation").unwrap().1;
            assert_eq!(rotation["kept_none"], true, "{name}");
            assert!(rotation["lost_bytes"].as_u64().unwrap() > 0, "{name}: {rotation}");
            assert!(l.look().is_empty(), "{name}: the baseline took it");
            // The next generation is verified again from its start.
            std::fs::OpenOptions::new()
                .append(true)
                .open(l.path("app.log"))
                .unwrap()
                .write_all(b"the next generation, longer than any line before it\n")
                .unwrap();
            assert_eq!(actions(&l.look()), vec!["event appended app.log"], "{name}");
        }
        // Without the setting: the same is an alert.
        let mut l = Logs::new("verified line one\nverified line two\n");
        step(&l);
        assert_eq!(alerts(&l.look()).len(), 1, "{name} without rotate_keeps_none");
    }
}

/// Under `rotate_keeps_none`, what is not a log restarting empty or shorter with no rotated
/// copy still alerts.
#[test]
fn rotate_keeps_none_allows_nothing_else() {
    let text = "verified line one\nverified line two\n";
    // Replaced by a longer log: not a restart.
    let mut l = Logs::with(text, KEEPS_NONE);
    l.mv("app.log", "app.log.1");
    std::fs::remove_file(l.path("app.log.1")).unwrap();
    std::fs::write(l.path("app.log"), "z".repeat(text.len() + 1)).unwrap();
    assert_eq!(alerts(&l.look()).len(), 1, "longer");
    // Rewritten in place at the same length.
    let mut l = Logs::with(text, KEEPS_NONE);
    std::fs::write(l.path("app.log"), "Z".repeat(text.len())).unwrap();
    assert_eq!(alerts(&l.look()).len(), 1, "rewritten");
    // Truncated while a forged rotated file appears: both alert.
    let mut l = Logs::with(text, KEEPS_NONE);
    std::fs::write(l.path("app.log.1"), "forged history\n").unwrap();
    copytruncate_in_place(&l);
    let seen = alerts(&l.look());
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Truncated and its mode changed.
    let mut l = Logs::with(text, KEEPS_NONE);
    copytruncate_in_place(&l);
    std::fs::set_permissions(
        l.path("app.log"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    assert_eq!(alerts(&l.look()).len(), 1, "mode");
    // Deleted, no new log.
    let mut l = Logs::with(text, KEEPS_NONE);
    std::fs::remove_file(l.path("app.log")).unwrap();
    assert_eq!(
        alerts(&l.look()),
        vec![format!("deleted {}", l.path("app.log").display())]
    );
    // A rotation that kept a copy is still judged by the copy.
    let mut l = Logs::with(text, KEEPS_NONE);
    l.mv("app.log", "app.log.1");
    std::fs::write(l.path("app.log"), "").unwrap();
    let seen = l.look();
    assert!(alerts(&seen).is_empty(), "{:?}", actions(&seen));
    assert!(
        actions(&seen).contains(&"event rotated app.log.1".to_string()),
        "{:?}",
        actions(&seen)
    );
}

fn copytruncate_in_place(l: &Logs) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(l.path("app.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
}
