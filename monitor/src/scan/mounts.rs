//! Mount points, from /proc/self/mountinfo, so the walk never touches a mounted filesystem
//! without a deadline: stat(2) of a mount point asks the mounted filesystem (a FUSE daemon,
//! an NFS server) and blocks for as long as it does not answer (issue 12 §2: a hung mount
//! inside a watch froze the daemon, and `check` ended unkillable in D state). Reading
//! mountinfo asks nothing of any mounted filesystem.
use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use rustix::fs::{AtFlags, Stat, statat};

use super::deadline::{DeadlineError, Runner};

/// How long a mount point may take to answer a stat before the walk goes on without it.
pub const MOUNT_DEADLINE: Duration = Duration::from_secs(2);
/// Threads that may be stuck on mount points that do not answer, at most.
const MOUNT_WORKERS: usize = 4;

/// Every mount point of this mount namespace (proc(5), /proc/PID/mountinfo field 5, with the
/// kernel's octal escapes of space, tab, newline and backslash undone). Empty when unreadable.
pub fn mount_points() -> HashSet<Vec<u8>> {
    std::fs::read("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

fn parse_mountinfo(text: &[u8]) -> HashSet<Vec<u8>> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(unescape)
        .collect()
}

/// "\040" and the like (fs/proc_namespace.c, mangle()) back to bytes.
pub(super) fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let oct = s
            .get(i + 1..i + 4)
            .filter(|d| s[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    out
}

/// The problem reported for a mount point that did not answer in time.
pub fn not_answering() -> String {
    format!(
        "the filesystem mounted here did not answer within {} s (a hung network or FUSE mount): not \
         entered; unmount or repair it",
        MOUNT_DEADLINE.as_secs()
    )
}

static RUNNER: OnceLock<Runner> = OnceLock::new();

fn runner() -> &'static Runner {
    RUNNER.get_or_init(|| Runner::new("mount point stat", MOUNT_WORKERS))
}

/// Threads stuck in a stat of a mount point that did not answer (at most 4), and the stats
/// that missed their deadline since the start.
pub fn stuck() -> (usize, u64) {
    RUNNER.get().map_or((0, 0), |r| (r.stuck(), r.timed_out()))
}

/// lstat of `name` in `parent` (a mount point) on a worker, waiting at most `MOUNT_DEADLINE`.
/// Errors: `Err(None)` when it did not answer in time (the worker is abandoned, counted by the
/// runner) or no worker is free; `Err(Some(e))` for the call's own error.
pub fn stat_with_deadline(
    parent: std::sync::Arc<std::os::fd::OwnedFd>,
    name: std::ffi::CString,
) -> Result<Stat, Option<rustix::io::Errno>> {
    match runner().run(MOUNT_DEADLINE, move || {
        statat(&*parent, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
    }) {
        Ok(r) => r.map_err(Some),
        Err(
            DeadlineError::TimedOut { .. } | DeadlineError::Saturated { .. } | DeadlineError::Panicked { .. },
        ) => Err(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_mount_points_are_read_and_unescaped() {
        let text = b"22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
            40 22 0:35 / /mnt/with\\040space rw - tmpfs tmpfs rw\n\
            41 22 0:36 / /mnt/back\\134slash rw - fuse.x x rw\n\
            42 22 0:37 / /mnt/tab\\011 rw - nfs srv:/ rw\n";
        let m = parse_mountinfo(text);
        for p in [&b"/"[..], b"/mnt/with space", b"/mnt/back\\slash", b"/mnt/tab\t"] {
            assert!(m.contains(p), "{:?} in {m:?}", String::from_utf8_lossy(p));
        }
        assert_eq!(m.len(), 4);
        assert_eq!(
            unescape(b"a\\04"),
            b"a\\04".to_vec(),
            "a short escape stays as it is"
        );
    }

    #[test]
    fn this_namespace_has_its_root_mounted() {
        assert!(mount_points().contains(&b"/"[..]));
    }

    #[test]
    fn a_mount_point_that_answers_is_stat_ed_in_time() {
        let root = std::sync::Arc::new(
            rustix::fs::open(
                "/",
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .unwrap(),
        );
        let st = stat_with_deadline(root.clone(), c"proc".to_owned()).unwrap();
        assert_eq!(
            rustix::fs::FileType::from_raw_mode(st.st_mode),
            rustix::fs::FileType::Directory
        );
        assert_eq!(
            stat_with_deadline(root, c"no-such-entry".to_owned()).unwrap_err(),
            Some(rustix::io::Errno::NOENT)
        );
    }
}
