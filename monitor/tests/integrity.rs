//! The baseline survives crashes and refuses tampering; `verify` checks copies and read-only mounts.
mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fixture, privileged, sh, t};
use rand::Rng;

fn export(f: &Fixture) -> (i32, String) {
    let r = f.fimd(&["baseline", "export"]);
    (r.code, r.stdout)
}

#[test]
fn kill_9_during_init_leaves_old_or_new_baseline() {
    let f = Fixture::new();
    for d in 0..20 {
        let dir = f.path(&format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        for i in 0..150 {
            fs::write(dir.join(format!("f{i}")), format!("{d}/{i}").repeat(i + 1)).unwrap();
        }
    }
    f.init();
    let (_, mut old) = export(&f);
    for d in 0..20 {
        fs::write(f.path(&format!("d{d}/f0")), "state two").unwrap();
        fs::write(f.path(&format!("d{d}/extra")), "added").unwrap();
    }
    // The new state's baseline, built in a second state directory for comparison.
    let t0 = Instant::now();
    let twin = Fixture::new();
    fs::write(
        &twin.config,
        fs::read_to_string(&f.config)
            .unwrap()
            .replace(f.state.to_str().unwrap(), twin.state.to_str().unwrap()),
    )
    .unwrap();
    twin.init();
    let full = t0.elapsed();
    let (_, new) = export(&twin);
    assert_ne!(old, new);

    let mut rng = rand::rng();
    let (mut saw_old, mut saw_new) = (0, 0);
    for _ in 0..40 {
        let mut child = Command::new(common::FIMD)
            .arg("-c")
            .arg(&f.config)
            .arg("init")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let wait = rng.random_range(0..=full.as_micros() as u64 * 3 / 2);
        std::thread::sleep(Duration::from_micros(wait));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let (code, now) = export(&f);
        assert_eq!(code, 0, "the baseline does not open after kill -9 at {wait} µs");
        if now == old {
            saw_old += 1;
        } else if now == new {
            saw_new += 1;
            // Put the old baseline back so the next trial can again land on either side.
            for d in 0..20 {
                fs::write(f.path(&format!("d{d}/f0")), "").unwrap();
            }
            f.init();
            let (_, back) = export(&f);
            old.clone_from(&back);
            for d in 0..20 {
                fs::write(f.path(&format!("d{d}/f0")), "state two").unwrap();
            }
        } else {
            panic!("after kill -9 at {wait} µs the baseline is neither the old nor the new one");
        }
    }
    eprintln!("kill -9 trials: {saw_old} kept the old baseline, {saw_new} committed the new one");
    assert!(
        saw_old > 0,
        "no kill landed before the commit: the trials tested nothing"
    );
}

#[test]
fn an_edited_database_is_refused() {
    let f = Fixture::new();
    f.init();
    let db = rusqlite::Connection::open(f.state.join("baseline.db")).unwrap();
    // What an intruder would do: make the baseline agree with a trojaned file.
    fs::write(f.path("a.txt"), "trojan").unwrap();
    db.execute(
        "UPDATE entries SET size = 6, sha256 = NULL WHERE path = ?1",
        [f.path("a.txt").to_str().unwrap().as_bytes()],
    )
    .unwrap();
    drop(db);
    for args in [
        &["check"][..],
        &["baseline", "show"],
        &["accept"],
        &["verify", "--root", "/"],
    ] {
        let r = f.fimd(args);
        assert_eq!(r.code, 2, "{args:?} accepted an edited baseline");
        assert!(
            r.stderr.contains("fails its integrity seal"),
            "{args:?}: {}",
            r.stderr
        );
    }
    // Deleting a row is caught too; so is a different key.
    f.init();
    let db = rusqlite::Connection::open(f.state.join("baseline.db")).unwrap();
    db.execute(
        "DELETE FROM entries WHERE path = ?1",
        [f.path("a.txt").to_str().unwrap().as_bytes()],
    )
    .unwrap();
    drop(db);
    assert_eq!(f.fimd(&["check"]).code, 2);
    f.init();
    fs::write(f.state.join("hmac.key"), [7u8; 32]).unwrap();
    let r = f.fimd(&["check"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("fails its integrity seal"));
    fs::remove_file(f.state.join("hmac.key")).unwrap();
    let r = f.fimd(&["check"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("cannot read the baseline key"), "{}", r.stderr);
}

#[test]
fn check_without_a_baseline_says_what_to_do() {
    let f = Fixture::new();
    let r = f.fimd(&["check"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("fimd init"), "{}", r.stderr);
}

/// Copies the fixture tree to `image` + the tree's own path, as a golden image would hold it.
fn image_of(f: &Fixture) -> std::path::PathBuf {
    let image = f.dir.path().join("image");
    let dest = image.join(f.tree.strip_prefix("/").unwrap());
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    sh("cp", &["-a", f.tree.to_str().unwrap(), dest.to_str().unwrap()]);
    image
}

#[test]
fn verify_a_copy_of_the_tree() {
    let f = Fixture::new();
    sh(
        "setfattr",
        &[
            "-n",
            "user.label",
            "-v",
            "gold",
            f.path("a.txt").to_str().unwrap(),
        ],
    );
    f.init();
    let image = image_of(&f);
    let img = image.to_str().unwrap();
    // Different inodes and ctimes, same content and attributes: clean.
    let r = f.fimd(&["verify", "--root", img, "--json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let copied = image.join(f.path("sub/b.conf").strip_prefix("/").unwrap());
    fs::write(&copied, "key = evil\n").unwrap();
    let r = f.fimd(&["verify", "--root", img, "--json"]);
    assert_eq!(r.code, 1);
    let alerts = r.json_lines();
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        alerts[0]["file"]["path"],
        f.path("sub/b.conf").display().to_string()
    );
    assert_eq!(alerts[0]["fim"]["scan"], "verify");
    assert_eq!(alerts[0]["fim"]["root"], img);
    // An image can also be the baseline's source: init --root, then check the copy again.
    let r = f.fimd(&["init", "--root", img]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(f.fimd(&["verify", "--root", img]).code, 0);
    let r = f.fimd(&["check"]);
    assert_eq!(
        r.code, 1,
        "the host differs from the image in b.conf: {}",
        r.stdout
    );
}

#[test]
fn verify_a_read_only_bind_mount_without_writing() {
    if !privileged("bind mounts") {
        return;
    }
    let f = Fixture::new();
    f.init();
    let image = f.dir.path().join("ro");
    let mnt = image.join(f.tree.strip_prefix("/").unwrap());
    fs::create_dir_all(&mnt).unwrap();
    let _bind = common::Mount::new(&["--bind", f.tree.to_str().unwrap()], &mnt);
    sh("mount", &["-o", "remount,bind,ro", mnt.to_str().unwrap()]);
    assert!(
        fs::write(mnt.join("probe"), "x").is_err(),
        "the bind mount is not read-only"
    );
    let atime = |p: &std::path::Path| fs::metadata(p).unwrap().accessed().unwrap();
    let before = atime(&f.path("a.txt"));
    let r = f.fimd(&["verify", "--root", image.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(before, atime(&f.path("a.txt")), "verify changed an access time");
    fs::write(f.path("a.txt"), "changed underneath").unwrap();
    let r = f.fimd(&["verify", "--root", image.to_str().unwrap(), "--json"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.json_lines()[0]["event"]["action"], "updated");
}

fn mode_of(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn the_state_is_private_and_looser_modes_are_repaired_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    f.init();
    let db = f.state.join("baseline.db");
    let key = f.state.join("hmac.key");
    assert_eq!(mode_of(&f.state), 0o700, "state directory");
    assert_eq!(mode_of(&db), 0o600, "baseline.db");
    assert_eq!(mode_of(&key), 0o600, "hmac.key");
    // Each member: one path made too open, then a check that must repair it, say so and pass.
    let members: [(&std::path::Path, u32, u32); 4] = [
        (&f.state, 0o755, 0o700),
        (&db, 0o644, 0o600),
        (&key, 0o640, 0o600),
        (&db, 0o606, 0o600),
    ];
    for (path, loose, fixed) in members {
        fs::set_permissions(path, fs::Permissions::from_mode(loose)).unwrap();
        let r = f.fimd(&["check"]);
        assert_eq!(r.code, 0, "{}: {}", path.display(), r.stderr);
        assert!(
            r.stderr
                .contains(&format!("{} was mode {loose:04o}", path.display())),
            "no warning naming {} {loose:o}: {}",
            path.display(),
            r.stderr
        );
        assert_eq!(mode_of(path), fixed, "{} not repaired", path.display());
        // Repaired once: the next run has nothing to say.
        let r = f.fimd(&["check"]);
        assert!(!r.stderr.contains("was mode"), "{}", r.stderr);
    }
    // The WAL companions SQLite makes take the database's mode.
    let r = f.fimd(&["accept"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for e in fs::read_dir(&f.state).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode_of(&p), 0o600, "{}", p.display());
    }
}

#[test]
fn state_owned_by_another_user_is_refused() {
    if !privileged("chown of the state files") {
        return;
    }
    let f = Fixture::new();
    f.init();
    for name in [None, Some("baseline.db"), Some("hmac.key")] {
        let path = name.map_or_else(|| f.state.clone(), |n| f.state.join(n));
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let r = f.fimd(&["check"]);
        assert_eq!(r.code, 2, "{}: {}", path.display(), r.stderr);
        assert!(
            r.stderr
                .contains(&format!("{} belongs to uid 65534", path.display())),
            "{}: {}",
            path.display(),
            r.stderr
        );
        std::os::unix::fs::chown(&path, Some(0), None).unwrap();
        assert_eq!(f.fimd(&["check"]).code, 0);
    }
}

#[test]
fn a_database_path_that_is_not_a_database_is_refused_and_nothing_is_created() {
    let f = Fixture::new();
    f.init();
    let db = f.state.join("baseline.db");
    let good = f.dir.path().join("good.db");
    fs::copy(&db, &good).unwrap();
    let good_bytes = fs::read(&good).unwrap();
    let elsewhere = f.dir.path().join("elsewhere.db");
    type Setup = fn(&std::path::Path, &std::path::Path, &std::path::Path);
    let members: [(&str, Setup, &str); 5] = [
        (
            "empty file",
            |db, _, _| fs::write(db, "").unwrap(),
            "is empty (0 bytes",
        ),
        (
            "dangling symlink",
            |db, _, elsewhere| std::os::unix::fs::symlink(elsewhere, db).unwrap(),
            "is a symbolic link to",
        ),
        (
            // A valid database behind the link: following it would pass.
            "symlink to a database",
            |db, good, _| std::os::unix::fs::symlink(good, db).unwrap(),
            "is a symbolic link to",
        ),
        (
            "FIFO",
            |db, _, _| nix::unistd::mkfifo(db, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap(),
            "is a fifo, not a regular file",
        ),
        (
            "directory",
            |db, _, _| fs::create_dir(db).unwrap(),
            "is a dir, not a regular file",
        ),
    ];
    for (what, setup, says) in members {
        if db.is_dir() {
            fs::remove_dir(&db).unwrap();
        } else {
            fs::remove_file(&db).unwrap();
        }
        setup(&db, &good, &elsewhere);
        for args in [
            &["check"][..],
            &["verify", "--root", "/"],
            &["accept"],
            &["baseline", "show"],
            &["report"],
            &["init"],
        ] {
            let r = f.fimd(args);
            assert_eq!(r.code, 2, "{what}: {args:?} did not refuse: {}", r.stderr);
            assert!(
                r.stderr.contains(&db.display().to_string()) && r.stderr.contains(says),
                "{what}: {args:?} does not name the path and {says:?}: {}",
                r.stderr
            );
            assert!(
                !r.stderr.contains("no baseline in"),
                "{what}: {args:?} advises a new baseline: {}",
                r.stderr
            );
            assert!(
                !elsewhere.exists(),
                "{what}: {args:?} created the symlink's target"
            );
        }
    }
    // The linked database was never written to.
    assert_eq!(fs::read(&good).unwrap(), good_bytes);
    // A missing database is simply no baseline, and check creates nothing.
    fs::remove_dir(&db).unwrap();
    let r = f.fimd(&["check"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no baseline in"), "{}", r.stderr);
    assert!(!db.exists(), "check created a database");
}

#[test]
fn a_baseline_from_an_older_fimd_asks_for_init_and_init_upgrades_it() {
    // What fimd with schema version 3 left: no birth times, inode generations or alerted
    // differences; version 2 had no inode flags either.
    let v3 = "ALTER TABLE entries DROP COLUMN birth_ns; ALTER TABLE entries DROP COLUMN generation; \
              ALTER TABLE ledger DROP COLUMN birth_ns; ALTER TABLE ledger DROP COLUMN generation; \
              DROP TABLE alerted;";
    for (version, downgrade) in [
        (3, format!("{v3} PRAGMA user_version = 3;")),
        (
            2,
            format!(
                "{v3} ALTER TABLE entries DROP COLUMN flags; ALTER TABLE ledger DROP COLUMN flags; PRAGMA user_version = 2;"
            ),
        ),
    ] {
        let f = Fixture::new();
        f.init();
        let db = rusqlite::Connection::open(f.state.join("baseline.db")).unwrap();
        db.execute_batch(&downgrade).unwrap();
        drop(db);
        for args in [&["check"][..], &["accept"], &["baseline", "show"]] {
            let r = f.fimd(args);
            assert_eq!(r.code, 2, "{args:?}");
            assert!(
                r.stderr
                    .contains(&format!("schema version {version}, from an older fimd"))
                    && r.stderr.contains("`fimd init`"),
                "{args:?}: {}",
                r.stderr
            );
        }
        let r = f.fimd(&["init"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(f.check().0, 0);
    }
}

fn generation(alert: &serde_json::Value) -> u64 {
    alert["fim"]["baseline"]["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("no fim.baseline.generation: {alert:#}"))
}

/// A sealed older copy of the database put back after an accept verifies (it is a genuine
/// baseline); what gives it away is its generation, carried by every alert and evidence record,
/// going down.
#[test]
fn a_rolled_back_baseline_shows_as_its_generation_going_down() {
    let f = Fixture::new();
    let r = f.fimd(&["init"]);
    assert_eq!(r.code, 0);
    assert!(r.stderr.contains("baseline generation 1 sealed"), "{}", r.stderr);
    let db = f.state.join("baseline.db");
    let saved = f.dir.path().join("gen1.db");
    assert!(
        !f.state.join("baseline.db-wal").exists(),
        "the WAL is checkpointed at close"
    );
    fs::copy(&db, &saved).unwrap();

    fs::write(f.path("a.txt"), "approved change").unwrap();
    let r = f.fimd(&["accept", "--reason", "ticket 7"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("baseline generation 2"), "{}", r.stderr);
    fs::write(f.path("sub/b.conf"), "tampered").unwrap();
    let (code, alerts) = f.check();
    assert_eq!(code, 1);
    let now = f.alert_for(&alerts, &f.path("sub/b.conf"));
    assert_eq!(generation(now), 2);
    let seal2 = now["fim"]["baseline"]["seal"].as_str().unwrap().to_owned();
    assert_eq!(seal2.len(), 64, "HMAC-SHA256 in hex");
    // Init also moves on: a new baseline never reuses a number.
    let r = f.fimd(&["init"]);
    assert!(r.stderr.contains("baseline generation 3 sealed"), "{}", r.stderr);
    let r = f.fimd(&["accept"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stderr.contains("nothing to accept"),
        "no change, no new generation: {}",
        r.stderr
    );
    fs::write(f.path("sub/b.conf"), "tampered again").unwrap();
    let (_, alerts) = f.check();
    assert_eq!(generation(f.alert_for(&alerts, &f.path("sub/b.conf"))), 3);

    // The intruder puts generation 1 back: it verifies, and the accept is gone from history.
    fs::copy(&saved, &db).unwrap();
    let history = f.fimd(&["baseline", "history"]).json_lines();
    assert!(history.iter().all(|h| h["action"] == "init"), "{history:#?}");
    let (code, alerts) = f.check();
    assert_eq!(code, 1);
    for a in &alerts {
        assert_eq!(generation(a), 1, "{a:#}");
        assert_ne!(a["fim"]["baseline"]["seal"], seal2.as_str());
    }
    let r = f.fimd(&["verify", "--root", "/", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("baseline generation 1"), "{}", r.stderr);
    for a in r.json_lines() {
        assert_eq!(generation(&a), 1, "{a:#}");
    }
    // The evidence of the check carries it too.
    let r = f.fimd(&["report", "--json"]);
    let last = r.json_lines().pop().unwrap();
    assert_eq!(last["baseline_generation"], 1, "{last:#}");
    assert_eq!(last["baseline_seal"], alerts[0]["fim"]["baseline"]["seal"]);
}

/// `(action, path, previous path)` of every alert of `fimd check --json`, sorted.
fn decisions(f: &Fixture) -> Vec<common::Decision> {
    let (_, alerts) = f.check();
    common::decided(alerts.iter())
}

fn ino(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(p).unwrap().ino()
}

/// Makes `old` (a file, or a directory), baselines the tree, removes `old` and makes new
/// entries in `dir` until one gets the inode number just freed (ext4 hands it out again at
/// once, unless a test running beside this one took it first: then all over again). The others
/// are removed. Returns the new entry's path.
fn reuse_inode(
    f: &Fixture,
    old: &std::path::Path,
    dir: &std::path::Path,
    directory: bool,
) -> std::path::PathBuf {
    let make = |p: &std::path::Path| {
        if directory {
            fs::create_dir(p).unwrap();
        } else {
            fs::write(p, format!("content of {}\n", p.display())).unwrap();
        }
    };
    let remove = |p: &std::path::Path| {
        if directory {
            fs::remove_dir(p).unwrap();
        } else {
            fs::remove_file(p).unwrap();
        }
    };
    for _ in 0..20 {
        make(old);
        f.init();
        let wanted = ino(old);
        remove(old);
        for i in 0..50 {
            let p = dir.join(format!("n{i}"));
            make(&p);
            if ino(&p) == wanted {
                return p;
            }
            remove(&p);
        }
    }
    panic!("the inode number of {} was never handed out again", old.display());
}

#[test]
fn a_reused_inode_number_is_a_deletion_and_a_creation_not_a_move() {
    let f = Fixture::new();
    let n = reuse_inode(&f, &f.path("b"), &f.tree, false);
    assert_eq!(
        decisions(&f),
        vec![t("created", &n, ""), t("deleted", &f.path("b"), "")],
        "a new file with b's inode number"
    );
    fs::remove_file(&n).unwrap();
    let nd = reuse_inode(&f, &f.path("bdir"), &f.path("sub"), true);
    assert_eq!(
        decisions(&f),
        vec![t("created", &nd, ""), t("deleted", &f.path("bdir"), "")],
        "a new directory with bdir's inode number"
    );
}

#[test]
fn a_rename_is_a_move_and_a_copy_then_removal_is_not() {
    let f = Fixture::new();
    fs::create_dir_all(f.path("d/e")).unwrap();
    fs::write(f.path("d/g"), "g\n").unwrap();
    fs::write(f.path("d/e/h"), "h\n").unwrap();
    fs::write(f.path("x"), "x\n").unwrap();
    fs::write(f.path("c"), "c\n").unwrap();
    f.init();
    // A directory with children renamed, a file moved into a subdirectory, a file copied to
    // another inode and its original removed.
    fs::rename(f.path("d"), f.path("d2")).unwrap();
    fs::rename(f.path("x"), f.path("sub/x")).unwrap();
    fs::copy(f.path("c"), f.path("c2")).unwrap();
    fs::remove_file(f.path("c")).unwrap();
    let tree = f.tree.display().to_string();
    let from = |rel: &str| format!("{tree}/{rel}");
    let mut want = vec![
        t("moved", &f.path("d2"), &from("d")),
        t("moved", &f.path("d2/e"), &from("d/e")),
        t("moved", &f.path("d2/e/h"), &from("d/e/h")),
        t("moved", &f.path("d2/g"), &from("d/g")),
        t("moved", &f.path("sub/x"), &from("x")),
        t("created", &f.path("c2"), ""),
        t("deleted", &f.path("c"), ""),
    ];
    want.sort();
    assert_eq!(decisions(&f), want);
}
