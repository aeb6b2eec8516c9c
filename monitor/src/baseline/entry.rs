//! One file's recorded state, and its canonical byte encoding (what the seal covers).

/// File type, stored as a stable number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular = 1,
    Directory = 2,
    Symlink = 3,
    Fifo = 4,
    Socket = 5,
    CharDevice = 6,
    BlockDevice = 7,
}

impl FileKind {
    pub fn from_mode(mode: u32) -> FileKind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            _ => FileKind::Regular,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Regular => "file",
            FileKind::Directory => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::CharDevice => "char_device",
            FileKind::BlockDevice => "block_device",
        }
    }
}

impl TryFrom<i64> for FileKind {
    type Error = i64;
    fn try_from(v: i64) -> Result<Self, i64> {
        Ok(match v {
            1 => FileKind::Regular,
            2 => FileKind::Directory,
            3 => FileKind::Symlink,
            4 => FileKind::Fifo,
            5 => FileKind::Socket,
            6 => FileKind::CharDevice,
            7 => FileKind::BlockDevice,
            other => return Err(other),
        })
    }
}

/// Extended attributes, sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute host path, raw bytes.
    pub path: Vec<u8>,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits including setuid/setgid/sticky (no type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// SHA-256 of the content; `None` for non-regular files and files that could not be read.
    pub sha256: Option<[u8; 32]>,
    pub link_target: Option<Vec<u8>>,
    pub xattrs: Xattrs,
    /// Inode flags (`FS_IOC_GETFLAGS`: immutable, append-only, …; see `scan::flags`) of a
    /// regular file or directory, without the bits the filesystem owns. `None`: not recorded
    /// ("none"): another type, a filesystem without them, or a file that could not be opened.
    pub flags: Option<u32>,
    /// Birth (creation) time of the inode, nanoseconds since the Unix epoch, from `statx(2)`
    /// with `STATX_BTIME` (ext4, xfs, btrfs, tmpfs…). `None` where the filesystem does not
    /// report it. With `generation`, it tells a moved inode from a new one that reuses a
    /// deleted inode's number (see `crate::moves`).
    pub birth_ns: Option<i64>,
    /// The inode generation (`FS_IOC_GETVERSION`, include/uapi/linux/fs.h): a number the
    /// filesystem gives an inode when it is allocated, so a reused inode number has another
    /// one (ext4, xfs, btrfs). `None` for types never opened (symlinks, devices, FIFOs) and
    /// filesystems without the ioctl (tmpfs).
    pub generation: Option<u32>,
}

impl Entry {
    /// A regular file at `path` for unit tests: 1 byte, mode 0644, owner 0, inode 1 on device 1,
    /// one link, times 0, the digest of all zero bytes, nothing else recorded. Tests change the
    /// fields they are about with struct update syntax.
    #[cfg(test)]
    pub fn test_file(path: &[u8]) -> Entry {
        Entry {
            path: path.to_vec(),
            kind: FileKind::Regular,
            size: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            ino: 1,
            dev: 1,
            nlink: 1,
            mtime_ns: 0,
            ctime_ns: 0,
            sha256: Some([0; 32]),
            link_target: None,
            xattrs: Vec::new(),
            flags: None,
            birth_ns: None,
            generation: None,
        }
    }

    /// Appends the canonical encoding: fixed-width little-endian numbers, length-prefixed bytes.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_bytes(out, &self.path);
        out.push(self.kind as u8);
        for n in [self.size, self.ino, self.dev, self.nlink] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        for n in [self.mode, self.uid, self.gid] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        for n in [self.mtime_ns, self.ctime_ns] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        match &self.sha256 {
            Some(h) => {
                out.push(1);
                out.extend_from_slice(h);
            }
            None => out.push(0),
        }
        match &self.link_target {
            Some(t) => {
                out.push(1);
                put_bytes(out, t);
            }
            None => out.push(0),
        }
        encode_xattrs_into(&self.xattrs, out);
        match self.flags {
            Some(f) => {
                out.push(1);
                out.extend_from_slice(&f.to_le_bytes());
            }
            None => out.push(0),
        }
        match self.birth_ns {
            Some(b) => {
                out.push(1);
                out.extend_from_slice(&b.to_le_bytes());
            }
            None => out.push(0),
        }
        match self.generation {
            Some(g) => {
                out.push(1);
                out.extend_from_slice(&g.to_le_bytes());
            }
            None => out.push(0),
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

/// Encodes xattrs as count, then length-prefixed name and value pairs.
pub fn encode_xattrs(x: &Xattrs) -> Vec<u8> {
    let mut out = Vec::new();
    encode_xattrs_into(x, &mut out);
    out
}

/// Appends what [`encode_xattrs`] returns to `out`, without a vector of its own.
fn encode_xattrs_into(x: &Xattrs, out: &mut Vec<u8>) {
    out.extend_from_slice(&(x.len() as u64).to_le_bytes());
    for (k, v) in x {
        put_bytes(out, k);
        put_bytes(out, v);
    }
}

/// Decodes what `encode_xattrs` wrote; `None` if the bytes are malformed.
pub fn decode_xattrs(mut b: &[u8]) -> Option<Xattrs> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Some(head)
    }
    fn take_len(b: &mut &[u8]) -> Option<usize> {
        let raw = take(b, 8)?;
        usize::try_from(u64::from_le_bytes(raw.try_into().ok()?)).ok()
    }
    let count = take_len(&mut b)?;
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let kl = take_len(&mut b)?;
        let k = take(&mut b, kl)?.to_vec();
        let vl = take_len(&mut b)?;
        let v = take(&mut b, vl)?.to_vec();
        out.push((k, v));
    }
    b.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattrs_round_trip_and_reject_garbage() {
        let x: Xattrs = vec![
            (b"security.capability".to_vec(), vec![1, 0, 0, 2]),
            (b"user.\xff".to_vec(), Vec::new()),
        ];
        let enc = encode_xattrs(&x);
        assert_eq!(decode_xattrs(&enc), Some(x));
        assert_eq!(decode_xattrs(&enc[..enc.len() - 1]), None);
        assert_eq!(decode_xattrs(&[0xff; 8]), None);
    }
}
