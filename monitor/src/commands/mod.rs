//! The one-shot commands. Each returns the process exit status it wants.
pub mod accept;
pub mod baseline;
pub mod check;
pub mod init;
pub mod report;
pub mod run;
pub mod state_writes;
pub mod watch_roots;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::baseline::seal::Key;
use crate::baseline::store::{Baseline, Store};
use crate::compare::Mode;
use crate::config::Settings;
use crate::paths::path_text;
use crate::scan::{Problem, Scan};

/// 0: clean.
pub const EXIT_CLEAN: u8 = 0;
/// 1: differences found.
pub const EXIT_DIFFERENCES: u8 = 1;
/// 2: an error, including files that could not be compared.
pub const EXIT_ERROR: u8 = 2;

/// A spinner with counts while a scan runs, only when stderr is a terminal.
pub(crate) fn progress(scan: &Scan, what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    let p = scan.progress.clone();
    let b = bar.clone();
    std::thread::spawn(move || {
        while !b.is_finished() {
            let n = p.entries.load(Ordering::Relaxed);
            let bytes = p.bytes.load(Ordering::Relaxed);
            b.set_message(format!(
                "{what}: {n} entries, {} hashed",
                indicatif::HumanBytes(bytes)
            ));
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    bar
}

pub(crate) fn report_problems(problems: &[Problem]) {
    for p in problems {
        eprintln!("fimd: warning: {}: {}", path_text(&p.path).0, p.message);
    }
}

/// How many metadata-only paths the summary line names before it only counts.
const METADATA_ONLY_NAMED: usize = 10;

/// One line on stderr naming the files larger than `scan.max_file_size`: by configuration
/// they are compared by metadata only (size, mode, owner, times, inode, xattrs, flags), which
/// is not an error and does not change the exit status.
pub(crate) fn report_metadata_only(command: &str, settings: &Settings, paths: &[Vec<u8>]) {
    if paths.is_empty() {
        return;
    }
    let mut named: Vec<String> = paths
        .iter()
        .take(METADATA_ONLY_NAMED)
        .map(|p| path_text(p).0)
        .collect();
    if paths.len() > METADATA_ONLY_NAMED {
        named.push(format!("and {} more", paths.len() - METADATA_ONLY_NAMED));
    }
    eprintln!(
        "fimd {command}: {} file(s) larger than scan.max_file_size ({} bytes), content not hashed, metadata \
         only: {}",
        paths.len(),
        settings.max_file_size.unwrap_or_default(),
        named.join(", ")
    );
}

/// The verified baseline of `settings`, with its store and key.
pub(crate) fn open_baseline(settings: &Settings) -> anyhow::Result<(Store, Key, Baseline)> {
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
pub(crate) fn coverage_problem(settings: &Settings, baseline: &Baseline) -> Option<Problem> {
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
pub(crate) fn host_mode(baseline: &Baseline) -> Mode {
    match baseline.meta.get("source_root").map(String::as_str) {
        Some("/") | None => Mode::Full,
        Some(_) => Mode::Portable,
    }
}

/// Who is running this, for the baseline's history.
pub(crate) fn actor() -> String {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    match std::env::var("SUDO_USER") {
        Ok(s) if !s.is_empty() => format!("{s} via sudo as {name} (uid {uid})"),
        _ => format!("{name} (uid {uid})"),
    }
}

/// What an auditor reads back with `fimd report`: one full comparison.
pub(crate) struct Evidence<'a> {
    pub kind: &'a str,
    pub started_at: &'a str,
    pub took: Duration,
    pub files: u64,
    pub differences: usize,
    pub events: usize,
    pub problems: usize,
    pub seal: &'a str,
    /// The baseline's generation (see `Baseline::generation`).
    pub generation: u64,
}

impl Evidence<'_> {
    pub fn to_json(&self, settings: &Settings) -> serde_json::Value {
        serde_json::json!({
            "kind": self.kind,
            "started": self.started_at,
            "finished": crate::output::alert::now_rfc3339(),
            "duration_seconds": self.took.as_secs_f64(),
            "host": crate::output::alert::hostname(),
            "files_compared": self.files,
            "differences": self.differences,
            "allowed_events": self.events,
            "not_compared": self.problems,
            "baseline_seal": self.seal,
            "baseline_generation": self.generation,
            "configuration": settings.source.display().to_string(),
            "fimd_version": env!("CARGO_PKG_VERSION"),
        })
    }
}

pub(crate) fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}
