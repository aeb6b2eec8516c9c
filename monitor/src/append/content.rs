//! Reading a log's content safely: opening it without following a symlink or blocking, judging
//! a rotated copy (plain or gzip) against the log's verified checkpoints, and digesting it.
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Opens a regular file of the tree at `root` for reading: no symlink followed, nothing but a
/// regular file opened, never blocking.
pub fn open_regular(root: &Path, path: &[u8]) -> Option<OwnedFd> {
    use rustix::fs::{Mode as FMode, OFlags, ResolveFlags};
    let rel = path.strip_prefix(b"/").unwrap_or(path);
    let rel = if rel.is_empty() { &b"."[..] } else { rel };
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        FMode::empty(),
    )
    .ok()?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::IN_ROOT;
    let fd = if rel.len() > crate::scan::long_paths::PATH_MAX_BYTES {
        // Too long to give whole: its directory relative to `root` one component at a time
        // (no symlink followed), then the file relative to that.
        let (parent, last) = crate::scan::long_paths::parent_at(dir, rel).ok()?;
        rustix::fs::openat2(
            &parent,
            std::ffi::OsStr::from_bytes(last),
            flags,
            FMode::empty(),
            resolve,
        )
    } else {
        rustix::fs::openat2(
            &dir,
            std::ffi::OsStr::from_bytes(rel),
            flags,
            FMode::empty(),
            resolve,
        )
    }
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    (rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile).then_some(fd)
}

/// How a file's content stands against a log's verified checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    /// Bytes read (decompressed, for a compressed file).
    pub total: u64,
    /// The longest checkpoint it starts with (0: none).
    pub verified: u64,
    /// It disagrees with a checkpoint it is long enough to hold.
    pub mismatch: bool,
}

/// Streams `r` against ascending `checkpoints`, reading at most `cap` bytes.
pub fn judge_stream(mut r: impl Read, checkpoints: &[(u64, [u8; 32])], cap: u64) -> std::io::Result<Judged> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0u64;
    let mut next = 0;
    let mut out = Judged {
        total: 0,
        verified: 0,
        mismatch: false,
    };
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            // Stop exactly at the next checkpoint to compare the digest there.
            let take = match checkpoints.get(next) {
                Some(&(len, _)) if len >= total && len - total < chunk.len() as u64 => (len - total) as usize,
                _ => chunk.len(),
            };
            h.update(&chunk[..take]);
            total += take as u64;
            chunk = &chunk[take..];
            while let Some(&(len, sha)) = checkpoints.get(next) {
                if len != total {
                    break;
                }
                let d: [u8; 32] = h.clone().finalize().into();
                if d == sha {
                    out.verified = len;
                } else {
                    out.mismatch = true;
                }
                next += 1;
            }
        }
        if total > cap {
            break;
        }
    }
    // An empty checkpoint list entry at 0 never arises; a zero-length log verifies trivially.
    out.total = total;
    Ok(out)
}

/// Whether the file starts with the gzip magic (RFC 1952 §2.3.1).
fn is_compressed(fd: &OwnedFd) -> bool {
    let mut magic = [0u8; 2];
    matches!(rustix::io::pread(fd, &mut magic, 0), Ok(2)) && magic == [0x1f, 0x8b]
}

/// Judges a rotated file (plain or gzip) against a log's checkpoints.
pub fn judge_file(fd: OwnedFd, checkpoints: &[(u64, [u8; 32])], cap: u64) -> std::io::Result<(Judged, bool)> {
    let compressed = is_compressed(&fd);
    let file = std::fs::File::from(fd);
    let j = if compressed {
        judge_stream(
            flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)),
            checkpoints,
            cap,
        )?
    } else {
        judge_stream(file, checkpoints, cap)?
    };
    Ok((j, compressed))
}

/// The length and SHA-256 of a file's content (decompressed, when it is gzip), reading at most
/// `cap` bytes of it; whether it was compressed.
pub fn digest_file(fd: OwnedFd, cap: u64) -> std::io::Result<(u64, [u8; 32], bool)> {
    let compressed = is_compressed(&fd);
    let file = std::fs::File::from(fd);
    let mut r: Box<dyn Read> = if compressed {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)))
    } else {
        Box::new(file)
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        total += n as u64;
        if total > cap {
            return Err(std::io::Error::other("larger than max_file_size"));
        }
    }
    Ok((total, h.finalize().into(), compressed))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn judges_streams_against_checkpoints() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
        let cp = |n: usize| (n as u64, <[u8; 32]>::from(Sha256::digest(&data[..n])));
        let cps = vec![cp(100), cp(4096), cp(30_000)];
        // A copy taken between the second and third checkpoint.
        let j = judge_stream(&data[..20_000], &cps, u64::MAX).unwrap();
        assert_eq!((j.total, j.verified, j.mismatch), (20_000, 4096, false));
        let j = judge_stream(&data[..], &cps, u64::MAX).unwrap();
        assert_eq!((j.verified, j.mismatch), (30_000, false));
        let mut bad = data.clone();
        bad[5000] ^= 1;
        let j = judge_stream(&bad[..], &cps, u64::MAX).unwrap();
        assert!(j.mismatch && j.verified == 4096);
        // Compressed: the same answer through gzip.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let j = judge_stream(flate2::read::MultiGzDecoder::new(&gz[..]), &cps, u64::MAX).unwrap();
        assert_eq!((j.total, j.verified, j.mismatch), (50_000, 30_000, false));
    }
}
