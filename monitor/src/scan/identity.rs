//! What tells one inode from another that later reuses its number: the birth time
//! (`statx(2)`, `STATX_BTIME`) and the inode generation (`FS_IOC_GETVERSION`,
//! include/uapi/linux/fs.h). Inode numbers are recycled as soon as a file is deleted (ext4
//! hands the next new file the number just freed), so the number alone does not say "the same
//! file"; see `crate::moves` for how these decide a move.
use std::ffi::CStr;
use std::os::fd::AsFd;

use rustix::fs::{AtFlags, StatxFlags};

/// The birth time of `name` in `dir` (not following a symlink), in nanoseconds since the Unix
/// epoch, from `statx(2)` with `STATX_BTIME`; `None` when the filesystem does not report one
/// (the kernel leaves `STATX_BTIME` out of `stx_mask`) or `statx` fails.
pub fn birth_at(dir: impl AsFd, name: &CStr) -> Option<i64> {
    let st = rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::BTIME).ok()?;
    birth_of(&st)
}

/// The birth time of an open file, as [`birth_at`].
pub fn birth_fd(fd: impl AsFd) -> Option<i64> {
    let st = rustix::fs::statx(fd, c"", AtFlags::EMPTY_PATH, StatxFlags::BTIME).ok()?;
    birth_of(&st)
}

fn birth_of(st: &rustix::fs::Statx) -> Option<i64> {
    (st.stx_mask & StatxFlags::BTIME.bits() != 0)
        .then(|| st.stx_btime.tv_sec * 1_000_000_000 + i64::from(st.stx_btime.tv_nsec))
}

/// The inode generation of an open regular file or directory (`FS_IOC_GETVERSION`, which
/// ext4, xfs and btrfs answer); `None` where the filesystem has no such ioctl (ENOTTY,
/// EOPNOTSUPP, EINVAL: tmpfs among others) or it fails.
pub fn generation_fd(fd: impl AsFd) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut v: libc::c_long = 0;
    // SAFETY: FS_IOC_GETVERSION writes one `long` through the pointer, which is valid for it.
    let r = unsafe {
        libc::ioctl(
            fd.as_fd().as_raw_fd(),
            libc::FS_IOC_GETVERSION,
            &mut v as *mut libc::c_long,
        )
    };
    // The kernel stores the 32-bit `i_generation` in the long.
    (r == 0).then_some(v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_on_the_test_filesystem_has_a_birth_time_near_now() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("x")).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        // Whatever the filesystem: a birth time is near now, or absent, and both ways agree.
        let by_fd = birth_fd(&f);
        let d = std::fs::File::open(dir.path()).unwrap();
        assert_eq!(by_fd, birth_at(&d, c"x"));
        if let Some(b) = by_fd {
            assert!((now - b).abs() < 60_000_000_000, "birth {b}, now {now}");
        }
        // The generation is a number or "none", never a failure.
        let _ = generation_fd(&f);
    }
}
