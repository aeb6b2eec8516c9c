//! Opening the verified baseline for a comparison, as every command and the daemon do: the
//! store, its key and its verified content, the coverage it was sealed for, and which
//! attributes count on this host.
use crate::baseline::seal::Key;
use crate::baseline::store::{Baseline, Store};
use crate::compare::Mode;
use crate::config::Settings;
use crate::scan::Problem;

/// The verified baseline of `settings`, with its store and key.
pub fn open_baseline(settings: &Settings) -> anyhow::Result<(Store, Key, Baseline)> {
    use crate::baseline::store::StoreError;
    // The database first: what is wrong at its path matters more than a missing key.
    let store = Store::open(&settings.state_dir, settings.hmac_key.as_deref(), false);
    let key = || Key::load(&settings.state_dir, settings.hmac_key.as_deref(), false);
    let e = match store {
        Ok(store) => {
            let key = key()?;
            match store.load(&key) {
                Ok(baseline) => return Ok((store, key, baseline)),
                Err(e @ StoreError::Sqlite { .. }) => e,
                Err(e) => return Err(e.into()),
            }
        }
        Err(e @ StoreError::Sqlite { .. }) => e,
        Err(e) => return Err(e.into()),
    };
    // SQLite failed where it reads: a full filesystem (no room for the WAL index `-shm`: "disk
    // I/O error") or a read-only one. The baseline can still be read, and detection must not
    // depend on being able to write.
    let Ok(store) = Store::open_read_only(&settings.state_dir, settings.hmac_key.as_deref()) else {
        return Err(e.into());
    };
    let key = key()?;
    let Ok(baseline) = store.load(&key) else {
        return Err(e.into());
    };
    eprintln!("fimd: warning: {e}; reading the baseline without writing to it");
    Ok((store, key, baseline))
}

/// A configuration whose watches differ from the baseline's would compare something else than
/// what was sealed: an excluded path would silently drop out.
pub fn coverage_problem(settings: &Settings, baseline: &Baseline) -> Option<Problem> {
    let sealed = baseline.meta.get("coverage")?;
    (sealed != &settings.coverage()).then(|| Problem {
        path: settings.source.as_os_str().as_encoded_bytes().to_vec(),
        message: format!(
            "the watches differ from those the baseline was sealed with:\n  sealed:     {}\n  configured: {}\n\
             restore the configuration, or run `fimd init` to take the new one as the baseline",
            sealed.replace('\n', "\n              "),
            settings.coverage().replace('\n', "\n              ")
        ),
        subtree: false,
    })
}

/// Identity attributes count only when the baseline was taken from this same host tree.
pub fn host_mode(baseline: &Baseline) -> Mode {
    match baseline.meta.get("source_root").map(String::as_str) {
        Some("/") | None => Mode::Full,
        Some(_) => Mode::Portable,
    }
}
