//! Reading extended attributes (capabilities, SELinux labels, POSIX ACLs, user.*) without
//! following symlinks and without opening special files.
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use rustix::fs::{
    fgetxattr, fgetxattr_query, flistxattr, flistxattr_query, lgetxattr, lgetxattr_query, llistxattr,
    llistxattr_query,
};

use crate::baseline::entry::Xattrs;

/// Attributes of an open regular file or directory.
pub fn read_fd(fd: impl AsFd) -> io::Result<Xattrs> {
    let fd = fd.as_fd();
    collect(
        || flistxattr_query(fd),
        |buf| flistxattr(fd, buf),
        |name| fgetxattr_query(fd, name),
        |name, buf| fgetxattr(fd, name, buf),
    )
}

/// Attributes of `name` in directory `dir`, not following a final symlink. Goes through
/// `/proc/self/fd` so that FIFOs, sockets and devices are never opened.
pub fn read_at(dir: impl AsFd, name: &[u8]) -> io::Result<Xattrs> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_fd().as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let path = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let path = path.as_c_str();
    collect(
        || llistxattr_query(path),
        |buf| llistxattr(path, buf),
        |n| lgetxattr_query(path, n),
        |n, buf| lgetxattr(path, n, buf),
    )
}

fn collect(
    list_len: impl Fn() -> rustix::io::Result<usize>,
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    value_len: impl Fn(&std::ffi::CStr) -> rustix::io::Result<usize>,
    value: impl Fn(&std::ffi::CStr, &mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Xattrs> {
    let names = match retry_sized(&list_len, |b| list(b)) {
        Ok(n) => n,
        Err(e) if e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::PERM => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for raw in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(raw).expect("split on NUL");
        match retry_sized(&|| value_len(&cname), |b| value(&cname, b)) {
            Ok(v) => out.push((raw.to_vec(), v)),
            // Removed between list and get: it is simply not there now.
            Err(e) if e == rustix::io::Errno::NODATA => {}
            Err(e) => return Err(e.into()),
        }
    }
    out.sort();
    Ok(out)
}

/// Query the size, then fetch; if the value grew in between (ERANGE), try again.
fn retry_sized(
    len: &dyn Fn() -> rustix::io::Result<usize>,
    fetch: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    for _ in 0..4 {
        let n = len()?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n];
        match fetch(&mut buf) {
            Ok(got) => {
                buf.truncate(got);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(rustix::io::Errno::RANGE)
}
