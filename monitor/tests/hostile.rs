//! Trees built to trip a scanner: odd names, loops, FIFOs, unreadable and growing files.
mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use common::{Fixture, changes, privileged, run};

#[test]
fn non_utf8_and_newline_names_survive_intact() {
    let f = Fixture::new();
    let odd: Vec<Vec<u8>> = vec![
        b"bad\xffname".to_vec(),
        b"new\nline".to_vec(),
        b"back\\slash\xc3".to_vec(),
    ];
    for n in &odd {
        fs::write(f.tree.join(OsStr::from_bytes(n)), "v1").unwrap();
    }
    f.init();
    for n in &odd {
        fs::write(f.tree.join(OsStr::from_bytes(n)), "v2").unwrap();
    }
    let (code, alerts) = f.check();
    assert_eq!(code, 1);
    assert_eq!(alerts.len(), odd.len(), "{alerts:#?}");
    let b64 = base64::engine::general_purpose::STANDARD;
    for n in &odd {
        let mut full = f.tree.as_os_str().as_bytes().to_vec();
        full.push(b'/');
        full.extend_from_slice(n);
        let hit = alerts.iter().find(|a| match a["fim"]["path_bytes_b64"].as_str() {
            Some(raw) => b64.decode(raw).unwrap() == full,
            None => a["file"]["path"].as_str().unwrap().as_bytes() == &full[..],
        });
        assert!(
            hit.is_some(),
            "no alert carries {:?}: {alerts:#?}",
            String::from_utf8_lossy(&full)
        );
    }
    // sha256sum can check the export, names with newlines and backslashes included.
    let export = f.fimd(&["baseline", "export"]);
    assert_eq!(export.code, 0);
    for n in &odd {
        fs::write(f.tree.join(OsStr::from_bytes(n)), "v1").unwrap();
    }
    let sums = f.dir.path().join("sums");
    fs::write(&sums, &export.raw_stdout).unwrap();
    let out = Command::new("sha256sum")
        .arg("-c")
        .arg("--quiet")
        .arg(&sums)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sha256sum -c: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn deep_trees_and_symlink_loops() {
    let f = Fixture::new();
    let mut deep = f.tree.clone();
    for i in 0..300 {
        deep.push(format!("d{i:03}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("leaf"), "deep").unwrap();
    symlink("loop2", f.path("loop1")).unwrap();
    symlink("loop1", f.path("loop2")).unwrap();
    symlink("..", f.path("sub/up")).unwrap();
    symlink("/", f.path("root")).unwrap();
    symlink("/etc/passwd", f.path("escape")).unwrap();
    f.init();
    let show = f.fimd(&["baseline", "show"]).json_lines();
    assert!(
        show.iter()
            .any(|e| e["path"].as_str().unwrap().ends_with("d299/leaf"))
    );
    let loop1 = show.iter().find(|e| e["name"] == "loop1").unwrap();
    assert_eq!(loop1["type"], "symlink");
    assert_eq!(loop1["target_path"], "loop2");
    // Nothing outside the tree was followed into.
    assert!(
        show.iter()
            .all(|e| e["path"].as_str().unwrap().starts_with(f.tree.to_str().unwrap()))
    );
    assert!(show.len() < 320, "{} entries: a link was followed", show.len());
    fs::write(deep.join("leaf"), "changed").unwrap();
    let (code, alerts) = f.check();
    assert_eq!((code, alerts.len()), (1, 1));
}

#[test]
fn fifos_sockets_and_devices_are_never_opened() {
    let f = Fixture::new();
    let fifo = f.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(f.path("sock")).unwrap();
    f.init(); // would hang on the FIFO if it were opened
    let show = f.fimd(&["baseline", "show"]).json_lines();
    let kinds: Vec<_> = show
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        kinds.contains(&"fifo".into()) && kinds.contains(&"socket".into()),
        "{kinds:?}"
    );
    fs::set_permissions(&fifo, fs::Permissions::from_mode(0o600)).unwrap();
    let (code, alerts) = f.check();
    assert_eq!(code, 1);
    assert_eq!(f.alert_for(&alerts, &fifo)["fim"]["changes"][0], "mode");
}

#[test]
fn unreadable_files_are_reported_and_the_run_goes_on() {
    if !privileged("dropping to an unprivileged user") {
        return;
    }
    let f = Fixture::new();
    fs::write(f.path("secret"), "root only").unwrap();
    fs::set_permissions(f.path("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::create_dir(f.path("closed")).unwrap();
    fs::write(f.path("closed/inside"), "x").unwrap();
    fs::set_permissions(f.path("closed"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::create_dir(&f.state).unwrap();
    std::os::unix::fs::chown(&f.state, Some(65534), Some(65534)).unwrap();
    let as_nobody = |args: &[&str]| common::fimd_as_nobody(&f.config, args);
    let init = as_nobody(&["init"]);
    assert_eq!(init.code, 0, "{}", init.stderr);
    assert!(init.stderr.contains("secret: cannot open"), "{}", init.stderr);
    assert!(init.stderr.contains("closed: cannot"), "{}", init.stderr);
    let show = as_nobody(&["baseline", "show"]).json_lines();
    let secret = show
        .iter()
        .find(|e| e["name"] == "secret")
        .expect("recorded without a hash");
    assert!(secret.get("hash").is_none());
    assert!(
        show.iter()
            .any(|e| e["name"] == "a.txt" && e.get("hash").is_some())
    );
    // Nothing changed, but files could not be compared: an error, not "clean".
    let check = as_nobody(&["check"]);
    assert_eq!(check.code, 2, "{}", check.stderr);
    fs::write(f.path("a.txt"), "changed").unwrap();
    assert_eq!(as_nobody(&["check"]).code, 1);
    // The periodic check's sink carries what could not be compared, beside the alerts.
    let sink = f.dir.path().join("alerts.jsonl");
    fs::write(
        &f.config,
        format!(
            "{}\n[alerts]\njsonl = {:?}\n",
            fs::read_to_string(&f.config).unwrap(),
            sink.display().to_string()
        ),
    )
    .unwrap();
    std::os::unix::fs::chown(f.dir.path(), Some(65534), None).unwrap();
    assert_eq!(as_nobody(&["check"]).code, 1);
    let logged = fs::read_to_string(&sink).unwrap();
    let docs: Vec<serde_json::Value> = logged.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(docs.iter().any(|d| d["event"]["action"] == "updated"));
    let failures: Vec<_> = docs
        .iter()
        .filter(|d| d["event"]["action"] == "not_compared")
        .collect();
    assert!(failures.iter().all(|d| d["event"]["outcome"] == "failure"));
    assert!(
        failures
            .iter()
            .any(|d| d["file"]["path"].as_str().unwrap().ends_with("secret")),
        "{failures:#?}"
    );
}

#[test]
fn a_file_growing_while_hashed_is_reported() {
    let f = Fixture::new();
    let log = f.path("growing.log");
    fs::write(&log, vec![b'x'; 64 << 20]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, log) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut fh = fs::OpenOptions::new().append(true).open(log).unwrap();
            while !stop.load(Ordering::Relaxed) {
                fh.write_all(&[b'y'; 512]).unwrap();
            }
        })
    };
    let r = f.fimd(&["init"]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("growing.log: changed while being hashed"),
        "no instability reported: {}",
        r.stderr
    );
}

#[test]
fn watch_through_a_symlink_is_refused_not_followed() {
    let f = Fixture::new();
    let real = f.dir.path().join("real");
    fs::create_dir(&real).unwrap();
    fs::write(real.join("x"), "x").unwrap();
    symlink(&real, f.path("link")).unwrap();
    let inner = f.path("link/sub");
    fs::create_dir(real.join("sub")).unwrap();
    fs::write(
        &f.config,
        format!(
            "state_dir = {:?}\n[[watch]]\npath = {:?}\n",
            f.state.display().to_string(),
            inner.display().to_string()
        ),
    )
    .unwrap();
    let r = f.fimd(&["init"]);
    assert!(
        r.stderr.contains("is a symlink or not a directory"),
        "{}",
        r.stderr
    );
    let show = f.fimd(&["baseline", "show"]).json_lines();
    assert!(show.is_empty(), "followed a symlink: {show:#?}");
}

#[test]
fn one_filesystem_per_watch() {
    if !privileged("mounting a tmpfs") {
        return;
    }
    let f = Fixture::new();
    let mnt = f.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let _tmpfs = common::Mount::new(&["-t", "tmpfs", "tmpfs"], &mnt);
    fs::write(mnt.join("other-fs"), "x").unwrap();
    f.init();
    let show = f.fimd(&["baseline", "show"]).json_lines();
    assert!(
        show.iter().any(|e| e["name"] == "mnt"),
        "the mount point itself is recorded"
    );
    assert!(
        !show.iter().any(|e| e["name"] == "other-fs"),
        "crossed into another filesystem"
    );
    f.write_config("one_filesystem = false");
    f.init();
    let show = f.fimd(&["baseline", "show"]).json_lines();
    assert!(show.iter().any(|e| e["name"] == "other-fs"));
}

#[test]
fn names_cannot_forge_output_lines_or_move_the_cursor() {
    let f = Fixture::new();
    f.init();
    let evil = b"x\x1b[1A\x1b[2K\ncreated harmless".to_vec();
    fs::write(f.tree.join(OsStr::from_bytes(&evil)), "x").unwrap();
    let human = f.fimd(&["check"]);
    assert_eq!(human.code, 1);
    assert!(
        !human.raw_stdout.contains(&0x1b),
        "an escape byte reached the terminal"
    );
    assert_eq!(
        human.stdout.lines().count(),
        1,
        "a name forged a line: {:?}",
        human.stdout
    );
    let (_, alerts) = f.check();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(alerts[0]["fim"]["path_bytes_b64"].as_str().unwrap())
        .unwrap();
    assert!(raw.ends_with(&evil));
    assert!(alerts[0]["file"]["path"].as_str().unwrap().contains("x\\x1B[1A"));
}

/// Runs fimd as root but without the capabilities that bypass file permissions.
fn fimd_without_dac(f: &Fixture, args: &[&str]) -> common::Run {
    let mut c = Command::new("setpriv");
    c.args([
        "--bounding-set=-dac_override,-dac_read_search",
        common::FIMD,
        "-c",
    ])
    .arg(&f.config)
    .args(args);
    run(c)
}

#[test]
fn an_unreadable_directory_is_not_reported_deleted_nor_accepted_away() {
    if !privileged("dropping capabilities") {
        return;
    }
    let f = Fixture::new();
    f.init();
    fs::set_permissions(f.path("sub"), fs::Permissions::from_mode(0o000)).unwrap();
    let check = fimd_without_dac(&f, &["check", "--json"]);
    fs::set_permissions(f.path("sub"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(check.code, 1, "the mode change is a difference: {}", check.stderr);
    let alerts = check.json_lines();
    assert!(
        check.stderr.contains("sub: cannot open directory"),
        "{}",
        check.stderr
    );
    assert!(
        alerts.iter().all(|a| a["event"]["action"] != "deleted"),
        "unread entries reported deleted: {alerts:#?}"
    );
    fs::set_permissions(f.path("sub"), fs::Permissions::from_mode(0o000)).unwrap();
    let accept = fimd_without_dac(&f, &["accept"]);
    fs::set_permissions(f.path("sub"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(accept.code, 2, "{}", accept.stderr);
    assert!(
        accept.stderr.contains("Nothing was accepted"),
        "{}",
        accept.stderr
    );
    let show = f.fimd(&["baseline", "show"]).json_lines();
    assert!(show.iter().any(|e| e["name"] == "b.conf"));
    assert_eq!(f.check().0, 0);
}

#[test]
fn narrowing_the_configuration_is_not_silent() {
    let f = Fixture::new();
    f.init();
    f.write_config("exclude = [\"*.conf\"]");
    fs::write(f.path("sub/b.conf"), "tampered").unwrap();
    let r = f.fimd(&["check"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr
            .contains("watches differ from those the baseline was sealed with"),
        "{}",
        r.stderr
    );
    let a = f.fimd(&["accept"]);
    assert_eq!(a.code, 2);
    f.write_config("");
    assert_eq!(f.check().0, 1);
}

/// A fixture whose `scan.max_file_size` is 1 KiB.
fn capped() -> Fixture {
    let f = Fixture::new();
    // Tables come after top-level keys: append.
    let text = fs::read_to_string(&f.config).unwrap();
    fs::write(&f.config, format!("{text}\n[scan]\nmax_file_size = \"1KiB\"\n")).unwrap();
    f
}

fn metadata_only_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("metadata only")).collect()
}

#[test]
fn files_over_the_size_cap_are_recorded_unhashed_and_named_once() {
    let f = capped();
    fs::write(f.path("big"), vec![0u8; 2048]).unwrap();
    fs::write(f.path("huge"), vec![1u8; 4096]).unwrap();
    let r = f.fimd(&["init"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines = metadata_only_lines(&r.stderr);
    assert_eq!(lines.len(), 1, "one summary line: {}", r.stderr);
    assert!(
        lines[0].contains("2 file(s) larger than scan.max_file_size (1024 bytes)")
            && lines[0].contains(&f.path("big").display().to_string())
            && lines[0].contains(&f.path("huge").display().to_string()),
        "{}",
        lines[0]
    );
    let show = f.fimd(&["baseline", "show"]).json_lines();
    let big = show.iter().find(|e| e["name"] == "big").unwrap();
    assert!(big.get("hash").is_none());
    assert_eq!(big["size"], 2048);
    // Unchanged: clean, and said once, not as a warning.
    let r = f.fimd(&["check", "--json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(metadata_only_lines(&r.stderr).len(), 1, "{}", r.stderr);
    assert!(!r.stderr.contains("warning:"), "{}", r.stderr);
    assert!(r.stderr.contains("0 warnings"), "{}", r.stderr);
}

#[test]
fn files_over_the_size_cap_are_compared_by_metadata_and_accepted() {
    let f = capped();
    fs::write(f.path("big"), vec![0u8; 2048]).unwrap();
    fs::write(f.path("grows"), vec![0u8; 512]).unwrap();
    fs::write(f.path("resized"), vec![0u8; 2048]).unwrap();
    fs::write(f.path("chmod"), vec![0u8; 2048]).unwrap();
    f.init();

    // A plain accept of an unrelated change is not blocked by the big files.
    fs::write(f.path("a.txt"), "approved").unwrap();
    let r = f.fimd(&["accept"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("Nothing was accepted"), "{}", r.stderr);
    assert!(r.stderr.contains("1 changes taken"), "{}", r.stderr);
    assert_eq!(f.check().0, 0);

    // Grew past the cap; a size change while over it; a mode change while over it.
    fs::write(f.path("grows"), vec![0u8; 2048]).unwrap();
    fs::write(f.path("resized"), vec![0u8; 3000]).unwrap();
    fs::set_permissions(f.path("chmod"), fs::Permissions::from_mode(0o600)).unwrap();
    let (code, alerts) = f.check();
    assert_eq!(code, 1, "{alerts:#?}");
    assert_eq!(alerts.len(), 3, "{alerts:#?}");
    let grows = f.alert_for(&alerts, &f.path("grows"));
    assert_eq!(grows["event"]["action"], "updated");
    assert!(changes(grows).contains(&"size".into()), "{grows:#}");
    assert!(grows["fim"]["previous"]["hash"]["sha256"].is_string());
    assert!(grows["file"].get("hash").is_none(), "{grows:#}");
    let resized = f.alert_for(&alerts, &f.path("resized"));
    assert_eq!(resized["event"]["action"], "updated");
    assert!(changes(resized).contains(&"size".into()), "{resized:#}");
    assert!(!changes(resized).contains(&"content".into()), "{resized:#}");
    let chmod = f.alert_for(&alerts, &f.path("chmod"));
    assert_eq!(chmod["event"]["action"], "attributes_modified");
    assert!(changes(chmod).contains(&"mode".into()), "{chmod:#}");

    // Each is accepted, one by one.
    for name in ["grows", "resized", "chmod"] {
        let r = f.fimd(&["accept", f.path(name).to_str().unwrap()]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        assert!(
            r.stdout.contains(&f.path(name).display().to_string()),
            "{}",
            r.stdout
        );
    }
    let r = f.fimd(&["check"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        metadata_only_lines(&r.stderr)[0].contains("4 file(s)"),
        "{}",
        r.stderr
    );
}

#[test]
fn files_skipped_over_the_size_cap_are_not_counted_as_hashed() {
    let f = Fixture::new();
    // A sparse terabyte and a small file just over the cap: neither is read.
    let huge = fs::File::create(f.path("huge")).unwrap();
    huge.set_len(1 << 40).unwrap();
    fs::write(f.path("over"), vec![b'x'; 2048]).unwrap();
    let text = fs::read_to_string(&f.config).unwrap();
    fs::write(&f.config, format!("{text}\n[scan]\nmax_file_size = \"1K\"\n")).unwrap();
    let r = f.fimd(&["init"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // a.txt (6 bytes) and sub/b.conf (12 bytes) are all that was hashed.
    assert!(r.stderr.contains(" 18 B hashed"), "{}", r.stderr);
    assert!(!r.stderr.contains("TiB"), "{}", r.stderr);
}

#[test]
fn without_privilege_the_missing_privilege_is_named() {
    if !privileged("dropping to an unprivileged user") {
        return;
    }
    let f = Fixture::new();
    f.init();
    let as_nobody = |args: &[&str]| common::fimd_as_nobody(&f.config, args);
    let assert_named = |r: &common::Run, what: &str| {
        assert_eq!(r.code, 2, "{}", r.stderr);
        // The first obstacle met is named: the root-owned state directory, or the file.
        let state = format!("{} belongs to root", f.state.display());
        assert!(
            (r.stderr.contains(what) || r.stderr.contains(&state))
                && r.stderr.contains("permission denied")
                && r.stderr.contains("as root"),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("uid 65534"), "{}", r.stderr);
        assert!(
            !r.stderr.contains("rebuild") && !r.stderr.contains("fimd init"),
            "told to rebuild a healthy baseline: {}",
            r.stderr
        );
    };
    let key = f.state.join("hmac.key");
    let db = f.state.join("baseline.db");
    // The state directory is 0700: nothing in it can be reached.
    for cmd in [
        &["check"][..],
        &["run"][..],
        &["accept"][..],
        &["baseline", "show"][..],
    ] {
        assert_named(&as_nobody(cmd), &format!("HMAC key {}", key.display()));
    }
    assert_named(&as_nobody(&["init"]), &format!("database {}", db.display()));
    // The directory is open, the key is not.
    fs::set_permissions(&f.state, fs::Permissions::from_mode(0o755)).unwrap();
    assert_named(&as_nobody(&["check"]), &format!("HMAC key {}", key.display()));
    // The key is readable, the database is not writable.
    std::os::unix::fs::chown(&key, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
    assert_named(&as_nobody(&["check"]), &format!("database {}", db.display()));
    // As root, the baseline was never in question.
    std::os::unix::fs::chown(&key, Some(0), Some(0)).unwrap();
    assert_eq!(f.check().0, 0);
}

#[test]
fn a_full_disk_leaves_no_torn_alert_line() {
    if !privileged("mounting a small tmpfs") {
        return;
    }
    let f = Fixture::new();
    for i in 0..150 {
        fs::write(f.path(&format!("sub/f{i:03}")), "v1").unwrap();
    }
    let small = f.dir.path().join("small");
    fs::create_dir(&small).unwrap();
    let _fs = common::Mount::new(&["-t", "tmpfs", "-o", "size=64k", "tmpfs"], &small);
    let sink = small.join("alerts.jsonl");
    // Takes most of the room, to be given back later.
    let filler = small.join("filler");
    fs::write(&filler, vec![1u8; 32 << 10]).unwrap();
    let text = fs::read_to_string(&f.config).unwrap();
    fs::write(
        &f.config,
        format!("{text}\n[alerts]\njsonl = {:?}\n", sink.display().to_string()),
    )
    .unwrap();
    f.init();
    let lines = || -> Vec<serde_json::Value> {
        let raw = fs::read(&sink).unwrap();
        assert!(raw.is_empty() || raw.ends_with(b"\n"), "a torn last line");
        raw.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l).unwrap_or_else(|e| {
                    panic!("not one whole JSON line ({e}): {}", String::from_utf8_lossy(l))
                })
            })
            .collect()
    };
    // One alert fits.
    fs::write(f.path("a.txt"), "one").unwrap();
    assert_eq!(f.fimd(&["check"]).code, 1);
    assert_eq!(lines().len(), 1);
    // 151 alerts (over 100 KiB) do not fit in 64 KiB: the disk fills in the middle of a line.
    // (a.txt changes again: a check sends each difference once.)
    fs::write(f.path("a.txt"), "one again").unwrap();
    for i in 0..150 {
        fs::write(f.path(&format!("sub/f{i:03}")), "v2").unwrap();
    }
    let full = f.fimd(&["check"]);
    assert_eq!(full.code, 1);
    assert!(full.stderr.contains("No space left on device"), "{}", full.stderr);
    let dropped: usize = full
        .stderr
        .split_once("sinks (")
        .and_then(|(_, rest)| rest.split_once(" dropped)"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no drop count: {}", full.stderr));
    assert!(dropped > 0);
    // Every alert is either a whole line in the file or counted dropped, never both.
    assert_eq!(lines().len(), 1 + 151 - dropped, "{dropped} dropped");
    // The next alert, once there is room again, starts on a line of its own.
    fs::remove_file(&filler).unwrap();
    let accept = f.fimd(&["accept", f.path("sub").to_str().unwrap()]);
    assert_eq!(accept.code, 0, "{}", accept.stderr);
    let before = lines().len();
    fs::write(f.path("a.txt"), "two").unwrap();
    let again = f.fimd(&["check"]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(!again.stderr.contains("dropped"), "{}", again.stderr);
    let docs = lines();
    assert_eq!(docs.len(), before + 1);
    assert_eq!(
        docs.last().unwrap()["file"]["path"],
        f.path("a.txt").to_str().unwrap()
    );
}

#[test]
fn alerts_still_queued_at_shutdown_are_counted_dropped() {
    if !privileged("the realtime sensor") {
        return;
    }
    use common::daemon::{Daemon, by, s};
    let f = Fixture::new();
    // A webhook nobody answers: its alerts wait in the queue, retried.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = fs::read_to_string(&f.config).unwrap();
    fs::write(
        &f.config,
        format!(
            "{text}\n[alerts]\njsonl = {:?}\n[alerts.webhook]\nurl = \"http://127.0.0.1:{port}/fim\"\n",
            s(&f.dir.path().join("alerts.jsonl"))
        ),
    )
    .unwrap();
    let d = Daemon::start(&f);
    for (i, name) in ["a.txt", "sub/b.conf", "a.txt"].iter().enumerate() {
        let pid = by("sh", &["-c", &format!("echo {i} >> '{}'", s(&f.path(name)))]);
        d.expect(&f.path(name), "updated", pid);
    }
    d.signal(libc::SIGTERM);
    d.wait_log("fimd run: stopped");
    let log = d.log();
    let said = log
        .iter()
        .find(|l| l.contains("alert sinks still held"))
        .unwrap_or_else(|| panic!("undelivered alerts not reported: {log:#?}"));
    assert!(
        said.contains("still held 3 alerts") && said.contains("(3 dropped in all)"),
        "{said}"
    );
}

/// §1 of issue 12: a state store that cannot be written is never fatal and never hides a
/// difference. The classes: a full filesystem under `state_dir` (a small tmpfs filled by a
/// filler file) and a database another process holds the write lock of (Python's
/// `BEGIN IMMEDIATE`, the sqlite3 shell's `BEGIN EXCLUSIVE`).
mod state_store {
    use std::io::{BufRead, BufReader, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use super::common::daemon::{Daemon, py, s};
    use super::common::{Fixture, Mount, privileged};

    /// A fixture whose `state_dir` is on a 4 MiB tmpfs of its own, with the baseline made.
    pub struct Small {
        pub f: Fixture,
        mount: Option<Mount>,
        filler: PathBuf,
    }

    impl Small {
        pub fn new(extra: &str) -> Small {
            let mut f = Fixture::with_config_extra(extra);
            let fs = f.dir.path().join("statefs");
            std::fs::create_dir(&fs).unwrap();
            let mount = Mount::new(&["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs"], &fs);
            f.state = fs.join("state");
            f.write_config(extra);
            f.init();
            Small {
                f,
                mount: Some(mount),
                filler: fs.join("filler"),
            }
        }

        /// Fills the filesystem to the last byte.
        pub fn fill(&self) {
            let _ = Command::new("dd")
                .args(["if=/dev/zero", &format!("of={}", self.filler.display()), "bs=4k"])
                .stderr(Stdio::null())
                .status();
            assert!(self.filler.metadata().unwrap().len() > 0);
        }

        pub fn release(&self) {
            std::fs::remove_file(&self.filler).unwrap();
        }

        /// Remounts the filesystem read-only (`rw`: false) or read-write again.
        pub fn remount(&self, rw: bool) {
            let dir = self.filler.parent().unwrap();
            let opt = if rw { "remount,rw" } else { "remount,ro" };
            super::common::sh("mount", &["-o", opt, s(dir)]);
        }
    }

    impl Drop for Small {
        fn drop(&mut self) {
            drop(self.mount.take());
        }
    }

    /// Another process holding the database's write lock until dropped.
    pub struct Locker(Child);

    impl Locker {
        /// `python`: `BEGIN IMMEDIATE` from Python's sqlite3 module; else the sqlite3 shell's
        /// `BEGIN EXCLUSIVE`, kept open on its standard input.
        pub fn new(db: &Path, python: bool) -> Locker {
            let mut child = if python {
                Command::new("python3")
                    .args([
                        "-c",
                        "import sqlite3,sys,time\nc=sqlite3.connect(sys.argv[1],isolation_level=None)\n\
                         c.execute('BEGIN IMMEDIATE')\nprint('locked',flush=True)\ntime.sleep(600)",
                        s(db),
                    ])
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            } else {
                let mut c = Command::new("sqlite3")
                    .arg(db)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                writeln!(c.stdin.as_mut().unwrap(), "BEGIN EXCLUSIVE;\nSELECT 'locked';").unwrap();
                c
            };
            let mut line = String::new();
            BufReader::new(child.stdout.as_mut().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line.trim(), "locked");
            Locker(child)
        }
    }

    impl Drop for Locker {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn evidence_records(f: &Fixture) -> usize {
        let r = f.fimd(&["report", "--json"]);
        r.stdout.lines().filter(|l| !l.trim().is_empty()).count()
    }

    /// `check` reports its differences with exit 1 and says on stderr what it could not record.
    fn check_reports(f: &Fixture) {
        std::fs::write(f.path("a.txt"), "changed\n").unwrap();
        let r = f.fimd(&["check", "--json"]);
        assert_eq!(r.code, 1, "stdout {}\nstderr {}", r.stdout, r.stderr);
        let alerts = r.json_lines();
        f.alert_for(&alerts, &f.path("a.txt"));
        assert!(r.stderr.contains("not in the evidence log"), "{}", r.stderr);
    }

    /// `accept` fails (exit 2) without claiming anything was accepted.
    fn accept_refused(f: &Fixture) {
        let r = f.fimd(&["accept", "--reason", "test"]);
        assert_eq!(r.code, 2, "stdout {}\nstderr {}", r.stdout, r.stderr);
        assert!(!r.stdout.contains("accepted"), "{}", r.stdout);
        assert!(r.stderr.contains("nothing was accepted"), "{}", r.stderr);
    }

    fn accept_works(f: &Fixture) {
        let r = f.fimd(&["accept", "--reason", "test"]);
        assert_eq!(r.code, 0, "stdout {}\nstderr {}", r.stdout, r.stderr);
        assert!(r.stdout.contains("accepted"), "{}", r.stdout);
        assert_eq!(f.check().0, 0);
    }

    #[test]
    fn check_and_accept_on_a_full_state_filesystem() {
        if !privileged("a tmpfs state_dir") {
            return;
        }
        let sm = Small::new("");
        let before = evidence_records(&sm.f);
        sm.fill();
        check_reports(&sm.f);
        accept_refused(&sm.f);
        sm.release();
        accept_works(&sm.f);
        // The check after the accept was recorded again.
        assert!(evidence_records(&sm.f) > before);
    }

    #[test]
    fn check_and_accept_on_a_read_only_state_filesystem() {
        if !privileged("a tmpfs state_dir") {
            return;
        }
        let sm = Small::new("");
        let before = evidence_records(&sm.f);
        sm.remount(false);
        check_reports(&sm.f);
        accept_refused(&sm.f);
        sm.remount(true);
        accept_works(&sm.f);
        assert!(evidence_records(&sm.f) > before);
    }

    #[test]
    fn check_and_accept_on_a_locked_database() {
        if !privileged("sqlite3 and python3 holding locks") {
            return;
        }
        for python in [true, false] {
            let f = Fixture::new();
            f.init();
            let lock = Locker::new(&f.state.join("baseline.db"), python);
            check_reports(&f);
            accept_refused(&f);
            drop(lock);
            accept_works(&f);
        }
    }

    /// Waits up to 20 s for an alert satisfying `ok`.
    fn wait_alert(d: &Daemon, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        d.wait_until(
            Duration::from_secs(20),
            |all| all.iter().find(|a| ok(a)).cloned(),
            |all| format!("no {what}: {all:#?}"),
        )
    }

    fn failing_alerts(d: &Daemon) -> Vec<serde_json::Value> {
        d.alerts()
            .into_iter()
            .filter(|a| a["event"]["action"] == "state_store_failing")
            .collect()
    }

    /// Under a failing store the daemon keeps alerting (writer's pid included), alerts once
    /// that the store fails, and stores the queued writes once it works again.
    /// The value of an unlabelled metric on the daemon's /metrics.
    fn metric(port: u16, name: &str) -> f64 {
        use std::io::Read;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            c,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .trim()
            .parse()
            .unwrap()
    }

    fn run_through(f: &Fixture, fail: &dyn Fn(), release: &dyn Fn(), failing_from_start: bool) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = std::fs::read_to_string(&f.config).unwrap();
        std::fs::write(
            &f.config,
            format!("{text}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
        )
        .unwrap();
        let d = if failing_from_start {
            fail();
            Daemon::start_on_baseline(f)
        } else {
            Daemon::start_on_baseline(f)
        };
        if !failing_from_start {
            fail();
        }
        // An append (a ledger write under the append-only policy), then a violation.
        let appender = py(
            "import sys\nopen(sys.argv[1],'a').write('more\\n')",
            &f.path("a.txt"),
        );
        d.expect(&f.path("a.txt"), "appended", appender);
        let alert = wait_alert(&d, "state_store_failing alert", |a| {
            a["event"]["action"] == "state_store_failing" && a["event"]["kind"] == "alert"
        });
        assert!(!alert["event"]["reason"].as_str().unwrap().is_empty());
        let writer = py(
            "import sys\nopen(sys.argv[1],'w').write('x\\n')",
            &f.path("sub/b.conf"),
        );
        d.expect(&f.path("sub/b.conf"), "truncated", writer);
        let appender2 = py(
            "import sys\nopen(sys.argv[1],'a').write('again\\n')",
            &f.path("a.txt"),
        );
        d.expect_where(&f.path("a.txt"), "appended", appender2, |a| {
            a["fim"]["append"]["verified_bytes"] == 11
        });
        // Once per episode, not once per write: two more failed attempts to store what waits
        // (one a second), each followed by the daemon's look at the episode, and still one.
        let failed = metric(port, "fim_state_write_failures_total");
        super::common::metrics::wait_metric(port, "fim_state_write_failures_total", failed + 2.0);
        assert_eq!(failing_alerts(&d).len(), 1, "{:#?}", failing_alerts(&d));
        // Every failed attempt is counted, and what waits is exported.
        assert!(metric(port, "fim_state_write_failures_total") >= 2.0);
        assert!(metric(port, "fim_state_queue_length") >= 1.0);
        release();
        wait_alert(&d, "state_store_recovered event", |a| {
            a["event"]["action"] == "state_store_recovered"
        });
        d.wait_log("the state store works again");
        assert_eq!(metric(port, "fim_state_queue_length"), 0.0);
        drop(d);
        // The ledger rows landed: the appends are the baseline now, so only b.conf differs.
        let (code, alerts) = f.check();
        assert_eq!(code, 1, "{alerts:#?}");
        assert!(
            alerts.iter().all(|a| a["file"]["path"] != s(&f.path("a.txt"))),
            "{alerts:#?}"
        );
        f.alert_for(&alerts, &f.path("sub/b.conf"));
    }

    const APPEND_ONLY: &str = "policy = \"append-only\"";

    #[test]
    fn run_keeps_alerting_on_a_full_state_filesystem() {
        if !privileged("fimd run and a tmpfs state_dir") {
            return;
        }
        for from_start in [false, true] {
            let sm = Small::new(APPEND_ONLY);
            let before = evidence_records(&sm.f);
            run_through(&sm.f, &|| sm.fill(), &|| sm.release(), from_start);
            // The comparison made at the (degraded) start is in the evidence log after all,
            // before the check made after the daemon stopped.
            assert_eq!(evidence_records(&sm.f), before + 2);
        }
    }

    #[test]
    fn run_starts_degraded_on_a_read_only_state_filesystem() {
        if !privileged("fimd run and a tmpfs state_dir") {
            return;
        }
        let sm = Small::new(APPEND_ONLY);
        let before = evidence_records(&sm.f);
        run_through(&sm.f, &|| sm.remount(false), &|| sm.remount(true), true);
        assert_eq!(evidence_records(&sm.f), before + 2);
    }

    #[test]
    fn run_keeps_alerting_on_a_locked_database() {
        if !privileged("fimd run") {
            return;
        }
        for python in [true, false] {
            let f = Fixture::with_config_extra(APPEND_ONLY);
            f.init();
            let db = f.state.join("baseline.db");
            let lock = std::cell::RefCell::new(None);
            run_through(
                &f,
                &|| *lock.borrow_mut() = Some(Locker::new(&db, python)),
                &|| drop(lock.borrow_mut().take()),
                false,
            );
        }
    }
}
