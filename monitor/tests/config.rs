//! Configuration errors: each names the file, the line and the key, and exits 2.
mod common;

use std::fs;
use std::process::Command;

use common::daemon::{Daemon, by, s};
use common::{Fixture, privileged, run};

fn config_check(text: &str) -> common::Run {
    let f = Fixture::new();
    let text = text.replace("TREE", f.tree.to_str().unwrap());
    fs::write(&f.config, text).unwrap();
    let r = f.fimd(&["config", "check"]);
    // Keep the fixture alive until the run is over.
    drop(f);
    r
}

#[test]
fn every_error_names_file_line_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"TREE\"\nbogus = 1\n",
            ":4: unknown field `bogus`",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = [\"TREE\"]\n",
            ":3: invalid type",
        ),
        (
            "state_dir = \"s\"\n[[watch]]\npath = \"TREE\"\n",
            ":1: state_dir: \"s\" is relative",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"TREE/sub\"\npolicy = \"append-only\"\n[[watch]]\npath = \"TREE\"\n",
            ":6: watch.path",
        ),
        (
            "state_dir = \"/s\"\n\n[[watch]]\npath = \"TREE/missing\"\n",
            ":4: watch.path: ",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"TREE\"\n[alerts]\njsonl = 7\n",
            ":5: invalid type",
        ),
        ("state_dir = \"/s\"\n[[watch]\n", ":2: "),
    ];
    for (text, needle) in cases {
        let r = config_check(text);
        assert_eq!(r.code, 2, "accepted: {text}");
        assert!(
            r.stderr.contains("fimd.toml") && r.stderr.contains(needle),
            "{needle:?} not in {:?}",
            r.stderr
        );
    }
    let ok = config_check("state_dir = \"/s\"\n[[watch]]\npath = \"TREE\"\n");
    assert_eq!(ok.code, 0, "{}", ok.stderr);
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let mut c = Command::new(common::FIMD);
    c.args(["-c", "/nonexistent/fimd.toml", "check"]);
    let r = run(c);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("cannot read configuration /nonexistent/fimd.toml"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_shipped_sample_config_is_valid() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config/fimd.toml");
    let settings = fimd::config::Settings::load(std::path::Path::new(sample)).unwrap();
    assert!(
        settings
            .watches
            .iter()
            .any(|w| w.path == std::path::Path::new("/etc"))
    );
}

/// `config check` on the fixture's own configuration plus `extra` (tables appended).
fn check_with(f: &Fixture, extra: &str) -> common::Run {
    f.write_config("");
    let text = fs::read_to_string(&f.config).unwrap();
    fs::write(&f.config, format!("{text}{extra}\n")).unwrap();
    f.fimd(&["config", "check"])
}

