//! `fimd run`: each modification, made by a separate process, is alerted with that process's
//! pid and name. These need root and a kernel with the timestamp tracepoints.
mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fixture, privileged};
use serde_json::Value;

struct Daemon {
    child: Child,
    sink: PathBuf,
}

impl Daemon {
    /// Baselines the fixture, starts `fimd run` and waits until it says it is ready.
    fn start(f: &Fixture) -> Daemon {
        f.init();
        Daemon::start_on_baseline(f)
    }

    /// Starts `fimd run` on the existing baseline.
    fn start_on_baseline(f: &Fixture) -> Daemon {
        let sink = f.dir.path().join("alerts.jsonl");
        let text = fs::read_to_string(&f.config).unwrap();
        if !text.contains("[alerts]") {
            fs::write(
                &f.config,
                format!("{text}\n[alerts]\njsonl = {:?}\n", sink.display().to_string()),
            )
            .unwrap();
        }
        let mut child = Command::new(common::FIMD)
            .arg("-c")
            .arg(&f.config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("fimd run: {line}");
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.contains("ready") => break,
                Ok(_) => {}
                Err(_) => {
                    if let Ok(Some(st)) = child.try_wait() {
                        panic!("fimd run exited before it was ready: {st}");
                    }
                    assert!(Instant::now() < deadline, "fimd run not ready after 30 s");
                }
            }
        }
        Daemon { child, sink }
    }

    fn alerts(&self) -> Vec<Value> {
        fs::read_to_string(&self.sink)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for an alert on `path` with `action`, made by process `pid`.
    fn expect(&self, path: &Path, action: &str, pid: u32) -> Value {
        self.expect_where(path, action, pid, |_| true)
    }

    /// As `expect`, for an alert that also satisfies `and`.
    fn expect_where(&self, path: &Path, action: &str, pid: u32, and: impl Fn(&Value) -> bool) -> Value {
        let p = path.display().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.alerts();
            if let Some(a) = all.iter().find(|a| {
                a["file"]["path"] == p.as_str()
                    && a["event"]["action"] == action
                    && a["process"]["pid"] == pid
                    && and(a)
            }) {
                return a.clone();
            }
            if Instant::now() > deadline {
                panic!("no {action} alert for {p} by pid {pid}; alerts: {all:#?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Runs a program to completion, returning its pid.
fn by(program: &str, args: &[&str]) -> u32 {
    let mut c = Command::new(program)
        .args(args)
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let pid = c.id();
    let st = c.wait().unwrap();
    assert!(st.success(), "{program} {args:?}: {st}");
    pid
}

fn py(script: &str, path: &Path) -> u32 {
    by("python3", &["-c", script, path.to_str().unwrap()])
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every way of changing a file's content, each by its own process.
fn content_operations(f: &Fixture, d: &Daemon) {
    let t = |n: &str| {
        let p = f.path(n);
        fs::write(&p, vec![b'x'; 8192]).unwrap();
        p
    };
    // Created while the daemon runs (by this test process), then modified by others.
    let files: Vec<PathBuf> = [
        "write", "pwrite", "writev", "append", "otrunc", "truncate", "falloc", "punch", "mmap", "cfr",
        "splice", "sendfile", "direct", "uring",
    ]
    .iter()
    .map(|n| t(n))
    .collect();
    for p in &files {
        d.expect(p, "created", std::process::id());
    }
    let src = f.dir.path().join("source");
    fs::write(&src, vec![b'y'; 8192]).unwrap();
    let cases: Vec<(&str, u32, &str)> = vec![
        (
            "write",
            by(
                "dd",
                &[
                    "if=/dev/zero",
                    &format!("of={}", s(&files[0])),
                    "bs=1",
                    "count=1",
                    "conv=notrunc",
                ],
            ),
            "dd",
        ),
        (
            "pwrite",
            py(
                "import os,sys; fd=os.open(sys.argv[1],os.O_WRONLY); os.pwrite(fd,b'z',100)",
                &files[1],
            ),
            "",
        ),
        (
            "writev",
            py(
                "import os,sys; fd=os.open(sys.argv[1],os.O_WRONLY); os.pwritev(fd,[b'a',b'b'],5,os.RWF_DSYNC)",
                &files[2],
            ),
            "",
        ),
        (
            "append",
            by("sh", &["-c", &format!("echo more >> '{}'", s(&files[3]))]),
            "sh",
        ),
        (
            "otrunc",
            by("sh", &["-c", &format!(": > '{}'", s(&files[4]))]),
            "sh",
        ),
        (
            "truncate",
            by("truncate", &["-s", "10", s(&files[5])]),
            "truncate",
        ),
        (
            "falloc",
            by("fallocate", &["-l", "1M", s(&files[6])]),
            "fallocate",
        ),
        (
            "punch",
            by("fallocate", &["-p", "-o", "0", "-l", "4096", s(&files[7])]),
            "fallocate",
        ),
        (
            "mmap",
            py(
                "import mmap,sys; f=open(sys.argv[1],'r+b'); m=mmap.mmap(f.fileno(),0); m[0:1]=b'M'; m.flush()",
                &files[8],
            ),
            "",
        ),
        (
            "cfr",
            py(
                &format!(
                    "import os,sys; s=os.open('{}',os.O_RDONLY); d=os.open(sys.argv[1],os.O_WRONLY); os.copy_file_range(s,d,10,0,0)",
                    s(&src)
                ),
                &files[9],
            ),
            "",
        ),
        (
            "splice",
            py(
                "import os,sys; r,w=os.pipe(); os.write(w,b'spliced'); d=os.open(sys.argv[1],os.O_WRONLY); os.splice(r,d,7,offset_dst=0)",
                &files[10],
            ),
            "",
        ),
        (
            "sendfile",
            py(
                &format!(
                    "import os,sys; s=os.open('{}',os.O_RDONLY); d=os.open(sys.argv[1],os.O_WRONLY); os.sendfile(d,s,0,16)",
                    s(&src)
                ),
                &files[11],
            ),
            "",
        ),
        (
            "direct",
            by(
                "dd",
                &[
                    "if=/dev/urandom",
                    &format!("of={}", s(&files[12])),
                    "bs=4096",
                    "count=1",
                    "oflag=direct",
                    "conv=notrunc",
                ],
            ),
            "dd",
        ),
        (
            "uring",
            by(
                "fio",
                &[
                    "--name=u",
                    &format!("--filename={}", s(&files[13])),
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
        ),
    ];
    for (name, pid, comm) in cases {
        let a = d.expect(&f.path(name), "updated", pid);
        if !comm.is_empty() {
            assert_eq!(a["process"]["name"], comm, "{name}: {a:#}");
        }
        // The executable is read from /proc while the writer lives; these exit at once.
        assert_eq!(a["user"]["id"], "0");
    }
}

#[test]
fn every_content_change_is_alerted_with_its_process() {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    let d = Daemon::start(&f);
    content_operations(&f, &d);
}

#[test]
fn metadata_and_name_changes_are_alerted_with_their_process() {
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
    for n in [
        "chmod", "chown", "xattr", "cap", "times", "unlink", "over", "victim", "linked",
    ] {
        fs::write(f.path(n), n).unwrap();
    }
    fs::create_dir(f.path("rmdir")).unwrap();
    let d = Daemon::start(&f);
    let p = |n: &str| f.path(n);

    d.expect(
        &p("chmod"),
        "attributes_modified",
        by("chmod", &["600", s(&p("chmod"))]),
    );
    d.expect(
        &p("chown"),
        "attributes_modified",
        by("chown", &["65534", s(&p("chown"))]),
    );
    d.expect(
        &p("xattr"),
        "attributes_modified",
        by("setfattr", &["-n", "user.k", "-v", "v", s(&p("xattr"))]),
    );
    d.expect(
        &p("cap"),
        "attributes_modified",
        by("setcap", &["cap_net_raw+ep", s(&p("cap"))]),
    );
    d.expect(
        &p("times"),
        "attributes_modified",
        by("touch", &["-d", "2001-01-01", s(&p("times"))]),
    );
    d.expect(&p("unlink"), "deleted", by("rm", &[s(&p("unlink"))]));
    d.expect(
        &p("renamed"),
        "moved",
        by("mv", &[s(&p("a.txt")), s(&p("renamed"))]),
    );
    // Renamed over an existing watched file: the victim's content is replaced.
    d.expect(
        &p("victim"),
        "updated",
        by("mv", &[s(&p("over")), s(&p("victim"))]),
    );
    d.expect(
        &p("hardlink"),
        "created",
        by("ln", &[s(&p("linked")), s(&p("hardlink"))]),
    );
    d.expect(
        &p("symlink"),
        "created",
        by("ln", &["-s", "target", s(&p("symlink"))]),
    );
    d.expect(&p("rmdir"), "deleted", by("rmdir", &[s(&p("rmdir"))]));
    d.expect(&p("newdir"), "created", by("mkdir", &[s(&p("newdir"))]));
    // A file in the new directory is watched from then on.
    d.expect(&p("newdir/file"), "created", by("touch", &[s(&p("newdir/file"))]));
    d.expect(
        &p("newdir/file"),
        "updated",
        by("sh", &["-c", &format!("echo x > '{}'", s(&p("newdir/file")))]),
    );
    // Out of the tree: the file is gone from the watch.
    let outside = f.dir.path().join("moved-out");
    d.expect(
        &p("sub/b.conf"),
        "deleted",
        by("mv", &[s(&p("sub/b.conf")), s(&outside)]),
    );
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
    if !privileged("the realtime sensor") {
        return;
    }
    let f = Fixture::new();
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
