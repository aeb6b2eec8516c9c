//! Verifying an append at a cost proportional to the new bytes: the SHA-256 state is kept at a
//! page boundary at or below the verified length, so only the old partial page and the
//! appended bytes are read. Bytes below that boundary are vouched for by the kernel (no write
//! below the verified length, no truncation: see monitor-ebpf/src/append.rs); when it cannot
//! vouch, or for the periodic full comparison, the whole file is read instead.
use std::os::fd::AsFd;
use std::sync::atomic::AtomicBool;

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest, Sha256};

use crate::scan::hash::{HashError, feed};

/// Hash states are kept at multiples of this.
pub const CHECKPOINT_ALIGN: u64 = 4096;

/// Defined with the ledger that keeps it, below `append`, so the baseline need not import it.
pub use crate::baseline::ledger::AppendState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extended {
    /// The verified bytes are intact: `state` covers the file as it is now.
    Intact { state: AppendState, read: u64 },
    /// The verified bytes changed.
    Changed,
    /// The file is shorter than the verified length.
    Shorter,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("stored hash state is malformed")]
    Malformed,
}

fn serialize(h: &Sha256) -> Vec<u8> {
    h.serialize().to_vec()
}

fn deserialize(b: &[u8]) -> Result<Sha256, StateError> {
    let arr = b.try_into().map_err(|_| StateError::Malformed)?;
    Sha256::deserialize(arr).map_err(|_| StateError::Malformed)
}

fn digest(h: &Sha256) -> [u8; 32] {
    h.clone().finalize().into()
}

fn checkpoint_of(len: u64) -> u64 {
    len - len % CHECKPOINT_ALIGN
}

static NEVER: AtomicBool = AtomicBool::new(false);

/// Hashes `hasher` (standing after `from` bytes) on to `size`, leaving a checkpoint at the
/// last page boundary and checking `expect` (length, digest) on the way.
fn run(
    fd: impl AsFd,
    mut hasher: Sha256,
    from: u64,
    size: u64,
    expect: Option<(u64, [u8; 32])>,
) -> Result<Extended, StateError> {
    let fd = fd.as_fd();
    if expect.is_some_and(|(len, _)| size < len) {
        return Ok(Extended::Shorter);
    }
    let cp = checkpoint_of(size).max(from);
    // The two stops on the way, in file order: the checkpoint and the verified length.
    let mut stops = [(cp, false), (expect.map_or(cp, |(len, _)| len), true)];
    stops.sort_by_key(|&(at, verify)| (at, verify));
    let mut pos = from;
    let mut state = Vec::new();
    for (at, verify) in stops {
        if feed(fd, &mut hasher, pos, at, &NEVER)? < at {
            return Ok(Extended::Shorter);
        }
        pos = at;
        match expect {
            Some((_, sha)) if verify && digest(&hasher) != sha => return Ok(Extended::Changed),
            _ if !verify => state = serialize(&hasher),
            _ => {}
        }
    }
    // Shrinking while being read leaves the end short: what was verified is judged again.
    if feed(fd, &mut hasher, pos, size, &NEVER)? < size {
        return Ok(Extended::Shorter);
    }
    Ok(Extended::Intact {
        state: AppendState {
            len: size,
            sha256: digest(&hasher),
            at: cp,
            state,
        },
        read: size - from,
    })
}

/// Verifies `st`'s bytes from its checkpoint and extends it to `size` (the file's current
/// length). Reads `len - at` (under a page) plus the appended bytes.
pub fn extend(fd: impl AsFd, st: &AppendState, size: u64) -> Result<Extended, StateError> {
    if size < st.len {
        return Ok(Extended::Shorter);
    }
    run(
        fd,
        deserialize(&st.state)?,
        st.at,
        size,
        Some((st.len, st.sha256)),
    )
}

/// Hashes the whole file (its first `size` bytes), checking that it starts with the verified
/// `expect` (length, digest) when given.
pub fn full(fd: impl AsFd, size: u64, expect: Option<(u64, [u8; 32])>) -> Result<Extended, StateError> {
    run(fd, Sha256::new(), 0, size, expect)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    #[test]
    fn extends_across_boundaries_and_catches_changes() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let mut content = Vec::new();
        let mut st: Option<AppendState> = None;
        // Appends of many sizes, crossing page boundaries and not.
        for (i, n) in [0usize, 1, 100, 3995, 1, 4096, 10_000, 7, 65_536, 4095]
            .into_iter()
            .enumerate()
        {
            let chunk: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
            f.write_all(&chunk).unwrap();
            content.extend_from_slice(&chunk);
            let size = content.len() as u64;
            let out = match &st {
                None => full(f.as_file(), size, None).unwrap(),
                Some(s) => extend(f.as_file(), s, size).unwrap(),
            };
            let Extended::Intact { state, read } = out else {
                panic!("append {i} not intact: {out:?}")
            };
            assert_eq!(state.sha256, sha(&content), "append {i}");
            assert_eq!(state.at % CHECKPOINT_ALIGN, 0);
            assert!(state.at <= state.len && state.len - state.at < CHECKPOINT_ALIGN);
            if let Some(s) = &st {
                assert_eq!(
                    read,
                    size - s.at,
                    "reads only the old partial page and the new bytes"
                );
            }
            st = Some(state);
        }
        let st = st.unwrap();
        // A change in the last (partial) page is caught from the checkpoint.
        use std::os::unix::fs::FileExt;
        let last = content.len() as u64 - 1;
        f.as_file().write_at(b"\xff", last).unwrap();
        assert_eq!(
            extend(f.as_file(), &st, content.len() as u64).unwrap(),
            Extended::Changed
        );
        // A change below the checkpoint needs the full read.
        f.as_file().write_at(&content[last as usize..], last).unwrap();
        f.as_file().write_at(b"\xff", 10).unwrap();
        assert_eq!(
            full(f.as_file(), content.len() as u64, Some((st.len, st.sha256))).unwrap(),
            Extended::Changed
        );
        assert_eq!(extend(f.as_file(), &st, st.len - 1).unwrap(), Extended::Shorter);
    }
}