#[test]
fn numbers_out_of_range_are_refused_with_their_line() {
    let f = Fixture::new();
    // The fixture's configuration is 4 lines; the appended table header is line 5.
    let cases: &[(&str, &str)] = &[
        (
            "[schedule]\nfull_check = \"500000000000y\"",
            ":6: schedule.full_check: \"500000000000y\" is out of range",
        ),
        (
            "[schedule]\nfull_check = \"1ns\"",
            ":6: schedule.full_check: \"1ns\" is out of range",
        ),
        ("[schedule]\nfull_check = \"30s\"", ":6: schedule.full_check"),
        (
            "[schedule]\nfull_check = \"1d\"\njitter = \"500000000000y\"",
            ":7: schedule.jitter: \"500000000000y\" is longer than schedule.full_check",
        ),
        (
            "[schedule]\njitter = \"8d\"",
            ":6: schedule.jitter: \"8d\" is longer than schedule.full_check",
        ),
        (
            "[scan]\nthreads = 99999999999",
            ":6: scan.threads: 99999999999 is out of range",
        ),
        ("[scan]\nthreads = 1025", ":6: scan.threads: 1025 is out of range"),
        (
            "[realtime]\nring_buffer_bytes = 2147483648",
            ":6: realtime.ring_buffer_bytes: 2147483648 is not a power of two",
        ),
        (
            "[realtime]\nring_buffer_bytes = 1024",
            ":6: realtime.ring_buffer_bytes: 1024",
        ),
        (
            "[realtime]\nring_buffer_bytes = \"1GiB\"",
            ":6: realtime.ring_buffer_bytes",
        ),
        (
            "[alerts]\njsonl = \"-\"\nqueue = 0",
            ":7: alerts.queue: 0 is out of range",
        ),
        (
            "[alerts]\njsonl = \"-\"\nqueue = 10000000",
            ":7: alerts.queue: 10000000 is out of range; give a number from 1 to 1000000",
        ),
    ];
    for (extra, needle) in cases {
        let r = check_with(&f, extra);
        assert_eq!(r.code, 2, "accepted: {extra}");
        assert!(
            r.stderr.contains("fimd.toml") && r.stderr.contains(needle),
            "{needle:?} not in {:?}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    // `run` panicked (exit 101) on these; every command refuses them first.
    for extra in [
        "[schedule]\nfull_check = \"500000000000y\"",
        "[schedule]\nfull_check = \"1d\"\njitter = \"500000000000y\"",
    ] {
        check_with(&f, extra);
        for cmd in ["run", "init", "check"] {
            let r = f.fimd(&[cmd]);
            assert_eq!(r.code, 2, "{cmd} with {extra}: {}", r.stderr);
            assert!(
                r.stderr.contains("fimd.toml:") && r.stderr.contains(": schedule."),
                "{}",
                r.stderr
            );
            assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        }
    }
    for ok in [
        "[schedule]\nfull_check = \"1m\"\njitter = \"1m\"",
        "[schedule]\nfull_check = \"366d\"",
        "[schedule]\nfull_check = \"0\"",
        "[scan]\nthreads = 1024",
        "[realtime]\nring_buffer_bytes = \"256MiB\"",
        "[alerts]\njsonl = \"-\"\nqueue = 1000000",
    ] {
        let r = check_with(&f, ok);
        assert_eq!(r.code, 0, "refused {ok}: {}", r.stderr);
    }
}

#[test]
fn init_with_a_huge_thread_count_is_refused_not_hung() {
    let f = Fixture::new();
    let text = fs::read_to_string(&f.config).unwrap();
    fs::write(&f.config, format!("{text}[scan]\nthreads = 99999999999\n")).unwrap();
    // `run` gives up after a minute: a hang fails the test.
    let r = f.fimd(&["init"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("scan.threads"), "{}", r.stderr);
    assert!(!f.state.join("baseline.db").exists(), "init went ahead");
}

/// Mounts a fresh instance of filesystem `kind` at `DIR/name`.
fn mount_fresh(f: &Fixture, kind: &str, name: &str) -> common::Mount {
    let at = f.dir.path().join(name);
    fs::create_dir_all(&at).unwrap();
    common::Mount::new(&["-t", kind, kind], &at)
}

#[test]
fn watches_on_pseudo_filesystems_are_refused_by_type_not_path() {
    if !privileged("mounting pseudo-filesystems") {
        return;
    }
    let f = Fixture::new();
    // Fresh mounts at paths nothing could recognise by name, and the host's own.
    let _mounts = [
        mount_fresh(&f, "proc", "p"),
        mount_fresh(&f, "sysfs", "s"),
        mount_fresh(&f, "cgroup2", "c"),
        mount_fresh(&f, "bpf", "b"),
    ];
    let cases = [
        (f.dir.path().join("p"), "proc"),
        (f.dir.path().join("s"), "sysfs"),
        (f.dir.path().join("c"), "cgroup2"),
        (f.dir.path().join("b"), "bpf"),
        (f.dir.path().join("p/self"), "proc"),
        ("/proc".into(), "proc"),
        ("/sys".into(), "sysfs"),
        ("/dev/pts".into(), "devpts"),
    ];
    for (path, fs_name) in &cases {
        let text = format!(
            "state_dir = {:?}\n\n[[watch]]\npath = {:?}\n",
            f.state.display().to_string(),
            path.display().to_string()
        );
        fs::write(&f.config, text).unwrap();
        for cmd in [&["config", "check"][..], &["init"][..]] {
            let r = f.fimd(cmd);
            assert_eq!(r.code, 2, "{cmd:?} accepted {}: {}", path.display(), r.stderr);
            assert!(
                r.stderr.contains(&format!(
                    "fimd.toml:4: watch.path: {} is on a {fs_name} pseudo-filesystem",
                    path.display()
                )),
                "{cmd:?} {}: {}",
                path.display(),
                r.stderr
            );
        }
        assert!(
            !f.state.join("baseline.db").exists(),
            "init went ahead on {}",
            path.display()
        );
    }
    // A tmpfs holds real files: it is watched.
    let _tmp = mount_fresh(&f, "tmpfs", "t");
    fs::write(f.dir.path().join("t/x"), "x").unwrap();
    let text = format!(
        "state_dir = {:?}\n[[watch]]\npath = {:?}\n",
        f.state.display().to_string(),
        f.dir.path().join("t").display().to_string()
    );
    fs::write(&f.config, text).unwrap();
    f.init();
    assert_eq!(f.check().0, 0);
}

#[test]
fn a_pseudo_filesystem_mounted_later_is_not_read() {
    if !privileged("mounting pseudo-filesystems") {
        return;
    }
    // Over a watch root after its baseline: refused where the watch is opened.
    let f = Fixture::new();
    f.write_config("");
    let text = fs::read_to_string(&f.config).unwrap();
    fs::write(
        &f.config,
        text.replace(f.tree.to_str().unwrap(), f.path("sub").to_str().unwrap()),
    )
    .unwrap();
    f.init();
    let _proc = common::Mount::new(&["-t", "proc", "proc"], &f.path("sub"));
    let r = f.fimd(&["check", "--json"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("on a proc pseudo-filesystem"), "{}", r.stderr);
    assert!(
        r.json_lines().is_empty(),
        "differences read from /proc: {}",
        r.stdout.len()
    );
    drop(_proc);

    // Below a watch that crosses filesystems: neither the mount point nor anything in it.
    let f = Fixture::new();
    f.write_config("one_filesystem = false");
    let _mounts = [
        common::Mount::new(&["-t", "proc", "proc"], &{
            fs::create_dir(f.path("p")).unwrap();
            f.path("p")
        }),
        common::Mount::new(&["-t", "sysfs", "sysfs"], &{
            fs::create_dir(f.path("s")).unwrap();
            f.path("s")
        }),
        common::Mount::new(&["-t", "cgroup2", "cgroup2"], &{
            fs::create_dir(f.path("c")).unwrap();
            f.path("c")
        }),
    ];
    f.init();
    let show = f.fimd(&["baseline", "show"]).json_lines();
    for name in ["p", "s", "c"] {
        let below = f.path(name).display().to_string();
        assert!(
            !show.iter().any(|e| {
                let p = e["path"].as_str().unwrap();
                p == below || p.starts_with(&format!("{below}/"))
            }),
            "recorded {below} or below it"
        );
    }
    assert!(show.len() < 10, "{} entries", show.len());
    for _ in 0..2 {
        let (code, alerts) = f.check();
        assert_eq!((code, alerts.len()), (0, 0), "{alerts:#?}");
    }
}

#[test]
fn fimds_own_files_inside_a_watch_are_left_out() {
    let f = Fixture::new();
    // The state directory and the alert file (rotating, so its siblings appear) in the tree.
    let state = f.path("var/lib/fimd");
    let alerts = f.path("log/alerts.jsonl");
    fs::create_dir_all(f.path("log")).unwrap();
    fs::write(
        &f.config,
        format!(
            "state_dir = {:?}\n[[watch]]\npath = {:?}\n[alerts]\njsonl = {:?}\njsonl_max_bytes = \"2K\"\njsonl_keep = 3\n",
            state.display().to_string(),
            f.tree.display().to_string(),
            alerts.display().to_string()
        ),
    )
    .unwrap();
    let said = f.fimd(&["config", "check"]);
    assert_eq!(said.code, 0, "{}", said.stderr);
    assert!(
        said.stdout.contains(&format!(
            "watch {} leaves out fimd's own files: state_dir={}, alerts.jsonl={}",
            f.tree.display(),
            state.display(),
            alerts.display()
        )),
        "{}",
        said.stdout
    );
    f.init();
    let show = f.fimd(&["baseline", "show"]).json_lines();
    assert!(
        !show
            .iter()
            .any(|e| e["path"].as_str().unwrap().starts_with(state.to_str().unwrap())),
        "the state directory is in the baseline"
    );
    for _ in 0..3 {
        assert_eq!(f.check(), (0, Vec::new()), "fimd's own writes are differences");
    }
    // Each check now writes an alert (and rotates the file): still only the one real difference.
    // A difference is sent once, so each round changes the file anew.
    for round in 0..6 {
        fs::write(f.path("a.txt"), format!("changed {round}")).unwrap();
        let (code, found) = f.check();
        assert_eq!(code, 1);
        assert_eq!(found.len(), 1, "{found:#?}");
        f.alert_for(&found, &f.path("a.txt"));
    }
    assert!(
        f.path("log/alerts.jsonl.1").exists(),
        "the alert file did not rotate: the test proves nothing about its siblings"
    );

    // A watch inside fimd's own files watches nothing else: refused.
    for (inside, key) in [(state.join("sub"), "state_dir"), (alerts.clone(), "alerts.jsonl")] {
        fs::write(
            &f.config,
            format!(
                "state_dir = {:?}\n[[watch]]\npath = {:?}\n[alerts]\njsonl = {:?}\n",
                state.display().to_string(),
                inside.display().to_string(),
                alerts.display().to_string()
            ),
        )
        .unwrap();
        let r = f.fimd(&["config", "check"]);
        assert_eq!(r.code, 2);
        assert!(
            r.stderr.contains(&format!(
                ":3: watch.path: {} lies in fimd's own {key}",
                inside.display()
            )),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn a_reload_that_cannot_work_keeps_the_running_configuration() {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    let other = f.dir.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("file"), "v1").unwrap();
    let d = Daemon::start(&f);
    let running = fs::read_to_string(&f.config).unwrap();
    let unbaselined_watch = running.replacen(
        "[alerts]",
        &format!("[[watch]]\npath = {:?}\n[alerts]", s(&other)),
        1,
    );
    let empty_state = running.replacen(
        &format!("{:?}", s(&f.state)),
        &format!("{:?}", s(&f.dir.path().join("empty-state"))),
        1,
    );
    let cases = [
        (
            unbaselined_watch,
            "the watches differ from those the baseline was sealed with",
        ),
        ("state_dir = [\n".to_owned(), "fimd.toml:"),
        (empty_state, "empty-state"),
        (
            format!("{running}\n[schedule]\nfull_check = \"1ns\"\n"),
            "schedule.full_check",
        ),
    ];
    for (i, (text, why)) in cases.iter().enumerate() {
        fs::write(&f.config, text).unwrap();
        d.signal(libc::SIGHUP);
        d.wait_log_count("SIGHUP: keeping the running configuration", i + 1);
        let said = d.log();
        let line = said
            .iter()
            .filter(|l| l.contains("keeping the running configuration"))
            .nth(i)
            .unwrap();
        assert!(line.contains(why), "{why:?} not in {line:?}");
        // Still running, on the old configuration, and still seeing changes.
        d.wait_log_count("; ready", i + 2);
        let pid = by("sh", &["-c", &format!("echo v{i} >> '{}'", s(&f.path("a.txt")))]);
        d.expect(&f.path("a.txt"), "updated", pid);
    }
    assert!(
        !d.log().iter().any(|l| l.contains("reloading")),
        "a configuration that cannot work was taken: {:?}",
        d.log()
    );
    fs::write(&f.config, &running).unwrap();
}

#[test]
fn the_daemon_never_alerts_on_its_own_files() {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    // The database and the alert file (small, so it rotates) both inside the watched tree.
    let state = f.path("state");
    let log = f.path("log");
    fs::create_dir(&log).unwrap();
    let sink = log.join("alerts.jsonl");
    fs::write(
        &f.config,
        format!(
            "state_dir = {:?}\n[[watch]]\npath = {:?}\n[alerts]\njsonl = {:?}\njsonl_max_bytes = \"3K\"\njsonl_keep = 2\n",
            s(&state),
            s(&f.tree),
            s(&sink)
        ),
    )
    .unwrap();
    let d = Daemon::start(&f);
    let alerts = || -> Vec<serde_json::Value> {
        ["alerts.jsonl.2", "alerts.jsonl.1", "alerts.jsonl"]
            .iter()
            .flat_map(|n| {
                fs::read_to_string(log.join(n))
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<serde_json::Value>>()
            })
            .collect()
    };
    for i in 0..4 {
        let pid = by("sh", &["-c", &format!("echo {i} >> '{}'", s(&f.path("a.txt")))]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !alerts().iter().any(|a| a["process"]["pid"] == pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "change {i} not reported: {:#?}",
                alerts()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    assert!(
        log.join("alerts.jsonl.1").exists(),
        "the alert file did not rotate"
    );
    // Writing those alerts (and rotating the file) must not raise more: a feedback loop wrote
    // 5,048 in 10 s. The records of the alert file's last writes come before the marker's, so
    // an alert they raised would be out before the marker's alert is.
    let marker = d.drain(&f.path("a.txt"), "updated");
    let all: Vec<serde_json::Value> = alerts()
        .into_iter()
        .filter(|a| a["process"]["pid"] != marker)
        .collect();
    let paths: Vec<&str> = all.iter().map(|a| a["file"]["path"].as_str().unwrap()).collect();
    assert!(
        paths.iter().all(|p| *p == s(&f.path("a.txt"))),
        "alerts on other paths: {paths:#?}"
    );
    assert!(all.len() <= 4 * 2, "{} alerts for 4 changes", all.len());
    drop(d);
}
