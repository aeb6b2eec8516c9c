//! The daemon follows the baseline: an `accept` (or `init`) by another process while it runs
//! reseals the database, and the daemon takes the new baseline over in place, without a
//! restart, on its next tick. Noticing costs one indexed read of the stored seal per tick.
use super::state_writes::StateWrites;
use crate::baseline::entry::Entry;
use crate::baseline::store::Baseline;
use crate::compare::{Mode, diff};
use crate::telemetry::Health;

/// The stored baseline, if its seal is not `followed` (which then becomes the stored one): a
/// seal that does not verify is refused loudly, once, and the daemon keeps the baseline it has
/// (`health` says the baseline is not verified). Errors: the store cannot be read.
pub fn stored_if_new(
    writes: &StateWrites,
    followed: &mut String,
    health: &Health,
) -> anyhow::Result<Option<Baseline>> {
    // While the store cannot be opened for writing, there is nothing to follow yet.
    let Some(store) = writes.store() else {
        return Ok(None);
    };
    let Some(stored) = store.stored_seal()? else {
        return Ok(None);
    };
    if stored == *followed {
        return Ok(None);
    }
    *followed = stored;
    match store.load(writes.key()) {
        Ok(b) => {
            health.set_baseline_verified(true);
            followed.clone_from(&b.seal);
            Ok(Some(b))
        }
        Err(e) => {
            health.set_baseline_verified(false);
            eprintln!("fimd run: the baseline changed but cannot be taken over; keeping the one loaded: {e}");
            Ok(None)
        }
    }
}

/// Whether a path's last seen state still differs from the baseline.
pub fn still_differs(base: Option<&Entry>, seen: Option<&Entry>, mode: Mode) -> bool {
    match (base, seen) {
        (Some(b), Some(s)) => !diff(b, s, mode).is_empty(),
        (None, None) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_stands_until_baseline_and_seen_agree() {
        let e = Entry {
            size: 3,
            ino: 7,
            mtime_ns: 1,
            ctime_ns: 1,
            sha256: Some([1; 32]),
            flags: Some(0),
            ..Entry::test_file(b"/etc/x")
        };
        let mut other = e.clone();
        other.mode = 0o600;
        assert!(!still_differs(Some(&e), Some(&e), Mode::Full));
        assert!(still_differs(Some(&e), Some(&other), Mode::Full));
        // Accepted as deleted but back, or accepted but gone since.
        assert!(still_differs(None, Some(&e), Mode::Full));
        assert!(still_differs(Some(&e), None, Mode::Full));
        assert!(!still_differs(None, None, Mode::Full));
        let mut moved_inode = e.clone();
        moved_inode.ino = 8;
        assert!(!still_differs(Some(&e), Some(&moved_inode), Mode::Portable));
    }
}
