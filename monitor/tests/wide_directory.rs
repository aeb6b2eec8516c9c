//! A busy wide directory costs what changed, not its size (issue 13): its listings are paced
//! by their cost (`daemon::pace`), yet every creation in it is alerted, with its writer, and
//! one still waiting for its pace at shutdown is alerted before the daemon stops. A small
//! directory is never paced. Real daemon, real filesystem, both sensors.
mod common;

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::metrics::{free_port, get, sample};
use common::{Fixture, privileged};
use serde_json::Value;

/// Entries of the wide directory: its listing takes milliseconds, so it is paced.
const WIDE: usize = 10_000;
/// Creations in it, one every `SPACING` (100 per second, as `cargo xtask bench scale`).
const CREATIONS: usize = 300;
const SPACING: Duration = Duration::from_millis(10);

const LISTED: &str = "fim_directory_listings_total{outcome=\"listed\"}";
const PACED: &str = "fim_directory_listings_total{outcome=\"paced\"}";

fn counts(port: u16) -> (f64, f64) {
    let (_, body) = get(port, "/metrics");
    let v = |s| sample(&body, s).unwrap_or_else(|| panic!("no {s} in\n{body}"));
    (v(LISTED), v(PACED))
}

/// A fixture with `wide/` of `WIDE` files, exporting metrics on a free port.
fn fixture(sensor: &str) -> (Fixture, u16) {
    let f = Fixture::new();
    let wide = f.path("wide");
    fs::create_dir(&wide).unwrap();
    for i in 0..WIDE {
        fs::write(wide.join(format!("old-{i:05}")), b"x").unwrap();
    }
    let port = free_port();
    f.write_config(&format!(
        "\n[realtime]\nsensor = \"{sensor}\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    (f, port)
}

/// The `created` alerts by `pid` for paths in `want`, removing those found from it.
fn take_created(all: &[Value], want: &mut HashSet<String>, pid: u32) {
    for a in all {
        if a["event"]["action"] == "created"
            && a["process"]["pid"] == pid
            && let Some(p) = a["file"]["path"].as_str()
        {
            want.remove(p);
        }
    }
}

fn creations_in_a_busy_directory_are_all_alerted_with_its_listings_paced(sensor: &str) {
    if !privileged(&format!("fimd run with the {sensor} sensor")) {
        return;
    }
    let (f, port) = fixture(sensor);
    let d = Daemon::start(&f);
    let me = std::process::id();
    let (listed0, paced0) = counts(port);
    let wide = f.path("wide");
    let mut want = HashSet::new();
    let started = Instant::now();
    for i in 0..CREATIONS {
        let p = wide.join(format!("new-{i:04}"));
        fs::write(&p, format!("new {i}\n")).unwrap();
        want.insert(p.display().to_string());
        if let Some(wait) = (started + SPACING * (i as u32 + 1)).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let left = d.poll(Duration::from_secs(20), |all| {
        let mut w = want.clone();
        take_created(all, &mut w, me);
        w.is_empty().then_some(())
    });
    if let Err(all) = left {
        take_created(&all, &mut want, me);
        let mut missing: Vec<&String> = want.iter().collect();
        missing.sort();
        panic!(
            "{} of {CREATIONS} creations got no `created` alert by pid {me}: {:?}…",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    let (listed, paced) = counts(port);
    let (listed, paced) = (listed - listed0, paced - paced0);
    // Each creation is a record for the directory. Unpaced, nearly every one costs a listing
    // of 10,000 names; paced, a listing waits ten times the last one's cost.
    assert!(paced > 0.0, "no record was paced ({listed} listings)");
    assert!(
        listed * 3.0 < CREATIONS as f64,
        "{listed} listings for {CREATIONS} creations ({paced} records paced)"
    );
    eprintln!("{sensor}: {CREATIONS} creations alerted; {listed} listings, {paced} records paced");

    // A small directory is never paced: each record lists it, as before.
    let sub = f.path("sub");
    let mut small = HashSet::new();
    for i in 0..10 {
        let p = sub.join(format!("small-{i}"));
        fs::write(&p, b"s\n").unwrap();
        small.insert(p.display().to_string());
        std::thread::sleep(Duration::from_millis(50));
    }
    d.wait_until(
        Duration::from_secs(10),
        |all| {
            let mut w = small.clone();
            take_created(all, &mut w, me);
            w.is_empty().then_some(())
        },
        |all| {
            format!(
                "small directory creations missing: {}",
                common::daemon::summary(all.iter())
            )
        },
    );
    let (_, paced_after) = counts(port);
    assert_eq!(
        paced_after - paced0,
        paced,
        "a record for a small directory was paced"
    );
}

#[test]
fn ebpf_creations_in_a_busy_directory_are_all_alerted_with_its_listings_paced() {
    creations_in_a_busy_directory_are_all_alerted_with_its_listings_paced("ebpf");
}

#[test]
fn fanotify_creations_in_a_busy_directory_are_all_alerted_with_its_listings_paced() {
    creations_in_a_busy_directory_are_all_alerted_with_its_listings_paced("fanotify");
}

/// Creates `name` in `dir` and waits (polling every millisecond) for its `created` alert: the
/// directory was just listed, so its pace has just begun.
fn create_and_see(d: &Daemon, dir: &Path, name: &str) {
    let p = dir.join(name);
    fs::write(&p, b"n\n").unwrap();
    let want = p.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d
        .alerts()
        .iter()
        .any(|a| a["event"]["action"] == "created" && a["file"]["path"] == want.as_str())
    {
        assert!(Instant::now() < deadline, "no alert for {want}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_directory_still_paced_at_shutdown_is_listed_before_the_daemon_stops() {
    if !privileged("fimd run") {
        return;
    }
    let (f, port) = fixture("auto");
    let mut d = Daemon::start(&f);
    let wide = f.path("wide");
    // Find a moment when a creation's record waits for the directory's pace, then stop at once.
    let mut last = None;
    for attempt in 0..20 {
        create_and_see(&d, &wide, &format!("seen-{attempt}"));
        let (_, before) = counts(port);
        let p = wide.join(format!("pending-{attempt}"));
        fs::write(&p, b"p\n").unwrap();
        let (_, after) = counts(port);
        if after > before {
            last = Some(p);
            break;
        }
    }
    let pending = last.expect("no creation was ever paced in 20 attempts");
    let status = d.stop();
    assert!(status.success(), "fimd run stopped with {status}");
    let want = pending.display().to_string();
    let all = d.alerts();
    assert!(
        all.iter()
            .any(|a| a["event"]["action"] == "created" && a["file"]["path"] == want.as_str()),
        "the creation pending at shutdown got no alert: {}",
        common::daemon::summary(all.iter().rev().take(5))
    );
}

#[test]
fn a_file_moved_into_a_busy_directory_is_alerted_as_moved_by_its_mover() {
    if !privileged("fimd run") {
        return;
    }
    let (f, port) = fixture("auto");
    let d = Daemon::start(&f);
    let wide = f.path("wide");
    // The move's record for `wide` comes within its pace (just listed for a creation): the old
    // directory's listing finds the file gone at once, and the paced listing must still come
    // within the window in which the two halves make one move.
    for attempt in 0..20 {
        let from = f.path(&format!("sub/m-{attempt}"));
        fs::write(&from, b"m\n").unwrap();
        d.expect(&from, "created", std::process::id());
        create_and_see(&d, &wide, &format!("before-move-{attempt}"));
        let (_, before) = counts(port);
        let to = wide.join(format!("moved-{attempt}"));
        let pid = common::daemon::by("mv", &[common::daemon::s(&from), common::daemon::s(&to)]);
        d.expect(&to, "moved", pid);
        let (_, after) = counts(port);
        if after > before {
            let deleted = d
                .alerts()
                .iter()
                .any(|a| a["event"]["action"] == "deleted" && a["file"]["path"] == common::daemon::s(&from));
            assert!(!deleted, "the move was also reported as a deletion");
            return;
        }
    }
    panic!("no move's record was ever paced in 20 attempts");
}

/// A record waiting for a busy directory's pace must not claim a later writer's change: one
/// writer's record that leaves nothing new (a name made and removed, like the second record one
/// operation often makes for its directory) is pending when another process creates a file
/// there, and that creation is alerted with the other process as its writer.
#[test]
fn a_creation_folded_into_a_pending_directory_names_its_own_writer() {
    if !privileged("fimd run") {
        return;
    }
    let (f, port) = fixture("auto");
    let d = Daemon::start(&f);
    let wide = f.path("wide");
    for attempt in 0..20 {
        create_and_see(&d, &wide, &format!("start-{attempt}"));
        let (_, before) = counts(port);
        let tmp = wide.join(format!("tmp-{attempt}"));
        fs::write(&tmp, b"t\n").unwrap();
        fs::remove_file(&tmp).unwrap();
        // The record may take a moment to come out of the kernel.
        std::thread::sleep(Duration::from_millis(5));
        let (_, after) = counts(port);
        if after == before {
            continue;
        }
        let made = wide.join(format!("by-touch-{attempt}"));
        let pid = common::daemon::by("touch", &[common::daemon::s(&made)]);
        d.expect(&made, "created", pid);
        return;
    }
    panic!("no record was ever paced in 20 attempts");
}
