//! Every attribute fimd records is detected when it changes, with the right action.
mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

use common::{Fixture, changes, privileged, sh};

#[test]
fn unchanged_tree_is_clean() {
    let f = Fixture::new();
    f.init();
    let (code, alerts) = f.check();
    assert_eq!((code, alerts.len()), (0, 0), "{alerts:#?}");
}

#[test]
fn same_size_content_change_with_mtime_restored_is_detected() {
    let f = Fixture::new();
    let p = f.path("a.txt");
    f.init();
    let before = fs::metadata(&p).unwrap().modified().unwrap();
    fs::write(&p, "ALPHA\n").unwrap();
    sh(
        "touch",
        &["-r", f.path("sub/b.conf").to_str().unwrap(), p.to_str().unwrap()],
    );
    fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(before)
        .unwrap();
    assert_eq!(fs::metadata(&p).unwrap().modified().unwrap(), before);
    let (code, alerts) = f.check();
    assert_eq!(code, 1);
    let a = f.alert_for(&alerts, &p);
    assert_eq!(a["event"]["action"], "updated");
    assert_eq!(a["event"]["kind"], "alert");
    let c = changes(a);
    assert!(
        c.contains(&"content".into()) && !c.contains(&"size".into()) && !c.contains(&"mtime".into()),
        "{c:?}"
    );
    assert_ne!(
        a["file"]["hash"]["sha256"],
        a["fim"]["previous"]["hash"]["sha256"]
    );
}

