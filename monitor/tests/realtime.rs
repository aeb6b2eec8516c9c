//! `fimd run`: each modification, made by a separate process, is alerted with that process's
//! pid and name. These need root and a kernel with the timestamp tracepoints. The content and
//! metadata suites run on the temporary directory's filesystem (ext4 here) and on fresh tmpfs,
//! xfs and btrfs mounts (the last two on loop devices; mkfs.xfs and mkfs.btrfs are needed).
mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::daemon::{Daemon, by, py, s, summary};
use common::{Fixture, Fs, FsFixture, privileged, t};
use serde_json::Value;

/// The failures of one suite, collected so a run reports every operation that was not
/// alerted (on which filesystem) instead of stopping at the first.
struct Misses {
    suite: String,
    list: Vec<String>,
}

impl Misses {
    fn new(suite: &str, f: &Fixture) -> Misses {
        Misses {
            suite: format!("{suite} on {} ({})", fs_name(&f.tree), f.tree.display()),
            list: Vec::new(),
        }
    }

    fn check(&mut self, case: &str, r: Result<Value, String>) -> Option<Value> {
        match r {
            Ok(a) => Some(a),
            Err(e) => {
                self.fail(case, e);
                None
            }
        }
    }

    fn fail(&mut self, case: &str, why: String) {
        self.list.push(format!("{case}: {why}"));
    }

    fn finish(self) {
        assert!(
            self.list.is_empty(),
            "{}: {} failure(s):\n  {}",
            self.suite,
            self.list.len(),
            self.list.join("\n  ")
        );
    }
}

/// The filesystem type of `p`, from statfs(2).
fn fs_magic(p: &Path) -> libc::c_long {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: statfs(2) on a NUL-terminated path into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::statfs(c.as_ptr(), &mut st) },
        0,
        "statfs {}",
        p.display()
    );
    st.f_type
}

fn fs_name(p: &Path) -> String {
    match fs_magic(p) {
        libc::TMPFS_MAGIC => "tmpfs".to_owned(),
        libc::XFS_SUPER_MAGIC => "xfs".to_owned(),
        libc::BTRFS_SUPER_MAGIC => "btrfs".to_owned(),
        libc::EXT4_SUPER_MAGIC => "ext4".to_owned(),
        m => format!("fs {m:#x}"),
    }
}

/// Every way of changing a file's content, each by its own process, on the filesystem that
/// holds `f.tree`. `outside` is a directory on the same filesystem but outside the watch.
/// Whether the fixture's configuration forces the fanotify sensor.
fn uses_fanotify(f: &Fixture) -> bool {
    fs::read_to_string(&f.config).is_ok_and(|c| c.contains("sensor = \"fanotify\""))
}

fn content_suite(f: &Fixture, outside: &Path) {
    let tmpfs = fs_magic(&f.tree) == libc::TMPFS_MAGIC;
    let fanotify = uses_fanotify(f);
    let d = Daemon::start(f);
    let mut m = Misses::new("content changes", f);
    let p = |n: &str| f.path(n);
    // Created while the daemon runs (by this test process), then modified by others.
    for n in [
        "write",
        "pwrite",
        "writev",
        "append",
        "otrunc",
        "truncate",
        "ftruncate",
        "falloc",
        "punch",
        "zero",
        "mmap",
        "mmap-noflush",
        "cfr",
        "splice",
        "sendfile",
        "direct",
        "uring",
    ] {
        fs::write(p(n), vec![b'x'; 8192]).unwrap();
        let r = d.wait_for(&p(n), &["created"], std::process::id(), |_| true);
        m.check(&format!("create {n}"), r);
    }
    let src = outside.join("source");
    fs::write(&src, vec![b'y'; 8192]).unwrap();
    // An empty directory for a bind mount of the tree in another mount namespace.
    let bind = f.dir.path().join("bind");
    fs::create_dir(&bind).unwrap();
    // tmpfs has no FALLOC_FL_ZERO_RANGE: there the call must fail (EOPNOTSUPP), change
    // nothing, and so raise no alert; that is checked after the others.
    let zero = if tmpfs {
        let out = Command::new("fallocate")
            .args(["-z", "-o", "0", "-l", "4096", s(&p("zero"))])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("not supported") {
            m.fail(
                "zero",
                format!(
                    "fallocate -z on tmpfs: {} ({err}), expected EOPNOTSUPP",
                    out.status
                ),
            );
        }
        None
    } else {
        Some((
            "zero",
            by("fallocate", &["-z", "-o", "0", "-l", "4096", s(&p("zero"))]),
            "fallocate",
            false,
        ))
    };
    // (file, writer's pid, writer's process name if it is certain, whether the alert must
    // carry the hash of the file's final content)
    let cases: Vec<(&str, u32, &str, bool)> = vec![
        (
            "write",
            by(
                "dd",
                &[
                    "if=/dev/zero",
                    &format!("of={}", s(&p("write"))),
                    "bs=1",
                    "count=1",
                    "conv=notrunc",
                ],
            ),
            "dd",
            false,
        ),
        (
            "pwrite",
            py(
                "import os,sys; fd=os.open(sys.argv[1],os.O_WRONLY); os.pwrite(fd,b'z',100)",
                &p("pwrite"),
            ),
            "",
            false,
        ),
        (
            "writev",
            py(
                "import os,sys; fd=os.open(sys.argv[1],os.O_WRONLY); os.pwritev(fd,[b'a',b'b'],5,os.RWF_DSYNC)",
                &p("writev"),
            ),
            "",
            false,
        ),
        (
            "append",
            by("sh", &["-c", &format!("echo more >> '{}'", s(&p("append")))]),
            "sh",
            false,
        ),
        (
            "otrunc",
            by("sh", &["-c", &format!(": > '{}'", s(&p("otrunc")))]),
            "sh",
            false,
        ),
        (
            "truncate",
            by("truncate", &["-s", "10", s(&p("truncate"))]),
            "truncate",
            false,
        ),
        (
            // ftruncate(2) on an open fd, not truncate(2) on a path.
            "ftruncate",
            py(
                "import os,sys; fd=os.open(sys.argv[1],os.O_WRONLY); os.ftruncate(fd,100)",
                &p("ftruncate"),
            ),
            "",
            false,
        ),
        (
            "falloc",
            by("fallocate", &["-l", "1M", s(&p("falloc"))]),
            "fallocate",
            false,
        ),
        (
            "punch",
            by("fallocate", &["-p", "-o", "0", "-l", "4096", s(&p("punch"))]),
            "fallocate",
            false,
        ),
        (
            "mmap",
            py(
                "import mmap,sys; f=open(sys.argv[1],'r+b'); m=mmap.mmap(f.fileno(),0); m[0:1]=b'M'; m.flush()",
                &p("mmap"),
            ),
            "",
            false,
        ),
        (
            // A MAP_SHARED store, then munmap without msync; the writer is gone before the
            // daemon looks. The alert must have the stored byte in its hash.
            "mmap-noflush",
            py(
                "import mmap,sys; f=open(sys.argv[1],'r+b'); m=mmap.mmap(f.fileno(),0); m[0:1]=b'N'; m.close(); f.close()",
                &p("mmap-noflush"),
            ),
            "",
            true,
        ),
        (
            "cfr",
            py(
                &format!(
                    "import os,sys; s=os.open('{}',os.O_RDONLY); d=os.open(sys.argv[1],os.O_WRONLY); os.copy_file_range(s,d,10,0,0)",
                    s(&src)
                ),
                &p("cfr"),
            ),
            "",
            false,
        ),
        (
            "splice",
            py(
                "import os,sys; r,w=os.pipe(); os.write(w,b'spliced'); d=os.open(sys.argv[1],os.O_WRONLY); os.splice(r,d,7,offset_dst=0)",
                &p("splice"),
            ),
            "",
            false,
        ),
        (
            "sendfile",
            py(
                &format!(
                    "import os,sys; s=os.open('{}',os.O_RDONLY); d=os.open(sys.argv[1],os.O_WRONLY); os.sendfile(d,s,0,16)",
                    s(&src)
                ),
                &p("sendfile"),
            ),
            "",
            false,
        ),
        (
            // tmpfs included: it has supported O_DIRECT since Linux 6.6 (this kernel is 6.18).
            "direct",
            by(
                "dd",
                &[
                    "if=/dev/urandom",
                    &format!("of={}", s(&p("direct"))),
                    "bs=4096",
                    "count=1",
                    "oflag=direct",
                    "conv=notrunc",
                ],
            ),
            "dd",
            false,
        ),
        (
            "uring",
            by(
                "fio",
                &[
                    "--name=u",
                    &format!("--filename={}", s(&p("uring"))),
                    "--ioengine=io_uring",
                    "--rw=write",
                    "--bs=4k",
                    "--size=8k",
                    "--direct=0",
                    "--minimal",
                    "--thread",
                ],
            ),
            "", // an io-wq worker thread ("iou-wrk-N") of fio
            false,
        ),
        (
            // From another mount namespace, through a bind mount of the tree: the alert is for
            // the watched path. unshare execs sh in place and `echo` is a builtin, so the pid
            // of `unshare` is the writer's.
            "a.txt",
            by(
                "unshare",
                &[
                    "-m",
                    "sh",
                    "-c",
                    &format!(
                        "mount --bind '{}' '{b}' && echo x >> '{b}/a.txt'",
                        s(&f.tree),
                        b = s(&bind)
                    ),
                ],
            ),
            "sh",
            false,
        ),
    ];
    for (name, pid, comm, exact) in zero.into_iter().chain(cases) {
        let path = f.path(name);
        let want = exact.then(|| sha256_hex(&fs::read(&path).unwrap()));
        let r = d
            .wait_for(&path, &["updated"], pid, |a| {
                want.as_ref()
                    .is_none_or(|h| a["file"]["hash"]["sha256"] == h.as_str())
            })
            .map_err(|e| match &want {
                Some(h) => format!("{e} (wanted the final content, sha256 {h:.12})"),
                None => e,
            });
        let Some(a) = m.check(name, r) else {
            continue;
        };
        // fanotify reads the name and uid from /proc when it reads the event: a writer that
        // was already reaped (these exit at once) is named by its pid alone.
        // Each may be read before the writer is gone, the other after.
        let name_gone = fanotify && a["process"]["name"] == "";
        let uid_gone = fanotify && a["user"]["id"].is_null();
        if !comm.is_empty() && a["process"]["name"] != comm && !name_gone {
            m.fail(
                name,
                format!("process.name {} instead of {comm:?}", a["process"]["name"]),
            );
        }
        // The executable is read from /proc while the writer lives; these exit at once.
        if a["user"]["id"] != "0" && !uid_gone {
            m.fail(name, format!("user.id {} instead of \"0\"", a["user"]["id"]));
        }
    }
    if tmpfs {
        let z = s(&p("zero")).to_owned();
        let late: Vec<Value> = d
            .alerts()
            .into_iter()
            // This process created and filled the file: a rescan that caught the creation
            // before the fill reports the fill as its own change, never the failed fallocate's.
            .filter(|a| {
                a["file"]["path"] == z.as_str()
                    && a["event"]["action"] != "created"
                    && a["process"]["pid"] != std::process::id()
            })
            .collect();
        if !late.is_empty() {
            m.fail(
                "zero",
                format!("alerted after a failed fallocate -z: {}", summary(late.iter())),
            );
        }
    }
    m.finish();
}

