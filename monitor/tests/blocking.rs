//! Issue 12 §2: nothing on a hostile host blocks fimd. A FUSE filesystem that never answers
//! (its FUSE_INIT is never read, so every request on it waits) mounted inside a watch: `init`
//! and `check` finish, report the mount as not entered, report the other changes, and never
//! take the unanswered mount's contents for deleted. The running daemon's faults (stuck
//! writers, busy large files, full or locked state store, SIGTERM while stuck) are in the
//! fault suite, `cargo xtask faults`.
mod common;

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use common::Fixture;

/// A never-answering FUSE mount; dropping it detaches it and aborts the connection.
struct HungMount {
    dir: CString,
    _dev: OwnedFd,
}

impl HungMount {
    fn mount(dir: &Path) -> HungMount {
        // SAFETY: a constant path.
        let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        assert!(fd >= 0, "open /dev/fuse: {}", std::io::Error::last_os_error());
        // SAFETY: a descriptor the kernel just returned.
        let dev = unsafe { OwnedFd::from_raw_fd(fd) };
        let target = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let opts = CString::new(format!(
            "fd={},rootmode=40000,user_id=0,group_id=0",
            dev.as_raw_fd()
        ))
        .unwrap();
        // SAFETY: valid C strings for the whole call.
        let r = unsafe {
            libc::mount(
                c"fimd-test-hung".as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(r, 0, "mount fuse: {}", std::io::Error::last_os_error());
        HungMount {
            dir: target,
            _dev: dev,
        }
    }
}

impl Drop for HungMount {
    fn drop(&mut self) {
        // SAFETY: a valid C string.
        unsafe { libc::umount2(self.dir.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn init_and_check_never_hang_on_a_mount_that_does_not_answer() {
    if !common::privileged("mounting FUSE") {
        return;
    }
    // Members: mounted in the watch root and deeper; crossing filesystems allowed or not.
    for (rel, keys) in [
        ("hung", ""),
        ("sub/deeper/hung", ""),
        ("hung", "one_filesystem = true"),
        ("sub/deeper/hung", "one_filesystem = true"),
    ] {
        let f = Fixture::with_config_extra(keys);
        let hung = f.path(rel);
        std::fs::create_dir_all(&hung).unwrap();
        std::fs::write(hung.join("inside.txt"), "under the mount point\n").unwrap();
        f.init();
        let _mount = HungMount::mount(&hung);
        std::fs::write(f.path("a.txt"), "changed while a mount hangs\n").unwrap();
        let started = std::time::Instant::now();
        let r = f.fimd(&["check", "--json"]);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{rel} {keys}: {:?}",
            started.elapsed()
        );
        assert_eq!(r.code, 1, "{rel} {keys}: {}", r.stderr);
        assert!(
            r.stderr.contains("did not answer within 2 s"),
            "{rel} {keys}: {}",
            r.stderr
        );
        let alerts = r.json_lines();
        let a = f.alert_for(&alerts, &f.path("a.txt"));
        assert_eq!(a["event"]["action"], "updated");
        // Nothing at or under the unanswered mount is taken for deleted or changed.
        let h = hung.display().to_string();
        assert!(
            !alerts
                .iter()
                .any(|a| a["file"]["path"].as_str().is_some_and(|p| p.starts_with(&h))),
            "{rel} {keys}: {alerts:#?}"
        );
        // A baseline taken while it hangs finishes too, and says what it left out.
        let r = f.fimd(&["init"]);
        assert!(
            r.stderr.contains("did not answer within 2 s"),
            "{rel} {keys}: {}",
            r.stderr
        );
    }
}
