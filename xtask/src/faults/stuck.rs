//! A writer stuck inside write(2) on a file, holding its inode lock: the source buffer is
//! anonymous memory registered with userfaultfd(2) for missing pages, and nobody serves the
//! fault, so the kernel's copy from the buffer waits (in `generic_perform_write`, with
//! `i_rwsem` held by the filesystem's write_iter). Closing the userfaultfd releases it: the
//! fault is then served with zero pages and the write completes.
//!
//! Constants from include/uapi/linux/userfaultfd.h.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::thread::JoinHandle;

use anyhow::{Context, bail};

const UFFD_API: u64 = 0xAA;
/// _IOWR(UFFDIO, _UFFDIO_API, struct uffdio_api): 24 bytes.
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
/// _IOWR(UFFDIO, _UFFDIO_REGISTER, struct uffdio_register): 32 bytes.
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
/// Bytes written from the unserved buffer.
const LEN: usize = 16 * 4096;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

/// A thread of this process stuck writing to a file until `release`.
pub struct StuckWriter {
    uffd: OwnedFd,
    thread: JoinHandle<std::io::Result<usize>>,
    region: usize,
}

impl StuckWriter {
    /// Opens `path` for writing and starts a write of `LEN` bytes from an unserved buffer.
    pub fn start(path: &Path) -> anyhow::Result<StuckWriter> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: the syscall takes flags only.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if fd < 0 {
            bail!(
                "userfaultfd: {} (needs root or vm.unprivileged_userfaultfd)",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: a descriptor the kernel just returned, owned by nobody else.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: 0,
            ioctls: 0,
        };
        // SAFETY: the ioctl reads and writes one uffdio_api.
        if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut api) } != 0 {
            bail!("UFFDIO_API: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a fresh private anonymous mapping, unmapped by `release`.
        let region = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if region == libc::MAP_FAILED {
            bail!("mmap: {}", std::io::Error::last_os_error());
        }
        let mut reg = UffdioRegister {
            start: region as u64,
            len: LEN as u64,
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: the ioctl reads and writes one uffdio_register naming our mapping.
        if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, &mut reg) } != 0 {
            bail!("UFFDIO_REGISTER: {}", std::io::Error::last_os_error());
        }
        let addr = region as usize;
        let thread = std::thread::spawn(move || {
            // SAFETY: the mapping stays until `release` joins this thread.
            let n = unsafe { libc::write(file.as_raw_fd(), addr as *const libc::c_void, LEN) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        Ok(StuckWriter {
            uffd,
            thread,
            region: addr,
        })
    }

    /// Releases the write (it completes with zeros) and waits for it.
    pub fn release(self) -> anyhow::Result<()> {
        drop(self.uffd);
        let written = self.thread.join().expect("the stuck writer thread")?;
        // SAFETY: our mapping, no longer used by the joined thread.
        unsafe { libc::munmap(self.region as *mut libc::c_void, LEN) };
        if written == 0 {
            bail!("the released write wrote nothing");
        }
        Ok(())
    }
}