/// Every kind of metadata and name change, each by its own process, on the filesystem that
/// holds `f.tree`. `outside` is a directory on the same filesystem but outside the watch.
fn metadata_suite(f: &Fixture, outside: &Path) {
    let p = |n: &str| f.path(n);
    for n in [
        "chmod", "chown", "xattr", "rmxattr", "cap", "times", "unlink", "over", "victim", "linked",
    ] {
        fs::write(p(n), n).unwrap();
    }
    common::sh("setfattr", &["-n", "user.k", "-v", "v", s(&p("rmxattr"))]);
    fs::create_dir(p("rmdir")).unwrap();
    let incoming = outside.join("incoming");
    fs::write(&incoming, "from outside").unwrap();
    let d = Daemon::start(f);
    let mut m = Misses::new("metadata and name changes", f);
    let mut expect = |case: &str, path: &Path, actions: &[&str], pid: u32| {
        m.check(case, d.wait_for(path, actions, pid, |_| true));
    };

    expect(
        "chmod",
        &p("chmod"),
        &["attributes_modified"],
        by("chmod", &["600", s(&p("chmod"))]),
    );
    expect(
        "chown",
        &p("chown"),
        &["attributes_modified"],
        by("chown", &["65534", s(&p("chown"))]),
    );
    expect(
        "setxattr",
        &p("xattr"),
        &["attributes_modified"],
        by("setfattr", &["-n", "user.k", "-v", "v", s(&p("xattr"))]),
    );
    // The attribute was set before the baseline.
    expect(
        "removexattr",
        &p("rmxattr"),
        &["attributes_modified"],
        by("setfattr", &["-x", "user.k", s(&p("rmxattr"))]),
    );
    expect(
        "setcap",
        &p("cap"),
        &["attributes_modified"],
        by("setcap", &["cap_net_raw+ep", s(&p("cap"))]),
    );
    expect(
        "utimensat",
        &p("times"),
        &["attributes_modified"],
        by("touch", &["-d", "2001-01-01", s(&p("times"))]),
    );
    expect("unlink", &p("unlink"), &["deleted"], by("rm", &[s(&p("unlink"))]));
    expect(
        "rename within",
        &p("renamed"),
        &["moved"],
        by("mv", &[s(&p("a.txt")), s(&p("renamed"))]),
    );
    // Renamed over an existing watched file: the victim's content is replaced.
    expect(
        "rename over",
        &p("victim"),
        &["updated"],
        by("mv", &[s(&p("over")), s(&p("victim"))]),
    );
    expect(
        "link",
        &p("hardlink"),
        &["created"],
        by("ln", &[s(&p("linked")), s(&p("hardlink"))]),
    );
    expect(
        "symlink",
        &p("symlink"),
        &["created"],
        by("ln", &["-s", "target", s(&p("symlink"))]),
    );
    expect("rmdir", &p("rmdir"), &["deleted"], by("rmdir", &[s(&p("rmdir"))]));
    expect(
        "mkdir",
        &p("newdir"),
        &["created"],
        by("mkdir", &[s(&p("newdir"))]),
    );
    // A file in the new directory is watched from then on.
    expect(
        "create in new dir",
        &p("newdir/file"),
        &["created"],
        by("touch", &[s(&p("newdir/file"))]),
    );
    expect(
        "write in new dir",
        &p("newdir/file"),
        &["updated"],
        by("sh", &["-c", &format!("echo x > '{}'", s(&p("newdir/file")))]),
    );
    // Into the tree from outside (a rename(2) on the same filesystem): the file is watched
    // from then on.
    expect(
        "rename into",
        &p("incoming"),
        &["created", "moved"],
        by("mv", &[s(&incoming), s(&p("incoming"))]),
    );
    expect(
        "write after rename into",
        &p("incoming"),
        &["updated"],
        by("sh", &["-c", &format!("echo later >> '{}'", s(&p("incoming")))]),
    );
    // Out of the tree: the file is gone from the watch.
    expect(
        "rename out",
        &p("sub/b.conf"),
        &["deleted"],
        by("mv", &[s(&p("sub/b.conf")), s(&outside.join("moved-out"))]),
    );
    m.finish();
}

