//! The one-shot commands. Each returns the process exit status it wants.
pub mod accept;
pub mod baseline;
pub mod check;
pub mod init;
pub mod report;
pub mod run;

pub(crate) use crate::evidence::Evidence;
pub(crate) use crate::opening::{coverage_problem, host_mode, open_baseline};
pub(crate) use crate::problems::{report_metadata_only, report_problems};

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::scan::Scan;

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

pub(crate) fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}