#[test]
fn each_attribute_change_is_named() {
    let f = Fixture::new();
    let t = |n: &str| f.path(n);
    for n in [
        "mode", "owner", "group", "xattr", "mtime", "size", "inode", "type", "link", "nlink", "acl",
    ] {
        fs::write(t(n), n).unwrap();
    }
    symlink("mode", t("symlink")).unwrap();
    f.init();

    fs::set_permissions(t("mode"), fs::Permissions::from_mode(0o4755)).unwrap();
    sh(
        "setfattr",
        &["-n", "user.tag", "-v", "x", t("xattr").to_str().unwrap()],
    );
    sh(
        "touch",
        &["-d", "2001-02-03 04:05:06", t("mtime").to_str().unwrap()],
    );
    fs::write(t("size"), "size grew").unwrap();
    // Same content, new inode: the classic replace-by-rename.
    fs::write(t("inode.new"), "inode").unwrap();
    fs::rename(t("inode.new"), t("inode")).unwrap();
    fs::remove_file(t("type")).unwrap();
    fs::create_dir(t("type")).unwrap();
    fs::remove_file(t("symlink")).unwrap();
    symlink("size", t("symlink")).unwrap();
    fs::hard_link(t("nlink"), f.dir.path().join("outside-link")).unwrap();
    sh("setfacl", &["-m", "u:65534:r", t("acl").to_str().unwrap()]);
    let root = privileged("chown tests");
    if root {
        std::os::unix::fs::chown(t("owner"), Some(65534), None).unwrap();
        std::os::unix::fs::lchown(t("group"), None, Some(65534)).unwrap();
    }

    let (code, alerts) = f.check();
    assert_eq!(code, 1);
    let expect = |name: &str, action: &str, want: &[&str]| {
        let a = f.alert_for(&alerts, &t(name));
        assert_eq!(a["event"]["action"], action, "{name}: {a:#}");
        let got = changes(a);
        for w in want {
            assert!(got.contains(&w.to_string()), "{name}: {w} missing from {got:?}");
        }
    };
    expect("mode", "attributes_modified", &["mode", "ctime"]);
    expect("xattr", "attributes_modified", &["xattr"]);
    expect("acl", "attributes_modified", &["xattr"]);
    let acl = f.alert_for(&alerts, &t("acl"));
    assert!(
        acl["fim"]["xattrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "system.posix_acl_access")
    );
    expect("mtime", "attributes_modified", &["mtime"]);
    expect("size", "updated", &["content", "size"]);
    expect("inode", "attributes_modified", &["inode"]);
    expect("type", "updated", &["type"]);
    expect("symlink", "updated", &["link_target"]);
    expect("nlink", "attributes_modified", &["nlink"]);
    if root {
        expect("owner", "attributes_modified", &["uid"]);
        expect("group", "attributes_modified", &["gid"]);
    }
    let mode = f.alert_for(&alerts, &t("mode"));
    assert_eq!(mode["file"]["mode"], "4755");
    assert_eq!(mode["fim"]["previous"]["mode"], "0644");
}

#[test]
fn file_capabilities_are_detected() {
    if !privileged("setcap") {
        return;
    }
    let f = Fixture::new();
    let p = f.path("tool");
    fs::write(&p, "binary").unwrap();
    f.init();
    sh("setcap", &["cap_net_raw+ep", p.to_str().unwrap()]);
    let (code, alerts) = f.check();
    assert_eq!(code, 1);
    let a = f.alert_for(&alerts, &p);
    assert!(changes(a).contains(&"xattr".into()));
    assert!(
        a["fim"]["xattrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "security.capability")
    );
}

#[test]
fn created_deleted_and_moved() {
    let f = Fixture::new();
    f.init();
    fs::write(f.path("new"), "x").unwrap();
    fs::remove_file(f.path("a.txt")).unwrap();
    fs::rename(f.path("sub/b.conf"), f.path("sub/c.conf")).unwrap();
    let (code, alerts) = f.check();
    assert_eq!(code, 1);
    assert_eq!(alerts.len(), 3, "{alerts:#?}");
    assert_eq!(f.alert_for(&alerts, &f.path("new"))["event"]["action"], "created");
    let del = f.alert_for(&alerts, &f.path("a.txt"));
    assert_eq!(del["event"]["action"], "deleted");
    assert_eq!(del["event"]["type"][0], "deletion");
    let mv = f.alert_for(&alerts, &f.path("sub/c.conf"));
    assert_eq!(mv["event"]["action"], "moved");
    assert_eq!(
        mv["fim"]["previous"]["path"],
        f.path("sub/b.conf").display().to_string()
    );
}

#[test]
fn accept_takes_named_paths_and_records_who() {
    let f = Fixture::new();
    f.init();
    fs::write(f.path("a.txt"), "changed").unwrap();
    fs::write(f.path("sub/b.conf"), "changed too").unwrap();
    let r = f.fimd(&[
        "accept",
        "--reason",
        "ticket 42",
        f.path("a.txt").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (code, alerts) = f.check();
    assert_eq!(code, 1);
    assert_eq!(alerts.len(), 1, "only b.conf remains: {alerts:#?}");
    f.alert_for(&alerts, &f.path("sub/b.conf"));
    let outside = f.fimd(&["accept", "/nowhere/else"]);
    assert_eq!(outside.code, 2);
    assert!(
        outside.stderr.contains("not under any watch"),
        "{}",
        outside.stderr
    );
    assert_eq!(f.fimd(&["accept"]).code, 0);
    assert_eq!(f.check().0, 0);
    let history = f.fimd(&["baseline", "history"]).json_lines();
    let accepted: Vec<_> = history
        .iter()
        .filter(|h| h["action"] == "accept updated")
        .collect();
    assert_eq!(accepted.len(), 2, "{history:#?}");
    assert!(accepted[0]["detail"].as_str().unwrap().contains("ticket 42"));
    assert!(accepted[0]["actor"].as_str().unwrap().contains("uid"));
    assert_eq!(history[0]["action"], "init");
}

#[test]
fn exclusions_and_sink() {
    let f =
        Fixture::with_config_extra("exclude = [\"*.swp\", \"/nonexistent\"]\n[alerts]\njsonl = \"ALERTS\"");
    let sink = f.dir.path().join("alerts.jsonl");
    let cfg = fs::read_to_string(&f.config)
        .unwrap()
        .replace("ALERTS", sink.to_str().unwrap());
    fs::write(&f.config, cfg).unwrap();
    fs::write(f.path("x.swp"), "editor junk").unwrap();
    f.init();
    fs::write(f.path("x.swp"), "more junk").unwrap();
    fs::write(f.path("y.swp"), "new junk").unwrap();
    assert_eq!(f.check().0, 0);
    fs::write(f.path("a.txt"), "tampered").unwrap();
    let (code, alerts) = f.check();
    assert_eq!((code, alerts.len()), (1, 1));
    let logged: Vec<serde_json::Value> = fs::read_to_string(&sink)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0]["file"]["path"], f.path("a.txt").display().to_string());
    assert_eq!(logged[0]["host"]["name"], alerts[0]["host"]["name"]);
}

/// Clears the flags that would keep the test's temporary tree from being removed.
struct Unchattr(Vec<std::path::PathBuf>);

impl Drop for Unchattr {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("chattr").arg("-ia").arg(p).status();
        }
    }
}