#[test]
fn every_content_change_is_alerted_with_its_process() {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    content_suite(&f, f.dir.path());
}

#[test]
fn metadata_and_name_changes_are_alerted_with_their_process() {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    metadata_suite(&f, f.dir.path());
}

/// Runs `suite` with the watch root on a fresh `kind` filesystem.
fn on(kind: Fs, suite: fn(&Fixture, &Path)) {
    if !privileged(&format!("the realtime sensor on {kind:?} (mount)")) {
        return;
    }
    let m = FsFixture::new(kind);
    suite(&m.fixture, &m.outside);
}

#[test]
fn content_changes_on_tmpfs() {
    on(Fs::Tmpfs, content_suite);
}

#[test]
fn content_changes_on_xfs() {
    on(Fs::Xfs, content_suite);
}

#[test]
fn content_changes_on_btrfs() {
    on(Fs::Btrfs, content_suite);
}

#[test]
fn metadata_changes_on_tmpfs() {
    on(Fs::Tmpfs, metadata_suite);
}

#[test]
fn metadata_changes_on_xfs() {
    on(Fs::Xfs, metadata_suite);
}

#[test]
fn metadata_changes_on_btrfs() {
    on(Fs::Btrfs, metadata_suite);
}

#[test]
fn writes_through_an_outside_hard_link_and_a_tmpfs_watch() {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    let outside = f.dir.path().join("outside-name");
    fs::hard_link(f.path("a.txt"), &outside).unwrap();
    let mnt = f.path("tmp");
    fs::create_dir(&mnt).unwrap();
    let _tmpfs = common::Mount::new(&["-t", "tmpfs", "tmpfs"], &mnt);
    fs::write(mnt.join("on-tmpfs"), "v1").unwrap();
    f.write_config("one_filesystem = false");
    let d = Daemon::start(&f);
    let pid = by("sh", &["-c", &format!("echo via-link >> '{}'", s(&outside))]);
    d.expect(&f.path("a.txt"), "updated", pid);
    let pid = by(
        "sh",
        &["-c", &format!("echo v2 > '{}'", s(&mnt.join("on-tmpfs")))],
    );
    d.expect(&mnt.join("on-tmpfs"), "updated", pid);
    let pid = by("touch", &[s(&mnt.join("new-on-tmpfs"))]);
    d.expect(&mnt.join("new-on-tmpfs"), "created", pid);
}

#[test]
fn changes_while_down_are_reported_at_start_and_a_later_write_always_reports_again() {
    restart_and_rearm(false);
}

#[test]
fn fanotify_changes_while_down_are_reported_at_start_and_a_later_write_always_reports_again() {
    restart_and_rearm(true);
}

fn restart_and_rearm(fanotify: bool) {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    if fanotify {
        with_fanotify(&f, "");
    }
    f.init();
    fs::write(f.path("a.txt"), "changed while fimd was down").unwrap();
    let d = Daemon::start_on_baseline(&f);
    let all = d.alerts();
    assert!(
        all.iter()
            .any(|a| a["file"]["path"] == s(&f.path("a.txt")) && a["event"]["action"] == "updated"),
        "{all:#?}"
    );
    // Many rounds of write then wait: each round's change is seen (the inode is re-armed).
    let target = f.path("sub/b.conf");
    for round in 0..20 {
        if fanotify {
            // fanotify drops the events of an inode the daemon is still looking at (its record
            // is in flight); a round that starts inside the previous round's 100 ms second
            // look at an emptied file can be credited to that round's writer. The rounds test
            // re-arming, so they start after that look (docs/sensor-design.md §4a). Nothing
            // observable marks the end of that look, so this waits it out.
            std::thread::sleep(Duration::from_millis(300));
        }
        let pid = by("sh", &["-c", &format!("echo round {round} > '{}'", s(&target))]);
        // `>` truncates, then writes: the alert for the truncation may come first; the
        // write must still be reported, with the final content.
        let hash = sha256_hex(format!("round {round}\n").as_bytes());
        d.expect_where(&target, "updated", pid, |a| {
            a["file"]["hash"]["sha256"] == hash.as_str()
        });
    }
}

