//! A FUSE mount that never answers: /dev/fuse is opened and mounted, and nobody reads it, so
//! the kernel's FUSE_INIT is never answered and every request on the mount (a stat of its
//! root included) waits (fs/fuse/dev.c: requests wait for the connection to be initialised).
//! The waits are killable; dropping the mount detaches it and closes the device, which aborts
//! the connection (waiters get ENOTCONN).
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::bail;

pub struct HungMount {
    dir: PathBuf,
    _dev: OwnedFd,
}

impl HungMount {
    /// Mounts a never-answering FUSE filesystem on the existing directory `dir`.
    pub fn mount(dir: &Path) -> anyhow::Result<HungMount> {
        let dev = mount_fuse(dir, c"fimd-hung", 0)?;
        Ok(HungMount {
            dir: dir.to_owned(),
            _dev: dev,
        })
    }
}

impl Drop for HungMount {
    fn drop(&mut self) {
        if let Ok(target) = CString::new(self.dir.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid C string.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Opens /dev/fuse (with `open_flags` added, e.g. `O_NONBLOCK` for a server that polls it) and
/// mounts a FUSE filesystem named `source` on the existing directory `dir`, served through the
/// returned descriptor (fs/fuse/inode.c: the `fd=` mount option).
pub(super) fn mount_fuse(dir: &Path, source: &CStr, open_flags: i32) -> anyhow::Result<OwnedFd> {
    // SAFETY: a constant path.
    let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | open_flags) };
    if fd < 0 {
        bail!("open /dev/fuse: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    let dev = unsafe { OwnedFd::from_raw_fd(fd) };
    let target = CString::new(dir.as_os_str().as_encoded_bytes())?;
    let opts = CString::new(format!(
        "fd={},rootmode=40000,user_id=0,group_id=0",
        dev.as_raw_fd()
    ))?;
    // SAFETY: valid C strings for the whole call.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            c"fuse".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            opts.as_ptr().cast(),
        )
    };
    if r != 0 {
        bail!(
            "mount fuse on {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(dev)
}