fn attributes(a: &serde_json::Value) -> Vec<String> {
    a.as_array()
        .unwrap_or_else(|| panic!("not an array: {a}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

/// `chattr` on ext4 (the tests' temporary directory): each flag set or cleared is a named
/// change, with the flags before and after, under `check` and `verify`.
#[test]
fn inode_flags_are_recorded_and_compared() {
    if !privileged("chattr +i and +a") {
        return;
    }
    let f = Fixture::new();
    let t = |n: &str| f.path(n);
    for n in ["planted", "log", "noatime", "nodump"] {
        fs::write(t(n), n).unwrap();
    }
    fs::create_dir(t("dir")).unwrap();
    let _clear = Unchattr(vec![t("planted"), t("log")]);
    sh("chattr", &["+a", t("log").to_str().unwrap()]);
    f.init();
    let show = f.fimd(&["baseline", "show"]).json_lines();
    let log = show.iter().find(|e| e["name"] == "log").unwrap();
    assert_eq!(log["flags"], "a", "{log}");
    assert_eq!(attributes(&log["attributes"]), ["append"]);
    assert_eq!(f.check().0, 0, "flags unchanged: clean");

    sh("chattr", &["+i", t("planted").to_str().unwrap()]);
    // What comes before a log is wiped.
    sh("chattr", &["-a", t("log").to_str().unwrap()]);
    sh("chattr", &["+A", t("noatime").to_str().unwrap()]);
    sh("chattr", &["+d", t("nodump").to_str().unwrap()]);
    sh("chattr", &["+d", t("dir").to_str().unwrap()]);
    let expect = |alerts: &[serde_json::Value], name: &str, now: &[&str], before: &[&str]| {
        let a = f.alert_for(alerts, &t(name));
        assert_eq!(a["event"]["action"], "attributes_modified", "{name}: {a:#}");
        assert!(changes(a).contains(&"flags".into()), "{name}: {a:#}");
        assert_eq!(attributes(&a["file"]["attributes"]), now, "{name}");
        assert_eq!(attributes(&a["fim"]["previous"]["attributes"]), before, "{name}");
    };
    let check = |alerts: &[serde_json::Value]| {
        expect(alerts, "planted", &["immutable"], &[]);
        expect(alerts, "log", &[], &["append"]);
        expect(alerts, "noatime", &["noatime"], &[]);
        expect(alerts, "nodump", &["nodump"], &[]);
        expect(alerts, "dir", &["nodump"], &[]);
    };
    let (code, alerts) = f.check();
    assert_eq!(code, 1);
    assert_eq!(alerts.len(), 5, "{alerts:#?}");
    check(&alerts);
    // verify compares flags too (a snapshot or image keeps them; here, the host's own tree).
    let r = f.fimd(&["verify", "--root", "/", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let alerts = r.json_lines();
    check(&alerts);
    for a in &alerts {
        assert_eq!(changes(a), ["flags"], "verify compares no identity: {a:#}");
    }
    // The human line shows the flags before and after, as lsattr letters.
    let r = f.fimd(&["check"]);
    assert!(r.stdout.contains("flags - -> i"), "{}", r.stdout);
    assert!(r.stdout.contains("flags a -> -"), "{}", r.stdout);

    // Accepted, the new flags are the baseline; taking +i away again is a change.
    assert_eq!(f.fimd(&["accept"]).code, 0);
    assert_eq!(f.check().0, 0);
    sh("chattr", &["-i", t("planted").to_str().unwrap()]);
    let (code, alerts) = f.check();
    assert_eq!(code, 1);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    expect(&alerts, "planted", &[], &["immutable"]);
}

/// A filesystem without inode flags records "none", and that is no change.
#[test]
fn a_filesystem_without_inode_flags_records_none() {
    if !privileged("mounting a filesystem without FS_IOC_GETFLAGS") {
        return;
    }
    // ramfs has no fileattr operations: FS_IOC_GETFLAGS answers ENOTTY.
    let f = Fixture::new();
    let _m = common::Mount::new(&["-t", "ramfs", "ramfs"], &f.tree);
    fs::write(f.path("x"), "x").unwrap();
    f.init();
    let show = f.fimd(&["baseline", "show"]).json_lines();
    let x = show.iter().find(|e| e["name"] == "x").unwrap();
    assert_eq!(x["flags"], "none", "{x}");
    assert!(x.get("attributes").is_none(), "{x}");
    assert_eq!(f.check().0, 0);
}

/// Under the append-only policy growth is an event, but clearing `+a` (what comes before a log
/// is wiped) is an alert even when the log also grew.
#[test]
fn clearing_append_only_on_a_log_alerts_under_the_append_only_policy() {
    if !privileged("chattr +a") {
        return;
    }
    let f = Fixture::with_config_extra("policy = \"append-only\"");
    let log = f.path("app.log");
    fs::write(&log, "line 1\n").unwrap();
    let _clear = Unchattr(vec![log.clone()]);
    sh("chattr", &["+a", log.to_str().unwrap()]);
    f.init();
    use std::io::Write;
    let append = || {
        fs::File::options()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"line 2\n")
            .unwrap()
    };
    append();
    let (code, alerts) = f.check();
    assert_eq!(code, 0, "an append is allowed: {alerts:#?}");
    assert_eq!(f.alert_for(&alerts, &log)["event"]["action"], "appended");
    sh("chattr", &["-a", log.to_str().unwrap()]);
    append();
    let (code, alerts) = f.check();
    assert_eq!(code, 1, "{alerts:#?}");
    let a = f.alert_for(&alerts, &log);
    assert_eq!(a["event"]["action"], "attributes_modified", "{a:#}");
    assert_eq!(a["event"]["kind"], "alert");
    assert!(changes(a).contains(&"flags".into()), "{a:#}");
    assert_eq!(attributes(&a["fim"]["previous"]["attributes"]), ["append"]);
}

/// A file with several names is read once per scan and a large file after the small ones
/// (scan/links.rs, scan/walk/later.rs): every name still gets its file's own digest, and a
/// write through one name is found under each.
#[test]
fn hard_links_and_large_files_each_record_their_own_content() {
    use sha2::{Digest, Sha256};
    let sha256 = |path: &std::path::Path| -> String {
        Sha256::digest(fs::read(path).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let f = Fixture::new();
    let t = |n: &str| f.path(n);
    fs::create_dir_all(t("deep/er")).unwrap();
    // Large (over 1 MiB), in sizes that interleave with the linked one's.
    let content = |seed: u8, len: usize| {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect::<Vec<u8>>()
    };
    for (i, len) in [(1u8, 3 << 20), (2, 1 << 20), (3, (2 << 20) + 17), (4, 5 << 20)] {
        fs::write(t(&format!("large-{i}")), content(i, len)).unwrap();
    }
    fs::write(t("linked"), content(9, (2 << 20) + 5)).unwrap();
    for name in ["deep/linked-2", "deep/er/linked-3", "linked-4"] {
        fs::hard_link(t("linked"), t(name)).unwrap();
    }
    // Small ones with two names.
    for i in 0..40 {
        fs::write(t(&format!("small-{i}")), content(i, 100 + i as usize)).unwrap();
        fs::hard_link(t(&format!("small-{i}")), t(&format!("deep/small-{i}"))).unwrap();
    }
    f.init();

    let show = f.fimd(&["baseline", "show"]).json_lines();
    let mut files = 0;
    for e in show.iter().filter(|e| e["type"] == "file") {
        let path = e["path"].as_str().unwrap();
        let want = sha256(std::path::Path::new(path));
        assert_eq!(e["hash"]["sha256"], want.as_str(), "{path}");
        files += 1;
    }
    assert_eq!(files, 2 + 4 + 4 + 80, "{show:#?}");

    // Same size, new bytes, through one name: all four names differ from the baseline.
    let w = fs::OpenOptions::new()
        .write(true)
        .open(t("deep/linked-2"))
        .unwrap();
    std::os::unix::fs::FileExt::write_at(&w, b"changed", 1 << 20).unwrap();
    drop(w);
    let (code, alerts) = f.check();
    assert_eq!(code, 1);
    let now = sha256(&t("linked"));
    for name in ["linked", "deep/linked-2", "deep/er/linked-3", "linked-4"] {
        let a = f.alert_for(&alerts, &t(name));
        assert!(changes(a).contains(&"content".to_string()), "{name}: {a:#}");
        assert_eq!(a["file"]["hash"]["sha256"], now.as_str(), "{name}");
    }
}