fn sha256_hex(b: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut out = out;
    out.stdin.take().unwrap().write_all(b).unwrap();
    let o = out.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn lost_records_are_counted_and_repaired_by_a_rescan() {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    for i in 0..400 {
        fs::write(f.path(&format!("sub/f{i}")), "v1").unwrap();
    }
    // A one-page ring holds about 46 records: 400 changes at once overflow it.
    f.write_config("[realtime]\nring_buffer_bytes = 4096");
    let d = Daemon::start(&f);
    let pid = py(
        "import sys\nfor i in range(400):\n    open(f'{sys.argv[1]}/f{i}', 'w').write('v2 changed')",
        &f.path("sub"),
    );
    let updated = |all: &[Value]| -> std::collections::HashSet<String> {
        all.iter()
            .filter(|a| a["event"]["action"] == "updated" && a["file"]["size"] == 10)
            .map(|a| a["file"]["path"].as_str().unwrap().to_owned())
            .collect()
    };
    d.wait_until(
        Duration::from_secs(20),
        |all| (updated(all).len() == 400).then_some(()),
        |all| {
            format!(
                "{} of 400 changes reported (writer pid {pid})",
                updated(all).len()
            )
        },
    );
    assert!(
        d.log()
            .iter()
            .any(|l| l.contains("kernel events lost; rescanning")),
        "no loss was counted: the test did not overflow the ring: {:?}",
        d.log()
    );
}

#[test]
fn sighup_reloads_the_configuration_and_baseline() {
    sighup_reload(false);
}

#[test]
fn fanotify_sighup_reloads_the_configuration_and_baseline() {
    sighup_reload(true);
}

fn sighup_reload(fanotify: bool) {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    if fanotify {
        with_fanotify(&f, "");
    }
    let second = f.dir.path().join("second");
    fs::create_dir(&second).unwrap();
    fs::write(second.join("file"), "v1").unwrap();
    let d = Daemon::start(&f);
    // Widen the watches, rebuild the baseline, and tell the running daemon.
    let text = fs::read_to_string(&f.config).unwrap();
    let widened = text.replacen(
        "[alerts]",
        &format!("[[watch]]\npath = {:?}\n[alerts]", s(&second)),
        1,
    );
    fs::write(&f.config, widened).unwrap();
    f.init();
    d.signal(libc::SIGHUP);
    d.wait_log("reloading");
    d.wait_log_count("ready", 2);
    let pid = by("sh", &["-c", &format!("echo v2 > '{}'", s(&second.join("file")))]);
    d.expect(&second.join("file"), "updated", pid);
}

#[test]
fn without_privilege_run_fails_with_a_reason() {
    if !privileged("dropping privileges") {
        return;
    }
    let f = Fixture::new();
    f.init();
    let chown = |p: &Path| std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    chown(&f.state);
    for e in fs::read_dir(&f.state).unwrap() {
        chown(&e.unwrap().path());
    }
    let r = common::fimd_as_nobody(&f.config, &["run"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("cannot load the eBPF programs"), "{}", r.stderr);
    assert!(r.stderr.contains("CAP_BPF"), "{}", r.stderr);
}

#[test]
fn a_storm_of_writes_yields_a_bounded_number_of_records_and_the_final_state() {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    let target = f.path("storm");
    fs::write(&target, vec![b'x'; 200_000]).unwrap();
    let d = Daemon::start(&f);
    let pid = by(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={}", s(&target)),
            "bs=1",
            "count=200000",
            "conv=notrunc",
            "status=none",
        ],
    );
    let hash = sha256_hex(&fs::read(&target).unwrap());
    d.expect_where(&target, "updated", pid, |a| {
        a["file"]["hash"]["sha256"] == hash.as_str()
    });
    let n = d
        .alerts()
        .iter()
        .filter(|a| a["file"]["path"] == s(&target))
        .count();
    assert!(
        n < 5_000,
        "{n} alerts for 200,000 writes: coalescing is not bounding them"
    );
}

#[test]
fn fimd_own_reads_make_no_events() {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    let d = Daemon::start(&f);
    // A full comparison reads every watched file.
    assert_eq!(f.fimd(&["check"]).code, 0);
    // Whatever the check's reads raised comes out before the alert on a file created after it
    // (one the check never read).
    let marker = d.drain(&f.path("marker"), "created");
    let raised: Vec<Value> = d
        .alerts()
        .into_iter()
        .filter(|a| a["process"]["pid"] != marker)
        .collect();
    assert!(raised.is_empty(), "{raised:#?}");
}

/// The same fixture, watched by the fanotify sensor (`[realtime] sensor = "fanotify"`).
fn with_fanotify(f: &Fixture, watch_keys: &str) {
    f.write_config(&format!("{watch_keys}\n[realtime]\nsensor = \"fanotify\""));
}

/// Runs `suite` with the fanotify sensor, on the root filesystem (`None`) or a fresh `kind`.
fn on_fanotify(kind: Option<Fs>, suite: fn(&Fixture, &Path)) {
    if !privileged(&format!("the fanotify sensor on {kind:?}")) {
        return;
    }
    match kind {
        None => {
            let f = Fixture::new();
            with_fanotify(&f, "");
            suite(&f, f.dir.path());
        }
        Some(kind) => {
            let m = FsFixture::new(kind);
            with_fanotify(&m.fixture, "");
            suite(&m.fixture, &m.outside);
        }
    }
}

#[test]
fn fanotify_content_changes() {
    on_fanotify(None, content_suite);
}

#[test]
fn fanotify_metadata_changes() {
    on_fanotify(None, metadata_suite);
}

#[test]
fn fanotify_content_changes_on_tmpfs() {
    on_fanotify(Some(Fs::Tmpfs), content_suite);
}

#[test]
fn fanotify_content_changes_on_xfs() {
    on_fanotify(Some(Fs::Xfs), content_suite);
}

#[test]
fn fanotify_content_changes_on_btrfs() {
    on_fanotify(Some(Fs::Btrfs), content_suite);
}

#[test]
fn fanotify_metadata_changes_on_tmpfs() {
    on_fanotify(Some(Fs::Tmpfs), metadata_suite);
}

#[test]
fn fanotify_metadata_changes_on_xfs() {
    on_fanotify(Some(Fs::Xfs), metadata_suite);
}

#[test]
fn fanotify_metadata_changes_on_btrfs() {
    on_fanotify(Some(Fs::Btrfs), metadata_suite);
}

#[test]
fn fanotify_queue_overflow_is_counted_and_repaired_by_a_rescan() {
    if !privileged("the fanotify sensor") {
        return;
    }
    let f = Fixture::new();
    with_fanotify(&f, "");
    let d = Daemon::start(&f);
    // Stopped, the daemon reads nothing while more events than the queue holds (16384, the
    // kernel's default) pile up: every new name is an event of its own.
    d.signal(libc::SIGSTOP);
    let pid = py(
        "import sys\nfor i in range(20000):\n    open(f'{sys.argv[1]}/n{i}', 'w').close()",
        &f.path("sub"),
    );
    d.signal(libc::SIGCONT);
    d.wait_log("kernel events lost; rescanning");
    // The rescan finds what the lost events were about.
    for i in [0, 9999, 19999] {
        let p = f.path(&format!("sub/n{i}"));
        d.wait_until(
            Duration::from_secs(30),
            |all| {
                all.iter()
                    .any(|a| a["file"]["path"] == s(&p) && a["event"]["action"] == "created")
                    .then_some(())
            },
            |_| format!("no created alert for {} (writer {pid})", p.display()),
        );
    }
}

#[test]
fn fanotify_sees_stores_through_a_mapping_made_before_close_via_proc_maps() {
    if !privileged("the fanotify sensor") {
        return;
    }
    let f = Fixture::new();
    with_fanotify(&f, "");
    let target = f.path("a.txt");
    let d = Daemon::start(&f);
    // The descriptor is closed before the store (no FAN_CLOSE_WRITE after it, and stores raise
    // no FAN_MODIFY): only the look at /proc/PID/maps finds the mapping.
    let mut writer = Command::new("python3")
        .arg("-c")
        .arg(
            "import mmap,sys,time\nf=open(sys.argv[1],'r+b'); m=mmap.mmap(f.fileno(),0); f.close()\n\
             time.sleep(0.5); m[0:5]=b'OMEGA'; time.sleep(3); m.close()",
        )
        .arg(&target)
        .spawn()
        .unwrap();
    let pid = writer.id();
    let hash = sha256_hex(b"OMEGA\n");
    let a = d.expect_where(&target, "updated", pid, |a| {
        a["file"]["hash"]["sha256"] == hash.as_str()
    });
    assert_eq!(a["fim"]["kernel"]["sensor"], "fanotify", "{a:#}");
    assert_eq!(a["fim"]["kernel"]["hook"], "proc_maps", "{a:#}");
    writer.wait().unwrap();
}

#[test]
fn fanotify_gap_a_short_lived_mapping_after_close_is_caught_by_the_full_comparison() {
    if !privileged("the fanotify sensor") {
        return;
    }
    let f = Fixture::new();
    with_fanotify(&f, "");
    let port = common::metrics::free_port();
    let text = fs::read_to_string(&f.config).unwrap();
    fs::write(
        &f.config,
        format!("{text}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let target = f.path("sub/b.conf");
    let d = Daemon::start(&f);
    // Mapped, closed, stored and unmapped within a few milliseconds: fsnotify has no event for
    // it and the mapping is usually gone before the next look at /proc (docs/sensor-design.md).
    // Whatever the daemon saw, `fimd check` must report the change.
    let pid = py(
        "import mmap,sys\nf=open(sys.argv[1],'r+b'); m=mmap.mmap(f.fileno(),0); f.close(); m[0:3]=b'KEY'; m.close()",
        &target,
    );
    // Whatever the daemon made of the writer's records, it has done it once the alert on a
    // file created after them is out, and the later looks at a mapped file they planned are
    // done once no file waits to be rehashed. The marker is gone again before the comparison.
    let marker = f.path("marker");
    d.drain(&marker, "created");
    common::metrics::wait_metric_at_most(port, "fim_hash_queue_length", 0.0);
    drop(d);
    fs::remove_file(&marker).unwrap();
    let (code, alerts) = f.check();
    assert_eq!(
        code, 1,
        "the full comparison must report the change (writer pid {pid})"
    );
    assert!(
        alerts
            .iter()
            .any(|a| a["file"]["path"] == s(&target) && a["event"]["action"] == "updated"),
        "{alerts:#?}"
    );
}

/// `chattr` changes the inode flags and the ctime: the daemon rescans with the scan's code and
/// names the flags, with who set them (ext4, the temporary directory's filesystem).
#[test]
fn inode_flags_set_by_chattr_are_alerted_with_their_process() {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    let (planted, log) = (f.path("planted"), f.path("log"));
    fs::write(&planted, "payload").unwrap();
    fs::write(&log, "entries\n").unwrap();
    common::sh("chattr", &["+a", s(&log)]);
    // An immutable file left behind would keep the temporary tree from being removed.
    struct Clear(Vec<std::path::PathBuf>);
    impl Drop for Clear {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = Command::new("chattr").arg("-ia").arg(p).status();
            }
        }
    }
    let _clear = Clear(vec![planted.clone(), log.clone()]);
    let d = Daemon::start(&f);
    let flags = |want: &'static [&'static str]| {
        move |a: &Value| {
            a["fim"]["changes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "flags")
                && a["file"]["attributes"]
                    .as_array()
                    .is_some_and(|v| v.iter().map(|x| x.as_str().unwrap()).collect::<Vec<_>>() == want)
        }
    };
    let pid = by("chattr", &["+i", s(&planted)]);
    let a = d.expect_where(&planted, "attributes_modified", pid, flags(&["immutable"]));
    assert_eq!(a["fim"]["previous"]["attributes"], serde_json::json!([]));
    let pid = by("chattr", &["-a", s(&log)]);
    let a = d.expect_where(&log, "attributes_modified", pid, flags(&[]));
    assert_eq!(a["fim"]["previous"]["attributes"], serde_json::json!(["append"]));
    drop(d);
}

/// The sensor's maps are sized from the baseline or `max_watched_inodes`; when they are full the
/// daemon keeps running, says once which watch is affected, and still reports what it watches.
#[test]
fn a_full_watch_map_is_reported_once_and_never_fatal() {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    for i in 0..1500 {
        fs::write(f.path(&format!("sub/n{i}")), "v1").unwrap();
    }
    f.write_config("[realtime]\nmax_watched_inodes = 1024");
    let mut d = Daemon::start(&f);
    let full: Vec<Value> = d
        .alerts()
        .into_iter()
        .filter(|a| a["event"]["action"] == "watch_capacity_exceeded")
        .collect();
    assert_eq!(full.len(), 1, "{full:#?}");
    assert_eq!(full[0]["event"]["kind"], "alert");
    assert_eq!(full[0]["file"]["path"], s(&f.tree));
    assert!(
        full[0]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_watched_inodes") && m.contains("full comparison")),
        "{full:#?}"
    );
    // The watch root is armed first: a new file in it is still reported, and its own failure
    // to fit is counted without another alert.
    let pid = by("touch", &[s(&f.path("late"))]);
    d.expect(&f.path("late"), "created", pid);
    let again = d
        .alerts()
        .iter()
        .filter(|a| a["event"]["action"] == "watch_capacity_exceeded")
        .count();
    assert_eq!(again, 1);
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon exited");
}

/// The fanotify tier marks each watched directory, so a filesystem mounted inside a watch
/// (`one_filesystem = false`) is watched too, and writers elsewhere on the filesystem are not
/// reported (nor slowed: `cargo xtask bench realtime`).
#[test]
fn fanotify_watches_a_tmpfs_mounted_inside_and_nothing_outside() {
    if !privileged("the fanotify sensor") {
        return;
    }
    let f = Fixture::new();
    let mnt = f.path("tmp");
    fs::create_dir(&mnt).unwrap();
    let _tmpfs = common::Mount::new(&["-t", "tmpfs", "tmpfs"], &mnt);
    fs::write(mnt.join("on-tmpfs"), "v1").unwrap();
    let outside = f.dir.path().join("outside.txt");
    fs::write(&outside, "not watched").unwrap();
    with_fanotify(&f, "one_filesystem = false");
    let d = Daemon::start(&f);
    let pid = by("sh", &["-c", &format!("echo elsewhere >> '{}'", s(&outside))]);
    let pid2 = by(
        "sh",
        &["-c", &format!("echo v2 > '{}'", s(&mnt.join("on-tmpfs")))],
    );
    d.expect(&mnt.join("on-tmpfs"), "updated", pid2);
    let pid3 = by("touch", &[s(&mnt.join("new-on-tmpfs"))]);
    d.expect(&mnt.join("new-on-tmpfs"), "created", pid3);
    assert!(
        !d.alerts()
            .iter()
            .any(|a| a["process"]["pid"] == pid || a["file"]["path"] == s(&outside)),
        "a write outside the watch was reported: {}",
        summary(d.alerts().iter())
    );
}

/// tmpfs never write-protects a faulted page, so after the first store through a shared
/// mapping no later store changes the ctime: the sensor keeps looking at files reported mapped
/// writable (in /proc/PID/maps) while they stay mapped. A second store 4 s after the first is
/// reported with the final content, by the mapping process; on both tiers.
#[test]
fn a_late_store_through_a_shared_mapping_on_tmpfs_is_reported() {
    for fanotify in [false, true] {
        if !privileged("the realtime sensor on tmpfs") {
            return;
        }
        let m = FsFixture::new(Fs::Tmpfs);
        let f = &m.fixture;
        if fanotify {
            with_fanotify(f, "");
        }
        let target = f.path("a.txt");
        fs::write(&target, "alpha\n").unwrap();
        let d = Daemon::start(f);
        let mut writer = Command::new("python3")
            .arg("-c")
            .arg(
                "import mmap,sys,time\nf=open(sys.argv[1],'r+b'); m=mmap.mmap(f.fileno(),0)\n\
                 m[0:5]=b'FIRST'; time.sleep(4); m[0:5]=b'LATER'; time.sleep(3); m.close(); f.close()",
            )
            .arg(&target)
            .spawn()
            .unwrap();
        let pid = writer.id();
        let hash = sha256_hex(b"LATER\n");
        let found = d
            .poll(Duration::from_secs(9), |all| {
                all.iter()
                    .find(|a| {
                        a["file"]["path"] == s(&target)
                            && a["file"]["hash"]["sha256"] == hash.as_str()
                            && a["process"]["pid"] == pid
                    })
                    .cloned()
            })
            .ok();
        writer.wait().unwrap();
        assert!(
            found.is_some(),
            "fanotify={fanotify}: the second store was not reported while mapped: {}",
            summary(d.alerts().iter())
        );
    }
}

/// The decisions of the alerts (not events) among `docs`.
fn decided(docs: &[Value]) -> Vec<common::Decision> {
    common::decided(docs.iter().filter(|a| a["event"]["kind"] == "alert"))
}

/// Waits until the daemon's alerts (sorted decisions) are `want`, for up to 10 s.
fn wait_decided(d: &Daemon, want: &[(String, String, String)]) {
    d.wait_until(
        Duration::from_secs(10),
        |all| (decided(all) == want).then_some(()),
        |all| format!("alerts {:#?}\nwanted {want:#?}", decided(all)),
    );
}

#[test]
fn moves_a_renamed_directory_is_reported_as_check_reports_it() {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    fs::create_dir(f.path("d")).unwrap();
    fs::write(f.path("d/g"), "g\n").unwrap();
    fs::write(f.path("x"), "x\n").unwrap();
    let d = Daemon::start(&f);
    by("mv", &[s(&f.path("d")), s(&f.path("d2"))]);
    by("mv", &[s(&f.path("x")), s(&f.path("sub/x"))]);
    let mut want = vec![
        t("moved", &f.path("d2"), s(&f.path("d"))),
        t("moved", &f.path("d2/g"), s(&f.path("d/g"))),
        t("moved", &f.path("sub/x"), s(&f.path("x"))),
    ];
    want.sort();
    wait_decided(&d, &want);
    // Nothing more comes (no deletion or creation after the moves), and check agrees. A path
    // found gone waits 300 ms (run.rs's MOVE_WINDOW) for the other half of its move before it
    // is reported deleted; nothing observable marks the end of that wait (a later change's
    // alert may come before it), so this one waits it out with a margin.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(decided(&d.alerts()), want);
    let (_, checked) = f.check();
    assert_eq!(decided(&checked), want);
}

fn restart(f: &Fixture, d: Daemon) -> Daemon {
    let mut d = d;
    d.stop();
    Daemon::start_on_baseline(f)
}

#[test]
fn alert_once_across_restarts_and_reloads_and_again_for_a_new_change() {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    f.init();
    fs::write(f.path("a.txt"), "changed while down\n").unwrap();
    fs::write(f.path("new"), "new\n").unwrap();
    let mut d = Daemon::start_on_baseline(&f);
    let want = vec![
        t("created", &f.path("new"), ""),
        t("updated", &f.path("a.txt"), ""),
    ];
    wait_decided(&d, &want);
    for _ in 0..2 {
        d = restart(&f, d);
    }
    d.signal(libc::SIGHUP);
    d.wait_log_count("ready", 2);
    // Anything sent again would come before the alert on a later change to a.txt (which
    // already differs, so check still lists it as updated).
    let marker = d.drain(&f.path("a.txt"), "updated");
    let sent: Vec<Value> = d
        .alerts()
        .into_iter()
        .filter(|a| a["process"]["pid"] != marker)
        .collect();
    assert_eq!(decided(&sent), want, "restarts and a reload sent nothing again");
    // A second change to a file that already differs is a new difference.
    let pid = by("sh", &["-c", &format!("echo again > '{}'", s(&f.path("a.txt")))]);
    d.expect_where(&f.path("a.txt"), "updated", pid, |a| a["file"]["size"] == 6);
    let before = d.alerts().len();
    assert!(before > want.len(), "{:#?}", d.alerts());
    d = restart(&f, d);
    let marker = d.drain(&f.path("a.txt"), "updated");
    let sent: Vec<Value> = d
        .alerts()
        .into_iter()
        .filter(|a| a["process"]["pid"] != marker)
        .collect();
    assert_eq!(sent.len(), before, "{sent:#?}");
    // check still lists everything outstanding.
    let (code, checked) = f.check();
    assert_eq!(code, 1);
    assert_eq!(decided(&checked), want);
    drop(d);
}

#[test]
fn alert_once_the_daemon_follows_an_accept_while_it_runs() {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    let d = Daemon::start(&f);
    let old = fs::read(f.path("a.txt")).unwrap();
    let pid = by(
        "sh",
        &["-c", &format!("echo accepted > '{}'", s(&f.path("a.txt")))],
    );
    d.expect(&f.path("a.txt"), "updated", pid);
    let pid = by(
        "sh",
        &["-c", &format!("echo other > '{}'", s(&f.path("sub/b.conf")))],
    );
    d.expect(&f.path("sub/b.conf"), "updated", pid);
    let r = f.fimd(&["accept", s(&f.path("a.txt"))]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    d.wait_log("taken over");
    // Put back as it was before the accept: a change from the accepted state.
    let orig = f.dir.path().join("a.orig");
    fs::write(&orig, &old).unwrap();
    let pid = by("cp", &[s(&orig), s(&f.path("a.txt"))]);
    let a = d.expect_where(&f.path("a.txt"), "updated", pid, |a| {
        a["file"]["size"] == old.len() as u64
    });
    assert_ne!(
        a["file"]["hash"]["sha256"], a["fim"]["previous"]["hash"]["sha256"],
        "{a:#}"
    );
    assert_eq!(
        a["fim"]["previous"]["size"], 9,
        "the accepted state (\"accepted\\n\") is the previous one: {a:#}"
    );
    // b.conf was not accepted: still outstanding, and not sent again after a restart.
    let before = d.alerts().len();
    let d = restart(&f, d);
    // Anything sent again would come before the alert on a later change to a.txt (which
    // differs from the accepted state already, so check still lists it).
    let marker = d.drain(&f.path("a.txt"), "updated");
    let sent: Vec<Value> = d
        .alerts()
        .into_iter()
        .filter(|a| a["process"]["pid"] != marker)
        .collect();
    assert_eq!(sent.len(), before, "{sent:#?}");
    let (_, checked) = f.check();
    let paths: Vec<_> = decided(&checked).into_iter().map(|(_, p, _)| p).collect();
    assert_eq!(
        paths,
        vec![
            s(&f.path("a.txt")).to_owned(),
            s(&f.path("sub/b.conf")).to_owned()
        ]
    );
}

#[test]
fn moves_a_reused_inode_number_is_a_deletion_and_a_creation_under_run() {
    if !privileged("the realtime sensor") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let f = Fixture::new();
    // A test beside this one may take the freed number first: then all over again.
    for _ in 0..20 {
        let b = f.path("b");
        fs::write(&b, "b's content\n").unwrap();
        let d = Daemon::start(&f);
        let wanted = fs::metadata(&b).unwrap().ino();
        by("rm", &[s(&b)]);
        let mut reused = None;
        for i in 0..50 {
            let n = f.path(&format!("n{i}"));
            by("sh", &["-c", &format!("echo unrelated > '{}'", s(&n))]);
            if fs::metadata(&n).unwrap().ino() == wanted {
                reused = Some(n);
                break;
            }
            fs::remove_file(&n).unwrap();
        }
        let Some(n) = reused else {
            drop(d);
            continue;
        };
        d.wait_until(
            Duration::from_secs(10),
            |all| {
                let got = decided(all);
                let has = |action: &str, p: &Path| got.iter().any(|(a, q, _)| a == action && q == s(p));
                assert!(got.iter().all(|(a, ..)| a != "moved"), "{got:#?}");
                (has("deleted", &b) && has("created", &n)).then_some(())
            },
            |all| format!("{:#?}", decided(all)),
        );
        let (_, checked) = f.check();
        assert!(
            decided(&checked).iter().all(|(a, ..)| a != "moved"),
            "{checked:#?}"
        );
        return;
    }
    panic!("b's inode number was never handed out again");
}

/// §3 of issue 12: a watch never goes silently blind. Each body runs with the default sensor
/// and with the fanotify sensor.
mod never_blind {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::common::daemon::{Daemon, by, py, s, summary};
    use super::common::{Fixture, privileged};
    use super::with_fanotify;
    use serde_json::Value;

    fn configure(f: &Fixture, fanotify: bool) {
        if fanotify {
            with_fanotify(f, "");
        } else {
            f.write_config("");
        }
    }

    /// Waits up to 10 s for an alert on `path` with one of `actions` that satisfies `and`; when
    /// it names a process, that must be one of `pids` (the kernel names the writer of a change
    /// it reported; a root replaced between two records is found by the loop's own look, and
    /// then no process is named).
    fn root_alert(
        d: &Daemon,
        path: &Path,
        actions: &[&str],
        pids: &[u32],
        and: impl Fn(&Value) -> bool,
    ) -> Value {
        let p = s(path);
        let a = d.wait_until(
            Duration::from_secs(10),
            |all| {
                all.iter()
                    .find(|a| {
                        a["file"]["path"] == p && actions.iter().any(|x| a["event"]["action"] == *x) && and(a)
                    })
                    .cloned()
            },
            |all| format!("no {actions:?} alert for {p}: {}", summary(all.iter())),
        );
        let pid = &a["process"]["pid"];
        assert!(
            pid.is_null() || pids.iter().any(|x| pid == x),
            "alert for {p} names pid {pid}, not one of {pids:?}: {a:#}"
        );
        a
    }

    fn root_moved_away_and_replaced(fanotify: bool) {
        if !privileged("the realtime sensor") {
            return;
        }
        let f = Fixture::new();
        configure(&f, fanotify);
        let d = Daemon::start(&f);
        let old = f.dir.path().join("tree.old");
        let mv = by("mv", &[s(&f.tree), s(&old)]);
        // The old root is gone for a moment before the new one appears: part of the scenario
        // (a window the daemon may or may not look into), not a wait for the daemon.
        std::thread::sleep(Duration::from_millis(150));
        let mkdir = by("mkdir", &["-p", s(&f.path("sub"))]);
        let new_ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&f.tree).unwrap()).to_string();
        root_alert(
            &d,
            &f.tree,
            &["created", "updated", "attributes_modified"],
            &[mv, mkdir],
            |a| a["file"]["inode"] == new_ino.as_str(),
        );
        root_alert(&d, &f.path("sub/b.conf"), &["deleted"], &[mv, mkdir], |_| true);
        // What is there now is watched: changes in it are alerted with their writer.
        let w = py(
            "import sys\nopen(sys.argv[1],'w').write('changed\\n')",
            &f.path("a.txt"),
        );
        d.wait_for(&f.path("a.txt"), &["created", "updated"], w, |_| true)
            .unwrap_or_else(|e| panic!("{e}"));
        let suid = py(
            "import os,sys\nos.umask(0)\nfd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT,0o4755)\n\
             os.write(fd,b'x')\nos.close(fd)",
            &f.path("sub/tool"),
        );
        d.wait_for(
            &f.path("sub/tool"),
            &["created", "attributes_modified", "updated"],
            suid,
            |a| a["file"]["mode"] == "4755",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_root_moved_away_and_made_again_is_watched_again() {
        root_moved_away_and_replaced(false);
    }

    #[test]
    fn fanotify_a_root_moved_away_and_made_again_is_watched_again() {
        root_moved_away_and_replaced(true);
    }

    fn single_file_recreated(fanotify: bool) {
        if !privileged("the realtime sensor") {
            return;
        }
        let mut f = Fixture::new();
        let file = f.path("a.txt");
        f.tree = file.clone();
        configure(&f, fanotify);
        let d = Daemon::start(&f);
        let rm = by("rm", &[s(&file)]);
        d.expect(&file, "deleted", rm);
        let again = py("import sys\nopen(sys.argv[1],'w').write('alpha\\n')", &file);
        root_alert(
            &d,
            &file,
            &["created", "updated", "attributes_modified"],
            &[again],
            |a| {
                a["file"]["inode"]
                    == std::os::unix::fs::MetadataExt::ino(&fs::metadata(&file).unwrap())
                        .to_string()
                        .as_str()
            },
        );
        let later = py("import sys\nopen(sys.argv[1],'a').write('later\\n')", &file);
        d.expect_where(&file, "updated", later, |a| a["file"]["size"] == 12);
    }

    #[test]
    fn a_watched_file_deleted_and_recreated_is_watched_again() {
        single_file_recreated(false);
    }

    #[test]
    fn fanotify_a_watched_file_deleted_and_recreated_is_watched_again() {
        single_file_recreated(true);
    }

    fn root_becomes_symlink(fanotify: bool) {
        if !privileged("the realtime sensor") {
            return;
        }
        let f = Fixture::new();
        configure(&f, fanotify);
        let d = Daemon::start(&f);
        let old = f.dir.path().join("tree.old");
        let mv = by("mv", &[s(&f.tree), s(&old)]);
        let ln = by("ln", &["-s", s(&old), s(&f.tree)]);
        root_alert(&d, &f.tree, &["created", "updated"], &[mv, ln], |a| {
            a["file"]["type"] == "symlink"
        });
        root_alert(&d, &f.path("a.txt"), &["deleted"], &[mv, ln], |_| true);
        root_alert(&d, &f.path("sub/b.conf"), &["deleted"], &[mv, ln], |_| true);
    }

    #[test]
    fn a_root_replaced_by_a_symlink_is_reported() {
        root_becomes_symlink(false);
    }

    #[test]
    fn fanotify_a_root_replaced_by_a_symlink_is_reported() {
        root_becomes_symlink(true);
    }

    /// A root covered by a mount of another filesystem: its children are gone from view, the
    /// root is another inode, and changes on the new filesystem are alerted (the fanotify
    /// sensor marks it).
    fn root_becomes_mount(fanotify: bool) {
        if !privileged("the realtime sensor and mount") {
            return;
        }
        let f = Fixture::new();
        configure(&f, fanotify);
        let d = Daemon::start(&f);
        let mount = super::common::Mount::new(&["-t", "tmpfs", "tmpfs"], &f.tree);
        let new_ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&f.tree).unwrap()).to_string();
        root_alert(&d, &f.tree, &["updated", "attributes_modified"], &[], |a| {
            a["file"]["inode"] == new_ino.as_str()
        });
        root_alert(&d, &f.path("a.txt"), &["deleted"], &[], |_| true);
        let w = py(
            "import sys
open(sys.argv[1],'w').write('on tmpfs\\n')",
            &f.path("a.txt"),
        );
        d.wait_for(&f.path("a.txt"), &["created", "updated"], w, |_| true)
            .unwrap_or_else(|e| panic!("{e}"));
        let m = py(
            "import os,sys
os.mkdir(sys.argv[1])",
            &f.path("newdir"),
        );
        d.expect(&f.path("newdir"), "created", m);
        drop(d);
        drop(mount);
    }

    #[test]
    fn a_root_covered_by_a_mount_is_watched_again() {
        root_becomes_mount(false);
    }

    #[test]
    fn fanotify_a_root_covered_by_a_mount_is_watched_again() {
        root_becomes_mount(true);
    }

    /// A root covered by a ramfs (no file handles: fanotify cannot mark it for the whole
    /// filesystem). The eBPF sensor watches it like any other; the fanotify sensor cannot, and
    /// says so: a `watch_failed` alert and a count on stderr. Either way the root's own change
    /// is reported.
    fn root_becomes_unmarkable(fanotify: bool) {
        if !privileged("the realtime sensor and mount") {
            return;
        }
        let f = Fixture::new();
        configure(&f, fanotify);
        let d = Daemon::start(&f);
        let mount = super::common::Mount::new(&["-t", "ramfs", "ramfs"], &f.tree);
        let new_ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&f.tree).unwrap()).to_string();
        root_alert(&d, &f.tree, &["updated", "attributes_modified"], &[], |a| {
            a["file"]["inode"] == new_ino.as_str()
        });
        if fanotify {
            let failed = root_alert(&d, &f.tree, &["watch_failed"], &[], |_| true);
            assert_eq!(failed["event"]["kind"], "alert");
            d.wait_log("cannot watch");
        } else {
            let w = py("import sys\nopen(sys.argv[1],'w').write('x')", &f.path("a.txt"));
            d.wait_for(&f.path("a.txt"), &["created", "updated"], w, |_| true)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        drop(d);
        drop(mount);
    }

    #[test]
    fn a_root_covered_by_a_ramfs_is_watched_again() {
        root_becomes_unmarkable(false);
    }

    #[test]
    fn fanotify_a_root_covered_by_a_filesystem_it_cannot_mark_is_reported() {
        root_becomes_unmarkable(true);
    }

    /// Makes, writes or creates under a chain of 200-byte directories deeper than PATH_MAX,
    /// walking it relative to each directory (as no path-taking call can).
    const DEEP: &str = "import os,sys\n\
        fd=os.open(sys.argv[1],os.O_RDONLY|os.O_DIRECTORY)\n\
        for _ in range(int(sys.argv[2])):\n\
        \x20 n='d'*200\n\
        \x20 if sys.argv[3]=='mkdirs':\n\
        \x20\x20  try: os.mkdir(n,dir_fd=fd)\n\
        \x20\x20  except FileExistsError: pass\n\
        \x20 fd=os.open(n,os.O_RDONLY|os.O_DIRECTORY,dir_fd=fd)\n\
        if sys.argv[3]!='mkdirs':\n\
        \x20 os.umask(0)\n\
        \x20 fl=os.O_APPEND if sys.argv[3]=='append' else os.O_TRUNC\n\
        \x20 f=os.open(sys.argv[4],os.O_WRONLY|os.O_CREAT|fl,0o4755 if sys.argv[3]=='suid' else 0o644,dir_fd=fd)\n\
        \x20 os.write(f,sys.argv[5].encode())\n\
        \x20 os.close(f)\n";

    fn deep(root: &Path, levels: usize, args: &[&str]) -> u32 {
        let levels = levels.to_string();
        let mut all = vec!["-c", DEEP, s(root), &levels];
        all.extend_from_slice(args);
        by("python3", &all)
    }

    fn long_paths(fanotify: bool) {
        if !privileged("the realtime sensor") {
            return;
        }
        let f = Fixture::new();
        configure(&f, fanotify);
        let levels = 4200 / 201 + 1;
        deep(&f.tree, levels, &["mkdirs"]);
        deep(&f.tree, levels, &["write", "x.txt", "v1"]);
        let mut dir: PathBuf = f.tree.clone();
        for _ in 0..levels {
            dir.push("d".repeat(200));
        }
        assert!(dir.as_os_str().len() > 4096);
        let d = Daemon::start(&f);
        let w = deep(&f.tree, levels, &["write", "x.txt", "v2"]);
        d.expect(&dir.join("x.txt"), "updated", w);
        let c = deep(&f.tree, levels, &["suid", "new", "x"]);
        d.wait_for(&dir.join("new"), &["created", "updated"], c, |a| {
            a["file"]["mode"] == "4755"
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let deleted: Vec<Value> = d
            .alerts()
            .into_iter()
            .filter(|a| a["event"]["action"] == "deleted")
            .collect();
        assert!(deleted.is_empty(), "{}", summary(deleted.iter()));
    }

    /// An append-only log deeper than PATH_MAX: its appends are verified from the checkpoint
    /// and reported as `appended`, a rewrite as an alert.
    fn long_path_log(fanotify: bool) {
        if !privileged("the realtime sensor") {
            return;
        }
        let f = Fixture::new();
        if fanotify {
            with_fanotify(&f, "policy = \"append-only\"");
        } else {
            f.write_config("policy = \"append-only\"");
        }
        let levels = 4200 / 201 + 1;
        deep(&f.tree, levels, &["mkdirs"]);
        deep(&f.tree, levels, &["write", "app.log", "line 1\n"]);
        let mut dir: PathBuf = f.tree.clone();
        for _ in 0..levels {
            dir.push("d".repeat(200));
        }
        let d = Daemon::start(&f);
        let a = deep(&f.tree, levels, &["append", "app.log", "line 2\n"]);
        d.expect_where(&dir.join("app.log"), "appended", a, |x| {
            x["fim"]["append"]["verified_bytes"] == 7 && x["fim"]["append"]["appended_bytes"] == 7
        });
        let w = deep(&f.tree, levels, &["write", "app.log", "LINE 1\n"]);
        d.wait_for(&dir.join("app.log"), &["truncated", "updated"], w, |_| true)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn an_append_only_log_below_path_max_depth_is_verified() {
        long_path_log(false);
    }

    #[test]
    fn fanotify_an_append_only_log_below_path_max_depth_is_verified() {
        long_path_log(true);
    }

    #[test]
    fn changes_below_path_max_depth_are_alerted() {
        long_paths(false);
    }

    #[test]
    fn fanotify_changes_below_path_max_depth_are_alerted() {
        long_paths(true);
    }
}
