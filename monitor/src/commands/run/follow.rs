//! The daemon follows the baseline: an `accept` (or `init`) by another process while it runs
//! reseals the database, and the daemon takes the new baseline over in place, without a
//! restart, on its next tick. Noticing costs one indexed read of the stored seal per tick.
use super::Daemon;
use crate::baseline::entry::Entry;
use crate::compare::diff;
use crate::output::alert::BaselineRef;

/// Takes over the stored baseline if its seal is not the one followed: verifies it (a seal
/// that does not verify is refused loudly, once, and the daemon keeps the baseline it has),
/// replaces the baseline, the append states and the alerted differences in memory, and drops
/// the outstanding differences the new baseline accepted.
pub(super) fn follow_baseline(d: &mut Daemon) -> anyhow::Result<()> {
    // While the store cannot be opened for writing, there is nothing to follow yet.
    let Some(store) = d.writes.store() else {
        return Ok(());
    };
    let Some(stored) = store.stored_seal()? else {
        return Ok(());
    };
    if stored == d.followed_seal {
        return Ok(());
    }
    d.followed_seal = stored;
    let loaded = store.load(d.writes.key());
    let baseline = match loaded {
        Ok(b) => b,
        Err(e) => {
            d.health.set_baseline_verified(false);
            eprintln!("fimd run: the baseline changed but cannot be taken over; keeping the one loaded: {e}");
            return Ok(());
        }
    };
    d.health.set_baseline_verified(true);
    d.metrics.baseline_generation.set(baseline.generation as i64);
    d.metrics.baseline_files.set(baseline.entries.len() as i64);
    d.origin.baseline = Some(BaselineRef {
        generation: baseline.generation,
        seal: baseline.seal.clone(),
    });
    d.followed_seal = baseline.seal.clone();
    d.baseline = baseline
        .entries
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
    d.appends = baseline.appends;
    d.retired = baseline.retired;
    if let Some(store) = d.writes.store() {
        d.alerted.reload_sent(store.alerted()?);
    }
    let (base, seen, mode) = (&d.baseline, &d.seen, d.mode);
    d.alerted
        .retain_outstanding(|p| still_differs(base.get(p), seen.get(p), mode));
    d.metrics
        .outstanding_differences
        .set(d.alerted.outstanding() as i64);
    eprintln!(
        "fimd run: baseline generation {} taken over (changed by another fimd)",
        baseline.generation
    );
    Ok(())
}

/// Whether a path's last seen state still differs from the baseline.
fn still_differs(base: Option<&Entry>, seen: Option<&Entry>, mode: crate::compare::Mode) -> bool {
    match (base, seen) {
        (Some(b), Some(s)) => !diff(b, s, mode).is_empty(),
        (None, None) => false,
        _ => true,
    }
}
