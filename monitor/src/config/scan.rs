//! `[scan]`: how many threads hash, and above which size a file is recorded without a hash.
use serde::Deserialize;
use toml::Spanned;

use super::values::{TableError, invalid, parse_size};

/// Most `scan.threads`: 1024. Each hashing thread holds a 128 KiB read buffer and a stack;
/// past four per core nothing got faster (README, Performance), and `99999999999` made
/// `init` hang trying to start them.
pub const MAX_THREADS: i64 = 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScan {
    /// Scanning threads, 0 to `MAX_THREADS`; 0 or absent means four per core.
    threads: Option<Spanned<i64>>,
    /// Files larger than this are recorded without a content hash (and reported); 0 = no limit.
    max_file_size: Option<Spanned<toml::Value>>,
}

/// Default cap on hashed size: a sparse file of exabytes must not stall every check.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 30;

impl RawScan {
    /// `(threads, max_file_size)`: threads 1 to `MAX_THREADS`; `None`: no size limit.
    pub(super) fn validate(&self) -> Result<(usize, Option<u64>), TableError> {
        let raw = self;
        // Reads from a cold cache wait on the disk: more threads than cores keep the cores busy
        // (measured on /usr: cold 32.7 s with 2 threads, 22.2 s with 8; warm unchanged).
        let threads = match &raw.threads {
            Some(n) if (1..=MAX_THREADS).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) if *n.get_ref() != 0 => {
                return Err(invalid(
                    n.span(),
                    format!(
                        "scan.threads: {} is out of range; give 1 to {MAX_THREADS}, or 0 for four per core",
                        n.get_ref()
                    ),
                ));
            }
            _ => (std::thread::available_parallelism().map_or(1, |n| n.get()) * 4).min(64),
        };

        let max_file_size = match &raw.max_file_size {
            None => Some(DEFAULT_MAX_FILE_SIZE),
            Some(v) => match parse_size(v.get_ref()) {
                Some(0) => None,
                Some(n) => Some(n),
                None => {
                    return Err(invalid(
                            v.span(),
                            "scan.max_file_size: give bytes as a number, or a string such as \"64GiB\" (0 = no limit)"
                                .into(),
                        ));
                }
            },
        };

        Ok((threads, max_file_size))
    }
}
