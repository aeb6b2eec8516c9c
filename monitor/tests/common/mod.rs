//! Shared fixtures: a temporary tree, a configuration watching it, and the real `fimd` binary.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub mod daemon;
pub mod deploy;
pub mod metrics;

pub const FIMD: &str = env!("CARGO_BIN_EXE_fimd");

/// Tests that need root or the kernel: run them, fail them in CI if they cannot run, skip
/// (loudly) elsewhere.
pub fn privileged(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var_os("FIMD_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
        panic!("{what} needs root, and FIMD_REQUIRE_PRIVILEGED=1 forbids skipping it");
    }
    eprintln!("SKIPPED: {what} needs root (set FIMD_REQUIRE_PRIVILEGED=1 to make this a failure)");
    false
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub tree: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
}

impl Fixture {
    /// A tree with a few files, watched by a static policy.
    pub fn new() -> Fixture {
        Fixture::with_config_extra("")
    }

    pub fn with_config_extra(extra_watch_keys: &str) -> Fixture {
        let dir = tempfile::Builder::new().prefix("fimd-test-").tempdir().unwrap();
        // Tests that drop privileges must be able to traverse it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("a.txt"), "alpha\n").unwrap();
        fs::write(tree.join("sub/b.conf"), "key = value\n").unwrap();
        let state = dir.path().join("state");
        let config = dir.path().join("fimd.toml");
        let f = Fixture {
            dir,
            tree,
            config,
            state,
        };
        f.write_config(extra_watch_keys);
        f
    }

    pub fn write_config(&self, extra_watch_keys: &str) {
        fs::write(
            &self.config,
            format!(
                "state_dir = {:?}\n[[watch]]\npath = {:?}\n{extra_watch_keys}\n",
                self.state.display().to_string(),
                self.tree.display().to_string()
            ),
        )
        .unwrap();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tree.join(rel)
    }

    /// Runs `fimd -c CONFIG args…`, failing the test if it runs for more than a minute.
    pub fn fimd(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(FIMD);
        cmd.arg("-c").arg(&self.config).args(args);
        run(cmd)
    }

    pub fn init(&self) {
        let r = self.fimd(&["init"]);
        assert_eq!(r.code, 0, "init failed: {}", r.stderr);
    }

    /// `fimd check --json`: the exit status and the alerts.
    pub fn check(&self) -> (i32, Vec<serde_json::Value>) {
        let r = self.fimd(&["check", "--json"]);
        (r.code, r.json_lines())
    }

    /// The one alert for `path`, asserting there is exactly one.
    pub fn alert_for<'a>(&self, alerts: &'a [serde_json::Value], path: &Path) -> &'a serde_json::Value {
        let p = path.display().to_string();
        let hits: Vec<_> = alerts
            .iter()
            .filter(|a| a["file"]["path"] == p.as_str())
            .collect();
        assert_eq!(hits.len(), 1, "expected one alert for {p}, got {alerts:#?}");
        hits[0]
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub raw_stdout: Vec<u8>,
}

impl Run {
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

pub fn run(mut cmd: Command) -> Run {
    use std::io::Read;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut o = child.stdout.take().unwrap();
    let mut e = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        o.read_to_end(&mut b).map(|_| b)
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        e.read_to_end(&mut b).map(|_| b)
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fimd ran for over a minute (hung?)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out.join().unwrap().unwrap();
    let stderr = err.join().unwrap().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        raw_stdout: stdout,
    }
}

/// Runs `fimd -c CONFIG args…` as the unprivileged user nobody (65534).
pub fn fimd_as_nobody(config: &Path, args: &[&str]) -> Run {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", FIMD, "-c"])
        .arg(config)
        .args(args);
    run(c)
}

/// Runs a helper program (touch, setfattr, …), asserting success.
pub fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn changes(alert: &serde_json::Value) -> Vec<String> {
    alert["fim"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

/// Runs `mount args… target` and unmounts `target` when dropped, even if the test fails.
pub struct Mount(PathBuf);

impl Mount {
    pub fn new(args: &[&str], target: &Path) -> Mount {
        let mut all: Vec<&str> = args.to_vec();
        all.push(target.to_str().unwrap());
        sh("mount", &all);
        Mount(target.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Filesystems the realtime suites run on besides the one holding the temporary directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fs {
    Tmpfs,
    /// A sparse 300 MiB image (mkfs.xfs refuses smaller ones) on a loop device.
    Xfs,
    /// A sparse 256 MiB image on a loop device.
    Btrfs,
}

/// A fixture whose watched tree is on a fresh filesystem: `DIR/fs` is the mount point,
/// `DIR/fs/tree` the watch root and `DIR/fs/outside` a directory on the same filesystem but
/// outside the watch, so renames into and out of the tree are real rename(2)s, not copies.
pub struct FsFixture {
    // Declared first so it is dropped (unmounted) before `fixture` removes the directory that
    // holds the image. A daemon created after this value is dropped before it.
    _mount: Mount,
    pub fixture: Fixture,
    pub outside: PathBuf,
}

impl FsFixture {
    pub fn new(kind: Fs) -> FsFixture {
        let dir = tempfile::Builder::new().prefix("fimd-test-").tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let mnt = dir.path().join("fs");
        fs::create_dir(&mnt).unwrap();
        let image = |size: &str, mkfs: &str| {
            let img = dir.path().join(format!("{mkfs}.img"));
            let img_s = img.to_str().unwrap().to_owned();
            sh("truncate", &["-s", size, &img_s]);
            sh(mkfs, &["-q", "-f", &img_s]);
            img_s
        };
        let mount = match kind {
            Fs::Tmpfs => Mount::new(&["-t", "tmpfs", "tmpfs"], &mnt),
            Fs::Xfs => Mount::new(&["-o", "loop", &image("300M", "mkfs.xfs")], &mnt),
            Fs::Btrfs => Mount::new(&["-o", "loop", &image("256M", "mkfs.btrfs")], &mnt),
        };
        let outside = mnt.join("outside");
        fs::create_dir(&outside).unwrap();
        let tree = mnt.join("tree");
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("a.txt"), "alpha\n").unwrap();
        fs::write(tree.join("sub/b.conf"), "key = value\n").unwrap();
        let state = dir.path().join("state");
        let config = dir.path().join("fimd.toml");
        let fixture = Fixture {
            dir,
            tree,
            config,
            state,
        };
        fixture.write_config("");
        FsFixture {
            _mount: mount,
            fixture,
            outside,
        }
    }
}

/// One alert as `(action, path, previous path)`: the previous path only for a move.
pub type Decision = (String, String, String);

/// The decisions of `alerts`, sorted, so a set of moves, deletions and creations compares whole.
pub fn decided<'a>(alerts: impl Iterator<Item = &'a serde_json::Value>) -> Vec<Decision> {
    let mut v: Vec<Decision> = alerts
        .map(|a| {
            (
                a["event"]["action"].as_str().unwrap_or_default().to_owned(),
                a["file"]["path"].as_str().unwrap_or_default().to_owned(),
                // Where it came from, for a move (a deletion names its own path there).
                if a["event"]["action"] == "moved" {
                    a["fim"]["previous"]["path"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                } else {
                    String::new()
                },
            )
        })
        .collect();
    v.sort();
    v
}

/// The decision `(action, path, from)` a test expects.
pub fn t(action: &str, path: &Path, from: &str) -> Decision {
    (action.to_owned(), path.display().to_string(), from.to_owned())
}
