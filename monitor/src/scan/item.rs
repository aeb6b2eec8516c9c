//! What a scan yields: an entry recorded, or a problem that kept one from being recorded, and
//! the running totals.
use std::sync::atomic::AtomicU64;

use crate::baseline::entry::Entry;

/// Something that could not be recorded; the walk goes on.
#[derive(Debug, Clone)]
pub struct Problem {
    pub path: Vec<u8>,
    pub message: String,
    /// Nothing below `path` was read: absence there proves no deletion.
    pub subtree: bool,
}

pub enum ScanItem {
    Entry(Entry),
    /// The entry was recorded, but its content changed during every read.
    Unstable(Entry),
    /// A regular file larger than `scan.max_file_size`: by configuration its metadata (size,
    /// mode, owner, times, inode, xattrs, flags) is recorded and compared, its content is not.
    MetadataOnly(Entry),
    Problem(Problem),
}

/// Running totals, for progress display and the summary.
#[derive(Default)]
pub struct Progress {
    pub entries: AtomicU64,
    pub bytes: AtomicU64,
}
